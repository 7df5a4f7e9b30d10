"""Ground-truth simulation: agreement with scipy's DOP853 and with exact solutions,
batched against one-at-a-time, conservation laws, and the energy drift of datasets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.special import ellipk

import systems
from hogn.graph import GraphBatch, fully_connected, ptr_from_sizes

F64 = torch.float64
ANY_N = {"spring-nbody": (3, 6), "gravity-nbody": (3, 6)}

# (name, params, dt, steps): whole trajectories for the regular systems, the first
# 1.5 time units for the chaotic ones (where tiny differences grow exponentially)
SCIPY_CASES = [
    ("mass-spring", {}, 0.1, 100),
    ("pendulum", {}, 0.1, 100),
    ("pendulum", {"embed_dim": 2, "g": 2.0}, 0.1, 100),
    ("two-body", {}, 0.1, 60),
    ("spring-nbody", {}, 0.05, 60),
    ("double-pendulum", {}, 0.02, 75),
    ("three-body", {}, 0.02, 75),
    ("magnetic-mirror", {}, 0.02, 75),
    ("gravity-nbody", {}, 0.02, 50),
]


def _id(case):
    return case[0] + "".join(f"-{k}={v}" for k, v in case[1].items())


def scipy_trajectory(system, graph: GraphBatch, dt: float, steps: int):
    """One graph integrated by scipy's DOP853 with the system's own vector field."""
    shape = graph.q.shape
    size = graph.q.numel()

    def rhs(_t, y):
        x = torch.from_numpy(y)
        dq, dp = system.time_derivative(x[:size].reshape(shape), x[size:].reshape(shape), graph)
        return torch.cat([dq.reshape(-1), dp.reshape(-1)]).numpy()

    y0 = torch.cat([graph.q.reshape(-1), graph.p.reshape(-1)]).numpy()
    t = np.arange(steps + 1) * dt
    sol = solve_ivp(rhs, (0.0, t[-1]), y0, method="DOP853", t_eval=t, rtol=1e-12, atol=1e-12)
    assert sol.success, sol.message
    y = torch.from_numpy(sol.y.T.copy())
    return y[:, :size].reshape(-1, *shape), y[:, size:].reshape(-1, *shape)


@pytest.mark.parametrize("case", SCIPY_CASES, ids=_id)
def test_agrees_with_scipy_dop853(case):
    name, params, dt, steps = case
    system = systems.get(name, **params)
    graph = system.sample(4, seed=1, n_particles=(3, 5) if name in ANY_N else None)
    q, p, stopped = system.trajectory(graph, dt, steps)  # adaptive, the whole batch at once
    assert not stopped.any()
    assert torch.isfinite(q).all() and torch.isfinite(p).all()
    worst = 0.0
    for g in range(graph.num_graphs):
        one = graph.select([g])
        nodes = torch.arange(int(graph.ptr[g]), int(graph.ptr[g + 1]))
        q_ref, p_ref = scipy_trajectory(system, one, dt, steps)
        worst = max(worst, (q[:, nodes] - q_ref).abs().max().item(),
                    (p[:, nodes] - p_ref).abs().max().item())
    print(f"\n[scipy] {_id(case)}: max |ours - DOP853| = {worst:.1e} over t <= {dt * steps:g}")
    assert worst < 1e-7
    # and the trajectories went somewhere: the comparison is not of constants
    assert (q[-1] - q[0]).abs().max() > 0.1


# --------------------------------------------------------------- exact solutions
def test_mass_spring_follows_cosine():
    system = systems.get("mass-spring", k=4.0, mass=(0.5, 2.0), embed_dim=2)
    graph = system.sample(5, seed=0)
    dt, steps = 0.1, 100
    q, p, _ = system.trajectory(graph, dt, steps)
    m = graph.c[:, 0]
    omega = torch.sqrt(4.0 / m)
    t = torch.arange(steps + 1, dtype=F64)[:, None] * dt
    q0, p0 = graph.q[:, 0], graph.p[:, 0]
    q_exact = q0 * torch.cos(omega * t) + p0 / (m * omega) * torch.sin(omega * t)
    p_exact = p0 * torch.cos(omega * t) - q0 * m * omega * torch.sin(omega * t)
    torch.testing.assert_close(q[..., 0], q_exact, atol=1e-9, rtol=0)
    torch.testing.assert_close(p[..., 0], p_exact, atol=1e-9, rtol=0)
    assert torch.equal(q[..., 1], torch.zeros_like(q[..., 1]))  # the surplus stays put
    assert torch.equal(p[..., 1], torch.zeros_like(p[..., 1]))


def test_pendulum_period_is_the_elliptic_integral():
    """A libration of amplitude θ0 has period 4 K(sin²(θ0/2)) / ω0."""
    system = systems.get("pendulum", g=2.0, l=0.5)
    amplitude = torch.tensor([0.3, 1.0, 2.0, 2.8], dtype=F64)
    omega0 = math.sqrt(2.0 / 0.5)
    periods = [4 * ellipk(math.sin(a / 2) ** 2) / omega0 for a in amplitude.tolist()]
    for a, period in zip(amplitude.tolist(), periods, strict=True):
        graph = GraphBatch(torch.tensor([[a]], dtype=F64), torch.zeros(1, 1, dtype=F64),
                           torch.ones(1, 1, dtype=F64), torch.empty(2, 0, dtype=torch.long),
                           ptr_from_sizes([1]))
        steps = 40
        q, p, _ = system.trajectory(graph, period / steps, steps)
        assert q[-1].item() == pytest.approx(a, abs=1e-9)
        assert p[-1].item() == pytest.approx(0.0, abs=1e-9)
        assert q[steps // 2].item() == pytest.approx(-a, abs=1e-9)  # half a swing
        assert q.min().item() == pytest.approx(-a, abs=1e-9)


def _kepler_period(system, graph):
    """Period of each bound two-body orbit, 2π sqrt(a³ / G M) with a = −G m1 m2 / 2E."""
    h = system.hamiltonian(graph.q, graph.p, graph)
    m = graph.c[:, 0].reshape(-1, 2)
    g_const = system.params["G"]
    a = -g_const * m[:, 0] * m[:, 1] / (2 * h)
    return 2 * math.pi * torch.sqrt(a**3 / (g_const * m.sum(1)))


def test_two_body_orbits_close_after_one_kepler_period():
    system = systems.get("two-body", mass=(0.5, 2.0), orbit_noise=0.3)
    graph = system.sample(4, seed=0)
    periods = _kepler_period(system, graph)
    for g in range(4):
        one = graph.select([g])
        steps = 50
        q, p, _ = system.trajectory(one, periods[g].item() / steps, steps)
        torch.testing.assert_close(q[-1], q[0], atol=1e-8, rtol=0)
        torch.testing.assert_close(p[-1], p[0], atol=1e-8, rtol=0)
        separation = (q[:, 0] - q[:, 1]).norm(dim=-1)
        assert separation.max() - separation.min() > 0.05  # eccentric, not circular


def test_lagrange_triangle_rotates_rigidly():
    """With no noise the equilateral triangle turns at ω = sqrt(G M / s³) (unstable, so
    only for a short time)."""
    system = systems.get("three-body", orbit_noise=0.0)
    graph = system.sample(3, seed=0)
    dt, steps = 0.02, 50
    q, _, _ = system.trajectory(graph, dt, steps)
    x = graph.q.reshape(3, 3, 2)
    side = (x[:, 0] - x[:, 1]).norm(dim=-1)
    omega = torch.sqrt(3.0 / side**3)
    for i in range(0, steps + 1, 10):
        angle = omega * i * dt
        c, s = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
        rotated = torch.stack([c * x[..., 0] - s * x[..., 1], s * x[..., 0] + c * x[..., 1]], -1)
        torch.testing.assert_close(q[i].reshape(3, 3, 2), rotated, atol=1e-8, rtol=0)


# -------------------------------------------------------- batched vs one at a time
BATCH_CASES = [
    ("mass-spring", {}, 0.1, 20), ("pendulum", {"embed_dim": 2}, 0.1, 20),
    ("double-pendulum", {}, 0.05, 20), ("two-body", {}, 0.1, 20), ("three-body", {}, 0.05, 20),
    ("magnetic-mirror", {}, 0.1, 20), ("spring-nbody", {}, 0.05, 20),
    ("gravity-nbody", {}, 0.02, 20),
]


@pytest.mark.parametrize("method", ["adaptive", "rk4"])
@pytest.mark.parametrize("case", BATCH_CASES, ids=_id)
def test_batched_equals_one_at_a_time(case, method):
    name, params, dt, steps = case
    system = systems.get(name, **params)
    graph = system.sample(4, seed=2, n_particles=ANY_N.get(name))
    if name in ANY_N:
        assert len(set(graph.sizes.tolist())) > 1  # graphs of different sizes
    q, p, _ = system.trajectory(graph, dt, steps, method=method, substeps=5)
    assert (q[-1] - q[0]).abs().max() > 1e-2
    for g in range(graph.num_graphs):
        nodes = torch.arange(int(graph.ptr[g]), int(graph.ptr[g + 1]))
        q1, p1, _ = system.trajectory(graph.select([g]), dt, steps, method=method, substeps=5)
        torch.testing.assert_close(q[:, nodes], q1, atol=1e-12, rtol=0)
        torch.testing.assert_close(p[:, nodes], p1, atol=1e-12, rtol=0)
    if method == "adaptive":  # a reordered batch gives the same trajectories
        order = [2, 0, 3, 1]
        reordered = graph.select(order)
        q_re, p_re, _ = system.trajectory(reordered, dt, steps)
        back = reordered.replace(q=q_re, p=p_re).select([1, 3, 0, 2])
        torch.testing.assert_close(back.q, q, atol=1e-12, rtol=0)
        torch.testing.assert_close(back.p, p, atol=1e-12, rtol=0)


def test_fixed_step_converges_to_adaptive():
    system = systems.get("two-body")
    graph = system.sample(3, seed=0)
    q_ref, _, _ = system.trajectory(graph, 0.1, 20)
    errors = []
    for substeps in (5, 10):
        q, _, _ = system.trajectory(graph, 0.1, 20, method="rk4", substeps=substeps)
        errors.append((q - q_ref).abs().max().item())
    assert errors[1] < 1e-6
    assert math.log2(errors[0] / errors[1]) == pytest.approx(4, abs=0.3)


def test_adaptive_tolerance_controls_the_error():
    """With saved points far apart the step-size controller is in charge: the global
    error follows the requested tolerance."""
    system = systems.get("double-pendulum")
    graph = system.sample(3, seed=0)
    q_ref, _, _ = system.trajectory(graph, 1.0, 3, rtol=1e-13, atol=1e-13)
    errors = {}
    for tol in (1e-5, 1e-7, 1e-9, 1e-11):
        q, _, _ = system.trajectory(graph, 1.0, 3, rtol=tol, atol=tol)
        errors[tol] = (q - q_ref).abs().max().item()
    assert errors[1e-11] < 1e-10  # the default tolerance
    assert errors[1e-5] < 1e-4
    assert errors[1e-5] > errors[1e-7] > errors[1e-9] > errors[1e-11]


# ------------------------------------------------------------------ stopping
def test_close_pass_stops_only_its_own_graph():
    system = systems.get("two-body")  # min_distance 0.1
    q = torch.tensor([[0.5, 0.0], [-0.5, 0.0], [0.5, 0.0], [-0.5, 0.0]], dtype=F64)
    p = torch.tensor([[0.0, 0.5], [0.0, -0.5], [0.0, 0.0], [0.0, 0.0]], dtype=F64)
    graph = GraphBatch(q, p, torch.ones(4, 1, dtype=F64), fully_connected([2, 2]),
                       ptr_from_sizes([2, 2]))  # a circular orbit and a radial infall
    dt, steps = 0.1, 20
    qs, _, stopped = system.trajectory(graph, dt, steps, stop=True)
    assert stopped.tolist() == [False, True]
    free_fall = math.pi / 2 * math.sqrt(1.0 / (2 * 2.0))  # separation 1, G M = 2
    last = int(free_fall / dt)
    assert torch.isfinite(qs[: last + 1, 2:]).all() and torch.isnan(qs[last + 1:, 2:]).all()
    gap = (qs[: last + 1, 2] - qs[: last + 1, 3]).norm(dim=-1)
    assert gap.min() >= 0.1
    alone, _, _ = system.trajectory(graph.select([0]), dt, steps)
    torch.testing.assert_close(qs[:, :2], alone, atol=1e-12, rtol=0)
    # a fixed-step method flags it from the saved states
    # (t = 0.78 lies just before the collision at π/4)
    _, _, stopped_rk4 = system.trajectory(graph, 0.13, 6, method="rk4", substeps=100,
                                          stop=True)
    assert stopped_rk4.tolist() == [False, True]


def test_generate_resamples_close_passes():
    system = systems.get("two-body", orbit_noise=0.6, min_distance=0.3)
    data = systems.generate(system, trajectories=8, steps=40, dt=0.1, seed=0)
    assert data.meta["resampled"]["rejected_by_system"] > 0
    assert len(data) == 8
    separation = (data.q[:, 0::2] - data.q[:, 1::2]).norm(dim=-1)
    assert separation.min() >= 0.3


# ----------------------------------------------------- datasets: energy and momenta
DRIFT_CASES = [
    ("mass-spring", {}, 0.1), ("pendulum", {}, 0.1), ("double-pendulum", {}, 0.1),
    ("two-body", {}, 0.1), ("three-body", {}, 0.05), ("magnetic-mirror", {}, 0.1),
    ("spring-nbody", {}, 0.05), ("gravity-nbody", {}, 0.02),
]


@pytest.mark.parametrize("case", DRIFT_CASES, ids=_id)
def test_saved_dataset_energy_drift(case, tmp_path):
    name, params, dt = case
    system = systems.get(name, **params)
    data = systems.generate(system, trajectories=6, steps=60, dt=dt, seed=0,
                            n_particles=ANY_N.get(name))
    path = data.save(tmp_path / f"{name}.pt")
    loaded = systems.load(path)
    drift = loaded.energy_drift()
    print(f"\n[energy drift] {name:16s} max relative drift {drift.max():.2e} "
          f"(6 trajectories, t <= {60 * dt:g})")
    assert drift.shape == (6,)
    assert drift.max() < 1e-7
    # measured, not filtered: nothing was thrown away for drifting
    assert loaded.meta["resampled"]["energy_drift"] == 0
    assert_conserved_momenta(loaded)


def assert_conserved_momenta(data):
    """Total momentum for translation-invariant systems, angular momentum (planar)
    for central forces."""
    name = data.meta["system"]["name"]
    if name not in ("two-body", "three-body", "gravity-nbody", "spring-nbody"):
        return
    batch = torch.repeat_interleave(torch.arange(len(data)), data.sizes)

    def per_graph(x):  # [T, N, ...] -> [T, G, ...]
        return torch.zeros(x.shape[0], len(data), *x.shape[2:], dtype=x.dtype).index_add_(
            1, batch, x)

    momentum = per_graph(data.p)
    assert (momentum - momentum[:1]).abs().max() < 1e-10
    if data.dim == 2 and data.meta["system"].get("graph", "complete") == "complete":
        angular = per_graph(data.q[..., 0] * data.p[..., 1] - data.q[..., 1] * data.p[..., 0])
        assert (angular - angular[:1]).abs().max() < 1e-9


# damped: test_damped.py; fixed-step velocity Verlet in a periodic box (lennard-jones,
# no angular momentum): its drift bound in test_lennard_jones.py
CONSERVATIVE_PRESETS = [name for name in systems.preset_names()
                        if not systems.get(systems.get_preset(name).system).dissipative
                        and systems.get(systems.get_preset(name).system).ground_truth_method
                        == "adaptive"]


@pytest.mark.parametrize("name", CONSERVATIVE_PRESETS)
def test_presets_energy_drift(name):
    data = systems.from_preset(name, trajectories=8)
    preset = systems.get_preset(name)
    drift = data.energy_drift()
    print(f"\n[energy drift] preset {name:22s} max relative drift {drift.max():.2e}")
    assert len(data) == 8 and data.t.numel() == preset.points
    assert data.t[-1].item() == pytest.approx(preset.t_end, rel=1e-12)
    assert data.meta["preset"] == name
    assert drift.max() < 1e-7
    assert data.meta["resampled"]["energy_drift"] == 0
    assert_conserved_momenta(data)
    if name == "meta-magnetic-mirror":  # the particle stays in the bottle
        assert data.q[..., 1].abs().max() < 10


@pytest.mark.slow
@pytest.mark.parametrize("case", DRIFT_CASES, ids=_id)
def test_larger_datasets_energy_drift(case, tmp_path):
    """More, longer and (for any-N systems) bigger trajectories than the quick test."""
    name, params, dt = case
    data = systems.generate(systems.get(name, **params), trajectories=16, steps=150, dt=dt,
                            seed=1, n_particles=(4, 8) if name in ANY_N else None)
    loaded = systems.load(data.save(tmp_path / "data.pt"))
    drift = loaded.energy_drift()
    print(f"\n[energy drift, large] {name:16s} max relative drift {drift.max():.2e} "
          f"(16 trajectories, t <= {150 * dt:g})")
    assert drift.max() < 1e-7
    assert loaded.meta["resampled"]["energy_drift"] == 0
    assert_conserved_momenta(loaded)
