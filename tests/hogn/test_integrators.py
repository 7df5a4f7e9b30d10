"""Integrators: convergence order on an exact solution, symplecticity, energy drift,
time reversibility, declared evaluation counts and argument checking."""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest
import torch

from hogn import integrators
from hogn.integrators import integrate

F64 = torch.float64
EXPECTED = {"euler", "symplectic_euler", "leapfrog", "rk2", "rk4", "yoshida4", "gbs8"}
SYMPLECTIC = {"symplectic_euler", "leapfrog", "yoshida4"}


def oscillator(q, p):
    """H = p²/2 + q²/2."""
    return p, -q


def pendulum(q, p):
    """H = p²/2 + (1 − cos q)."""
    return p, -torch.sin(q)


def pendulum_energy(q, p):
    return 0.5 * p**2 + 1.0 - torch.cos(q)


def oscillator_exact(q0, p0, t):
    c, s = math.cos(t), math.sin(t)
    return q0 * c + p0 * s, -q0 * s + p0 * c


def test_registry_lists_every_integrator():
    assert set(integrators.names()) == EXPECTED
    assert integrators.names() == sorted(integrators.names())
    for name in EXPECTED:
        method = integrators.get(name)
        assert method.name == name
        assert integrators.get(method) is method
        assert method.symplectic == (name in SYMPLECTIC)


def test_register_refuses_a_duplicate_name():
    with pytest.raises(ValueError, match="'rk4' is already registered"):
        integrators.register("rk4", order=4, symplectic=False, evaluations=4)(integrators.rk4)


# ------------------------------------------------------------------ convergence order
T_FINAL = 2.0


def _ladder(order: int) -> list[int]:
    """Step counts over ``T_FINAL``: three halvings, or two for the eighth-order method
    with large steps, so that its smallest error (~1e-12) stays far above round-off."""
    return [3, 6, 12] if order >= 8 else [10, 20, 40, 80]


def measured_order(name: str) -> tuple[float, list[float], list[float]]:
    """Least-squares slope of log(error at T) against log(h) on H = (p² + q²)/2."""
    q0 = torch.tensor([1.0, 0.3, -0.7], dtype=F64)
    p0 = torch.tensor([0.0, -0.8, 0.4], dtype=F64)
    q_exact, p_exact = oscillator_exact(q0, p0, T_FINAL)
    hs, errors = [], []
    for n in _ladder(integrators.get(name).order):
        q, p = integrate(oscillator, q0, p0, T_FINAL / n, n, method=name)
        errors.append(max((q[-1] - q_exact).abs().max().item(),
                          (p[-1] - p_exact).abs().max().item()))
        hs.append(T_FINAL / n)
    slope = float(np.polyfit(np.log(hs), np.log(errors), 1)[0])
    return slope, hs, errors


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_convergence_order_on_harmonic_oscillator(name):
    declared = integrators.get(name).order
    slope, hs, errors = measured_order(name)
    local = [math.log2(a / b) for a, b in itertools.pairwise(errors)]
    print(f"\n[order] {name:17s} declared {declared}  measured {slope:.3f}  "
          f"(h {hs[0]:.3g}..{hs[-1]:.3g}; per halving {', '.join(f'{x:.2f}' for x in local)}; "
          f"errors {errors[0]:.1e}..{errors[-1]:.1e})")
    assert min(errors) > 1e-13, "step sizes too small: the fit would measure round-off"
    assert abs(slope - declared) < 0.2
    assert all(abs(x - declared) < 0.3 for x in local)


def test_integrate_starts_at_initial_state_and_keeps_every_saved_step():
    q0 = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)
    p0 = torch.tensor([[0.0, 1.0], [-1.0, 0.5]], dtype=F64)
    dt, steps = 0.3, 7
    q, p = integrate(oscillator, q0, p0, dt, steps, method="gbs8", substeps=4)
    assert q.shape == (steps + 1, 2, 2)
    assert torch.equal(q[0], q0) and torch.equal(p[0], p0)
    for i in range(steps + 1):  # every saved state sits at t = i * dt
        qe, pe = oscillator_exact(q0, p0, i * dt)
        torch.testing.assert_close(q[i], qe, atol=1e-12, rtol=0)
        torch.testing.assert_close(p[i], pe, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["euler", "leapfrog", "rk4"])
def test_substeps_equal_smaller_steps(name):
    q0 = torch.tensor([0.4, -1.0], dtype=F64)
    p0 = torch.tensor([0.9, 0.1], dtype=F64)
    q_sub, p_sub = integrate(pendulum, q0, p0, 0.2, 10, method=name, substeps=4)
    q_fine, p_fine = integrate(pendulum, q0, p0, 0.05, 40, method=name)
    torch.testing.assert_close(q_sub, q_fine[::4], atol=1e-13, rtol=0)
    torch.testing.assert_close(p_sub, p_fine[::4], atol=1e-13, rtol=0)


