"""Damped oscillators: the ideal pendulum and mass-spring plus linear friction.

The HNN paper's real pendulum is experimental data (Schmidt & Lipson 2009) in which
a little friction makes the energy decay. We simulate it instead:

``dq = ∂H/∂p``, ``dp = −∂H/∂q − γ p`` with ``H = p²/2ml² + mgl(1 − cos q)`` the ideal
pendulum's Hamiltonian (so :meth:`hamiltonian` is the *mechanical energy*, not a
conserved quantity). Equivalently ``q'' + γ q' + (g/l) sin q = 0``.

The energy decays: ``dH/dt = −γ p²/ml² = −2γ T`` with ``T`` the kinetic energy. For
small oscillations ``T`` averages ``H/2`` over a period, so ``H(t) ≈ H(0) e^{−γt}``
(the damped harmonic oscillator); ``γ = 0`` gives back the ideal pendulum exactly.

The damped mass-spring is that oscillator exactly: ``H = p²/2m + k q²/2`` and
``dp = −k q − γ p``, i.e. ``q'' + γ q' + (k/m) q = 0``, solved by
``q(t) = e^{−γt/2} (q₀ cos ω_d t + (q₀' + γ q₀/2)/ω_d sin ω_d t)`` with
``ω_d = √(k/m − γ²/4)`` (underdamped).

Both write the friction as the gradient of a dissipation function (the Helmholtz
split that a dissipative Hamiltonian network learns): ``dq = ∂H/∂p + ∂D/∂q``,
``dp = −∂H/∂q + ∂D/∂p`` with ``D(p) = −γ |p|²/2`` (:meth:`dissipation`), so
``∂D/∂q = 0`` and ``∂D/∂p = −γ p``.

The classes set ``dissipative = True``: :func:`systems.generate` then skips its
energy-drift check (which would reject every trajectory).
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from hogn import checks
from hogn.graph import GraphBatch
from hogn.integrators import VectorField
from systems.base import System, node_sum
from systems.oscillators import MassSpring, Pendulum

__all__ = ["DampedMassSpring", "DampedPendulum"]


class _LinearFriction(System):
    """Mixin over an ideal oscillator: friction ``−γ p`` added to ``dp``.

    Put it first among the bases (``class X(_LinearFriction, Ideal)``): its methods
    call the ideal system's through ``super()``. The parameter ``gamma`` must be in
    the subclass's ``defaults``.
    """

    separable: ClassVar[bool] = False  # the friction force −γ p depends on p
    dissipative: ClassVar[bool] = True

    def _validate(self) -> None:
        super()._validate()
        checks.nonnegative_float(self.params["gamma"], f"{self.name}: gamma")

    def time_derivative(self, q: Tensor, p: Tensor, graph: GraphBatch,
                        create_graph: bool = False) -> tuple[Tensor, Tensor]:
        """Hamilton's equations of the ideal oscillator plus friction ``−γ p`` on ``dp``
        (the surplus coordinates of an embedding keep zero momentum)."""
        dq, dp = super().time_derivative(q, p, graph, create_graph=create_graph)
        return dq, dp - self.params["gamma"] * p

    def analytic_vector_field(self, graph: GraphBatch) -> VectorField:
        """The ideal oscillator's hand-derived field plus friction ``−γ p`` on ``dp``."""
        field = super().analytic_vector_field(graph)
        gamma = float(self.params["gamma"])

        def damped(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
            dq, dp = field(q, p)
            return dq, dp - gamma * p

        return damped

    def dissipation(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """The dissipation function ``D = −γ Σ |p|²/2`` of each graph, whose gradient is
        the friction: ``∂D/∂p = −γ p``, ``∂D/∂q = 0``.

        Args:
            q: Positions ``[..., N, d]`` (unused: the friction does not depend on them).
            p: Momenta ``[..., N, d]``.
            graph: Static graph.

        Returns:
            ``D [..., G]`` (never positive).
        """
        del q
        return node_sum(-0.5 * self.params["gamma"] * p.square().sum(-1), graph)


class DampedPendulum(_LinearFriction, Pendulum):
    """Pendulum with friction ``dp −= γ p`` (``gamma``, default 0.1 per time unit).

    Parameters and initial states as :class:`~systems.oscillators.Pendulum`
    (``E ~ U(energy_range)``); the energy then decays, roughly as ``e^{−γt}``.
    """

    name = "damped-pendulum"
    defaults: ClassVar[dict[str, Any]] = {**Pendulum.defaults, "gamma": 0.1}
    description = ("pendulum with friction dp −= γp (γ = 0.1), H of the ideal pendulum "
                   "decays ≈ e^{−γt}; E(0) ~ U[0.2, 1.5]")


class DampedMassSpring(_LinearFriction, MassSpring):
    """Mass on a spring with friction ``dp −= γ p`` (``gamma``, default 0.1 per time
    unit): the damped harmonic oscillator ``q'' + γ q' + (k/m) q = 0``.

    Parameters and initial states as :class:`~systems.oscillators.MassSpring`
    (``E ~ U(energy_range)``, or ``radius_range``); the energy then decays with
    ``dH/dt = −γ p²/m``, on average as ``e^{−γt}``.
    """

    name = "damped-mass-spring"
    defaults: ClassVar[dict[str, Any]] = {**MassSpring.defaults, "gamma": 0.1}
    description = ("mass on a spring with friction dp −= γp (γ = 0.1), H = p²/2m + kq²/2 "
                   "decays ≈ e^{−γt}; E(0) ~ U[0.2, 1]")
