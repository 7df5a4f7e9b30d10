"""Fixed-step integration of a batch of states over many saved steps (:func:`integrate`)."""

from __future__ import annotations

import math

from torch import Tensor

from hogn.integrators.fields import VectorField, check_state
from hogn.integrators.registry import ConvergenceError, Integrator, get, require_fit

__all__ = ["integrate"]


def integrate(
    f: VectorField,
    q0: Tensor,
    p0: Tensor,
    dt: float,
    steps: int,
    method: str | Integrator = "rk4",
    substeps: int = 1,
    progress: bool | str = False,
    separable: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Integrate a vector field for ``steps`` saved steps of size ``dt``.

    Each saved step is taken as ``substeps`` steps of ``dt / substeps``; only the
    states at multiples of ``dt`` are kept. The whole batch moves in one call.

    The splitting methods (``symplectic_euler``, ``leapfrog``, ``yoshida4``;
    ``needs_separable``) are correct only when ``f`` comes from a separable
    ``H = T(p) + V(q)``: ``dq`` depends on ``p`` alone and ``dp`` on ``q`` alone.
    A bare ``f`` cannot be inspected, so this condition is the caller's; pass
    ``separable`` where it is known (``model.separable``, ``system.separable``) to
    have it checked; ``separable=True`` also lets leapfrog and yoshida4 reuse each
    step's last kick as the next one's first (2 and 6 evaluations per step instead
    of 3 and 9, the same states).

    Args:
        f: Vector field ``f(q, p) -> (dq, dp)``.
        q0: Initial positions ``[N, d]`` (any shape that ``f`` accepts).
        p0: Initial momenta, same shape and dtype as ``q0``.
        dt: Time between saved states; must be positive and finite.
        steps: Number of saved steps ``T`` (>= 0).
        method: Integrator name or instance.
        substeps: Integrator steps per saved step (>= 1).
        progress: Show a tqdm bar (a string is used as its description).
        separable: Whether ``f`` is separable; ``False`` refuses the splitting
            methods, ``None`` (unknown) checks nothing.

    Returns:
        ``(q, p)``, each ``[T + 1, *q0.shape]``, with ``q[0] == q0``.

    Raises:
        ValueError: on a non-positive ``dt``, negative ``steps``, ``substeps < 1``,
            mismatched or non-floating ``q0``/``p0``, non-finite initial values, or
            a splitting method with ``separable=False``.
        ConvergenceError: an implicit method's stages did not converge (the
            message names the step).
    """
    integrator = get(method) if separable is None else require_fit(method, separable)
    check_state(q0, p0)
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive finite number, got {dt!r}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not isinstance(substeps, int) or substeps < 1:
        raise ValueError(f"substeps must be a positive integer, got {substeps!r}")
    h = dt / substeps
    cached = integrator.cached_step if separable else None
    force: Tensor | None = None
    qs = q0.new_empty((steps + 1, *q0.shape))
    ps = p0.new_empty((steps + 1, *p0.shape))
    qs[0], ps[0] = q0, p0
    q, p = q0, p0
    iterator = range(1, steps + 1)
    if progress:
        from tqdm.auto import tqdm

        desc = progress if isinstance(progress, str) else integrator.name
        iterator = tqdm(iterator, desc=desc, leave=False, disable=None)
    for i in iterator:
        for j in range(substeps):
            try:
                if cached is not None:
                    q, p, force = cached(f, q, p, h, force)
                else:
                    q, p = integrator.step(f, q, p, h)
            except ConvergenceError as exc:
                where = f"step {i} of {steps}" + (
                    f" (substep {j + 1} of {substeps})" if substeps > 1 else "")
                raise ConvergenceError(f"{where}, t = {(i - 1) * dt + j * h:.6g} -> "
                                       f"{(i - 1) * dt + (j + 1) * h:.6g}: {exc}") from None
        qs[i], ps[i] = q, p
    return qs, ps
