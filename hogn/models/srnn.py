"""Symplectic recurrent network (SRNN): a separable Hamiltonian of two MLPs.

Chen, Zhang, Arjovsky & Bottou, "Symplectic Recurrent Neural Networks" (ICLR 2020):
``H(q, p) = T(p) + V(q)`` with ``T`` and ``V`` two networks, trained through
multi-step leapfrog rollouts of the observed trajectory (``hogn.train(model, data,
target="rollout", integrator="leapfrog", rollout_steps=k)``), optionally with every
training sample's start state refined as a parameter (``refine_initial=True``) and,
at prediction time, the start of a noisy trajectory fitted to its first observations
(:func:`hogn.refine.refine_start`). See ``docs/srnn.md``.

Like :class:`~hogn.models.HNN` the model reads a graph of exactly ``n_particles``
nodes flattened in their stored order (not permutation-equivariant):

- ``T`` reads the flattened momenta and node constants ``[p (n·d), c (n·k)]`` (the
  kinetic energy depends on the masses, which are constants of the graph, so ``T``
  stays a function of ``p`` alone along a trajectory);
- ``V`` reads the flattened positions and node constants ``[q (n·d), c (n·k)]``.

Since ``∂H/∂p`` depends on ``p`` only and ``∂H/∂q`` on ``q`` only, the model is
:attr:`~hogn.models.DynamicsModel.separable`: the explicit splitting integrators
(leapfrog, yoshida4, symplectic_euler) accept it, as do all the others.

Default sizes: the authors' three-body script (``n_layers 3``, ``n_hidden 512``, tanh:
three hidden layers of 512 units in each of ``T`` and ``V``, i.e. ``layers=4`` linear
layers in :class:`hogn.nn.MLP`).
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from hogn.graph import GraphBatch
from hogn.models.base import HamiltonianModel, register
from hogn.models.mlp_models import _FlatState
from hogn.nn import MLP as _Net

__all__ = ["SRNN"]


@register
class SRNN(_FlatState, HamiltonianModel):
    """Separable Hamiltonian ``H = T(p, c) + V(q, c)`` of two MLPs over the flat state.

    Args:
        n_particles: Particles per graph ``n`` (fixed).
        dim: Coordinates per particle ``d``.
        node_constants: Node constants per particle ``k`` (inputs of both networks).
        hidden: Hidden width of each network (authors' three-body script: 512).
        layers: Linear layers of each network, output included (authors: 4 = three
            hidden layers).
        activation: Smooth activation name (authors: tanh).
    """

    name: ClassVar[str] = "srnn"
    separable: ClassVar[bool] = True

    def __init__(self, n_particles: int = 1, dim: int = 1, node_constants: int = 1,
                 hidden: int = 512, layers: int = 4, activation: str = "tanh") -> None:
        self._init_fixed(dict(n_particles=n_particles, dim=dim, node_constants=node_constants,
                              hidden=hidden, layers=layers, activation=activation))
        half = n_particles * (dim + node_constants)
        self.kinetic = _Net(half, hidden, 1, layers, activation, rows="graphs")
        self.potential = _Net(half, hidden, 1, layers, activation, rows="graphs")

    def kinetic_energy(self, p: Tensor, graph: GraphBatch) -> Tensor:
        """``T [G]`` from momenta ``p [G·n, d]`` and ``graph.c [G·n, k]``."""
        return self.kinetic(self.flatten_with_constants(p, graph))[:, 0]

    def potential_energy(self, q: Tensor, graph: GraphBatch) -> Tensor:
        """``V [G]`` from positions ``q [G·n, d]`` and ``graph.c [G·n, k]``."""
        return self.potential(self.flatten_with_constants(q, graph))[:, 0]

    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        return self.kinetic_energy(p, graph) + self.potential_energy(q, graph)
