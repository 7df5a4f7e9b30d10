"""``hogn train``, ``hogn rollout`` and ``hogn evaluate``: learned models."""

from __future__ import annotations

import argparse
import textwrap
import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import systems
from hogn import checks
from hogn.cli import choices
from hogn.cli.args import (
    DEVICE,
    FRACTION_BELOW_1,
    NONNEG_FLOAT,
    NONNEG_INT,
    POS_FLOAT,
    POS_INT,
    UserError,
    param,
    particles,
)
from hogn.cli.data import check_simulation_work
from hogn.cli.pictures import add_picture_args, picture_outputs

if TYPE_CHECKING:  # the commands import these when they run (help never imports torch)
    import torch

    from hogn import models
    from hogn.evaluation import Evaluation
    from hogn.graph import NeighbourList

__all__ = ["DERIVATIVE_COLUMNS", "EVAL_COLUMNS", "add_commands", "describe_data",
           "eval_columns", "summary_row"]

EVAL_COLUMNS = ("model", "integrator", "trajectories", "particles", "steps", "rel_error",
                "final_rel_error", "state_mse", "energy_drift", "time_to_threshold")
# states without time order (one point per trajectory): the derivatives are scored
DERIVATIVE_COLUMNS = ("model", "trajectories", "particles", "steps", "derivative_rel_error",
                      "derivative_mse")


def eval_columns(row: dict[str, Any]) -> tuple[str, ...]:
    """The table columns of an evaluation row: rollout errors, or derivative errors
    where nothing was rolled out (``steps`` 0)."""
    if row["steps"] == 0:
        return DERIVATIVE_COLUMNS
    if "energy_error" in row:  # a damped or driven system: against the true energy curve
        return tuple("energy_error" if c == "energy_drift" else c for c in EVAL_COLUMNS)
    return EVAL_COLUMNS


ROLLOUT_FORMAT = "hogn-rollout"


def describe_data(data: systems.Dataset, path: str | None = None) -> dict[str, Any]:
    """What a run records about its training data (JSON-able)."""
    sizes = data.sizes
    return {"file": path, "system": data.system_config, "dt": data.dt,
            "particles": [int(sizes.min()), int(sizes.max())],
            "trajectories": data.num_graphs, "points": int(data.t.numel())}


def summary_row(name: str, integrator: str | None, data: systems.Dataset,
                result: Evaluation, threshold: float = 0.1) -> dict[str, Any]:
    """One table row: the evaluation summary with what was evaluated."""
    return {"model": name, "integrator": integrator or "own step",
            "particles": data.particle_range,
            **result.summary(threshold)}


