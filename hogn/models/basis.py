"""Hamiltonians linear in a learned basis: ``H = φ(q, p) · w`` (HNN and HOGN variants).

A basis model is its parent network (an HNN's MLP, a HOGN's graph network) with ``m``
outputs instead of one: the *features* ``φ [G, m]`` of each graph's state, combined by a
learned *head* ``w [m]`` into the Hamiltonian ``H = φ · w``. Hamilton's equations are
linear in ``w``: the field of ``H`` is ``Σ_i w_i X_i`` with ``X_i = (∂φ_i/∂p, −∂φ_i/∂q)``
the Hamiltonian field of feature ``i``. So, for fixed features, the head that best fits
observed derivatives is a (ridge) least-squares solve, which :mod:`meta.closed_form`
uses for few-shot adaptation (a meta-learned basis with a closed-form head, as R2D2
and MetaOptNet do for classifiers); the parameter ``head`` is then the prior ``w0`` the
solve shrinks towards.

As models they are ordinary Hamiltonian models: ``hogn.models.get("hnn-basis", ...)``,
training, rollouts (by autograd: :mod:`hogn.models.inference` does not write them out),
``save`` and ``load`` all work as for their parents.

- :class:`HNNBasis` (``"hnn-basis"``): the HNN's MLP over the flattened fixed-size state
  with ``features`` outputs.
- :class:`HOGNBasis` (``"hogn-basis"``): the HOGN's graph network reading out ``features``
  values per node (and per edge with ``edge_energies``), summed per graph.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from hogn.graph import GraphBatch
from hogn.models.base import register
from hogn.models.graph_models import HOGN, _graph_sum
from hogn.models.mlp_models import HNN
from hogn.nn import MLP

__all__ = ["HNNBasis", "HOGNBasis", "check_features"]


def check_features(name: str, features: Any) -> int:
    """``features`` if it is an int ``>= 1``.

    Raises:
        ValueError: naming the model, what was given and what is expected.
    """
    if not isinstance(features, int) or isinstance(features, bool) or features < 1:
        raise ValueError(f"{name}: features must be an int >= 1 (the number m of basis "
                         f"functions), got {features!r}")
    return features


class _Basis:
    """Mixin: the head ``w [m]`` and ``energy = features_of(q, p, graph) @ head``."""

    head: nn.Parameter

    def _init_head(self, features: int, like: Tensor) -> None:
        """The prior head ``w0 = 1/√m`` (every feature alike; the features' own last
        layer is random), in the dtype and device of ``like``."""
        self.head = nn.Parameter(torch.full((features,), 1 / math.sqrt(features),
                                            dtype=like.dtype, device=like.device))

    @property
    def features(self) -> int:
        """Number of basis functions ``m``."""
        return self.head.shape[0]

    def features_of(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """The basis functions at a state, without input checks.

        Args:
            q: Positions ``[N, d]``.
            p: Momenta ``[N, d]``.
            graph: Static graph of ``G`` graphs.

        Returns:
            ``φ [G, m]``.
        """
        raise NotImplementedError

    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """``H = φ · w``, ``[G]`` (see :meth:`features_of`)."""
        return self.features_of(q, p, graph) @ self.head


@register
class HNNBasis(_Basis, HNN):
    """An HNN whose MLP reads out ``m`` basis functions, ``H = φ(q, p, c) · w``.

    Args:
        n_particles: Particles per graph ``n`` (fixed).
        dim: Coordinates per particle ``d``.
        node_constants: Node constants per particle ``k``.
        hidden: Hidden width.
        layers: Linear layers, output included.
        activation: Smooth activation name.
        features: Basis functions ``m`` (outputs of the MLP).

    Parameters: ``net`` (the MLP, ``[G, n·(2d + k)] -> [G, m]``) and ``head [m]``.
    """

    name: ClassVar[str] = "hnn-basis"

    def __init__(self, n_particles: int = 1, dim: int = 1, node_constants: int = 1,
                 hidden: int = 200, layers: int = 3, activation: str = "tanh",
                 features: int = 32) -> None:
        check_features(self.name, features)
        self._init_fixed(dict(n_particles=n_particles, dim=dim, node_constants=node_constants,
                              hidden=hidden, layers=layers, activation=activation,
                              features=features))
        self.net = MLP(self.in_features, hidden, features, layers, activation, rows="graphs")
        self._init_head(features, self.net[0].weight)

    def features_of(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        return self.net(self.flatten(q, p, graph))


@register
class HOGNBasis(_Basis, HOGN):
    """A HOGN whose graph network reads out ``m`` values per node (and per edge with
    ``edge_energies``), summed per graph to the basis ``φ [G, m]``; ``H = φ · w``.

    Args:
        dim, node_constants, hidden, steps, layers, activation, edge_features,
        edge_energies, absolute_positions, scatter, distance_eps, cutoff: As for
            :class:`~hogn.models.HOGN`.
        features: Basis functions ``m`` (outputs of the node and edge decoders).

    Parameters: ``gn`` (the graph network, node decoder ``[N, hidden] -> [N, m]``) and
    ``head [m]``.
    """

    name: ClassVar[str] = "hogn-basis"

    def __init__(self, dim: int = 2, node_constants: int = 1, hidden: int = 128,
                 steps: int = 2, layers: int = 2, activation: str = "softplus",
                 edge_features: int = 0, edge_energies: bool = False,
                 absolute_positions: bool = False, scatter: str = "auto",
                 distance_eps: float = 1e-8, cutoff: float | None = None,
                 features: int = 32) -> None:
        self._m = check_features(self.name, features)  # read by _build
        super().__init__(dim=dim, node_constants=node_constants, hidden=hidden, steps=steps,
                         layers=layers, activation=activation, edge_features=edge_features,
                         edge_energies=edge_energies, absolute_positions=absolute_positions,
                         scatter=scatter, distance_eps=distance_eps, cutoff=cutoff)
        self._config["features"] = features
        del self._m

    def _build(self) -> None:
        """HOGN's energy network with its decoders widened from 1 to ``m`` outputs."""
        c = self.config()
        gn = self._energy_network(use_momenta=True)
        gn.node_decoder = MLP(c["hidden"], c["hidden"], self._m, c["layers"], c["activation"],
                              rows="nodes")
        if gn.edge_decoder is not None:
            gn.edge_decoder = MLP(c["hidden"], c["hidden"], self._m, c["layers"],
                                  c["activation"], rows="edges")
        self.gn = gn
        self._init_head(self._m, gn.node_decoder[0].weight)

    def features_of(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        node, edge = self.gn(q, p, graph.c, graph.edge_index, graph.edge_attr, graph.edge_box)
        return _graph_sum(node, edge, graph, self.gn.scatter_backend)
