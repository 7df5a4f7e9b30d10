"""A potential model for molecular dynamics: ``H = Σ_i |p_i|² / 2 m_i + V_θ(q)``.

The kinetic energy is known (the masses are node constants), so only the potential
``V_θ`` is learned, by a graph network over the relative geometry of positions (no
momenta). Consequences:

- ``dq = p / m`` exactly; ``dp = −∂V/∂q`` are the forces, which depend on ``q`` alone:
  the model is separable, and the splitting integrators step it.
- Leapfrog (kick–drift–kick, i.e. velocity Verlet) needs one force evaluation a step:
  :meth:`PotentialHOGN.rollout_field` hands the integrator the velocity and the force
  apart (:class:`hogn.integrators.SplitField`), so the drift costs no network call.
- Trained on the derivative target, the ``dq`` half of the loss is zero by
  construction: forces alone train ``V`` (up to a constant).
- :mod:`hogn.ase` wraps a trained model as an ASE calculator (energy ``V``, forces).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from hogn import energy_gradient, integrators
from hogn.graph import GraphBatch
from hogn.models.base import GraphLike, as_graph, register
from hogn.models.graph_models import _EnergyGraphNetwork, _graph_sum, _position_energy

__all__ = ["PotentialHOGN"]


@register
class PotentialHOGN(_EnergyGraphNetwork):
    """``H = Σ_i |p_i|² / (2 m_i) + V_θ(q, c)``: a known kinetic energy and a graph
    network potential.

    Args:
        mass_column: Node-constant column holding each particle's mass (``0``: mass
            first, the convention of every hogn dataset and of ASE imports);
            ``None``: unit masses.
        **kwargs: As for :class:`hogn.models.HOGN` (``dim``, ``node_constants``,
            ``hidden``, ``steps``, ``layers``, ``activation``, ``edge_features``,
            ``edge_energies``, ``absolute_positions``, ``scatter``, ``distance_eps``,
            ``cutoff``); the network reads positions and node constants, never
            momenta.

    Raises:
        ValueError: for a ``mass_column`` outside ``[0, node_constants)``.
    """

    name: ClassVar[str] = "potential-hogn"
    separable: ClassVar[bool] = True

    def __init__(self, dim: int = 2, node_constants: int = 1, hidden: int = 128,
                 steps: int = 2, layers: int = 2, activation: str = "softplus",
                 edge_features: int = 0, edge_energies: bool = False,
                 absolute_positions: bool = False, scatter: str = "auto",
                 distance_eps: float = 1e-8, cutoff: float | None = None,
                 mass_column: int | None = 0) -> None:
        if mass_column is not None and (
                not isinstance(mass_column, int) or isinstance(mass_column, bool)
                or not 0 <= mass_column < node_constants):
            raise ValueError(f"potential-hogn: mass_column must be None or an int in "
                             f"[0, {node_constants}) (a node-constant column), got "
                             f"{mass_column!r}")
        super().__init__(dim=dim, node_constants=node_constants, hidden=hidden, steps=steps,
                         layers=layers, activation=activation, edge_features=edge_features,
                         edge_energies=edge_energies, absolute_positions=absolute_positions,
                         scatter=scatter, distance_eps=distance_eps, cutoff=cutoff)
        self._mass_column = mass_column
        self._config["mass_column"] = mass_column

    def _build(self) -> None:
        self.potential = self._energy_network(use_momenta=False)

    # ---------------------------------------------------------------- energies
    def masses(self, graph: GraphBatch, check: bool = True) -> Tensor:
        """Per-particle masses ``[N, 1]`` (ones without a mass column).

        Raises:
            ValueError: with ``check``, when a mass is not positive and finite.
        """
        if self._mass_column is None:
            return graph.c.new_ones(graph.num_nodes, 1)
        m = graph.c[:, self._mass_column:self._mass_column + 1]
        if check and (not bool(torch.isfinite(m).all()) or bool((m <= 0).any())):
            raise ValueError(f"potential-hogn: node-constant column {self._mass_column} "
                             "holds the masses and must be positive and finite, got "
                             f"min {float(m.min()):.4g}")
        return m

    def kinetic_energy(self, p: Tensor, graph: GraphBatch) -> Tensor:
        """``T [G] = Σ_i |p_i|² / (2 m_i)`` from momenta ``p [N, d]``."""
        t = 0.5 * (p * p).sum(-1) / self.masses(graph, check=False)[:, 0]
        return torch.zeros(graph.num_graphs, dtype=p.dtype, device=p.device).index_add_(
            0, graph.batch, t)

    def potential_energy(self, q: Tensor, graph: GraphBatch) -> Tensor:
        """``V [G]`` from positions ``q [N, d]`` and the static graph."""
        return _position_energy(self.potential, q, graph)

    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        return self.kinetic_energy(p, graph) + self.potential_energy(q, graph)

    # ------------------------------------------------------------------ forces
    def forces(self, graph: GraphLike, create_graph: bool = False) -> Tensor:
        """``F = −∂V/∂q [N, d]`` at the graph's positions (checked against the model).

        Args:
            graph: Positions ``q`` and the static graph (``p`` is not read but must
                fit the model, as everywhere).
            create_graph: Keep the autograd graph (to train on, or differentiate,
                the forces).
        """
        g = as_graph(graph)
        self.check_state(g.q, g.p, g)
        return -self._potential_gradient(g.q, g, create_graph)

    def potential_and_forces(self, graph: GraphLike) -> tuple[Tensor, Tensor]:
        """``V [G]`` and ``F = −∂V/∂q [N, d]`` at the graph's positions in one pass (no
        autograd graph kept), as a calculator needs them."""
        g = as_graph(graph)
        self.check_state(g.q, g.p, g)
        with torch.no_grad():
            v, dv_dq = self._potential_terms(g.q, g, False)
        assert v is not None
        return v.detach(), torch.neg(dv_dq)

    @property
    def _writes_potential(self) -> bool:
        """Whether the potential's gradient is written out (:mod:`hogn.energy_gradient`):
        this class's own ``potential_energy`` on a network that module supports."""
        return (self._own_energy(PotentialHOGN, "potential_energy")
                and energy_gradient.supports(self.potential))

    def _potential_terms(self, q: Tensor, graph: GraphBatch, create_graph: bool,
                         energy: bool = True) -> tuple[Tensor | None, Tensor]:
        """``(V [G], ∂V/∂q [N, d])``: written out where it can be, else by autograd;
        with ``create_graph`` differentiable further (training on forces). Without
        ``energy`` the written-out path skips summing ``V`` (and may return ``None``)."""
        if self._writes_potential:
            with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
                node, edge, dv_dq, _ = energy_gradient.energy_and_gradient(
                    self.potential, q, None, graph.c, graph.edge_index, graph.edge_attr,
                    graph.edge_box)
                if not energy:
                    return None, dv_dq
                return _graph_sum(node, edge, graph, self.potential.scatter_backend), dv_dq
        with torch.enable_grad():
            x = q if q.requires_grad else q.detach().requires_grad_(True)
            v = self.potential_energy(x, graph)
            (dv_dq,) = torch.autograd.grad(v.sum(), x, create_graph=create_graph)
        return v, dv_dq

    def _potential_gradient(self, q: Tensor, graph: GraphBatch, create_graph: bool) -> Tensor:
        """``∂V/∂q [N, d]`` (see :meth:`_potential_terms`)."""
        return self._potential_terms(q, graph, create_graph, energy=False)[1]

    def _derivative(self, q: Tensor, p: Tensor, graph: GraphBatch,
                    create_graph: bool | None) -> tuple[Tensor, Tensor]:
        if not self._own_energy(PotentialHOGN, "energy", "kinetic_energy"):
            return super()._derivative(q, p, graph, create_graph)
        create_graph = self._create_graph(q, p, create_graph)
        force = -self._potential_gradient(q, graph, create_graph)
        return p / self.masses(graph, check=False), force

    def force_field(self, graph: GraphLike) -> Callable[[Tensor], Tensor]:
        """``force(q) -> F = −∂V/∂q [N, d]`` at positions ``q`` on the static ``graph``
        (checked here once), without autograd: the potential's gradient written out by
        :func:`hogn.models.inference.position_gradient` (its constant parts computed
        once), where it can, else autograd without a kept graph. For simulations: the
        parameters must not change while it is in use."""
        from hogn.models.inference import position_gradient

        g = as_graph(graph)
        self.check_state(g.q, g.p, g)
        written = (position_gradient(self.potential, g)
                   if self._own_energy(PotentialHOGN, "potential_energy") else None)

        def force(q: Tensor) -> Tensor:
            if written is not None:
                return torch.neg(written(q))
            with torch.no_grad():
                return torch.neg(self._potential_gradient(q, g, False))

        return force

    def rollout_field(self, graph: GraphLike) -> integrators.VectorField:
        """The field with its velocity ``p / m`` and its force ``−∂V/∂q`` apart
        (:class:`hogn.integrators.SplitField`): leapfrog (velocity Verlet) then calls
        the network once a step. No autograd graph is kept."""
        g = as_graph(graph)
        self.check_state(g.q, g.p, g)
        if not self._own_energy(PotentialHOGN, "energy", "kinetic_energy", "potential_energy"):
            return super().rollout_field(g)
        m = self.masses(g)

        def velocity(p: Tensor) -> Tensor:
            return p / m

        return integrators.SplitField(velocity, self.force_field(g))
