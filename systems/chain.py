"""An N-link pendulum chain in Cartesian coordinates, held by Lagrange multipliers.

``N`` point masses in the plane hang from a fixed pivot at the origin: particle 0 is
tied to the pivot by a rigid massless link of length ``l_0``, particle ``i`` to
particle ``i − 1`` by one of length ``l_i``. ``N = 1`` is the pendulum, ``N = 2``
the double pendulum (the same physics as :class:`~systems.oscillators.Pendulum` and
:class:`~systems.oscillators.DoublePendulum`, in angles), any ``N`` a chain.

State: positions ``q [N, 2]`` (``y`` up, gravity ``−g ŷ``) and Cartesian momenta
``p [N, 2] = m v``. The Hamiltonian is that of free particles,
``H = Σ |p_i|²/2m_i + g Σ m_i y_i`` (the energy, conserved; it equals the double
pendulum's ``H`` and is the pendulum's minus ``m g l``), and the links are holonomic
constraints ``Φ_i(q) = (|q_i − q_{i−1}|² − l_i²)/2 = 0`` (``q_{−1} = 0``), with their
time derivatives ``Φ̇_i = (q_i − q_{i−1})·(v_i − v_{i−1}) = 0``. The motion is

``dq = ∂H/∂p = p/m``, ``dp = −∂H/∂q − DΦᵀ λ``,

with the multipliers ``λ [N]`` (the link tensions divided by their lengths) chosen so
that ``Φ̈ = 0``: ``K λ = |u|² + DΦ M⁻¹ f``, where ``f = −∂H/∂q``, ``d_i = q_i − q_{i−1}``,
``u_i = v_i − v_{i−1}`` and ``K = DΦ M⁻¹ DΦᵀ`` is tridiagonal,
``K_ii = |d_i|² (1/m_i + 1/m_{i−1})`` (no second term for ``i = 0``),
``K_{i,i+1} = −d_i·d_{i+1}/m_i``. Each graph's ``K`` is solved with
``torch.linalg.solve`` (graphs padded to the largest). On the constraint manifold
this is the same field as the projected Hamiltonian field ``P(z) J ∇H`` of a
constrained Hamiltonian network (:class:`hogn.models.CHNN`), computed another way.

Graph encoding (what a model needs to know the constraints):

- node constants ``c [N, 2]``: mass, and the length of the node's link to the fixed
  pivot (``l_0`` on the first node of each chain, ``0`` on every other node: no link);
- edges: the links between consecutive particles, each in both directions
  (``i − 1 ↔ i``), with ``edge_attr [E, 1]`` the link's length ``l_i``.

So every constraint is ``|q_s − q_r| = L`` for an edge, or ``|q_n| = c[n, 1]`` for a
node whose pivot constant is positive. The system's own field reads the chain
order from ``ptr`` (nodes of a graph in order from the pivot), its link lengths
from the state (they hold on the manifold).

Initial states: per link an angle from the downward vertical ``θ_i ~
U[−max_angle, max_angle]`` and an angular velocity ``ω_i ~ U[−max_rate,
max_rate]``; masses and lengths are numbers or ``(lo, hi)`` ranges drawn per
particle. Positions ``q_i = Σ_{k≤i} l_k (sin θ_k, −cos θ_k)`` and velocities
``v_i = Σ_{k≤i} l_k ω_k (cos θ_k, sin θ_k)`` satisfy the constraints and their
time derivatives to rounding.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from hogn.graph import GraphBatch, ptr_from_sizes
from hogn.integrators import VectorField
from systems.base import System, node_sum, uniform

__all__ = ["PendulumChain", "chain_edges"]


class _Chain:
    """The chain order of a batch: each node's parent (the node before it), whether it
    hangs from the pivot, and its slot ``(graph, local index)`` in padded matrices."""

    def __init__(self, graph: GraphBatch) -> None:
        n = graph.num_nodes
        batch = graph.batch
        index = torch.arange(n, device=batch.device)
        self.local = index - graph.ptr[:-1][batch]
        self.first = self.local == 0
        self.parent = (index - 1).clamp(min=0)
        self.child = index[~self.first]          # nodes with a parent
        self.of_child = self.child - 1           # their parents
        self.batch = batch
        self.num_graphs = graph.num_graphs
        self.width = int(graph.sizes.max()) if n else 0

    def behind(self, x: Tensor) -> Tensor:
        """``x`` of each node's parent, zero for the first node: ``[..., N, k]``."""
        return torch.where(self.first[:, None], torch.zeros_like(x), x[..., self.parent, :])

    def solve(self, diag: Tensor, off: Tensor, rhs: Tensor) -> Tensor:
        """Solve each graph's tridiagonal ``K λ = rhs`` (``diag, rhs [..., N]``; ``off
        [..., N]``: ``K`` between a node and its parent, ignored on first nodes)."""
        lead = rhs.shape[:-1]
        g, w = self.num_graphs, self.width
        k = rhs.new_zeros((*lead, g, w, w))
        eye = torch.arange(w, device=rhs.device)
        k[..., eye, eye] = 1.0  # padding slots: λ = 0
        b, loc = self.batch, self.local
        k[..., b, loc, loc] = diag
        cb, cl = b[self.child], loc[self.child]
        k[..., cb, cl, cl - 1] = off[..., self.child]
        k[..., cb, cl - 1, cl] = off[..., self.child]
        dense = rhs.new_zeros((*lead, g, w))
        dense[..., b, loc] = rhs
        return torch.linalg.solve(k, dense)[..., b, loc]


