"""Integrators: convergence order on exact and reference solutions (separable, linear
non-separable and non-linear non-separable H), symplecticity, energy drift, quadratic
invariants, time reversibility, declared evaluation counts, the implicit (Gauss–Legendre)
solver's convergence, errors and gradients, and argument checking."""

from __future__ import annotations

import functools
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from hogn import integrators
from hogn.integrators import ConvergenceError, integrate

F64 = torch.float64
SPLITTING = {"symplectic_euler", "leapfrog", "yoshida4"}
GAUSS = {"implicit_midpoint": 1, "gauss4": 2, "gauss6": 3}  # name -> stages
EXPLICIT = {"euler", "rk2", "rk4", "gbs8"}
EXPECTED = SPLITTING | set(GAUSS) | EXPLICIT
SYMPLECTIC = SPLITTING | set(GAUSS)


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


def linear(q, p):
    """H = q² + p² + 0.3 q p: linear and not separable (dq depends on q, dp on p)."""
    return 2.0 * p + 0.3 * q, -2.0 * q - 0.3 * p


def linear_energy(q, p):
    return q**2 + p**2 + 0.3 * q * p


def linear_exact(q0, p0, t):
    """``exp(t A) (q0, p0)`` with ``A = [[0.3, 2], [-2, -0.3]]`` (frequency √3.91)."""
    a = torch.tensor([[0.3, 2.0], [-2.0, -0.3]], dtype=F64)
    x = torch.linalg.matrix_exp(a * t) @ torch.stack([q0.reshape(-1), p0.reshape(-1)])
    return x[0].reshape(q0.shape), x[1].reshape(p0.shape)


def nonlinear(q, p):
    """H = p² (1/2 + sin(q)/5) + 1 − cos q: a pendulum whose inverse mass 1 + 0.4 sin q
    (in [0.6, 1.4]) depends on the angle, so H is neither separable nor quadratic.
    Orbits with H < 2 librate (bounded in q and p)."""
    s = torch.sin(q)
    return p * (1.0 + 0.4 * s), -s - 0.2 * p**2 * torch.cos(q)


def nonlinear_energy(q, p):
    return p**2 * (0.5 + 0.2 * torch.sin(q)) + 1.0 - torch.cos(q)


def nonlinear_rhs(t, y):
    """``nonlinear`` for scipy, on ``y = [q..., p...]``."""
    q, p = np.split(y, 2)
    s = np.sin(q)
    return np.concatenate([p * (1.0 + 0.4 * s), -s - 0.2 * p**2 * np.cos(q)])


def test_registry_lists_every_integrator():
    assert set(integrators.names()) == EXPECTED
    assert integrators.names() == sorted(integrators.names())
    for name in EXPECTED:
        method = integrators.get(name)
        assert method.name == name
        assert integrators.get(method) is method
        assert method.symplectic == (name in SYMPLECTIC)
        assert method.needs_separable == (name in SPLITTING)
        assert method.implicit == (name in GAUSS)
        assert (method.cached_step is not None) == (name in {"leapfrog", "yoshida4"})
        assert method.fits(True)
        assert method.fits(False) == (name not in SPLITTING)
    for name, stages in GAUSS.items():  # s-stage Gauss–Legendre: order 2s, s evaluations
        assert integrators.get(name).order == 2 * stages
        assert integrators.get(name).evaluations == stages
    assert integrators.compatible(True) == sorted(EXPECTED)
    assert integrators.compatible(False) == sorted(EXPECTED - SPLITTING)


def test_register_refuses_a_duplicate_name():
    with pytest.raises(ValueError, match="'rk4' is already registered"):
        integrators.register("rk4", order=4, symplectic=False, evaluations=4)(integrators.rk4)


# ------------------------------------------------------------------ convergence order
T_FINAL = 2.0
ORDER_Q0 = torch.tensor([1.0, 0.3, -0.7], dtype=F64)
ORDER_P0 = torch.tensor([0.0, -0.8, 0.4], dtype=F64)
#: Step counts over ``T_FINAL`` by declared order: the higher the order, the larger the
#: steps, so that the smallest error stays above ``MIN_FITTED_ERROR``, far above
#: round-off and the non-linear reference's own error. gbs8 is still slightly
#: pre-asymptotic at these steps (measured 8.04 ... 8.17), but smaller ones would reach
#: round-off.
ORDER_LADDERS = {1: (40, 80, 160, 320), 2: (20, 40, 80, 160), 4: (10, 20, 40, 80),
                 6: (4, 8, 16), 8: (4, 6, 9)}
