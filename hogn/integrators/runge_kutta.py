"""Explicit Runge–Kutta methods, valid for any vector field and not symplectic:
``euler`` (order 1), ``rk2`` (explicit midpoint, order 2), ``rk4`` (order 4)."""

from __future__ import annotations

from torch import Tensor

from hogn.integrators.fields import VectorField
from hogn.integrators.registry import register

__all__ = ["euler", "rk2", "rk4"]


@register("euler", order=1, symplectic=False, evaluations=1)
def euler(f: VectorField, q: Tensor, p: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """Explicit (forward) Euler."""
    dq, dp = f(q, p)
    return q + dt * dq, p + dt * dp




@register("rk2", order=2, symplectic=False, evaluations=2)
def rk2(f: VectorField, q: Tensor, p: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """Explicit midpoint rule."""
    dq, dp = f(q, p)
    dq, dp = f(q + 0.5 * dt * dq, p + 0.5 * dt * dp)
    return q + dt * dq, p + dt * dp


@register("rk4", order=4, symplectic=False, evaluations=4)
def rk4(f: VectorField, q: Tensor, p: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """Classical fourth-order Runge–Kutta."""
    k1q, k1p = f(q, p)
    k2q, k2p = f(q + 0.5 * dt * k1q, p + 0.5 * dt * k1p)
    k3q, k3p = f(q + 0.5 * dt * k2q, p + 0.5 * dt * k2p)
    k4q, k4p = f(q + dt * k3q, p + dt * k3p)
    w = dt / 6.0
    return (
        q + w * (k1q + 2.0 * k2q + 2.0 * k3q + k4q),
        p + w * (k1p + 2.0 * k2p + 2.0 * k3p + k4p),
    )


