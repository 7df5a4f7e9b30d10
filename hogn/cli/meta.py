"""``hogn meta-train`` and ``hogn adapt``: meta-learning across physical laws."""

from __future__ import annotations

import argparse
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hogn import checks
from hogn.cli import choices
from hogn.cli.args import NONNEG_FLOAT, NONNEG_INT, POS_FLOAT, POS_INT, UserError

if TYPE_CHECKING:  # the commands import it when they run (help never imports torch)
    from meta import protocol

__all__ = ["add_commands"]

BASELINE_NAMES = choices.META_BASELINES
"""The classical regressors of :mod:`meta.fewshot` that ``hogn adapt --baselines`` fits."""


# --------------------------------------------------------------------- meta-train
def _check_options(args: argparse.Namespace) -> None:
    """Refuse meaningless combinations of the meta-learning options, naming the flags."""
    algorithm = args.algorithm or "maml"
    if algorithm == "reptile":
        if args.meta_sgd:
            raise UserError("--meta-sgd needs --algorithm maml or fomaml: reptile's update "
                            "(θ − θ')/α gives learned inner rates no gradient")
        if args.anil:
            raise UserError("--anil needs --algorithm maml or fomaml: with reptile only the "
                            "decoder would move and the rest of the network never train")
    if args.inner_steps is not None and args.inner_steps < 1:
        raise UserError(f"--inner-steps must be at least 1, got {args.inner_steps}")


LAYER_BYTES = 64 * 2**10
"""Memory counted for each layer of a network, whatever its width (the Python objects of
its modules, in every block of a graph network): a deep network is costly even when
narrow, and slow to build even without its weights."""


def _check_work(config: protocol.ProtocolConfig) -> None:
    """Refuse, before any work (no folder made, no data generated), a run that cannot be
    done or cannot fit: support points that leave a training trajectory no query point,
    more task passes than ``$HOGN_MAX_STEPS``, or a network and meta-batch over the
    memory bound (``$HOGN_MAX_MEMORY``; the depth is bounded before the network is built
    on the meta device to count its parameters)."""
    import torch

    import systems
    from meta import protocol

    points = min(systems.get_preset(f"meta-{s}").points for s in config.training_systems)
    if config.shots >= points:
        raise UserError(f"--shots {config.shots} leaves no query point in the {points} points "
                        f"of a training trajectory; give at most {points - 1}")
    closed = config.algorithm == protocol.CLOSED_FORM
    passes = (1 if closed else config.inner_steps + 1) + (1 if config.pretrain else 0)
    copies = 6 + config.meta_batch * passes  # weights, gradients, Adam's two moments, the
    # initial and pretrained weights, and each task's adapted weights of every pass
    size = torch.tensor([], dtype=config.torch_dtype).element_size()
    layers = int(config.model_args.get("layers", 3))
    data = 8.0 * config.meta_batch * points * protocol.N_PARTICLES * 2 * 4  # q, p, dq, dp
    tasks = f"a meta-batch of {config.meta_batch} tasks"
    try:
        checks.check_steps(config.iterations * config.meta_batch * passes,
                           f"{config.iterations} outer steps x {config.meta_batch} tasks x "
                           f"{passes} passes", "lower --iterations, --meta-batch or "
                           "--inner-steps", unit="task passes")
        checks.check_memory(data + layers * LAYER_BYTES,
                            f"{tasks} and a network of {layers} layers")
        try:
            with torch.device("meta"):  # the parameters counted without memory
                shape_only = protocol.make_model(config.model, config.torch_dtype,
                                                 **config.model_args)
        except (RuntimeError, NotImplementedError, TypeError):
            return  # a model that cannot be built without memory: its own errors will tell
        count = sum(p.numel() for p in shape_only.parameters())
        checks.check_memory(data + layers * LAYER_BYTES + copies * count * size,
                            f"{tasks} and the {config.model} network ({count:.3g} "
                            f"parameters, {copies} copies)")
    except checks.CheckError as exc:
        raise UserError(f"{exc}; or lower --hidden, --layers, --features or --meta-batch"
                        if "of memory" in str(exc) else str(exc)) from None


