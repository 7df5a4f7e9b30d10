"""Constrained Hamiltonian neural network (CHNN) over a fixed-size flattened state.

Finzi, Wang & Wilson, "Simplifying Hamiltonian and Lagrangian Neural Networks via
Explicit Constraints" (NeurIPS 2020): learn ``H`` in Cartesian coordinates, where it is
simple, and impose the holonomic constraints ``Φ(x) = 0`` explicitly instead of
learning in generalised (angle) coordinates.

The learned Hamiltonian has the paper's form ``H = ½ Σ_i |p_i|² / m_i + V(x)``: ``V``
an MLP of the flattened positions and node constants ``[q (n·d), c (n·k)]`` of a graph
of exactly ``n_particles`` nodes, and each particle's inverse mass ``1/m_i`` a small
positive network (softplus) of its own node constants (a learned constant when there
are none). The field is Hamilton's ``J ∇H`` projected onto the tangent space of the
constraint manifold of ``Ψ(z) = [Φ(x); Φ̇(x, p)]``, ``Φ̇ = DΦ(x) ∂H/∂p``:

``ż = J ∇H − J DΨᵀ λ``, ``(DΨ J DΨᵀ) λ = DΨ J ∇H``,

so ``DΨ ż = 0`` at every state (on the manifold or not) and ``H`` is conserved
(``DΨ J DΨᵀ`` is antisymmetric). On the manifold this is the textbook
``ẋ = M⁻¹ p``, ``ṗ = −∇V − DΦᵀ μ`` with the multipliers ``μ`` that keep ``Φ̈ = 0``.
Each graph's ``2C × 2C`` system is solved with ``torch.linalg.solve`` (graphs with
fewer constraints padded with identity rows).

Constraints are read from the graph, as :class:`systems.chain.PendulumChain` encodes
them: each undirected edge ``(s, r)`` is a rigid link ``|x_s − x_r| = L`` with ``L =
edge_attr[:, length_feature]``, and each node whose node constant ``c[:, pivot_constant]``
is positive is tied to the origin, ``|x_n| = c[n, pivot_constant]``. As ``Φ`` this
uses ``(|x_s − x_r|² − L²)/2`` (and ``(|x_n|² − ℓ²)/2``), whose Jacobian rows are the
link vectors.

Rollouts: the projected field keeps ``Ψ`` constant up to the integrator's error, which
accumulates; :meth:`CHNN.project` maps a state back onto the manifold (Newton steps on
the positions along ``M⁻¹ DΦᵀ``, then the momenta projected so that ``DΦ M⁻¹ p = 0``),
and :func:`hogn.rollout` applies it after every integrator step of a model that has a
``project`` method.
"""

from __future__ import annotations

import contextlib
from typing import ClassVar

import torch
from torch import Tensor, nn

from hogn import integrators
from hogn.graph import GraphBatch
from hogn.models.base import DynamicsModel, GraphLike, as_graph, register, state_gradients
from hogn.models.mlp_models import _FlatState
from hogn.nn import MLP as _Net

__all__ = ["CHNN", "Constraints"]

_UNIT = 0.5413248546129181  # softplus⁻¹(1): inverse masses start near 1


