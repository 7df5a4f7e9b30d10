"""Few-shot adaptation against the strongest simple methods, on the same points.

For each held-out system of the leave-one-system-out protocol (``meta.protocol``): the
meta-learned networks (HNN and HOGN by MAML; ``hnn-basis`` and ``hogn-basis``, a learned
basis whose linear head is solved in closed form, meta-trained through that solve) and
every baseline are adapted to (or fitted on) the same ``K`` points of the same unseen
trajectories, with the same observation noise, and scored by the same code
(``meta.evaluate``, ``meta.fitted``): the derivative NMSE at the trajectory's other
points, the short-rollout NMSE and the paper's rollout MSE.

Baselines: predicting nothing (zero field); affine least squares; a least-squares
Hamiltonian in polynomials; kernel ridge regression with a Hamiltonian kernel; nearest
neighbour; each network from random init (the paper's SGD steps, and Adam to
convergence, "scratch"); each network pretrained on the six systems and fine-tuned;
the basis networks' random features with the same closed-form head.

Every method's settings (step sizes, Adam rate and steps, ridges, degrees, length
scales) are chosen per regime on validation trajectories of the six *training* systems
(``meta.selection``), never on the held-out one. Regimes: ``K`` support points and
observation noise as a fraction of each coordinate's spread (:data:`REGIMES`).

Pieces: every (seed, held-out system) is resumable: the meta-training runs live in
``RUNS/seed{S}/{model}/{holdout}`` (those of HNN and HOGN are the ones
``experiments/meta_learning.py`` makes, with the same options), the selections and
evaluations in ``PIECES/seed{S}/{holdout}/{regime}.pt`` (default
``experiments/pieces/fewshot``, committed: a finished piece is never run again, from
any checkout; the models are not kept there, so a piece cut short trains again). The
report is made from every finished piece of the seed: ``fewshot.json`` (every number)
and ``fewshot.md`` (seeds other than 0: ``fewshot_seed{S}.*``).

Examples::

    python experiments/fewshot.py --systems pendulum            # one piece
    python experiments/fewshot.py --report-only                 # assemble the pieces
    # a seed on two cores: the shared scores first, then the pieces side by side
    python experiments/fewshot.py --shared-only && python experiments/fewshot.py \
        --systems mass-spring pendulum double-pendulum two-body &
    python experiments/fewshot.py --systems three-body magnetic-mirror henon-heiles
    python experiments/fewshot.py --quick --out /tmp/fewshot    # smoke run, ~1 min
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from hogn.io import atomic_write
from hogn.report import write_json
from meta import fewshot, protocol, selection
from meta.algorithms import parameters
from meta.fitted import baseline_fitter, evaluate_fits, head_fitter, residual_fitter
from meta.summary import (
    BASELINE_STEPS,
    METRICS,
    baselines_block,
    medians,
    paired_system,
    versus_baselines,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import meta_learning
from _shared import write_text
from meta_learning import ROOT, Data

PIECES = ROOT / "experiments" / "pieces" / "fewshot"
"""Where finished pieces are kept: in the repository (small files of results, not
models), so that the experiment goes on from any checkout where it stopped."""
REGIMES = {"k10-noise5": (10, 0.05), "k50": (50, 0.0), "k10": (10, 0.0),
           "k50-noise5": (50, 0.05)}
"""Regime → (support points K, observation noise σ as a fraction of each coordinate's
spread)."""
DEFAULT_REGIMES = ("k10-noise5", "k50")
NETWORKS = ("hnn", "hogn")
BASIS = ("hnn-basis", "hogn-basis")
CLASSICAL = ("zero", "affine", "polynomial", "kernel", "nearest")
FULL = {"iterations": 2000, "trajectories": 10_000, "eval_trajectories": 50,
        "validation_trajectories": 8, "meta_batch": 8, "shots": 50, "steps": 100,
        "eval_steps": [0, 1, 5, 15, 100], "rtol": None, "points": None,
        "model_args": {"hnn": {}, "hogn": {"hidden": 64}, "hnn-basis": {"features": 32},
                       "hogn-basis": {"hidden": 64, "features": 32}},
        "control_trajectories": 10,
        "scratch_steps": list(selection.SCRATCH_STEPS),
        "scratch_rates": list(selection.SCRATCH_RATES),
        "sgd_rates": list(selection.SGD_RATES), "ridges": list(selection.RIDGES),
        "grids": None, "regimes": dict(REGIMES)}
QUICK = {"iterations": 4, "trajectories": 4, "eval_trajectories": 3,
         "validation_trajectories": 2, "meta_batch": 2, "shots": 10, "steps": 5,
         "eval_steps": [0, 1, 5], "rtol": 1e-6, "points": 31,
         "model_args": {"hnn": {"hidden": 16}, "hogn": {"hidden": 16, "steps": 1},
                        "hnn-basis": {"hidden": 16, "features": 8},
                        "hogn-basis": {"hidden": 16, "steps": 1, "features": 8}},
         "control_trajectories": 2,
         "scratch_steps": [5, 10], "scratch_rates": [1e-2], "sgd_rates": [0.01, 0.1],
         "ridges": [1e-4, 1e-2],
         "grids": {"affine": [{"ridge": 0.0}, {"ridge": 1e-4}],
                   "polynomial": [{"degree": 3, "ridge": 1e-10}, {"degree": 4, "ridge": 1e-6}],
                   "kernel": [{"lengthscale": 1.0, "ridge": 1e-6},
                              {"lengthscale": 2.0, "ridge": 1e-4}]},
         "regimes": {"k10-noise5": (10, 0.05), "k20": (20, 0.0)}}
VARIANTS = {"hnn-anil": ("hnn", {"anil": True}),
            "hnn-meta-sgd": ("hnn", {"learn_inner_lr": True}),
            "hnn-steps5": ("hnn", {"inner_steps": 5}),
            "hogn-anil": ("hogn", {"anil": True}),
            "hogn-meta-sgd": ("hogn", {"learn_inner_lr": True}),
            "hogn-steps5": ("hogn", {"inner_steps": 5})}
"""Further meta-learners of the same networks (ANIL, Meta-SGD, MAML with 5 inner steps):
variant → (network, protocol options). Each is its own resumable piece per held-out
system and regime (``{regime}+{variant}.pt`` beside the piece), added to the report
where finished; its pretrained and random-init baselines are the network's."""
DEFAULT_VARIANTS = ("hnn-anil", "hnn-meta-sgd", "hogn-anil", "hogn-meta-sgd")
SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
"""Multipliers of Meta-SGD's learned rates tried in selection (its rates are learned, their
scale is still a choice)."""
TABLE_STEPS = (0, 1, 5, 15, 100)
CACHE_VERSION = 3  # 2: the closed-form heads with a kernel residual; 3: the control


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results",
                        help="results folder (default experiments/results)")
    parser.add_argument("--runs", type=Path, help="run folders (default runs/meta_learning, "
                        "shared with experiments/meta_learning.py; --quick: OUT/fewshot_runs)")
    parser.add_argument("--pieces", type=Path, help="finished pieces (default "
                        "experiments/pieces/fewshot, kept in the repository so that a new "
                        "checkout goes on where the last stopped; --quick: OUT/fewshot_pieces)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--systems", nargs="+", choices=protocol.META_SYSTEMS,
                        default=list(protocol.META_SYSTEMS), metavar="SYSTEM",
                        help="held-out systems to run (default all seven)")
    parser.add_argument("--regimes", nargs="+", metavar="REGIME", help="regimes to run: "
                        f"{', '.join(REGIMES)} (default {', '.join(DEFAULT_REGIMES)})")
    parser.add_argument("--report-only", action="store_true", help="run nothing: assemble "
                        "the report from the finished pieces")
    parser.add_argument("--variants", nargs="*", metavar="VARIANT", help="further "
                        f"meta-learners to run: {', '.join(VARIANTS)} (default "
                        f"{', '.join(DEFAULT_VARIANTS)}; none: --variants with no name)")
    parser.add_argument("--shared-only", action="store_true", help="only the scores shared "
                        "by every held-out system (to run first when pieces run side by "
                        "side in several processes)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    known = QUICK["regimes"] if args.quick else REGIMES
    args.regimes = list(dict.fromkeys(args.regimes or (
        list(known) if args.quick else DEFAULT_REGIMES)))
    bad = [r for r in args.regimes if r not in known]
    if bad:
        parser.error(f"unknown regime(s) {', '.join(bad)}; expected: {', '.join(known)}")
    args.variants = list(dict.fromkeys(DEFAULT_VARIANTS if args.variants is None
                                       else args.variants))
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        parser.error(f"unknown variant(s) {', '.join(bad)}; expected: {', '.join(VARIANTS)}")
    return args


# ------------------------------------------------------------------------ pieces
def model_config(model: str, holdout: str, sizes: Mapping[str, Any], seed: int
                 ) -> protocol.ProtocolConfig:
    """The protocol options of one meta-training run (HNN and HOGN: those of
    ``experiments/meta_learning.py``, MAML with step 0.1; basis models: closed form)."""
    basis = model in protocol.BASIS_MODELS
    return protocol.ProtocolConfig(
        holdout=holdout, model=model, model_args=dict(sizes["model_args"][model]),
        algorithm=protocol.CLOSED_FORM if basis else "maml", iterations=sizes["iterations"],
        trajectories=sizes["trajectories"], shots=sizes["shots"], inner_lr=0.1,
        meta_batch=sizes["meta_batch"], seed=seed, pretrain=not basis,
        loss="mse" if basis else "logcosh",
        checkpoint_every=max(1, min(100, sizes["iterations"])))


def train_models(holdout: str, sizes: Mapping[str, Any], args: argparse.Namespace,
                 data: Data, runs: Path) -> tuple[dict[str, protocol.RunModels], float]:
    """Meta-train (or reuse) every model of the piece; the loaded runs and seconds."""
    start = time.perf_counter()
    loaded = {}
    for model in (*NETWORKS, *BASIS):
        config = model_config(model, holdout, sizes, args.seed)
        run = runs / f"seed{args.seed}" / model / holdout
        try:
            loaded[model] = protocol.load_run(run)
            if loaded[model].config.to_dict() == config.to_dict():
                continue
        except ValueError:
            pass
        protocol.meta_train_run(run, config, progress=not args.quiet,
                                data=data.training(config.training_systems))
        loaded[model] = protocol.load_run(run)
    return loaded, time.perf_counter() - start


def shared_methods() -> list[str]:
    """The methods whose starting point does not depend on the held-out system: the
    classical regressors and each network's random init (SGD, Adam from scratch, random
    features). Scored once per (seed, regime) on all seven systems' validation
    trajectories; each held-out system's choice leaves its own score out
    (:func:`meta.selection.choose`)."""
    return [*CLASSICAL, *(f"{m}:{k}" for m in NETWORKS for k in ("random", "scratch")),
            *(f"{m}:random-features" for m in BASIS)]


def random_init(model: str, sizes: Mapping[str, Any], seed: int
                ) -> tuple[Any, dict[str, torch.Tensor]]:
    """A network at its initial weights (the same in every held-out system's run of the
    seed: :func:`meta.protocol.make_model` seeds them from the seed alone)."""
    config = model_config(model, protocol.META_SYSTEMS[0], sizes, seed)
    net = protocol.make_model(model, config.torch_dtype, seed, **config.model_args)
    return net, {k: v.detach() for k, v in parameters(net).items()}


def shared_settings(regime: str, sizes: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """What cached shared scores must match to be reused."""
    grids = {name: (sizes["grids"] or {}).get(name, fewshot.GRIDS[name]) for name in CLASSICAL}
    return {"version": CACHE_VERSION, "seed": seed, "regime": list(sizes["regimes"][regime]),
            "model_args": sizes["model_args"], "grids": grids,
            "sizes": {k: sizes[k] for k in ("validation_trajectories", "scratch_steps",
                                            "scratch_rates", "sgd_rates", "ridges", "rtol",
                                            "points")}}


def shared_scores(regime: str, sizes: Mapping[str, Any], seed: int, data: Data,
                  pieces: Path) -> dict[str, Any]:
    """Per-system validation scores of :func:`shared_methods` for one regime (cached in
    ``PIECES/seed{S}/shared/{regime}.pt``): ``{"scores": {method: Scored},
    "seconds": s}``."""
    path = pieces / f"seed{seed}" / "shared" / f"{regime}.pt"
    settings = shared_settings(regime, sizes, seed)
    saved = read_piece(path, settings)
    if saved is not None:
        return saved
    start, began = time.perf_counter(), time.time()
    shots, noise = sizes["regimes"][regime]
    validation = data.validation(None, sizes["validation_trajectories"])
    common = {"validation": validation, "shots": shots, "noise": noise, "seed": seed}
    grids = sizes["grids"] or {}
    scores: dict[str, selection.Scored] = {}
    for name in CLASSICAL:
        grid = grids.get(name, fewshot.GRIDS[name])
        scores[name] = selection.fitter_scores(
            lambda name=name, **hyper: baseline_fitter(name, **hyper), grid, **common)
    for model in NETWORKS:
        net, params = random_init(model, sizes, seed)
        scores[f"{model}:random"] = selection.rate_scores(net, params,
                                                          rates=sizes["sgd_rates"], **common)
        scores[f"{model}:scratch"] = selection.scratch_scores(
            net, params, rates=sizes["scratch_rates"], steps=sizes["scratch_steps"], **common)
    for model in BASIS:
        net, params = random_init(model, sizes, seed)
        scores[f"{model}:random-features"] = selection.ridge_scores(
            net, params, ridges=sizes["ridges"], **common)
    saved = {"settings": settings, "scores": scores,
             "seconds": time.perf_counter() - start, "clock": [began, time.time()]}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: torch.save(saved, fh))
    print(f"   shared scores, {regime}: {saved['seconds']:.0f} s", flush=True)
    return saved


def select(holdout: str, shots: int, noise: float, loaded: Mapping[str, protocol.RunModels],
           validation: Mapping[str, Any], sizes: Mapping[str, Any], seed: int,
           shared: Mapping[str, selection.Scored]) -> dict[str, Any]:
    """Every method's settings for one regime, chosen on the training systems: the
    :func:`shared_methods` from their shared scores, the rest on ``validation``."""
    common = {"validation": validation, "holdout": holdout, "shots": shots, "noise": noise,
              "seed": seed}
    for model in (*NETWORKS, *BASIS):  # the shared scores were made from these weights
        _, params = random_init(model, sizes, seed)
        run = loaded[model].params["random"]
        if params.keys() != run.keys() or not all(torch.equal(params[k], run[k])
                                                  for k in params):
            raise RuntimeError(f"{model}'s initial weights differ from the seed's: the "
                               "shared scores do not apply")
    chosen: dict[str, Any] = {m: selection.choose(shared[m], holdout) for m in shared}
    grids = sizes["grids"] or {}
    for model in NETWORKS:
        run = loaded[model]
        for method, params in run.params.items():
            if f"{model}:{method}" not in chosen:
                chosen[f"{model}:{method}"] = selection.select_rate(
                    run.model, params, rates=sizes["sgd_rates"], **common)
    for model in BASIS:
        run = loaded[model]
        chosen[f"{model}:closed-form"] = selection.select_ridge(
            run.model, run.params["meta"], ridges=sizes["ridges"], **common)
        head = head_fitter(run.model, run.params["meta"],
                           chosen[f"{model}:closed-form"]["hyper"]["ridge"])
        chosen[f"{model}:closed-form+kernel"] = selection.select_fitter(
            lambda head=head, **hyper: residual_fitter(head, **hyper),
            grids.get("kernel", fewshot.GRIDS["kernel"]), n_particles=run.model.n_particles
            if hasattr(run.model, "n_particles") else None, dtype=run.config.torch_dtype,
            **common)
    return chosen


def evaluate(holdout: str, shots: int, noise: float, chosen: Mapping[str, Any],
             loaded: Mapping[str, protocol.RunModels], data: Any, sizes: Mapping[str, Any],
             seed: int, quiet: bool) -> dict[str, Any]:
    """Every method on the held-out trajectories: ``{metric: {method: [M, E]}}``."""
    steps, evals = sizes["steps"], list(sizes["eval_steps"])
    values: dict[str, dict[str, torch.Tensor]] = {m: {} for m in METRICS}
    seconds: dict[str, float] = {}
    keys = {"paper_mse": "mse", "derivative_nmse": "derivative_nmse",
            "short_rollout_nmse": "short_rollout_nmse"}

    def put(result: Mapping[str, Any], rename: Mapping[str, str], repeat: bool) -> None:
        for metric, key in keys.items():
            for method, v in result[key].items():
                v = v.double()
                values[metric][rename[method]] = (v[:, -1:].repeat(1, len(evals)) if repeat
                                                  else v)

    for model in NETWORKS:
        run = loaded[model]
        start = time.perf_counter()
        rates = {m: chosen[f"{model}:{m}"]["hyper"]["inner_lr"] for m in run.params}
        result = protocol.evaluate_adaptation(
            run.model, run.params, data, shots=shots, steps=steps, loss=run.config.loss,
            eval_steps=evals, seed=seed, progress=not quiet, method_lr=rates, noise=noise,
            batch=None)
        put(result, {m: f"{model}:{m}" for m in run.params}, repeat=False)
        seconds[model] = time.perf_counter() - start
        start = time.perf_counter()
        hyper = chosen[f"{model}:scratch"]["hyper"]
        result = protocol.evaluate_adaptation(
            run.model, {"scratch": run.params["random"]}, data, shots=shots,
            steps=hyper["steps"], inner_lr=hyper["lr"], loss=run.config.loss,
            eval_steps=[hyper["steps"]], seed=seed, noise=noise, optimizer="adam", batch=None)
        put(result, {"scratch": f"{model}:scratch"}, repeat=True)
        seconds[f"{model}:scratch"] = time.perf_counter() - start
    fitters, layouts, dtypes = {}, {}, {}
    for name in CLASSICAL:
        fitters[name] = baseline_fitter(name, **chosen[name]["hyper"])
    for model in BASIS:
        run = loaded[model]
        for method, start_from in (("closed-form", "meta"), ("random-features", "random")):
            key = f"{model}:{method}"
            fitters[key] = head_fitter(run.model, run.params[start_from],
                                       chosen[key]["hyper"]["ridge"])
            layouts[key] = getattr(run.model, "n_particles", None)
            dtypes[key] = run.config.torch_dtype
        key = f"{model}:closed-form+kernel"
        fitters[key] = residual_fitter(fitters[f"{model}:closed-form"], **chosen[key]["hyper"])
        layouts[key], dtypes[key] = layouts[f"{model}:closed-form"], run.config.torch_dtype
    result = evaluate_fits(fitters, data, shots=shots, eval_steps=evals, seed=seed,
                           noise=noise, n_particles=layouts, dtype=dtypes)
    put(result, {k: k for k in fitters}, repeat=False)
    seconds.update(result["fit_seconds"])
    return {"steps": evals, "values": values, "seconds": seconds}


def control(holdout: str, shots: int, noise: float, chosen: Mapping[str, Any],
            loaded: Mapping[str, protocol.RunModels], data: Data, sizes: Mapping[str, Any],
            seed: int) -> dict[str, dict[str, float]]:
    """The same fitted methods, with the same settings, on fresh trajectories of the six
    *training* systems: the laws the meta-learned basis was trained on (unseen
    trajectories, apart from the selection's). Median derivative NMSE per system and
    method; a control that shows what the meta-learned prior does inside its span."""
    fitters, layouts, dtypes = {}, {}, {}
    for name in CLASSICAL:
        fitters[name] = baseline_fitter(name, **chosen[name]["hyper"])
    for model in BASIS:
        run = loaded[model]
        key = f"{model}:closed-form"
        fitters[key] = head_fitter(run.model, run.params["meta"], chosen[key]["hyper"]["ridge"])
        layouts[key] = getattr(run.model, "n_particles", None)
        dtypes[key] = run.config.torch_dtype
    out = {}
    for name in protocol.META_SYSTEMS:
        if name == holdout:
            continue
        trajectories = data.draw(name, True, count=sizes["control_trajectories"])
        result = evaluate_fits(fitters, trajectories, shots=shots, seed=seed, noise=noise,
                               n_particles=layouts, dtype=dtypes, rollouts=False)
        out[name] = {k: float(v[:, 0].median()) for k, v in result["derivative_nmse"].items()}
    return out


def piece_settings(holdout: str, regime: str, sizes: Mapping[str, Any], seed: int
                   ) -> dict[str, Any]:
    """What a cached piece must match to be reused."""
    configs = {m: model_config(m, holdout, sizes, seed).to_dict() for m in (*NETWORKS, *BASIS)}
    grids = {name: (sizes["grids"] or {}).get(name, fewshot.GRIDS[name]) for name in CLASSICAL}
    return {"version": CACHE_VERSION, "regime": list(sizes["regimes"][regime]),
            "configs": configs, "sizes": {k: v for k, v in sizes.items() if k != "regimes"},
            "grids": grids}


def run_piece(holdout: str, sizes: Mapping[str, Any], args: argparse.Namespace, data: Data,
              runs: Path) -> None:
    """Train, select and evaluate one held-out system in every asked regime."""
    folder = args.pieces / f"seed{args.seed}" / holdout
    todo = [r for r in args.regimes
            if read_piece(folder / f"{r}.pt", piece_settings(holdout, r, sizes, args.seed))
            is None]
    if not todo:
        print(f"   {holdout}: finished before", flush=True)
        return
    began, data_s = time.time(), data.seconds
    loaded, train_s = train_models(holdout, sizes, args, data, runs)
    train_s -= data.seconds - data_s  # the training data's draw counts as data
    validation = data.validation(holdout, sizes["validation_trajectories"])
    evaluation = data.evaluation(holdout)
    for regime in todo:
        shots, noise = sizes["regimes"][regime]
        before = data.seconds
        shared = shared_scores(regime, sizes, args.seed, data, args.pieces)["scores"]
        data_s += data.seconds - before  # the shared scores count their own draws
        start = time.perf_counter()
        chosen = select(holdout, shots, noise, loaded, validation, sizes, args.seed, shared)
        select_s = time.perf_counter() - start
        start, before = time.perf_counter(), data.seconds
        result = evaluate(holdout, shots, noise, chosen, loaded, evaluation, sizes, args.seed,
                          args.quiet)
        controls = control(holdout, shots, noise, chosen, loaded, data, sizes, args.seed)
        eval_s = time.perf_counter() - start - (data.seconds - before)  # control's draws
        saved = {"settings": piece_settings(holdout, regime, sizes, args.seed),
                 "selection": chosen, "result": result, "control": controls,
                 "training_systems": [s for s in protocol.META_SYSTEMS if s != holdout],
                 "seconds": {"train": train_s, "select": select_s, "eval": eval_s,
                             "data": data.seconds - data_s},
                 "clock": [began, time.time()]}
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / f"{regime}.pt", lambda fh, saved=saved: torch.save(saved, fh))
        train_s, data_s, began = 0.0, data.seconds, time.time()  # counted once
        print(f"   {holdout}, {regime}: selection {select_s:.0f} s, evaluation "
              f"{saved['seconds']['eval']:.0f} s", flush=True)