#: A splitting method on a non-separable H is first order whatever it declares.
SPLITTING_ON_NONSEPARABLE_LADDER = (80, 160, 320, 640)
REFERENCE_SUBSTEPS = 400  # gbs8 steps of 0.005 over T_FINAL: truncation error ~1e-20
REFERENCE_ERROR = 1e-13  # bound on the non-linear reference's error, checked below
MIN_FITTED_ERROR = 50 * REFERENCE_ERROR


@dataclass(frozen=True)
class Problem:
    """A test Hamiltonian: its vector field, whether it is separable, and the state at
    ``T_FINAL`` from ``(ORDER_Q0, ORDER_P0)`` (exact or reference)."""

    field: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
    separable: bool
    final: Callable[[], tuple[Tensor, Tensor]]


@functools.cache
def nonlinear_reference(substeps: int = REFERENCE_SUBSTEPS) -> tuple[Tensor, Tensor]:
    """The non-linear problem at ``T_FINAL`` by eighth-order GBS with small steps."""
    with torch.no_grad():
        q, p = integrate(nonlinear, ORDER_Q0, ORDER_P0, T_FINAL, 1, method="gbs8",
                         substeps=substeps)
    return q[-1], p[-1]


PROBLEMS = {
    "separable": Problem(oscillator, True,
                         lambda: oscillator_exact(ORDER_Q0, ORDER_P0, T_FINAL)),
    "linear-nonseparable": Problem(linear, False,
                                   lambda: linear_exact(ORDER_Q0, ORDER_P0, T_FINAL)),
    "nonlinear-nonseparable": Problem(nonlinear, False, nonlinear_reference),
}


def test_nonlinear_reference_agrees_with_scipy_dop853():
    """The reference's own error is far below the smallest error the order tests fit:
    it agrees with itself at half the step and with scipy's DOP853 at tolerance 1e-13."""
    q_ref, p_ref = nonlinear_reference()
    q_fine, p_fine = nonlinear_reference(2 * REFERENCE_SUBSTEPS)
    sol = solve_ivp(nonlinear_rhs, (0.0, T_FINAL), torch.cat([ORDER_Q0, ORDER_P0]).numpy(),
                    method="DOP853", rtol=1e-13, atol=1e-13)
    assert sol.success
    ref = torch.cat([q_ref, p_ref])
    halved = (torch.cat([q_fine, p_fine]) - ref).abs().max().item()
    scipy = (torch.from_numpy(sol.y[:, -1]) - ref).abs().max().item()
    print(f"\n[reference] gbs8 x{REFERENCE_SUBSTEPS}: vs halved step {halved:.1e}, "
          f"vs DOP853 1e-13 {scipy:.1e}")
    assert halved < REFERENCE_ERROR
    assert scipy < REFERENCE_ERROR
    # the orbits librate: bounded energy below the separatrix at H = 2
    assert (nonlinear_energy(ORDER_Q0, ORDER_P0) < 1.0).all()


def expected_order(name: str, separable: bool) -> int:
    """The declared order where the method is allowed, else 1 (a splitting method on a
    non-separable field: its kicks and drifts no longer commute as assumed)."""
    method = integrators.get(name)
    return method.order if method.fits(separable) else 1


def measured_order(name: str, problem: str
                   ) -> tuple[float, list[float], list[float], list[float]]:
    """Least-squares slope of log(error at ``T_FINAL``) against log(h).

    The separable problem is integrated with ``separable=True`` (leapfrog and yoshida4
    then reuse their kicks), a non-separable one with ``separable=False`` where the
    method is allowed and unchecked (``None``) where it is not.

    Returns:
        ``(slope, hs, errors, local slopes between consecutive step sizes)``.
    """
    method = integrators.get(name)
    case = PROBLEMS[problem]
    fits = method.fits(case.separable)
    ladder = ORDER_LADDERS[method.order] if fits else SPLITTING_ON_NONSEPARABLE_LADDER
    q_end, p_end = case.final()
    hs, errors = [], []
    for n in ladder:
        with torch.no_grad():
            q, p = integrate(case.field, ORDER_Q0, ORDER_P0, T_FINAL / n, n, method=name,
                             separable=case.separable if fits else None)
        errors.append(max((q[-1] - q_end).abs().max().item(),
                          (p[-1] - p_end).abs().max().item()))
        hs.append(T_FINAL / n)
    slope = float(np.polyfit(np.log(hs), np.log(errors), 1)[0])
    local = [math.log(a / b) / math.log(ha / hb)
             for (a, b), (ha, hb) in zip(itertools.pairwise(errors), itertools.pairwise(hs),
                                         strict=True)]
    return slope, hs, errors, local


