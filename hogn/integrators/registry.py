"""The registry of one-step methods: :class:`Integrator` (a step function with its
declared order, symplecticity and cost), :func:`register`, lookup by name and the check
that a method fits a (non-)separable field."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from hogn.integrators.fields import CachedStepFn, StepFn, VectorField

__all__ = ["ConvergenceError", "Integrator", "compatible", "get", "names", "register",
           "require_fit"]


class ConvergenceError(RuntimeError):
    """An implicit step whose stage equations did not converge within the iteration
    cap; the message names the method, the iterations, the last change and (from
    :func:`integrate`) the step. The state is never returned half-solved."""


@dataclass(frozen=True)
class Integrator:
    """A one-step method with its declared properties.

    Attributes:
        name: Registry name.
        order: Global order of accuracy (error ``O(dt**order)`` over a fixed time),
            on every vector field it is allowed on (see ``needs_separable``).
        symplectic: Whether the map is symplectic for every Hamiltonian it is
            allowed on.
        evaluations: Vector-field evaluations per step; for an implicit method, per
            fixed-point iteration (the stages), plus one for the starting guess.
        step_fn: ``step(f, q, p, dt) -> (q_next, p_next)``.
        needs_separable: The method is only correct (of its order, symplectic) for a
            separable ``H = T(p) + V(q)``: explicit splitting methods.
        implicit: The stages are solved iteratively (options: :meth:`with_options`).
        cached_step: For a splitting method, the same step reusing the last kick of
            the previous step (first same as last), used by :func:`integrate` when the
            field is declared separable: leapfrog then costs 2 evaluations per step
            instead of 3, yoshida4 6 instead of 9.
    """

    name: str
    order: int
    symplectic: bool
    evaluations: int
    step_fn: StepFn
    needs_separable: bool = False
    implicit: bool = False
    cached_step: CachedStepFn | None = None

    def step(self, f: VectorField, q: Tensor, p: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        """Advance ``(q, p)`` by one step of size ``dt``.

        Args:
            f: Vector field ``f(q, p) -> (dq, dp)``.
            q: Positions, any shape ``[..., d]``.
            p: Momenta, same shape as ``q``.
            dt: Step size (may be negative to integrate backwards).

        Returns:
            ``(q_next, p_next)`` with the shapes of ``q`` and ``p``.

        Raises:
            ConvergenceError: an implicit method's stages did not converge.
        """
        return self.step_fn(f, q, p, dt)

    __call__ = step

    def fits(self, separable: bool) -> bool:
        """Whether the method is valid for a vector field that is (or is not) separable."""
        return separable or not self.needs_separable

    def with_options(self, tol: float | None = None, max_iterations: int | None = None
                     ) -> Integrator:
        """This implicit method with another stage tolerance or iteration cap.

        Args:
            tol: Relative tolerance of the fixed-point iteration (default: ten times
                the machine epsilon of the state's dtype).
            max_iterations: Iteration cap; breaching it raises :class:`ConvergenceError`.

        Returns:
            A new :class:`Integrator` (not registered) usable wherever a name is.

        Raises:
            ValueError: for an explicit method or an invalid option.
        """
        if not self.implicit:
            raise ValueError(f"{self.name} is explicit and takes no solver options")
        options: dict[str, Any] = {}
        if tol is not None:
            if not (isinstance(tol, (int, float)) and math.isfinite(tol) and 0 < tol < 1):
                raise ValueError(f"tol must be a number in (0, 1), got {tol!r}")
            options["tol"] = float(tol)
        if max_iterations is not None:
            if not isinstance(max_iterations, int) or max_iterations < 1:
                raise ValueError(f"max_iterations must be a positive int, got "
                                 f"{max_iterations!r}")
            options["max_iterations"] = max_iterations
        return dataclasses.replace(self, step_fn=functools.partial(self.step_fn, **options))


_REGISTRY: dict[str, Integrator] = {}


def register(
    name: str, order: int, symplectic: bool, evaluations: int, needs_separable: bool = False,
    implicit: bool = False, cached_step: CachedStepFn | None = None,
) -> Callable[[StepFn], StepFn]:
    """Decorator adding a step function to the registry under ``name``."""

    def wrap(fn: StepFn) -> StepFn:
        if name in _REGISTRY:
            raise ValueError(f"integrator {name!r} is already registered")
        _REGISTRY[name] = Integrator(name, order, symplectic, evaluations, fn,
                                     needs_separable, implicit, cached_step)
        return fn

    return wrap


def names() -> list[str]:
    """Names of all registered integrators, sorted."""
    return sorted(_REGISTRY)


def get(name: str | Integrator) -> Integrator:
    """Look up an integrator by name.

    Raises:
        ValueError: if ``name`` is not registered; the message lists the valid names.
    """
    if isinstance(name, Integrator):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown integrator {name!r}; expected one of: {', '.join(names())}"
        ) from None


def compatible(separable: bool) -> list[str]:
    """Names of the registered integrators valid for a vector field that is (or is
    not) separable, sorted."""
    return [n for n in names() if _REGISTRY[n].fits(separable)]


def require_fit(method: str | Integrator, separable: bool, what: str = "this vector field"
                ) -> Integrator:
    """The integrator, after checking that it is valid for ``what``.

    Args:
        method: Integrator name or instance.
        separable: Whether ``what`` is separable, ``H = T(p) + V(q)``.
        what: How the error message names the vector field.

    Raises:
        ValueError: for an unknown name, or a method that needs a separable ``H`` on
            a non-separable field (the message lists the methods that fit).
    """
    integrator = get(method)
    if not integrator.fits(separable):
        symplectic = [n for n in compatible(False) if _REGISTRY[n].symplectic]
        others = [n for n in compatible(False) if not _REGISTRY[n].symplectic]
        raise ValueError(
            f"{integrator.name} is a splitting method, correct only for a separable "
            f"H = T(p) + V(q), and {what} is not separable (its order would drop to 1 and "
            f"it would not be symplectic); use a symplectic method for any H: "
            f"{', '.join(symplectic)}, or an explicit one: {', '.join(others)}")
    return integrator


