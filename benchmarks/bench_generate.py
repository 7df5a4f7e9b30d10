"""Benchmark: ground-truth dataset generation against scipy, one trajectory at a time
and all trajectories packed into one call.

Times ``systems.generate`` (sample, simulate the whole batch with the adaptive
eighth-order Dormand–Prince method and a step size per trajectory, resample the
trajectories a system rejects, compute the true derivatives) for every registered
system whose ground truth is that adaptive method (``system.ground_truth_method ==
"adaptive"``; Lennard-Jones steps velocity Verlet at a fixed step, for which scipy's
DOP853 is no peer) over the meta-learning paper's span for three-body and pendulum (100 points
over ``[0, 10]``), and beside it two scipy DOP853 peers on the initial states our
generator kept, with hand-written vectorised numpy right-hand sides:

- one ``solve_ivp`` call per trajectory, as the original HNN code does;
- one ``solve_ivp`` call with every trajectory stacked in one state vector (one step
  size for all, one vectorised right-hand-side call per stage).

Accuracy is matched, not assumed: everything is measured against a tight reference
(DOP853, ``rtol = atol = 2.5e-14``, one trajectory at a time) on a random subset of
trajectories (chaotic systems over their first 2 time units, the others over the
whole span), and each scipy peer runs at the loosest of ``rtol = atol`` in
1e-8 ... 1e-13 whose error is no larger than ours. Scipy one at a time is timed on all
trajectories when that fits in the time budget, otherwise on a random subset, and
its rate extrapolated (marked ``*``); a packed solve past its budget is abandoned and
its time reported as a lower bound (``>``).

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
from dataclasses import asdict, dataclass, replace
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
RTOLS = (1e-8, 1e-9, 1e-10, 1e-11, 1e-12, 1e-13)
REFERENCE_METHOD = "DOP853"
REFERENCE_TOL = 2.5e-14  # scipy raises rtol below 100 eps (2.2e-14) to that
REPEAT_LIMIT_S = 30.0  # our generator is timed once when a call takes longer
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_generate.json"


# ----------------------------------------------------------------- right-hand sides
# Each builder takes the dataset's constants for a set of trajectories and returns a
# numpy right-hand side on their states stacked in one vector (one trajectory: a
# vector of S values; packed: B·S values). The formulas are written here by hand,
# independently of the systems' torch code.
RhsBuilder = Callable[["Consts"], Rhs]


@dataclass(frozen=True)
class Consts:
    """Constants of ``B`` trajectories of one system (graphs of ``n`` nodes in ``d``).

    Attributes:
        params: System parameters.
        mass: Masses ``[B, n]``.
        n: Nodes per graph.
        d: Coordinates per node.
        pairs: Undirected node pairs ``(i, j)`` of a graph, ``[P, 2]``.
        edge_attr: Per-pair constants ``[B, P, k]`` (springs: stiffness, rest length).
        node_attr: Node constants after the mass, ``[B, n, k − 1]`` (forced pendulum:
            its torque).
    """

    params: dict[str, Any]
    mass: np.ndarray
    n: int
    d: int
    pairs: np.ndarray
    edge_attr: np.ndarray | None
    node_attr: np.ndarray | None = None


def _split(y: np.ndarray, c: Consts) -> tuple[np.ndarray, np.ndarray]:
    """``q, p [B, n, d]`` views of the stacked state."""
    s = y.reshape(c.mass.shape[0], 2, c.n, c.d)
    return s[:, 0], s[:, 1]


def _join(dq: np.ndarray, dp: np.ndarray) -> np.ndarray:
    return np.stack([dq, dp], 1).ravel()


def rhs_mass_spring(c: Consts) -> Rhs:
    """``dq = p / m``, ``dp = −k q`` (``− γ p`` with friction)."""
    m, k = c.mass[:, :, None], c.params["k"]
    gamma = c.params.get("gamma", 0.0)

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        q, p = _split(y, c)
        return _join(p / m, -k * q - gamma * p)

    return rhs


def rhs_pendulum(c: Consts) -> Rhs:
    """``dq = p / ml²``, ``dp = −mgl sin q`` (``− γ p`` with friction)."""
    m, g, l = c.mass[:, :, None], c.params["g"], c.params["l"]
    gamma = c.params.get("gamma", 0.0)

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        q, p = _split(y, c)
        return _join(p / (m * l * l), -m * g * l * np.sin(q) - gamma * p)

    return rhs


def rhs_forced_pendulum(c: Consts) -> Rhs:
    """``dq = p / ml²``, ``dp = −mgl sin q + u`` (torque ``u``: node constant 1)."""
    m, g, l = c.mass[:, :, None], c.params["g"], c.params["l"]
    assert c.node_attr is not None
    u = c.node_attr[..., :1]

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        q, p = _split(y, c)
        return _join(p / (m * l * l), -m * g * l * np.sin(q) + u)

    return rhs


def rhs_pendulum_chain(c: Consts) -> Rhs:
    """Pendulum chain in Cartesian coordinates, links held by Lagrange multipliers:
    ``dq = p / m``, ``dp = f − DΦᵀλ`` with gravity ``f = −m g ŷ`` and ``λ`` from the
    tridiagonal system that keeps each link's length constant to second order
    (``K λ = |u|² + d · (a_i − a_{i−1})``, ``d`` a link, ``u`` its rate)."""
    m, g, n = c.mass, c.params["g"], c.n
    inv = 1.0 / m
    i = np.arange(n)

    def behind(x: np.ndarray) -> np.ndarray:  # the previous mass (the pivot: 0)
        return np.concatenate([np.zeros_like(x[:, :1]), x[:, :-1]], 1)

    inv_parent = behind(inv)

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        q, p = _split(y, c)
        v = p * inv[..., None]
        f = np.zeros_like(q)
        f[..., 1] = -g * m
        d, u, a = q - behind(q), v - behind(v), f * inv[..., None]
        b = (u * u).sum(-1) + (d * (a - behind(a))).sum(-1)
        k = np.zeros((m.shape[0], n, n))
        k[:, i, i] = (d * d).sum(-1) * (inv + inv_parent)
        off = -(d[:, 1:] * d[:, :-1]).sum(-1) * inv[:, :-1]
        k[:, i[1:], i[:-1]] = off
        k[:, i[:-1], i[1:]] = off
        lam = np.linalg.solve(k, b[..., None])[..., 0]
        pull = lam[..., None] * d
        dp = f - pull
        dp[:, :-1] += pull[:, 1:]
        return _join(v, dp)

    return rhs


def rhs_double_pendulum(c: Consts) -> Rhs:
    """Double pendulum in angles ``θ1, θ2`` and conjugate momenta (textbook form, with
    ``M = m1 + m2 sin²Δ``, ``Δ = θ1 − θ2``)."""
    m1, m2 = c.mass[:, 0], c.mass[:, 1]
    l1, l2, g = c.params["l1"], c.params["l2"], c.params["g"]

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        q, p = _split(y, c)
        t1, t2, p1, p2 = q[:, 0, 0], q[:, 1, 0], p[:, 0, 0], p[:, 1, 0]
        cd, sd = np.cos(t1 - t2), np.sin(t1 - t2)
        big_m = m1 + m2 * sd * sd
        v1 = (l2 * p1 - l1 * p2 * cd) / (l1 * l1 * l2 * big_m)
        v2 = (l1 * (m1 + m2) * p2 - l2 * m2 * p1 * cd) / (l1 * l2 * l2 * m2 * big_m)
        c1 = p1 * p2 * sd / (l1 * l2 * big_m)
        c2 = ((l2 * l2 * m2 * p1 * p1 + l1 * l1 * (m1 + m2) * p2 * p2
               - 2 * l1 * l2 * m2 * p1 * p2 * cd) * sd * cd / (l1 * l1 * l2 * l2 * big_m**2))
        f1 = -(m1 + m2) * g * l1 * np.sin(t1) - c1 + c2
        f2 = -m2 * g * l2 * np.sin(t2) + c1 - c2
        return _join(np.stack([v1, v2], 1)[:, :, None], np.stack([f1, f2], 1)[:, :, None])

    return rhs


def rhs_gravity(c: Consts) -> Rhs:
    """``dq = p / m``, ``dp_i = Σ_j G m_i m_j (q_j − q_i) / (r² + ε²)^{3/2}`` over pairs."""
    i, j = c.pairs[:, 0], c.pairs[:, 1]
    gmm = (c.params["G"] * c.mass[:, i] * c.mass[:, j])[:, :, None]  # [B, P, 1]
    eps2 = c.params["softening"] ** 2
    incidence = np.zeros((c.n, len(i)))  # force on node b: Σ_k incidence[b, k] w_k
    incidence[i, np.arange(len(i))] = -1.0
    incidence[j, np.arange(len(i))] = 1.0
    m = c.mass[:, :, None]

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        q, p = _split(y, c)
        diff = q[:, i] - q[:, j]
        w = gmm * diff * ((diff * diff).sum(-1, keepdims=True) + eps2) ** -1.5
        return _join(p / m, np.einsum("bk,nkd->nbd", incidence, w))

    return rhs


def rhs_spring(c: Consts) -> Rhs:
    """``dq = p / m``, ``dp_i = −Σ_j k_ij (r_ij − L_ij) (q_i − q_j) / r_ij`` over springs."""
    i, j = c.pairs[:, 0], c.pairs[:, 1]
    k, rest = c.edge_attr[:, :, 0:1], c.edge_attr[:, :, 1:2]
    incidence = np.zeros((c.n, len(i)))
    incidence[i, np.arange(len(i))] = -1.0
    incidence[j, np.arange(len(i))] = 1.0
    m = c.mass[:, :, None]

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        q, p = _split(y, c)
        diff = q[:, i] - q[:, j]
        r = np.sqrt((diff * diff).sum(-1, keepdims=True))
        w = k * (r - rest) * diff / r
        return _join(p / m, np.einsum("bk,nkd->nbd", incidence, w))

    return rhs


def rhs_mirror(c: Consts) -> Rhs:
    """``V = ρ²(ρ² − 8 − 4z²)² / 128``: ``ṗ = −∇V`` written from this factorised form."""
    m = c.mass[:, :, None]

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        q, p = _split(y, c)
        rho, z = q[..., 0], q[..., 1]
        u = rho * rho - 8 - 4 * z * z
        f_rho = -(2 * rho * u * u + 4 * rho**3 * u) / 128
        f_z = -(rho * rho * 2 * u * (-8 * z)) / 128
        return _join(p / m, np.stack([f_rho, f_z], -1))

    return rhs


def rhs_henon_heiles(c: Consts) -> Rhs:
    """``ẍ = −x − 2xy``, ``ÿ = −y − x² + y²`` (over the mass)."""
    m = c.mass[:, :, None]

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        q, p = _split(y, c)
        x, yy = q[..., 0], q[..., 1]
        return _join(p / m, np.stack([-x - 2 * x * yy, -yy - x * x + yy * yy], -1))

    return rhs


@dataclass(frozen=True)
class Case:
    """One benchmarked system and its time span.

    Attributes:
        name: Registry name for :func:`systems.generate`.
        rhs: Builder of the hand-written numpy right-hand side for scipy.
        n_particles: Particles per graph for any-``N`` systems (one size: scipy's
            packed vector needs it).
        points: Saved points per trajectory.
        t_end: The points span ``[0, t_end]``.
        accuracy_horizon: Errors are measured over ``t <= accuracy_horizon`` (chaotic
            systems: a short span, where differences of 1e-13 have not yet grown).
        target_one_at_a_time: Whether the 20x target against scipy one trajectory at a
            time applies (the systems of the original comparison).
    """

    name: str
    rhs: RhsBuilder
    n_particles: int | None = None
    points: int = 100
    t_end: float = 10.0
    accuracy_horizon: float = 10.0
    target_one_at_a_time: bool = False

    @property
    def steps(self) -> int:
        """Saved steps after the initial state."""
        return self.points - 1

    @property
    def dt(self) -> float:
        """Time between saved points."""
        return self.t_end / self.steps


CASES: dict[str, Case] = {c.name: c for c in (
    Case("mass-spring", rhs_mass_spring),
    Case("pendulum", rhs_pendulum, target_one_at_a_time=True),
    Case("double-pendulum", rhs_double_pendulum, accuracy_horizon=2.0),
    Case("two-body", rhs_gravity),
    Case("three-body", rhs_gravity, accuracy_horizon=2.0, target_one_at_a_time=True),
    Case("magnetic-mirror", rhs_mirror, accuracy_horizon=2.0),
    Case("henon-heiles", rhs_henon_heiles, accuracy_horizon=2.0),
    Case("spring-nbody", rhs_spring, n_particles=5, accuracy_horizon=2.0),
    Case("gravity-nbody", rhs_gravity, n_particles=5, accuracy_horizon=2.0),
    Case("damped-pendulum", rhs_pendulum),
    Case("damped-mass-spring", rhs_mass_spring),
    Case("pendulum-chain", rhs_pendulum_chain, n_particles=3, accuracy_horizon=2.0),
    Case("forced-pendulum", rhs_forced_pendulum),
)}


# --------------------------------------------------------------------- our generator
def generate_timed(case: Case, trajectories: int, seed: int) -> tuple[systems.Dataset, float]:
    """One end-to-end ``systems.generate`` call and its wall-clock seconds."""
    start = time.perf_counter()
    data = systems.generate(case.name, trajectories=trajectories, steps=case.steps,
                            dt=case.dt, seed=seed, n_particles=case.n_particles)
    return data, time.perf_counter() - start


def time_ours(case: Case, trajectories: int, seed: int, repeats: int
              ) -> tuple[systems.Dataset, list[float]]:
    """Time up to ``repeats`` calls of our generator after a small warm-up call (a
    call longer than :data:`REPEAT_LIMIT_S` is not repeated).

    Args:
        case: System and time span.
        trajectories: Trajectories to keep.
        seed: Generator seed (every repeat generates the same dataset).
        repeats: Timed calls (>= 1).

    Returns:
        The dataset of the first timed call and the seconds of each call.
    """
    systems.generate(case.name, trajectories=2, steps=2, dt=case.dt, seed=seed + 1,
                     n_particles=case.n_particles)
    data, first = generate_timed(case, trajectories, seed)
    times = [first]
    while len(times) < repeats and first <= REPEAT_LIMIT_S:
        times.append(generate_timed(case, trajectories, seed)[1])
    return data, times


def initial_states(data: systems.Dataset) -> np.ndarray:
    """The kept initial states as scipy vectors ``[q.ravel(), p.ravel()]``, ``[G, S]``.

    Raises:
        ValueError: if the graphs differ in size.
    """
    return trajectories_of(data)[:, 0]


def trajectories_of(data: systems.Dataset) -> np.ndarray:
    """Our trajectories in the scipy layout, ``[G, T, S]``.

    Raises:
        ValueError: if the graphs differ in size.
    """
    if len(set(data.sizes.tolist())) != 1:
        raise ValueError("the benchmark needs graphs of one size")
    t, g = data.q.shape[0], data.num_graphs
    q = data.q.reshape(t, g, -1).cpu().numpy()
    p = data.p.reshape(t, g, -1).cpu().numpy()
    return np.concatenate([q, p], axis=2).transpose(1, 0, 2)


def constants_of(data: systems.Dataset, params: dict[str, Any]) -> Consts:
    """The scipy right-hand sides' constants of every trajectory of ``data``.

    Raises:
        ValueError: if the graphs differ in size or in their (undirected) edges.
    """
    g = data.num_graphs
    n = int(data.sizes[0])
    mass = data.c[:, 0].reshape(g, n).cpu().numpy()
    ei = data.edge_index.cpu()
    ptr = data.ptr.cpu()
    pairs = np.zeros((0, 2), dtype=np.int64)
    edge_attr = None
    if ei.numel():
        offset = ptr[:-1]  # first node of each graph, [G]
        graph = torch.bucketize(ei[0], ptr[1:], right=True)
        local = ei - offset[graph]
        up = local[0] < local[1]
        order = np.lexsort((local[1, up].numpy(), local[0, up].numpy(), graph[up].numpy()))
        both = local[:, up].numpy()[:, order].T.reshape(g, -1, 2)
        if not (both == both[:1]).all():
            raise ValueError("the benchmark needs graphs with one edge structure")
        pairs = both[0]
        if data.edge_attr is not None:
            attr = data.edge_attr.cpu().numpy()[up.numpy()][order]
            edge_attr = attr.reshape(g, len(pairs), -1)
    k = data.c.shape[-1]
    node_attr = data.c[:, 1:].reshape(g, n, k - 1).cpu().numpy() if k > 1 else None
    return Consts(params, mass, n, data.q.shape[-1], pairs, edge_attr, node_attr)


def subset(c: Consts, index: np.ndarray | int) -> Consts:
    """The constants of the trajectories ``index`` (an int keeps one)."""
    index = np.atleast_1d(index)
    return Consts(c.params, c.mass[index], c.n, c.d, c.pairs,
                  None if c.edge_attr is None else c.edge_attr[index],
                  None if c.node_attr is None else c.node_attr[index])


# ----------------------------------------------------------------------------- scipy
class ScipyTimeout(RuntimeError):
    """A packed scipy solve ran past its time budget."""


def solve_one(rhs: Rhs, y0: np.ndarray, t_eval: np.ndarray, method: str, tol: float,
              deadline: float | None = None) -> np.ndarray:
    """One ``solve_ivp`` call as in the HNN code (``t_eval`` output, ``atol = rtol``).

    Args:
        rhs: Right-hand side ``f(t, y)``.
        y0: Initial state ``[S]``.
        t_eval: Output times ``[T]``, starting at 0.
        method: Scipy method name.
        tol: ``rtol`` and ``atol``.
        deadline: ``time.perf_counter()`` value after which the solve is abandoned
            (:class:`ScipyTimeout`).

    Returns:
        The states at ``t_eval``, ``[T, S]``.

    Raises:
        RuntimeError: if the solver fails.
    """
    fun = rhs
    if deadline is not None:
        def fun(t: float, y: np.ndarray) -> np.ndarray:
            if time.perf_counter() > deadline:
                raise ScipyTimeout
            return rhs(t, y)
    sol = solve_ivp(fun, (float(t_eval[0]), float(t_eval[-1])), y0, method=method,
                    t_eval=t_eval, rtol=tol, atol=tol)
    if not sol.success:
        raise RuntimeError(f"solve_ivp({method}, rtol={tol:g}) failed: {sol.message}")
    return sol.y.T


def solve_many(rhs: RhsBuilder, consts: Consts, y0s: np.ndarray, t_eval: np.ndarray,
               method: str, tol: float) -> np.ndarray:
    """``solve_one`` for each initial state in ``y0s [B, S]``; returns ``[B, T, S]``."""
    return np.stack([solve_one(rhs(subset(consts, b)), y0, t_eval, method, tol)
                     for b, y0 in enumerate(y0s)])


def solve_packed(rhs: RhsBuilder, consts: Consts, y0s: np.ndarray, t_eval: np.ndarray,
                 tol: float, deadline: float | None = None) -> np.ndarray:
    """All trajectories in one DOP853 ``solve_ivp`` call (one state vector, one step
    size, the vectorised right-hand side); returns ``[B, T, S]``."""
    b, s = y0s.shape
    y = solve_one(rhs(consts), y0s.ravel(), t_eval, "DOP853", tol, deadline)
    return y.reshape(len(t_eval), b, s).transpose(1, 0, 2)


def max_error(traj: np.ndarray, reference: np.ndarray, points: int) -> float:
    """Largest absolute state error over the first ``points`` saved times."""
    return float(np.abs(traj[:, :points] - reference[:, :points]).max())


def match_tolerance(rhs: RhsBuilder, consts: Consts, y0s: np.ndarray, t_eval: np.ndarray,
                    method: str, reference: np.ndarray, points: int, target: float
                    ) -> tuple[float, bool, dict[str, float]]:
    """Loosest ``rtol = atol`` in :data:`RTOLS` whose max error is at most ``target``,
    one trajectory at a time.

    Args:
        rhs: Right-hand side builder.
        consts: Constants of the accuracy subset.
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
        err = max_error(solve_many(rhs, consts, y0s, t_eval, method, tol), reference, points)
        errors[f"{tol:g}"] = err
        if err <= target:
            return tol, True, errors
    return RTOLS[-1], False, errors


