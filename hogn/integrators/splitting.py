"""Splitting methods for a separable ``H = T(p) + V(q)``: ``symplectic_euler``,
``leapfrog`` (velocity Verlet) and ``yoshida4``, each with the variant that reuses the
last kick of the previous step (first same as last)."""

from __future__ import annotations

from torch import Tensor

from hogn.integrators.fields import VectorField, force_half, velocity_half
from hogn.integrators.registry import register

__all__ = ["leapfrog", "symplectic_euler", "yoshida4"]

_CBRT2 = 2.0 ** (1.0 / 3.0)
_YOSHIDA4 = (1.0 / (2.0 - _CBRT2), -_CBRT2 / (2.0 - _CBRT2), 1.0 / (2.0 - _CBRT2))


@register("symplectic_euler", order=1, symplectic=True, evaluations=2,
          needs_separable=True)
def symplectic_euler(f: VectorField, q: Tensor, p: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """Symplectic Euler: kick ``p`` with the force at ``q``, then drift ``q``."""
    p = p + dt * force_half(f, q, p)
    return q + dt * velocity_half(f, q, p), p


def _leapfrog_cached(f: VectorField, q: Tensor, p: Tensor, dt: float, force: Tensor | None
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """Kick–drift–kick reusing ``force = dp(q)`` from the previous step's last kick."""
    if force is None:
        force = force_half(f, q, p)
    p = p + 0.5 * dt * force
    q = q + dt * velocity_half(f, q, p)
    force = force_half(f, q, p)
    return q, p + 0.5 * dt * force, force


def _yoshida4_cached(f: VectorField, q: Tensor, p: Tensor, dt: float, force: Tensor | None
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """Yoshida's composition of cached leapfrog steps (the kicks are shared)."""
    for w in _YOSHIDA4:
        q, p, force = _leapfrog_cached(f, q, p, w * dt, force)
    return q, p, force


@register("leapfrog", order=2, symplectic=True, evaluations=3, needs_separable=True,
          cached_step=_leapfrog_cached)
def leapfrog(f: VectorField, q: Tensor, p: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """Störmer–Verlet in kick–drift–kick form (velocity Verlet)."""
    p = p + 0.5 * dt * force_half(f, q, p)
    q = q + dt * velocity_half(f, q, p)
    return q, p + 0.5 * dt * force_half(f, q, p)



@register("yoshida4", order=4, symplectic=True, evaluations=9, needs_separable=True,
          cached_step=_yoshida4_cached)
def yoshida4(f: VectorField, q: Tensor, p: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """Yoshida's fourth-order symplectic method: three leapfrog steps of
    ``w1 dt, w0 dt, w1 dt`` with ``w1 = 1/(2 - 2^(1/3))``, ``w0 = 1 - 2 w1``."""
    for w in _YOSHIDA4:
        q, p = leapfrog(f, q, p, w * dt)
    return q, p
