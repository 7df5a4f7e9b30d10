"""float32 or float64 for learning: do the results change, and what does float64 cost?

Trains the README's example (a HOGN on spring-nbody graphs of 4–6 particles, rollout
target, rk4) once per seed in float32 and once in float64 from the *same* initial
weights and batch order, then rolls each model out on held-out trajectories (float64
ground truth, cast to the model's dtype) and reports the test errors beside the spread
over seeds. float32 is the right default when its errors fall inside the float64 seed
spread.

Run: ``python benchmarks/bench_dtype.py`` (writes ``benchmarks/results/bench_dtype.json``;
``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _common import code_version, load_average, machine_info

import hogn
import systems
from hogn.io import atomic_write

METRICS = ("rel_error", "final_rel_error", "energy_drift")


def _train_and_test(dtype: torch.dtype, seed: int, data: Any, test: Any, epochs: int,
                    hidden: int) -> dict[str, Any]:
    """Train one model from seed ``seed`` in ``dtype``; its test summary and timing."""
    torch.manual_seed(seed)
    model = hogn.models.get("hogn", dim=2, node_constants=1, edge_features=2, hidden=hidden)
    model.to(dtype)
    start = time.perf_counter()
    result = hogn.train(model, data, None, target="rollout", integrator="rk4", epochs=epochs,
                        seed=seed, progress=False)
    seconds = time.perf_counter() - start
    system, graph = test.system(), test.graph
    summary = hogn.evaluate(model, test, integrator="rk4",
                            energy=lambda q, p: system.hamiltonian(q, p, graph)).summary()
    return {"dtype": str(dtype).removeprefix("torch."), "seed": seed, "train_s": seconds,
            "best_val_loss": float(result.best_val),
            **{k: summary[k] for k in METRICS}}


def _spread(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    values = [r[key] for r in rows]
    return {"min": min(values), "max": max(values),
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "bench_dtype.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds, epochs, trajectories, hidden = args.seeds, args.epochs, 64, 64
    if args.quick:
        seeds, epochs, trajectories, hidden = 2, 1, 8, 16
    load_start = load_average()
    data = systems.generate("spring-nbody", trajectories=trajectories, steps=50, dt=0.05,
                            n_particles=(4, 6), seed=0)
    test = systems.generate("spring-nbody", trajectories=max(8, trajectories // 2), steps=50,
                            dt=0.05, n_particles=(4, 6), seed=1)
    rows = []
    for seed in range(seeds):
        for dtype in (torch.float32, torch.float64):
            rows.append(_train_and_test(dtype, seed, data, test, epochs, hidden))
            r = rows[-1]
            print(f"seed {seed} {r['dtype']:>7}: train {r['train_s']:7.1f} s  "
                  + "  ".join(f"{k} {r[k]:.4g}" for k in METRICS), flush=True)
    by = {d: [r for r in rows if r["dtype"] == d] for d in ("float32", "float64")}
    spreads = {d: {k: _spread(by[d], k) for k in (*METRICS, "train_s")} for d in by}
    paired = {k: [a[k] / b[k] for a, b in zip(by["float32"], by["float64"], strict=True)]
              for k in METRICS}
    inside = {k: spreads["float64"][k]["min"] <= statistics.fmean(
        [r[k] for r in by["float32"]]) <= spreads["float64"][k]["max"] for k in METRICS}
    print(f"\n{'metric':>16} | {'float32 mean':>12} | {'float64 min..max (seeds)':>26} | "
          f"{'f32/f64 per seed':>22} | f32 mean inside")
    for k in METRICS:
        s64 = spreads["float64"][k]
        print(f"{k:>16} | {spreads['float32'][k]['mean']:12.4g} | "
              f"{s64['min']:12.4g}..{s64['max']:<12.4g} | "
              f"{' '.join(f'{x:.3f}' for x in paired[k]):>22} | {inside[k]}")
    cost = spreads["float64"]["train_s"]["mean"] / spreads["float32"]["train_s"]["mean"]
    print(f"training time float64 / float32: {cost:.2f}")
    result = {"benchmark": "bench_dtype", "quick": args.quick, "seeds": seeds,
              "epochs": epochs, "trajectories": trajectories, "hidden": hidden,
              "rows": rows, "spread": spreads, "paired_ratio_f32_over_f64": paired,
              "float32_mean_inside_float64_spread": inside,
              "float64_over_float32_train_time": cost,
              "machine": machine_info(load_start), "code": code_version()}
    if not any(math.isnan(r["rel_error"]) for r in rows):
        atomic_write(args.out, lambda f: f.write(json.dumps(result, indent=1).encode()))
    return result


if __name__ == "__main__":
    main()