@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_convergence_order(name, problem):
    """Every method has its declared order on every H it is allowed on; a splitting
    method on a non-separable H drops to first order (why they are refused there)."""
    separable = PROBLEMS[problem].separable
    declared = integrators.get(name).order
    expected = expected_order(name, separable)
    slope, hs, errors, local = measured_order(name, problem)
    print(f"\n[order] {name:17s} {problem:22s} declared {declared} expected {expected} "
          f"measured {slope:.3f} (h {hs[0]:.3g}..{hs[-1]:.3g}; local "
          f"{', '.join(f'{x:.2f}' for x in local)}; errors {errors[0]:.1e}..{errors[-1]:.1e})")
    assert min(errors) >= MIN_FITTED_ERROR, "steps too small: the fit would see round-off"
    assert abs(slope - expected) < 0.2
    assert all(abs(x - expected) < 0.3 for x in local)


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


@pytest.mark.parametrize("name", ["euler", "leapfrog", "rk4", "gauss4"])
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
def _step_jacobian_dets(method, field, dt: float) -> list[float]:
    """det(∂(q', p')/∂(q, p)) of one step, at three points of the plane."""

    def step(x):
        q, p = method.step(field, x[:1], x[1:], dt)
        return torch.cat([q, p])

    return [torch.linalg.det(torch.autograd.functional.jacobian(
        step, torch.tensor(x, dtype=F64))).item()
        for x in ([0.7, 0.2], [2.0, -0.5], [-1.2, 1.1])]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_symplectic_flag_matches_the_jacobian_of_the_step(name):
    """A map of the plane is symplectic iff it preserves area: det(∂(q', p')/∂(q, p)) = 1."""
    method = integrators.get(name)
    for det in _step_jacobian_dets(method, pendulum, 1.0):  # a large step: gbs8 is accurate
        if method.symplectic:
            assert abs(det - 1.0) < 1e-14
        else:
            assert abs(det - 1.0) > 1e-7


@pytest.mark.parametrize("name", sorted(SYMPLECTIC))
def test_only_the_gauss_methods_are_symplectic_on_a_nonseparable_H(name):
    """On the non-separable non-linear H, the Gauss methods' step (differentiated through
    its implicit solve) preserves area; the splitting methods' does not."""
    method = integrators.get(name)
    dets = _step_jacobian_dets(method, nonlinear, 0.5)
    print(f"\n[symplectic] {name}: det - 1 = {', '.join(f'{d - 1:.1e}' for d in dets)}")
    if method.fits(False):
        assert all(abs(det - 1.0) < 1e-12 for det in dets)
    else:
        assert all(abs(det - 1.0) > 1e-3 for det in dets)


@pytest.mark.parametrize("name, field", [("leapfrog", pendulum), ("yoshida4", pendulum),
                                         ("implicit_midpoint", nonlinear),
                                         ("gauss4", nonlinear), ("gauss6", nonlinear)])
def test_symmetric_methods_are_time_reversible(name, field):
    """Leapfrog and Yoshida on a separable H, the Gauss methods on a non-separable one:
    50 steps forward then 50 with -dt return to the start."""
    method = integrators.get(name)
    q0 = torch.tensor([0.9, -2.0], dtype=F64)
    p0 = torch.tensor([0.1, 0.7], dtype=F64)
    q, p = q0, p0
    for _ in range(50):
        q, p = method.step(field, q, p, 0.2)
    assert (q - q0).abs().max() > 0.1
    for _ in range(50):
        q, p = method.step(field, q, p, -0.2)
    torch.testing.assert_close(q, q0, atol=1e-12, rtol=0)
    torch.testing.assert_close(p, p0, atol=1e-12, rtol=0)


# ------------------------------------------------------- evaluations and cached kicks
def counting(field):
    """``field`` wrapped to count its calls (``counted.calls``)."""

    def counted(q, p):
        counted.calls += 1
        return field(q, p)

    counted.calls = 0
    return counted


def _fewest_iterations(method, field, q, p, dt) -> int:
    """The smallest ``max_iterations`` with which the implicit step converges."""
    for cap in range(1, 101):
        try:
            method.with_options(max_iterations=cap).step(field, q, p, dt)
        except ConvergenceError:
            continue
        return cap
    raise AssertionError("no cap up to 100 converged")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_declared_evaluation_count(name):
    """Explicit methods call the field exactly ``evaluations`` times; an implicit one
    ``1 + stages * (iterations + 1)`` (the starting guess, one call per stage and
    fixed-point iteration, and one final application of the stage map), where
    ``iterations`` is the fewest that converge."""
    method = integrators.get(name)
    q, p = torch.linspace(-1, 1.5, 3, dtype=F64), torch.linspace(0.5, -0.3, 3, dtype=F64)
    field = counting(nonlinear)
    with torch.no_grad():
        method(field, q, p, 0.1)
    if not method.implicit:
        assert field.calls == method.evaluations
        return
    stages = GAUSS[name]
    with torch.no_grad():
        iterations = _fewest_iterations(method, nonlinear, q, p, 0.1)
    print(f"\n[evaluations] {name}: {field.calls} calls = 1 + {stages} x ({iterations} "
          "iterations + 1)")
    assert iterations >= 2
    assert field.calls == 1 + stages * (iterations + 1)
    # with autograd on, the final application is the differentiable pass: same count
    field.calls = 0
    method(field, q, p, 0.1)
    assert field.calls == 1 + stages * (iterations + 1)


