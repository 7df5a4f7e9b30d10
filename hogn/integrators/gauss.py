"""Implicit Gauss–Legendre collocation (``implicit_midpoint``, ``gauss4``, ``gauss6``):
symplectic for any ``H``, stages solved by fixed-point iteration, differentiable by the
implicit-function theorem."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from hogn.integrators.fields import VectorField
from hogn.integrators.registry import ConvergenceError, register

__all__ = ["GAUSS_TABLEAUX", "gauss4", "gauss6", "gauss_step", "implicit_midpoint"]

_S3, _S15 = math.sqrt(3.0), math.sqrt(15.0)
#: Butcher matrices ``A`` and weights ``b`` of the s-stage Gauss–Legendre methods
#: (Hairer, Lubich & Wanner, Geometric Numerical Integration, II.1.3).
GAUSS_TABLEAUX: dict[int, tuple[tuple[tuple[float, ...], ...], tuple[float, ...]]] = {
    1: (((0.5,),), (1.0,)),
    2: (((0.25, 0.25 - _S3 / 6), (0.25 + _S3 / 6, 0.25)), (0.5, 0.5)),
    3: (((5 / 36, 2 / 9 - _S15 / 15, 5 / 36 - _S15 / 30),
         (5 / 36 + _S15 / 24, 2 / 9, 5 / 36 - _S15 / 24),
         (5 / 36 + _S15 / 30, 2 / 9 + _S15 / 15, 5 / 36)),
        (5 / 18, 4 / 9, 5 / 18)),
}
_GAUSS_NAMES = {1: "implicit_midpoint", 2: "gauss4", 3: "gauss6"}
_MAX_ITERATIONS = 100


@functools.lru_cache(maxsize=16)
def _gauss_tableau(stages: int, dtype: torch.dtype, device: torch.device
                   ) -> tuple[Tensor, Tensor]:
    """``A [s, s]`` and ``b [s]`` of the ``stages``-stage Gauss method as tensors, built
    once per dtype and device rather than at every step."""
    a_rows, b_row = GAUSS_TABLEAUX[stages]
    return (torch.tensor(a_rows, dtype=dtype, device=device),
            torch.tensor(b_row, dtype=dtype, device=device))


def _default_tol(dtype: torch.dtype) -> float:
    """Ten machine epsilons of ``dtype``: the stages are solved to round-off."""
    return 10.0 * torch.finfo(dtype).eps


def _fixed_point(update: Callable[[Tensor], Tensor], z: Tensor, scale: Tensor, tol: float,
                 max_iterations: int, what: str) -> tuple[Tensor, int]:
    """Iterate ``z ← update(z)`` until ``max |Δz| / scale <= tol``.

    Stops early, as converged, when the change no longer shrinks while already
    within ``100 tol`` (round-off stagnation; Hairer, Lubich & Wanner VIII.6).

    Returns:
        The last iterate and the number of updates made.

    Raises:
        ConvergenceError: on non-finite values or after ``max_iterations`` updates.
    """
    previous = smallest = math.inf
    for iteration in range(1, max_iterations + 1):
        z_new = update(z)
        change = float(((z_new - z).detach().abs() / scale).max()) if z.numel() else 0.0
        z = z_new
        if not math.isfinite(change):
            raise ConvergenceError(f"{what}: the fixed-point iteration produced non-finite "
                                   f"values at iteration {iteration}; reduce dt")
        if change <= tol or (change >= previous and change <= 100.0 * tol):
            return z, iteration
        previous, smallest = change, min(smallest, change)
    # a contracting iteration ends near its smallest change; one that stalls or cycles
    # ends far above it and no cap helps (dt · Lip(f) is too large at this state)
    stalled = change > 10.0 * smallest or smallest > 1e-3
    advice = ("it does not contract here (dt times the Lipschitz constant of the field is "
              "too large, e.g. at a close encounter); reduce dt or use substeps"
              if stalled else "reduce dt or raise max_iterations")
    raise ConvergenceError(f"{what}: the fixed-point iteration did not converge in "
                           f"{max_iterations} iterations (last relative change {change:.3g}, "
                           f"smallest {smallest:.3g}, tolerance {tol:.3g}); {advice}")


def gauss_step(f: VectorField, q: Tensor, p: Tensor, dt: float, stages: int = 2,
               tol: float | None = None, max_iterations: int = _MAX_ITERATIONS
               ) -> tuple[Tensor, Tensor]:
    """One step of the ``stages``-stage Gauss–Legendre method (order ``2 stages``).

    The stage derivatives ``K_i = f(x + dt Σ_j a_ij K_j)`` (``x = (q, p)``) are
    solved by fixed-point iteration from ``K_i = f(x)``, until the stage increments
    ``dt K`` change by at most ``tol · (1 + |x|)`` elementwise. Fixed-point rather
    than Newton iteration, as recommended for non-stiff Hamiltonian problems (Hairer,
    Lubich & Wanner, VIII.6): it needs no Jacobian of a learned vector field and
    contracts by a factor ``~ dt · Lip(f)`` per iteration, a few iterations at the
    step sizes where the method is accurate anyway. Each iteration costs ``stages``
    evaluations of ``f``. Once the tolerance is met the stage map is applied once
    more: the residual then sits below round-off rather than at ``tol`` (a residual
    of one sign at ``tol`` makes quadratic invariants drift by ``~tol`` per step),
    and the result is the same with autograd on or off. A step thus costs
    ``1 + stages · (iterations + 1)`` evaluations.

    Differentiable (first derivatives): the iteration runs without autograd; the
    final application of the stage map runs with autograd as it is, and where its
    result requires gradients (a parameter of ``f``, ``q`` or ``p`` does) it is
    applied once more, its graph kept, and the gradient
    flowing back into it is corrected by solving the adjoint fixed point
    ``g = ḡ + (∂Φ/∂K)ᵀ g`` (the implicit-function theorem), so gradients with
    respect to the state and to any parameter inside ``f`` are those of the exact
    solution of the stage equations, at the memory of one iteration. A backward
    pass with ``create_graph=True`` (second derivatives, e.g. second-order MAML
    through a rollout) raises ``RuntimeError`` rather than return a wrong result.

    Args:
        f: Vector field ``f(q, p) -> (dq, dp)``.
        q: Positions, any shape.
        p: Momenta, same shape as ``q``.
        dt: Step size.
        stages: 1 (implicit midpoint), 2 (order 4) or 3 (order 6).
        tol: Relative tolerance of the iteration (default ten machine epsilons of
            the dtype: about 2e-15 in float64, 1e-6 in float32).
        max_iterations: Iteration cap (forward and adjoint).

    Returns:
        ``(q_next, p_next)``.

    Raises:
        ConvergenceError: if the stage (or adjoint) equations do not converge.
    """
    a, b = _gauss_tableau(stages, q.dtype, q.device)
    tol = _default_tol(q.dtype) if tol is None else tol
    name = _GAUSS_NAMES[stages]
    x = torch.stack([q, p])  # [2, *shape]

    def stage_map(k: Tensor) -> Tensor:  # K [s, 2, *shape] -> Φ(K)
        xs = x + dt * torch.tensordot(a, k, dims=1)
        return torch.stack([torch.stack(f(xi[0], xi[1])) for xi in xs])

    scale = (1.0 + x.abs()) / abs(dt) if dt else torch.ones_like(x)
    with torch.no_grad():
        k0 = torch.stack(f(q, p)).detach()
        k_star, _ = _fixed_point(lambda k: stage_map(k).detach(), k0.expand(stages, *k0.shape),
                                 scale, tol, max_iterations, name)
    k = stage_map(k_star)
    if k.requires_grad:  # something asked for gradients (a parameter of f, q or p)
        k = _implicit_gradient(stage_map, k_star, tol, max_iterations, name)
    x_next = x + dt * torch.tensordot(b, k, dims=1)
    return x_next[0], x_next[1]


def _implicit_gradient(stage_map: Callable[[Tensor], Tensor], k_star: Tensor, tol: float,
                       max_iterations: int, what: str) -> Tensor:
    """``Φ(K*)`` with autograd on, its incoming gradient mapped through
    ``(I − ∂Φ/∂K)⁻ᵀ`` by a backward hook (fixed-point iteration of the adjoint)."""
    z = k_star.detach().requires_grad_(True)
    with torch.enable_grad():
        out = stage_map(z)
    if not out.requires_grad:
        return out
    busy = [False]

    def hook(grad: Tensor | None) -> Tensor | None:
        if busy[0] or grad is None:  # the adjoint iteration re-enters through ``out``
            return None
        if torch.is_grad_enabled():  # a backward with create_graph=True
            raise RuntimeError(
                f"{what}: second derivatives through an implicit step are not supported "
                "(the stages are solved outside autograd); differentiate once, or use an "
                "explicit method such as rk4 where second derivatives are needed")
        busy[0] = True
        try:

            def adjoint(g: Tensor) -> Tensor:
                (vjp,) = torch.autograd.grad(out, z, g, retain_graph=True, allow_unused=True)
                return grad if vjp is None else grad + vjp

            scale = grad.detach().abs().max().clamp_min(torch.finfo(grad.dtype).tiny)
            g, _ = _fixed_point(adjoint, grad, scale, tol, max_iterations,
                                f"{what} (gradient)")
            return g
        finally:
            busy[0] = False

    out.register_hook(hook)
    return out


@register("implicit_midpoint", order=2, symplectic=True, evaluations=1, implicit=True)
def implicit_midpoint(f: VectorField, q: Tensor, p: Tensor, dt: float,
                      tol: float | None = None, max_iterations: int = _MAX_ITERATIONS
                      ) -> tuple[Tensor, Tensor]:
    """Implicit midpoint rule ``x' = x + dt f((x + x')/2)``, the one-stage Gauss method:
    symplectic and order 2 for any ``H`` (see :func:`gauss_step`)."""
    return gauss_step(f, q, p, dt, 1, tol, max_iterations)


@register("gauss4", order=4, symplectic=True, evaluations=2, implicit=True)
def gauss4(f: VectorField, q: Tensor, p: Tensor, dt: float, tol: float | None = None,
           max_iterations: int = _MAX_ITERATIONS) -> tuple[Tensor, Tensor]:
    """Two-stage Gauss–Legendre collocation: symplectic and order 4 for any ``H``
    (see :func:`gauss_step`)."""
    return gauss_step(f, q, p, dt, 2, tol, max_iterations)


@register("gauss6", order=6, symplectic=True, evaluations=3, implicit=True)
def gauss6(f: VectorField, q: Tensor, p: Tensor, dt: float, tol: float | None = None,
           max_iterations: int = _MAX_ITERATIONS) -> tuple[Tensor, Tensor]:
    """Three-stage Gauss–Legendre collocation: symplectic and order 6 for any ``H``
    (see :func:`gauss_step`)."""
    return gauss_step(f, q, p, dt, 3, tol, max_iterations)