# -------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    """Train a model on a dataset file into a run folder (under ``torchrun``: in each of
    its processes, which share the work; rank 0 writes and prints)."""
    from hogn import distributed

    with distributed.process_group(args.device or "cpu"):
        return _train_run(args)


def _train_run(args: argparse.Namespace) -> int:
    import torch

    from hogn import distributed, models
    from hogn.cli.common import DTYPES
    from hogn.plot import loss_curves
    from hogn.train import TrainConfig, train

    data = systems.load(args.data)
    if args.n_particles is not None:
        keep = data.sizes == args.n_particles
        if not bool(keep.any()):
            raise UserError(f"{args.data} has no graphs of {args.n_particles} particles "
                            f"(sizes {sorted(set(data.sizes.tolist()))})")
        data = data.select(keep)
    model_args = dict(args.model_arg or [])
    for key in ("hidden", "layers"):
        if getattr(args, key) is not None:
            model_args[key] = getattr(args, key)
    if args.mp_steps is not None:
        model_args["steps"] = args.mp_steps
    data, note = _states_with_own_edges(args, data, model_args)
    if note and distributed.is_main():
        print(note)
    _check_model_size(args.model, data, model_args, DTYPES[args.dtype])
    torch.manual_seed(args.seed)  # the same seed gives the same initial weights (every rank)
    model = models.for_data(args.model, data, **model_args).to(DTYPES[args.dtype])
    options = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
               if getattr(args, f.name, None) is not None}
    start = time.perf_counter()
    result = train(model, data, run_dir=args.output, progress=not args.quiet,
                   data_info=describe_data(data, args.data), **options)
    if not distributed.is_main():
        return 0
    processes = distributed.world_size()
    run = Path(args.output)
    png = loss_curves({model.name: result.history}, run / "loss.png",
                      title=f"{model.name} on {data.system_config['name']}")
    if result.resumed_epoch:
        print(f"resumed {run} from its checkpoint of epoch {result.resumed_epoch}")
    where = f" in {processes} processes" if processes > 1 else ""
    if result.full_batch:
        print("full batch: every step takes all training samples in one batch "
              "(--batch-size covers them)")
    print(f"trained {model.name} ({sum(p.numel() for p in model.parameters())} parameters) "
          f"for {len(result.history)} epoch(s), {result.steps} optimizer step(s){where} in "
          f"{time.perf_counter() - start:.1f} s: best validation loss {result.best_val:.4g} "
          f"at epoch {result.best_epoch}")
    tested = int(data.test.sum())
    if result.test_loss is None:
        print(f"{args.data} has no test trajectories: no test loss")
    else:
        print(f"test loss {result.test_loss:.4g} (the best weights on the {tested} test "
              f"trajectories of {args.data})")
    print(f"run folder {run}: config.json, metrics.jsonl, best.pt, last.pt, checkpoint.pt, "
          f"{png.name}")
    return 0


def _states_with_own_edges(args: argparse.Namespace, data: systems.Dataset,
                           model_args: dict[str, Any]) -> tuple[systems.Dataset, str]:
    """With a cut-off (``--cutoff``, or by default the imported cut-off of a dataset
    with a periodic box), every saved state becomes a graph of its own with the pairs
    within the cut-off of its own positions as edges, and the model reads edges up to
    it (``model_args["cutoff"]``, unless given); without one, ``data`` as it is.
    Returns the data and a line saying what was done (empty: nothing)."""
    from hogn.models.base import accepts

    cutoff = args.cutoff
    if cutoff is None and data.box is not None and data.meta.get("cutoff") is not None:
        cutoff = float(data.meta["cutoff"])
        how = f"the cut-off {cutoff:g} it was imported with; --cutoff sets another"
    else:
        how = f"--cutoff {cutoff:g}" if cutoff is not None else ""
    if cutoff is None:
        return data, ""
    if not accepts(args.model, "cutoff"):
        raise UserError(f"{args.data}: states with edges within a cut-off ({how}) need a graph "
                        f"model that reads edges up to it (hogn, separable-hogn, potential-hogn, "
                        f"ogn, ...); {args.model} has no cut-off")
    if (args.target or "derivative") != "derivative":
        raise UserError(f"{args.data}: states with edges within a cut-off ({how}) train on the "
                        f"derivative target, not --target {args.target}")
    model_args.setdefault("cutoff", cutoff)
    states = data.snapshots(radius=cutoff)
    edges = states.edge_index.shape[1] / max(1, states.num_graphs)
    return states, (f"{args.data}: each of its {states.num_graphs} saved states is a graph of "
                    f"its own, with the pairs closer than {cutoff:g} as edges ({how}; "
                    f"{edges:.0f} edges a state on average)")


def _check_model_size(name: str, data: systems.Dataset, model_args: dict[str, Any],
                      dtype: torch.dtype) -> None:
    """Refuse a model too large to train here, before allocating it: its parameters
    are counted on the ``meta`` device (no memory), then weights, gradients and
    Adam's two moments are four copies."""
    import torch

    from hogn import models

    try:
        with torch.device("meta"):
            shape_only = models.for_data(name, data, **model_args)
    except (RuntimeError, NotImplementedError, TypeError):
        return  # a model that cannot be built without memory: its own errors will tell
    count = sum(p.numel() for p in shape_only.parameters())
    size = torch.tensor([], dtype=dtype).element_size()
    try:
        checks.check_memory(4.0 * count * size, f"model {name} ({count:.3g} parameters, "
                            "with gradients and optimizer state)")
    except checks.CheckError as exc:
        raise UserError(f"{exc}; or lower --hidden / --layers") from None