@pytest.mark.parametrize("name", sorted(GAUSS))
def test_implicit_steps_are_the_same_with_and_without_autograd(name):
    method = integrators.get(name)
    q, p = torch.linspace(-1, 1.5, 3, dtype=F64), torch.linspace(0.5, -0.3, 3, dtype=F64)
    with torch.no_grad():
        plain = method(nonlinear, q, p, 0.1)
    tracked = method(nonlinear, q.clone().requires_grad_(True), p, 0.1)
    for a, b in zip(plain, tracked, strict=True):
        assert torch.equal(a, b.detach())


@pytest.mark.parametrize("name", sorted(GAUSS))
def test_second_derivatives_through_implicit_steps_are_refused(name):
    """The stages are solved outside autograd: a Hessian through them would silently
    miss terms, so a backward with ``create_graph=True`` raises instead."""
    q0 = torch.tensor([0.7], dtype=F64, requires_grad=True)
    q1, _ = integrators.get(name).step(nonlinear, q0, torch.tensor([0.2], dtype=F64), 0.5)
    with pytest.raises(RuntimeError, match="second derivatives through an implicit step"):
        torch.autograd.grad(q1.sum(), q0, create_graph=True)


@pytest.mark.parametrize("name, per_step", [("leapfrog", 2), ("yoshida4", 6)])
def test_cached_kicks_give_the_same_states_with_fewer_evaluations(name, per_step):
    """With ``separable=True`` leapfrog and yoshida4 reuse the last kick of a step as the
    first of the next (across saved steps and substeps): bitwise the same states, and
    ``per_step`` evaluations per step after the first (which needs one more)."""
    method = integrators.get(name)
    q0 = torch.tensor([0.5, 1.0, 2.0, -1.5], dtype=F64)
    p0 = torch.tensor([0.0, 0.3, 0.0, 0.5], dtype=F64)
    steps, substeps = 12, 3
    plain, cached = counting(pendulum), counting(pendulum)
    q_plain, p_plain = integrate(plain, q0, p0, 0.1, steps, method=name, substeps=substeps)
    q_cached, p_cached = integrate(cached, q0, p0, 0.1, steps, method=name,
                                   substeps=substeps, separable=True)
    assert torch.equal(q_cached, q_plain) and torch.equal(p_cached, p_plain)
    assert plain.calls == steps * substeps * method.evaluations
    assert cached.calls == 1 + steps * substeps * per_step


@pytest.mark.parametrize("name", sorted(SPLITTING))
def test_integrate_refuses_splitting_methods_for_a_nonseparable_field(name):
    q0, p0 = ORDER_Q0, ORDER_P0
    with pytest.raises(ValueError, match=f"{name} is a splitting method") as info:
        integrate(nonlinear, q0, p0, 0.1, 3, method=name, separable=False)
    advice = str(info.value).split("; use ", 1)[1]  # what the message recommends
    assert "gauss4" in advice and "implicit_midpoint" in advice
    for other in integrators.compatible(False):
        assert other in advice
    for splitting in SPLITTING:
        assert splitting not in advice
    with pytest.raises(ValueError, match="HOGN's H is not separable"):
        integrators.require_fit(name, False, "HOGN's H")
    # allowed on a separable field, and unchecked when separability is unknown
    integrate(pendulum, q0, p0, 0.1, 3, method=name, separable=True)
    integrate(nonlinear, q0, p0, 0.1, 3, method=name)


@pytest.mark.parametrize("name", sorted(EXPECTED - SPLITTING))
def test_integrate_accepts_the_other_methods_for_a_nonseparable_field(name):
    assert integrators.require_fit(name, False) is integrators.get(name)
    q, _ = integrate(nonlinear, ORDER_Q0, ORDER_P0, 0.1, 2, method=name, separable=False)
    assert torch.isfinite(q).all()


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