def _variant(config: protocol.ProtocolConfig) -> str:
    extras = [name for name, on in (("Meta-SGD", config.learn_inner_lr),
                                    ("ANIL", config.anil)) if on]
    steps = f", {config.inner_steps} inner steps" if config.inner_steps != 1 else ""
    return config.algorithm + "".join(f" + {e}" for e in extras) + steps


def cmd_meta_train(args: argparse.Namespace) -> int:
    """Meta-train on six systems (and the pretrained baseline) into a run folder (under
    ``torchrun``: in each of its processes, which share every meta-batch's tasks; rank 0
    writes and prints)."""
    from hogn import distributed

    with distributed.process_group("cpu"):
        return _meta_train(args)


def _meta_train(args: argparse.Namespace) -> int:
    from hogn import distributed
    from meta import protocol

    protocol.check_system(args.holdout)
    _check_options(args)
    model_args: dict[str, Any] = {}
    for key in ("hidden", "layers", "features"):
        if getattr(args, key) is not None:
            model_args[key] = getattr(args, key)
    options = {key: getattr(args, key) for key in (
        "model", "algorithm", "iterations", "trajectories", "shots", "inner_steps",
        "inner_lr", "outer_lr", "meta_batch", "loss", "grad_clip", "checkpoint_every",
        "dtype", "seed", "ridge") if getattr(args, key) is not None}
    if options.get("algorithm") == protocol.CLOSED_FORM and "model" not in options:
        options["model"] = "hnn-basis"
    basis = options.get("model") in protocol.BASIS_MODELS
    if basis and "algorithm" not in options:
        options["algorithm"] = protocol.CLOSED_FORM
    if args.features is not None and not basis:
        raise UserError("--features needs a basis model (--model hnn-basis or hogn-basis)")
    try:
        config = protocol.ProtocolConfig(
            holdout=args.holdout, model_args=model_args,
            pretrain=not args.no_pretrain and options.get("algorithm") != protocol.CLOSED_FORM,
            learn_inner_lr=args.meta_sgd, anil=args.anil, **options)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    _check_work(config)
    start = time.perf_counter()
    main = distributed.is_main()
    if not args.quiet and main:
        processes = distributed.world_size()
        where = f" in {processes} processes" if processes > 1 else ""
        print(f"meta-training {config.model} with {_variant(config)} on "
              f"{', '.join(config.training_systems)} ({config.trajectories} trajectories "
              f"each); {config.holdout} held out{where}", flush=True)
    record = protocol.meta_train_run(args.output, config, progress=not args.quiet)
    if not main:
        return 0
    meta_rows = record["history"]["meta"]
    pre_rows = record["history"].get("pretrain") or []
    tail = max(1, len(meta_rows) // 10)
    query = sum(r["query_after"] for r in meta_rows[-tail:]) / tail
    line = (f"meta-trained for {len(meta_rows)} outer steps in "
            f"{time.perf_counter() - start:.1f} s: query loss after adaptation {query:.4g} "
            f"(mean of the last {tail})")
    if pre_rows:
        line += f"; pretrained loss {sum(r['loss'] for r in pre_rows[-tail:]) / tail:.4g}"
    print(line)
    files = "config.json, init.pt, meta.pt" + (", pretrained.pt" if pre_rows else "") + (
        f", {protocol.RATES_FILE}" if config.learn_inner_lr else "")
    print(f"run folder {args.output}: {files}, checkpoint-*.pt, metrics.jsonl, loss.png")
    print(f"next: hogn adapt {args.output} --system {config.holdout} --steps 100 --plot")
    return 0


# ------------------------------------------------------------------------- adapt
def _cell(row: dict[str, Any]) -> str:
    if row["finite"] == 0:
        return f"diverged ({row['diverged']})"
    text = f"{row['mean']:.4g}"
    if row["finite"] >= 2:
        text += f" ± {row['ci_high'] - row['mean']:.2g}"
    return text + (f" ({row['diverged']} div.)" if row["diverged"] else "")


def cmd_adapt(args: argparse.Namespace) -> int:
    """Adapt the run's three starting points to unseen trajectories; print MSE per step."""
    import systems
    from hogn.cli.common import check_outputs
    from hogn.io import save_archive
    from hogn.report import format_table, write_json
    from meta import plots, protocol
    from meta.summary import paired_system, versus_baselines

    run = protocol.load_run(args.run)
    config = run.config
    system = protocol.check_system(config.holdout if args.system is None else args.system)
    shots = config.shots if args.shots is None else args.shots
    for key, value, low in (("--steps", args.steps, 0), ("--trajectories", args.trajectories, 1),
                            ("--shots", shots, 1)):
        if value < low:
            raise UserError(f"{key} must be at least {low}, got {value}")
    inner_lr = config.inner_lr if args.inner_lr is None else args.inner_lr
    if not inner_lr > 0:
        raise UserError(f"--inner-lr must be positive, got {inner_lr}")
    if args.ridge is not None and config.algorithm != protocol.CLOSED_FORM:
        raise UserError("--ridge applies to a closed-form run (hogn meta-train --model "
                        "hnn-basis or hogn-basis)")
    noise = 0.0 if args.noise is None else args.noise
    if not 0.0 <= noise <= 1.0:
        raise UserError(f"--noise must be a fraction of each coordinate's spread in [0, 1] "
                        f"(e.g. 0.05), got {noise}")
    eval_steps = sorted({s for s in (*protocol.REPORT_STEPS, 2, 10, 25, 50) if s <= args.steps}
                        | {args.steps})
    if args.eval_steps:
        bad = [s for s in args.eval_steps if not 0 <= s <= args.steps]
        if bad:
            raise UserError(f"--eval-steps must lie in 0..{args.steps}, got {bad}")
        eval_steps = sorted(set(args.eval_steps))
    points = systems.get_preset(f"meta-{system}").points
    try:  # every trajectory adapts from each of (at most) four starting points, and the
        # adapted networks roll out over the trajectory after each evaluated step
        checks.check_steps(4 * args.steps * args.trajectories,
                           f"adapting {args.trajectories} trajectories for {args.steps} steps",
                           "lower --steps or --trajectories", unit="adaptation steps")
        checks.check_steps(4 * len(eval_steps) * points * args.trajectories,
                           f"rolling out {args.trajectories} trajectories of {points} points "
                           f"after each of {len(eval_steps)} evaluated steps",
                           "lower --trajectories or --eval-steps", unit="rollout steps")
    except checks.CheckError as exc:
        raise UserError(str(exc)) from None
    protocol.check_data_size([system], args.trajectories, "the trajectories to adapt to")
    keep = min(15, args.steps)
    figures = Path(args.plot_dir or args.run)
    check_outputs({"-o": args.output, "--json": args.json,
                   "--plot (curves)": figures / f"adapt-{system}-curves.png" if args.plot
                   else None,
                   "--plot (trajectories)": figures / f"adapt-{system}-trajectories.png"
                   if args.plot else None},
                  args.force)
    data = protocol.eval_data(system, args.trajectories, args.seed)
    points = int(data.t.numel())
    if shots > points:
        raise UserError(f"--shots {shots} exceeds the {points} points of a {system} "
                        "trajectory")
    if system in config.training_systems:
        print(f"note: {system} was one of the meta-training systems (held out: "
              f"{config.holdout}); these trajectories are new, the system is not")
    method_lr = run.method_lr(inner_lr)
    how = run.describe_adaptation()
    if run.inner_lr is not None or config.anil:
        print(f"meta-trained weights adapt {'with' if run.inner_lr is not None else 'on'} "
              f"{how}" + ("; --inner-lr sets the baselines' step size"
                          if run.inner_lr is not None else ""))
    result = protocol.evaluate_adaptation(
        run.model, run.params, data, shots=shots, steps=args.steps, inner_lr=inner_lr,
        loss=config.loss, eval_steps=eval_steps, keep=(keep,), seed=args.seed,
        progress=not args.quiet, method_lr=method_lr, noise=noise)
    _add_fits(args, run, data, shots, noise, keep, result)
    summary = result["summary"]
    labels = {"meta": "meta-trained", "random": "random init", "pretrained": "pretrained"}
    rows = []
    for j, step in enumerate(result["steps"]):
        row: dict[str, Any] = {"step": step}
        for method, stats in summary.items():
            row[labels.get(method, method)] = _cell(stats[j])
        rows.append(row)
    noisy = f", noise {noise:.0%} of each coordinate's spread" if noise else ""
    print(f"rollout MSE on {args.trajectories} {system} trajectories after n SGD steps on "
          f"K={shots} points{noisy} (mean ± 95% interval; step size {inner_lr}; fitted "
          "methods take no step):")
    print(format_table(rows))
    for method, baseline in (("meta", "random"), ("meta", "pretrained")):
        if method in summary and baseline in summary:
            c = protocol.compare(summary, method, baseline, [s for s in eval_steps if s > 0])
            print(f"{labels[method]} lower than {labels[baseline]} at steps {c['wins']} of "
                  f"{c['steps']}")
    values = {"paper_mse": result["mse"], "derivative_nmse": result["derivative_nmse"],
              "short_rollout_nmse": result["short_rollout_nmse"]}
    for metric, words in (("derivative_nmse", "held-out derivative error / zero field"),
                          ("short_rollout_nmse", "first-10% rollout error / standing still")):
        print(f"\n{words} (median over trajectories; 1 = no better than doing nothing):")
        print(format_table([{"step": step, **{labels.get(m, m): float(v[:, j].nanmedian())
                                              for m, v in values[metric].items()}}
                            for j, step in enumerate(result["steps"])]))
    compared = [s for s in eval_steps if s > 0]
    paired = paired_system(values, result["steps"], compared=compared, seed=args.seed)
    print(f"\npaired per trajectory (ahead: lower at most of steps {compared}, Wilcoxon "
          "p < 0.05):")
    for metric, pairs in paired.items():
        for verdict in pairs.values():
            print(f"  {metric}: {labels[verdict['a']]} vs {labels[verdict['b']]}: "
                  f"{'ahead' if verdict['ahead'] else 'not ahead'} (wins at steps "
                  f"{verdict['wins']})")
    judged = [m for m in ("meta", "closed-form") if m in values["derivative_nmse"]]
    others = [m for m in values["derivative_nmse"] if m not in judged]
    verdicts = {}
    if len(others) > 1 and compared:
        print(f"\nahead of every other method (a paired win against each at most of steps "
              f"{compared}):")
        for metric, by_method in values.items():
            verdicts[metric] = versus_baselines(by_method, result["steps"], judged, others,
                                                compared=compared, seed=args.seed)
            for m, v in verdicts[metric].items():
                print(f"  {metric}: {labels.get(m, m)}: "
                      + ("ahead of all" if v["ahead"] else
                         f"not ahead of {', '.join(labels.get(b, b) for b in v['behind'])}"))
    if args.json:
        write_json(args.json, {
            "run": str(args.run), "system": system, "shots": shots, "steps": args.steps,
            "inner_lr": inner_lr, "meta_adaptation": how,
            "trajectories": args.trajectories, "seed": args.seed,
            "eval_steps": result["steps"], "summary": summary,
            "mse": {m: v.tolist() for m, v in result["mse"].items()},
            "derivative_nmse": {m: v.tolist() for m, v in result["derivative_nmse"].items()},
            "short_rollout_nmse": {m: v.tolist()
                                   for m, v in result["short_rollout_nmse"].items()},
            "paired": paired, "noise": noise, "versus_baselines": verdicts})
        print(f"wrote {args.json}")
    t, q, p = result["truth"]
    kept = {m: r[keep] for m, r in result["rollouts"].items() if keep in r}
    if args.output:
        arrays = {"t": t, "q_true": q, "p_true": p}
        for method, (mq, mp) in kept.items():
            arrays[f"q_{method}"], arrays[f"p_{method}"] = mq, mp
        save_archive(args.output, "hogn-adapt-rollouts", 1, {
            "run": str(args.run), "system": system, "step": keep, "shots": shots,
            "inner_lr": inner_lr, "meta_adaptation": how, "methods": list(kept)}, arrays)
        print(f"wrote {args.output}: the first trajectory's truth (q_true, p_true [T, n, d]) "
              f"and each method's rollout after {keep} steps (q_METHOD, p_METHOD)")
    if args.plot:
        out = Path(args.plot_dir or args.run)
        curves = plots.adaptation_curves({f"{system} ({config.holdout} held out)": summary},
                                         out / f"adapt-{system}-curves.png")
        traj = plots.adaptation_trajectories(
            {system: {"t": t, "q": q, "p": p, "predictions": kept}},
            out / f"adapt-{system}-trajectories.png", step=keep)
        print(f"wrote {curves} and {traj}")
    return 0


def _add_fits(args: argparse.Namespace, run: protocol.RunModels, data: Any, shots: int,
              noise: float, keep: int, result: dict[str, Any]) -> None:
    """Add the fitted methods to ``result``: a basis run's closed-form head (meta-learned
    and random features) and the ``--baselines``, on the same points and noise."""
    from meta import protocol
    from meta.fitted import baseline_fitter, evaluate_fits, head_fitter

    fitters, layouts, dtypes = {}, {}, {}
    if run.config.algorithm == protocol.CLOSED_FORM:
        ridge = run.config.ridge if args.ridge is None else args.ridge
        for name, start in (("closed-form", "meta"), ("random-features", "random")):
            fitters[name] = head_fitter(run.model, run.params[start], ridge)
            layouts[name] = getattr(run.model, "n_particles", None)
            dtypes[name] = run.config.torch_dtype
    for name in args.baselines or ():
        fitters[name] = baseline_fitter(name)
    if not fitters:
        return
    steps = result["steps"]
    fits = evaluate_fits(fitters, data, shots=shots, eval_steps=steps, seed=args.seed,
                         noise=noise, n_particles=layouts, dtype=dtypes, keep=True)
    for key in ("mse", "derivative_nmse", "short_rollout_nmse"):
        result[key].update(fits[key])
    result["summary"].update({k: protocol.summarize(v, steps) for k, v in fits["mse"].items()})
    for name, kept in fits["rollouts"].items():
        result["rollouts"][name] = {keep: next(iter(kept.values()))}


# ------------------------------------------------------------------------- parser
def _fill(text: str) -> str:
    return textwrap.fill(text, 88)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``meta-train`` and ``adapt``."""
    systems_list = ", ".join(choices.META_SYSTEMS)
    mt = sub.add_parser(
        "meta-train", help="meta-train across physical laws, one system held out",
        description=_fill("Leave one system out (the meta-learning paper's protocol): generate "
        "--trajectories of each of the six other systems, meta-train one network on them "
        "(MAML by default: one inner SGD step on K points of a trajectory, the outer loss "
        "on its other points; or first-order MAML, Reptile, several inner steps, learned "
        "per-parameter inner rates (--meta-sgd), a decoder-only inner loop (--anil)), and "
        "train the same network from the same initial weights jointly on the same tasks' "
        "points (the pretrained baseline). Writes the folder -o RUN: config.json, init.pt "
        "(the random-init baseline), meta.pt, pretrained.pt, inner_lr.pt (--meta-sgd), "
        "checkpoint-*.pt, metrics.jsonl and loss.png. Running the same command again "
        "resumes from the last checkpoint (with more --iterations it trains on); a folder "
        "holding a different run (any other option) is refused."),
        epilog=f"systems: {systems_list}\n\nexamples:\n"
        "  hogn meta-train --holdout magnetic-mirror -o runs/meta-mm\n"
        "  hogn meta-train --holdout pendulum --iterations 200 --trajectories 50 -o runs/p\n"
        "  hogn meta-train --holdout pendulum --algorithm fomaml --inner-steps 3 -o runs/f\n"
        "  hogn meta-train --holdout pendulum --meta-sgd --anil -o runs/sgd-anil\n"
        "  hogn adapt runs/meta-mm --system magnetic-mirror --shots 50 --steps 100 --plot",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    mt.add_argument("--holdout", required=True, metavar="SYSTEM",
                    help=f"the system left out: one of {systems_list}")
    mt.add_argument("-o", "--output", required=True, metavar="RUN", help="run folder")
    arch = mt.add_argument_group("model")
    arch.add_argument("--model", choices=choices.META_MODELS, help="hnn (default, the "
                      "paper's: 3 padded particles), mlp (predicts dq, dp), hogn (graphs), "
                      "or a learned basis with a linear head H = φ·w, hnn-basis or "
                      "hogn-basis (meta-trained by --algorithm closed-form)")
    arch.add_argument("--features", type=POS_INT, help="basis functions m of a basis model "
                      "(default 32)")
    arch.add_argument("--hidden", type=POS_INT, help="hidden width (default 200 for hnn/mlp, "
                      "128 for hogn)")
    arch.add_argument("--layers", type=POS_INT, help="linear layers per MLP (default 3 for "
                      "hnn/mlp)")
    arch.add_argument("--dtype", choices=("float32", "float64"), help="default float32")
    opt = mt.add_argument_group("meta-training")
    opt.add_argument("--algorithm", choices=(*choices.META_ALGORITHMS, choices.META_CLOSED_FORM),
                     help="maml (default, second order), fomaml (first-order MAML), "
                     "reptile, or closed-form (a basis model meta-trained through the ridge "
                     "solve of its head from the K points; the default for a basis model)")
    opt.add_argument("--ridge", type=POS_FLOAT, help="relative ridge of the closed-form "
                     "head's solve (default 1e-3)")
    opt.add_argument("--iterations", type=int, help="outer steps (default 2000); the "
                     "pretrained baseline takes as many")
    opt.add_argument("--trajectories", type=POS_INT, help="trajectories per training system "
                     "(default 200; the paper: 10,000)")
    opt.add_argument("--shots", type=POS_INT, help="support points per task K (default 50)")
    opt.add_argument("--inner-steps", type=POS_INT, help="inner SGD steps (default 1)")
    opt.add_argument("--inner-lr", type=POS_FLOAT, help="inner step size, also used to adapt "
                     "(default 0.1; with --meta-sgd the learned rates' initial value)")
    opt.add_argument("--meta-sgd", action="store_true", help="Meta-SGD: learn one inner "
                     "rate per parameter element (maml, fomaml); 'hogn adapt' adapts the "
                     "meta-trained weights with them")
    opt.add_argument("--anil", action="store_true", help="ANIL: the inner loop adapts only "
                     "the decoder (the readout layer of hnn/mlp, the node decoder of hogn); "
                     "the outer loop trains all weights (maml, fomaml)")
    opt.add_argument("--outer-lr", type=POS_FLOAT, help="Adam learning rate (default 1e-3)")
    opt.add_argument("--meta-batch", type=POS_INT, help="tasks per outer step (default 8)")
    opt.add_argument("--loss", choices=choices.META_LOSSES, help="default logcosh")
    opt.add_argument("--grad-clip", type=NONNEG_FLOAT, help="meta-gradient norm clip (default off)")
    opt.add_argument("--checkpoint-every", type=POS_INT, help="outer steps between "
                     "checkpoints (default 100)")
    opt.add_argument("--no-pretrain", action="store_true", help="skip the pretrained "
                     "baseline")
    opt.add_argument("--seed", type=NONNEG_INT, help="seed of data, weights and tasks (default 0)")
    opt.add_argument("--quiet", action="store_true", help="no progress bars")
    mt.set_defaults(func=cmd_meta_train)

    ad = sub.add_parser(
        "adapt", help="few-shot adaptation of a meta-trained run to a system",
        description=_fill("From each of the run's meta-trained, random-init and pretrained "
        "weights, take 0..--steps plain SGD steps (the run's inner step size; the "
        "meta-trained weights of a --meta-sgd run with their learned rates, of an --anil "
        "run on the decoder only) on K points "
        "of each of --trajectories fresh trajectories of SYSTEM (default: the run's "
        "held-out system); after the evaluated steps roll the adapted network out with RK4 "
        "from the trajectory's first state and print the MSE against the truth (mean ± 95% "
        "t-interval, diverged rollouts counted apart). --plot saves the adaptation curves "
        "and the trajectories after 15 steps (the paper's Figures 1 and 2)."),
        epilog="examples:\n"
        "  hogn adapt runs/meta-mm --steps 100 --plot\n"
        "  hogn adapt runs/meta-mm --system magnetic-mirror --shots 50 --steps 100 \\\n"
        "      --trajectories 100 --json mm.json -o mm-rollouts.pt\n"
        "  hogn adapt runs/meta-mm --system pendulum --shots 20 --steps 30 --eval-steps 0 10 30",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ad.add_argument("run", metavar="RUN", help="run folder from 'hogn meta-train'")
    ad.add_argument("--system", metavar="SYSTEM", help=f"one of {systems_list} (default: "
                    "the held-out one)")
    ad.add_argument("--shots", type=POS_INT, help="points K per trajectory (default: the run's)")
    ad.add_argument("--steps", type=int, default=100,
                    help="adaptation steps S (default 100)")
    ad.add_argument("--trajectories", type=POS_INT, default=20, help="trajectories M (default 20; "
                    "the paper: 100)")
    ad.add_argument("--eval-steps", type=NONNEG_INT, nargs="+", metavar="N",
                    help="steps after which to roll out (default 0 1 2 5 10 15 25 50 100, up to S)")
    ad.add_argument("--inner-lr", type=POS_FLOAT, help="step size (default: the run's; of "
                    "the baselines only for a --meta-sgd run)")
    ad.add_argument("--noise", type=NONNEG_FLOAT, help="observation noise of the K points, a "
                    "fraction of each coordinate's spread (e.g. 0.05; default 0); scores "
                    "use the true field and trajectory")
    ad.add_argument("--baselines", nargs="+", metavar="NAME", choices=BASELINE_NAMES,
                    help=f"also fit these on the same points: {', '.join(BASELINE_NAMES)} "
                    "(default settings; experiments/fewshot.py chooses them on the "
                    "training systems)")
    ad.add_argument("--ridge", type=POS_FLOAT, help="relative ridge of a closed-form run's "
                    "head (default: the run's)")
    ad.add_argument("--seed", type=NONNEG_INT, default=0, help="seed of trajectories and points")
    ad.add_argument("--json", metavar="FILE", help="write the per-step statistics, the "
                    "per-trajectory MSEs and normalised errors, and the paired verdicts")
    ad.add_argument("--plot", action="store_true", help="save adapt-SYSTEM-curves.png and "
                    "adapt-SYSTEM-trajectories.png")
    ad.add_argument("--plot-dir", metavar="DIR", help="folder of the plots (default RUN)")
    ad.add_argument("-o", "--output", metavar="FILE", help="save the first trajectory's "
                    "truth and each method's rollout after 15 steps (a hogn archive)")
    ad.add_argument("--force", action="store_true", help="overwrite an existing FILE")
    ad.add_argument("--quiet", action="store_true", help="no progress bar")
    ad.set_defaults(func=cmd_adapt)