def time_scipy(rhs: RhsBuilder, consts: Consts, y0s: np.ndarray, t_eval: np.ndarray,
               method: str, tol: float, budget_s: float, subset_size: int, pilot: int,
               rng: np.random.Generator, desc: str) -> tuple[float, int]:
    """Time ``solve_one`` per trajectory, over all of them when that fits the budget.

    Trajectories run in a random order; after ``pilot`` of them (or fewer, at least 2,
    once the budget is spent), if the projected time for all exceeds ``budget_s``,
    timing stops at as many as fit in the budget, at most ``subset_size``.

    Args:
        rhs: Right-hand side builder (its construction is not timed).
        consts: Constants of all trajectories.
        y0s: All initial states ``[G, S]``.
        t_eval: Output times ``[T]``.
        method: Scipy method name.
        tol: ``rtol`` and ``atol``.
        budget_s: Longest time to spend on all ``G`` trajectories.
        subset_size: Trajectories timed when all would exceed the budget.
        pilot: Trajectories timed before deciding.
        rng: Random generator for the order.
        desc: Progress bar label.

    Returns:
        ``(seconds, timed)``: wall-clock seconds spent on ``timed`` trajectories.
    """
    order = rng.permutation(len(y0s))
    limit = len(order)
    elapsed = 0.0
    bar = tqdm(total=limit, desc=desc, leave=False, disable=None)  # no bars in logs
    for done, index in enumerate(order, start=1):
        f = rhs(subset(consts, index))
        start = time.perf_counter()
        solve_one(f, y0s[index], t_eval, method, tol)
        elapsed += time.perf_counter() - start
        bar.update()
        deciding = done == pilot or (done >= 2 and elapsed > budget_s and limit == len(order))
        if deciding and elapsed / done * len(order) > budget_s:
            fit = int(budget_s / (elapsed / done))
            limit = max(done, min(subset_size, fit, len(order)))
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
        repeats: Timed runs of our generator (the best is reported).
        accuracy_subset: Trajectories in the accuracy comparison.
        scipy_budget_s: Time budget for timing scipy one at a time on all trajectories.
        scipy_subset: Trajectories timed when the budget would be exceeded.
        scipy_pilot: Trajectories timed before deciding.
        packed_budget_s: Longest packed scipy solve; past it the solve is abandoned
            and its time recorded as a lower bound.
        methods: Scipy methods timed one trajectory at a time.
    """

    trajectories: int
    seed: int
    repeats: int
    accuracy_subset: int
    scipy_budget_s: float
    scipy_subset: int
    scipy_pilot: int
    packed_budget_s: float
    methods: tuple[str, ...] = ("DOP853",)


def scipy_record(case: Case, settings: Settings, method: str, consts: Consts,
                 pick: np.ndarray, y0s: np.ndarray, t_eval: np.ndarray,
                 reference: np.ndarray, points: int, ours_err: float, ours_rate: float,
                 rng: np.random.Generator) -> dict[str, Any]:
    """Match one scipy method's tolerance to our accuracy, then time it one
    trajectory at a time.

    Args:
        case: System and time span.
        settings: Run settings.
        method: Scipy method name.
        consts: Constants of all trajectories.
        pick: Indices of the accuracy subset ``[B]``.
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
    tol, matched, tried = match_tolerance(case.rhs, subset(consts, pick), y0s[pick],
                                          t_eval[:points], method, reference, points,
                                          ours_err)
    seconds, timed = time_scipy(case.rhs, consts, y0s, t_eval, method, tol,
                                settings.scipy_budget_s, settings.scipy_subset,
                                settings.scipy_pilot, rng, f"{case.name} {method}")
    rate = timed / seconds
    speedup = ours_rate / rate
    return {
        "rtol": tol, "atol": tol, "matched": matched, "max_abs_error": tried[f"{tol:g}"],
        "errors_by_rtol": tried, "seconds": settings.trajectories / rate,
        "measured_seconds": seconds, "timed_trajectories": timed,
        "extrapolated": timed < settings.trajectories, "traj_per_s": rate,
        "speedup": speedup,
        "meets_target": speedup >= SPEEDUP_TARGET if case.target_one_at_a_time else None,
    }