#: Librations of the non-linear non-separable H, energies 0.12 ... 1.8 (separatrix at 2).
DRIFT_Q0 = torch.tensor([0.5, 1.0, 2.0, -1.5, 2.5], dtype=F64)
DRIFT_P0 = torch.tensor([0.0, 0.3, 0.0, 0.5, 0.0], dtype=F64)
DRIFT_DT = 0.1
#: Steps of the default run (200 time units, ~30 periods; 3-4 ms per implicit step on a
#: busy core, so 1e5 steps take minutes: the 1e5-step runs are marked slow).
DRIFT_STEPS = 2_000
DRIFT_BOUNDS = {"implicit_midpoint": 2e-3, "gauss4": 1e-6}


@functools.cache
def _nonseparable_energy_errors(name: str, steps: int):
    """|H - H0| along trajectories of the non-linear non-separable H, its max over the
    first and the last tenth per trajectory, and the wall time of the integration."""
    start = time.perf_counter()
    with torch.no_grad():
        q, p = integrate(nonlinear, DRIFT_Q0, DRIFT_P0, DRIFT_DT, steps, method=name,
                         separable=False)
    seconds = time.perf_counter() - start
    err = (nonlinear_energy(q, p) - nonlinear_energy(DRIFT_Q0, DRIFT_P0)).abs()  # [T + 1, B]
    tenth = err.shape[0] // 10
    return err, err[1:tenth + 1].amax(0), err[-tenth:].amax(0), seconds


def _check_bounded_nonseparable_energy(name: str, steps: int) -> None:
    err, first, last, seconds = _nonseparable_energy_errors(name, steps)
    print(f"\n[drift] {name} on non-separable H: {steps} steps in {seconds:.1f} s; max "
          f"|H - H0| {err.max():.2e}; first 10% {first.max():.2e}, last 10% {last.max():.2e}")
    assert torch.isfinite(err).all()
    assert err.max() < DRIFT_BOUNDS[name]
    assert (last <= 1.1 * first).all()  # no secular growth, per trajectory


def _check_rk4_nonseparable_energy_grows(steps: int) -> None:
    err, first, last, _ = _nonseparable_energy_errors("rk4", steps)
    _, _, gauss_last, _ = _nonseparable_energy_errors("gauss4", steps)
    print(f"\n[drift] rk4 on non-separable H, {steps} steps: first 10% {first.max():.2e}, "
          f"last 10% {last.max():.2e} (gauss4 last 10% {gauss_last.max():.2e})")
    tenths = torch.stack([c.amax(0) for c in err[1:].chunk(10)])
    assert (tenths.diff(dim=0) > 0).all()
    assert (last > 3 * first).all()
    assert (last > 10 * gauss_last).all()  # same order, same steps: only rk4 drifts


@pytest.mark.parametrize("name", sorted(DRIFT_BOUNDS))
def test_gauss_energy_error_stays_bounded_on_a_nonseparable_H(name):
    """Symplectic for any H: no secular energy growth on a non-linear non-separable H
    (where leapfrog would not even be of its order)."""
    _check_bounded_nonseparable_energy(name, DRIFT_STEPS)


def test_rk4_energy_error_grows_on_the_same_nonseparable_H():
    _check_rk4_nonseparable_energy_grows(DRIFT_STEPS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DRIFT_BOUNDS))
def test_gauss_energy_error_stays_bounded_on_a_nonseparable_H_over_1e5_steps(name):
    _check_bounded_nonseparable_energy(name, 100_000)


@pytest.mark.slow
def test_rk4_energy_error_grows_on_the_same_nonseparable_H_over_1e5_steps():
    _check_rk4_nonseparable_energy_grows(100_000)


# -------------------------------------------------------------- quadratic invariants
QUADRATIC_Q0 = torch.tensor([1.0, 0.3, -0.7, 2.0], dtype=F64)
QUADRATIC_P0 = torch.tensor([0.0, -0.8, 0.4, 1.0], dtype=F64)
#: A stage tolerance below round-off: the iteration runs until it stagnates.
TIGHT_TOL = 1e-16


def _quadratic_invariant_change(name: str, steps: int, tol: float | None = None
                                ) -> float:
    """Largest relative change of H = q² + p² + 0.3 q p along ``steps`` steps of 0.1."""
    method = integrators.get(name)
    if tol is not None:
        method = method.with_options(tol=tol)
    with torch.no_grad():
        q, p = integrate(linear, QUADRATIC_Q0, QUADRATIC_P0, 0.1, steps, method=method,
                         separable=False)
    h0 = linear_energy(QUADRATIC_Q0, QUADRATIC_P0)
    return ((linear_energy(q, p) - h0) / h0).abs().max().item()


