"""Meta-learning across physical laws: MAML, first-order MAML and Reptile, with
several inner steps, learned per-parameter inner rates (Meta-SGD) and a decoder-only
inner loop (ANIL).

Example::

    import hogn, meta, systems, torch
    data = {n: systems.from_preset(f"meta-{n}", trajectories=100)
            for n in ("mass-spring", "pendulum")}
    sampler = meta.TaskSampler(data, shots=50, layout="padded", dtype=torch.float32)
    model = hogn.models.get("hnn", n_particles=1, dim=2, node_constants=1)
    config = meta.MetaConfig(algorithm="maml", inner_lr=0.01, meta_batch=8)
    history = meta.meta_train(model, sampler, config, iterations=1000)
    result = meta.adapt_and_evaluate(model, meta.parameters(model), data["pendulum"][0],
                                     shots=50, steps=100, inner_lr=0.01)
    result.mse  # rollout MSE after 0 ... 100 adaptation steps

Options (each also in :class:`ProtocolConfig` and ``hogn meta-train``)::

    meta.MetaConfig(algorithm="fomaml", inner_steps=5)   # or "reptile"
    config = meta.MetaConfig(learn_inner_lr=True)        # Meta-SGD
    history = meta.meta_train(model, sampler, config, iterations=1000)
    meta.adapt_and_evaluate(model, meta.parameters(model), data["pendulum"][0],
                            inner_lr=history.inner_lr)  # adapt with the learned rates
    meta.MetaConfig(anil=True)                           # inner loop on the decoder only
    meta.decoder_names(model)                            # ... these parameters

- :mod:`meta.tasks`: tasks (one trajectory: support and query points) and the
  seeded :class:`TaskSampler` over several systems (graph or padded fixed-size layout).
- :mod:`meta.algorithms`: pure functions over parameter dicts (inner update,
  meta-loss, meta-gradient of each algorithm, one outer Adam step, a training loop).
- :mod:`meta.batched`: a meta-batch in one call (every task its own copy of the
  weights over one batch of graphs, in blocks of rows); :func:`meta_train_step` uses
  it for every model of :mod:`hogn.models` (``MetaConfig(batched=False)``: task by task).
- :mod:`meta.evaluate`: few-shot adaptation to an unseen trajectory, scored by RK4
  rollouts; :mod:`meta.adaptation` (:func:`adapt_many`) does many (trajectory,
  starting point) pairs in one call per step, as :func:`evaluate_adaptation` does.
- :mod:`meta.protocol`: the paper's leave-one-system-out protocol over its six systems
  and Hénon–Heiles (:data:`META_SYSTEMS`): meta-training and a jointly pretrained
  baseline in a resumable run folder (:func:`meta_train_run`, :func:`load_run`),
  adaptation of meta-trained, random-init and pretrained weights to unseen trajectories
  (:func:`evaluate_adaptation`) with nan-safe statistics (:func:`summarize`, :func:`compare`).
- :mod:`meta.metrics`: scale-free scores of an adapted model (derivative error on the
  held-out points normalised by a zero field, short-rollout error normalised by standing
  still) and paired comparisons of two methods over the same trajectories (share lower,
  bootstrap median ratio, Wilcoxon signed-rank p-value, :func:`ahead_on_system`).
- :mod:`meta.summary`: per held-out system, paired comparisons of meta-trained against
  random init and pretrained at steps 1, 5, 15, 100 for each metric
  (:func:`paired_system`), and the counts of systems where meta-training is ahead
  (:func:`summary_block`, :func:`against_paper` for the paper's four systems).
- :mod:`meta.plots`: adaptation curves and trajectories (the paper's Figures 1 and 2).
- :mod:`meta.fewshot`: the classical few-shot regressors a meta-learned model must beat
  (do-nothing, affine least squares, a least-squares Hamiltonian in polynomials, a
  Hamiltonian kernel, nearest neighbour), with their settings' grids.
- :mod:`meta.closed_form`: a meta-learned basis with a closed-form head (the models
  ``hnn-basis`` and ``hogn-basis``, ``H = φ · w``): the ridge solve of ``w`` from the
  ``K`` points and meta-training through it (``ProtocolConfig(algorithm="closed-form")``).
- :mod:`meta.fitted`: methods fitted once (the regressors, the closed-form head, a prior
  with a kernel fit of its residual) scored by the adaptation's own metrics, on the same
  points and observation noise (``noise=`` of :func:`evaluate_adaptation`).
- :mod:`meta.selection`: every method's settings chosen on validation trajectories of
  the training systems, never of the held-out one.

Leave one system out::

    config = meta.ProtocolConfig(holdout="magnetic-mirror", iterations=2000)
    meta.meta_train_run("runs/meta-mm", config)             # resumes if interrupted
    run = meta.load_run("runs/meta-mm")                     # params: meta, random, pretrained
    data = meta.protocol.eval_data("magnetic-mirror", trajectories=20)
    result = meta.evaluate_adaptation(run.model, run.params, data, steps=100, inner_lr=0.1,
                                      method_lr=run.method_lr())  # Meta-SGD / ANIL runs
    result["summary"]["meta"]  # per step: mean, 95% interval, median, diverged
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hogn._lazy import attach

__all__ = [
    "ALGORITHMS",
    "DECODERS",
    "LOSSES",
    "META_SYSTEMS",
    "METHODS",
    "Adaptation",
    "MetaConfig",
    "MetaHistory",
    "PairedComparison",
    "Points",
    "ProtocolConfig",
    "RunModels",
    "Task",
    "TaskSampler",
    "adapt_and_evaluate",
    "adapt_many",
    "against_paper",
    "ahead_on_system",
    "compare",
    "decoder_names",
    "derivative_nmse",
    "evaluate_adaptation",
    "init_inner_lr",
    "inner_parameters",
    "inner_update",
    "load_run",
    "make_optimizer",
    "meta_gradient",
    "meta_loss",
    "meta_train",
    "meta_train_run",
    "meta_train_step",
    "paired_comparison",
    "paired_system",
    "parameters",
    "predict",
    "short_rollout_nmse",
    "summarize",
    "summary_block",
    "task_loss",
]

__getattr__, __dir__ = attach(__name__, {
    "adapt_many": "adaptation",
    "ALGORITHMS": "algorithms",
    "DECODERS": "algorithms",
    "LOSSES": "algorithms",
    "MetaConfig": "algorithms",
    "MetaHistory": "training",
    "decoder_names": "algorithms",
    "init_inner_lr": "algorithms",
    "inner_parameters": "algorithms",
    "inner_update": "algorithms",
    "make_optimizer": "training",
    "meta_gradient": "algorithms",
    "meta_loss": "algorithms",
    "meta_train": "training",
    "meta_train_step": "training",
    "parameters": "algorithms",
    "predict": "algorithms",
    "task_loss": "algorithms",
    "Adaptation": "evaluate",
    "adapt_and_evaluate": "evaluate",
    "PairedComparison": "metrics",
    "ahead_on_system": "metrics",
    "derivative_nmse": "metrics",
    "paired_comparison": "metrics",
    "short_rollout_nmse": "metrics",
    "META_SYSTEMS": "protocol",
    "METHODS": "protocol",
    "ProtocolConfig": "protocol",
    "RunModels": "protocol",
    "compare": "protocol",
    "evaluate_adaptation": "protocol",
    "load_run": "protocol",
    "meta_train_run": "protocol",
    "summarize": "protocol",
    "against_paper": "summary",
    "paired_system": "summary",
    "summary_block": "summary",
    "Points": "tasks",
    "Task": "tasks",
    "TaskSampler": "tasks",
}, submodules=("adaptation", "algorithms", "batched", "closed_form", "evaluate", "fewshot",
                 "fitted", "metrics", "plots", "protocol", "selection", "summary", "tasks",
                 "training"))

if TYPE_CHECKING:  # what the lazy attributes are, for type checkers
    from meta.adaptation import adapt_many
    from meta.algorithms import (
        ALGORITHMS,
        DECODERS,
        LOSSES,
        MetaConfig,
        decoder_names,
        init_inner_lr,
        inner_parameters,
        inner_update,
        meta_gradient,
        meta_loss,
        parameters,
        predict,
        task_loss,
    )
    from meta.evaluate import Adaptation, adapt_and_evaluate
    from meta.metrics import (
        PairedComparison,
        ahead_on_system,
        derivative_nmse,
        paired_comparison,
        short_rollout_nmse,
    )
    from meta.protocol import (
        META_SYSTEMS,
        METHODS,
        ProtocolConfig,
        RunModels,
        compare,
        evaluate_adaptation,
        load_run,
        meta_train_run,
        summarize,
    )
    from meta.summary import against_paper, paired_system, summary_block
    from meta.tasks import Points, Task, TaskSampler
    from meta.training import MetaHistory, make_optimizer, meta_train, meta_train_step