def variant_config(variant: str, holdout: str, sizes: Mapping[str, Any], seed: int
                   ) -> protocol.ProtocolConfig:
    """The meta-training options of a :data:`VARIANTS` run: the network's MAML run with
    the variant's options, without a pretrained baseline (the network's run has it)."""
    model, options = VARIANTS[variant]
    config = model_config(model, holdout, sizes, seed).to_dict()
    return protocol.ProtocolConfig.from_dict({**config, **options, "pretrain": False})


def variant_rule(run: protocol.RunModels, value: float) -> Any:
    """How a variant's meta-trained weights adapt at the tried ``value``: Meta-SGD's
    learned rates times ``value``; else the step size ``value`` (ANIL: on the decoder)."""
    if run.inner_lr is not None:
        return {k: v * value for k, v in run.inner_lr.items()}
    return run.adaptation_lr(value)


def variant_settings(variant: str, holdout: str, regime: str, sizes: Mapping[str, Any],
                     seed: int) -> dict[str, Any]:
    """What a cached variant piece must match to be reused (or reported)."""
    return {"version": CACHE_VERSION, "regime": list(sizes["regimes"][regime]),
            "config": variant_config(variant, holdout, sizes, seed).to_dict(),
            "sgd_rates": list(sizes["sgd_rates"]), "scales": list(SCALES),
            "steps": sizes["steps"], "eval_steps": list(sizes["eval_steps"]),
            "validation_trajectories": sizes["validation_trajectories"],
            "eval_trajectories": sizes["eval_trajectories"]}