@pytest.mark.parametrize("method", ["dop853", "gbs8"])
def test_adaptive_integration_matches_exact_solution_per_graph(method):
    # three "graphs" of one node each, with very different frequencies: each keeps its
    # own step size and all land on the saved times
    omega = torch.tensor([[1.0], [5.0], [0.2]], dtype=F64)

    def f(q, p):
        return p, -(omega**2) * q

    q0 = torch.tensor([[1.0], [0.5], [-2.0]], dtype=F64)
    p0 = torch.tensor([[0.0], [1.0], [0.3]], dtype=F64)
    dt, steps = 1.0, 6
    q, p, n_steps, stopped = integrators.integrate_adaptive(
        f, q0, p0, dt, steps, torch.arange(3), 3, method=method)
    t = torch.arange(steps + 1, dtype=F64)[:, None, None] * dt
    q_exact = q0 * torch.cos(omega * t) + p0 / omega * torch.sin(omega * t)
    p_exact = -q0 * omega * torch.sin(omega * t) + p0 * torch.cos(omega * t)
    torch.testing.assert_close(q, q_exact, atol=1e-9, rtol=0)
    torch.testing.assert_close(p, p_exact, atol=1e-9, rtol=0)
    assert not stopped.any()
    assert n_steps[1] > n_steps[0] > n_steps[2]  # the fast oscillator needed more steps


def test_adaptive_stop_freezes_only_the_stopped_graph():
    def f(q, p):
        return p, -q

    q0 = torch.tensor([[1.0], [1.0]], dtype=F64)
    p0 = torch.tensor([[0.0], [0.0]], dtype=F64)
    # graph 1 stops once q < 0 (t > π/2)
    q, _, _, stopped = integrators.integrate_adaptive(
        f, q0, p0, 0.5, 8, torch.arange(2), 2, stop=lambda q, p: (q[:, 0] < 0) & (
            torch.arange(2) == 1))
    assert stopped.tolist() == [False, True]
    assert torch.isfinite(q[:, 0]).all()
    assert torch.isfinite(q[:4, 1]).all() and torch.isnan(q[4:, 1]).all()
    torch.testing.assert_close(q[:, 0, 0], torch.cos(torch.arange(9, dtype=F64) * 0.5),
                               atol=1e-9, rtol=0)


# ------------------------------------------------------------------- symplecticity
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_symplectic_flag_matches_the_jacobian_of_the_step(name):
    """A map of the plane is symplectic iff it preserves area: det(∂(q', p')/∂(q, p)) = 1."""
    method = integrators.get(name)

    def step(x):
        q, p = method.step(pendulum, x[:1], x[1:], 1.0)  # a large step: gbs8 is accurate
        return torch.cat([q, p])

    for x in ([0.7, 0.2], [2.0, -0.5], [-1.2, 1.1]):
        jac = torch.autograd.functional.jacobian(step, torch.tensor(x, dtype=F64))
        det = torch.linalg.det(jac).item()
        if method.symplectic:
            assert abs(det - 1.0) < 1e-14
        else:
            assert abs(det - 1.0) > 1e-7


