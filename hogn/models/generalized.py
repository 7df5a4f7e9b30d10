"""Generalized Hamiltonian network (GHNN) over a fixed-size flattened state.

A generalized Hamiltonian system (Course, Evans & Nair, "Weak form generalized
Hamiltonian learning", NeurIPS 2020; the survey's §3.2) is

``dx/dt = (P(x) + Q(x)) ∇H(x)``, ``x = [q, p]`` of size ``m = 2 n d``,

with ``P`` skew-symmetric (the conservative, rotational part: ``∇Hᵀ P ∇H = 0``) and
``Q`` negative semi-definite (the dissipation), so that along the flow
``dH/dt = ∇Hᵀ Q ∇H ≤ 0``: the learned energy never increases. Here

- ``H(x)``: an MLP of the flattened state ``[q, p, c]`` (as :class:`~hogn.models.HNN`);
- ``P(x) = A(x) − A(x)ᵀ`` with ``A`` an MLP output reshaped ``[m, m]``
  (``structure="learned"``), or the symplectic ``J = [[0, I], [−I, 0]]``
  (``structure="canonical"``: with ``Q = 0`` the model is exactly an HNN);
- ``Q(x) = −L(x) L(x)ᵀ`` with ``L`` an MLP output reshaped to a full ``[m, r]``
  (``r = rank``, default ``m``: any negative semi-definite ``Q`` of rank ``≤ r``);
  ``dissipation=False`` drops it (``Q = 0``: a conservative generalized form).

Skewness and semi-definiteness hold by construction for any weights. This is the
cheap strong form: the field is fitted to derivative targets (or rollouts) with
:func:`hogn.train`; there is no weak-form (integral) loss and no input-convex ``H``,
so nothing guarantees that ``H`` is bounded below or that the learned system is
stable in Lyapunov's sense — only that the model's own ``H`` does not increase along
its exact flow.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from hogn.graph import GraphBatch
from hogn.models.base import GraphLike, as_graph, register, state_gradients
from hogn.models.dissipative import Pair, _SplitField
from hogn.models.mlp_models import _FlatState
from hogn.nn import MLP as _Net

__all__ = ["GHNN", "STRUCTURES"]

STRUCTURES = ("canonical", "learned")
"""The choices of ``P``: the fixed symplectic ``J`` or a learned ``A − Aᵀ``."""


@register
class GHNN(_FlatState, _SplitField):
    """Generalized Hamiltonian network: ``dx/dt = (P(x) + Q(x)) ∇H(x)`` with ``H``
    (``net``), ``P = A − Aᵀ`` (``structure_net``, or ``J``) and ``Q = −L Lᵀ``
    (``dissipation_net``) read from the flattened state ``[q, p, c]`` (see the module
    docstring). ``∇H`` is taken by autograd (:func:`~hogn.models.base.state_gradients`)
    and multiplied per graph (batched ``[G, m, m] @ [G, m]``). :meth:`field_parts`
    gives the conservative part ``P ∇H`` and the dissipative part ``Q ∇H``;
    :meth:`hamiltonian` the learned ``H``, non-increasing along the model's own flow
    (constant without dissipation).

    Not a :class:`~hogn.models.HamiltonianModel`: with dissipation its ``H`` decreases
    along its field; its field is not separable (the splitting integrators are
    refused) and it is not a stepper. Graphs must have exactly ``n_particles`` nodes.

    Args:
        n_particles: Particles per graph ``n`` (fixed).
        dim: Coordinates per particle ``d``.
        node_constants: Node constants per particle ``k`` (inputs of every MLP).
        hidden: Hidden width of each MLP.
        layers: Linear layers of each MLP, output included (3 = two hidden layers).
        activation: Smooth activation name.
        structure: ``"canonical"`` (``P = J``) or ``"learned"`` (``P = A − Aᵀ``).
        dissipation: Learn ``Q = −L Lᵀ`` (``False``: ``Q = 0``).
        rank: Columns ``r`` of ``L`` (``None``: ``m = 2 n d``).
    """

    name: ClassVar[str] = "ghnn"

    def __init__(self, n_particles: int = 1, dim: int = 1, node_constants: int = 1,
                 hidden: int = 200, layers: int = 3, activation: str = "tanh",
                 structure: str = "canonical", dissipation: bool = True,
                 rank: int | None = None) -> None:
        if structure not in STRUCTURES:
            raise ValueError(f"{self.name}: structure must be one of "
                             f"{', '.join(map(repr, STRUCTURES))}, got {structure!r}")
        if not isinstance(dissipation, bool):
            raise ValueError(f"{self.name}: dissipation must be True or False, "
                             f"got {dissipation!r}")
        if rank is not None and (not isinstance(rank, int) or isinstance(rank, bool)
                                 or rank < 1):
            raise ValueError(f"{self.name}: rank must be None or an int >= 1, got {rank!r}")
        self._init_flat(False, n_particles, dim, node_constants, hidden, layers, activation)
        self._config.update(structure=structure, dissipation=dissipation, rank=rank)
        self.structure, self.dissipation = structure, dissipation
        m = self.state_size
        self.rank = m if rank is None else rank
        self.structure_net = (_Net(self.in_features, hidden, m * m, layers, activation,
                                   rows="graphs") if structure == "learned" else None)
        self.dissipation_net = (_Net(self.in_features, hidden, m * self.rank, layers,
                                     activation, rows="graphs") if dissipation else None)

    @property
    def state_size(self) -> int:
        """``m = 2 n d``: the length of the flattened state ``x = [q, p]``."""
        return 2 * self.n_particles * self.dim

    # ------------------------------------------------------------ the pieces
    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """Learned ``H`` without input checks: ``q, p [N, d]`` -> ``[G]``."""
        return self.net(self.flatten(q, p, graph))[:, 0]

    def _matrices(self, q: Tensor, p: Tensor, graph: GraphBatch
                  ) -> tuple[Tensor | None, Tensor | None]:
        """``P [G, m, m]`` (``None``: ``J``) and ``Q [G, m, m]`` (``None``: 0)."""
        g, m = graph.num_graphs, self.state_size
        x = self.flatten(q, p, graph)
        skew = lower = None
        if self.structure_net is not None:
            a = self.structure_net(x).reshape(g, m, m)
            skew = a - a.transpose(1, 2)
        if self.dissipation_net is not None:
            factor = self.dissipation_net(x).reshape(g, m, self.rank)
            lower = -factor @ factor.transpose(1, 2)
        return skew, lower

    def matrices(self, graph: GraphLike) -> tuple[Tensor, Tensor]:
        """``P`` and ``Q`` of each graph at its state, ``[G, m, m]`` each (``J`` and
        zeros where fixed), rows and columns ordered as ``x = [q (n·d), p (n·d)]``."""
        g = as_graph(graph)
        self.check_state(g.q, g.p, g)
        skew, neg = self._matrices(g.q, g.p, g)
        dtype, device, m = g.q.dtype, g.q.device, self.state_size
        if skew is None:
            half = m // 2
            eye = torch.eye(half, dtype=dtype, device=device)
            zero = torch.zeros_like(eye)
            skew = torch.cat([torch.cat([zero, eye], 1), torch.cat([-eye, zero], 1)], 0)
            skew = skew.expand(g.num_graphs, m, m)
        if neg is None:
            neg = torch.zeros(g.num_graphs, m, m, dtype=dtype, device=device)
        return skew, neg

    # ------------------------------------------------------------- dynamics
    def _parts(self, q: Tensor, p: Tensor, graph: GraphBatch, create_graph: bool | None
               ) -> tuple[Pair, Pair]:
        create = self._create_graph(q, p, create_graph)
        ((dh_dq, dh_dp),) = state_gradients((self.energy,), q, p, graph, create)
        with torch.set_grad_enabled(create):  # no autograd graph unless it is kept
            skew, neg = self._matrices(q, p, graph)
        g = graph.num_graphs
        grad = torch.cat([dh_dq.reshape(g, -1), dh_dp.reshape(g, -1)], 1)  # [G, m]
        if skew is None:  # J ∇H without the matrix
            conservative = (dh_dp, -dh_dq)
        else:
            conservative = self._split((skew @ grad[..., None])[..., 0], q)
        if neg is None:
            dissipative = (torch.zeros_like(q), torch.zeros_like(p))
        else:
            dissipative = self._split((neg @ grad[..., None])[..., 0], q)
        return conservative, dissipative

    def _split(self, x: Tensor, q: Tensor) -> Pair:
        """``[G, m]`` -> ``(dq, dp)``, each shaped as ``q [N, d]``."""
        half = self.state_size // 2
        return x[:, :half].reshape(q.shape), x[:, half:].reshape(q.shape)