class Constraints:
    """The distance constraints of a batch of fixed-size graphs, as dense per-graph
    incidence matrices.

    Row ``k`` of graph ``g`` is the constraint ``|Σ_j incidence[g, k, j] x_j| =
    length[g, k]``: ``+1`` on node ``a`` and ``−1`` on node ``b`` for a link, ``+1`` on
    node ``a`` alone for a link to the origin. Graphs with fewer constraints than the
    largest count (``width``) have zero rows, marked in ``padding [G, width]``.

    Args:
        graph: Graphs of exactly ``n`` nodes each.
        n: Nodes per graph.
        length_feature: Column of ``edge_attr`` holding each link's length.
        pivot_constant: Column of ``c`` holding the length of a node's link to the
            origin (``0``: none), or ``None`` for no such links.

    Raises:
        ValueError: when a column is missing.
    """

    def __init__(self, graph: GraphBatch, n: int, length_feature: int,
                 pivot_constant: int | None) -> None:
        device = graph.c.device
        src, dst = graph.edge_index
        if src.numel():
            if graph.edge_attr is None or graph.edge_attr.shape[1] <= length_feature:
                got = None if graph.edge_attr is None else list(graph.edge_attr.shape)
                raise ValueError(f"chnn reads link lengths from edge_attr[:, {length_feature}]"
                                 f", got edge_attr {got}")
            lo, hi = torch.minimum(src, dst), torch.maximum(src, dst)
            proper = (lo != hi).nonzero().flatten()
            _, first = _unique_first(lo[proper] * graph.num_nodes + hi[proper])
            keep = proper[first]                       # each undirected link once
            ends = (lo[keep], hi[keep])
            link_length = graph.edge_attr[keep, length_feature]
        else:
            ends = (src, dst)
            link_length = graph.c.new_zeros(0)
        if pivot_constant is not None:
            if graph.c.shape[1] <= pivot_constant:
                raise ValueError(f"chnn reads pivot-link lengths from c[:, {pivot_constant}], "
                                 f"got c with {graph.c.shape[1]} column(s)")
            pinned = (graph.c[:, pivot_constant] > 0).nonzero().flatten()
            pin_length = graph.c[pinned, pivot_constant]
        else:
            pinned = torch.zeros(0, dtype=torch.long, device=device)
            pin_length = graph.c.new_zeros(0)
        a = torch.cat([ends[0], pinned])
        b = torch.cat([ends[1], torch.full_like(pinned, -1)])
        length = torch.cat([link_length, pin_length])
        g = graph.num_graphs
        graph_of = a // n
        order = torch.argsort(graph_of, stable=True)
        a, b, graph_of, length = a[order], b[order], graph_of[order], length[order]
        counts = torch.bincount(graph_of, minlength=g)
        slot = torch.arange(a.numel(), device=device) - (torch.cumsum(counts, 0) - counts)[graph_of]
        self.width = int(counts.max()) if g and a.numel() else 0
        self.incidence = graph.c.new_zeros((g, self.width, n))
        self.incidence[graph_of, slot, a - graph_of * n] = 1.0
        link = b >= 0
        self.incidence[graph_of[link], slot[link], b[link] - graph_of[link] * n] = -1.0
        self.length = graph.c.new_zeros((g, self.width))
        self.length[graph_of, slot] = length
        self.padding = torch.arange(self.width, device=device)[None, :] >= counts[:, None]
        self._eye = {}
        for blocks in (1, 2):
            pad = self.padding.repeat(1, blocks)
            self._eye[blocks] = torch.diag_embed(pad.to(graph.c.dtype)) if bool(pad.any()) else None

    def vectors(self, x: Tensor) -> Tensor:
        """``x_a − x_b`` (``x_a`` for a link to the origin) of each constraint, ``[G, w,
        d]``, from per-graph node values ``x [G, n, d]`` (zero in padding)."""
        return self.incidence.to(x.dtype) @ x

    def rows(self, vec: Tensor) -> Tensor:
        """Jacobian-shaped rows ``[G, w, n·d]``: ``vec [G, w, d]`` on node ``a``, ``−vec``
        on node ``b`` (``DΦ`` for ``vec`` the link vectors)."""
        g, w, _ = vec.shape
        inc = self.incidence.to(vec.dtype)
        return (inc[..., None] * vec[:, :, None, :]).reshape(g, w, -1)

    def residual(self, x: Tensor) -> Tensor:
        """``Φ = (|x_a − x_b|² − L²)/2`` of each constraint, ``[G, w]`` (zero in padding)."""
        return 0.5 * (self.vectors(x).square().sum(-1) - self.length.to(x.dtype).square())

    def solve(self, matrix: Tensor, rhs: Tensor, blocks: int = 1) -> Tensor:
        """Solve ``matrix [G, B·w, B·w] λ = rhs [G, B·w]`` with identity rows on the
        padding of each of the ``blocks`` constraint blocks."""
        eye = self._eye[blocks]
        if eye is not None:
            matrix = matrix + eye.to(matrix.dtype)
        return torch.linalg.solve(matrix, rhs[..., None])[..., 0]


