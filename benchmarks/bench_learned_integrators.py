"""Benchmark: integrators on learned Hamiltonians, long rollouts, energy drift and cost.

Trains (quickly, seeded, through the public API) a HOGN on a small spring system
(``spring-nbody``, 4 particles, harmonic springs of rest length 0) and an HNN on
the 1-D pendulum, then rolls each out for ``--steps`` (default 10⁴) steps at the
training data's ``dt`` from held-out initial states with ``rk4`` (explicit, order
4, not symplectic), ``implicit_midpoint`` and ``gauss4`` (Gauss–Legendre, orders 2
and 4, symplectic for any ``H``). As a reference row, a SeparableHOGN trained the
same way on the same spring data is rolled out with ``leapfrog`` (a splitting
method, cached by :func:`hogn.rollout` to 2 evaluations per step on a separable
model).

Why rest length 0: with the default rest length 1, particles pass within ~0.01 of
each other, where the spring force turns abruptly; every fixed-step method at
``dt = 0.1`` then drifts by ~1e-2 even on the *true* field (gauss4 no better than
rk4), which hides the difference between the methods.

For every (model, integrator, precision) it measures, in one run:

- ``true drift``: ``max_t |H(x_t) − H(x_0)| / |H(x_0)|`` under the system's true
  ``H`` (geometric mean over the initial states; the max over them in the JSON);
- ``learned drift``: ``max_t |Ĥ(x_t) − Ĥ(x_0)| / |H(x_0)|`` under the model's own
  learned ``Ĥ`` (divided by the true energy, since ``Ĥ`` has an arbitrary
  offset): the quantity a symplectic method keeps bounded, up to ``O(dt^order)``,
  and rk4 lets grow;
- the secular trend: the mean relative energy error over the last tenth of the
  rollout divided by that over the first tenth (``~1`` for a bounded oscillating
  error, ``~19`` for a linear drift from zero);
- vector-field evaluations per step (counted by wrapping ``model.vector_field`` on
  the model instance, never the library) and, for the implicit methods, the mean
  fixed-point iterations ``(evals/step − 1) / stages − 1`` (a starting guess,
  ``stages`` evaluations per iteration and one final application of the stage map);
- seconds per step (wall clock of :func:`hogn.rollout`) and the share of it spent
  inside the model's vector field.

Control rows integrate the *true* vector field with the same integrator, ``dt``
and states (``--control``; default rk4 only, as an implicit method on the true
field costs as much as a model rollout): their true-H drift is the integrator's
own contribution, so a model whose true-H drift is far above it is limited by
model error.

Precision: models are trained in float32 (the house default for learning) and,
by default, rolled out in float32 too. The implicit stages are solved to ten
machine epsilons of the dtype, so float64 rollouts (``--dtypes float64``, or
``float32 float64`` for both) cost about 2.3 times the evaluations of float32 for
the Gauss methods; the float32 round-off floor of the learned-H drift (~1e-7 per
step, a random walk) stays well below rk4's secular drift at these step sizes.
The learned ``Ĥ`` is always evaluated in float64 (a float64 copy of the float32
weights) along the trajectories.

Prints a markdown table and writes JSON (atomically) to
``benchmarks/results/bench_learned_integrators.json``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_learned_integrators.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_learned_integrators.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from _common import code_version, load_average, machine_info
from torch import Tensor

import hogn
import systems
from hogn import integrators, metrics
from hogn.graph import GraphBatch
from hogn.models import DynamicsModel, HamiltonianModel
from hogn.report import write_json

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_learned_integrators.json"
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Integrators compared on the non-separable learned Hamiltonians.
METHODS = ("rk4", "implicit_midpoint", "gauss4")
#: Stages per fixed-point iteration of the implicit methods.
STAGES = {"implicit_midpoint": 1, "gauss4": 2, "gauss6": 3}
#: States per chunk when evaluating the learned H along a trajectory.
H_CHUNK = 500


# ----------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Case:
    """One learned model on one system.

    Attributes:
        label: Row label.
        model: Registry name of the model.
        system: Registry name of the system.
        system_params: Parameters of the system (``systems.get(system, **params)``).
        n_particles: Particles per graph (``None``: the system's own).
        dt: Time step of the data and of every rollout.
        methods: Integrators to roll the model out with.
        hidden: Model width.
        model_options: Further constructor arguments.
        epochs: Training epochs.
        samples: Training samples per epoch.
        lr: Adam learning rate (cosine schedule).
        train_trajectories: Ground-truth training trajectories.
        train_steps: Saved steps per training trajectory.
    """

    label: str
    model: str
    system: str
    system_params: tuple[tuple[str, Any], ...]
    n_particles: int | None
    dt: float
    methods: tuple[str, ...]
    hidden: int
    model_options: tuple[tuple[str, Any], ...] = ()
    epochs: int = 30
    samples: int = 2048
    lr: float = 3e-3
    train_trajectories: int = 64
    train_steps: int = 100


@dataclass(frozen=True)
class Settings:
    """Run settings.

    Attributes:
        steps: Rollout steps.
        states: Held-out initial states per system (rolled out as one batch).
        seed: Seed of data, initialisation and batch order.
        dtypes: Rollout precisions.
        separable_reference: Also train a SeparableHOGN and roll it out with leapfrog.
        control: Integrators (``"none"``, ``"rk4"`` or ``"all"``) with which the true
            vector field is also integrated (the integrator's error alone).
        epochs_scale: Factor on every case's training epochs.
    """

    steps: int
    states: int
    seed: int
    dtypes: tuple[str, ...]
    separable_reference: bool
    control: str
    epochs_scale: float


def cases(settings: Settings) -> list[Case]:
    """The benchmarked (model, system) pairs."""
    # harmonic springs (rest length 0): with the default rest length 1, particles pass
    # within ~0.01 of each other, where the spring force turns abruptly, and every
    # fixed-step method at this dt drifts by ~1e-2 on the *true* field (gauss4 no
    # better than rk4), which would hide the question asked here
    spring = dict(system="spring-nbody", system_params=(("rest_length", 0.0),), n_particles=4,
                  dt=0.1, hidden=64, model_options=(("steps", 1),))

    def scaled(n: int) -> int:
        return max(1, round(n * settings.epochs_scale))

    out = [Case("HOGN", "hogn", methods=METHODS, epochs=scaled(30), **spring)]
    if settings.separable_reference:
        out.append(Case("SeparableHOGN", "separable-hogn", methods=("leapfrog",),
                        epochs=scaled(30), **spring))
    out.append(Case("HNN", "hnn", system="pendulum", system_params=(), n_particles=None, dt=0.1,
                    methods=METHODS, hidden=200, epochs=scaled(40), lr=1e-3))
    return out


# ----------------------------------------------------------------------- helpers
@contextlib.contextmanager
def counting(model: DynamicsModel) -> Iterator[dict[str, float]]:
    """Count (and time) the evaluations of ``model``'s vector field.

    Shadows ``model.vector_field`` with an instance attribute for the duration, so
    that :func:`hogn.rollout` gets a counting field; nothing in the library changes.

    Yields:
        ``{"evaluations": n, "seconds": s}``, updated in place.
    """
    counter = {"evaluations": 0, "seconds": 0.0}
    original = model.vector_field

    def vector_field(graph: Any) -> integrators.VectorField:
        f = original(graph)

        def counted(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
            start = time.perf_counter()
            out = f(q, p)
            counter["seconds"] += time.perf_counter() - start
            counter["evaluations"] += 1
            return out

        return counted

    model.vector_field = vector_field  # instance attribute shadows the method
    try:
        yield counter
    finally:
        del model.vector_field


def learned_energy(model: HamiltonianModel, graph: GraphBatch, q: Tensor, p: Tensor
                   ) -> Tensor:
    """The learned ``H`` along a trajectory ``q, p [T, N, d]`` on ``graph``, ``[T, G]``.

    Evaluated in float64 (``model`` must be float64), ``H_CHUNK`` states per call
    (the static graph replicated once per state of the chunk).
    """
    n_steps, g = q.shape[0], graph.num_graphs
    q, p = q.to(torch.float64), p.to(torch.float64)
    graph = graph.to(dtype=torch.float64)
    out = []
    big: GraphBatch | None = None
    with torch.no_grad():
        for start in range(0, n_steps, H_CHUNK):
            k = min(H_CHUNK, n_steps - start)
            if big is None or big.num_graphs != k * g:
                big = GraphBatch.cat([graph] * k)
            state = big.replace(q=q[start:start + k].reshape(-1, q.shape[-1]),
                                p=p[start:start + k].reshape(-1, p.shape[-1]))
            out.append(model.hamiltonian(state).reshape(k, g))
    return torch.cat(out)


def energy_stats(h: Tensor, scale: Tensor | None = None) -> dict[str, Any]:
    """Drift statistics of energies ``h [T, G]`` along trajectories.

    Args:
        h: Energies along the trajectories.
        scale: Energy scale per graph ``[G]`` the changes are divided by (default
            ``|h_0|``). A learned ``H`` is defined up to an additive constant, so its
            changes are divided by the true ``|H(x_0)|`` instead of its own value.

    Returns:
        ``drift`` (geometric mean over graphs of ``max_t |h_t − h_0| / scale``),
        ``drift_max`` (max over graphs), ``first_tenth`` / ``last_tenth`` (mean
        relative error over the first / last tenth of the steps, mean over graphs)
        and ``trend`` (their ratio), ``finite`` (no NaN or inf anywhere).
    """
    finite = bool(torch.isfinite(h).all())
    scale = h[0].abs() if scale is None else scale
    rel = (h - h[0]).abs() / scale.clamp_min(torch.finfo(h.dtype).tiny)
    drift = rel.amax(0)
    tenth = max(1, (h.shape[0] - 1) // 10)
    first = rel[1:1 + tenth].mean().item()
    last = rel[-tenth:].mean().item()
    return {"drift": metrics.geometric_mean(drift).item(), "drift_max": drift.max().item(),
            "first_tenth": first, "last_tenth": last,
            "trend": last / first if first > 0 else math.inf, "finite": finite}


def train_model(case: Case, data: systems.Dataset, seed: int) -> tuple[DynamicsModel, float,
                                                                        dict[str, Any]]:
    """Train ``case``'s model in float32 on ``data``'s derivatives.

    Returns:
        The trained model (best validation weights), the training seconds, and the
        final losses.
    """
    torch.manual_seed(seed)
    model = hogn.models.for_data(case.model, data, hidden=case.hidden,
                                 **dict(case.model_options))
    start = time.perf_counter()
    result = hogn.train(model, data, target="derivative", epochs=case.epochs,
                        max_samples=case.samples, batch_size=64, lr=case.lr,
                        schedule="cosine", seed=seed, progress=False)
    seconds = time.perf_counter() - start
    last = result.history[-1]
    return model, seconds, {"best_val_loss": result.best_val, "best_epoch": result.best_epoch,
                            "final_train_loss": last.get("train_loss")}


def timed_rollout(model: DynamicsModel, start: GraphBatch, steps: int, dt_: float,
                  method: str) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Roll ``model`` out with ``hogn.rollout``, counting evaluations and timing it."""
    with counting(model) as counter:
        t0 = time.perf_counter()
        q, p = hogn.rollout(model, start, steps, dt=dt_, integrator=method)
        seconds = time.perf_counter() - t0
    return q, p, cost(method, counter["evaluations"], seconds, counter["seconds"], steps)


def cost(method: str, evaluations: int, seconds: float, field_seconds: float | None,
         steps: int) -> dict[str, Any]:
    """Cost record of a rollout of ``steps`` steps."""
    per_step = evaluations / steps
    record: dict[str, Any] = {
        "evaluations": evaluations, "evals_per_step": per_step,
        "declared_evaluations": integrators.get(method).evaluations,
        "seconds": seconds, "s_per_step": seconds / steps,
        "s_per_eval": seconds / evaluations if evaluations else math.nan,
        "field_share": field_seconds / seconds if field_seconds is not None else None,
        "iterations_per_step": None,
    }
    if method in STAGES:  # a starting guess, stages per iteration, one final stage map
        record["iterations_per_step"] = (per_step - 1) / STAGES[method] - 1
    return record


def true_field_control(system: Any, start: GraphBatch, steps: int, dt_: float, method: str,
                       dtype: torch.dtype) -> dict[str, Any]:
    """The same integrator on the *true* vector field: the integrator's own drift."""
    graph = start.to(dtype=dtype)
    f = system.vector_field(graph)
    counter = {"n": 0}

    def counted(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        counter["n"] += 1
        return f(q, p)

    t0 = time.perf_counter()
    q, p = hogn.integrate(counted, graph.q, graph.p, dt_, steps, method=method,
                          separable=system.separable)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        h = system.hamiltonian(q.to(torch.float64), p.to(torch.float64),
                               start.to(dtype=torch.float64))
    return {"true": energy_stats(h), **cost(method, counter["n"], seconds, None, steps)}


# --------------------------------------------------------------------- benchmark
def bench_case(case: Case, settings: Settings) -> dict[str, Any]:
    """Train one model, roll it out with each integrator and precision, measure all."""
    seed = settings.seed
    kw = {} if case.n_particles is None else {"n_particles": case.n_particles}
    t0 = time.perf_counter()
    system = systems.get(case.system, **dict(case.system_params))
    data = systems.generate(system, case.train_trajectories, case.train_steps, case.dt,
                            seed=seed, test_fraction=0.0, **kw)
    heldout = systems.generate(system, settings.states, 1, case.dt, seed=seed + 1,
                               test_fraction=0.0, **kw)
    data_seconds = time.perf_counter() - t0
    start64 = heldout.state(0)
    print(f"[{case.label}] training {case.model} on {case.system} "
          f"({case.train_trajectories} x {case.train_steps} steps, dt={case.dt:g}, "
          f"{case.epochs} epochs x {case.samples} samples, float32)...", flush=True)
    model, train_seconds, losses = train_model(case, data, seed)
    model64 = copy.deepcopy(model).double().eval()
    record: dict[str, Any] = {
        "model": case.model, "system": case.system, "system_config": data.system_config,
        "n_particles": int(start64.sizes[0]), "dt": case.dt, "steps": settings.steps,
        "t_end": case.dt * settings.steps, "states": settings.states,
        "model_config": model.config(), "parameters": sum(p.numel() for p in model.parameters()),
        "separable": model.separable, "train": {**asdict(case), "seconds": train_seconds,
                                                "data_seconds": data_seconds, **losses},
        "rollouts": [], "controls": [],
    }
    print(f"[{case.label}] trained in {train_seconds:.1f} s (best val loss "
          f"{losses['best_val_loss']:.3g})", flush=True)
    for dtype_name in settings.dtypes:
        dtype = DTYPES[dtype_name]
        rolled = model64 if dtype == torch.float64 else copy.deepcopy(model).to(dtype).eval()
        start = start64.to(dtype=dtype)
        for method in case.methods:
            print(f"[{case.label}] {method} {dtype_name}: {settings.steps} steps x "
                  f"{settings.states} states...", flush=True)
            row: dict[str, Any] = {"integrator": method, "dtype": dtype_name,
                                   "order": integrators.get(method).order,
                                   "symplectic": integrators.get(method).symplectic,
                                   "needs_separable": integrators.get(method).needs_separable}
            try:
                q, p, c = timed_rollout(rolled, start, settings.steps, case.dt, method)
            except integrators.ConvergenceError as exc:
                row["error"] = str(exc)
                record["rollouts"].append(row)
                print(f"  failed: {exc}", flush=True)
                continue
            with torch.no_grad():
                h_true = system.hamiltonian(q.to(torch.float64), p.to(torch.float64), start64)
            h_learned = learned_energy(model64, start64, q, p)
            row.update(c)
            row["true"] = energy_stats(h_true)
            row["learned"] = energy_stats(h_learned, scale=h_true[0].abs())
            record["rollouts"].append(row)
            print(f"  {c['evals_per_step']:.2f} evals/step, {1e3 * c['s_per_step']:.2f} ms/step, "
                  f"true drift {row['true']['drift']:.3g}, learned drift "
                  f"{row['learned']['drift']:.3g}", flush=True)
            if (settings.control == "all" or settings.control == method) and \
                    case.model != "separable-hogn":
                control = true_field_control(system, start64, settings.steps, case.dt, method,
                                             dtype)
                record["controls"].append({"integrator": method, "dtype": dtype_name,
                                           **control})
    return record


# ---------------------------------------------------------------------------- output
def _f(x: Any, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        return f"{x:.{digits}e}" if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e4) else \
            f"{x:.{digits + 1}g}"
    return str(x)


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    """All rollouts (and the true-field controls) as one markdown table."""
    head = ("| model | system | integrator | dtype | evals/step | iters/step | ms/step | "
            "field share | true-H drift | true-H trend | learned-H drift | learned-H trend | "
            "true field: true-H drift |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for label, r in results.items():
        controls = {(c["integrator"], c["dtype"]): c for c in r["controls"]}
        for row in r["rollouts"]:
            control = controls.get((row["integrator"], row["dtype"]))
            ctrl = _f(control["true"]["drift"]) if control else "–"
            if "error" in row:
                lines.append(f"| {label} | {r['system']} | {row['integrator']} | "
                             f"{row['dtype']} | failed: {row['error'][:60]} |")
                continue
            lines.append(
                f"| {label} | {r['system']} (N={r['n_particles']}) | {row['integrator']} | "
                f"{row['dtype']} | {row['evals_per_step']:.2f} | "
                f"{_f(row['iterations_per_step'])} | {1e3 * row['s_per_step']:.2f} | "
                f"{row['field_share']:.2f} | {_f(row['true']['drift'])} | "
                f"{row['true']['trend']:.2f} | {_f(row['learned']['drift'])} | "
                f"{row['learned']['trend']:.2f} | {ctrl} |")
    return "\n".join(lines)


def notes(results: dict[str, dict[str, Any]], settings: Settings) -> str:
    """What the columns mean."""
    return "\n".join([
        f"{settings.steps} steps at each system's training dt ("
        + ", ".join(f"{label}: {r['dt']:g}" for label, r in results.items()) + "), "
        f"{settings.states} held-out initial states per system rolled out as one batch; "
        "models trained in float32, rolled out in the listed dtype.",
        "drift: geometric mean over states of max_t |H(x_t) - H(x_0)| / |H_true(x_0)| under "
        "the true H or the model's learned H (evaluated in float64; divided by the true "
        "energy as a learned H has an arbitrary offset).",
        "trend: mean relative energy error over the last tenth of the rollout / over the "
        "first tenth (~1: bounded; ~19: linear drift from zero).",
        "evals/step: vector-field evaluations counted through model.vector_field; "
        "iters/step: (evals/step - 1) / stages - 1 for the implicit methods; field share: "
        "fraction of the rollout's wall time spent inside the vector field.",
        "true field: the same integrator, dt and states on the system's true vector field "
        "(the integrator's own true-H drift).",
    ])


# ------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 300 steps, 2 states, a tenth of the epochs")
    parser.add_argument("--steps", type=int, default=None,
                        help="rollout steps (default 10000, 300 with --quick)")
    parser.add_argument("--states", type=int, default=None,
                        help="held-out initial states per system (default 8, 2 with --quick)")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["float32"],
                        help="rollout precisions (default float32)")
    parser.add_argument("--no-separable", action="store_true",
                        help="skip the SeparableHOGN + leapfrog reference row")
    parser.add_argument("--control", choices=("none", "rk4", "all"), default="rk4",
                        help="integrators with which the true vector field is also "
                             "integrated (default rk4: the implicit ones cost as much as "
                             "a model rollout)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: small graphs gain nothing from more)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = parser.parse_args(argv)
    for key in ("steps", "states", "threads"):
        value = getattr(args, key)
        if value is not None and value < 1:
            parser.error(f"--{key} must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = Settings(
        steps=args.steps or (300 if args.quick else 10_000),
        states=args.states or (2 if args.quick else 8), seed=args.seed,
        dtypes=tuple(dict.fromkeys(args.dtypes)), separable_reference=not args.no_separable,
        control=args.control, epochs_scale=0.1 if args.quick else 1.0)
    load_start = load_average()
    wall = time.perf_counter()
    results = {case.label: bench_case(case, settings) for case in cases(settings)}
    wall = time.perf_counter() - wall
    machine = machine_info(load_start)
    print()
    print(markdown_table(results))
    print()
    print(notes(results, settings))
    print(f"\ntotal wall time {wall:.0f} s")
    payload = {
        "benchmark": "bench_learned_integrators", "quick": args.quick,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": wall, "machine": machine, "code": code_version(),
        "settings": asdict(settings), "models": results,
    }
    write_json(args.out, payload)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