def _check_rollout_work(steps: int, substeps: int, trajectories: int, particles: int,
                        dim: int) -> None:
    """Refuse a rollout whose integrator steps or saved trajectory cannot fit."""
    try:
        checks.check_steps(steps * substeps, f"{steps} steps x {substeps} substeps",
                           "lower --steps or --substeps")
        checks.check_memory(8.0 * 4 * (steps + 1) * particles * dim,
                            f"the rollout ({trajectories} trajectories, {steps + 1} points, "
                            f"{particles} particles in all, {dim} dims)")
    except checks.CheckError as exc:
        raise UserError(str(exc)) from None


# ------------------------------------------------------------------------ rollout
def _truth_for_rollout(args: argparse.Namespace, record: dict[str, Any]
                       ) -> systems.Dataset:
    """Ground truth to roll out against: from --data, or simulated from the system."""
    from hogn.cli.common import system_params

    if args.data is not None:
        data = systems.load(args.data)
        return data[: args.trajectories] if args.trajectories is not None else data
    trained_on = record.get("data") or {}
    config = dict(trained_on.get("system") or {})
    name = args.system or config.get("name")
    if name is None:
        raise UserError("the run does not record its system; pass --system or --data")
    if name not in systems.names():
        raise UserError(f"the run was trained on {name!r}, which is no registered system "
                        "(data from your own arrays?); pass --data FILE to start from its "
                        f"states, or --system NAME, one of {', '.join(systems.names())}")
    params = {k: v for k, v in config.items() if k != "name"} if name == config.get(
        "name") else {}
    params.update(dict(args.param or []))
    system = systems.get(name, **system_params(name, params))
    n_particles = args.n_particles
    if n_particles is None and system.n_particles is None:
        n_particles = tuple(trained_on.get("particles") or (4, 4))
    dt = args.dt if args.dt is not None else trained_on.get("dt")
    if dt is None:
        raise UserError("pass --dt (the run does not record the data's dt)")
    trajectories = 4 if args.trajectories is None else args.trajectories
    check_simulation_work(system, trajectories, args.steps, dt, n_particles,
                          what="the ground truth to roll out against")
    return systems.generate(system, trajectories, args.steps, dt, seed=args.seed,
                            n_particles=n_particles, test_fraction=0.0, progress=False)


def cmd_rollout(args: argparse.Namespace) -> int:
    """Roll a trained model out, against the truth, and save the trajectories."""
    from hogn.cli.common import check_outputs, load_run
    from hogn.cli.pictures import write_pictures
    from hogn.evaluation import evaluate
    from hogn.io import save_archive

    model, record = load_run(args.run, args.model, args.device)
    out = Path(args.output) if args.output else None
    check_outputs({"-o": args.output, "--plot": args.plot, **picture_outputs(args)},
                  args.force)
    integrator = _integrator(args.integrator, model, record)
    truth = _truth_for_rollout(args, record)
    if args.data is not None and args.steps is not None and args.steps >= truth.t.numel():
        raise UserError(f"{args.data} holds {truth.t.numel()} points per trajectory; "
                        f"--steps must be below that, got {args.steps}")
    horizon = truth.t.numel() - 1 if args.steps is None else args.steps
    _check_rollout_work(horizon, args.substeps, truth.num_graphs, truth.q.shape[1], truth.dim)
    steps = args.steps if args.data is not None else None
    result = evaluate(model, truth, energy=truth.energy_function(), integrator=integrator,
                      steps=steps, substeps=args.substeps, progress=not args.quiet,
                      energy_reference=truth.energy_reference(),
                      neighbours=_neighbours(args.cutoff, model, truth))
    row = summary_row(model.name, integrator, truth, result, args.threshold)
    _print_with_references(row, truth, integrator, steps, args)
    if out is not None:
        arrays = {"t": result.t, "q": result.q, "p": result.p, "ptr": truth.ptr,
                  "c": truth.c, "edge_index": truth.edge_index}
        save_archive(out, ROLLOUT_FORMAT, 1, {"run": str(args.run), "model": model.name,
                                              "integrator": integrator, "summary": row,
                                              "system": truth.system_config}, arrays)
        print(f"wrote {out}: predicted q, p [T+1, N, d], t, ptr, c, edge_index")
    if args.plot:
        png = _plot_first(args.plot, model.name, truth, result)
        print(f"wrote {png}")
    for path in write_pictures(args, truth, result, model.name):
        print(f"wrote {path}")
    return 0