def run_variant(variant: str, holdout: str, sizes: Mapping[str, Any],
                args: argparse.Namespace, data: Data, runs: Path) -> None:
    """Train, select and evaluate one variant for one held-out system in every asked
    regime (pieces ``{regime}+{variant}.pt``)."""
    folder = args.pieces / f"seed{args.seed}" / holdout
    config = variant_config(variant, holdout, sizes, args.seed)
    settings = {r: variant_settings(variant, holdout, r, sizes, args.seed)
                for r in args.regimes}
    todo = [r for r in args.regimes
            if read_piece(folder / f"{r}+{variant}.pt", settings[r]) is None]
    if not todo:
        return
    began, data_s = time.time(), data.seconds
    start = time.perf_counter()
    path = runs / f"seed{args.seed}" / variant / holdout
    try:
        run = protocol.load_run(path)
        if run.config.to_dict() != config.to_dict():
            raise ValueError("another run")
    except ValueError:
        protocol.meta_train_run(path, config, progress=not args.quiet,
                                data=data.training(config.training_systems))
        run = protocol.load_run(path)
    train_s = time.perf_counter() - start - (data.seconds - data_s)
    validation = data.validation(holdout, sizes["validation_trajectories"])
    evaluation = data.evaluation(holdout)
    method = f"{variant}:meta"
    learned = run.inner_lr is not None
    for regime in todo:
        shots, noise = sizes["regimes"][regime]
        start = time.perf_counter()
        chosen = selection.select_rate(
            run.model, run.params["meta"], validation, holdout, shots, noise, args.seed,
            rates=SCALES if learned else sizes["sgd_rates"],
            rule=lambda value: variant_rule(run, value),
            key="scale" if learned else "inner_lr")
        select_s = time.perf_counter() - start
        start = time.perf_counter()
        value = chosen["hyper"]["scale" if learned else "inner_lr"]
        result = protocol.evaluate_adaptation(
            run.model, {"meta": run.params["meta"]}, evaluation, shots=shots,
            steps=sizes["steps"], loss=run.config.loss, eval_steps=list(sizes["eval_steps"]),
            seed=args.seed, method_lr={"meta": variant_rule(run, value)}, noise=noise,
            batch=None)
        values = {metric: {method: result[key]["meta"].double()}
                  for metric, key in (("paper_mse", "mse"),
                                      ("derivative_nmse", "derivative_nmse"),
                                      ("short_rollout_nmse", "short_rollout_nmse"))}
        saved = {"settings": settings[regime], "selection": {method: chosen},
                 "values": values,
                 "seconds": {f"{variant}:train": train_s, f"{variant}:select": select_s,
                             f"{variant}:eval": time.perf_counter() - start,
                             f"{variant}:data": data.seconds - data_s},
                 "clock": [began, time.time()]}
        atomic_write(folder / f"{regime}+{variant}.pt",
                     lambda fh, saved=saved: torch.save(saved, fh))
        train_s, data_s, began = 0.0, data.seconds, time.time()
        print(f"   {holdout}, {regime}, {variant}: selection {select_s:.0f} s", flush=True)