def _unique_first(key: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted unique values of ``key`` and the index of the first occurrence of each."""
    uniq, inverse = torch.unique(key, return_inverse=True)
    first = torch.full_like(uniq, key.numel())
    first = first.scatter_reduce(0, inverse, torch.arange(key.numel(), device=key.device),
                                 reduce="amin")
    return uniq, first


@register
class CHNN(_FlatState, DynamicsModel):
    """Constrained Hamiltonian network: ``H = ½ Σ |p_i|²/m_i + V(x)`` learned in
    Cartesian coordinates, its field projected onto the constraint manifold read
    from the graph (see the module docstring).

    A fixed-size model: graphs must have exactly ``n_particles`` nodes, in the same
    order (``V`` reads the flattened positions). Not separable (the projection mixes
    ``q`` and ``p``): ``rk4`` and the implicit methods fit, the splitting methods are
    refused. It conserves its ``H`` (:meth:`hamiltonian`) but is not a
    :class:`~hogn.models.HamiltonianModel`: its field is not ``J ∇H``.

    Args:
        n_particles: Particles per graph ``n`` (fixed).
        dim: Coordinates per particle ``d``.
        node_constants: Node constants per particle ``k`` (inputs of ``V`` and of the
            masses).
        edge_features: Edge constants per edge ``a`` (a link's length is one of them).
        hidden: Hidden width of ``V``'s MLP.
        layers: Linear layers of ``V``'s MLP, output included.
        activation: Smooth activation name.
        length_feature: Column of ``edge_attr`` holding each link's length.
        pivot_constant: Column of ``c`` holding a node's link length to the origin
            (``0``: none); ``None``: no node is tied to the origin.
        mass_hidden: Hidden width of the inverse-mass network of the node constants.
    """

    name: ClassVar[str] = "chnn"
    uses_edges: ClassVar[bool] = True
    separable: ClassVar[bool] = False
    project_iterations: ClassVar[int] = 5

    def __init__(self, n_particles: int = 1, dim: int = 2, node_constants: int = 2,
                 edge_features: int = 1, hidden: int = 200, layers: int = 3,
                 activation: str = "tanh", length_feature: int = 0,
                 pivot_constant: int | None = 1, mass_hidden: int = 16) -> None:
        self._init_fixed(dict(
            n_particles=n_particles, dim=dim, node_constants=node_constants,
            edge_features=edge_features, hidden=hidden, layers=layers, activation=activation,
            length_feature=length_feature, pivot_constant=pivot_constant,
            mass_hidden=mass_hidden))
        if not isinstance(length_feature, int) or not 0 <= length_feature < max(edge_features, 1):
            raise ValueError(f"chnn: length_feature must be a column of edge_attr (0 .. "
                             f"{max(edge_features, 1) - 1}), got {length_feature!r}")
        if pivot_constant is not None and (not isinstance(pivot_constant, int)
                                           or not 0 <= pivot_constant < node_constants):
            raise ValueError(f"chnn: pivot_constant must be None or a column of c (0 .. "
                             f"{node_constants - 1}), got {pivot_constant!r}")
        self.length_feature, self.pivot_constant = length_feature, pivot_constant
        self.net = _Net(n_particles * (dim + node_constants), hidden, 1, layers, activation,
                        rows="graphs")
        self.mass_net: nn.Module | None = None
        if node_constants:
            self.mass_net = _Net(node_constants, mass_hidden, 1, 2, activation, rows="nodes")
        self.mass_bias = nn.Parameter(torch.tensor(_UNIT))
        self._constraints_cache: tuple[GraphBatch, Constraints] | None = None

    # ------------------------------------------------------------ the learned H
    def inverse_masses(self, graph: GraphBatch) -> Tensor:
        """Learned ``1/m`` of each node, ``[N]`` (positive)."""
        if self.mass_net is None:
            raw = self.mass_bias.expand(graph.num_nodes)
        else:
            raw = self.mass_net(graph.c)[:, 0] + self.mass_bias
        return nn.functional.softplus(raw)

    def potential(self, q: Tensor, graph: GraphBatch) -> Tensor:
        """Learned ``V`` of each graph, ``[G]``, from ``q [N, d]`` and ``c``."""
        return self.net(self.flatten_with_constants(q, graph))[:, 0]

    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """Learned ``H = ½ Σ |p|²/m + V`` without input checks, ``[G]``."""
        kinetic = 0.5 * p.square().sum(-1) * self.inverse_masses(graph)
        g = graph.num_graphs
        return kinetic.reshape(g, -1).sum(-1) + self.potential(q, graph)

    def hamiltonian(self, graph: GraphLike) -> Tensor:
        """Learned ``H`` of each graph at its state, ``[G]`` (conserved by the field)."""
        g = as_graph(graph)
        self.check_state(g.q, g.p, g)
        return self.energy(g.q, g.p, g)

    # ------------------------------------------------------------- constraints
    def constraints(self, graph: GraphLike) -> Constraints:
        """The constraints the model reads from ``graph`` (see :class:`Constraints`).

        The last graph's are kept (with a reference to it) and given again for the
        same graph object, as :func:`hogn.rollout` asks at every step; a graph's
        ``edge_index``, ``edge_attr`` and ``c`` must not be changed in place."""
        g = as_graph(graph)
        cached = self._constraints_cache
        if cached is not None and cached[0] is g:
            return cached[1]
        cons = Constraints(g, self.n_particles, self.length_feature, self.pivot_constant)
        self._constraints_cache = (g, cons)
        return cons

    def constraint_values(self, q: Tensor, p: Tensor, graph: GraphLike
                          ) -> tuple[Tensor, Tensor]:
        """``Φ`` and ``Φ̇ = DΦ M⁻¹ p`` (with the learned masses) of each constraint,
        each ``[G, w]`` (rows as in :meth:`constraints`; zero in padding)."""
        g = as_graph(graph)
        cons = self.constraints(g)
        x, v = self._per_graph(q, g), self._per_graph(p * self.inverse_masses(g)[:, None], g)
        return cons.residual(x), (cons.vectors(x) * cons.vectors(v)).sum(-1)

    def _per_graph(self, x: Tensor, graph: GraphBatch) -> Tensor:
        return x.reshape(graph.num_graphs, self.n_particles, -1)

    # ---------------------------------------------------------------- dynamics
    def _derivative(self, q: Tensor, p: Tensor, graph: GraphBatch,
                    create_graph: bool | None) -> tuple[Tensor, Tensor]:
        return self._projected(q, p, graph, self.constraints(graph),
                               self._create_graph(q, p, create_graph))

    def _projected(self, q: Tensor, p: Tensor, graph: GraphBatch, cons: Constraints,
                   create_graph: bool, inv_m: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``J ∇H − J DΨᵀ λ`` (see the module docstring), with ``∂H/∂p = p/m`` written
        out and ``∂H/∂q = ∇V`` by autograd; without ``create_graph`` the result carries
        no autograd graph. ``inv_m``: the inverse masses, if already computed."""
        ((dv_dq, _),) = state_gradients((lambda x, _p, g: self.potential(x, g),), q, p, graph,
                                        create_graph)
        with contextlib.nullcontext() if create_graph else torch.no_grad():
            if inv_m is None:
                inv_m = self.inverse_masses(graph)
            return self._project_field(q, p, dv_dq, inv_m, graph, cons)

    def _project_field(self, q: Tensor, p: Tensor, dv_dq: Tensor, inv_m: Tensor,
                       graph: GraphBatch, cons: Constraints) -> tuple[Tensor, Tensor]:
        g, d = graph.num_graphs, self.dim
        x = self._per_graph(q, graph)
        v = self._per_graph(p * inv_m[:, None], graph)             # ∂H/∂p
        a_rows = cons.rows(cons.vectors(x))                        # DΦ       [G, C, nd]
        b_rows = cons.rows(cons.vectors(v))                        # ∂Φ̇/∂x   [G, C, nd]
        inv_m_flat = inv_m.reshape(g, -1).repeat_interleave(d, -1)[:, None, :]
        am_rows = a_rows * inv_m_flat                              # DΦ M⁻¹ = ∂Φ̇/∂p
        dpsi_x = torch.cat([a_rows, b_rows], 1)                    # [G, 2C, nd]
        dpsi_p = torch.cat([torch.zeros_like(am_rows), am_rows], 1)
        ux, up = v.reshape(g, -1), -dv_dq.reshape(g, -1)
        s = dpsi_x @ dpsi_p.transpose(1, 2) - dpsi_p @ dpsi_x.transpose(1, 2)
        rhs = (dpsi_x @ ux[..., None] + dpsi_p @ up[..., None])[..., 0]
        lam = cons.solve(s, rhs, blocks=2)
        dq = ux - (dpsi_p.transpose(1, 2) @ lam[..., None])[..., 0]
        dp = up + (dpsi_x.transpose(1, 2) @ lam[..., None])[..., 0]
        return dq.reshape(q.shape), dp.reshape(p.shape)

    def rollout_field(self, graph: GraphLike) -> integrators.VectorField:
        g = as_graph(graph)
        self.check_state(g.q, g.p, g)
        cons = self.constraints(g)
        with torch.no_grad():
            inv_m = self.inverse_masses(g)

        def field(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
            with torch.no_grad():
                return self._projected(q, p, g, cons, False, inv_m)

        return field

    rollout_field.__doc__ = DynamicsModel.rollout_field.__doc__

    def project(self, q: Tensor, p: Tensor, graph: GraphLike) -> tuple[Tensor, Tensor]:
        """The nearest state on the constraint manifold, in the mass metric.

        Positions: Newton steps ``x ← x − M⁻¹ DΦᵀ K⁻¹ Φ`` with ``K = DΦ M⁻¹ DΦᵀ``,
        at least one, then until every ``|Φ|`` is below ``10 ε L²`` (``ε`` the
        dtype's precision, ``L`` the constraint's length), at most
        :attr:`project_iterations` (quadratic convergence: a state a rollout step
        moved off by ``δ`` is back to rounding after one); then momenta
        ``p ← p − DΦᵀ K⁻¹ DΦ M⁻¹ p``, so that ``Φ̇ = 0``.
        :func:`hogn.rollout` calls it after every integrator step.

        Args:
            q: Positions ``[N, d]``.
            p: Momenta ``[N, d]``.
            graph: Static graph (constraints, constants).

        Returns:
            ``(q, p)`` on the manifold, ``[N, d]`` each.
        """
        g = as_graph(graph)
        cons = self.constraints(g)
        with torch.no_grad():
            inv_m = self.inverse_masses(g)
            w = inv_m.reshape(g.num_graphs, -1).repeat_interleave(self.dim, -1)  # [G, nd]
            x = self._per_graph(q, g)
            tol = 10 * torch.finfo(q.dtype).eps * cons.length.to(q.dtype).square()
            for step in range(self.project_iterations):
                residual = cons.residual(x)
                if step and not bool((residual.abs() > tol).any()):
                    break
                rows = cons.rows(cons.vectors(x))
                k = (rows * w[:, None]) @ rows.transpose(1, 2)
                mu = cons.solve(k, residual)
                shift = w * (rows.transpose(1, 2) @ mu[..., None])[..., 0]
                x = x - shift.reshape(x.shape)
            rows = cons.rows(cons.vectors(x))
            k = (rows * w[:, None]) @ rows.transpose(1, 2)
            flat_p = p.reshape(g.num_graphs, -1)
            mu = cons.solve(k, (rows @ (w * flat_p)[..., None])[..., 0])
            flat_p = flat_p - (rows.transpose(1, 2) @ mu[..., None])[..., 0]
        return x.reshape(q.shape), flat_p.reshape(p.shape)
