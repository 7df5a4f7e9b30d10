"""Benchmark: ground-truth dataset generation against scipy, one trajectory at a time.

Times ``systems.generate`` (sample, simulate the whole batch with the adaptive
eighth-order GBS method, resample trajectories with close passes, compute the true
derivatives) for the three-body problem and the pendulum over the meta-learning
paper's time spans (100 points over ``[0, 10]``), and beside it scipy's ``solve_ivp``
called once per trajectory, as the original HNN code does, on the initial states our
generator kept and with a hand-written vectorised numpy right-hand side.

Accuracy is matched, not assumed: both are measured against a tight reference
(DOP853, ``rtol = atol = 1e-13``) on a random subset of trajectories (three-body over
its first 2 time units, as it is chaotic; pendulum over the whole span), and each
scipy method runs at the loosest of ``rtol = atol`` in 1e-8 ... 1e-12 whose error is
no larger than ours. Scipy is timed on all trajectories when that fits in the time
budget, otherwise on a random subset, and its rate extrapolated (marked ``*``).

Prints a table and writes JSON (atomically) to ``benchmarks/results/bench_generate.json``::

    .venv/bin/python benchmarks/bench_generate.py            # 1,000 trajectories
    .venv/bin/python benchmarks/bench_generate.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import code_version, load_average, machine_info
from scipy.integrate import solve_ivp
from tqdm.auto import tqdm

import systems

Rhs = Callable[[float, np.ndarray], np.ndarray]

SPEEDUP_TARGET = 20.0
METHODS = ("RK45", "DOP853")
RTOLS = (1e-8, 1e-9, 1e-10, 1e-11, 1e-12)
REFERENCE_METHOD = "DOP853"
REFERENCE_TOL = 1e-13
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_generate.json"


# ----------------------------------------------------------------- right-hand sides
def pendulum_rhs(t: float, y: np.ndarray) -> np.ndarray:
    """Pendulum with ``m = g = l = 1``: ``dq = p / (m l²)``, ``dp = -m g l sin q``.

    Args:
        t: Time (unused; the system is autonomous).
        y: State ``[q, p]``.

    Returns:
        ``[dq, dp]``.
    """
    q, p = y[:1], y[1:]
    return np.concatenate([p, -np.sin(q)])


_PAIR_I, _PAIR_J = np.triu_indices(3, 1)
# force on body b = sum_k _INCIDENCE[b, k] * w_k, with w_k = (q_i - q_j) / r³ for pair k = (i, j)
_INCIDENCE = np.zeros((3, 3))
_INCIDENCE[_PAIR_I, np.arange(3)] = -1.0
_INCIDENCE[_PAIR_J, np.arange(3)] = 1.0


def three_body_rhs(t: float, y: np.ndarray) -> np.ndarray:
    """Planar three-body gravity with ``G = m = 1`` and no softening.

    Args:
        t: Time (unused; the system is autonomous).
        y: State ``[q (3 x 2), p (3 x 2)]`` flattened, 12 values.

    Returns:
        ``[dq, dp]`` flattened like ``y``.
    """
    q = y[:6].reshape(3, 2)
    d = q[_PAIR_I] - q[_PAIR_J]
    w = d * ((d * d).sum(1) ** -1.5)[:, None]
    return np.concatenate([y[6:], (_INCIDENCE @ w).ravel()])


@dataclass(frozen=True)
class Case:
    """One benchmarked system and its time span.

    Attributes:
        name: Registry name for :func:`systems.generate`.
        rhs: Hand-written numpy right-hand side for scipy.
        points: Saved points per trajectory.
        t_end: The points span ``[0, t_end]``.
        accuracy_horizon: Errors are measured over ``t <= accuracy_horizon``.
    """

    name: str
    rhs: Rhs
    points: int = 100
    t_end: float = 10.0
    accuracy_horizon: float = 10.0

    @property
    def steps(self) -> int:
        """Saved steps after the initial state."""
        return self.points - 1

    @property
    def dt(self) -> float:
        """Time between saved points."""
        return self.t_end / self.steps


CASES: dict[str, Case] = {
    "three-body": Case("three-body", three_body_rhs, accuracy_horizon=2.0),
    "pendulum": Case("pendulum", pendulum_rhs),
}


# --------------------------------------------------------------------- our generator
def generate_timed(case: Case, trajectories: int, seed: int) -> tuple[systems.Dataset, float]:
    """One end-to-end ``systems.generate`` call and its wall-clock seconds."""
    start = time.perf_counter()
    data = systems.generate(case.name, trajectories=trajectories, steps=case.steps,
                            dt=case.dt, seed=seed)
    return data, time.perf_counter() - start


def time_ours(case: Case, trajectories: int, seed: int, repeats: int
              ) -> tuple[systems.Dataset, list[float]]:
    """Time ``repeats`` calls of our generator after a small warm-up call.

    Args:
        case: System and time span.
        trajectories: Trajectories to keep.
        seed: Generator seed (every repeat generates the same dataset).
        repeats: Timed calls (>= 1).

    Returns:
        The dataset of the first timed call and the seconds of each call.
    """
    systems.generate(case.name, trajectories=2, steps=2, dt=case.dt, seed=seed + 1)
    data, first = generate_timed(case, trajectories, seed)
    return data, [first] + [generate_timed(case, trajectories, seed)[1]
                            for _ in range(repeats - 1)]


def initial_states(data: systems.Dataset) -> np.ndarray:
    """The kept initial states as scipy vectors ``[q.ravel(), p.ravel()]``, ``[G, S]``.

    Raises:
        ValueError: if the graphs differ in size.
    """
    state = data.state(0)
    n = state.uniform_size
    if n is None:
        raise ValueError("the benchmark needs graphs of one size")
    g = state.num_graphs
    q = state.q.reshape(g, -1).cpu().numpy()
    p = state.p.reshape(g, -1).cpu().numpy()
    return np.concatenate([q, p], axis=1)


def trajectories_of(data: systems.Dataset) -> np.ndarray:
    """Our trajectories in the scipy layout, ``[G, T, S]``."""
    t, g = data.q.shape[0], data.num_graphs
    q = data.q.reshape(t, g, -1).cpu().numpy()
    p = data.p.reshape(t, g, -1).cpu().numpy()
    return np.concatenate([q, p], axis=2).transpose(1, 0, 2)


# ----------------------------------------------------------------------------- scipy
def solve_one(rhs: Rhs, y0: np.ndarray, t_eval: np.ndarray, method: str,
              tol: float) -> np.ndarray:
    """One ``solve_ivp`` call as in the HNN code (``t_eval`` output, ``atol = rtol``).

    Args:
        rhs: Right-hand side ``f(t, y)``.
        y0: Initial state ``[S]``.
        t_eval: Output times ``[T]``, starting at 0.
        method: Scipy method name.
        tol: ``rtol`` and ``atol``.

    Returns:
        The states at ``t_eval``, ``[T, S]``.

    Raises:
        RuntimeError: if the solver fails.
    """
    sol = solve_ivp(rhs, (float(t_eval[0]), float(t_eval[-1])), y0, method=method,
                    t_eval=t_eval, rtol=tol, atol=tol)
    if not sol.success:
        raise RuntimeError(f"solve_ivp({method}, rtol={tol:g}) failed: {sol.message}")
    return sol.y.T


def solve_many(rhs: Rhs, y0s: np.ndarray, t_eval: np.ndarray, method: str,
               tol: float) -> np.ndarray:
    """``solve_one`` for each initial state in ``y0s [B, S]``; returns ``[B, T, S]``."""
    return np.stack([solve_one(rhs, y0, t_eval, method, tol) for y0 in y0s])


def max_error(traj: np.ndarray, reference: np.ndarray, points: int) -> float:
    """Largest absolute state error over the first ``points`` saved times."""
    return float(np.abs(traj[:, :points] - reference[:, :points]).max())


def match_tolerance(rhs: Rhs, y0s: np.ndarray, t_eval: np.ndarray, method: str,
                    reference: np.ndarray, points: int, target: float
                    ) -> tuple[float, bool, dict[str, float]]:
    """Loosest ``rtol = atol`` in :data:`RTOLS` whose max error is at most ``target``.

    Args:
        rhs: Right-hand side.
        y0s: Initial states of the accuracy subset ``[B, S]``.
        t_eval: Output times ``[T]``.
        method: Scipy method name.
        reference: Reference trajectories ``[B, T, S]``.
        points: Saved points over which the error is measured.
        target: Our max error on the same subset.

    Returns:
        ``(tol, matched, errors)``: the chosen tolerance, whether its error is at most
        ``target`` (if none is, the tightest tried), and the error of each tried one.
    """
    errors: dict[str, float] = {}
    for tol in RTOLS:
        err = max_error(solve_many(rhs, y0s, t_eval, method, tol), reference, points)
        errors[f"{tol:g}"] = err
        if err <= target:
            return tol, True, errors
    return RTOLS[-1], False, errors


def time_scipy(rhs: Rhs, y0s: np.ndarray, t_eval: np.ndarray, method: str, tol: float,
               budget_s: float, subset: int, pilot: int, rng: np.random.Generator,
               desc: str) -> tuple[float, int]:
    """Time ``solve_one`` per trajectory, over all of them when that fits the budget.

    Trajectories run in a random order; after ``pilot`` of them, if the projected
    time for all exceeds ``budget_s``, timing stops at ``subset`` trajectories.

    Args:
        rhs: Right-hand side.
        y0s: All initial states ``[G, S]``.
        t_eval: Output times ``[T]``.
        method: Scipy method name.
        tol: ``rtol`` and ``atol``.
        budget_s: Longest time to spend on all ``G`` trajectories.
        subset: Trajectories timed when all would exceed the budget.
        pilot: Trajectories timed before deciding.
        rng: Random generator for the order.
        desc: Progress bar label.

    Returns:
        ``(seconds, timed)``: wall-clock seconds spent on ``timed`` trajectories.
    """
    order = rng.permutation(len(y0s))
    limit = len(order)
    elapsed = 0.0
    bar = tqdm(total=limit, desc=desc, leave=False)
    for done, index in enumerate(order, start=1):
        start = time.perf_counter()
        solve_one(rhs, y0s[index], t_eval, method, tol)
        elapsed += time.perf_counter() - start
        bar.update()
        if done == pilot and elapsed / done * len(order) > budget_s:
            limit = max(done, min(subset, len(order)))
            bar.total = limit
            bar.refresh()
        if done >= limit:
            break
    bar.close()
    return elapsed, limit


# ------------------------------------------------------------------------- benchmark
@dataclass(frozen=True)
class Settings:
    """Run settings.

    Attributes:
        trajectories: Trajectories generated (and the scipy count they stand for).
        seed: Seed of the generator and of the random subsets.
        accuracy_subset: Trajectories in the accuracy comparison.
        scipy_budget_s: Time budget for timing scipy on all trajectories.
        scipy_subset: Trajectories timed when the budget would be exceeded.
        scipy_pilot: Trajectories timed before deciding.
        repeats: Timed runs of our generator (the best is reported).
    """

    trajectories: int
    seed: int
    repeats: int
    accuracy_subset: int
    scipy_budget_s: float
    scipy_subset: int
    scipy_pilot: int


def scipy_record(case: Case, settings: Settings, method: str, subset: np.ndarray,
                 y0s: np.ndarray, t_eval: np.ndarray, reference: np.ndarray, points: int,
                 ours_err: float, ours_rate: float, rng: np.random.Generator
                 ) -> dict[str, Any]:
    """Match one scipy method's tolerance to our accuracy, then time it.

    Args:
        case: System and time span.
        settings: Run settings.
        method: Scipy method name.
        subset: Initial states of the accuracy subset ``[B, S]``.
        y0s: All kept initial states ``[G, S]``.
        t_eval: Output times ``[T]``.
        reference: Reference trajectories of the subset ``[B, T, S]``.
        points: Saved points over which errors are measured.
        ours_err: Our max error on the subset.
        ours_rate: Our trajectories per second.
        rng: Random generator for the timing order.

    Returns:
        The JSON record of the method.
    """
    tol, matched, tried = match_tolerance(case.rhs, subset, t_eval, method, reference, points,
                                          ours_err)
    seconds, timed = time_scipy(case.rhs, y0s, t_eval, method, tol, settings.scipy_budget_s,
                                settings.scipy_subset, settings.scipy_pilot, rng,
                                f"{case.name} {method}")
    rate = timed / seconds
    return {
        "rtol": tol, "atol": tol, "matched": matched, "max_abs_error": tried[f"{tol:g}"],
        "errors_by_rtol": tried, "seconds": settings.trajectories / rate,
        "measured_seconds": seconds, "timed_trajectories": timed,
        "extrapolated": timed < settings.trajectories, "traj_per_s": rate,
        "speedup": ours_rate / rate, "meets_target": ours_rate / rate >= SPEEDUP_TARGET,
    }


def bench_case(case: Case, settings: Settings) -> dict[str, Any]:
    """Benchmark one system: ours, accuracy, then each scipy method at matched accuracy.

    Returns:
        The JSON record of the system.
    """
    rng = np.random.default_rng(settings.seed)
    data, ours_times = time_ours(case, settings.trajectories, settings.seed, settings.repeats)
    ours_s = min(ours_times)
    t_eval = data.t.cpu().numpy()
    y0s = initial_states(data)
    ours = trajectories_of(data)
    points = int(np.searchsorted(t_eval, case.accuracy_horizon * (1 + 1e-12), side="right"))
    pick = np.sort(rng.choice(len(y0s), min(settings.accuracy_subset, len(y0s)),
                              replace=False))
    reference = solve_many(case.rhs, y0s[pick], t_eval, REFERENCE_METHOD, REFERENCE_TOL)
    ours_err = max_error(ours[pick], reference, points)
    ours_rate = settings.trajectories / ours_s
    record: dict[str, Any] = {
        "trajectories": settings.trajectories, "points": case.points, "t_end": case.t_end,
        "dt": case.dt, "ours_seconds": ours_s, "ours_traj_per_s": ours_rate,
        "ours_runs": len(ours_times), "ours_seconds_all": ours_times,
        "ours_seconds_median": float(np.median(ours_times)),
        "ours_rtol": data.meta["rtol"], "ours_resampled": data.meta["resampled"],
        "accuracy": {"reference": f"{REFERENCE_METHOD} rtol=atol={REFERENCE_TOL:g}",
                     "trajectories": len(pick), "horizon": float(t_eval[points - 1]),
                     "points": points, "ours_max_abs_error": ours_err},
        "scipy": {},
    }
    for method in METHODS:
        record["scipy"][method] = scipy_record(case, settings, method, y0s[pick], y0s, t_eval,
                                               reference, points, ours_err, ours_rate, rng)
    record["pass"] = record["scipy"]["RK45"]["meets_target"]
    return record


# ---------------------------------------------------------------------------- output
def format_table(results: dict[str, dict[str, Any]]) -> str:
    """The results as a fixed-width text table with notes."""
    head = (f"{'system':<11} {'traj':>5} {'ours s':>8} {'ours traj/s':>11} | "
            f"{'scipy':<6} {'rtol':>6} {'timed':>6} {'scipy s':>8} {'traj/s':>8} "
            f"{'speed-up':>9} {'err ours':>9} {'err scipy':>9} {'>=20x':>5}")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        for k, method in enumerate(METHODS):
            s = r["scipy"][method]
            left = (f"{name:<11} {r['trajectories']:>5} {r['ours_seconds']:>8.2f} "
                    f"{r['ours_traj_per_s']:>11.1f}" if k == 0 else " " * 37)
            star = "*" if s["extrapolated"] else " "
            rtol = f"{s['rtol']:.0e}" + ("" if s["matched"] else "!")
            lines.append(
                f"{left} | {method:<6} {rtol:>6} {s['timed_trajectories']:>5}{star} "
                f"{s['seconds']:>8.2f} {s['traj_per_s']:>8.1f} {s['speedup']:>8.1f}x "
                f"{r['accuracy']['ours_max_abs_error']:>9.1e} {s['max_abs_error']:>9.1e} "
                f"{'yes' if s['meets_target'] else 'no':>5}")
    return "\n".join(lines)


def _load(load: list[float] | None) -> str:
    return "n/a" if load is None else f"{load[0]:.1f}"


def format_notes(results: dict[str, dict[str, Any]], machine: dict[str, Any]) -> str:
    """Notes explaining the table's columns and method."""
    runs = "/".join(sorted({str(r["ours_runs"]) for r in results.values()}))
    acc = "; ".join(f"{n}: {r['accuracy']['trajectories']} trajectories, "
                    f"t <= {r['accuracy']['horizon']:.3g}" for n, r in results.items())
    return "\n".join([
        f"ours: systems.generate(...) end to end incl. resampling, best of {runs} timed "
        f"call(s) after a tiny warm-up; torch {machine['torch']}, "
        f"{machine['torch_threads']} threads, CPU; load average at start/end "
        f"{_load(machine['load_average_start'])}/{_load(machine['load_average_end'])} on "
        f"{machine['cpu_count']} CPUs.",
        "scipy: solve_ivp per trajectory on the same kept initial states, t_eval at the "
        "saved points, atol = rtol, hand-written numpy RHS; scipy s = time for all "
        "trajectories.",
        "timed*: scipy timed on a random subset, rate extrapolated.",
        "rtol!: no tried rtol reached our error; the tightest (1e-12) is used, so scipy is "
        "timed at lower accuracy than ours (favours scipy).",
        f"err: max |state error| vs {REFERENCE_METHOD} rtol=atol={REFERENCE_TOL:g} ({acc}).",
        "rtol: loosest of 1e-8..1e-12 with err scipy <= err ours.",
    ])