def with_variants(saved: dict[str, Any], folder: Path, holdout: str, regime: str,
                  sizes: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """A piece with every finished variant piece of it (made with the same options)
    merged in: values, settings, seconds and clock."""
    merged = {**saved, "selection": dict(saved["selection"]),
              "seconds": dict(saved["seconds"]),
              "result": {**saved["result"], "values": {
                  metric: dict(v) for metric, v in saved["result"]["values"].items()}}}
    clocks = [saved.get("clock")]
    for variant in VARIANTS:
        extra = read_piece(folder / f"{regime}+{variant}.pt",
                           variant_settings(variant, holdout, regime, sizes, seed))
        if extra is None:
            continue
        merged["selection"].update(extra["selection"])
        merged["seconds"].update(extra["seconds"])
        for metric, by in extra["values"].items():
            merged["result"]["values"][metric].update(by)
        clocks.append(extra["clock"])
    clocks = [c for c in clocks if c]
    if clocks:
        merged["clock"] = [min(c[0] for c in clocks), max(c[1] for c in clocks)]
    return merged


def read_piece(path: Path, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """A cached piece, if it exists and was run with ``settings``."""
    if not path.is_file():
        return None
    saved = torch.load(path, weights_only=True)
    return saved if saved.get("settings") == settings else None


# ------------------------------------------------------------------------ report
META_LEARNED = ("hnn:meta", "hogn:meta", "hnn-basis:closed-form", "hogn-basis:closed-form",
                "hnn-basis:closed-form+kernel", "hogn-basis:closed-form+kernel",
                *(f"{v}:meta" for v in VARIANTS))
"""The meta-learned methods (the rest are baselines): MAML's networks adapted by SGD, the
basis networks' closed-form heads, and those heads with a kernel fit of their residual
(a Gaussian process whose mean is the meta-learned field; the kernel baseline alone is
the same without the meta-learned mean), and the :data:`VARIANTS` (ANIL, Meta-SGD, MAML
with 5 inner steps)."""
RANDOM_OF = {"hnn:meta": "hnn:random", "hogn:meta": "hogn:random",
             "hnn-basis:closed-form": "hnn-basis:random-features",
             "hogn-basis:closed-form": "hogn-basis:random-features",
             "hnn-basis:closed-form+kernel": "hnn-basis:random-features",
             "hogn-basis:closed-form+kernel": "hogn-basis:random-features",
             **{f"{v}:meta": f"{model}:random" for v, (model, _) in VARIANTS.items()}}


def baselines_of(methods: Sequence[str]) -> list[str]:
    """Every method that is not meta-learned."""
    return [m for m in methods if m not in META_LEARNED]


def system_result(saved: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """The JSON of one (held-out system, regime) piece."""
    result = saved["result"]
    steps, values = result["steps"], result["values"]
    methods = list(values["derivative_nmse"])
    meta_learned = [m for m in META_LEARNED if m in methods]
    versus = {metric: versus_baselines(values[metric], steps, meta_learned,
                                       baselines_of(methods), seed=seed)
              for metric in METRICS}
    random_pairs = {}
    for m in meta_learned:
        pair = {metric: {"meta": values[metric][m], "random": values[metric][RANDOM_OF[m]]}
                for metric in METRICS}
        random_pairs[m] = {metric: r["meta_vs_random"] for metric, r in
                           paired_system(pair, steps, BASELINE_STEPS, seed=seed).items()}
    return {
        "seconds": saved["seconds"], "clock": saved.get("clock"),
        "training_systems": saved["training_systems"],
        "selection": {k: v["hyper"] for k, v in saved["selection"].items()},
        "steps": steps,
        "medians": {metric: medians(values[metric], steps, TABLE_STEPS) for metric in METRICS},
        "versus_baselines": versus, "versus_random": random_pairs,
        "control_training_systems": saved["control"],
        "per_trajectory": {metric: {m: compact(v) for m, v in by.items()}
                           for metric, by in values.items()}}


def compact(values: torch.Tensor) -> list[list[float]] | list[float]:
    """Per-trajectory values ``[M, E]`` for the JSON, to 4 significant digits: a list per
    trajectory, or one value per trajectory where every step holds the same (a fitted
    method)."""
    def r(x: float) -> float:
        return float(f"{x:.4g}") if math.isfinite(x) else x

    v = values.double()
    if bool((v == v[:, :1]).all()):
        return [r(x) for x in v[:, 0].tolist()]
    return [[r(x) for x in row] for row in v.tolist()]


def best_method(block: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str | None:
    """The meta-learned method ahead of every baseline on the most (system, metric) pairs
    (ties: more early wins, then more (baseline, system, metric) wins, then the order of
    :data:`META_LEARNED`)."""
    def score(m: str) -> tuple[int, int, int]:
        return (sum(block[m][k]["ahead_of_baselines"] for k in METRICS),
                sum(block[m][k]["ahead_early"] for k in METRICS),
                sum(len(v) for k in METRICS for v in block[m][k]["ahead_of_each"].values()))

    return max(block, key=score) if block else None


def assemble(sizes: Mapping[str, Any], args: argparse.Namespace, runs: Path
             ) -> dict[str, Any]:
    """Every finished piece of the seed, with the summary per regime."""
    regimes: dict[str, Any] = {}
    clocks: list[list[float]] = []
    for regime in sizes["regimes"]:
        done = {}
        for holdout in protocol.META_SYSTEMS:
            path = args.pieces / f"seed{args.seed}" / holdout / f"{regime}.pt"
            saved = read_piece(path, piece_settings(holdout, regime, sizes, args.seed))
            if saved is not None:
                done[holdout] = system_result(with_variants(
                    saved, path.parent, holdout, regime, sizes, args.seed), args.seed)
        if not done:
            continue
        verdicts = {h: r["versus_baselines"] for h, r in done.items()}
        methods = [m for m in META_LEARNED if any(m in v[METRICS[0]] for v in verdicts.values())]
        block = baselines_block(verdicts, methods)
        ahead_random = {m: {metric: [h for h, r in done.items()
                                     if r["versus_random"].get(m, {}).get(metric, {})
                                     .get("ahead", False)] for metric in METRICS}
                        for m in methods}
        shots, noise = sizes["regimes"][regime]
        shared = read_piece(args.pieces / f"seed{args.seed}" / "shared" / f"{regime}.pt",
                            shared_settings(regime, sizes, args.seed))

        regimes[regime] = {
            "shots": shots, "noise": noise, "systems": done,
            "summary": {"ahead_of_baselines": block, "ahead_of_random": ahead_random,
                        "best": best_method(block)},
            "seconds": {h: r["seconds"] for h, r in done.items()},
            "shared_select_seconds": shared["seconds"] if shared else 0.0}
        clocks += [r["clock"] for r in done.values() if r.get("clock")]
        if shared and shared.get("clock"):
            clocks.append(shared["clock"])
    total = sum(sum(s.values()) for reg in regimes.values() for s in reg["seconds"].values())
    total += sum(reg["shared_select_seconds"] for reg in regimes.values())
    # wall time: first start to last finish of the pieces (processes may run side by side)
    wall = max(c[1] for c in clocks) - min(c[0] for c in clocks) if clocks else None
    return {"experiment": "fewshot", "quick": args.quick, "seed": args.seed,
            "threads": args.threads, "sizes": {k: v for k, v in sizes.items()
                                                if k != "regimes"},
            "regimes": {r: list(sizes["regimes"][r]) for r in sizes["regimes"]},
            "meta_learned": list(META_LEARNED), "results": regimes, "compute_s": total,
            "wall_s": wall}


def _minutes(seconds: float | None) -> str:
    return "unknown" if seconds is None else f"{seconds / 60:.1f} min"


def _g(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.3g}"


def markdown(results: Mapping[str, Any], stem: str) -> str:
    """The report, made from the JSON only."""
    quick = " (quick)" if results["quick"] else ""
    lines = [f"# Few-shot adaptation against simple baselines{quick}", "",
             f"Generated by `python experiments/fewshot.py` (seed {results['seed']}) "
             f"from `{stem}.json`; {results['compute_s'] / 60:.1f} min of compute "
             f"({_minutes(results.get('wall_s'))} wall, first start to last finish) on "
             f"{results['threads']} thread(s) per process (selection and evaluation, and "
             "meta-training where this invocation ran it: a run reused from its folder "
             "counts 0).", "",
             "Every method meets the same K points of the same held-out trajectories with "
             "the same observation noise, and is scored by the same code. Settings of every "
             "method are chosen per regime on validation trajectories of the six training "
             "systems only. *Ahead of every baseline*: a paired win (median ratio < 1, "
             "Wilcoxon p < 0.05) against each baseline at a majority of steps 1, 5, 15; "
             "*early*: at both steps 1 and 5. Fitted methods take no steps: their one "
             "value stands at every step.", ""]
    for regime, res in results["results"].items():
        lines += [f"## Regime {regime}: K = {res['shots']}, noise {res['noise']:.0%}", "",
                  "| meta-learned | metric | ahead of every baseline | early (steps 1, 5) | "
                  "ahead of random init |", "|---|---|---|---|---|"]
        summary = res["summary"]
        for m, by_metric in summary["ahead_of_baselines"].items():
            for metric in METRICS:
                b = by_metric[metric]
                rnd = summary["ahead_of_random"][m][metric]
                lines.append(f"| {m} | {metric} | {b['ahead_of_baselines']} of {b['systems']}"
                             f" ({', '.join(b['ahead_of_baselines_systems']) or 'none'}) | "
                             f"{b['ahead_early']} | {len(rnd)} ({', '.join(rnd) or 'none'}) |")
        best = summary["best"]
        lines += ["", f"Best meta-learned model: **{best}**. On how many held-out systems it "
                  "is ahead of each baseline (paired, majority of steps 1, 5, 15):", "",
                  "| baseline | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
        each = {metric: summary["ahead_of_baselines"][best][metric]["ahead_of_each"]
                for metric in METRICS} if best else {}
        for base in (each[METRICS[0]] if each else {}):
            lines.append(f"| {base} | " + " | ".join(
                f"{len(each[m][base])} of {summary['ahead_of_baselines'][best][m]['systems']}"
                for m in METRICS) + " |")
        lines.append("")
        for holdout, r in res["systems"].items():
            lines += [f"### {holdout} held out ({regime})", "",
                      "Median derivative NMSE / short-rollout NMSE by step:", "",
                      "| method | " + " | ".join(str(s) for s in TABLE_STEPS) + " |",
                      "|---" * (len(TABLE_STEPS) + 1) + "|"]
            med = r["medians"]
            for m in med["derivative_nmse"]:
                cells = [f"{_g(med['derivative_nmse'][m].get(str(s)))} / "
                         f"{_g(med['short_rollout_nmse'][m].get(str(s)))}" for s in TABLE_STEPS
                         if str(s) in med["derivative_nmse"][m]]
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
            behind = {m: v["behind"] for m, v in r["versus_baselines"]["derivative_nmse"].items()}
            lines += ["", "Not ahead (derivative NMSE) of: " + "; ".join(
                f"{m}: {', '.join(b) or 'none'}" for m, b in behind.items()), ""]
            ctrl = r["control_training_systems"]
            names = list(next(iter(ctrl.values())))
            lines += ["Control, the training systems' laws (fresh trajectories, same K, "
                      "noise and settings; median derivative NMSE):", "",
                      "| system | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
            lines += [f"| {h} | " + " | ".join(_g(v[n]) for n in names) + " |"
                      for h, v in ctrl.items()]
            lines.append("")
    return "\n".join(lines) + "\n"


def update_meta_learning(out: Path) -> list[Path]:
    """Put the few-shot summary of every seed found in ``out`` into seed 0's
    ``meta_learning.json`` (its ``summary["versus_baselines"]``,
    :func:`meta_learning.versus_baselines_summary`) and remake ``meta_learning.md`` from
    it; nothing when that report does not exist."""
    path = out / "meta_learning.json"
    if not path.is_file():
        return []
    report = json.loads(path.read_text())
    versus = meta_learning.versus_baselines_summary(out)
    if versus is None:
        return []
    report["summary"]["versus_baselines"] = versus
    written = [write_json(path, report)]
    text = meta_learning.markdown(json.loads(path.read_text()), "meta_learning")
    written.append(write_text(out / "meta_learning.md", text))
    return written


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = {**(QUICK if args.quick else FULL)}
    sizes["regimes"] = {r: sizes["regimes"][r] for r in args.regimes}
    runs = args.runs or (args.out / "fewshot_runs" if args.quick
                         else ROOT / "runs" / "meta_learning")
    args.pieces = args.pieces or (args.out / "fewshot_pieces" if args.quick else PIECES)
    data = Data(sizes, args.seed)
    if args.shared_only:
        for regime in sizes["regimes"]:
            shared_scores(regime, sizes, args.seed, data, args.pieces)
        return 0
    if not args.report_only:
        for holdout in args.systems:
            print(f"-- {holdout} held out", flush=True)
            run_piece(holdout, sizes, args, data, runs)
            for variant in args.variants:
                run_variant(variant, holdout, sizes, args, data, runs)
    results = assemble(sizes, args, runs)
    if not results["results"]:
        print(f"fewshot.py: error: no finished piece of seed {args.seed} with these options "
              f"under {runs}; run without --report-only first", file=sys.stderr)
        return 2
    stem = "fewshot" if args.seed == 0 else f"fewshot_seed{args.seed}"
    args.out.mkdir(parents=True, exist_ok=True)
    # compact (no indentation): thousands of per-trajectory values; the .md is the view
    write_text(args.out / f"{stem}.json", json.dumps(results, separators=(",", ":")) + "\n")
    write_text(args.out / f"{stem}.md", markdown(results, stem))
    print(f"wrote {args.out / (stem + '.json')} and {stem}.md", flush=True)
    if not args.quick:
        for path in update_meta_learning(args.out):
            print(f"updated {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