def _print_with_references(row: dict[str, Any], data: systems.Dataset, integrator: str | None,
                           steps: int | None, args: argparse.Namespace
                           ) -> dict[str, dict[str, Any]]:
    """Print the model's row with the rows of :func:`hogn.evaluation.references` below it
    (standing still; the true field through the same integrator), and a line on how
    to read them; returns the references' rows by name."""
    from hogn.evaluation import STILL, references
    from hogn.report import format_table

    refs = {name: summary_row(name, "-" if name == STILL else integrator, data, ev,
                              args.threshold)
            for name, ev in references(data, integrator, steps=steps, substeps=args.substeps,
                                       energy=data.energy_function(),
                                       energy_reference=data.energy_reference()).items()}
    print(format_table([row, *refs.values()], eval_columns(row)))
    if refs:
        print(f"references: '{STILL}' keeps the initial state (a model that learned "
              "nothing); 'true field' steps the true dynamics with the same integrator and "
              "dt (what the integration alone costs)")
    return refs


def _neighbours(cutoff: float | None, model: models.DynamicsModel, data: systems.Dataset
                ) -> NeighbourList | None:
    """The neighbour list a rollout of ``data`` takes: radius ``--cutoff``, or by default
    the model's own cut-off on data in a periodic box (whose neighbours change as the
    particles move); ``None`` (the data's stored edges) otherwise. The skin is a tenth
    of the radius, less where the box is small."""
    from hogn.graph import NeighbourList
    from hogn.periodic import fitting_skin

    if cutoff is None and (data.box is None or model.config().get("cutoff") is None
                           or data.t.numel() < 2):
        return None
    radius = float(model.config()["cutoff"] if cutoff is None else cutoff)
    skin = fitting_skin(data.box, radius)
    if skin is None:
        raise UserError(f"a periodic box of length {float(data.box.min()):g} is smaller than "
                        f"twice the neighbour radius {radius:g}: pass a smaller --cutoff (at "
                        f"least the model's, {model.config().get('cutoff')}) or use larger "
                        "boxes")
    return NeighbourList(radius, skin, box=data.box)


def _integrator(name: str | None, model: models.DynamicsModel, record: dict[str, Any]
                ) -> str | None:
    from hogn import integrators

    if model.is_stepper:
        if name is not None:
            raise UserError(f"{model.name} is a stepper with its own dt; it takes no "
                            f"--integrator (got {name!r})")
        return None
    if name is None:
        name = record.get("train", {}).get("integrator") or "rk4"
        if name not in integrators.names():
            raise UserError(f"the run's config.json records an unknown integrator {name!r} "
                            f"(damaged?); pass --integrator, one of "
                            f"{', '.join(integrators.names())}")
    model.check_integrator(name)
    return name


def _plot_first(path: str, name: str, truth: systems.Dataset, result: Evaluation) -> Path:
    import torch

    from hogn.plot import rollout_comparison

    a, b = int(truth.ptr[0]), int(truth.ptr[1])
    energy = (result.energy_error[:, 0] if result.energy_error is not None
              else torch.zeros_like(result.t))
    return rollout_comparison(result.t, truth.q[: result.t.numel(), a:b],
                              {name: result.q[:, a:b]}, {name: energy}, path,
                              title=f"{truth.system_config['name']}, {b - a} particles")


