"""Experiment 3: data efficiency on three-body — HNN vs HOGN vs MLP test error against
the number of training trajectories.

Data: the ``hnn-report-three-body`` preset (perturbed Lagrange triangles, 50 points over 5
time units, observation noise 0.05). One pool of ``max(sizes) + test`` trajectories
per seed; the first ``n`` form the training set for each size ``n`` (nested sets),
the last ``test`` trajectories the fixed test set.

Models: ``hnn`` and ``mlp`` (3 linear layers x 200, tanh, as the HNN paper) and
``hogn`` (graph network, hidden 64, 2 message-passing steps, softplus; ~71k
parameters against the MLPs' ~45k). All three are trained by :func:`hogn.train` on the
derivative target at the noisy observed states with the same budget, Adam lr 1e-3,
``--steps`` optimizer steps of 200 states (``steps=``), whatever ``n`` (so small sets
are seen for many epochs), ``val_fraction=0``: the weights scoring best on the
training states after an epoch are kept.

Test error:

- ``test_loss_clean``: derivative MSE on the test trajectories' clean states;
- ``test_loss``: the same at the noisy observed states (the quantity trained on, as
  the HNN table's test loss; dominated by the noise near close passes);
- ``rel_error``: the HOGN paper's rollout error, geometric mean over test
  trajectories of the mean ``‖x̂ − x‖ / (‖x̂‖ + ‖x‖)`` over the 5 time units, RK4 with
  4 sub-steps from the clean initial state (``hogn.evaluate``);
- ``energy_drift``: geometric mean of the largest relative error of the true energy
  along those rollouts.

Usage::

    python experiments/data_efficiency.py                  # full (~25 min, 1 core)
    python experiments/data_efficiency.py --quick --out /tmp/de

Writes ``<out>/data_efficiency.json``, ``.png`` and ``.md`` (the markdown from the
JSON alone, see :func:`markdown`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _shared import begin, experiment_parser, mean_std, write_text
from hnn_paper import all_states, derivative_mse, within_spread

import hogn
import systems
from hogn import models
from hogn.evaluation import evaluate
from hogn.report import format_table, write_json

NAME = "data_efficiency"
PRESET = "hnn-report-three-body"  # the noisy 50-point set (the report's text)
MODELS: dict[str, dict[str, Any]] = {"mlp": {}, "hnn": {}, "hogn": {"hidden": 64}}
METRICS = ("test_loss_clean", "test_loss", "rel_error", "energy_drift")
PLOTTED = ("test_loss_clean", "rel_error", "energy_drift")


def run(sizes: list[int], seeds: list[int], steps: int, n_test: int, log: Any
        ) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        pool = systems.from_preset(PRESET, trajectories=max(sizes) + n_test, seed=seed,
                                   test_fraction=0.0)
        test = pool.select(list(range(len(pool) - n_test, len(pool))))
        g_test, y_test = all_states(test)
        g_clean, _ = all_states(test, observed=False)
        for n in sizes:
            train = pool.select(list(range(n)))
            for name, cfg in MODELS.items():
                torch.manual_seed(seed)
                model = models.for_data(name, train, **cfg)
                t0 = time.perf_counter()
                result = hogn.train(model, train, steps=steps, batch_size=200,
                                    val_fraction=0.0, seed=seed, progress=False)
                seconds = time.perf_counter() - t0
                summary = evaluate(model, test, energy=test.energy_function(), integrator="rk4",
                                   substeps=4).summary()
                row = {"seed": seed, "trajectories": n, "model": name,
                       "train_loss": result.best_val,  # all training states
                       "test_loss": derivative_mse(model, g_test, y_test),
                       "test_loss_clean": derivative_mse(model, g_clean, y_test),
                       "rel_error": summary["rel_error"],
                       "energy_drift": summary["energy_drift"],
                       "parameters": sum(p.numel() for p in model.parameters()),
                       "train_seconds": round(seconds, 1)}
                runs.append(row)
                log(f"seed {seed} n={n:5d} {name:5s} test_loss {row['test_loss']:.4g} "
                    f"(clean {row['test_loss_clean']:.4g}) "
                    f"rel_error {row['rel_error']:.4g} energy_drift "
                    f"{row['energy_drift']:.3g} ({seconds:.0f} s)")
    summary_rows = []
    for n in sizes:
        for name in MODELS:
            sel = [r for r in runs if r["trajectories"] == n and r["model"] == name]
            row = {"trajectories": n, "model": name}
            for key in METRICS:
                row[key] = mean_std(r[key] for r in sel)
            summary_rows.append(row)
    return {"runs": runs, "summary": summary_rows}


def before_run(out: Path) -> dict[str, Any] | None:
    """The summary of the run before the port to ``hogn.train`` (issue 15), read from
    ``<out>/data_efficiency_before.json`` (that run's JSON), for the before/after table;
    ``None`` when absent."""
    path = out / f"{NAME}_before.json"
    if not path.is_file():
        return None
    old = json.loads(path.read_text())
    return {"command": old["config"]["command"], "summary": old["summary"]}


def before_after(results: dict[str, Any]) -> list[str]:
    """Before (the script's own training loop) / after (``hogn.train``), same data and
    seeds: ✓ where the means differ by no more than the larger seed std."""
    before = {(r["model"], r["trajectories"]): r for r in results["before"]["summary"]}
    sizes = results["config"]["sizes"]
    lines = ["Before / after the port to `hogn.train` (issue 15; before: "
             f"`{results['before']['command']}` with the script's own loop, same preset, "
             "seeds and steps; ✓: means within the larger seed std):", ""]
    for key in ("test_loss_clean", "rel_error"):
        lines += [f"{key} — before → after:", "",
                  "| Model | " + " | ".join(f"{n} traj." for n in sizes) + " |",
                  "|---|" + "---|" * len(sizes)]
        for r_name in results["config"]["model_names"]:
            cells = []
            for n in sizes:
                after = next(r for r in results["summary"]
                             if r["model"] == r_name and r["trajectories"] == n)[key]
                old = before.get((r_name, n))
                if old is None:
                    cells.append(f"– → {after[0]:.3g} ± {after[1]:.2g}")
                    continue
                ok = within_spread(after, old[key])
                cells.append(f"{old[key][0]:.3g} ± {old[key][1]:.2g} → {after[0]:.3g} ± "
                             f"{after[1]:.2g} {'✓' if ok else '✗'}")
            lines.append(f"| {r_name.upper()} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The markdown fragment, from the JSON dict alone."""
    cfg = results["config"]
    sizes = cfg["sizes"]
    by = {(r["model"], r["trajectories"]): r for r in results["summary"]}
    lines = [
        "## Experiment 3: data efficiency on three-body — HNN vs HOGN vs MLP",
        "",
        f"Command: `{cfg['command']}` ({cfg['wall_seconds'] / 60:.1f} min, "
        f"{cfg['threads']} thread(s); seeds {', '.join(map(str, cfg['seeds']))}). "
        f"Preset `{cfg['preset']}` (noise {cfg['noise']:g}, {cfg['points']} points over "
        f"{cfg['t_end']:g} time units); nested training sets, a fixed test set of "
        f"{cfg['test_trajectories']} trajectories; every model {cfg['steps']} Adam steps "
        f"(lr 1e-3) of 200 states. {cfg['models']}. The papers give no number for this "
        "experiment.",
        "",
    ]
    for key, title in (("test_loss_clean", "Test derivative MSE at the clean states"),
                       ("test_loss", "Test derivative MSE at the noisy observed states (the "
                                     "HNN table's test loss)"),
                       ("rel_error", "Rollout relative error over 5 time units (RK4, from "
                                     "the clean initial state)"),
                       ("energy_drift", "Largest relative energy error along the rollout")):
        lines += [f"{title} (mean ± std over seeds):", "",
                  "| Model | " + " | ".join(f"{n} traj." for n in sizes) + " |",
                  "|---|" + "---|" * len(sizes)]
        for name in cfg["model_names"]:
            cells = []
            best = {n: min(by[(m, n)][key][0] for m in cfg["model_names"]) for n in sizes}
            for n in sizes:
                mean, std = by[(name, n)][key]
                cell = f"{mean:.3g} ± {std:.2g}"
                cells.append(f"**{cell}**" if mean == best[n] else cell)
            lines.append(f"| {name.upper()} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["![data efficiency](results/data_efficiency.png)", "",
              "Derivative MSEs are means over states dominated by the few near close "
              "passes, where forces grow as 1/r²; the rollout errors are geometric means "
              "over trajectories of a chaotic system, hence their spread over seeds.", ""]
    if cfg.get("reductions"):
        lines += [f"Reductions: {cfg['reductions']}", ""]
    if results.get("before"):
        lines += before_after(results)
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hogn.plot import save_figure

    cfg = results["config"]
    sizes = np.array(cfg["sizes"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, label in zip(axes, PLOTTED, ("test derivative MSE (clean states)",
                                              "rollout relative error (5 time units)",
                                              "max relative energy error (rollout)"),
                              strict=True):
        for i, name in enumerate(cfg["model_names"]):
            rows = {r["trajectories"]: r[key] for r in results["summary"] if r["model"] == name}
            mean = np.array([rows[n][0] for n in sizes])
            std = np.array([rows[n][1] for n in sizes])
            ax.errorbar(sizes, mean, yerr=std, marker="o", capsize=3, color=f"C{i}",
                        label=name.upper())
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training trajectories")
        ax.set_title(label, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"three-body data efficiency (mean ± std over {len(cfg['seeds'])} seed(s))")
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = experiment_parser(
        __doc__, "tiny run (< 1 min), for tests",
        "only redraw the PNG and markdown from <out>/data_efficiency.json")
    parser.add_argument("--seeds", type=int, default=None,
                        help="number of seeds (default 3; quick: 1)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="training trajectories (default 10 30 100 300 1000; quick: 10 40)")
    parser.add_argument("--steps", type=int, default=None,
                        help="Adam steps per model (default 1500; quick: 60)")
    parser.add_argument("--test", type=int, default=None,
                        help="test trajectories (default 100; quick: 10)")
    args, out = begin(parser, argv)
    started = time.perf_counter()
    if args.render:
        results = json.loads((out / f"{NAME}.json").read_text())
        if not results["config"]["quick"]:
            results["before"] = before_run(out)
            write_json(out / f"{NAME}.json", results)
        plot(results, out / f"{NAME}.png")
        write_text(out / f"{NAME}.md", markdown(results))
        print(f"redrew {out / NAME}.png and .md from the JSON")
        return 0
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    sizes = args.sizes or ([10, 40] if args.quick else [10, 30, 100, 300, 1000])
    steps = args.steps or (60 if args.quick else 1500)
    n_test = args.test or (10 if args.quick else 100)

    def log(msg: str) -> None:
        print(msg, flush=True)

    results = run(sizes, seeds, steps, n_test, log)
    preset = systems.get_preset(PRESET)
    command = "python experiments/data_efficiency.py" + (" --quick" if args.quick else "")
    for flag, value in (("--seeds", args.seeds), ("--steps", args.steps),
                        ("--test", args.test)):
        if value is not None:
            command += f" {flag} {value}"
    if args.sizes:
        command += " --sizes " + " ".join(map(str, args.sizes))
    results["config"] = {
        "command": command, "quick": args.quick, "seeds": seeds, "sizes": sizes,
        "steps": steps, "batch": 200, "test_trajectories": n_test, "preset": PRESET,
        "noise": preset.noise, "points": preset.points, "t_end": preset.t_end,
        "model_names": list(MODELS), "threads": args.threads,
        "models": "MLP and HNN 3 linear layers x 200 tanh; HOGN hidden 64, 2 message-passing "
                  "steps, softplus; hogn.train(steps=..., batch_size=200, val_fraction=0)",
        "reductions": ("the same 1,500 steps for every size (the largest sets see ~6 "
                       "epochs); HOGN hidden 64 instead of the default 128 (CPU time)"
                       if not args.quick else "quick mode: two sizes, few steps, one seed"),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    if not args.quick:
        results["before"] = before_run(out)
    write_json(out / f"{NAME}.json", results)
    plot(results, out / f"{NAME}.png")
    write_text(out / f"{NAME}.md", markdown(results))
    rows = [{"trajectories": r["trajectories"], "model": r["model"],
             **{k: r[k][0] for k in METRICS}} for r in results["summary"]]
    print("\n" + format_table(rows))
    print(f"\nwrote {out / NAME}.json, .png, .md in {results['config']['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
