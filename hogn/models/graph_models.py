"""Graph-network models: HOGN, SeparableHOGN, OGN and DeltaGN.

All four read a particle graph with :class:`hogn.nn.GraphNetwork`: node inputs
``p, c`` (plus ``q`` with ``absolute_positions=True``), positions otherwise only
through the relative edge geometry, sums over edges and over nodes. They therefore
work on graphs of any size, are permutation-equivariant, and (without absolute
positions) invariant under a common translation of a graph. A one-particle system
in an external field (mass-spring, pendulum) has no edges and needs
``absolute_positions=True``.

- :class:`HOGN`: ``H = Σ_nodes ε_i (+ Σ_edges ε_ij)``, derivatives by autograd.
- :class:`SeparableHOGN`: ``H = Σ_i T(p_i, c_i) + V(q, c)``, so ``dq`` depends only
  on ``p`` and ``dp`` only on ``q``: leapfrog and the other splitting methods are
  exactly symplectic for the learned ``H``.
- :class:`OGN`: the network outputs ``(dq, dp)`` per node directly.
- :class:`DeltaGN`: the network outputs ``(Δq, Δp)`` over its own fixed ``dt``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from hogn import energy_gradient, integrators
from hogn.graph import GraphBatch
from hogn.models import inference
from hogn.models.base import DynamicsModel, GraphLike, HamiltonianModel, as_graph, register
from hogn.models.inference import GradientFn
from hogn.nn import MLP, GraphNetwork, scatter_sum

__all__ = ["HOGN", "OGN", "DeltaGN", "SeparableHOGN"]


def _graph_sum(node: Tensor, edge: Tensor | None, graph: GraphBatch, backend: str) -> Tensor:
    """Per-graph sum of per-node ``[N]`` and per-edge ``[E]`` values, ``[G]``."""
    total = scatter_sum(node, graph.batch, graph.num_graphs, backend)
    if edge is not None:
        total = total + scatter_sum(edge, graph.edge_batch, graph.num_graphs, backend)
    return total


def _position_energy(gn: GraphNetwork, q: Tensor, graph: GraphBatch) -> Tensor:
    """``V [G]``: the summed readout of a graph network over positions ``q [N, d]``
    (no momenta) on the static graph."""
    node, edge = gn(q, None, graph.c, graph.edge_index, graph.edge_attr, graph.edge_box)
    return _graph_sum(node[:, 0], None if edge is None else edge[:, 0], graph,
                      gn.scatter_backend)


class _EnergyGraphNetwork(HamiltonianModel):
    """Shared constructor of the graph Hamiltonians (arguments as for :class:`HOGN`);
    subclasses build their networks in :meth:`_build`."""

    def __init__(self, dim: int = 2, node_constants: int = 1, hidden: int = 128,
                 steps: int = 2, layers: int = 2, activation: str = "softplus",
                 edge_features: int = 0, edge_energies: bool = False,
                 absolute_positions: bool = False, scatter: str = "auto",
                 distance_eps: float = 1e-8, cutoff: float | None = None) -> None:
        super().__init__(dict(
            dim=dim, node_constants=node_constants, hidden=hidden, steps=steps, layers=layers,
            activation=activation, edge_features=edge_features, edge_energies=edge_energies,
            absolute_positions=absolute_positions, scatter=scatter, distance_eps=distance_eps,
            cutoff=cutoff))
        self._build()

    def _build(self) -> None:
        raise NotImplementedError

    def _energy_gradient(self, q: Tensor, p: Tensor, graph: GraphBatch
                         ) -> tuple[Tensor, Tensor] | None:
        """``(∂H/∂q, ∂H/∂p)`` written out (:mod:`hogn.energy_gradient`), or ``None``
        where the networks cannot run that way (then autograd takes the gradient)."""
        return None

    def _own_energy(self, cls: type, *methods: str) -> bool:
        """Whether ``methods`` are ``cls``'s own (a subclass that redefines the energy
        gets autograd of *its* energy, not the written gradient of ``cls``'s)."""
        return all(getattr(type(self), m) is getattr(cls, m) for m in methods)

    def _derivative(self, q: Tensor, p: Tensor, graph: GraphBatch,
                    create_graph: bool | None) -> tuple[Tensor, Tensor]:
        create_graph = self._create_graph(q, p, create_graph)
        with torch.set_grad_enabled(create_graph):
            grads = self._energy_gradient(q, p, graph)
        if grads is None:
            return super()._derivative(q, p, graph, create_graph)
        return grads[1], -grads[0]

    def _energy_network(self, use_momenta: bool) -> GraphNetwork:
        """A GN reading out one energy per node (and per edge with ``edge_energies``)."""
        c = self.config()
        return GraphNetwork(c["dim"], c["node_constants"], c["hidden"], node_out=1,
                            edge_out=int(bool(c["edge_energies"])),
                            edge_features=c["edge_features"], steps=c["steps"],
                            layers=c["layers"], activation=c["activation"],
                            use_momenta=use_momenta, absolute_positions=c["absolute_positions"],
                            scatter=c["scatter"], distance_eps=c["distance_eps"],
                            cutoff=c["cutoff"])


