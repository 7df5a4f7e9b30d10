"""Benchmark: meta-learning in one call per step against one task (or pair) at a time.

Two measurements, each side by side with the task-by-task reference in the same run:

1. **Meta-step.** One MAML meta-gradient (the protocol's: one inner step, ``K = 50``
   support points, the trajectory's other points as the query, 8 tasks) over the
   training systems of a held-out system, for the HNN of the paper (3 × 200, tanh, 3
   padded particles) and HOGN (hidden 64 and 128, each system's own graph), computed
   task by task (:func:`meta.algorithms.meta_gradient`) and in one call
   (:func:`meta.batched.meta_gradient`), on the same meta-batches. Reported: median
   milliseconds, the speed-up, the HOGN / HNN ratio of the batched steps (target:
   at most 3 at hidden 64), and the largest relative difference of the two gradients.
2. **Adaptation evaluation.** ``M`` held-out trajectories × 3 starting points (``0 …
   100`` SGD steps, RK4 rollouts and scores after the protocol's evaluated steps):
   :func:`meta.protocol.evaluate_adaptation` (batched) on all ``M`` against the loop
   of :func:`meta.evaluate.adapt_and_evaluate`, one trajectory and one method at a
   time (the evaluation before batching), timed on the first ``--loop-trajectories``
   trajectories and scaled to ``M`` (it is a loop: its time is linear in ``M``).
   Target: at least 5× faster. The scores of the shared trajectories are compared.

Prints markdown tables and writes JSON (atomically) to
``benchmarks/results/bench_meta.json``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_meta.py          # ~10 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_meta.py --quick  # ~1 min
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _common import code_version, load_average, machine_info

from hogn.report import format_table, write_json
from meta import algorithms, batched, protocol
from meta.evaluate import adapt_and_evaluate
from meta.tasks import TaskSampler

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_meta.json"
MODELS = {"hnn": {}, "hogn-64": {"hidden": 64}, "hogn-128": {"hidden": 128}}
METRICS = ("mse", "derivative_nmse", "short_rollout_nmse")


def _rel(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-30))
               for k in b)


def meta_steps(args: argparse.Namespace, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Median time of a meta-gradient, task by task and batched, per model."""
    rows = []
    for label, extra in MODELS.items():
        if args.quick and label == "hogn-128":
            continue
        name = label.split("-")[0]
        model = protocol.make_model(name, torch.float32, seed=0, **extra)
        config = protocol.ProtocolConfig(holdout=args.holdout, model=name,
                                         shots=args.shots, meta_batch=args.meta_batch)
        meta = config.meta_config()
        sampler = TaskSampler({s: data[s] for s in config.training_systems},
                              shots=args.shots, layout=config.layout,
                              n_particles=3 if config.layout == "padded" else None,
                              seed=0, dtype=torch.float32)
        batches = [sampler.sample(args.meta_batch) for _ in range(args.repeats + 1)]
        params = algorithms.parameters(model)
        times: dict[str, list[float]] = {"loop": [], "batched": []}
        diffs = []
        for i, tasks in enumerate(batches):
            grads = {}
            for how, fn in (("loop", algorithms.meta_gradient),
                            ("batched", batched.meta_gradient)):
                start = time.perf_counter()
                grads[how] = fn(model, params, tasks, meta)[0]
                if i:  # the first batch warms up
                    times[how].append(time.perf_counter() - start)
            diffs.append(_rel(grads["batched"], grads["loop"]))
        loop, together = (statistics.median(times[h]) for h in ("loop", "batched"))
        rows.append({"model": label, "parameters": sum(p.numel() for p in params.values()),
                     "ms loop": 1e3 * loop, "ms batched": 1e3 * together,
                     "speed-up": loop / together, "max rel. grad difference": max(diffs)})
    hnn = next(r for r in rows if r["model"] == "hnn")
    for r in rows:
        r["batched / hnn batched"] = r["ms batched"] / hnn["ms batched"]
    return rows


