"""The damped ("real") pendulum: friction on top of the ideal pendulum, against scipy's
DOP853 on the equation of motion written out by hand, against the analytic damped
harmonic oscillator for small swings, and its energy decay rate. The damped
mass-spring: against the damped oscillator's closed-form solution and DOP853, its
field split into the ideal one and the gradient of its dissipation function, its
energy loss rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import systems
from hogn.graph import GraphBatch, ptr_from_sizes
from systems.damped import DampedMassSpring

F64 = torch.float64


def _state(q0: list[float], p0: list[float], mass: float = 1.0) -> GraphBatch:
    n = len(q0)
    return GraphBatch(torch.tensor(q0, dtype=F64)[:, None], torch.tensor(p0, dtype=F64)[:, None],
                      torch.full((n, 1), mass, dtype=F64), torch.empty(2, 0, dtype=torch.long),
                      ptr_from_sizes([1] * n))


def test_registered_with_its_preset():
    assert "damped-pendulum" in systems.names()
    system = systems.get("damped-pendulum")
    assert system.params["gamma"] == 0.1 and system.dissipative
    assert not systems.get("pendulum").dissipative
    preset = systems.get_preset("hnn-real-pendulum")
    assert preset.system == "damped-pendulum" and preset.params["gamma"] > 0
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        systems.get("damped-pendulum", gamma=-0.1)


def test_zero_friction_is_the_ideal_pendulum():
    damped = systems.get("damped-pendulum", gamma=0.0, g=2.0)
    ideal = systems.get("pendulum", g=2.0)
    graph = ideal.sample(4, seed=0)
    q, p, _ = damped.trajectory(graph, 0.1, 40)
    q_ref, p_ref, _ = ideal.trajectory(graph, 0.1, 40)
    torch.testing.assert_close(q, q_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(p, p_ref, atol=1e-12, rtol=0)


def test_field_is_hamiltonian_plus_friction():
    system = systems.get("damped-pendulum", gamma=0.3, embed_dim=2)
    graph = system.sample(5, seed=1)
    dq, dp = system.time_derivative(graph.q, graph.p, graph)
    dq0, dp0 = systems.get("pendulum", embed_dim=2).time_derivative(graph.q, graph.p, graph)
    torch.testing.assert_close(dq, dq0)
    torch.testing.assert_close(dp, dp0 - 0.3 * graph.p)
    assert torch.equal(dp[:, 1], torch.zeros(5, dtype=F64))  # the surplus stays still


@pytest.mark.parametrize("gamma", [0.05, 0.5])
def test_agrees_with_scipy_on_the_equation_of_motion(gamma):
    """``q'' + γ q' + (g/l) sin q = 0`` written out independently, ml²q' = p."""
    g, l, m = 3.0, 1.3, 0.7
    system = systems.get("damped-pendulum", gamma=gamma, g=g, l=l, mass=m)
    q0, p0 = [0.4, 1.5, 2.5], [0.3, -0.8, 0.0]
    dt, steps = 0.1, 80
    q, p, _ = system.trajectory(_state(q0, p0, m), dt, steps)
    t = np.arange(steps + 1) * dt
    for i in range(3):
        def rhs(_t, y):
            theta, omega = y
            return [omega, -gamma * omega - g / l * math.sin(theta)]

        sol = solve_ivp(rhs, (0, t[-1]), [q0[i], p0[i] / (m * l**2)], method="DOP853",
                        t_eval=t, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(q[:, i, 0].numpy(), sol.y[0], atol=1e-8, rtol=0)
        np.testing.assert_allclose(p[:, i, 0].numpy(), m * l**2 * sol.y[1], atol=1e-8, rtol=0)


def test_small_swings_follow_the_damped_harmonic_oscillator():
    """``q = e^{−γt/2} (q0 cos ω_d t + (q0' + γ q0 / 2) / ω_d sin ω_d t)`` for small q."""
    g, gamma, a = 2.0, 0.2, 1e-3
    system = systems.get("damped-pendulum", gamma=gamma, g=g)
    dt, steps = 0.1, 200
    q, _, _ = system.trajectory(_state([a], [0.0]), dt, steps)
    t = torch.arange(steps + 1, dtype=F64) * dt
    omega_d = math.sqrt(g - gamma**2 / 4)
    exact = torch.exp(-gamma * t / 2) * (a * torch.cos(omega_d * t)
                                         + gamma * a / 2 / omega_d * torch.sin(omega_d * t))
    # the sin q ≈ q error is O(a³): relative 1e-6 of the amplitude
    torch.testing.assert_close(q[:, 0, 0], exact, atol=1e-8, rtol=0)


def test_energy_decays_as_exp_minus_gamma_t_for_small_gamma():
    """dH/dt = −2γT, and T averages H/2: after whole periods H(t)/H(0) ≈ e^{−γt}."""
    g, gamma = 1.0, 0.02
    system = systems.get("damped-pendulum", gamma=gamma, g=g)
    period = 2 * math.pi / math.sqrt(g - gamma**2 / 4)
    periods, per = 10, 40
    q, p, _ = system.trajectory(_state([0.05, 0.1], [0.0, 0.02]), period / per, periods * per)
    graph = _state([0.0, 0.0], [0.0, 0.0])
    h = system.hamiltonian(q, p, graph)  # [T, 2]
    assert (h.diff(dim=0) <= 1e-15).all()  # never gains energy
    t_end = periods * period
    rate = -torch.log(h[-1] / h[0]) / t_end
    torch.testing.assert_close(rate, torch.full_like(rate, gamma), rtol=2e-3, atol=0)
    # and dH/dt = −γ p²/ml² along the trajectory (central differences: ~1% error)
    dh = torch.gradient(h, spacing=period / per, dim=0)[0][1:-1]
    torch.testing.assert_close(dh, -gamma * p[1:-1, :, 0] ** 2, atol=3e-6, rtol=0)  # 1.5%


def test_generate_keeps_decaying_trajectories_and_the_preset():
    data = systems.from_preset("hnn-real-pendulum", trajectories=8)
    preset = systems.get_preset("hnn-real-pendulum")
    assert len(data) == 8 and data.t.numel() == preset.points
    assert data.meta["resampled"]["energy_drift"] == 0  # not rejected for losing energy
    assert data.q_obs is not None and data.meta["noise"] == preset.noise
    h = data.energy()
    assert (h.diff(dim=0) <= 1e-12).all()
    # over t_end = 3 the energy falls by between e^{−2γ t} and 1 (T ≤ H)
    ratio = h[-1] / h[0]
    gamma = preset.params["gamma"]
    assert (ratio < 0.95).all() and (ratio > math.exp(-2 * gamma * preset.t_end)).all()
    lo, hi = preset.params["energy_range"]
    assert ((h[0] >= lo) & (h[0] <= hi)).all()
    # the stored derivatives include the friction
    system = data.system()
    _, dp = system.time_derivative(data.q, data.p, data.graph)
    torch.testing.assert_close(data.dp, dp)
    assert (data.dp - systems.get("pendulum", g=3.0).time_derivative(
        data.q, data.p, data.graph)[1]).abs().max() > 1e-2


# ------------------------------------------------------------ damped mass-spring
def _spring(**params) -> DampedMassSpring:
    return systems.get("damped-mass-spring", **params)


def _oscillator(t: torch.Tensor, q0: float, p0: float, m: float, k: float, gamma: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The underdamped ``q'' + γ q' + (k/m) q = 0`` solved by hand, ``(q(t), p(t) = m q'(t))``."""
    omega_d = math.sqrt(k / m - gamma**2 / 4)
    a, b = q0, (p0 / m + gamma * q0 / 2) / omega_d
    decay = torch.exp(-gamma * t / 2)
    cos, sin = torch.cos(omega_d * t), torch.sin(omega_d * t)
    q = decay * (a * cos + b * sin)
    v = decay * ((b * omega_d - gamma * a / 2) * cos - (a * omega_d + gamma * b / 2) * sin)
    return q, m * v


def test_damped_mass_spring_is_registered():
    system = systems.get("damped-mass-spring")
    assert isinstance(system, DampedMassSpring)
    assert systems.get(**system.config()).params == system.params


def test_damped_mass_spring_declares_what_it_is():
    system = _spring()
    assert system.params["gamma"] == 0.1 and system.dissipative and not system.separable
    assert system.params["k"] == systems.get("mass-spring").params["k"]
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        _spring(gamma=float("nan"))


@pytest.mark.parametrize(("gamma", "m", "k"), [(0.1, 1.0, 1.0), (0.7, 0.5, 2.0), (1.5, 2.0, 3.0)])
def test_damped_mass_spring_follows_the_analytic_solution(gamma, m, k):
    """``q = e^{−γt/2} (q0 cos ω_d t + (q0' + γ q0/2)/ω_d sin ω_d t)``, ``ω_d² = k/m − γ²/4``."""
    system = _spring(gamma=gamma, mass=m, k=k)
    q0, p0 = [0.8, -0.3, 0.0], [0.1, 0.9, -1.2]
    dt, steps = 0.1, 100
    q, p, _ = system.trajectory(_state(q0, p0, m), dt, steps)
    t = torch.arange(steps + 1, dtype=F64) * dt
    for i in range(3):
        q_exact, p_exact = _oscillator(t, q0[i], p0[i], m, k, gamma)
        torch.testing.assert_close(q[:, i, 0], q_exact, atol=1e-9, rtol=0)
        torch.testing.assert_close(p[:, i, 0], p_exact, atol=1e-9, rtol=0)
    # and it did decay: by e^{−γt/2} in amplitude, up to the phase
    assert (q[-1].abs() + p[-1].abs() / math.sqrt(k * m)).max() < 2 * math.exp(-gamma * 5)


@pytest.mark.parametrize("gamma", [0.0, 0.3])
def test_damped_mass_spring_agrees_with_scipy(gamma):
    """The equation of motion ``m q'' = −k q − γ m q'`` integrated by DOP853."""
    m, k = 1.5, 2.5
    system = _spring(gamma=gamma, mass=m, k=k)
    q0, p0 = [0.5, -1.1], [0.7, 0.0]
    dt, steps = 0.2, 60
    q, p, _ = system.trajectory(_state(q0, p0, m), dt, steps)
    t = np.arange(steps + 1) * dt
    for i in range(2):
        sol = solve_ivp(lambda _t, y: [y[1], -k / m * y[0] - gamma * y[1]], (0, t[-1]),
                        [q0[i], p0[i] / m], method="DOP853", t_eval=t, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(q[:, i, 0].numpy(), sol.y[0], atol=1e-8, rtol=0)
        np.testing.assert_allclose(p[:, i, 0].numpy(), m * sol.y[1], atol=1e-8, rtol=0)


def test_damped_mass_spring_field_and_its_dissipation_function():
    """``dq = p/m``, ``dp = −kq − γp``, by autograd and by hand; ``∂D/∂p`` is the
    friction and ``∂D/∂q = 0``; an embedded surplus stays still."""
    gamma, m, k = 0.4, 0.8, 1.7
    system = _spring(gamma=gamma, mass=m, k=k, embed_dim=2)
    graph = system.sample(6, seed=2)
    graph.p[:, 1] = 0.0
    dq, dp = system.time_derivative(graph.q, graph.p, graph)
    torch.testing.assert_close(dq[:, 0], graph.p[:, 0] / m)
    torch.testing.assert_close(dp[:, 0], -k * graph.q[:, 0] - gamma * graph.p[:, 0])
    assert torch.equal(dq[:, 1], torch.zeros(6, dtype=F64))
    assert torch.equal(dp[:, 1], torch.zeros(6, dtype=F64))
    field_dq, field_dp = system.analytic_vector_field(graph)(graph.q, graph.p)
    torch.testing.assert_close(field_dq, dq)
    torch.testing.assert_close(field_dp, dp)
    q, p = graph.q.clone().requires_grad_(True), graph.p.clone().requires_grad_(True)
    d = system.dissipation(q, p, graph)
    assert d.shape == (6,) and (d <= 0).all()
    d_q, d_p = torch.autograd.grad(d.sum(), (q, p), allow_unused=True, materialize_grads=True)
    assert torch.equal(d_q, torch.zeros_like(d_q))
    torch.testing.assert_close(d_p, -gamma * graph.p)
    _, dp_ideal = systems.get("mass-spring", mass=m, k=k, embed_dim=2).time_derivative(
        graph.q, graph.p, graph)
    torch.testing.assert_close(dp, dp_ideal + d_p)  # the Helmholtz split


def test_damped_mass_spring_loses_energy_at_the_friction_rate():
    """``dH/dt = −γ p²/m`` and ``H`` never grows; ``γ = 0`` is the ideal mass-spring."""
    gamma, m = 0.25, 2.0
    system = _spring(gamma=gamma, mass=m)
    graph = system.sample(4, seed=3)
    dt = 0.05
    q, p, _ = system.trajectory(graph, dt, 200)
    h = system.hamiltonian(q, p, graph)  # [T, 4]
    assert (h.diff(dim=0) <= 1e-15).all() and (h[-1] < 0.2 * h[0]).all()
    dh = torch.gradient(h, spacing=dt, dim=0)[0][1:-1]
    torch.testing.assert_close(dh, -gamma * p[1:-1, :, 0] ** 2 / m, atol=2e-4, rtol=0)
    ideal = systems.get("mass-spring", mass=m)
    q0, p0, _ = _spring(gamma=0.0, mass=m).trajectory(graph, dt, 50)
    q1, p1, _ = ideal.trajectory(graph, dt, 50)
    torch.testing.assert_close(q0, q1, atol=1e-12, rtol=0)
    torch.testing.assert_close(p0, p1, atol=1e-12, rtol=0)


def test_generate_keeps_decaying_mass_spring_trajectories():
    system = _spring(gamma=0.5)
    data = systems.generate(system, trajectories=6, steps=40, dt=0.1, seed=0)
    assert data.meta["resampled"]["energy_drift"] == 0  # not rejected for losing energy
    h = system.hamiltonian(data.q, data.p, data.graph)
    assert (h.diff(dim=0) <= 1e-12).all() and (h[-1] < 0.5 * h[0]).all()
    torch.testing.assert_close(data.dp, -data.q - 0.5 * data.p)
