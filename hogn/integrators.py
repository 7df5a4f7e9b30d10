"""Fixed-step integrators for Hamiltonian vector fields, in a registry.

Every integrator advances a state ``(q, p)`` by one step of a vector field
``f(q, p) -> (dq, dp)`` and returns the *next state*, never an increment::

    step = hogn.integrators.get("leapfrog")
    q1, p1 = step(f, q0, p0, dt)

Tensors may have any shape as long as ``q`` and ``p`` agree with what ``f``
expects; the steppers are elementwise in the state, so a batch of many graphs
concatenated along the node axis (``q [N_total, d]``) is stepped in one call.

Which method for which Hamiltonian:

- ``symplectic_euler``, ``leapfrog`` and ``yoshida4`` are *splitting* methods: they
  assume a separable ``H = T(p) + V(q)`` (``dq`` depends on ``p`` only, ``dp`` on
  ``q`` only). On a non-separable ``H``, such as any learned one (HOGN, HNN feed
  ``q`` and ``p`` through one network), they are neither symplectic nor of their
  order: leapfrog and yoshida4 drop to first order. They declare
  ``needs_separable=True``; :func:`integrate` refuses them for ``separable=False``
  and every model refuses them unless its ``H`` is separable.
- ``implicit_midpoint``, ``gauss4`` and ``gauss6`` (Gauss–Legendre collocation with
  1, 2 and 3 stages, orders 2, 4 and 6) are symplectic for *any* ``H`` and preserve
  every quadratic invariant exactly. They are implicit: their stages are solved by
  fixed-point iteration (see :func:`gauss_step`), and they are differentiable (by
  the implicit-function theorem), so a model can be trained through them.
- ``euler``, ``rk2``, ``rk4`` and ``gbs8`` are explicit, valid for any vector field,
  and not symplectic (their energy error grows secularly).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "ConvergenceError",
    "Integrator",
    "SplitField",
    "VectorField",
    "check_state",
    "compatible",
    "gauss_step",
    "get",
    "integrate",
    "integrate_adaptive",
    "names",
    "register",
    "require_fit",
]

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


def _velocity(f: VectorField, q: Tensor, p: Tensor) -> Tensor:
    """``dq`` at ``(q, p)``: the velocity half alone for a :class:`SplitField`."""
    return f.velocity(p) if isinstance(f, SplitField) else f(q, p)[0]


def _force(f: VectorField, q: Tensor, p: Tensor) -> Tensor:
    """``dp`` at ``(q, p)``: the force half alone for a :class:`SplitField`."""
    return f.force(q) if isinstance(f, SplitField) else f(q, p)[1]


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


@register("euler", order=1, symplectic=False, evaluations=1)
def euler(f: VectorField, q: Tensor, p: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """Explicit (forward) Euler."""
    dq, dp = f(q, p)
    return q + dt * dq, p + dt * dp


@register("symplectic_euler", order=1, symplectic=True, evaluations=2,
          needs_separable=True)
def symplectic_euler(f: VectorField, q: Tensor, p: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """Symplectic Euler: kick ``p`` with the force at ``q``, then drift ``q``."""
    p = p + dt * _force(f, q, p)
    return q + dt * _velocity(f, q, p), p


def _leapfrog_cached(f: VectorField, q: Tensor, p: Tensor, dt: float, force: Tensor | None
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """Kick–drift–kick reusing ``force = dp(q)`` from the previous step's last kick."""
    if force is None:
        force = _force(f, q, p)
    p = p + 0.5 * dt * force
    q = q + dt * _velocity(f, q, p)
    force = _force(f, q, p)
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
    p = p + 0.5 * dt * _force(f, q, p)
    q = q + dt * _velocity(f, q, p)
    return q, p + 0.5 * dt * _force(f, q, p)


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


_CBRT2 = 2.0 ** (1.0 / 3.0)
_YOSHIDA4 = (1.0 / (2.0 - _CBRT2), -_CBRT2 / (2.0 - _CBRT2), 1.0 / (2.0 - _CBRT2))


@register("yoshida4", order=4, symplectic=True, evaluations=9, needs_separable=True,
          cached_step=_yoshida4_cached)