def _check_quadratic_invariant(name: str, steps: int) -> None:
    default = _quadratic_invariant_change(name, steps)
    tight = _quadratic_invariant_change(name, steps, TIGHT_TOL)
    rk4 = _quadratic_invariant_change("rk4", steps)
    tol = 10 * torch.finfo(F64).eps  # the default stage tolerance
    print(f"\n[quadratic] {name}, {steps} steps: relative change {default:.1e} (default "
          f"tolerance), {tight:.1e} (tol {TIGHT_TOL:g}); rk4 {rk4:.1e}")
    # exact for the exact stages: the stages are solved to tol and the stage map applied
    # once more, so what remains is round-off, as with a tolerance below round-off
    assert default <= max(1e-13, steps * tol / 100)
    assert tight <= 1e-12
    assert rk4 > 1e-4


@pytest.mark.parametrize("name", sorted(GAUSS))
def test_gauss_methods_preserve_a_quadratic_invariant(name):
    _check_quadratic_invariant(name, 500)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GAUSS))
def test_gauss_methods_preserve_a_quadratic_invariant_over_1e4_steps(name):
    _check_quadratic_invariant(name, 10_000)


# --------------------------------------------------------- the implicit solver itself
def _clocked_oscillator(threshold: float, stiffness: float = 1e3):
    """A clock ``q[0]`` (dq = 1) and an oscillator ``(q[1], p[1])`` whose frequency jumps
    from 1 to ``stiffness`` once the clock passes ``threshold``."""

    def field(q, p):
        omega = torch.where(q[:1] > threshold, stiffness, 1.0)
        dq = torch.cat([torch.ones_like(q[:1]), omega * p[1:]])
        dp = torch.cat([torch.zeros_like(p[:1]), -omega * q[1:]])
        return dq, dp

    return field


def test_convergence_error_on_a_stiff_field_names_the_step():
    method = integrators.get("implicit_midpoint").with_options(max_iterations=40)
    field = _clocked_oscillator(1.2)
    q0 = torch.tensor([0.0, 1.0], dtype=F64)
    p0 = torch.tensor([0.0, 0.0], dtype=F64)
    assert issubclass(ConvergenceError, RuntimeError)
    # the stage sits at the clock's midpoint: 0.25, 0.75 converge, 1.25 is stiff (dt ω = 500)
    with pytest.raises(ConvergenceError, match=r"^step 3 of 5, t = 1 -> 1\.5: implicit_midpoint"
                       r": the fixed-point iteration did not converge in 40 iterations"
                       r".*does not contract here.*reduce dt or use substeps"):
        integrate(field, q0, p0, 0.5, 5, method=method, separable=False)
    # a contracting iteration that only lacks iterations is told so
    with pytest.raises(ConvergenceError, match=r"did not converge in 2 iterations.*"
                                               r"reduce dt or raise max_iterations"):
        integrators.get("implicit_midpoint").with_options(max_iterations=2).step(
            oscillator, q0, p0, 0.1)
    q, _ = integrate(field, q0, p0, 0.5, 2, method=method)  # the first two steps are fine
    torch.testing.assert_close(q[-1, 0], torch.tensor(1.0, dtype=F64))
    with pytest.raises(ConvergenceError, match=r"step 1 of 1 \(substep 3 of 4\)"):
        integrate(field, q0, p0, 2.0, 1, method=method, substeps=4)
    # a step called directly raises too, with a tiny cap, on a field stiff everywhere
    stiff = integrators.get("gauss4").with_options(max_iterations=3)
    with pytest.raises(ConvergenceError, match=r"gauss4: .* did not converge in 3 iterations"):
        stiff.step(_clocked_oscillator(-1.0), q0, p0, 1.0)
    # the same field converges with a small step and the default cap
    integrators.get("gauss4").step(_clocked_oscillator(-1.0), q0, p0, 1e-4)


@pytest.mark.parametrize("name", sorted(GAUSS))
def test_nan_producing_field_raises_instead_of_returning_nan(name):
    """dq = -sqrt(q) from q = 0.01 reaches q = 0 at t = 0.2: with dt = 1 the stage values
    go negative and the field returns NaN, which the solver must not hide."""

    def field(q, p):
        return -torch.sqrt(q), torch.zeros_like(p)

    q0 = torch.full((2,), 0.01, dtype=F64)
    p0 = torch.zeros(2, dtype=F64)
    q, _ = integrators.get("rk4").step(field, q0, p0, 1.0)  # an explicit method returns NaN
    assert torch.isnan(q).any()
    with pytest.raises(ConvergenceError, match="non-finite"):
        integrators.get(name).step(field, q0, p0, 1.0)
    with pytest.raises(ConvergenceError, match=r"step 1 of 3.*non-finite"):
        integrate(field, q0, p0, 1.0, 3, method=name)

    def nan_field(q, p):  # NaN from the very first evaluation
        return p * math.nan, q

    with pytest.raises(ConvergenceError, match="non-finite"):
        integrators.get(name).step(nan_field, q0, p0, 0.1)