def packed_record(case: Case, settings: Settings, consts: Consts, pick: np.ndarray,
                  y0s: np.ndarray, t_eval: np.ndarray, reference: np.ndarray, points: int,
                  ours_err: float, ours_s: float) -> dict[str, Any]:
    """Scipy DOP853 with every trajectory in one state vector, at matched accuracy.

    Each tolerance of :data:`RTOLS`, loosest first, is run on all trajectories (timed)
    and its error measured on the accuracy subset; the first whose error is at most
    ours is the match. A solve past ``packed_budget_s`` is abandoned: the time at
    matched accuracy is then at least the budget (tighter tolerances only take longer),
    recorded as a lower bound.

    Returns:
        The JSON record.
    """
    tried: dict[str, dict[str, float]] = {}
    record: dict[str, Any] = {"method": "DOP853", "timed_out": False}
    for tol in RTOLS:
        start = time.perf_counter()
        try:
            traj = solve_packed(case.rhs, consts, y0s, t_eval, tol,
                                deadline=start + settings.packed_budget_s)
        except ScipyTimeout:
            seconds = time.perf_counter() - start
            tried[f"{tol:g}"] = {"seconds": seconds, "max_abs_error": None}
            record.update(rtol=tol, matched=None, timed_out=True, seconds=seconds,
                          max_abs_error=None)
            break
        seconds = time.perf_counter() - start
        err = max_error(traj[pick], reference, points)
        tried[f"{tol:g}"] = {"seconds": seconds, "max_abs_error": err}
        record.update(rtol=tol, matched=err <= ours_err, seconds=seconds, max_abs_error=err)
        if err <= ours_err:
            break
    record["tried"] = tried
    record["speedup"] = record["seconds"] / ours_s
    record["faster"] = record["speedup"] > 1.0
    return record


