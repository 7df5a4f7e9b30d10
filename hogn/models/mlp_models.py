"""Fixed-size baselines over the flattened state: HNN and a plain MLP.

Each graph of exactly ``n_particles`` nodes is flattened to one vector
``[q (n·d), p (n·d), c (n·k)]`` (nodes in their stored order): the models are not
permutation-equivariant and do not generalise to other particle counts; a graph
of another size raises ``ValueError``.

Default size as in the HNN paper (Greydanus et al. 2019, ``hnn.nn_models.MLP``):
"3 layers × 200, tanh" means three linear layers, i.e. two hidden layers of 200
units and a linear output (``layers=3`` in :class:`hogn.nn.MLP`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from hogn.graph import GraphBatch
from hogn.models import inference
from hogn.models.base import DynamicsModel, HamiltonianModel, register
from hogn.models.inference import GradientFn
from hogn.nn import MLP as _Net

__all__ = ["HNN", "MLP"]


class _FlatState:
    """Mixin: flatten fixed-size graphs ``q, p [G·n, d]``, ``c [G·n, k]`` to ``[G, F]``."""

    name: ClassVar[str]
    uses_edges: ClassVar[bool] = False
    n_particles: int
    dim: int
    node_constants: int

    def _init_fixed(self, config: dict[str, Any]) -> None:
        """Check ``config["n_particles"]``, store the config (checked by
        :class:`~hogn.models.DynamicsModel`) and ``self.n_particles``."""
        _check_n(self.name, config["n_particles"])
        super().__init__(config)  # type: ignore[call-arg]
        self.n_particles = config["n_particles"]

    def _init_flat(self, derivatives: bool, n_particles: int, dim: int, node_constants: int,
                   hidden: int, layers: int, activation: str) -> None:
        """The shared constructor: check and store the config, build ``self.net`` with
        one output (``H``) or ``2 n d`` (``dq, dp``, with ``derivatives``)."""
        self._init_fixed(dict(n_particles=n_particles, dim=dim, node_constants=node_constants,
                              hidden=hidden, layers=layers, activation=activation))
        out = 2 * n_particles * dim if derivatives else 1
        self.net = _Net(self.in_features, hidden, out, layers, activation, rows="graphs")

    def check_state(self, q: Tensor, p: Tensor, graph: GraphBatch) -> None:
        super().check_state(q, p, graph)  # type: ignore[misc]
        if graph.uniform_size != self.n_particles:  # cached on the graph: one sync
            raise ValueError(f"{self.name} expects graphs of exactly {self.n_particles} "
                             f"particle(s), got sizes {sorted(set(graph.sizes.tolist()))}")

    def flatten(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """``[q, p, c]`` per graph, ``[G, n·(2d + k)]``."""
        g = graph.num_graphs
        return torch.cat([q.reshape(g, -1), p.reshape(g, -1), graph.c.reshape(g, -1)], -1)

    def flatten_with_constants(self, x: Tensor, graph: GraphBatch) -> Tensor:
        """``[x, c]`` per graph, ``[G, n·(d + k)]``, for one half of the state ``x [G·n,
        d]`` (``q`` or ``p``): the input of a network of the positions or of the momenta
        alone."""
        g = graph.num_graphs
        return torch.cat([x.reshape(g, -1), graph.c.reshape(g, -1)], -1)

    @property
    def in_features(self) -> int:
        return self.n_particles * (2 * self.dim + self.node_constants)


def _check_n(name: str, n_particles: int) -> None:
    if not isinstance(n_particles, int) or isinstance(n_particles, bool) or n_particles < 1:
        raise ValueError(f"{name}: n_particles must be an int >= 1, got {n_particles!r}")


@register
class HNN(_FlatState, HamiltonianModel):
    """Hamiltonian neural network: an MLP maps the flattened state to ``H``.

    Args:
        n_particles: Particles per graph ``n`` (fixed).
        dim: Coordinates per particle ``d``.
        node_constants: Node constants per particle ``k`` (inputs of the MLP).
        hidden: Hidden width (paper: 200).
        layers: Linear layers, output included (paper: 3 = two hidden layers).
        activation: Smooth activation name (paper: tanh).
    """

    name: ClassVar[str] = "hnn"

    def __init__(self, n_particles: int = 1, dim: int = 1, node_constants: int = 1,
                 hidden: int = 200, layers: int = 3, activation: str = "tanh") -> None:
        self._init_flat(False, n_particles, dim, node_constants, hidden, layers, activation)

    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        return self.net(self.flatten(q, p, graph))[:, 0]

    def _written_gradient(self, graph: GraphBatch) -> GradientFn | None:
        if type(self).energy is not HNN.energy:
            return None
        return inference.mlp_gradient(self.net, self.n_particles, self.dim, graph)


@register
class MLP(_FlatState, DynamicsModel):
    """Baseline MLP: the flattened state to the flattened ``(dq, dp)`` directly.

    Arguments as for :class:`HNN`.
    """

    name: ClassVar[str] = "mlp"

    def __init__(self, n_particles: int = 1, dim: int = 1, node_constants: int = 1,
                 hidden: int = 200, layers: int = 3, activation: str = "tanh") -> None:
        self._init_flat(True, n_particles, dim, node_constants, hidden, layers, activation)

    def _derivative(self, q: Tensor, p: Tensor, graph: GraphBatch,
                    create_graph: bool | None) -> tuple[Tensor, Tensor]:
        out = self.net(self.flatten(q, p, graph))
        half = self.n_particles * self.dim
        return out[:, :half].reshape(q.shape), out[:, half:].reshape(p.shape)
