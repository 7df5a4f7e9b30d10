"""A damped ("real") pendulum: the ideal pendulum plus linear friction.

The HNN paper's real pendulum is experimental data (Schmidt & Lipson 2009) in which
a little friction makes the energy decay. We simulate it instead:

``dq = ∂H/∂p``, ``dp = −∂H/∂q − γ p`` with ``H = p²/2ml² + mgl(1 − cos q)`` the ideal
pendulum's Hamiltonian (so :meth:`hamiltonian` is the *mechanical energy*, not a
conserved quantity). Equivalently ``q'' + γ q' + (g/l) sin q = 0``.

The energy decays: ``dH/dt = −γ p²/ml² = −2γ T`` with ``T`` the kinetic energy. For
small oscillations ``T`` averages ``H/2`` over a period, so ``H(t) ≈ H(0) e^{−γt}``
(the damped harmonic oscillator); ``γ = 0`` gives back the ideal pendulum exactly.

The class sets ``dissipative = True``: :func:`systems.generate` then skips its
energy-drift check (which would reject every trajectory).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from torch import Tensor

from hogn.graph import GraphBatch
from hogn.integrators import VectorField
from systems.oscillators import Pendulum

__all__ = ["DampedPendulum"]


class DampedPendulum(Pendulum):
    """Pendulum with friction ``dp −= γ p`` (``gamma``, default 0.1 per time unit).

    Parameters and initial states as :class:`~systems.oscillators.Pendulum`
    (``E ~ U(energy_range)``); the energy then decays, roughly as ``e^{−γt}``.
    """

    name = "damped-pendulum"
    separable = False  # the friction force -γ p depends on p
    defaults: ClassVar[dict[str, Any]] = {**Pendulum.defaults, "gamma": 0.1}
    dissipative: ClassVar[bool] = True
    description = ("pendulum with friction dp −= γp (γ = 0.1), H of the ideal pendulum "
                   "decays ≈ e^{−γt}; E(0) ~ U[0.2, 1.5]")

    def _validate(self) -> None:
        super()._validate()
        gamma = self.params["gamma"]
        if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"{self.name}: gamma must be a finite number >= 0, got {gamma!r}")

    def time_derivative(self, q: Tensor, p: Tensor, graph: GraphBatch,
                        create_graph: bool = False) -> tuple[Tensor, Tensor]:
        """Hamilton's equations of the ideal pendulum plus friction ``−γ p`` on ``dp``
        (the surplus coordinates of an embedding keep zero momentum)."""
        dq, dp = super().time_derivative(q, p, graph, create_graph=create_graph)
        return dq, dp - self.params["gamma"] * p

    def analytic_vector_field(self, graph: GraphBatch) -> VectorField:
        """The ideal pendulum's hand-derived field plus friction ``−γ p`` on ``dp``."""
        field = super().analytic_vector_field(graph)
        gamma = float(self.params["gamma"])

        def damped(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
            dq, dp = field(q, p)
            return dq, dp - gamma * p

        return damped