def evaluation(args: argparse.Namespace, name: str, extra: dict[str, Any]
               ) -> dict[str, Any]:
    """Batched evaluation of all trajectories against the per-pair loop on a subset."""
    data = protocol.eval_data(args.holdout, args.trajectories, 0, **args.accuracy)
    torch.manual_seed(0)
    model = protocol.make_model(name, torch.float32, seed=0, **extra)
    base = algorithms.parameters(model)
    starts = {"meta": {k: v + 0.01 * torch.randn_like(v) for k, v in base.items()},
              "random": {k: v.detach() for k, v in base.items()},
              "pretrained": {k: v - 0.01 * torch.randn_like(v) for k, v in base.items()}}
    settings = dict(shots=args.shots, steps=args.steps, inner_lr=0.1, loss="logcosh",
                    eval_steps=args.eval_steps, seed=0)
    start = time.perf_counter()
    result = protocol.evaluate_adaptation(model, starts, data, **settings)
    batched_s = time.perf_counter() - start
    m = min(args.loop_trajectories, len(data))
    start = time.perf_counter()
    loop: dict[str, list[Any]] = {k: [] for k in starts}
    for i in range(m):
        for method, params in starts.items():
            loop[method].append(adapt_and_evaluate(
                model, params, data[i], shots=args.shots, steps=args.steps, inner_lr=0.1,
                loss="logcosh", eval_steps=args.eval_steps, seed=i))
    loop_s = time.perf_counter() - start
    worst = 0.0
    for method in starts:
        for metric in METRICS:
            ref = torch.stack([getattr(a, metric) for a in loop[method]]).double()
            got = result[metric][method][:m].double()
            ok = torch.isfinite(ref)
            worst = max(worst, float(((got - ref).abs() / ref.abs().clamp_min(1e-30))[ok]
                                     .max()))
    scaled = loop_s * len(data) / m
    return {"model": f"{name}" + (f"-{extra['hidden']}" if extra else ""),
            "trajectories": len(data), "pairs": 3 * len(data), "s batched": batched_s,
            "loop trajectories timed": m, "s loop (timed)": loop_s,
            "s loop (scaled to all)": scaled, "speed-up": scaled / batched_s,
            "max rel. score difference": worst}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--holdout", default="pendulum", choices=protocol.META_SYSTEMS,
                        help="held-out system (meta-step: trained on the others; "
                        "evaluation: its trajectories)")
    parser.add_argument("--eval-holdout", default="double-pendulum",
                        choices=protocol.META_SYSTEMS, help="system of the evaluation")
    parser.add_argument("--repeats", type=int, default=10, help="timed meta-batches")
    parser.add_argument("--trajectories", type=int, default=100, help="evaluation M")
    parser.add_argument("--loop-trajectories", type=int, default=10,
                        help="trajectories the per-pair loop is timed on")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.shots, args.meta_batch, args.steps = 50, 8, 100
    args.eval_steps = [0, 1, 2, 5, 15, 50, 100]
    args.accuracy = {}
    if args.quick:
        args.repeats, args.trajectories, args.loop_trajectories = 3, 6, 2
        args.steps, args.eval_steps, args.accuracy = 5, [0, 1, 5], {"rtol": 1e-6}
    load_start = load_average()
    data = protocol.load_systems(protocol.META_SYSTEMS, 8, 0, rtol=1e-6)
    steps = meta_steps(args, data)
    print(f"meta-gradient (maml, 1 inner step, K = {args.shots}, query = the other points, "
          f"{args.meta_batch} tasks of the systems other than {args.holdout}), float32, "
          f"median of {args.repeats}, {args.threads} thread(s)\n")
    print(format_table(steps))
    holdout, args.holdout = args.holdout, args.eval_holdout
    evals = [evaluation(args, "hnn", {}), evaluation(args, "hogn", {"hidden": 64})]
    args.holdout = holdout
    print(f"\nadaptation evaluation: {args.trajectories} {args.eval_holdout} trajectories × 3 "
          f"starting points, {args.steps} steps, rollouts after {args.eval_steps}\n")
    print(format_table(evals))
    ratio = next(r for r in steps if r["model"] == "hogn-64")["batched / hnn batched"]
    speedup = min(r["speed-up"] for r in evals)
    checks = {"hogn64_over_hnn_at_most_3": ratio <= 3.0,
              "evaluation_at_least_5x": speedup >= 5.0,
              "same_gradients": all(r["max rel. grad difference"] < 1e-3 for r in steps),
              "same_scores": all(r["max rel. score difference"] < 1e-3 for r in evals)}
    for key, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {key}")
    write_json(args.out, {"benchmark": "meta", "config": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "meta_step": steps, "evaluation": evals,
        "ratios": {"hogn64_over_hnn_meta_step": ratio, "evaluation_speedup": speedup},
        "checks": checks, "machine": machine_info(load_start),
        "code": code_version(("hogn", "meta", "systems"))})
    print(f"wrote {args.out}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