def verdicts(results: dict[str, dict[str, Any]]) -> list[str]:
    """One PASS/FAIL line per system against the RK45 (HNN default) speed-up."""
    return [f"{name}: {'PASS' if r['pass'] else 'FAIL'} (ours {r['scipy']['RK45']['speedup']:.1f}x "
            f"vs scipy RK45, target {SPEEDUP_TARGET:g}x; vs DOP853 "
            f"{r['scipy']['DOP853']['speedup']:.1f}x)" for name, r in results.items()]


def write_json(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` as JSON atomically (temp file in the same folder + ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are ordinary readable files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 100 trajectories, scipy timed on at most 50")
    parser.add_argument("--systems", nargs="+", choices=list(CASES), default=list(CASES),
                        help="systems to benchmark (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument("--trajectories", type=int, default=None,
                        help="trajectories per system (default 1000, 100 with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and subsets")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs of our generator, best reported (default 3, 1 with "
                             "--quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for our generator (default: torch's choice)")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when a system misses the RK45 target")
    parser.add_argument("--scipy-budget", type=float, default=180.0,
                        help="seconds allowed per system and method to time scipy on all "
                             "trajectories before falling back to a subset")
    args = parser.parse_args(argv)
    if args.trajectories is not None and args.trajectories < 1:
        parser.error("--trajectories must be positive")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be positive")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be positive")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    """Run settings from the command line (``--quick`` shrinks every count)."""
    trajectories = args.trajectories or (100 if args.quick else 1000)
    repeats = args.repeats or (1 if args.quick else 3)
    if args.quick:
        return Settings(trajectories, args.seed, repeats, accuracy_subset=10,
                        scipy_budget_s=min(args.scipy_budget, 10.0),
                        scipy_subset=min(50, trajectories), scipy_pilot=10)
    return Settings(trajectories, args.seed, repeats, accuracy_subset=20,
                    scipy_budget_s=args.scipy_budget, scipy_subset=200, scipy_pilot=20)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON.

    Returns:
        The exit status: 1 with ``--strict`` when a system misses the RK45 target,
        else 0.
    """
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = settings_from(args)
    load_start = load_average()
    results = {}
    for name in args.systems:
        print(f"benchmarking {name} ({settings.trajectories} trajectories)...", flush=True)
        results[name] = bench_case(CASES[name], settings)
    machine = machine_info(load_start)
    print()
    print(format_table(results))
    print()
    print(format_notes(results, machine))
    print()
    print("\n".join(verdicts(results)))
    payload = {
        "benchmark": "bench_generate", "speedup_target": SPEEDUP_TARGET,
        "pass_criterion": "ours_traj_per_s / scipy RK45 traj_per_s >= speedup_target",
        "quick": args.quick, "seed": args.seed,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine, "code": code_version(), "settings": asdict(settings),
        "systems": results, "pass": all(r["pass"] for r in results.values()),
    }
    write_json(payload, args.out)
    print(f"\nwrote {args.out}")
    return 1 if args.strict and not payload["pass"] else 0


if __name__ == "__main__":
    sys.exit(main())
