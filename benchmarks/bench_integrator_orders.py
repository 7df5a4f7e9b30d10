"""Benchmark: measured global order of every registered integrator on three Hamiltonians.

For each integrator of :mod:`hogn.integrators` and each of

- a separable H, the harmonic oscillator ``H = (q² + p²)/2`` (exact solution),
- a linear non-separable H, ``H = q² + p² + 0.3 q p`` (exact: ``matrix_exp``),
- a non-linear non-separable H, ``H = p² (1/2 + sin(q)/5) + 1 − cos q`` (a pendulum
  whose inverse mass depends on the angle; librating orbits), against a reference by
  eighth-order GBS with 400 small steps, itself checked against scipy's DOP853 at
  ``rtol = atol = 1e-13`` and against GBS at half its step,

the error at ``T = 2`` (max over three initial states and over ``q`` and ``p``) is
measured while the step shrinks, and the order is the least-squares slope of
``log(error)`` against ``log(dt)``. The step counts depend on the declared order, so
that the smallest error stays far above round-off (the same ladders as
``tests/hogn/test_integrators.py``). The splitting methods (``needs_separable``) are
measured on the non-separable H too, unchecked, to show why :func:`integrate` refuses
them there: they drop to first order. Evaluations per step are counted on the
non-linear non-separable H at the middle step of the ladder, without autograd (as in
a rollout); for the implicit Gauss methods they are ``1 + stages × (iterations + 1)``
(a starting guess, one evaluation per stage and iteration, a final stage map).

Prints a markdown table and writes JSON (atomically) to
``benchmarks/results/bench_integrator_orders.json``::

    .venv/bin/python benchmarks/bench_integrator_orders.py
    .venv/bin/python benchmarks/bench_integrator_orders.py --integrators rk4 gauss4
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import code_version, machine_info
from scipy.integrate import solve_ivp
from torch import Tensor

from hogn import integrators
from hogn.report import format_value, write_json

F64 = torch.float64
T_FINAL = 2.0
Q0 = (1.0, 0.3, -0.7)
P0 = (0.0, -0.8, 0.4)
#: Step counts over ``T_FINAL`` by declared order (errors stay >= ~5e-12).
LADDERS = {1: (40, 80, 160, 320), 2: (20, 40, 80, 160), 4: (10, 20, 40, 80),
           6: (4, 8, 16), 8: (4, 6, 9)}
#: A splitting method on a non-separable H (first order whatever it declares).
SPLITTING_ON_NONSEPARABLE = (80, 160, 320, 640)
TOLERANCE = 0.2  # |measured - expected| allowed by the pass criterion
REFERENCE_SUBSTEPS = 400
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_integrator_orders.json"

Field = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


# ------------------------------------------------------------------------ Hamiltonians
def oscillator(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
    """``H = (q² + p²)/2``."""
    return p, -q


def linear(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
    """``H = q² + p² + 0.3 q p``."""
    return 2.0 * p + 0.3 * q, -2.0 * q - 0.3 * p


def nonlinear(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
    """``H = p² (1/2 + sin(q)/5) + 1 − cos q``."""
    s = torch.sin(q)
    return p * (1.0 + 0.4 * s), -s - 0.2 * p**2 * torch.cos(q)


def nonlinear_rhs(t: float, y: np.ndarray) -> np.ndarray:
    """``nonlinear`` for scipy, on ``y = [q..., p...]``."""
    q, p = np.split(y, 2)
    s = np.sin(q)
    return np.concatenate([p * (1.0 + 0.4 * s), -s - 0.2 * p**2 * np.cos(q)])


def initial_state() -> tuple[Tensor, Tensor]:
    """The three initial states, as ``q [3]``, ``p [3]``."""
    return torch.tensor(Q0, dtype=F64), torch.tensor(P0, dtype=F64)


def oscillator_final() -> tuple[Tensor, Tensor]:
    """Exact state at ``T_FINAL`` of the oscillator."""
    q0, p0 = initial_state()
    c, s = math.cos(T_FINAL), math.sin(T_FINAL)
    return q0 * c + p0 * s, -q0 * s + p0 * c


def linear_final() -> tuple[Tensor, Tensor]:
    """Exact state at ``T_FINAL`` of the linear non-separable H."""
    q0, p0 = initial_state()
    a = torch.tensor([[0.3, 2.0], [-2.0, -0.3]], dtype=F64)
    x = torch.linalg.matrix_exp(a * T_FINAL) @ torch.stack([q0, p0])
    return x[0], x[1]


def nonlinear_final(substeps: int = REFERENCE_SUBSTEPS) -> tuple[Tensor, Tensor]:
    """Reference state at ``T_FINAL`` of the non-linear H (gbs8, ``substeps`` steps)."""
    q0, p0 = initial_state()
    with torch.no_grad():
        q, p = integrators.integrate(nonlinear, q0, p0, T_FINAL, 1, method="gbs8",
                                     substeps=substeps)
    return q[-1], p[-1]


@dataclass(frozen=True)
class Problem:
    """A benchmarked Hamiltonian.

    Attributes:
        key: Short name (JSON key).
        title: Column title.
        field: Vector field.
        separable: Whether ``H = T(p) + V(q)``.
        final: The exact or reference state at ``T_FINAL``.
    """

    key: str
    title: str
    field: Field
    separable: bool
    final: Callable[[], tuple[Tensor, Tensor]]


PROBLEMS = (
    Problem("separable", "separable H", oscillator, True, oscillator_final),
    Problem("linear_nonseparable", "linear non-separable", linear, False, linear_final),
    Problem("nonlinear_nonseparable", "non-linear non-separable", nonlinear, False,
            nonlinear_final),
)


def reference_check() -> dict[str, Any]:
    """The non-linear reference against itself at half the step and against DOP853."""
    q_ref, p_ref = nonlinear_final()
    q_fine, p_fine = nonlinear_final(2 * REFERENCE_SUBSTEPS)
    q0, p0 = initial_state()
    sol = solve_ivp(nonlinear_rhs, (0.0, T_FINAL), torch.cat([q0, p0]).numpy(),
                    method="DOP853", rtol=1e-13, atol=1e-13)
    if not sol.success:
        raise RuntimeError(f"DOP853 reference failed: {sol.message}")
    ref = torch.cat([q_ref, p_ref])
    return {
        "method": f"gbs8, {REFERENCE_SUBSTEPS} steps over T = {T_FINAL:g}",
        "vs_half_step": (torch.cat([q_fine, p_fine]) - ref).abs().max().item(),
        "vs_dop853_1e-13": (torch.from_numpy(sol.y[:, -1]) - ref).abs().max().item(),
    }


# ------------------------------------------------------------------------ measurement
class Counter:
    """A vector field that counts its calls."""

    def __init__(self, field: Field) -> None:
        self.field = field
        self.calls = 0

    def __call__(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        self.calls += 1
        return self.field(q, p)


def run(name: str, problem: Problem, steps: int, field: Field | None = None
        ) -> tuple[Tensor, Tensor]:
    """The state at ``T_FINAL`` after ``steps`` steps, without autograd.

    A separable problem is integrated with ``separable=True`` (leapfrog and yoshida4
    reuse their kicks); a non-separable one with ``separable=False`` where the method
    allows it, else unchecked (``None``).
    """
    method = integrators.get(name)
    fits = method.fits(problem.separable)
    q0, p0 = initial_state()
    with torch.no_grad():
        q, p = integrators.integrate(field or problem.field, q0, p0, T_FINAL / steps, steps,
                                     method=name,
                                     separable=problem.separable if fits else None)
    return q[-1], p[-1]


def ladder_of(name: str, problem: Problem) -> tuple[int, ...]:
    """Step counts for ``name`` on ``problem``."""
    method = integrators.get(name)
    return LADDERS[method.order] if method.fits(problem.separable) else \
        SPLITTING_ON_NONSEPARABLE


def measure_order(name: str, problem: Problem, final: tuple[Tensor, Tensor]
                  ) -> dict[str, Any]:
    """Errors along the ladder and the fitted order of ``name`` on ``problem``."""
    method = integrators.get(name)
    fits = method.fits(problem.separable)
    expected = method.order if fits else 1
    steps = ladder_of(name, problem)
    q_end, p_end = final
    errors = []
    for n in steps:
        q, p = run(name, problem, n)
        errors.append(max((q - q_end).abs().max().item(), (p - p_end).abs().max().item()))
    hs = [T_FINAL / n for n in steps]
    slope = float(np.polyfit(np.log(hs), np.log(errors), 1)[0])
    local = [math.log(a / b) / math.log(ha / hb)
             for (a, b), (ha, hb) in zip(itertools.pairwise(errors), itertools.pairwise(hs),
                                         strict=True)]
    return {"allowed": fits, "expected_order": expected, "measured_order": slope,
            "local_orders": local, "steps": list(steps), "dt": hs, "errors": errors,
            "pass": abs(slope - expected) < TOLERANCE}


def measure_cost(name: str, problem: Problem) -> dict[str, Any]:
    """Evaluations and seconds per step at the middle step of the ladder."""
    steps = ladder_of(name, problem)
    n = steps[len(steps) // 2]
    counter = Counter(problem.field)
    start = time.perf_counter()
    run(name, problem, n, counter)
    seconds = time.perf_counter() - start
    return {"steps": n, "dt": T_FINAL / n, "evaluations_per_step": counter.calls / n,
            "seconds_per_step": seconds / n}


def bench(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The JSON record of every integrator in ``names``."""
    finals = {problem.key: problem.final() for problem in PROBLEMS}
    nonlinear_problem = PROBLEMS[-1]
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        method = integrators.get(name)
        print(f"measuring {name}...", flush=True)
        results[name] = {
            "declared_order": method.order, "needs_separable": method.needs_separable,
            "symplectic": method.symplectic, "implicit": method.implicit,
            "declared_evaluations": method.evaluations,
            "orders": {problem.key: measure_order(name, problem, finals[problem.key])
                       for problem in PROBLEMS},
            "cost_nonlinear_nonseparable": measure_cost(name, nonlinear_problem),
        }
    return results