def test_with_options():
    for name in sorted(EXPECTED - set(GAUSS)):
        with pytest.raises(ValueError, match=f"{name} is explicit"):
            integrators.get(name).with_options(tol=1e-8)
    gauss4 = integrators.get("gauss4")
    for bad in (0.0, 1.0, -1e-8, math.nan, math.inf, "1e-8"):
        with pytest.raises(ValueError, match="tol must be a number in"):
            gauss4.with_options(tol=bad)
    for bad in (0, -3, 2.5, "10"):
        with pytest.raises(ValueError, match="max_iterations must be a positive int"):
            gauss4.with_options(max_iterations=bad)
    loose = gauss4.with_options(tol=1e-6, max_iterations=7)
    assert (loose.name, loose.order, loose.symplectic, loose.implicit) == ("gauss4", 4, True,
                                                                           True)
    assert integrators.get(loose) is loose and integrators.get("gauss4") is gauss4
    # a looser tolerance takes fewer iterations and is still accurate to about that
    q0 = torch.linspace(-1, 1.5, 3, dtype=F64)
    p0 = torch.linspace(0.5, -0.3, 3, dtype=F64)
    tight_field, loose_field = counting(nonlinear), counting(nonlinear)
    with torch.no_grad():
        q_tight, p_tight = gauss4.step(tight_field, q0, p0, 0.1)
        q_loose, p_loose = loose.step(loose_field, q0, p0, 0.1)
    assert loose_field.calls < tight_field.calls
    assert 0 < (q_loose - q_tight).abs().max() < 1e-6
    assert (p_loose - p_tight).abs().max() < 1e-6


# ---------------------------------------------------------------------- gradients
def tanh_field(w1: Tensor, b1: Tensor, w2: Tensor):
    """A small network vector field ``(dq, dp) = tanh([q, p] w1 + b1) w2`` on scalar
    ``q, p`` per batch entry (not Hamiltonian, which the solver does not need)."""

    def field(q, p):
        out = torch.tanh(torch.stack([q, p], -1) @ w1 + b1) @ w2
        return out[..., 0], out[..., 1]

    return field


def _tanh_inputs() -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    tensors = (torch.tensor([0.4, -1.0], dtype=F64), torch.tensor([0.9, 0.2], dtype=F64),
               0.8 * torch.randn(2, 4, generator=g, dtype=F64),
               0.3 * torch.randn(4, generator=g, dtype=F64),
               0.8 * torch.randn(4, 2, generator=g, dtype=F64))
    return tuple(t.requires_grad_(True) for t in tensors)


GRAD_STEPS, GRAD_DT = 3, 0.3


def _steps_of(step):
    """``(q0, p0, w1, b1, w2) -> [q, p]`` after ``GRAD_STEPS`` steps of ``step``."""

    def run(q, p, w1, b1, w2):
        field = tanh_field(w1, b1, w2)
        for _ in range(GRAD_STEPS):
            q, p = step(field, q, p, GRAD_DT)
        return torch.cat([q, p])

    return run


@pytest.mark.parametrize("name", sorted(GAUSS))
def test_gradcheck_through_implicit_steps(name):
    """Gradients w.r.t. the initial state and the field's parameters, by the implicit-
    function theorem, against finite differences."""
    assert torch.autograd.gradcheck(_steps_of(integrators.get(name).step), _tanh_inputs())


#: Hairer, Lubich & Wanner, Table II.1.1 (typed here independently of the library).
_TABLEAUX = {1: ([[0.5]], [1.0]),
             2: ([[0.25, 0.25 - math.sqrt(3) / 6], [0.25 + math.sqrt(3) / 6, 0.25]],
                 [0.5, 0.5])}


def _unrolled_gauss(stages: int, iterations: int = 60):
    """The Gauss step by ``iterations`` fixed-point iterations, all recorded by autograd."""
    a_rows, b_row = _TABLEAUX[stages]

    def step(field, q, p, dt):
        a, b = torch.tensor(a_rows, dtype=q.dtype), torch.tensor(b_row, dtype=q.dtype)
        x = torch.stack([q, p])
        k = torch.stack([torch.stack(field(q, p))] * stages)
        for _ in range(iterations):
            xs = x + dt * torch.tensordot(a, k, dims=1)
            k = torch.stack([torch.stack(field(xi[0], xi[1])) for xi in xs])
        x = x + dt * torch.tensordot(b, k, dims=1)
        return x[0], x[1]

    return step


