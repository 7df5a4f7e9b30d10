"""Leave-one-system-out meta-learning across seven physical laws (meta-learning paper, §3-4).

For each model (the paper's HNN, and HOGN) and each held-out system of mass-spring,
pendulum, double-pendulum, two-body, three-body, magnetic-mirror and Hénon–Heiles:
meta-train the model (MAML, one inner step, K = 50) on the other six, train the same
network jointly on the same six (the pretrained baseline), then adapt meta-trained,
random-init and pretrained weights with 0 … 100 SGD steps on K points of unseen
trajectories of the held-out system. Scored after each evaluated step: the MSE of the
RK4 rollout from the first state (the paper's metric), the derivative error at the
trajectory's other points relative to a zero field, and the error of the first 10 % of
the rollout relative to standing still; meta-trained is compared with each baseline on
the same trajectories (paired: median ratio, Wilcoxon p-value) at steps 1, 5, 15, 100.

Every (seed, model, held-out system) is a piece with its own resumable run folder
``RUNS/seed{S}/{model}/{holdout}`` (checkpoints, weights, and the cached adaptation
results); ``--models`` and ``--systems`` pick the pieces to run. The report is made
from every finished piece of the seed found under ``RUNS`` (run pieces in separate
invocations or processes, then once more, or with ``--report-only``, for the whole
report): ``meta_learning.json`` (every number), ``meta_learning.md`` (tables made from
that JSON) and, per model, ``meta_learning_{model}_curves.png`` and
``meta_learning_{model}_trajectories.png`` in ``--out``; seeds other than 0 write
``meta_learning_seed{S}.json`` and ``.md`` (no figures).

Examples::

    python experiments/meta_learning.py                 # full (reduced sizes, see the md)
    python experiments/meta_learning.py --models hogn --systems pendulum two-body
    python experiments/meta_learning.py --report-only   # assemble the finished pieces
    python experiments/meta_learning.py --quick --out /tmp/meta   # ~1 min smoke run
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

import systems
from hogn.io import atomic_write
from hogn.report import write_json
from meta import plots, protocol
from meta.summary import (
    COMPARED_STEPS,
    METRICS,
    PAIRS,
    PAPER_SYSTEMS,
    against_paper,
    paired_system,
    summary_block,
)

ROOT = Path(__file__).resolve().parents[1]

MODELS = ("hnn", "hogn")
# Sizes: the paper's, and ours (reduced to fit on one CPU core).
PAPER = {"trajectories": 10_000, "eval_trajectories": 100, "shots": 50, "steps": 100,
         "model": "hnn 3 x 200 tanh"}
FULL = {"iterations": 2000, "trajectories": 200, "eval_trajectories": 100, "shots": 50,
        "meta_batch": 8, "steps": 100, "model_args": {"hnn": {}, "hogn": {"hidden": 64}},
        "eval_steps": [0, 1, 2, 5, 15, 50, 100], "rtol": None, "points": None}
# quick: every trajectory cut to its first 31 saved points (the presets' dt), so that
# both models and all seven systems run in about a minute
QUICK = {"iterations": 4, "trajectories": 4, "eval_trajectories": 2, "shots": 10,
         "meta_batch": 2, "steps": 5,
         "model_args": {"hnn": {"hidden": 16}, "hogn": {"hidden": 16, "steps": 1}},
         "eval_steps": [0, 1, 5], "rtol": 1e-6, "points": 31}
TABLE_STEPS = protocol.REPORT_STEPS
KEEP_STEP = 15  # trajectories plotted after this many steps (or the last, if fewer)
CACHE = "adaptation.pt"
CACHE_VERSION = 2  # 2: the normalised errors; caches of older code are recomputed
MODEL_WORDS = {"hnn": "HNN over 3 padded particles in d = 2 ({hidden}, 3 layers, tanh)",
               "hogn": "HOGN on each system's own graph with absolute positions ({hidden})"}
METRIC_WORDS = {
    "paper_mse": ("paper MSE", "MSE of the RK4 rollout from the first state over all saved "
                  "times, q and p (the paper's metric)"),
    "derivative_nmse": ("derivative NMSE", "error of the predicted (dq, dp) at the "
                        "trajectory's points outside the K support points, divided by "
                        "that of a zero field (0 exact, 1 = predicting nothing)"),
    "short_rollout_nmse": ("short-rollout NMSE", "error of the first 10 % of the same "
                           "rollout, divided by that of standing still at the first state "
                           "(0 exact, 1 = standing still)")}
METHOD_WORDS = (("meta", "meta-trained"), ("random", "random init"),
                ("pretrained", "pretrained + fine-tuned"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n  python experiments/meta_learning.py\n"
        "  python experiments/meta_learning.py --models hogn --systems pendulum\n"
        "  python experiments/meta_learning.py --report-only\n"
        "  python experiments/meta_learning.py --quick --out /tmp/meta",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (about a minute on "
                        "one core), for tests; results say quick")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results",
                        help="results folder (default experiments/results)")
    parser.add_argument("--runs", type=Path, help="run folders (default runs/meta_learning; "
                        "with --quick: OUT/meta_learning_runs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, weights and "
                        "draws (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--algorithm", default="maml", choices=("maml", "fomaml", "reptile"))
    parser.add_argument("--inner-lr", type=float, default=0.1, help="inner and adaptation "
                        "step size (default 0.1)")
    parser.add_argument("--iterations", type=int, help="override the meta-updates")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                        metavar="MODEL", help=f"models to run: {', '.join(MODELS)} "
                        "(default both)")
    parser.add_argument("--systems", nargs="+", choices=protocol.META_SYSTEMS,
                        default=list(protocol.META_SYSTEMS), metavar="SYSTEM",
                        help="held-out systems to run: "
                        f"{', '.join(protocol.META_SYSTEMS)} (default all seven)")
    parser.add_argument("--report-only", action="store_true", help="run nothing: assemble "
                        "the report from the finished pieces under --runs (the same size "
                        "options as when they ran)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.iterations is not None and args.iterations < 1:
        parser.error(f"--iterations must be a positive int, got {args.iterations}")
    args.models = list(dict.fromkeys(args.models))
    args.systems = list(dict.fromkeys(args.systems))
    return args


# ------------------------------------------------------------------------ pieces
class Data:
    """The datasets, generated on first use (a piece that is already finished needs none).

    Each system's data have their own seed (:func:`meta.protocol.load_systems`,
    :func:`meta.protocol.eval_data`), so they do not depend on which others are made.
    """

    def __init__(self, sizes: Mapping[str, Any], seed: int) -> None:
        self.sizes, self.seed = sizes, seed
        self.accuracy = {"rtol": sizes["rtol"]} if sizes["rtol"] else {}  # quick: looser
        self.train: dict[str, systems.Dataset] = {}
        self.eval: dict[str, systems.Dataset] = {}
        self.valid: dict[tuple[str, int], systems.Dataset] = {}
        self.seconds = 0.0

    def draw(self, name: str, evaluation: bool, count: int | None = None,
              offset: int | None = None) -> systems.Dataset:
        """Training data (``evaluation`` false), evaluation data, or with ``offset`` (and
        ``count``) another one-split draw such as the validation data of
        :mod:`meta.selection`."""
        start = time.perf_counter()
        if count is None:
            count = self.sizes["eval_trajectories" if evaluation else "trajectories"]
        if offset is None:
            offset = 500 if evaluation else 0
        if self.sizes["points"] is None:
            if offset == 0:
                data = protocol.load_systems([name], count, self.seed, **self.accuracy)[name]
            else:
                data = systems.from_preset(
                    f"meta-{name}", trajectories=count, test_fraction=0.0, progress=False,
                    seed=protocol._system_seed(name, self.seed, offset), **self.accuracy)
        else:  # quick: the preset's system and dt over a shorter span, the protocol's seeds
            preset = systems.get_preset(f"meta-{name}")
            extra = {"test_fraction": 0.0} if offset else {}
            data = systems.generate(
                systems.get(preset.system, **preset.params), count,
                self.sizes["points"] - 1, preset.dt, preset=f"meta-{name}", progress=False,
                seed=protocol._system_seed(name, self.seed, offset), **extra, **self.accuracy)
        self.seconds += time.perf_counter() - start
        return data

    def validation(self, holdout: str | None, count: int) -> dict[str, systems.Dataset]:
        """Validation trajectories of the six training systems of ``holdout``
        (:func:`meta.selection.validation_data`'s seeds; never the held-out system), or
        with ``holdout`` ``None`` of all seven (for scores made once for every held-out
        system, :func:`meta.selection.choose`)."""
        from meta.selection import VALIDATION_OFFSET

        for name in protocol.META_SYSTEMS:
            if name != holdout and (name, count) not in self.valid:
                self.valid[name, count] = self.draw(name, True, count, VALIDATION_OFFSET)
        return {name: self.valid[name, count] for name in protocol.META_SYSTEMS
                if name != holdout}

    def training(self, names: Sequence[str]) -> dict[str, systems.Dataset]:
        for name in names:
            if name not in self.train:
                self.train[name] = self.draw(name, evaluation=False)
        return {name: self.train[name] for name in names}

    def evaluation(self, name: str) -> systems.Dataset:
        if name not in self.eval:
            self.eval[name] = self.draw(name, evaluation=True)
        return self.eval[name]


def piece_config(model: str, holdout: str, sizes: Mapping[str, Any],
                 args: argparse.Namespace) -> protocol.ProtocolConfig:
    """The protocol options of one piece."""
    return protocol.ProtocolConfig(
        holdout=holdout, model=model, model_args=dict(sizes["model_args"][model]),
        algorithm=args.algorithm, iterations=sizes["iterations"],
        trajectories=sizes["trajectories"], shots=sizes["shots"],
        inner_lr=args.inner_lr, meta_batch=sizes["meta_batch"], seed=args.seed,
        checkpoint_every=max(1, min(100, sizes["iterations"])))


def piece_settings(config: protocol.ProtocolConfig, sizes: Mapping[str, Any]
                   ) -> dict[str, Any]:
    """What a cached evaluation must match to be reused (or reported)."""
    return {"version": CACHE_VERSION, "protocol": config.to_dict(), "steps": sizes["steps"],
            "eval_steps": list(sizes["eval_steps"]),
            "trajectories": sizes["eval_trajectories"], "points": sizes["points"],
            "rtol": sizes["rtol"]}


def piece_folder(runs: Path, seed: int, model: str, holdout: str) -> Path:
    """``RUNS/seed{S}/{model}/{holdout}``."""
    return runs / f"seed{seed}" / model / holdout


def _final_losses(history: Mapping[str, Sequence[Mapping[str, float]]]) -> dict[str, Any]:
    meta_rows, pre_rows = history["meta"], history.get("pretrain", [])
    tail = max(1, len(meta_rows) // 10)
    return {"meta_query_after": sum(r["query_after"] for r in meta_rows[-tail:]) / tail,
            "meta_support_before": sum(r["support_before"] for r in meta_rows[-tail:]) / tail,
            "pretrain": (sum(r["loss"] for r in pre_rows[-tail:]) / tail) if pre_rows
            else None}


def read_piece(run: Path, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The cached evaluation of a finished piece, if its settings are ``settings``."""
    cache = run / CACHE
    if not cache.is_file():
        return None
    saved = torch.load(cache, weights_only=True)
    return saved if saved.get("settings") == settings else None


def run_piece(model: str, holdout: str, sizes: Mapping[str, Any], args: argparse.Namespace,
              data: Data, runs: Path) -> dict[str, Any]:
    """Meta-train, pretrain and evaluate one piece, unless its cache is already there."""
    config = piece_config(model, holdout, sizes, args)
    settings = piece_settings(config, sizes)
    run = piece_folder(runs, args.seed, model, holdout)
    saved = read_piece(run, settings)
    if saved is not None:
        print("   finished before: reusing its results", flush=True)
        return saved
    start = time.perf_counter()
    training = data.training(config.training_systems)
    evaluation_data = data.evaluation(holdout)
    generated = time.perf_counter() - start
    start = time.perf_counter()
    record = protocol.meta_train_run(run, config, progress=not args.quiet, data=training)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    loaded = protocol.load_run(run)
    result = protocol.evaluate_adaptation(
        loaded.model, loaded.params, evaluation_data, shots=config.shots,
        steps=sizes["steps"], inner_lr=config.inner_lr, loss=config.loss,
        eval_steps=sizes["eval_steps"], keep=(min(KEEP_STEP, sizes["steps"]),),
        seed=args.seed, progress=not args.quiet, method_lr=loaded.method_lr())
    result.pop("summary")  # statistics are always made from the values, at report time
    saved = {"settings": settings, "result": result,
             # when computed (training resumed from a checkpoint: its last part only)
             "seconds": {"train": train_s, "eval": time.perf_counter() - start,
                         "data": generated},
             "training_systems": config.training_systems,
             "final_losses": _final_losses(record["history"])}
    atomic_write(run / CACHE, lambda fh: torch.save(saved, fh))
    return saved


# ------------------------------------------------------------------------ report
def system_detail(saved: Mapping[str, Any], run: Path, seed: int) -> dict[str, Any]:
    """The JSON of one finished piece (and its plot data under ``_plot``)."""
    result = saved["result"]
    steps = list(result["steps"])
    values = {"paper_mse": result["mse"], "derivative_nmse": result["derivative_nmse"],
              "short_rollout_nmse": result["short_rollout_nmse"]}
    summary = {metric: {m: protocol.summarize(v, steps) for m, v in by_method.items()}
               for metric, by_method in values.items()}
    pairs = [*PAIRS, "pretrained_vs_random"]
    compare = {metric: {pair: protocol.compare(rows, *pair.split("_vs_"))
                        for pair in pairs if all(m in rows for m in pair.split("_vs_"))}
               for metric, rows in summary.items()}
    keep = min(KEEP_STEP, saved["settings"]["steps"])
    t, q, p = result["truth"]
    return {
        "training_systems": saved["training_systems"], "run": str(run),
        "protocol": saved["settings"]["protocol"], "seconds": saved["seconds"],
        "final_losses": saved["final_losses"], "steps": steps,
        "summary": summary, "compare": compare,
        "paired": paired_system(values, steps, seed=seed),
        "per_trajectory": {metric: {m: v.tolist() for m, v in by_method.items()}
                           for metric, by_method in values.items()},
        "support_loss": {m: {"before": v[:, 0].tolist(), "after": v[:, -1].tolist()}
                         for m, v in result["support_loss"].items()},
        "_plot": {"t": t, "q": q, "p": p, "step": keep,
                  "predictions": {m: r[keep] for m, r in result["rollouts"].items()
                                  if keep in r}},
    }


def _counts(done: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean-based verdicts (:func:`meta.protocol.compare`) of the paper's MSE, counted."""
    pairs = ("meta_vs_random", "meta_vs_pretrained", "pretrained_vs_random")
    rows = [r["compare"]["paper_mse"] for r in done.values()]
    return {"systems": len(rows),
            "meta_beats_random": sum(c["meta_vs_random"]["ahead"] for c in rows
                                     if "meta_vs_random" in c),
            "meta_beats_pretrained": sum(c["meta_vs_pretrained"]["ahead"] for c in rows
                                         if "meta_vs_pretrained" in c),
            "pretrained_beats_random": sum(c["pretrained_vs_random"]["ahead"] for c in rows
                                           if "pretrained_vs_random" in c),
            # per compared step: on how many systems the first method's mean is lower
            "lower_at_step": {pair: {str(s): sum(s in c[pair]["wins"] for c in rows
                                                 if pair in c) for s in COMPARED_STEPS}
                              for pair in pairs}}


def assemble(sizes: Mapping[str, Any], args: argparse.Namespace, runs: Path
             ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The results of every finished piece of the seed under ``runs``, and plot data."""
    models: dict[str, Any] = {}
    plot_rows: dict[str, dict[str, Any]] = {}
    pieces: dict[str, dict[str, Any]] = {}
    for model in MODELS:
        done: dict[str, Any] = {}
        skipped = []
        for holdout in protocol.META_SYSTEMS:
            run = piece_folder(runs, args.seed, model, holdout)
            if not (run / CACHE).is_file():
                continue
            settings = piece_settings(piece_config(model, holdout, sizes, args), sizes)
            saved = read_piece(run, settings)
            if saved is None:
                skipped.append(holdout)
                continue
            done[holdout] = system_detail(saved, run, args.seed)
            plot_rows.setdefault(model, {})[holdout] = done[holdout].pop("_plot")
        if skipped:
            print(f"note: {model} pieces {', '.join(skipped)} under {runs} were run with other "
                  "options; left out of the report (run them with these options to redo them)",
                  flush=True)
        if not done:
            continue
        pieces[model] = {h: r["seconds"] for h, r in done.items()}
        models[model] = {
            "model_args": sizes["model_args"][model], "systems": done,
            "missing": [h for h in protocol.META_SYSTEMS if h not in done],
            "counts": _counts(done)}
    paired = {m: {h: r["paired"] for h, r in res["systems"].items()}
              for m, res in models.items()}
    versus = {}
    for model, res in models.items():
        verdicts = {"paper_mse_mean": {h: r["compare"]["paper_mse"]["meta_vs_random"]["ahead"]
                                       for h, r in res["systems"].items()}}
        for metric in METRICS:
            verdicts[metric] = {h: r["paired"][metric]["meta_vs_random"]["ahead"]
                                for h, r in res["systems"].items()}
        versus[model] = {k: against_paper(v) for k, v in verdicts.items()}
    total = {"train": sum(s["train"] for p in pieces.values() for s in p.values()),
             "eval": sum(s["eval"] for p in pieces.values() for s in p.values())}
    total["all"] = total["train"] + total["eval"]
    results = {
        "experiment": "meta_learning", "quick": args.quick, "seed": args.seed,
        "threads": args.threads, "algorithm": args.algorithm, "inner_lr": args.inner_lr,
        "sizes": dict(sizes), "paper_sizes": PAPER,
        "paper": {"systems": list(PAPER_SYSTEMS), "evaluated": len(PAPER_SYSTEMS),
                  "meta_ahead_of_random": len(PAPER_SYSTEMS)},
        "summary": summary_block(paired),
        "versus_paper": versus,
        "models": models,
        "seconds": {"pieces": pieces, "total": total},
        "compute_s": total["all"]}
    return results, plot_rows


def _cell(row: Mapping[str, Any] | None) -> str:
    if row is None or not math.isfinite(row["mean"]):
        return "–" if row is None else f"diverged ({row['diverged']})"
    half = (row["ci_high"] - row["mean"]) if math.isfinite(row["ci_high"]) else math.nan
    text = f"{row['mean']:.3g} ± {half:.2g}" if math.isfinite(half) else f"{row['mean']:.3g}"
    return text + (f" ({row['diverged']} div.)" if row["diverged"] else "")


def _names(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "none"


def _paired_text(pair: Mapping[str, Any]) -> str:
    cells = []
    for step, c in pair["comparisons"].items():
        ratio = f"{c['median_ratio']:.3g}" if math.isfinite(c["median_ratio"]) else "–"
        cells.append(f"{step}: {ratio} (p {c['p_value']:.2g})")
    return "; ".join(cells) if cells else "no compared step"


def _model_words(model: str, args: Mapping[str, Any]) -> str:
    default = {"hnn": 200, "hogn": 128}.get(model)
    hidden = args.get("hidden", default)
    return MODEL_WORDS.get(model, model + " ({hidden})").format(
        hidden=f"hidden {hidden}" if hidden is not None else "default width")


def _versus_lines(results: Mapping[str, Any]) -> list[str]:
    paper = results["paper"]
    lines = ["## Against the paper", "",
             f"The paper evaluated {paper['evaluated']} held-out systems "
             f"({_names(paper['systems'])}) and reports the meta-trained model ahead of "
             f"random init on all of them (paper: {paper['meta_ahead_of_random']} of its "
             f"{paper['evaluated']} evaluated systems; its criterion: the mean rollout MSE "
             "over the adaptation steps). Ours on the same systems:", ""]
    readings = [("paper_mse_mean", "paper MSE, mean at a majority of steps (the paper's "
                 "reading)")] + [(m, f"{METRIC_WORDS[m][0]}, paired test") for m in METRICS]
    for model, by_reading in results["versus_paper"].items():
        for key, words in readings:
            v = by_reading[key]
            n = len(v["evaluated"])
            text = (f"- {model.upper()}, {words}: ahead of random init on **{len(v['ahead'])} "
                    f"of {n}** ({_names(v['ahead'])})")
            if v["not_ahead"]:
                text += (f"; **differs from the paper** on {_names(v['not_ahead'])} "
                         "(not ahead there)")
            elif n:
                text += "; agrees with the paper on every one of them"
            if v["missing"]:
                text += f"; not run: {_names(v['missing'])}"
            lines.append(text + ".")
    return [*lines, "", *_why_lines(results)]


def _why_lines(results: Mapping[str, Any]) -> list[str]:
    """Where meta-training is not ahead of random init by the derivative NMSE: the
    meta-trained start against a zero field, and from which step it is the lower."""
    lines = []
    for model, res in results["models"].items():
        for holdout, r in res["systems"].items():
            pair = r["paired"]["derivative_nmse"].get("meta_vs_random")
            rows = r["summary"]["derivative_nmse"]
            if pair is None or pair["ahead"] or "random" not in rows:
                continue
            meta = {row["step"]: row["median"] for row in rows["meta"]}
            rand = {row["step"]: row["median"] for row in rows["random"]}
            steps = sorted(meta)
            later = [s for s in steps if all(meta[t] < rand[t] for t in steps if t >= s)]
            start = (f"starts at a median derivative NMSE of {meta[steps[0]]:.3g} (random "
                     f"init: {rand[steps[0]]:.3g})")
            if meta[steps[0]] > 1:
                start += (", worse than predicting nothing: the prior carries the dynamics "
                          "of the training systems, which must be unlearned first")
            peak = max(steps, key=lambda t: meta[t])
            if peak != steps[0] and meta[peak] > 2 * meta[steps[0]]:
                start += (f"; adaptation first raises it to {meta[peak]:.3g} at step {peak} "
                          f"(the step size {results['inner_lr']} overshoots there)")
            when = (f"its median is the lower from step {later[0]} on" if later
                    else "its median never stays below random init's")
            lines.append(f"- {model.upper()}, {holdout}: the meta-trained model {start}; "
                         f"{when}.")
    if not lines:
        return []
    return ["Where the meta-trained model is not ahead of random init by the derivative "
            "NMSE (paired), from the medians over trajectories:", "", *lines, ""]


def markdown(results: dict[str, Any], stem: str = "meta_learning") -> str:
    """The text of ``meta_learning.md``, from the JSON results only."""
    sizes = results["sizes"]
    seed = results["seed"]
    figures = ("figures for seed 0 only" if seed else ", ".join(
        f"`{stem}_{m}_curves.png`, `{stem}_{m}_trajectories.png`" for m in results["models"]))
    lines = [
        "# Meta-learning across physical laws: leave-one-system-out",
        "",
        "Generated by `python experiments/meta_learning.py"
        f"{' --quick' if results['quick'] else ''}` (seed {seed}) from "
        f"`{stem}.json` ({figures}); training and adaptation of the "
        f"{sum(len(m['systems']) for m in results['models'].values())} pieces took "
        f"{results['compute_s'] / 60:.1f} min on {results['threads']} thread(s).",
        "",
        "Models: " + "; ".join(_model_words(m, r["model_args"])
                               for m, r in results["models"].items()) + ". "
        f"Each: {results['algorithm']} with one inner step, K = {sizes['shots']} points, "
        f"inner and adaptation step size {results['inner_lr']}, log-cosh loss, meta-batch "
        f"{sizes['meta_batch']}, {sizes['iterations']} meta-updates on the six other "
        "systems (the pretrained baseline: as many Adam steps on the same tasks' points, "
        "no inner loop, from the same initial weights).",
        "",
        "**Reduced sizes** (paper in brackets): "
        f"{sizes['trajectories']} trajectories per training system "
        f"[{PAPER['trajectories']}], {sizes['eval_trajectories']} held-out trajectories per "
        f"system [{PAPER['eval_trajectories']}], adaptation steps 0…{sizes['steps']} "
        f"evaluated at {sizes['eval_steps']} [every step]"
        + (f"; trajectories cut to {sizes['points']} saved points" if sizes["points"]
           else "") + ".",
        "",
        "Metrics, after n SGD steps on K points of each held-out trajectory (mean ± "
        "half-width of the 95 % t-interval over trajectories; *div.*: non-finite values, "
        "a diverged model):",
        "",
        *[f"- *{words}*: {text}." for words, text in METRIC_WORDS.values()],
        "",
        "Verdicts, meta-trained against a baseline at steps "
        f"{', '.join(map(str, COMPARED_STEPS))} (those evaluated): *ahead (mean)* = lower "
        "mean at a strict majority of them (the paper's reading of its curves); *ahead "
        "(paired)* = on the same trajectories, median per-trajectory ratio below 1 with a "
        "Wilcoxon signed-rank p < 0.05 at a strict majority of them (diverged pairs "
        "dropped, counted in the JSON).",
        "",
        "Reading the paper MSE: a randomly initialised HNN has a nearly flat H, so its "
        "rollout barely leaves the first state and its MSE is about the trajectory's "
        "spread around that state; a network carrying another system's dynamics, or the "
        "right dynamics slightly out of phase, can score worse than standing still over "
        "10-20 time units. The two normalised errors do not reward standing still.",
        "",
    ]
    lines += _summary_lines(results)
    lines += _seed_lines(results)
    lines += _versus_lines(results)
    for model, res in results["models"].items():
        lines += _model_lines(model, res)
    return "\n".join(lines)


def _summary_lines(results: Mapping[str, Any]) -> list[str]:
    lines = ["## Summary", "",
             "Held-out systems on which the meta-trained weights are ahead (paired test):", "",
             "| model | metric | systems | ahead of random init | ahead of pretrained |",
             "|---|---|---|---|---|"]
    for model, by_metric in results["summary"].items():
        if model == "versus_baselines":
            continue
        for metric, s in by_metric.items():
            lines.append(
                f"| {model.upper()} | {METRIC_WORDS[metric][0]} | {s['systems']} | "
                f"{s['ahead_of_random']} ({_names(s['ahead_of_random_systems'])}) | "
                f"{s['ahead_of_pretrained']} ({_names(s['ahead_of_pretrained_systems'])}) |")
    lines.append("")
    lines += _versus_baselines_lines(results["summary"].get("versus_baselines"))
    for model, res in results["models"].items():
        c = res["counts"]
        lines += [f"{model.upper()}, paper MSE, mean: meta-trained ahead of random init on "
                  f"**{c['meta_beats_random']} of {c['systems']}** systems (paper: "
                  f"{results['paper']['meta_ahead_of_random']} of its "
                  f"{results['paper']['evaluated']} evaluated systems), of pretrained + "
                  f"fine-tuned on {c['meta_beats_pretrained']} of {c['systems']}; pretrained "
                  f"ahead of random init on {c['pretrained_beats_random']} of "
                  f"{c['systems']}." + (f" Not run yet: {_names(res['missing'])}."
                                        if res["missing"] else ""), ""]
    return lines


def _versus_baselines_lines(versus: Mapping[str, Any] | None) -> list[str]:
    """The few-shot comparison against the baselines, per seed (``fewshot.md`` has it
    all)."""
    if not versus:
        return []
    lines = ["### Against the strongest simple methods", "",
             "From `fewshot.json` (`experiments/fewshot.py`): the best meta-learned model of "
             "each seed and regime, and on how many held-out systems it is ahead of *every* "
             "baseline (least squares, polynomial and kernel fits, networks from scratch, "
             "pretrained) at a majority of steps 1, 5, 15 / at steps 1 and 5, and ahead of "
             "affine, nearest-neighbour and kernel fits together:", "",
             "| seed | regime | best | metric | ahead of every baseline | early | "
             "ahead of affine, nearest, kernel |", "|---|---|---|---|---|---|---|"]
    for seed, block in versus["seeds"].items():
        for regime, res in block["regimes"].items():
            best = res["best"]
            if best is None:
                continue
            n = len(res["systems"])
            for metric, c in res["models"][best].items():
                lines.append(f"| {seed} | {regime} | {best} | {METRIC_WORDS[metric][0]} | "
                             f"{c['ahead_of_baselines']} of {n} | {c['ahead_early']} of {n} | "
                             f"{len(c['ahead_of_affine_nearest_kernel'])} of {n} |")
    return [*lines, ""]


def _model_lines(model: str, res: Mapping[str, Any]) -> list[str]:
    lines = [f"## {model.upper()}", ""]
    c = res["counts"]
    lines += ["Systems on which the first method's mean paper MSE is lower, step by step:", "",
              "| comparison | " + " | ".join(f"{s} steps" for s in COMPARED_STEPS) + " |",
              "|---|" + "---|" * len(COMPARED_STEPS)]
    for pair, label in (("meta_vs_random", "meta-trained < random init"),
                        ("meta_vs_pretrained", "meta-trained < pretrained"),
                        ("pretrained_vs_random", "pretrained < random init")):
        by_step = c["lower_at_step"][pair]
        lines.append(f"| {label} | " + " | ".join(
            f"{by_step[str(s)]} of {c['systems']}" for s in COMPARED_STEPS) + " |")
    lines.append("")
    yes = {True: "yes", False: "no"}
    for holdout, r in res["systems"].items():
        lines += [f"### {model.upper()}, {holdout} held out", ""]
        for metric in METRICS:
            lines += [f"{METRIC_WORDS[metric][0]}:", "",
                      "| method | " + " | ".join(f"{s} steps" for s in TABLE_STEPS) + " |",
                      "|---|" + "---|" * len(TABLE_STEPS)]
            for method, label in METHOD_WORDS:
                rows = {row["step"]: row for row in r["summary"][metric].get(method, [])}
                if rows:
                    lines.append(f"| {label} | " + " | ".join(
                        _cell(rows.get(s)) for s in TABLE_STEPS) + " |")
            lines.append("")
        lines += ["| metric | vs | ahead (mean) | ahead (paired) | median ratio meta / "
                  "baseline by step (Wilcoxon p) |", "|---|---|---|---|---|"]
        for metric in METRICS:
            for pair, (_, baseline) in PAIRS.items():
                if pair not in r["paired"][metric]:
                    continue
                paired, mean = r["paired"][metric][pair], r["compare"][metric][pair]
                lines.append(f"| {METRIC_WORDS[metric][0]} | {baseline} | "
                             f"{yes[mean['ahead']]} | {yes[paired['ahead']]} | "
                             f"{_paired_text(paired)} |")
        s = r["seconds"]
        lines += ["", f"Compute: meta-training + pretraining {s['train']:.0f} s, adaptation "
                  f"{s['eval']:.0f} s.", ""]
    return lines


def _print_means(saved: Mapping[str, Any]) -> None:
    result = saved["result"]
    means = {m: {r["step"]: r["mean"] for r in protocol.summarize(v, result["steps"])}
             for m, v in result["mse"].items()}
    print("   paper MSE " + "; ".join(f"{m}: " + ", ".join(
        f"{s}:{v:.3g}" for s, v in ms.items() if s in TABLE_STEPS)
        for m, ms in means.items()), flush=True)


def other_seeds(out: Path, stem: str) -> dict[str, Any]:
    """Seed → ``"summary"`` block of every other seed's report ``{stem}_seed{S}.json`` in
    ``out`` (written by ``--seed S``; run seed 0's report after them to include them)."""
    found = {}
    for path in sorted(out.glob(f"{stem}_seed*.json")):
        try:
            other = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(other, dict) and "summary" in other and "seed" in other:
            found[str(other["seed"])] = other["summary"]
    return dict(sorted(found.items(), key=lambda kv: int(kv[0])))


GOAL_BASELINES = ("affine", "nearest", "kernel")
"""The baselines of the K = 50 noise-free goal (the polynomial basis is reported apart)."""


def versus_baselines_summary(out: Path) -> dict[str, Any] | None:
    """``summary["versus_baselines"]``: the few-shot comparison against the baselines
    (``experiments/fewshot.py``), from every seed's ``fewshot*.json`` in ``out``.

    Per seed and regime, per meta-learned model and metric: on how many held-out systems
    it is ahead of every baseline (paired rule, majority of steps 1, 5, 15), where, and
    early (steps 1 and 5); ahead of ``affine``, ``nearest`` and ``kernel`` together; the
    ``best`` model. ``spread``: those counts of the best model over seeds.
    ``None`` when no few-shot report is there.
    """
    seeds: dict[str, Any] = {}
    for path in sorted(out.glob("fewshot*.json")):
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(report, dict) or report.get("experiment") != "fewshot" \
                or report.get("quick"):
            continue
        regimes = {}
        for regime, res in report["results"].items():
            models = {}
            for model, by_metric in res["summary"]["ahead_of_baselines"].items():
                models[model] = {}
                for metric, b in by_metric.items():
                    each = b["ahead_of_each"]
                    goal = sorted(set.intersection(*(set(each.get(base, []))
                                                     for base in GOAL_BASELINES)))
                    models[model][metric] = {
                        "systems": b["systems"], "ahead_of_baselines": b["ahead_of_baselines"],
                        "ahead_of_baselines_systems": b["ahead_of_baselines_systems"],
                        "ahead_early": b["ahead_early"],
                        "ahead_early_systems": b["ahead_early_systems"],
                        "ahead_of_affine_nearest_kernel": goal,
                        "ahead_of_random": res["summary"]["ahead_of_random"][model][metric]}
            regimes[regime] = {"shots": res["shots"], "noise": res["noise"],
                               "systems": sorted(res["systems"]), "models": models,
                               "best": res["summary"]["best"]}
        seeds[str(report["seed"])] = {"regimes": regimes, "compute_s": report["compute_s"],
                                      "wall_s": report.get("wall_s")}
    if not seeds:
        return None
    seeds = dict(sorted(seeds.items(), key=lambda kv: int(kv[0])))
    spread: dict[str, Any] = {}
    for seed, block in seeds.items():
        for regime, res in block["regimes"].items():
            best = res["best"]
            if best is None:
                continue
            for metric, c in res["models"][best].items():
                row = spread.setdefault(regime, {}).setdefault(metric, {})
                for key in ("ahead_of_baselines", "ahead_early"):
                    row.setdefault(key, {})[seed] = c[key]
                row.setdefault("best", {})[seed] = best
    return {"seeds": seeds, "spread": spread}


def _seed_lines(results: Mapping[str, Any]) -> list[str]:
    """The summary counts of every seed found, side by side (seed 0's report only)."""
    seeds = results.get("seeds", {})
    if len(seeds) < 2:
        return []
    lines = ["## Across seeds", "",
             "Held-out systems on which the meta-trained weights are ahead (paired test), "
             "ahead of random init / of pretrained, per seed:", "",
             "| model | metric | " + " | ".join(f"seed {k}" for k in seeds) + " |",
             "|---|---|" + "---|" * len(seeds)]
    first = next(iter(seeds.values()))
    for model, by_metric in first.items():
        for metric in by_metric:
            cells = []
            for summary in seeds.values():
                c = summary.get(model, {}).get(metric)
                cells.append("–" if c is None else
                             f"{c['ahead_of_random']} / {c['ahead_of_pretrained']} of "
                             f"{c['systems']}")
            lines.append(f"| {model.upper()} | {METRIC_WORDS[metric][0]} | "
                         + " | ".join(cells) + " |")
    return [*lines, ""]


def write_report(results: dict[str, Any], plot_rows: Mapping[str, Mapping[str, Any]],
                 out: Path, stem: str) -> list[Path]:
    """Write the JSON, the md made from it and (seed 0) the figures; the written paths."""
    out.mkdir(parents=True, exist_ok=True)
    if results["seed"] == 0:
        results["seeds"] = {"0": dict(results["summary"]), **other_seeds(out, stem)}
        versus = versus_baselines_summary(out)
        if versus is not None:
            results["summary"]["versus_baselines"] = versus
    written = [write_json(out / f"{stem}.json", results)]
    reread = json.loads(written[0].read_text())  # the md from the JSON
    text = markdown(reread, stem)
    written.append(atomic_write(out / f"{stem}.md", lambda fh: fh.write(text.encode())))
    if results["seed"] == 0:
        for model, res in reread["models"].items():
            written.append(plots.adaptation_curves(
                {f"{model.upper()}, {h} held out": r["summary"]["paper_mse"]
                 for h, r in res["systems"].items()}, out / f"{stem}_{model}_curves.png"))
            step = min(KEEP_STEP, results["sizes"]["steps"])
            written.append(plots.adaptation_trajectories(
                {f"{model.upper()}, {h}": row for h, row in plot_rows[model].items()},
                out / f"{stem}_{model}_trajectories.png", step=step))
    return written


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = {**(QUICK if args.quick else FULL)}
    sizes["model_args"] = {m: dict(a) for m, a in sizes["model_args"].items()}
    if args.iterations is not None:
        sizes["iterations"] = args.iterations
    runs = args.runs or (args.out / "meta_learning_runs" if args.quick
                         else ROOT / "runs" / "meta_learning")
    start = time.perf_counter()
    if not args.report_only:
        data = Data(sizes, args.seed)
        for model in args.models:
            for holdout in args.systems:
                print(f"== {model}, {holdout} held out", flush=True)
                try:
                    saved = run_piece(model, holdout, sizes, args, data, runs)
                except ValueError as exc:  # e.g. a run folder holding another run
                    print(f"meta_learning.py: error: {exc}", file=sys.stderr)
                    return 2
                _print_means(saved)
    results, plot_rows = assemble(sizes, args, runs)
    if not results["models"]:
        print(f"meta_learning.py: error: no finished piece of seed {args.seed} with these "
              f"options under {runs}; run without --report-only first", file=sys.stderr)
        return 2
    results["wall_s"] = time.perf_counter() - start
    stem = "meta_learning" if args.seed == 0 else f"meta_learning_seed{args.seed}"
    written = write_report(results, plot_rows, args.out, stem)
    print(markdown(json.loads(written[0].read_text()), stem))
    print(f"wrote {', '.join(str(p) for p in written)} ({results['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