def bench_case(case: Case, settings: Settings) -> dict[str, Any]:
    """Benchmark one system: ours, accuracy, scipy one at a time and packed, each at
    matched accuracy.

    Returns:
        The JSON record of the system.
    """
    rng = np.random.default_rng(settings.seed)
    data, ours_times = time_ours(case, settings.trajectories, settings.seed, settings.repeats)
    ours_s = min(ours_times)
    t_eval = data.t.cpu().numpy()
    ours = trajectories_of(data)
    y0s = ours[:, 0]
    consts = constants_of(data, systems.get(case.name).params)
    points = int(np.searchsorted(t_eval, case.accuracy_horizon * (1 + 1e-12), side="right"))
    pick = np.sort(rng.choice(len(y0s), min(settings.accuracy_subset, len(y0s)),
                              replace=False))
    # accuracy runs stop at the horizon: only the errors up to it are compared
    reference = solve_many(case.rhs, subset(consts, pick), y0s[pick], t_eval[:points],
                           REFERENCE_METHOD, REFERENCE_TOL)
    ours_err = max_error(ours[pick], reference, points)
    ours_rate = settings.trajectories / ours_s
    record: dict[str, Any] = {
        "trajectories": settings.trajectories, "points": case.points, "t_end": case.t_end,
        "dt": case.dt, "n_particles": int(consts.n), "ours_seconds": ours_s,
        "ours_traj_per_s": ours_rate, "ours_runs": len(ours_times),
        "ours_seconds_all": ours_times, "ours_seconds_median": float(np.median(ours_times)),
        "ours_rtol": data.meta["rtol"], "ours_resampled": data.meta["resampled"],
        "accuracy": {"reference": f"{REFERENCE_METHOD} rtol=atol={REFERENCE_TOL:g}",
                     "trajectories": len(pick), "horizon": float(t_eval[points - 1]),
                     "points": points, "ours_max_abs_error": ours_err},
        "scipy": {},
    }
    for method in settings.methods:
        record["scipy"][method] = scipy_record(case, settings, method, consts, pick, y0s,
                                               t_eval, reference, points, ours_err,
                                               ours_rate, rng)
    record["packed"] = packed_record(case, settings, consts, pick, y0s, t_eval, reference,
                                     points, ours_err, ours_s)
    one = record["scipy"].get("DOP853", {}).get("meets_target")
    record["targets"] = {"one_at_a_time_20x": one,
                         "faster_than_packed": record["packed"]["faster"]}
    record["pass"] = one is not False and record["packed"]["faster"]
    return record


