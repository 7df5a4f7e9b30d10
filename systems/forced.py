"""The forced pendulum: the ideal pendulum driven by an external torque ``u``.

``H = p²/2ml² + mgl(1 − cos q)`` (the ideal pendulum's Hamiltonian, so
:meth:`~ForcedPendulum.hamiltonian` is the *mechanical energy*) and the controlled
Hamilton equations

``dq = ∂H/∂p = p/ml²``, ``dp = −∂H/∂q + g(q) u = −mgl sin q + u``,

with the input matrix ``g(q) = 1``: the torque ``u`` acts directly on the angle's
momentum (a fully actuated pendulum), i.e. ``ml² q'' + mgl sin q = u``.

The control is carried as a node constant: ``c = [m, u]`` (column 0 the mass, column 1
the torque). It is held constant along each trajectory and drawn per trajectory from
``u ~ U(control_range)`` (default ``[−1, 1]``; ``(0, 0)`` or a number ``0`` gives the
ideal pendulum), as SymODEN's training data are made (Zhong, Dey, Chakraborty,
"Symplectic ODE-Net: Learning Hamiltonian Dynamics with Control", ICLR 2020). A
time-varying control is a sequence of segments with ``c[:, 1]`` changed between them.

Energy balance: the torque does work, ``dH/dt = ∂H/∂q q̇ + ∂H/∂p ṗ = u q̇`` (the power
of the torque), so ``H`` is not conserved when ``u ≠ 0``. For a constant ``u`` the
forced dynamics are themselves Hamiltonian with ``H_u = H − u q``
(:meth:`~ForcedPendulum.conserved_energy`), which is conserved. The class sets
``dissipative = True`` so that :func:`systems.generate` skips its drift check of ``H``
(which would reject every forced trajectory), and ``separable = True``: with ``u``
constant in time ``dq`` depends on ``p`` alone and ``dp`` on ``q`` alone, so the
splitting integrators (leapfrog) apply.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from hogn.graph import GraphBatch
from hogn.integrators import VectorField
from systems.base import node_sum, uniform
from systems.oscillators import Pendulum

__all__ = ["CONTROL_COLUMN", "ForcedPendulum"]

CONTROL_COLUMN = 1
"""The column of the node constants ``c = [m, u]`` that holds the torque ``u``."""


class ForcedPendulum(Pendulum):
    """Pendulum driven by a constant torque ``u`` per trajectory (``c = [m, u]``).

    Parameters as :class:`~systems.oscillators.Pendulum` (``mass``, ``g``, ``l``,
    ``energy_range``, ``radius_range``: the initial state is sampled as for the ideal
    pendulum) plus ``control_range``: ``u ~ U(lo, hi)`` per trajectory, or a number
    for one fixed ``u`` (default ``(−1, 1)``, i.e. up to the largest gravity torque
    ``mgl = 1``; with ``|u| > mgl`` there is no equilibrium and the pendulum rotates).
    """

    name = "forced-pendulum"
    separable: ClassVar[bool] = True  # u is constant along a trajectory
    dissipative: ClassVar[bool] = True  # H changes by the torque's work u·Δq
    defaults: ClassVar[dict[str, Any]] = {**Pendulum.defaults, "control_range": (-1.0, 1.0)}
    description = ("pendulum driven by a torque u held per trajectory (c = [m, u], "
                   "u ~ U[−1, 1]), dp = −mgl sin q + u; E(0) ~ U[0.2, 1.5]")

    def _validate(self) -> None:
        super()._validate()
        self._control_range()

    def _control_range(self) -> tuple[float, float]:
        value = self.params["control_range"]
        try:
            lo, hi = (value, value) if isinstance(value, (int, float)) else tuple(value)
            ok = (not isinstance(lo, bool) and not isinstance(hi, bool)
                  and math.isfinite(lo) and math.isfinite(hi) and lo <= hi)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{self.name}: control_range must be a finite number or "
                             f"(lo, hi) with lo <= hi, got {value!r}")
        return float(lo), float(hi)

    # ------------------------------------------------------------------- physics
    def check_graph(self, graph: GraphBatch) -> None:
        super().check_graph(graph)
        if graph.c.dim() != 2 or graph.c.shape[1] != 2:
            raise ValueError(f"{self.name}: node constants must be c = [m, u], [N, 2], got "
                             f"c {list(graph.c.shape)}")

    def control(self, graph: GraphBatch) -> Tensor:
        """The torque of each node, ``u [N, 1]`` (column :data:`CONTROL_COLUMN` of ``c``)."""
        if graph.c.shape[-1] <= CONTROL_COLUMN:
            raise ValueError(f"{self.name}: node constants must be c = [m, u], [N, 2], got "
                             f"c {list(graph.c.shape)}")
        return graph.c[:, CONTROL_COLUMN:CONTROL_COLUMN + 1]

    def _force(self, q: Tensor, graph: GraphBatch) -> Tensor:
        """``g(q) u = u`` on the angle, zero on surplus coordinates, shaped like ``q``."""
        return torch.nn.functional.pad(self.control(graph), (0, q.shape[-1] - 1)).expand_as(q)

    def time_derivative(self, q: Tensor, p: Tensor, graph: GraphBatch,
                        create_graph: bool = False) -> tuple[Tensor, Tensor]:
        """Hamilton's equations of the ideal pendulum by autograd plus the torque ``u`` on
        ``dp`` (the surplus coordinates of an embedding feel no torque).

        Args:
            q: Angles ``[..., N, d]``.
            p: Angular momenta ``[..., N, d]``.
            graph: Static graph with ``c = [m, u]``.
            create_graph: Keep the graph of the derivative.

        Returns:
            ``(dq, dp)``, each shaped like ``q``.
        """
        dq, dp = super().time_derivative(q, p, graph, create_graph=create_graph)
        return dq, dp + self._force(q, graph)

    def _native_field(self, graph: GraphBatch) -> VectorField:
        """``dq = p / ml²``, ``dp = −mgl sin q + u``."""
        field = super()._native_field(graph)
        u = self.control(graph)

        def forced(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
            dq, dp = field(q, p)
            return dq, dp + u

        return forced

    def power(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """The torque's power ``dH/dt = u q̇ = u p / ml²`` per graph.

        Args:
            q: Angles ``[..., N, d]`` (unused: the power depends on ``p`` alone).
            p: Angular momenta ``[..., N, d]``.
            graph: Static graph with ``c = [m, u]``.

        Returns:
            ``[..., G]``.
        """
        del q
        m, l = graph.c[:, 0], self.params["l"]
        return node_sum(self.control(graph)[:, 0] * p[..., 0] / (m * l**2), graph)

    def conserved_energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """``H_u = H − u q`` per graph: the Hamiltonian of the forced dynamics for a
        constant ``u`` (conserved along them; ``H`` itself changes by ``u Δq``).

        Args:
            q: Angles ``[..., N, d]``.
            p: Angular momenta ``[..., N, d]``.
            graph: Static graph with ``c = [m, u]``.

        Returns:
            ``[..., G]``.
        """
        work = node_sum(self.control(graph)[:, 0] * q[..., 0], graph)
        return self.hamiltonian(q, p, graph) - work

    # ------------------------------------------------------------------ sampling
    def _sample(self, sizes: list[int], generator: torch.Generator
                ) -> tuple[Tensor, Tensor, Tensor]:
        q, p, c = super()._sample(sizes, generator)
        u = uniform(generator, (len(sizes), 1), *self._control_range())
        return q, p, torch.cat([c, u], -1)
