"""Benchmark: the cost of one molecular-dynamics step of a learned potential.

Two comparisons, each timed side by side in one run (calls interleaved, so a busy
machine slows both alike), one thread:

1. **Against ASE's Lennard-Jones calculator** (argon, fcc, σ = 3.405 Å, cut-off
   7.5 Å, jittered): one force call of ``hogn.ase.Calculator`` on a ``potential-hogn``
   (the settings of ``experiments/argon_md.py`` by default: hidden 32, one
   message-passing step, edge energies, cut-off 7.5 Å) against one force call of
   ``ase.calculators.lj.LennardJones``, at 108 and 432 atoms. Target: ratio ≤ 1.
2. **Per particle-step at 4,096 particles**: ``hogn.rollout`` of the potential model
   with leapfrog (velocity Verlet, one force evaluation a step, plus one at the start)
   against a ``hogn`` (the same width and steps, no known kinetic energy) with rk4
   (four evaluations a step), both on a neighbour list, ``--md-steps`` steps a round.
   Target: ratio ≤ 0.25.

Weights are random (the cost does not depend on them). The minimum over ``--repeats``
is the figure of merit; the median is printed beside it.

Prints a markdown table and writes JSON (atomically) to
``benchmarks/results/bench_md_step.json``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_md_step.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import code_version, load_average, machine_info

import hogn
from hogn.graph import GraphBatch, NeighbourList, ptr_from_sizes, radius_graph
from hogn.report import format_table, write_json

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_md_step.json"
CUTOFF = 7.5
TARGET_ASE, TARGET_PER_PARTICLE = 1.0, 0.25


def _interleaved(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each call, ``repeats`` rounds, the calls alternating in each round."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():
        fn()  # warm up
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def _potential(hidden: int, steps: int, activation: str) -> hogn.models.DynamicsModel:
    torch.manual_seed(0)
    return hogn.models.get("potential-hogn", dim=3, node_constants=2, hidden=hidden,
                           steps=steps, edge_energies=True, cutoff=CUTOFF,
                           activation=activation).eval()


def against_ase(model: hogn.models.DynamicsModel, repeat: tuple[int, int, int],
                repeats: int) -> dict[str, Any]:
    from ase.build import bulk
    from ase.calculators.lj import LennardJones

    from hogn.ase import Calculator

    atoms = {}
    for name, calc in (("hogn", Calculator(model)),
                       ("ase_lj", LennardJones(sigma=3.405, epsilon=0.0104, rc=CUTOFF,
                                               smooth=True))):
        a = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(repeat)
        a.rattle(0.05, seed=1)
        a.calc = calc
        atoms[name] = a

    def call(name: str) -> Callable[[], Any]:
        def step() -> Any:
            atoms[name].positions += 1e-5  # a new state: the calculator computes anew
            return atoms[name].get_forces()
        return step

    times = _interleaved({name: call(name) for name in atoms}, repeats)
    n = len(atoms["hogn"])
    ms = {name: (1e3 * min(t), 1e3 * statistics.median(t)) for name, t in times.items()}
    ratio = ms["hogn"][0] / ms["ase_lj"][0]
    return {"comparison": f"MD force call, {n} atoms", "hogn ms (min)": ms["hogn"][0],
            "hogn ms (median)": ms["hogn"][1], "reference": "ASE LennardJones",
            "reference ms (min)": ms["ase_lj"][0], "reference ms (median)": ms["ase_lj"][1],
            "ratio": ratio, "target": TARGET_ASE, "pass": ratio <= TARGET_ASE}


def per_particle(hidden: int, steps: int, activation: str, n: int, md_steps: int,
                 repeats: int) -> dict[str, Any]:
    """Rollout cost per particle-step: potential model + leapfrog vs HOGN + rk4."""
    side = (n / 0.021) ** (1 / 3)  # argon's density, 0.021 atoms per Å³
    gen = torch.Generator().manual_seed(0)
    cells = round(n ** (1 / 3))
    grid = torch.stack(torch.meshgrid(*[torch.arange(cells)] * 3, indexing="ij"), -1)
    q = (grid.reshape(-1, 3)[:n].double() + 0.5) * (side / cells)
    q = (q + 0.05 * torch.randn(q.shape, generator=gen, dtype=torch.float64)).float()
    p = (0.3 * torch.randn(q.shape, generator=gen)).float()
    c = torch.tensor([[39.948, 18.0]]).repeat(n, 1)
    ptr = ptr_from_sizes([n])
    box = torch.full((1, 3), side)
    graph = GraphBatch(q, p, c, radius_graph(q, ptr, CUTOFF, box=box), ptr, box=box)
    potential = _potential(hidden, steps, activation)
    torch.manual_seed(0)
    plain = hogn.models.get("hogn", dim=3, node_constants=2, hidden=hidden, steps=steps,
                            edge_energies=True, cutoff=CUTOFF, activation=activation).eval()

    def roll(model: hogn.models.DynamicsModel, integrator: str) -> Callable[[], Any]:
        def run() -> Any:
            nl = NeighbourList(CUTOFF, 0.5, box=box)
            return hogn.rollout(model, graph, md_steps, dt=0.1, integrator=integrator,
                                neighbours=nl)
        return run

    times = _interleaved({"potential": roll(potential, "leapfrog"),
                          "hogn": roll(plain, "rk4")}, repeats)
    us = {k: 1e6 * min(v) / (n * md_steps) for k, v in times.items()}
    ratio = us["potential"] / us["hogn"]
    return {"comparison": f"per particle-step, {n} particles", "hogn ms (min)": us["potential"],
            "hogn ms (median)": 1e6 * statistics.median(times["potential"]) / (n * md_steps),
            "reference": "hogn + rk4 (µs)", "reference ms (min)": us["hogn"],
            "reference ms (median)": 1e6 * statistics.median(times["hogn"]) / (n * md_steps),
            "ratio": ratio, "target": TARGET_PER_PARTICLE, "pass": ratio <= TARGET_PER_PARTICLE}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--mp-steps", type=int, default=1)
    parser.add_argument("--activation", default="softplus")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds per comparison")
    parser.add_argument("--particles", type=int, default=4096)
    parser.add_argument("--md-steps", type=int, default=20, help="rollout steps per round (2.; "
                        "velocity Verlet takes one force more at the start)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few repeats (tests)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.particles, args.md_steps = 2, 216, 2
    torch.set_num_threads(1)
    load_start = load_average()
    model = _potential(args.hidden, args.mp_steps, args.activation)
    rows = [against_ase(model, (3, 3, 3), args.repeats),
            against_ase(model, (6, 6, 3), args.repeats),
            per_particle(args.hidden, args.mp_steps, args.activation, args.particles,
                         args.md_steps, max(3, args.repeats // 5))]
    print(f"potential-hogn hidden {args.hidden}, {args.mp_steps} message-passing step(s), "
          f"{args.activation}, edge energies, cut-off {CUTOFF} Å; float32, one thread; "
          "ms (per particle-step rows: µs), minimum over repeats\n")
    print(format_table(rows))
    for row in rows:
        verdict = "PASS" if row["pass"] else f"MISS by {row['ratio'] / row['target']:.2f}x"
        print(f"{row['comparison']}: ratio {row['ratio']:.3f} (target <= {row['target']}): "
              f"{verdict}")
    write_json(args.out, {"benchmark": "md_step", "quick": args.quick,
                          "config": vars(args) | {"out": str(args.out)},
                          "rows": rows, "machine": machine_info(load_start),
                          "code": code_version()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