# ---------------------------------------------------------------------------- output
def format_table(results: dict[str, dict[str, Any]]) -> str:
    """The results as a fixed-width text table: per system our time and error, scipy
    DOP853 one trajectory at a time and packed into one call, each at matched accuracy,
    and both speed-ups."""
    head = (f"{'system':<16} {'ours s':>7} {'err ours':>8} | {'1-by-1 s':>9} {'rtol':>6} "
            f"{'x':>6} {'>=20x':>5} | {'packed s':>9} {'rtol':>6} {'err':>8} {'x':>6} "
            f"{'>1x':>4}")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        one = r["scipy"].get("DOP853")
        if one is None:
            left = f"{'-':>9} {'-':>6} {'-':>6} {'-':>5}"
        else:
            star = "*" if one["extrapolated"] else " "
            rtol = f"{one['rtol']:.0e}" + ("" if one["matched"] else "!")
            goal = {True: "yes", False: "NO", None: "-"}[one["meets_target"]]
            left = (f"{one['seconds']:>8.2f}{star} {rtol:>6} {one['speedup']:>5.1f}x "
                    f"{goal:>5}")
        pk = r["packed"]
        bound = ">" if pk["timed_out"] else " "
        rtol = f"{pk['rtol']:.0e}" + {True: "", False: "!", None: "?"}[pk["matched"]]
        err = "-" if pk["max_abs_error"] is None else f"{pk['max_abs_error']:.1e}"
        lines.append(
            f"{name:<16} {r['ours_seconds']:>7.3f} {r['accuracy']['ours_max_abs_error']:>8.1e} "
            f"| {left} | {bound}{pk['seconds']:>8.3f} {rtol:>6} {err:>8} "
            f"{bound}{pk['speedup']:>5.2f}x {'yes' if pk['faster'] else 'NO':>4}")
    return "\n".join(lines)