@register
class HOGN(_EnergyGraphNetwork):
    """Hamiltonian graph network: the GN reads out per-node (and optionally per-edge)
    energies, summed per graph to ``H``; ``dq = ∂H/∂p``, ``dp = −∂H/∂q``.

    Args:
        dim: Coordinates per particle ``d``.
        node_constants: Node constants per particle ``k`` (mass first).
        hidden: Latent width.
        steps: Message-passing steps.
        layers: Linear layers per MLP (see :class:`hogn.nn.MLP`).
        activation: Smooth activation name.
        edge_features: Edge constants per edge ``a`` (0: the graphs have none).
        edge_energies: Also read out an energy per (directed) edge.
        absolute_positions: Give ``q`` to the node encoder (external potentials).
        scatter: Scatter backend (``"auto"``, ``"torch"``, ``"torch_scatter"``).
        distance_eps: Smoothing of edge lengths, ``sqrt(r² + eps)``.
        cutoff: Edges longer than this carry nothing (a smooth envelope, see
            :func:`hogn.nn.cutoff_envelope`): ``H`` is then local and does not depend
            on which longer edges a neighbour graph holds, as large systems on radius
            graphs need. ``None``: every edge of the graph counts (the default).

    Graphs with a periodic ``box`` (:class:`hogn.graph.GraphBatch`) are read with
    minimum-image edge vectors.
    """

    name: ClassVar[str] = "hogn"

    def _build(self) -> None:
        self.gn = self._energy_network(use_momenta=True)

    def _written_gradient(self, graph: GraphBatch) -> GradientFn | None:
        if type(self).energy is not HOGN.energy:
            return None
        return inference.graph_network_gradient(self.gn, graph)

    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        node, edge = self.gn(q, p, graph.c, graph.edge_index, graph.edge_attr, graph.edge_box)
        return _graph_sum(node[:, 0], None if edge is None else edge[:, 0], graph,
                          self.gn.scatter_backend)

    def _energy_gradient(self, q: Tensor, p: Tensor, graph: GraphBatch
                         ) -> tuple[Tensor, Tensor] | None:
        if not (self._own_energy(HOGN, "energy") and energy_gradient.supports(self.gn)):
            return None
        _, _, dh_dq, dh_dp = energy_gradient.energy_and_gradient(
            self.gn, q, p, graph.c, graph.edge_index, graph.edge_attr, graph.edge_box)
        return dh_dq, dh_dp


@register
class SeparableHOGN(_EnergyGraphNetwork):
    """Separable Hamiltonian ``H = Σ_i T(p_i, c_i) + V(q, c)``.

    ``T`` is a per-node MLP of ``(p_i, c_i)``; ``V`` a graph network over positions
    (node inputs ``c``, plus ``q`` with ``absolute_positions``) reading out per-node
    and optionally per-edge energies. Arguments as for :class:`HOGN`; ``hidden``,
    ``layers`` and ``activation`` apply to both parts.
    """

    name: ClassVar[str] = "separable-hogn"
    separable: ClassVar[bool] = True

    def _written_gradient(self, graph: GraphBatch) -> GradientFn | None:
        if type(self).energy is not SeparableHOGN.energy:
            return None
        return inference.separable_gradient(self.potential, self.kinetic, self.dim, graph)

    def _build(self) -> None:
        c = self.config()
        self.kinetic = MLP(c["dim"] + c["node_constants"], c["hidden"], 1, c["layers"],
                           c["activation"], rows="nodes")
        self.potential = self._energy_network(use_momenta=False)

    def kinetic_energy(self, p: Tensor, graph: GraphBatch) -> Tensor:
        """``T [G]`` from momenta ``p [N, d]`` and ``graph.c``."""
        t = self.kinetic(torch.cat([p, graph.c], -1))[:, 0]
        return scatter_sum(t, graph.batch, graph.num_graphs, self.potential.scatter_backend)

    def potential_energy(self, q: Tensor, graph: GraphBatch) -> Tensor:
        """``V [G]`` from positions ``q [N, d]`` and the static graph."""
        return _position_energy(self.potential, q, graph)

    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        return self.kinetic_energy(p, graph) + self.potential_energy(q, graph)

    def _energy_gradient(self, q: Tensor, p: Tensor, graph: GraphBatch
                         ) -> tuple[Tensor, Tensor] | None:
        if not (self._own_energy(SeparableHOGN, "energy", "kinetic_energy", "potential_energy")
                and energy_gradient.supports(self.kinetic)
                and energy_gradient.supports(self.potential)):
            return None
        _, dt = energy_gradient.mlp_input_gradient(self.kinetic, torch.cat([p, graph.c], -1))
        _, _, dv_dq, _ = energy_gradient.energy_and_gradient(
            self.potential, q, None, graph.c, graph.edge_index, graph.edge_attr,
            graph.edge_box)
        return dv_dq, dt[:, : self.dim]


