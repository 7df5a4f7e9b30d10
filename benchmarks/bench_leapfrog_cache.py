"""Benchmark: leapfrog and yoshida4 on a separable learned H, with and without the
shared kick.

On a separable ``H = T(p) + V(q)`` the last kick of a leapfrog step (the force at the
new positions) is the first kick of the next one. :func:`hogn.integrators.integrate`
reuses it when told the field is separable (``separable=True``; :func:`hogn.rollout`
does so for a :class:`~hogn.models.SeparableHOGN`): 2 evaluations per step instead of
3 (yoshida4: 6 instead of 9), with the same states. This script rolls a
SeparableHOGN out on a batch of spring-nbody graphs both ways, in one run, and
reports evaluations and seconds per step, the speed-up, and the largest difference
between the two trajectories (it must be zero).

Prints a markdown table and writes JSON (atomically) to
``benchmarks/results/bench_leapfrog_cache.json``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_leapfrog_cache.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from _common import code_version, load_average, machine_info

import systems
from hogn import integrators, models
from hogn.report import format_table, write_json

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_leapfrog_cache.json"


def _time(model: models.DynamicsModel, graph: Any, method: str, steps: int, dt: float,
          separable: bool | None, repeats: int) -> tuple[float, int, tuple[torch.Tensor, ...]]:
    """Best wall time over ``repeats``, evaluations per step, and the trajectory."""
    field = model.vector_field(graph)
    calls = 0

    def counting(q: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal calls
        calls += 1
        return field(q, p)

    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            calls = 0
            start = time.perf_counter()
            traj = integrators.integrate(counting, graph.q, graph.p, dt, steps, method,
                                         separable=separable)
            best = min(best, time.perf_counter() - start)
    return best, calls, traj


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500, help="steps per rollout")
    parser.add_argument("--graphs", type=int, default=16, help="spring graphs of 4-6 nodes")
    parser.add_argument("--hidden", type=int, default=64, help="model width")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start = load_average()
    torch.manual_seed(0)
    graph = systems.get("spring-nbody").sample(args.graphs, seed=0, n_particles=(4, 6),
                                               dtype=torch.float32)
    model = models.get("separable-hogn", dim=2, node_constants=1, edge_features=2,
                       hidden=args.hidden).eval()
    dt = 0.05
    rows = []
    for method in ("leapfrog", "yoshida4"):
        plain_s, plain_calls, plain = _time(model, graph, method, args.steps, dt, None,
                                            args.repeats)
        cached_s, cached_calls, cached = _time(model, graph, method, args.steps, dt, True,
                                               args.repeats)
        diff = max(float((a - b).abs().max()) for a, b in zip(plain, cached, strict=True))
        rows.append({"integrator": method,
                     "evals/step plain": plain_calls / args.steps,
                     "evals/step shared kick": cached_calls / args.steps,
                     "ms/step plain": 1e3 * plain_s / args.steps,
                     "ms/step shared kick": 1e3 * cached_s / args.steps,
                     "speed-up": plain_s / cached_s,
                     "max state difference": diff})
    print(f"SeparableHOGN (hidden {args.hidden}), {args.graphs} spring-nbody graphs of 4-6 "
          f"particles ({graph.num_nodes} nodes), float32, {args.steps} steps of dt = {dt}, "
          f"best of {args.repeats}, {args.threads} thread(s)\n")
    print(format_table(rows))
    ok = all(r["max state difference"] == 0.0 for r in rows)
    print(f"\n{'PASS' if ok else 'FAIL'}: the shared kick gives the same states")
    write_json(args.out, {"benchmark": "leapfrog_cache", "config": vars(args) | {
        "out": str(args.out), "dt": dt, "nodes": graph.num_nodes}, "rows": rows, "pass": ok,
        "machine": machine_info(load_start), "code": code_version()})
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