def _load(load: list[float] | None) -> str:
    return "n/a" if load is None else f"{load[0]:.1f}"


def format_notes(results: dict[str, dict[str, Any]], machine: dict[str, Any]) -> str:
    """Notes explaining the table's columns and method."""
    runs = "/".join(sorted({str(r["ours_runs"]) for r in results.values()}))
    acc = "; ".join(f"{n}: {r['accuracy']['trajectories']} trajectories, "
                    f"t <= {r['accuracy']['horizon']:.3g}" for n, r in results.items())
    trajectories = "/".join(sorted({str(r["trajectories"]) for r in results.values()}))
    points = "/".join(sorted({str(r["points"]) for r in results.values()}))
    t_end = max(r["t_end"] for r in results.values())
    return "\n".join([
        f"ours: systems.generate(...) end to end incl. resampling, {trajectories} "
        f"trajectories x {points} points over [0, {t_end:g}], best of {runs} timed call(s) "
        "after a tiny "
        f"warm-up; torch {machine['torch']}, {machine['torch_threads']} threads, CPU; load "
        f"average at start/end {_load(machine['load_average_start'])}/"
        f"{_load(machine['load_average_end'])} on {machine['cpu_count']} CPUs.",
        "1-by-1: scipy DOP853 solve_ivp per trajectory on the same kept initial states, "
        "t_eval at the saved points, atol = rtol, hand-written numpy RHS; seconds for all "
        "trajectories (* = timed on a random subset, rate extrapolated). >=20x: the target "
        "for three-body and pendulum ('-': not a target).",
        "packed: one DOP853 solve_ivp over all trajectories stacked in one state vector "
        "(vectorised numpy RHS, one step size), each rtol timed on all trajectories; "
        "'>' = abandoned past the time budget at that rtol (error unknown, '?'): scipy's "
        "time at matched accuracy is at least that (matched is this rtol or a tighter, "
        "slower one), a lower bound, and so is the speed-up.",
        "rtol: loosest of 1e-8..1e-13 whose error is at most ours; '!' = none reached our "
        "error, the tightest is used (favours scipy).",
        f"err: max |state error| vs {REFERENCE_METHOD} rtol=atol={REFERENCE_TOL:g} one "
        f"trajectory at a time ({acc}).",
    ])


