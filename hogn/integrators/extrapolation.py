"""Gragg–Bulirsch–Stoer extrapolation of the modified midpoint rule (``gbs8``), also the
error estimate of the adaptive ``gbs8`` ground truth."""

from __future__ import annotations

from torch import Tensor

from hogn.integrators.fields import VectorField
from hogn.integrators.registry import register

__all__ = ["GBS_SEQUENCE", "gbs8", "gbs_table"]

GBS_SEQUENCE = (2, 4, 6, 8)


def _modified_midpoint(
    f: VectorField, q: Tensor, p: Tensor, dq0: Tensor, dp0: Tensor, dt: float, n: int
) -> tuple[Tensor, Tensor]:
    """Gragg's modified midpoint rule with ``n`` (even) sub-steps; ``dq0, dp0 = f(q, p)``."""
    h = dt / n
    q_prev, p_prev = q, p
    q_cur, p_cur = q + h * dq0, p + h * dp0
    for _ in range(n - 1):
        dq, dp = f(q_cur, p_cur)
        q_prev, p_prev, q_cur, p_cur = q_cur, p_cur, q_prev + 2 * h * dq, p_prev + 2 * h * dp
    dq, dp = f(q_cur, p_cur)
    return 0.5 * (q_prev + q_cur + h * dq), 0.5 * (p_prev + p_cur + h * dp)


def gbs_table(f: VectorField, q: Tensor, p: Tensor, dt: float | Tensor
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gragg–Bulirsch–Stoer extrapolation; returns the order-8 state and the order-6
    diagonal entry below it, whose difference estimates the local error."""
    dq0, dp0 = f(q, p)
    table: list[tuple[Tensor, Tensor]] = []
    for j, n in enumerate(GBS_SEQUENCE):
        row = [_modified_midpoint(f, q, p, dq0, dp0, dt, n)]
        for k in range(1, j + 1):
            ratio = (n / GBS_SEQUENCE[j - k]) ** 2 - 1.0
            (aq, ap), (bq, bp) = row[k - 1], table[k - 1]
            row.append((aq + (aq - bq) / ratio, ap + (ap - bp) / ratio))
        previous, table = table, row
    return table[-1][0], table[-1][1], previous[-1][0], previous[-1][1]


@register("gbs8", order=8, symplectic=False, evaluations=1 + sum(GBS_SEQUENCE))
def gbs8(f: VectorField, q: Tensor, p: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """Gragg–Bulirsch–Stoer extrapolation of the modified midpoint rule with the
    fixed step sequence 2, 4, 6, 8: an explicit eighth-order method (21 evaluations),
    used for ground-truth simulation (see :func:`integrate_adaptive`)."""
    q1, p1, _, _ = gbs_table(f, q, p, dt)
    return q1, p1
