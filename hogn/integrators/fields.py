"""What the integrators step: vector fields, their separable form and the
state check.

A vector field is ``f(q, p) -> (dq, dp)``; a :class:`SplitField` gives a separable
one by its two halves so that splitting methods can call them apart.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["CachedStepFn", "SplitField", "StepFn", "VectorField", "check_state", "force_half",
           "velocity_half"]

VectorField = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
StepFn = Callable[[VectorField, Tensor, Tensor, float], tuple[Tensor, Tensor]]
#: ``step(f, q, p, dt, force) -> (q_next, p_next, force_next)``: a splitting step that
#: takes ``dp`` at ``q`` from the previous step (``None`` on the first) and returns it
#: at ``q_next``; valid only for a separable field, where ``dp`` depends on ``q`` alone.
CachedStepFn = Callable[[VectorField, Tensor, Tensor, float, "Tensor | None"],
                        tuple[Tensor, Tensor, Tensor]]


class SplitField:
    """A separable vector field given by its two halves: ``dq = velocity(p)`` and
    ``dp = force(q)``.

    Called as ``f(q, p)`` it is an ordinary :data:`VectorField`; the splitting methods
    (``symplectic_euler``, ``leapfrog``, ``yoshida4``) call the halves apart, so a drift
    costs only ``velocity`` and a kick only ``force``. With a cheap velocity (``p / m``)
    leapfrog is velocity Verlet with one force evaluation a step (under
    :func:`integrate` with ``separable=True``, which reuses each step's last force).

    Args:
        velocity: ``p [*shape] -> dq [*shape]``.
        force: ``q [*shape] -> dp [*shape]``.
    """

    __slots__ = ("force", "velocity")

    def __init__(self, velocity: Callable[[Tensor], Tensor],
                 force: Callable[[Tensor], Tensor]) -> None:
        self.velocity = velocity
        self.force = force

    def __call__(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        return self.velocity(p), self.force(q)


def velocity_half(f: VectorField, q: Tensor, p: Tensor) -> Tensor:
    """``dq`` at ``(q, p)``: the velocity half alone for a :class:`SplitField`."""
    return f.velocity(p) if isinstance(f, SplitField) else f(q, p)[0]


def force_half(f: VectorField, q: Tensor, p: Tensor) -> Tensor:
    """``dp`` at ``(q, p)``: the force half alone for a :class:`SplitField`."""
    return f.force(q) if isinstance(f, SplitField) else f(q, p)[1]


def check_state(q: Tensor, p: Tensor) -> None:
    """Validate a phase-space state before any work.

    Raises:
        ValueError: if ``q``/``p`` are not tensors, differ in shape, dtype or device,
            are not floating point, or hold non-finite values.
    """
    if not isinstance(q, Tensor) or not isinstance(p, Tensor):
        raise ValueError(
            f"q and p must be torch tensors, got {type(q).__name__} and {type(p).__name__}"
        )
    if q.shape != p.shape:
        raise ValueError(f"q and p must have the same shape, got {tuple(q.shape)} and "
                         f"{tuple(p.shape)}")
    if not q.is_floating_point() or q.dtype != p.dtype:
        raise ValueError(f"q and p must share one floating dtype, got {q.dtype} and {p.dtype}")
    if q.device != p.device:
        raise ValueError(f"q and p must be on one device, got {q.device} and {p.device}")
    if not (torch.isfinite(q).all() and torch.isfinite(p).all()):
        raise ValueError("initial state holds non-finite values (nan or inf)")