def verdicts(results: dict[str, dict[str, Any]]) -> list[str]:
    """One PASS/FAIL line per system against its targets."""
    lines = []
    for name, r in results.items():
        one = r["scipy"].get("DOP853")
        parts = []
        if one is not None:
            goal = f" (target {SPEEDUP_TARGET:g}x)" if one["meets_target"] is not None else ""
            parts.append(f"{one['speedup']:.1f}x scipy DOP853 one at a time{goal}")
        pk = r["packed"]
        parts.append(f"{'>=' if pk['timed_out'] else ''}{pk['speedup']:.2f}x scipy DOP853 "
                     f"packed (target > 1x)")
        lines.append(f"{name}: {'PASS' if r['pass'] else 'FAIL'}: " + "; ".join(parts))
    return lines


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
                        help="smoke run: 8 trajectories over [0, 2], tiny budgets (no timing "
                             "claims)")
    parser.add_argument("--systems", nargs="+", choices=list(CASES), default=list(CASES),
                        help="systems to benchmark (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument("--trajectories", type=int, default=None,
                        help="trajectories per system (default 1000, 8 with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and subsets")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs of our generator, best reported (default 3, 1 with "
                             "--quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for our generator (default: torch's choice)")
    parser.add_argument("--methods", nargs="*", choices=("RK45", "DOP853"),
                        default=["DOP853"],
                        help="scipy methods timed one trajectory at a time (default DOP853)")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when a system misses a target")
    parser.add_argument("--scipy-budget", type=float, default=60.0,
                        help="seconds allowed per system and method to time scipy one at a "
                             "time on all trajectories before timing a subset")
    parser.add_argument("--packed-budget", type=float, default=120.0,
                        help="seconds allowed per packed scipy solve")
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
    trajectories = args.trajectories or (8 if args.quick else 1000)
    repeats = args.repeats or (1 if args.quick else 3)
    methods = tuple(args.methods)
    if args.quick:
        return Settings(trajectories, args.seed, repeats, accuracy_subset=3,
                        scipy_budget_s=min(args.scipy_budget, 1.0),
                        scipy_subset=min(4, trajectories), scipy_pilot=2,
                        packed_budget_s=min(args.packed_budget, 10.0), methods=methods)
    return Settings(trajectories, args.seed, repeats, accuracy_subset=20,
                    scipy_budget_s=args.scipy_budget, scipy_subset=100, scipy_pilot=20,
                    packed_budget_s=args.packed_budget, methods=methods)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON.

    Returns:
        The exit status: 1 with ``--strict`` when a system misses a target, else 0.
    """
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = settings_from(args)
    load_start = load_average()
    results = {}
    for name in args.systems:
        print(f"benchmarking {name} ({settings.trajectories} trajectories)...", flush=True)
        case = CASES[name]
        if args.quick:  # 21 points over [0, 2]
            case = replace(case, points=21, t_end=2.0,
                           accuracy_horizon=min(case.accuracy_horizon, 2.0))
        results[name] = bench_case(case, settings)
    machine = machine_info(load_start)
    print()
    print(format_table(results))
    print()
    print(format_notes(results, machine))
    print()
    print("\n".join(verdicts(results)))
    payload = {
        "benchmark": "bench_generate", "speedup_target": SPEEDUP_TARGET,
        "pass_criterion": ("ours_traj_per_s / scipy DOP853 one-at-a-time traj_per_s >= "
                           "speedup_target for the systems marked target_one_at_a_time, and "
                           "ours faster than scipy DOP853 packed into one call, for every "
                           "system, both at matched accuracy"),
        "quick": args.quick, "seed": args.seed,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine, "code": code_version(), "settings": asdict(settings),
        "rtols": list(RTOLS), "reference_tol": REFERENCE_TOL,
        "one_at_a_time_targets": [n for n, c in CASES.items() if c.target_one_at_a_time],
        "systems": results, "pass": all(r["pass"] for r in results.values()),
    }
    write_json(payload, args.out)
    print(f"\nwrote {args.out}")
    return 1 if args.strict and not payload["pass"] else 0


if __name__ == "__main__":
    sys.exit(main())
