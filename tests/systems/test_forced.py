"""The forced pendulum: a constant torque ``u`` per trajectory (``c = [m, u]``) on top
of the ideal pendulum, against scipy's DOP853 on the equation of motion written out
by hand, equal to the ``pendulum`` system at ``u = 0``, and its energy balance
``dH/dt = u q̇`` (``H − u q`` conserved)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import systems
from hogn.graph import GraphBatch, ptr_from_sizes
from systems.forced import CONTROL_COLUMN, ForcedPendulum

F64 = torch.float64


def _forced(**params) -> ForcedPendulum:
    return systems.get("forced-pendulum", **params)


def _state(q0: list[float], p0: list[float], u: list[float], mass: float = 1.0) -> GraphBatch:
    n = len(q0)
    c = torch.stack([torch.full((n,), mass, dtype=F64), torch.tensor(u, dtype=F64)], -1)
    return GraphBatch(torch.tensor(q0, dtype=F64)[:, None], torch.tensor(p0, dtype=F64)[:, None],
                      c, torch.empty(2, 0, dtype=torch.long), ptr_from_sizes([1] * n))


def test_registered_and_declared():
    assert "forced-pendulum" in systems.names()
    system = _forced()
    assert isinstance(system, ForcedPendulum) and CONTROL_COLUMN == 1
    assert system.params["control_range"] == (-1.0, 1.0)
    assert system.dissipative and system.separable  # H not conserved; u constant in time
    rebuilt = systems.get(**system.config())
    assert rebuilt.params == system.params
    for bad in [(1.0, -1.0), (0.0, float("inf")), "x", (True, False)]:
        with pytest.raises(ValueError, match="control_range must be a finite number"):
            _forced(control_range=bad)


def test_sampled_controls_are_node_constants_in_range():
    system = _forced(control_range=(-0.5, 2.0), mass=(0.5, 2.0))
    graph = system.sample(400, seed=0)
    assert graph.c.shape == (400, 2) and graph.c.dtype == F64
    u = graph.c[:, CONTROL_COLUMN]
    assert (u >= -0.5).all() and (u <= 2.0).all()
    assert u.min() < -0.4 and u.max() > 1.9 and u.std() > 0.5  # spread over the range
    assert (graph.c[:, 0] >= 0.5).all() and (graph.c[:, 0] <= 2.0).all()  # masses first
    fixed = _forced(control_range=0.3).sample(5, seed=1)
    assert torch.equal(fixed.c[:, 1], torch.full((5,), 0.3, dtype=F64))
    # the initial states are the ideal pendulum's (same generator stream first)
    ideal = systems.get("pendulum").sample(5, seed=1)
    assert torch.equal(fixed.q, ideal.q) and torch.equal(fixed.p, ideal.p)
    with pytest.raises(ValueError, match=r"c = \[m, u\], \[N, 2\]"):
        _forced().trajectory(ideal, 0.1, 2)


@pytest.mark.parametrize("u", [0.0, 0.6, -2.5])
def test_agrees_with_scipy_on_the_equation_of_motion(u):
    """``ml² q'' = −mgl sin q + u`` integrated by DOP853 (``|u| > mgl``: it rotates)."""
    g, l, m = 2.0, 1.3, 0.7
    system = _forced(g=g, l=l, mass=m)
    q0, p0 = [0.4, 1.5, -2.5], [0.3, -0.8, 0.0]
    dt, steps = 0.1, 80
    q, p, _ = system.trajectory(_state(q0, p0, [u] * 3, m), dt, steps)
    t = np.arange(steps + 1) * dt
    inertia = m * l**2
    for i in range(3):
        def rhs(_t, y):
            theta, omega = y
            return [omega, (u - m * g * l * math.sin(theta)) / inertia]

        sol = solve_ivp(rhs, (0, t[-1]), [q0[i], p0[i] / inertia], method="DOP853",
                        t_eval=t, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(q[:, i, 0].numpy(), sol.y[0], atol=1e-8, rtol=0)
        np.testing.assert_allclose(p[:, i, 0].numpy(), inertia * sol.y[1], atol=1e-8, rtol=0)
    if abs(u) > m * g * l:  # beyond the largest gravity torque mgl = 1.82: it rotates
        assert (q[-1, :, 0] - q[0, :, 0]).max() < -2 * math.pi


def test_zero_control_is_the_ideal_pendulum():
    forced = _forced(g=2.0, control_range=0.0)
    ideal = systems.get("pendulum", g=2.0)
    graph = forced.sample(4, seed=2)
    plain = graph.replace(c=graph.c[:, :1].contiguous())
    q, p, _ = forced.trajectory(graph, 0.1, 60)
    q_ref, p_ref, _ = ideal.trajectory(plain, 0.1, 60)
    torch.testing.assert_close(q, q_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(p, p_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(forced.hamiltonian(q, p, graph), ideal.hamiltonian(q, p, plain))
    # and a nonzero control does move it away (the check above can fail)
    pushed = graph.replace(c=torch.cat([graph.c[:, :1], torch.full_like(graph.c[:, :1], 0.5)],
                                       -1))
    q_u, _, _ = forced.trajectory(pushed, 0.1, 60)
    assert (q_u - q_ref).abs().max() > 0.5


def test_field_is_the_pendulum_plus_the_torque():
    system = _forced(g=1.5, l=0.8, embed_dim=2)
    graph = system.sample(6, seed=3)
    graph.p[:, 1] = 0.0
    dq, dp = system.time_derivative(graph.q, graph.p, graph)
    plain = graph.replace(c=graph.c[:, :1].contiguous())
    dq0, dp0 = systems.get("pendulum", g=1.5, l=0.8, embed_dim=2).time_derivative(
        graph.q, graph.p, plain)
    torch.testing.assert_close(dq, dq0)
    torch.testing.assert_close(dp[:, 0], dp0[:, 0] + graph.c[:, 1])
    assert torch.equal(dp[:, 1], torch.zeros(6, dtype=F64))  # the surplus feels no torque
    fq, fp = system.analytic_vector_field(graph)(graph.q, graph.p)
    torch.testing.assert_close(fq, dq, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(fp, dp, rtol=1e-13, atol=1e-14)


def test_energy_balance_is_the_torques_power():
    """``dH/dt = ∇H · f = u q̇`` at any state (autograd); along a trajectory
    ``H(t) − H(0) = u (q(t) − q(0))``, i.e. ``H − u q`` is conserved, while ``H`` is not."""
    system = _forced(mass=(0.5, 2.0), l=1.2, control_range=(-1.5, 1.5))
    graph = system.sample(8, seed=4)
    q = graph.q.clone().requires_grad_(True)
    p = graph.p.clone().requires_grad_(True)
    dh_dq, dh_dp = torch.autograd.grad(system.hamiltonian(q, p, graph).sum(), (q, p))
    dq, dp = system.time_derivative(graph.q, graph.p, graph)
    rate = (dh_dq * dq + dh_dp * dp).sum(-1)  # one node per graph
    power = system.power(graph.q, graph.p, graph)
    torch.testing.assert_close(rate, power, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(power, graph.c[:, 1] * dq[:, 0])
    assert power.abs().max() > 0.1

    dt = 0.05
    q_t, p_t, _ = system.trajectory(graph, dt, 200)
    h = system.hamiltonian(q_t, p_t, graph)  # [T, 8]
    work = graph.c[:, 1] * (q_t[..., 0] - q_t[0, :, 0])
    torch.testing.assert_close(h - h[0], work, atol=1e-9, rtol=0)
    h_u = system.conserved_energy(q_t, p_t, graph)
    assert (h_u - h_u[0]).abs().max() < 1e-9
    assert (h - h[0]).abs().max() > 0.5  # H itself is not conserved
    # central differences of H against the power: second order in dt
    dh = torch.gradient(h, spacing=dt, dim=0)[0][1:-1]
    torch.testing.assert_close(dh, system.power(q_t, p_t, graph)[1:-1], atol=5e-3, rtol=0)


def test_generate_keeps_forced_trajectories():
    system = _forced()
    data = systems.generate(system, trajectories=8, steps=40, dt=0.1, seed=0)
    assert data.meta["resampled"]["energy_drift"] == 0  # not rejected for gaining energy
    assert data.c.shape == (8, 2) and len(set(data.c[:, 1].tolist())) == 8
    graph = data.graph
    torch.testing.assert_close(data.dp, -torch.sin(data.q) + data.c[:, 1:2], rtol=1e-12,
                               atol=1e-12)
    h_u = system.conserved_energy(data.q, data.p, graph)
    assert ((h_u - h_u[0]).abs() < 1e-9).all()
    # leapfrog applies (separable) and agrees with the adaptive ground truth
    q_lf, _, _ = system.trajectory(data.state(0), 0.1, 40, method="yoshida4", substeps=10)
    torch.testing.assert_close(q_lf, data.q, atol=1e-6, rtol=0)
