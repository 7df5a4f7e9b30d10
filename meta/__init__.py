"""Meta-learning across physical laws: MAML, first-order MAML and Reptile.

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

- :mod:`meta.tasks`: tasks (one trajectory: support and query points) and the
  seeded :class:`TaskSampler` over several systems (graph or padded fixed-size layout).
- :mod:`meta.algorithms`: pure functions over parameter dicts (inner update,
  meta-loss, meta-gradient of each algorithm, one outer Adam step, a training loop).
- :mod:`meta.evaluate`: few-shot adaptation to an unseen trajectory, scored by RK4
  rollouts.
"""

from meta.algorithms import (
    ALGORITHMS,
    LOSSES,
    MetaConfig,
    init_inner_lr,
    inner_update,
    make_optimizer,
    meta_gradient,
    meta_loss,
    meta_train,
    meta_train_step,
    parameters,
    predict,
    task_loss,
)
from meta.evaluate import Adaptation, adapt_and_evaluate
from meta.tasks import Points, Task, TaskSampler

__all__ = [
    "ALGORITHMS",
    "LOSSES",
    "Adaptation",
    "MetaConfig",
    "Points",
    "Task",
    "TaskSampler",
    "adapt_and_evaluate",
    "init_inner_lr",
    "inner_update",
    "make_optimizer",
    "meta_gradient",
    "meta_loss",
    "meta_train",
    "meta_train_step",
    "parameters",
    "predict",
    "task_loss",
]