def yoshida4(f: VectorField, q: Tensor, p: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """Yoshida's fourth-order symplectic method: three leapfrog steps of
    ``w1 dt, w0 dt, w1 dt`` with ``w1 = 1/(2 - 2^(1/3))``, ``w0 = 1 - 2 w1``."""
    for w in _YOSHIDA4:
        q, p = leapfrog(f, q, p, w * dt)
    return q, p


# ---------------------------------------------------------------- Gauss–Legendre
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


_GBS_SEQUENCE = (2, 4, 6, 8)


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


def _gbs_table(f: VectorField, q: Tensor, p: Tensor, dt: float | Tensor
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gragg–Bulirsch–Stoer extrapolation; returns the order-8 state and the order-6
    diagonal entry below it, whose difference estimates the local error."""
    dq0, dp0 = f(q, p)
    table: list[tuple[Tensor, Tensor]] = []
    for j, n in enumerate(_GBS_SEQUENCE):
        row = [_modified_midpoint(f, q, p, dq0, dp0, dt, n)]
        for k in range(1, j + 1):
            ratio = (n / _GBS_SEQUENCE[j - k]) ** 2 - 1.0
            (aq, ap), (bq, bp) = row[k - 1], table[k - 1]
            row.append((aq + (aq - bq) / ratio, ap + (ap - bp) / ratio))
        previous, table = table, row
    return table[-1][0], table[-1][1], previous[-1][0], previous[-1][1]


@register("gbs8", order=8, symplectic=False, evaluations=1 + sum(_GBS_SEQUENCE))
def gbs8(f: VectorField, q: Tensor, p: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """Gragg–Bulirsch–Stoer extrapolation of the modified midpoint rule with the
    fixed step sequence 2, 4, 6, 8: an explicit eighth-order method (21 evaluations),
    used for ground-truth simulation (see :func:`integrate_adaptive`)."""
    q1, p1, _, _ = _gbs_table(f, q, p, dt)
    return q1, p1


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


@functools.lru_cache(maxsize=8)
def _dop853_tableau(dtype: torch.dtype, device: torch.device
                    ) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
    """Dormand–Prince 8(5,3) coefficients, taken from scipy (which ships them) rather
    than retyped, laid out for one matrix product per stage.

    Returns:
        ``(rows, b, e)``: ``rows[s - 1] = A[s, :s]`` as ``[1, s]`` for the stages
        ``s = 1 … 11``, the weights ``B [1, 12]``, and the fifth- and third-order
        error weights stacked as ``e [2, 13]`` (the last column weighs the field at
        the new state).
    """
    try:
        from scipy.integrate._ivp import dop853_coefficients as dop
    except ImportError as exc:  # pragma: no cover - scipy is a dependency
        raise ImportError("the adaptive ground-truth integrator needs scipy's DOP853 "
                          "coefficients: pip install scipy") from exc
    n = dop.N_STAGES

    def as_tensor(x: Any) -> Tensor:
        return torch.as_tensor(x, dtype=dtype, device=device)

    a = as_tensor(dop.A[:n, :n])
    rows = tuple(a[s:s + 1, :s].contiguous() for s in range(1, n))
    return rows, as_tensor(dop.B)[None], torch.stack([as_tensor(dop.E5), as_tensor(dop.E3)])


class _Dop853:
    """Dormand–Prince 8(5,3) steps on a flat state ``x = [q, p] [N, 2d]`` with
    preallocated stage buffers and their views made once (per working-set size),
    so that a stage costs one matrix product, the field, and two scaled writes.

    Attributes:
        hk: Stage increments ``h · k``, ``[13, N, 2d]``.
        xs: The stage state ``[N, 2d]`` handed to the field (reused every stage).
    """

    def __init__(self, x: Tensor) -> None:
        self.rows, self.b, self.e = _dop853_tableau(x.dtype, x.device)
        d = x.shape[-1] // 2
        self.d = d
        self.hk = x.new_empty((13, *x.shape))
        self.flat = self.hk.view(13, -1)
        self.heads = [self.flat[:s] for s in range(1, 13)]
        self.hq = [self.hk[s, :, :d] for s in range(13)]
        self.hp = [self.hk[s, :, d:] for s in range(13)]
        self.xs = x.new_empty(x.shape)
        self.xs_flat, self.xs_q, self.xs_p = self.xs.view(1, -1), self.xs[:, :d], self.xs[:, d:]

    def step(self, f: VectorField, x: Tensor, k0: Tensor, hn: Tensor
             ) -> tuple[Tensor, Tensor, Tensor]:
        """One step of size ``hn [N, 1]`` per node from ``x [N, 2d]`` with
        ``k0 = [dq, dp] [N, 2d]`` the field at ``x``.

        Returns:
            The new state ``[N, 2d]``, the field there ``[N, 2d]`` (first stage of the
            next step, first same as last) and the fifth- and third-order error
            estimates ``[2, N, 2d]``, already times ``h``.
        """
        xf = x.view(1, -1)
        torch.mul(k0, hn, out=self.hk[0])
        for s in range(1, 12):
            torch.addmm(xf, self.rows[s - 1], self.heads[s - 1], out=self.xs_flat)
            dq, dp = f(self.xs_q, self.xs_p)
            torch.mul(dq, hn, out=self.hq[s])
            torch.mul(dp, hn, out=self.hp[s])
        x_new = torch.addmm(xf, self.b, self.heads[11]).view(x.shape)
        d = self.d
        k_new = torch.cat(f(x_new[:, :d], x_new[:, d:]), -1)
        torch.mul(k_new, hn, out=self.hk[12])
        return x_new, k_new, torch.mm(self.e, self.flat).view(2, *x.shape)


StopFn = Callable[[Tensor, Tensor], Tensor]
Restrict = Callable[[Tensor], tuple[VectorField, "StopFn | None"]]


class _Graphs:
    """Per-graph reductions and per-node expansion over the working set of graphs.

    Graphs of one size ``n`` (the common case: every system but the any-``N`` ones
    drawn with a size range) reduce by a reshape to ``[G, n·k]``; others by scatter.

    Attributes:
        local: Working graph of each working node, ``[N]``.
        num: Working graphs ``G``.
        size: The common node count, or ``None``.
        sizes: Node count of each working graph, ``[G]``.
        width: Values per graph in the RMS error norm (``n · 2d``), ``[G]``, or
            ``None`` when all graphs share one (it is then folded into the scale).
    """

    def __init__(self, local: Tensor, num: int, size: int | None, sizes: Tensor,
                 width: Tensor | None) -> None:
        self.local, self.num, self.size, self.sizes, self.width = local, num, size, sizes, width

    @classmethod
    def of(cls, batch: Tensor, num_graphs: int, k: int, dtype: torch.dtype) -> _Graphs:
        """The graphs of ``batch [N]`` (graph index per node, grouped in order), with
        ``k`` values per node."""
        sizes = torch.bincount(batch, minlength=num_graphs)
        uniform = num_graphs > 0 and bool((sizes == sizes[0]).all()) and int(sizes[0]) > 0
        return cls(batch, num_graphs, int(sizes[0]) if uniform else None, sizes,
                   None if uniform else (sizes * k).to(dtype))

    def expand(self, v: Tensor) -> Tensor:
        """Per-graph ``v [G]`` to per-node ``[N]``."""
        return v if self.size == 1 else v.index_select(0, self.local)

    def sum(self, v: Tensor) -> Tensor:
        """Sum ``v [..., N, k]`` over each graph's nodes and components: ``[..., G]``."""
        if self.size is not None:  # a product with ones: faster than a short sum()
            v = v.view(*v.shape[:-2], self.num, -1)
            return torch.matmul(v, v.new_ones(v.shape[-1]))
        from hogn.graph import segment_sum

        return segment_sum(v.sum(-1), self.local, self.num, dim=-1)

    def amax(self, v: Tensor) -> Tensor:
        """Maximum of ``v [N, k]`` over each graph's nodes and components: ``[G]``."""
        if self.size is not None:
            return v.view(self.num, -1).amax(-1)
        from hogn.graph import segment_max

        return segment_max(v.amax(-1), self.local, self.num, dim=0)

    def select(self, keep: Tensor) -> tuple[_Graphs, Tensor]:
        """The working set restricted to the graphs ``keep [G]`` (bool), and the node
        mask ``[N]`` of their nodes."""
        node_keep = self.expand(keep)
        local = (torch.cumsum(keep, 0) - 1)[self.local[node_keep]]
        return _Graphs(local, int(keep.sum()), self.size, self.sizes[keep],
                       None if self.width is None else self.width[keep]), node_keep


def integrate_adaptive(
    f: VectorField,
    q0: Tensor,
    p0: Tensor,
    dt: float,
    steps: int,
    batch: Tensor,
    num_graphs: int,
    rtol: float = 1e-11,
    atol: float = 1e-11,
    h0: float | None = None,
    stop: StopFn | None = None,
    restrict: Restrict | None = None,
    method: str = "dop853",
    max_iterations: int = 1_000_000,
    progress: bool | str = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Integrate with an eighth-order adaptive method and a step size per graph.

    Every graph keeps its own clock and step size, controlled by its local error
    estimate so that it stays within ``atol + rtol * |x|`` (per component).
    All graphs advance together in one batched call per trial step, each clipping its
    step to land exactly on its own next saved time. A close encounter in one graph
    thus costs extra steps without shrinking the others'. When ``restrict`` is
    given, the batch is compacted to the graphs still running whenever fewer than
    half of them are, so a few slow graphs do not drag the finished ones along.

    The loop runs without autograd recording (``f`` may still use autograd inside,
    as :meth:`systems.System.time_derivative` does) on one flat state ``[q, p]`` with
    preallocated stage buffers, and reduces per graph by a reshape when all graphs
    have one size: for small systems its cost is the number of tensor operations per
    step, which this keeps low.

    Args:
        f: Vector field ``f(q, p) -> (dq, dp)`` on ``q, p [N, d]``.
        q0: Initial positions ``[N, d]``.
        p0: Initial momenta ``[N, d]``.
        dt: Time between saved states (> 0).
        steps: Number of saved steps ``T``.
        batch: Graph index of each node, ``[N]``, nodes grouped by graph in order.
        num_graphs: Number of graphs ``G``.
        rtol: Relative tolerance per step.
        atol: Absolute tolerance per step.
        h0: First trial step (default ``dt``).
        stop: Optional ``stop(q, p) -> bool [G]`` checked after every accepted step;
            a graph for which it holds is frozen and reported as stopped (its later
            saved states are NaN).
        restrict: Optional ``restrict(graph_ids) -> (f, stop)`` giving the vector
            field (and stop test) of the sub-batch of the given graphs (ascending ids,
            nodes in their original order), used to compact the batch.
        method: ``"dop853"`` (Dormand–Prince 8(5,3), 12 evaluations per step, error
            norm as scipy's: RMS over each graph's components) or ``"gbs8"`` (21
            evaluations, max-norm error of the order-8 and order-6 extrapolants).
        max_iterations: Give up (``RuntimeError``) after this many trial steps.
        progress: Show a tqdm bar over the saved steps of the slowest graph.

    Returns:
        ``(q, p, n_steps, stopped)``: states ``[T + 1, N, d]``, accepted steps per
        graph ``[G]`` and the stopped mask ``[G]``.
    """
    check_state(q0, p0)
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive finite number, got {dt!r}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if method not in ("dop853", "gbs8"):
        raise ValueError(f"unknown adaptive method {method!r}; expected dop853 or gbs8")
    if q0.dim() != 2 or batch.shape != q0.shape[:1]:
        raise ValueError(f"adaptive integration needs q [N, d] and batch [N], got "
                         f"{tuple(q0.shape)} and {tuple(batch.shape)}")
    with torch.no_grad():
        return _adaptive_loop(f, q0, p0, float(dt), steps, batch.to(q0.device), num_graphs,
                              rtol, atol, h0, stop, restrict, method, max_iterations,
                              progress)


def _adaptive_loop(f: VectorField, q0: Tensor, p0: Tensor, dt: float, steps: int,
                   batch: Tensor, num_graphs: int, rtol: float, atol: float,
                   h0: float | None, stop: StopFn | None, restrict: Restrict | None,
                   method: str, max_iterations: int, progress: bool | str
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The body of :func:`integrate_adaptive` (arguments checked, autograd off).

    Working-set conventions that save operations per step: a graph that no longer
    runs has ``remaining = 0`` (so its trial step is 0 and its state stays put), and
    every step writes every node's state to the output, at its saved index where
    the graph just reached a saved time and to a spare row (dropped) elsewhere.
    """
    dtype, device = q0.dtype, q0.device
    d = q0.shape[-1]
    x = torch.cat([q0, p0], -1)  # [N, 2d]
    out = torch.full((steps + 2, *x.shape), float("nan"), dtype=dtype, device=device)
    out[0] = x
    n_steps = torch.zeros(num_graphs, dtype=torch.long, device=device)
    stopped = torch.zeros(num_graphs, dtype=torch.bool, device=device)
    graphs = _Graphs.of(batch, num_graphs, 2 * d, dtype)
    # with one size per graph the RMS norm's 1/sqrt(width) goes into the scale
    root = math.sqrt(2 * d * graphs.size) if graphs.width is None else 1.0
    atol_s, rtol_s = atol * root, rtol * root
    # working set: graphs still integrated (global ids), their nodes and state
    ids = torch.arange(num_graphs, device=device)
    nodes = torch.arange(x.shape[0], device=device)
    h = torch.full((num_graphs,), float(h0 or dt), dtype=dtype, device=device)
    saved = torch.zeros(num_graphs, dtype=torch.long, device=device)  # last saved index
    halted = torch.zeros(num_graphs, dtype=torch.bool, device=device)
    accepted = torch.zeros(num_graphs, dtype=torch.long, device=device)
    active = saved < steps
    remaining = torch.full((num_graphs,), dt, dtype=dtype, device=device) * active
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=progress if isinstance(progress, str) else method,
                   leave=False, disable=None)
    dop = method == "dop853"
    exponent = -1.0 / 7.0  # gbs8's step-size exponent (dop853's -1/8 is written out)
    stepper = _Dop853(x) if dop else None
    k0 = torch.cat(f(x[:, :d], x[:, d:]), -1) if dop else None
    n_active = int(torch.count_nonzero(active))
    for _ in range(max_iterations):
        if n_active == 0:
            break
        if restrict is not None and n_active <= graphs.num // 2:
            n_steps[ids], stopped[ids] = accepted, halted
            keep = active
            graphs, node_keep = graphs.select(keep)
            ids, nodes, x = ids[keep], nodes[node_keep], x[node_keep]
            h, remaining, saved = h[keep], remaining[keep], saved[keep]
            halted, accepted, active = halted[keep], accepted[keep], active[keep]
            f, stop = restrict(ids)
            if dop:
                k0, stepper = k0[node_keep], _Dop853(x)
        h_try = torch.minimum(h, remaining)
        last = h >= remaining
        hn = graphs.expand(h_try).unsqueeze(1)
        if dop:
            x_new, k_new, e = stepper.step(f, x, k0, hn)
            scale = torch.maximum(x.abs(), x_new.abs()).mul_(rtol_s).add_(atol_s)
            s5, s3 = graphs.sum(e.div_(scale).square_()).unbind(0)
            if graphs.width is not None:
                s5, s3 = s5 / graphs.width, s3 / graphs.width
            err = s5 / torch.add(s5, s3, alpha=0.01).sqrt_().clamp_min_(1e-300)
        else:
            q_hi, p_hi, q_lo, p_lo = _gbs_table(f, x[:, :d], x[:, d:], hn)
            x_new, k_new = torch.cat([q_hi, p_hi], -1), None
            scale = torch.maximum(x.abs(), x_new.abs()).mul_(rtol).add_(atol)
            err = graphs.amax((x_new - torch.cat([q_lo, p_lo], -1)).abs_().div_(scale))
        err = torch.nan_to_num_(err, nan=float("inf"))
        ok = err <= 1.0  # also true for graphs that no longer run (h = 0, x_new = x)
        accept = ok & active
        if bool(ok.all()):  # the common case: no step rejected
            x, k0 = x_new, k_new
        else:
            ok_node = graphs.expand(ok).unsqueeze(1)
            x = torch.where(ok_node, x_new, x)
            if dop:  # first same as last: the field at the new state
                k0 = torch.where(ok_node, k_new, k0)
        accepted += accept
        # 0.9 err^(-1/8) as three square roots of err / 0.9^8 (pow is much slower);
        # err = 0 gives inf, clamped to the largest growth
        growth = (err.mul_(0.9**-8).sqrt_().sqrt_().rsqrt_() if dop
                  else err.clamp_min_(1e-10).pow_(exponent).mul_(0.9))
        h_new = h_try * growth.clamp_(0.2, 4.0)
        reached = accept & last
        # a step clipped to land on the saved time says nothing against the old size
        h = torch.where(reached, torch.maximum(h, h_new), h_new)
        remaining = torch.where(reached, dt, remaining - h_try * accept)
        if stop is not None:
            halted |= accept & stop(x[:, :d], x[:, d:])
            reached &= ~halted
        saved += reached
        row = graphs.expand(torch.where(reached, saved, steps + 1))
        out.index_put_((row, nodes), x)
        active = saved < steps
        if stop is not None:
            active &= ~halted
        remaining.mul_(active)
        n_active = int(torch.count_nonzero(active))
        if bar is not None:
            bar.update(max(int(saved.min()) - bar.n, 0))
    else:
        raise RuntimeError(f"adaptive integration exceeded {max_iterations} trial steps; "
                           "the system may be singular (a close encounter?)")
    n_steps[ids], stopped[ids] = accepted, halted
    if bar is not None:
        bar.close()
    out = out[: steps + 1]
    return out[..., :d].contiguous(), out[..., d:].contiguous(), n_steps, stopped
