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

The package holds one concept per file: :mod:`~hogn.integrators.fields` (vector fields,
:class:`SplitField`, the state check), :mod:`~hogn.integrators.registry` (the
:class:`Integrator` record, :func:`register`, :func:`get`), the method families
(:mod:`~hogn.integrators.runge_kutta`, :mod:`~hogn.integrators.splitting`,
:mod:`~hogn.integrators.gauss`, :mod:`~hogn.integrators.extrapolation`), and the two
drivers: :func:`integrate` (:mod:`~hogn.integrators.fixed_step`) and
:func:`integrate_adaptive` (:mod:`~hogn.integrators.adaptive`). Importing the package
registers every method.
"""

from __future__ import annotations

from hogn.integrators.adaptive import integrate_adaptive
from hogn.integrators.extrapolation import gbs8
from hogn.integrators.fields import SplitField, VectorField, check_state
from hogn.integrators.fixed_step import integrate
from hogn.integrators.gauss import GAUSS_TABLEAUX, gauss4, gauss6, gauss_step, implicit_midpoint
from hogn.integrators.registry import (
    ConvergenceError,
    Integrator,
    compatible,
    get,
    names,
    register,
    require_fit,
)
from hogn.integrators.runge_kutta import euler, rk2, rk4
from hogn.integrators.splitting import leapfrog, symplectic_euler, yoshida4

__all__ = [
    "GAUSS_TABLEAUX",
    "ConvergenceError",
    "Integrator",
    "SplitField",
    "VectorField",
    "check_state",
    "compatible",
    "euler",
    "gauss4",
    "gauss6",
    "gauss_step",
    "gbs8",
    "get",
    "implicit_midpoint",
    "integrate",
    "integrate_adaptive",
    "leapfrog",
    "names",
    "register",
    "require_fit",
    "rk2",
    "rk4",
    "symplectic_euler",
    "yoshida4",
]