# ---------------------------------------------------------------------------- output
def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    """The results as a markdown table (``refused``: measured where integrate refuses)."""
    header = ["integrator", "declared order", "needs separable",
              *(f"measured: {problem.title}" for problem in PROBLEMS),
              "evaluations / step (non-linear non-separable)"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, r in results.items():
        cells = [f"`{name}`", str(r["declared_order"]), "yes" if r["needs_separable"] else "no"]
        for problem in PROBLEMS:
            o = r["orders"][problem.key]
            cell = f"{o['measured_order']:.2f}"
            cell += "" if o["allowed"] else " (refused)"
            cells.append(cell + ("" if o["pass"] else " **FAIL**"))
        cells.append(format_value(r["cost_nonlinear_nonseparable"]["evaluations_per_step"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(reference: dict[str, Any]) -> str:
    """What the table's columns mean."""
    return "\n".join([
        f"Order: least-squares slope of log(max error at T = {T_FINAL:g}) against log(dt); "
        "step counts per declared order: "
        + "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in LADDERS.items())
        + f"; refused splitting methods: {', '.join(map(str, SPLITTING_ON_NONSEPARABLE))}.",
        "(refused): a splitting method on a non-separable H, measured with separable=None; "
        "integrate(..., separable=False) refuses it. Expected order there: 1.",
        "Evaluations: field calls per step without autograd at the middle dt of the ladder; "
        "implicit methods: 1 + stages x (fixed-point iterations + 1) (tolerance 10 eps).",
        f"Non-linear reference: {reference['method']}; differs by "
        f"{reference['vs_half_step']:.1e} from half its step and by "
        f"{reference['vs_dop853_1e-13']:.1e} from scipy DOP853 (rtol = atol = 1e-13).",
        f"PASS: every measured order within {TOLERANCE:g} of the expected one.",
    ])


# ------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--integrators", nargs="+", choices=integrators.names(),
                        default=integrators.names(),
                        help="integrators to measure (default: every registered one)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the tensors are tiny)")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when a measured order misses the expected one")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the table and write the JSON.

    Returns:
        The exit status: 1 with ``--strict`` when an order misses, else 0.
    """
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    reference = reference_check()
    results = bench(args.integrators)
    passed = all(o["pass"] for r in results.values() for o in r["orders"].values())
    print()
    print(markdown_table(results))
    print()
    print(notes(reference))
    print(f"\n{'PASS' if passed else 'FAIL'}")
    payload = {
        "benchmark": "bench_integrator_orders",
        "pass_criterion": f"|measured order - expected order| < {TOLERANCE:g} for every "
                          "integrator and H (expected: declared where allowed, 1 for a "
                          "splitting method on a non-separable H)",
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - start,
        "machine": machine_info(), "code": code_version(("hogn/integrators",)),
        "t_final": T_FINAL, "initial_states": {"q": list(Q0), "p": list(P0)},
        "hamiltonians": {
            "separable": "H = (q^2 + p^2)/2 (exact)",
            "linear_nonseparable": "H = q^2 + p^2 + 0.3 q p (exact: matrix_exp)",
            "nonlinear_nonseparable": "H = p^2 (1/2 + sin(q)/5) + 1 - cos q (reference)",
        },
        "reference": reference, "integrators": results, "pass": passed,
    }
    write_json(args.out, payload)
    print(f"\nwrote {args.out}")
    return 1 if args.strict and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