@pytest.mark.parametrize("name", ["leapfrog", "yoshida4"])
def test_symmetric_methods_are_time_reversible(name):
    method = integrators.get(name)
    q0 = torch.tensor([0.9, -2.0], dtype=F64)
    p0 = torch.tensor([0.1, 0.7], dtype=F64)
    q, p = q0, p0
    for _ in range(50):
        q, p = method.step(pendulum, q, p, 0.2)
    assert (q - q0).abs().max() > 0.1
    for _ in range(50):
        q, p = method.step(pendulum, q, p, -0.2)
    torch.testing.assert_close(q, q0, atol=1e-12, rtol=0)
    torch.testing.assert_close(p, p0, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_declared_evaluation_count(name):
    calls = 0

    def counting(q, p):
        nonlocal calls
        calls += 1
        return pendulum(q, p)

    method = integrators.get(name)
    method(counting, torch.ones(3, dtype=F64), torch.zeros(3, dtype=F64), 0.1)
    assert calls == method.evaluations


# -------------------------------------------------------------------- energy drift
@functools.cache
def _pendulum_energy_errors(name: str, steps: int = 100_000, dt: float = 0.1):
    # a batch of librations of different amplitudes, up to near the separatrix
    q0 = torch.tensor([0.5, 1.0, 2.0, -1.5, 2.8], dtype=F64)
    p0 = torch.tensor([0.0, 0.3, 0.0, 0.5, 0.0], dtype=F64)
    q, p = integrate(pendulum, q0, p0, dt, steps, method=name)
    err = (pendulum_energy(q, p) - pendulum_energy(q0, p0)).abs()  # [T + 1, B]
    tenth = err.shape[0] // 10
    return err, err[1:tenth + 1].amax(0), err[-tenth:].amax(0)


@pytest.mark.parametrize("name, bound", [("leapfrog", 1e-2), ("yoshida4", 5e-5)])
def test_symplectic_energy_error_stays_bounded_over_1e5_steps(name, bound):
    err, first, last = _pendulum_energy_errors(name)
    print(f"\n[drift] {name}: max |H - H0| over 1e5 steps = {err.max():.2e}; first 10% "
          f"{first.max():.2e}, last 10% {last.max():.2e}")
    assert torch.isfinite(err).all()
    assert err.max() < bound
    # no secular growth: the last tenth is no worse than the first, per trajectory
    assert (last <= 1.1 * first).all()


def test_euler_energy_error_grows():
    err, first, last = _pendulum_energy_errors("euler")
    _, _, leapfrog_last = _pendulum_energy_errors("leapfrog")
    print(f"\n[drift] euler: first 10% {first.max():.2e}, last 10% {last.max():.2e}")
    assert (last > 3 * first).all()
    # error by tenths rises monotonically
    tenths = torch.stack([c.amax(0) for c in err[1:].chunk(10)])
    assert (tenths.diff(dim=0) > 0).all()
    assert (last > 1e3 * leapfrog_last).all()


def test_rk4_energy_error_grows_secularly():
    """High order is no substitute for symplecticity: RK4's error grows steadily."""
    err, first, last = _pendulum_energy_errors("rk4", 20_000)
    tenths = torch.stack([c.amax(0) for c in err[1:].chunk(10)])
    assert (tenths.diff(dim=0) > 0).all()
    assert (last > 5 * first).all()


# ------------------------------------------------------------------- bad arguments
def _state():
    return torch.ones(4, 2, dtype=F64), torch.zeros(4, 2, dtype=F64)


def test_unknown_integrator_lists_choices():
    with pytest.raises(ValueError, match=r"unknown integrator 'nope'; expected one of: .*rk4"):
        integrators.get("nope")
    with pytest.raises(ValueError, match="unknown integrator"):
        integrate(oscillator, *_state(), 0.1, 3, method="nope")


@pytest.mark.parametrize("dt", [0.0, -0.1, float("nan"), float("inf"), "0.1", None])
def test_integrate_rejects_bad_dt(dt):
    with pytest.raises(ValueError, match="dt must be a positive finite number"):
        integrate(oscillator, *_state(), dt, 3)
    with pytest.raises(ValueError, match="dt must be a positive finite number"):
        integrators.integrate_adaptive(oscillator, *_state(), dt, 3, torch.zeros(4, dtype=int),
                                       1)


def test_integrate_rejects_bad_counts():
    with pytest.raises(ValueError, match="steps must be a non-negative integer"):
        integrate(oscillator, *_state(), 0.1, -1)
    with pytest.raises(ValueError, match="steps must be a non-negative integer"):
        integrate(oscillator, *_state(), 0.1, 2.0)
    with pytest.raises(ValueError, match="substeps must be a positive integer"):
        integrate(oscillator, *_state(), 0.1, 3, substeps=0)


def test_integrate_rejects_bad_states():
    q, p = _state()
    with pytest.raises(ValueError, match="same shape"):
        integrate(oscillator, q, p[:, :1], 0.1, 3)
    with pytest.raises(ValueError, match="same shape"):
        integrate(oscillator, q, p[:3], 0.1, 3)
    with pytest.raises(ValueError, match="one floating dtype"):
        integrate(oscillator, q.float(), p, 0.1, 3)
    with pytest.raises(ValueError, match="one floating dtype"):
        integrate(oscillator, q.long(), p.long(), 0.1, 3)
    with pytest.raises(ValueError, match="must be torch tensors"):
        integrate(oscillator, q.numpy(), p, 0.1, 3)
    for bad in (float("nan"), float("inf"), -float("inf")):
        for which in ("q", "p"):
            q, p = _state()
            (q if which == "q" else p)[2, 1] = bad
            with pytest.raises(ValueError, match="non-finite"):
                integrate(oscillator, q, p, 0.1, 3)


def test_adaptive_rejects_mismatched_batch_vector():
    q, p = _state()
    with pytest.raises(ValueError, match="batch"):
        integrators.integrate_adaptive(oscillator, q, p, 0.1, 3, torch.zeros(3, dtype=int), 1)


def test_adaptive_gives_up_on_a_singular_field():
    def singular(q, p):  # dq/dt = q²: blows up at t = 1 from q = 1
        return q**2, torch.zeros_like(p)

    q0 = torch.ones(1, 1, dtype=F64)
    with pytest.raises(RuntimeError, match="exceeded 200 trial steps"):
        integrators.integrate_adaptive(singular, q0, torch.zeros_like(q0), 0.5, 4,
                                       torch.zeros(1, dtype=int), 1, max_iterations=200)


def test_float32_state_stays_float32():
    q0 = torch.tensor([1.0, 0.5])
    q, p = integrate(oscillator, q0, torch.zeros(2), 0.1, 5, method="leapfrog")
    assert q.dtype == p.dtype == torch.float32
