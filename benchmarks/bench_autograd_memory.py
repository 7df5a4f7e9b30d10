"""Benchmark: no integrator keeps an autograd graph that nobody asked for.

A long integration of a field without trainable parameters, from states that need no
gradients, must cost the memory of its trajectory, not of a multi-step autograd graph.
Each method integrates ``--systems`` pendulums (``dq = p``, ``dp = -sin q``, float64)
for ``--steps`` steps twice, each in a fresh process: called plainly, and under
``torch.no_grad()`` (the reference). The table gives the peak resident memory above
the process's own before the integration (MB), the ratio plain / no-grad (target: at
most 1.5), whether the result requires grad, and the seconds.

Prints a markdown table and writes JSON (atomically) to
``benchmarks/results/bench_autograd_memory.json``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_autograd_memory.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from _common import code_version, load_average, machine_info

from hogn import integrators
from hogn.report import format_table, write_json

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_autograd_memory.json"
TARGET = 1.5

CHILD = """
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from hogn import integrators

method, count, steps, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
gen = torch.Generator().manual_seed(0)
q0 = torch.rand(count, 1, generator=gen, dtype=torch.float64) - 0.5
p0 = torch.rand(count, 1, generator=gen, dtype=torch.float64) - 0.5


def pendulum(q, p):
    return p, -torch.sin(q)


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


integrators.integrate(pendulum, q0[:2], p0[:2], 0.01, 2, method=method)  # warm up
before = peak_mb()
start = time.perf_counter()
if mode == "no_grad":
    with torch.no_grad():
        q, p = integrators.integrate(pendulum, q0, p0, 0.01, steps, method=method)
else:
    q, p = integrators.integrate(pendulum, q0, p0, 0.01, steps, method=method)
seconds = time.perf_counter() - start
print(json.dumps({"extra_mb": peak_mb() - before, "seconds": seconds,
                  "requires_grad": bool(q.requires_grad or p.requires_grad)}))
"""


def _measure(method: str, count: int, steps: int, mode: str) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", CHILD, method, str(count), str(steps), mode],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", type=int, default=5000, help="pendulums integrated")
    parser.add_argument("--steps", type=int, default=400, help="integration steps")
    parser.add_argument("--methods", nargs="+", default=integrators.names(),
                        choices=integrators.names(), metavar="METHOD")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = parser.parse_args(argv)
    load_start = load_average()
    trajectory_mb = 2 * 8 * (args.steps + 1) * args.systems / 2**20
    rows = []
    for method in args.methods:
        plain = _measure(method, args.systems, args.steps, "plain")
        reference = _measure(method, args.systems, args.steps, "no_grad")
        # floor the reference at the trajectory's own size: a few MB of noise in a
        # small peak must not decide the ratio
        ratio = plain["extra_mb"] / max(reference["extra_mb"], trajectory_mb)
        rows.append({"integrator": method, "peak MB plain": plain["extra_mb"],
                     "peak MB no_grad": reference["extra_mb"], "ratio": ratio,
                     "requires grad": plain["requires_grad"],
                     "s plain": plain["seconds"], "s no_grad": reference["seconds"],
                     "pass": ratio <= TARGET and not plain["requires_grad"]})
    print(f"{args.systems} pendulums, {args.steps} steps (trajectory {trajectory_mb:.1f} MB), "
          f"float64, one thread; peak resident memory above the start of the integration\n")
    print(format_table(rows))
    ok = all(r["pass"] for r in rows)
    print(f"\n{'PASS' if ok else 'FAIL'}: every method within {TARGET}x of no_grad, no graph "
          "returned")
    write_json(args.out, {"benchmark": "autograd_memory", "config": vars(args) | {
        "out": str(args.out), "trajectory_mb": trajectory_mb, "target": TARGET},
        "rows": rows, "pass": ok, "machine": machine_info(load_start), "code": code_version()})
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