@pytest.mark.parametrize("name", ["implicit_midpoint", "gauss4"])
def test_implicit_gradient_equals_the_unrolled_fixed_point(name):
    inputs = _tanh_inputs()
    weights = torch.linspace(-1.0, 1.5, 4, dtype=F64)
    out = _steps_of(integrators.get(name).step)(*inputs)
    grads = torch.autograd.grad(out @ weights, inputs)
    out_unrolled = _steps_of(_unrolled_gauss(GAUSS[name]))(*inputs)
    grads_unrolled = torch.autograd.grad(out_unrolled @ weights, inputs)
    torch.testing.assert_close(out, out_unrolled, atol=1e-14, rtol=0)
    for g, g_unrolled in zip(grads, grads_unrolled, strict=True):
        assert g.abs().max() > 1e-3  # every input matters
        torch.testing.assert_close(g, g_unrolled, atol=1e-12, rtol=0)


# ------------------------------------------------------------------------- dtypes
def test_float32_state_stays_float32():
    q0 = torch.tensor([1.0, 0.5])
    q, p = integrate(oscillator, q0, torch.zeros(2), 0.1, 5, method="leapfrog")
    assert q.dtype == p.dtype == torch.float32


@pytest.mark.parametrize("name", sorted(GAUSS))
def test_float32_implicit_steps_stay_float32_and_converge(name):
    """The default stage tolerance is relative to the dtype (10 eps): a float32 state
    converges, in fewer iterations than float64, to float32 accuracy."""
    fields = {F64: counting(nonlinear), torch.float32: counting(nonlinear)}
    results = {}
    for dtype, field in fields.items():
        with torch.no_grad():
            results[dtype] = integrate(field, DRIFT_Q0.to(dtype), DRIFT_P0.to(dtype), 0.1, 20,
                                       method=name, separable=False)
    q32, p32 = results[torch.float32]
    q64, p64 = results[F64]
    assert q32.dtype == p32.dtype == torch.float32
    assert (q32.double() - q64).abs().max() < 1e-5
    assert (p32.double() - p64).abs().max() < 1e-5
    assert fields[torch.float32].calls < fields[F64].calls
    # a step on float32 tensors requiring grad: gradients stay float32 too
    q0 = DRIFT_Q0.float().requires_grad_(True)
    q1, p1 = integrators.get(name).step(nonlinear, q0, DRIFT_P0.float(), 0.1)
    (grad,) = torch.autograd.grad((q1 + p1).sum(), q0)
    assert q1.dtype == grad.dtype == torch.float32 and torch.isfinite(grad).all()


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


@pytest.mark.parametrize("name", sorted(integrators.names()))
def test_no_autograd_graph_that_nobody_asked_for(name):
    """With no input or parameter needing gradients, no method returns a tensor that
    requires grad (gauss4 kept the whole multi-step graph alive); with one that does, the
    gradient still flows (the implicit methods: through their corrected adjoint)."""
    q0 = torch.tensor([0.4, -1.0], dtype=F64)
    p0 = torch.tensor([0.9, 0.1], dtype=F64)
    q, p = integrate(pendulum, q0, p0, 0.1, 5, method=name)  # separable: every method
    assert not q.requires_grad and not p.requires_grad and q.grad_fn is None
    strength = torch.tensor(1.0, dtype=F64, requires_grad=True)

    def scaled(q, p):
        dq, dp = pendulum(q, p)
        return dq, strength * dp

    q, p = integrate(scaled, q0, p0, 0.1, 5, method=name)
    (grad,) = torch.autograd.grad(q[-1].sum(), strength)
    eps = 1e-6
    with torch.no_grad():
        strength += eps
        up = integrate(scaled, q0, p0, 0.1, 5, method=name)[0][-1].sum()
        strength -= 2 * eps
        down = integrate(scaled, q0, p0, 0.1, 5, method=name)[0][-1].sum()
        strength += eps
    assert float(grad) == pytest.approx(float(up - down) / (2 * eps), rel=1e-5, abs=1e-9)


def test_a_system_trajectory_by_gauss4_keeps_no_graph():
    import systems

    system = systems.get("pendulum")
    graph = system.sample(3, 0)
    _, q, p = system.trajectory(graph, 0.1, 5, method="gauss4")
    assert not q.requires_grad and not p.requires_grad
    data = systems.generate(system, 2, 5, 0.1, method="gauss4", progress=False)
    assert not data.q.requires_grad and not data.dp.requires_grad