class PendulumChain(System):
    """``N`` masses on rigid links hanging from the origin, in Cartesian coordinates
    (see the module docstring for the physics, the multipliers and the graph).

    Parameters: ``mass`` and ``length`` (numbers or ``(lo, hi)`` ranges per particle),
    ``g``, ``max_angle`` (largest initial angle from the vertical, rad) and
    ``max_rate`` (largest initial angular velocity of a link, rad per time unit).
    """

    name = "pendulum-chain"
    native_dim = 2
    n_particles: ClassVar[int | None] = None
    defaults: ClassVar[dict[str, Any]] = {"mass": 1.0, "length": 1.0, "g": 1.0,
                                          "max_angle": math.pi / 4, "max_rate": 0.5}
    chaotic = True
    separable = False  # the tensions depend on the velocities
    max_step = 0.02
    description = ("N-link pendulum chain in Cartesian coordinates, links held by Lagrange "
                   "multipliers; |θ| ≤ π/4, |ω| ≤ 0.5 per link (chaotic for N ≥ 2)")

    def _validate(self) -> None:
        super()._validate()
        if self.embed_dim != self.native_dim:
            raise ValueError(f"{self.name}: the chain is planar and stored as it is "
                             f"(embed_dim=2), got embed_dim={self.embed_dim!r}")
        self._positive_range("length")
        for key in ("max_angle", "max_rate"):
            v = self.params[key]
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v)
                                           and v >= 0):
                raise ValueError(f"{self.name}: {key} must be a finite number >= 0, got {v!r}")
        if self.params["max_angle"] > math.pi:
            raise ValueError(f"{self.name}: max_angle must be at most π, got "
                             f"{self.params['max_angle']!r}")

    # ------------------------------------------------------------------- physics
    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """``H = Σ |p|²/2m + g Σ m y`` per graph, ``[..., G]``."""
        m = graph.c[:, 0]
        e = p.square().sum(-1) / (2 * m) + float(self.params["g"]) * m * q[..., 1]
        return node_sum(e, graph)

    def _constrained(self, graph: GraphBatch, force: Any) -> VectorField:
        """The field ``dq = p/m``, ``dp = f − DΦᵀ λ`` for the unconstrained force
        ``force(q, p) -> f [..., N, 2]``."""
        chain = _Chain(graph)
        inv_m = 1.0 / graph.c[:, 0:1]
        inv_m_parent = torch.where(chain.first[:, None], torch.zeros_like(inv_m),
                                   inv_m[chain.parent])

        def field(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
            v = p * inv_m
            f = force(q, p)
            d = q - chain.behind(q)                     # link vectors [..., N, 2]
            u = v - chain.behind(v)                     # their rates
            a = f * inv_m
            rhs = u.square().sum(-1) + (d * (a - chain.behind(a))).sum(-1)
            diag = d.square().sum(-1) * (inv_m + inv_m_parent)[:, 0]
            # K between node i and its parent j: −d_j·d_i / m_j
            off = -(d * chain.behind(d)).sum(-1) * inv_m_parent[:, 0]
            lam = chain.solve(diag, off, rhs)
            pull = lam[..., None] * d                  # λ_i d_i, on node i and −on its parent
            reaction = torch.zeros_like(pull)
            reaction = reaction.index_add(-2, chain.of_child, pull[..., chain.child, :])
            return v, f - pull + reaction

        return field

    def _native_field(self, graph: GraphBatch) -> VectorField:
        """The constrained field with gravity ``f = −m g ŷ`` written out."""
        gravity = torch.zeros_like(graph.c[:, :2])
        gravity[:, 1] = -float(self.params["g"]) * graph.c[:, 0]
        return self._constrained(graph, lambda q, p: gravity.expand_as(q))

    def time_derivative(self, q: Tensor, p: Tensor, graph: GraphBatch,
                        create_graph: bool = False) -> tuple[Tensor, Tensor]:
        """The constrained equations of motion with ``f = −∂H/∂q`` and ``dq = ∂H/∂p``
        by autograd of :meth:`hamiltonian` (the definition; the hand-derived
        :meth:`analytic_vector_field` writes gravity out)."""
        def force(x: Tensor, y: Tensor) -> Tensor:
            return System.time_derivative(self, x, y, graph, create_graph=create_graph)[1]

        return self._constrained(graph, force)(q, p)

    # --------------------------------------------------------------- constraints
    @staticmethod
    def link_lengths(graph: GraphBatch) -> Tensor:
        """Each node's link length to its parent (or the pivot), ``[N]``, read from the
        graph: ``c[:, 1]`` on first nodes, ``edge_attr`` of the edge from the parent."""
        lengths = graph.c[:, 1].clone()
        src, dst = graph.edge_index
        down = dst == src + 1  # parent -> child edges
        lengths[dst[down]] = graph.edge_attr[down, 0]
        if bool((lengths <= 0).any()):
            raise ValueError("pendulum-chain: every node needs a positive link length "
                             "(pivot constant c[:, 1] on first nodes, edge_attr on links)")
        return lengths

    def constraint_residuals(self, q: Tensor, p: Tensor, graph: GraphBatch
                             ) -> tuple[Tensor, Tensor]:
        """How far states are off the constraint manifold.

        Args:
            q: Positions ``[..., N, d]``.
            p: Momenta ``[..., N, d]``.
            graph: Static graph.

        Returns:
            ``(|q_i − q_{i−1}| − l_i, (q_i − q_{i−1})·(v_i − v_{i−1}) / l_i)``, each
            ``[..., N]``: the length error of every link and its rate of change.
        """
        chain = _Chain(graph)
        lengths = self.link_lengths(graph)
        v = p / graph.c[:, 0:1]
        d, u = q - chain.behind(q), v - chain.behind(v)
        return d.norm(dim=-1) - lengths, (d * u).sum(-1) / lengths

    # ---------------------------------------------------------------- sampling
    def default_edges(self, sizes: list[int], generator: torch.Generator
                      ) -> tuple[Tensor, Tensor | None]:
        """Links ``i − 1 ↔ i`` in both directions, graph after graph (each graph's
        parent -> child edges, then child -> parent); their lengths are drawn with the
        states, so :meth:`sample` sets ``edge_attr``."""
        return chain_edges(sizes), None

    def _sample_chains(self, sizes: list[int], generator: torch.Generator
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``q, p [N, 2]``, ``c [N, 2]`` and each node's link length ``[N]`` (float64)."""
        n = sum(sizes)
        m = uniform(generator, n, *self._positive_range("mass"))
        lengths = uniform(generator, n, *self._positive_range("length"))
        a, b = float(self.params["max_angle"]), float(self.params["max_rate"])
        theta = uniform(generator, n, -a, a)
        omega = uniform(generator, n, -b, b)
        step_q = lengths[:, None] * torch.stack([torch.sin(theta), -torch.cos(theta)], -1)
        step_v = (lengths * omega)[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)],
                                                          -1)
        ptr = ptr_from_sizes(sizes)
        batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        q, v = (_segment_cumsum(x, ptr, batch) for x in (step_q, step_v))
        first = torch.zeros(n, dtype=torch.bool)
        first[ptr[:-1]] = True
        pivot = torch.where(first, lengths, torch.zeros_like(lengths))
        return q, m[:, None] * v, torch.stack([m, pivot], -1), lengths

    def _sample(self, sizes: list[int], generator: torch.Generator
                ) -> tuple[Tensor, Tensor, Tensor]:
        q, p, c, _ = self._sample_chains(sizes, generator)
        return q, p, c

    def sample(self, n: int, seed: int | torch.Generator = 0,
               n_particles: int | tuple[int, int] | None = None,
               dtype: torch.dtype = torch.float64,
               device: torch.device | str | None = None) -> GraphBatch:
        """Draw ``n`` chains as one batch of graphs (as :meth:`System.sample`), with
        ``c [N, 2]`` (mass, pivot-link length or 0) and ``edge_attr [E, 1]`` (the
        length of each link)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"number of samples must be a positive int, got {n!r}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be floating point, got {dtype}")
        gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
        sizes = self._sizes(n, n_particles, gen)
        q, p, c, lengths = self._sample_chains(sizes, gen)
        edge_index, _ = self.default_edges(sizes, gen)
        child = edge_index.max(0).values
        q, p = self.embed(q, p, len(sizes))
        graph = GraphBatch(q, p, c, edge_index, ptr_from_sizes(sizes), lengths[child][:, None])
        return graph.to(device, dtype)


def chain_edges(sizes: list[int]) -> Tensor:
    """``edge_index [2, E]`` of chains of ``sizes`` nodes: ``i − 1 → i`` then ``i → i − 1``
    within each graph, the graphs in order (edges grouped by graph, as batches need)."""
    parts = []
    start = 0
    for n in sizes:
        fwd = torch.stack([torch.arange(start, start + n - 1), torch.arange(start + 1, start + n)])
        parts += [fwd, fwd.flip(0)]
        start += n
    return torch.cat(parts, 1) if parts else torch.empty(2, 0, dtype=torch.long)


def _segment_cumsum(x: Tensor, ptr: Tensor, batch: Tensor) -> Tensor:
    """Cumulative sums of ``x [N, k]`` restarting at every graph's first node."""
    total = x.cumsum(0)
    before = torch.cat([x.new_zeros(1, x.shape[1]), total])[ptr[:-1]]
    return total - before[batch]