@register
class OGN(DynamicsModel):
    """Graph network predicting ``(dq, dp)`` per node directly (no energy structure).

    Arguments as for :class:`HOGN` (without ``edge_energies``).
    """

    name: ClassVar[str] = "ogn"

    def __init__(self, dim: int = 2, node_constants: int = 1, hidden: int = 128,
                 steps: int = 2, layers: int = 2, activation: str = "softplus",
                 edge_features: int = 0, absolute_positions: bool = False,
                 scatter: str = "auto", distance_eps: float = 1e-8,
                 cutoff: float | None = None) -> None:
        super().__init__(dict(
            dim=dim, node_constants=node_constants, hidden=hidden, steps=steps, layers=layers,
            activation=activation, edge_features=edge_features,
            absolute_positions=absolute_positions, scatter=scatter, distance_eps=distance_eps,
            cutoff=cutoff))
        self.gn = GraphNetwork(dim, node_constants, hidden, node_out=2 * dim,
                               edge_features=edge_features, steps=steps, layers=layers,
                               activation=activation, absolute_positions=absolute_positions,
                               scatter=scatter, distance_eps=distance_eps, cutoff=cutoff)

    def _derivative(self, q: Tensor, p: Tensor, graph: GraphBatch,
                    create_graph: bool | None) -> tuple[Tensor, Tensor]:
        out, _ = self.gn(q, p, graph.c, graph.edge_index, graph.edge_attr, graph.edge_box)
        return out[:, : self.dim], out[:, self.dim:]


@register
class DeltaGN(DynamicsModel):
    """Graph network predicting the state change ``(Δq, Δp)`` over a fixed ``dt``.

    It *is* a stepper: ``next_state(graph) = (q + Δq, p + Δp)``. It is used with no
    integrator (:meth:`compatible_integrators` is empty), and ``derivative``,
    ``time_derivative`` and ``vector_field`` raise ``ValueError`` rather than
    return ``Δ/dt``: that would be a first-order guess that an integrator would
    silently treat as a true derivative.

    Args:
        dt: The time step the model predicts over (> 0).
        **others: As for :class:`OGN`.
    """

    name: ClassVar[str] = "deltagn"
    is_stepper: ClassVar[bool] = True

    def __init__(self, dt: float, dim: int = 2, node_constants: int = 1, hidden: int = 128,
                 steps: int = 2, layers: int = 2, activation: str = "softplus",
                 edge_features: int = 0, absolute_positions: bool = False,
                 scatter: str = "auto", distance_eps: float = 1e-8,
                 cutoff: float | None = None) -> None:
        if not (isinstance(dt, (int, float)) and not isinstance(dt, bool) and dt > 0
                and math.isfinite(dt)):
            raise ValueError(f"{self.name}: dt must be a positive finite number, got {dt!r}")
        super().__init__(dict(
            dt=float(dt), dim=dim, node_constants=node_constants, hidden=hidden, steps=steps,
            layers=layers, activation=activation, edge_features=edge_features,
            absolute_positions=absolute_positions, scatter=scatter, distance_eps=distance_eps,
            cutoff=cutoff))
        self.dt = float(dt)
        self.gn = GraphNetwork(dim, node_constants, hidden, node_out=2 * dim,
                               edge_features=edge_features, steps=steps, layers=layers,
                               activation=activation, absolute_positions=absolute_positions,
                               scatter=scatter, distance_eps=distance_eps, cutoff=cutoff)

    def delta(self, graph: GraphLike) -> tuple[Tensor, Tensor]:
        """Predicted change of the state over ``dt``: ``(Δq [N, d], Δp [N, d])``."""
        g = as_graph(graph)
        self.check_state(g.q, g.p, g)
        out, _ = self.gn(g.q, g.p, g.c, g.edge_index, g.edge_attr, g.edge_box)
        return out[:, : self.dim], out[:, self.dim:]

    def next_state(self, graph: GraphLike, integrator: str | integrators.Integrator | None = None,
                   dt: float | None = None) -> tuple[Tensor, Tensor]:
        """``(q + Δq, p + Δp)`` after the model's own ``dt``.

        Args:
            graph: State and static graph.
            integrator: Must be ``None``: the model is its own stepper.
            dt: ``None`` or the model's ``dt`` (checked, to catch a mismatched rollout).

        Raises:
            ValueError: if an integrator is given or ``dt`` differs from the model's.
        """
        self._check_own_step(integrator, dt)
        g = as_graph(graph)
        dq, dp = self.delta(g)
        return g.q + dq, g.p + dp
