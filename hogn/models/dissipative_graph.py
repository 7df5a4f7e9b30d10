"""Dissipative Hamiltonian graph network: a learned ``H`` and a learned dissipation
function ``D``, both sums of per-node (and per-edge) terms over a particle graph.

The graph-network counterpart of :class:`hogn.models.DHNN` (Sosanya & Greydanus
2022): the field is the Helmholtz split

``dq = ∂H/∂p + ∂D/∂q``, ``dp = −∂H/∂q + ∂D/∂p``,

with the sign convention of :mod:`hogn.models.dissipative` (linear friction
``dp = … − γ p`` is ``D = −γ |p|²/2``; see there for what the data determine about
``D``). ``H`` is exactly a :class:`~hogn.models.HOGN` (held as the submodule
``hogn``), so it works on graphs of any size, with periodic boxes and ``cutoff``.
``D`` reads, depending on ``dissipation_inputs``:

- ``"state"``: a second graph network built as HOGN's (same options, its own
  weights), per-node and with ``edge_energies`` per-edge terms, summed per graph.
- ``"momenta"``: no positions at all (Rayleigh's dissipation is a function of the
  velocities): ``D = Σ_i d(p_i, c_i) (+ Σ_edges e(p_j − p_i, a_ij))``, a per-node
  MLP of the node's momentum and constants and, with ``edge_energies``, a per-edge
  MLP of the relative momentum (receiver minus sender) and the edge constants, over
  every edge of the graph (``cutoff`` weights edges by their length, a position, so
  it does not apply to these terms; it still applies to ``H``). ``∂D/∂q = 0``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from hogn.graph import GraphBatch
from hogn.models.base import register
from hogn.models.dissipative import DissipativeModel, check_dissipation_inputs
from hogn.models.graph_models import HOGN, _graph_sum
from hogn.nn import MLP

__all__ = ["DissipativeHOGN"]

@register
class DissipativeHOGN(DissipativeModel):
    """Dissipative Hamiltonian graph network: ``H`` from a :class:`~hogn.models.HOGN`
    (``self.hogn``) and a dissipation function ``D`` read out per node (and per edge)
    and summed per graph; ``dq = ∂H/∂p + ∂D/∂q``, ``dp = −∂H/∂q + ∂D/∂p`` by autograd.

    Like :class:`~hogn.models.DHNN` it is not a Hamiltonian model (its ``H`` is not
    conserved by its own field, it is not a :class:`~hogn.models.HamiltonianModel`),
    its field is not separable (splitting integrators are refused) and it is not a
    stepper.

    Args:
        dim: Coordinates per particle ``d``.
        node_constants: Node constants per particle ``k``.
        hidden: Latent width (of every network).
        steps: Message-passing steps of the graph networks.
        layers: Linear layers per MLP.
        activation: Smooth activation name.
        edge_features: Edge constants per edge ``a`` (0: the graphs have none).
        edge_energies: Also read out an energy (and a dissipation) per directed edge.
        absolute_positions: Give ``q`` to the node encoders (external potentials);
            not to ``D`` with ``dissipation_inputs="momenta"``.
        scatter: Scatter backend (``"auto"``, ``"torch"``, ``"torch_scatter"``).
        distance_eps: Smoothing of edge lengths, ``sqrt(r² + eps)``.
        cutoff: As for :class:`~hogn.models.HOGN` (``H`` and the ``"state"`` ``D``).
        dissipation_inputs: ``"state"`` (``D`` is a graph network of the state, as
            ``H``) or ``"momenta"`` (``D`` sees momenta and constants only; see the
            module docstring).
    """

    name: ClassVar[str] = "dissipative-hogn"

    def __init__(self, dim: int = 2, node_constants: int = 1, hidden: int = 128,
                 steps: int = 2, layers: int = 2, activation: str = "softplus",
                 edge_features: int = 0, edge_energies: bool = False,
                 absolute_positions: bool = False, scatter: str = "auto",
                 distance_eps: float = 1e-8, cutoff: float | None = None,
                 dissipation_inputs: str = "state") -> None:
        check_dissipation_inputs(self.name, dissipation_inputs)
        graph_config = dict(
            dim=dim, node_constants=node_constants, hidden=hidden, steps=steps, layers=layers,
            activation=activation, edge_features=edge_features, edge_energies=edge_energies,
            absolute_positions=absolute_positions, scatter=scatter, distance_eps=distance_eps,
            cutoff=cutoff)
        super().__init__({**graph_config, "dissipation_inputs": dissipation_inputs})
        self.dissipation_inputs = dissipation_inputs
        self.hogn = HOGN(**graph_config)
        if dissipation_inputs == "state":
            self.dissipation_gn = self.hogn._energy_network(use_momenta=True)
        else:
            self.dissipation_node = MLP(dim + node_constants, hidden, 1, layers, activation,
                                        rows="nodes")
            self.dissipation_edge = (MLP(dim + edge_features, hidden, 1, layers, activation,
                                         rows="edges") if edge_energies else None)

    # ------------------------------------------------------------ the two scalars
    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """Learned ``H`` (the HOGN's) without input checks: ``q, p [N, d]`` -> ``[G]``."""
        return self.hogn.energy(q, p, graph)

    def rayleigh(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """Learned dissipation function ``D`` without input checks: ``q, p [N, d]`` ->
        ``[G]`` (``q`` unused with ``dissipation_inputs="momenta"``)."""
        backend = self.hogn.gn.scatter_backend
        if self.dissipation_inputs == "state":
            node, edge = self.dissipation_gn(q, p, graph.c, graph.edge_index, graph.edge_attr,
                                             graph.edge_box)
            return _graph_sum(node[:, 0], None if edge is None else edge[:, 0], graph, backend)
        node = self.dissipation_node(torch.cat([p, graph.c], -1))[:, 0]
        edge = None
        if self.dissipation_edge is not None:
            send, receive = graph.edge_index
            parts = [p[receive] - p[send]]
            if self.edge_features:
                parts.append(graph.edge_attr)
            edge = self.dissipation_edge(torch.cat(parts, -1))[:, 0]
        return _graph_sum(node, edge, graph, backend)