# ----------------------------------------------------------------------- evaluate
def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a trained model on a dataset file."""
    from hogn.cli.common import check_outputs, load_run
    from hogn.evaluation import evaluate
    from hogn.report import write_json

    check_outputs({"--json": args.json, "--plot": args.plot}, args.force)
    model, record = load_run(args.run, args.model, args.device)
    data = systems.load(args.data)
    if args.split == "test":
        if not bool(data.test.any()):
            raise UserError(f"{args.data} has no test trajectories; pass --split all")
        data = data.heldout
    elif args.split == "train":
        data = data.train
    integrator = _integrator(args.integrator, model, record)
    horizon = data.t.numel() - 1 if args.steps is None else min(args.steps, data.t.numel())
    _check_rollout_work(horizon, args.substeps, data.num_graphs, data.q.shape[1], data.dim)
    result = evaluate(model, data, energy=data.energy_function(), integrator=integrator,
                      steps=args.steps, substeps=args.substeps, progress=not args.quiet,
                      energy_reference=data.energy_reference(),
                      neighbours=_neighbours(args.cutoff, model, data))
    row = summary_row(model.name, integrator, data, result, args.threshold)
    refs = _print_with_references(row, data, integrator, args.steps, args)
    if args.json:
        per_step = {"t": result.t.tolist(),
                    "rel_error_geomean": result.relative_error.clamp_min(1e-30).log()
                    .mean(1).exp().tolist()}
        write_json(args.json, {"run": str(args.run), "data": args.data, "split": args.split,
                               "summary": row, "references": refs, "per_step": per_step})
        print(f"wrote {args.json}")
    if args.plot:
        print(f"wrote {_plot_first(args.plot, model.name, data, result)}")
    return 0


# ------------------------------------------------------------------------- parser
def _common_rollout_args(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--model", choices=("best", "last"), default="best",
                     help="which weights of the run (default best: lowest validation loss)")
    cmd.add_argument("--integrator", choices=choices.INTEGRATORS, metavar="NAME",
                     help="integrator for derivative models (default: the one the run "
                     f"trained with, else rk4); one of {', '.join(choices.INTEGRATORS)}; "
                     f"{SPLITTING} need a separable H (separable-hogn); "
                     f"{IMPLICIT} are symplectic for any H")
    cmd.add_argument("--substeps", type=POS_INT, default=1,
                     help="integrator steps per saved step (default 1)")
    cmd.add_argument("--threshold", type=POS_FLOAT, default=0.1,
                     help="relative error level for time_to_threshold (default 0.1)")
    cmd.add_argument("--plot", metavar="PNG", help="save predicted vs true paths of the "
                     "first trajectory and its energy error")
    cmd.add_argument("--cutoff", type=POS_FLOAT, help="roll out on a neighbour list of this "
                     "radius (edges rebuilt as the particles move); default: the model's cut-off "
                     "on data in a periodic box, else the data's stored edges")
    cmd.add_argument("--device", type=DEVICE, default=None, help="torch device (default cpu)")
    cmd.add_argument("--quiet", action="store_true", help="no progress bar")


SPLITTING = ", ".join(choices.SPLITTING)
IMPLICIT = ", ".join(choices.IMPLICIT)


def _fill(text: str) -> str:
    return textwrap.fill(text, 88)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``train``, ``rollout`` and ``evaluate``."""
    tr = sub.add_parser(
        "train", help="train a model on a dataset",
        description=_fill("Train MODEL on the training trajectories of the dataset file DATA "
        "(a part of them held out for validation) and write the run to the folder -o RUN: "
        "config.json, metrics.jsonl, best.pt, last.pt, checkpoint.pt and loss.png. The "
        "input sizes (dims, node constants, edge features, particle count of fixed-size "
        "models, dt of steppers) come from the data. Running the same command again (with "
        "more --epochs or --steps, or after the run was killed) resumes from the last "
        "checkpoint; a folder holding a different run is refused. When training ends, the "
        "best weights are scored on the dataset's test trajectories (test_loss, printed and "
        "in the last line of metrics.jsonl)."),
        epilog=f"models: {', '.join(choices.MODELS)}\n\nexamples:\n"
        "  hogn generate spring-nbody --n-particles 4..6 --trajectories 200 -o spring.pt\n"
        "  hogn train hogn spring.pt --hidden 64 --epochs 30 -o runs/hogn\n"
        "  hogn train ogn spring.pt --target rollout --integrator rk4 -o runs/ogn\n"
        "  hogn train deltagn spring.pt -o runs/deltagn          # steps the data's dt\n"
        "  hogn train hnn spring.pt --n-particles 4 --steps 2000 --batch-size 100000 "
        "--val-fraction 0 --weight-decay 1e-4 -o runs/hnn  # 2000 full-batch steps\n"
        "  hogn train mlp spring.pt --n-particles 5 -o runs/mlp  # fixed-size models\n"
        "  torchrun --nproc-per-node 4 -m hogn train hogn spring.pt -o runs/hogn  # 4 "
        "processes (README: Scaling out)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    tr.add_argument("model", metavar="MODEL", help="model name (see below)")
    tr.add_argument("data", metavar="DATA", help="dataset file from 'hogn generate'")
    tr.add_argument("-o", "--output", required=True, metavar="RUN", help="run folder")
    arch = tr.add_argument_group("model")
    arch.add_argument("--hidden", type=POS_INT, help="hidden width (model default: graph "
                      "models 128, hnn/mlp 200)")
    arch.add_argument("--layers", type=POS_INT, help="linear layers per MLP")
    arch.add_argument("--mp-steps", type=POS_INT, help="message-passing steps (graph models)")
    arch.add_argument("--model-arg", type=param, action="append", metavar="KEY=VALUE",
                      help="any other constructor argument, repeatable "
                      "(e.g. --model-arg absolute_positions=true)")
    arch.add_argument("--dtype", choices=choices.DTYPES, default="float32",
                      help="parameter dtype (default float32)")
    arch.add_argument("--n-particles", type=POS_INT, help="train only on graphs of this size "
                      "(needed by hnn/mlp when the data mixes sizes)")
    arch.add_argument("--cutoff", type=POS_FLOAT, help="give every saved state the pairs closer "
                      "than this as edges (minimum image in a periodic box) and the model this "
                      "cut-off; default: a periodic dataset's imported cut-off")
    opt = tr.add_argument_group("training")
    opt.add_argument("--target", choices=choices.TARGETS, help="derivative: match dq, dp (default; "
                     "steppers always rollout); rollout: integrate and match next states")
    opt.add_argument("--integrator", choices=choices.INTEGRATORS, metavar="NAME",
                     help=f"integrator of the rollout target (default rk4); {SPLITTING} "
                     "need a separable H (separable-hogn)")
    opt.add_argument("--rollout-steps", type=POS_INT, help="steps matched per sample (default 1)")
    opt.add_argument("--refine-initial", action="store_true", default=None,
                     help="rollout target: each training sample's start state is a learned "
                     "offset from its observation (noisy data; SRNN, docs/srnn.md)")
    opt.add_argument("--refine-lr", type=POS_FLOAT, help="learning rate of the refined start "
                     "states (default: --lr)")
    opt.add_argument("--loss", choices=choices.LOSSES, help="default mse")
    length = opt.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=POS_INT, help="passes over the training samples "
                        "(default 20)")
    length.add_argument("--steps", type=POS_INT, help="train for exactly this many optimizer "
                        "steps instead (the last epoch cut short; --schedule cosine anneals "
                        "over them)")
    opt.add_argument("--batch-size", type=POS_INT, help="graphs per batch (default 64); at "
                     "least the training samples: full batch, one step per epoch")
    opt.add_argument("--edge-budget", type=NONNEG_INT, help="cut batches by size instead: "
                     "graphs until the next would pass this many edges plus nodes (for "
                     "graphs of very different sizes; default 0: off)")
    opt.add_argument("--lr", type=POS_FLOAT, help="Adam learning rate (default 1e-3)")
    opt.add_argument("--weight-decay", type=NONNEG_FLOAT, help="Adam weight decay (default 0)")
    opt.add_argument("--schedule", choices=choices.SCHEDULES, help="learning-rate schedule "
                     "(default none)")
    opt.add_argument("--val-fraction", type=FRACTION_BELOW_1, help="training trajectories held out "
                     "for validation (default 0.1)")
    opt.add_argument("--max-samples", type=NONNEG_INT, help="random samples per epoch (default: "
                     "all states of all training trajectories)")
    opt.add_argument("--grad-clip", type=NONNEG_FLOAT, help="gradient-norm clip (default off)")
    opt.add_argument("--seed", type=NONNEG_INT, default=0, help="seed of weights, split and "
                     "batch order (default 0)")
    opt.add_argument("--device", type=DEVICE, help="torch device (default cpu)")
    opt.add_argument("--quiet", action="store_true", help="no progress bars")
    ckpt = tr.add_argument_group("checkpoints", _fill(
        "checkpoint.pt holds all a resume needs; it is written as often as "
        "these say, after the last epoch and when training stops on an error or Ctrl-C. "
        "A run killed at any instant resumes (the same command) to the same weights and "
        "metrics as an uninterrupted one, losing the epochs since its last checkpoint."))
    ckpt.add_argument("--checkpoint-every", type=checks.arg(
                      checks.nonnegative_int, "checkpoint_every"), metavar="EPOCHS",
                      help="checkpoint every EPOCHS epochs (default 0: not by epochs)")
    ckpt.add_argument("--checkpoint-seconds", type=checks.arg(
                      checks.nonnegative_float, "checkpoint_seconds"), metavar="SECONDS",
                      help="checkpoint when SECONDS have passed since the last one "
                      "(default 30; 0: not by time)")
    tr.set_defaults(func=cmd_train)

    ro = sub.add_parser(
        "rollout", help="simulate with a trained model, against the truth",
        description=_fill("Roll the model of RUN out from initial states and compare with the "
        "ground truth: states sampled from the run's system (or --system), of any size "
        "(--n-particles, e.g. far larger than in training), simulated in float64; or the "
        "first states of a dataset file (--data). Prints the relative error, state MSE and "
        "the drift of the true energy along the prediction; saves the predicted "
        "trajectories (-o) and a plot (--plot)."),
        epilog="examples:\n"
        "  hogn rollout runs/hogn --n-particles 16 --steps 1000 --integrator gauss4\n"
        "  hogn rollout runs/hogn --n-particles 64 --steps 500 --plot big.png -o big.pt\n"
        "  hogn rollout runs/hogn --data spring-test.pt --steps 50",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ro.add_argument("run", metavar="RUN", help="run folder from 'hogn train'")
    ro.add_argument("--data", metavar="FILE", help="start from this dataset's trajectories "
                    "instead of sampling")
    ro.add_argument("--system", help="system to sample (default: the run's)")
    ro.add_argument("--param", type=param, action="append", metavar="KEY=VALUE",
                    help="system parameter, repeatable")
    ro.add_argument("--n-particles", type=particles, metavar="N|MIN..MAX",
                    help="particles per graph (default: as in training)")
    ro.add_argument("--trajectories", type=POS_INT, help="number of trajectories (default 4; "
                    "with --data: all)")
    ro.add_argument("--steps", type=POS_INT, default=None, help="steps to roll out (default "
                    "100; with --data: all)")
    ro.add_argument("--dt", type=POS_FLOAT, help="step size (default: the training data's)")
    ro.add_argument("--seed", type=NONNEG_INT, default=0, help="seed of the initial states")
    ro.add_argument("-o", "--output", metavar="FILE", help="save the predicted trajectories")
    ro.add_argument("--force", action="store_true", help="overwrite an existing FILE")
    _common_rollout_args(ro)
    add_picture_args(ro)
    ro.set_defaults(func=_rollout_defaults)

    ev = sub.add_parser(
        "evaluate", help="errors and energy drift of a trained model on a dataset",
        description=_fill("Roll the model of RUN out from the first state of each trajectory "
        "of the dataset file DATA (its test split by default) and compare with the truth: "
        "relative error ‖x̂−x‖/(‖x̂‖+‖x‖) (geometric mean over trajectories of its mean "
        "over the horizon, and at the last step), state MSE, drift of the true energy "
        "along the prediction, and the median time until the relative error passes "
        "--threshold."),
        epilog="examples:\n"
        "  hogn evaluate runs/hogn spring-test.pt\n"
        "  hogn evaluate runs/hogn spring.pt --split all --integrator implicit_midpoint "
        "--json e.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("run", metavar="RUN", help="run folder from 'hogn train'")
    ev.add_argument("data", metavar="DATA", help="dataset file")
    ev.add_argument("--split", choices=("test", "train", "all"), default="test",
                    help="which trajectories (default test)")
    ev.add_argument("--steps", type=POS_INT, help="steps to compare (default: all)")
    ev.add_argument("--json", metavar="FILE", help="write the summary and per-step errors")
    ev.add_argument("--force", action="store_true", help="overwrite existing output files")
    _common_rollout_args(ev)
    ev.set_defaults(func=cmd_evaluate)


def _rollout_defaults(args: argparse.Namespace) -> int:
    if args.data is None and args.steps is None:
        args.steps = 100
    if args.data is not None and (args.system or args.n_particles or args.param):
        raise UserError("--data gives the states; --system, --param and --n-particles "
                        "apply only when sampling")
    for key in ("steps", "trajectories", "substeps"):
        value = getattr(args, key)
        if value is not None and value < 1:
            raise UserError(f"--{key} must be at least 1, got {value}")
    return cmd_rollout(args)

