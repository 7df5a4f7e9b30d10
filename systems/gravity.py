"""Gravitating point masses: two-body, three-body and softened N-body gravity.

``H = Σ_i |p_i|²/2m_i − Σ_{i<j} G m_i m_j / sqrt(|q_i − q_j|² + ε²)`` summed over the
pairs of a complete graph (``ε = 0`` for two- and three-body).

Which pairs: those of ``edge_index`` (each stored in both directions), except that an
*empty* ``edge_index`` stands for the complete graphs (every pair of each graph), and
that ``GravityNBody(edges="none")`` sums over every pair whatever ``edge_index``
holds (so a model's neighbour graph may ride along in the batch). Large complete
graphs are never materialised: their energy, field and close-pass test run over every
pair a block of rows at a time (:func:`pair_potential`, :func:`pair_forces`), in
``O(N²)`` time and ``O(N · rows)`` memory, in the dtype given (float64 for ground
truth). ``GravityNBody``'s sampler carries the complete ``edge_index`` only up to
:data:`AUTO_COMPLETE_MAX` particles per graph (parameter ``edges``): a 16,384-particle
one would hold 268M edges (4 GB). Models of large systems build their own neighbour
graphs (:func:`hogn.graph.radius_graph`); the ground truth needs none.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor

from hogn.graph import GraphBatch, batch_vector
from hogn.integrators import VectorField
from systems.base import System, constant_masses, node_sum, pair_sum, uniform

__all__ = ["AUTO_COMPLETE_MAX", "EDGE_MODES", "GravityNBody", "ThreeBody", "TwoBody",
           "pair_forces", "pair_potential"]

AUTO_COMPLETE_MAX = 1024
"""``edges="auto"``: the largest graph whose sample carries its complete
``edge_index`` (1,047,552 directed edges, 16 MB); a batch with a larger graph
carries none (an empty ``edge_index``: all pairs)."""

EDGE_MODES = ("auto", "complete", "none")
"""Values of :class:`GravityNBody`'s ``edges`` parameter."""

_DENSE_MAX = 256  # largest graph whose field takes all n x n pairs at once
_PAIR_BLOCK = 1 << 18  # pairs per block of the all-pairs sums (2 MB per float64 array)
_CHUNKED_MIN_EDGES = 1 << 16  # complete edge lists this long are summed by blocks of rows
_CHECK_BLOCK = 1 << 22  # edges per block of the completeness check


@functools.lru_cache(maxsize=32)
def _pairs(n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Index pairs ``i < j`` of ``n`` particles (cached: built once per size)."""
    i, j = torch.triu_indices(n, n, 1, device=device)
    return i, j


def _perp(x: Tensor) -> Tensor:
    """Rotate 2-D vectors ``[..., 2]`` by +90°."""
    return torch.stack([-x[..., 1], x[..., 0]], -1)


# ---------------------------------------------------------- all pairs, by blocks of rows
class _Layout(NamedTuple):
    """Graphs grouped by size, for the all-pairs sums.

    Attributes:
        groups: One ``(graphs [Gs], nodes [Gs, n])`` per distinct size ``n``: the
            graphs of that size and their global node indices.
        batch: Graph index of each node, ``[N]``.
        num_graphs: ``G``.
    """

    groups: tuple[tuple[Tensor, Tensor], ...]
    batch: Tensor
    num_graphs: int


def _layout(ptr: Tensor, device: torch.device) -> _Layout:
    """The :class:`_Layout` of graphs with node offsets ``ptr [G + 1]`` (``O(N)``)."""
    ptr = ptr.to(device)
    sizes = ptr[1:] - ptr[:-1]
    groups = []
    for n in torch.unique(sizes).tolist():
        graphs = torch.nonzero(sizes == n).flatten()
        groups.append((graphs, ptr[graphs, None] + torch.arange(n, device=device)))
    return _Layout(tuple(groups), batch_vector(ptr), sizes.numel())


def _blocks(q: Tensor, nodes: Tensor, eps2: float, chunk: int | None, reuse: bool = True
            ) -> Iterator[tuple[int, int, list[Tensor], Tensor, Tensor | None]]:
    """Every pair of the graphs of one size, a block of rows at a time.

    Coordinates are taken one at a time (a broadcast over a last axis of 2 or 3 is
    several times slower in torch), the squared distance summed in coordinate order
    as ``(diff**2).sum(-1)`` sums it. With ``reuse`` (when nothing is being
    differentiated), every block is written into the same buffers, allocated once
    per call: fresh megabyte-sized tensors per block cost as much again in page
    faults.

    Args:
        q: Positions ``[..., N, d]``.
        nodes: Global node indices of the graphs, ``[Gs, n]``.
        eps2: Added to every squared distance (softening²).
        chunk: Rows per block (``None``: about ``2^18`` pairs per block, sized for
            the CPU caches).
        reuse: Write every block into the same buffers (not under autograd).

    Yields:
        ``(a, b, diffs, r2, scratch)`` for rows ``a:b``: ``diffs``, one
        ``[..., Gs, b − a, n]`` per coordinate, hold ``q_i − q_j``; ``r2`` of that
        shape holds ``|q_i − q_j|² + eps2``, infinite for ``i = j`` (so that every
        inverse power of it vanishes there); ``scratch``, of that shape too, is a
        buffer the caller may overwrite, as it may ``r2`` (both are overwritten by
        the next block), or ``None`` without ``reuse`` (then every block is fresh
        and must be left unchanged, for autograd).
    """
    lead, d = q.shape[:-2], q.shape[-1]
    gs, n = nodes.shape
    x = q.index_select(-2, nodes.flatten()).reshape(*lead, gs, n, d)
    coords = x.movedim(-1, 0).contiguous()  # [d, ..., Gs, n]
    rows = chunk or max(1, _PAIR_BLOCK // (n * gs * math.prod(lead)))
    size = math.prod(lead) * gs * min(rows, n) * n
    buffers = [q.new_empty(size) for _ in range(d + 2)] if reuse else []
    for a in range(0, n, rows):
        b = min(n, a + rows)
        shape = (*lead, gs, b - a, n)
        views = [buf[: math.prod(shape)].view(shape) for buf in buffers]
        if reuse:
            diffs = [torch.sub(xk[..., a:b, None], xk[..., None, :], out=out)
                     for xk, out in zip(coords, views, strict=False)]
            r2, scratch = views[d], views[d + 1]
            torch.mul(diffs[0], diffs[0], out=r2)
            for dk in diffs[1:]:
                r2.add_(torch.mul(dk, dk, out=scratch))
        else:
            diffs = [xk[..., a:b, None] - xk[..., None, :] for xk in coords]
            r2, scratch = diffs[0] * diffs[0], None
            for dk in diffs[1:]:
                r2 = r2 + dk * dk
        r2 = r2.add_(eps2)
        own = torch.arange(b - a, device=q.device)
        r2[..., own, own + a] = math.inf
        yield a, b, diffs, r2, scratch


RowFn = Callable[[list[Tensor], Tensor, Tensor | None, Tensor, Tensor], Tensor]
"""``f(diffs, r2, scratch, m_rows [Gs, c], m_all [Gs, n]) -> [..., Gs, c, k]``: a per-row
sum over a block of :func:`_blocks` (which says what it may overwrite)."""


def _row_sums(q: Tensor, layout: _Layout, m: Tensor, eps2: float, chunk: int | None,
              fn: RowFn, k: int) -> Tensor:
    """Per-node sums over every partner of the node's graph, by blocks of rows.

    Args:
        q: Positions ``[..., N, d]``.
        layout: Graphs grouped by size.
        m: Masses ``[N]``.
        eps2: Softening².
        chunk: Rows per block, or ``None``.
        fn: The sum over the partners ``j`` of each row ``i`` of a block.
        k: Values per node.

    Returns:
        ``[..., N, k]`` in node order.
    """
    out = q.new_zeros(*q.shape[:-1], k)
    reuse = not (torch.is_grad_enabled() and (q.requires_grad or m.requires_grad))
    for _, nodes in layout.groups:
        mg = m[nodes]
        rows = [fn(diffs, r2, scratch, mg[:, a:b], mg)
                for a, b, diffs, r2, scratch in _blocks(q, nodes, eps2, chunk, reuse)]
        out = out.index_copy(-2, nodes.flatten(), torch.cat(rows, -2).flatten(-3, -2))
    return out


def _inverse_distance_sum(diffs: list[Tensor], r2: Tensor, scratch: Tensor | None,
                          m_rows: Tensor, m_all: Tensor) -> Tensor:
    """``φ_i = Σ_j m_j / sqrt(r_ij² + ε²)``, ``[..., Gs, c, 1]``."""
    inverse = r2.rsqrt() if scratch is None else r2.rsqrt_()
    return torch.matmul(inverse, m_all.unsqueeze(-1))


def _pull(diffs: list[Tensor], r2: Tensor, scratch: Tensor | None, m_rows: Tensor,
          m_all: Tensor) -> Tensor:
    """``m_i Σ_j m_j (q_i − q_j) / (r_ij² + ε²)^{3/2}``, ``[..., Gs, c, d]``."""
    if scratch is None:
        s = r2.rsqrt()
        w = s * s * s * m_all.unsqueeze(-2)
    else:  # the same, in the block's buffers
        s = r2.rsqrt_()
        w = torch.mul(s, s, out=scratch).mul_(s).mul_(m_all.unsqueeze(-2))
    w = w.unsqueeze(-2)  # [..., Gs, c, 1, n]
    pull = torch.cat([torch.matmul(w, dk.unsqueeze(-1)) for dk in diffs], -1)  # row dots
    return m_rows.unsqueeze(-1) * pull.squeeze(-2)


class _PairPotential(torch.autograd.Function):
    """``V [..., G]`` over every pair, its gradient by blocks of rows (``O(N)`` memory
    under autograd, not the ``O(N²)`` of the blocks' saved intermediates)."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, m: Tensor, layout: _Layout, g: float, eps2: float,
                chunk: int | None) -> Tensor:
        ctx.save_for_backward(q, m)
        ctx.args = (layout, g, eps2, chunk)
        phi = _row_sums(q, layout, m, eps2, chunk, _inverse_distance_sum, 1)[..., 0]
        per_graph = q.new_zeros(*q.shape[:-2], layout.num_graphs)
        return (-0.5 * g) * per_graph.index_add(-1, layout.batch, m * phi)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        q, m = ctx.saved_tensors
        layout, g, eps2, chunk = ctx.args
        per_node = grad.index_select(-1, layout.batch)  # [..., N]
        grad_q = grad_m = None
        if ctx.needs_input_grad[0]:  # ∂V/∂q_i = G m_i Σ_j m_j (q_i − q_j) / r³
            grad_q = (g * per_node).unsqueeze(-1) * _row_sums(q, layout, m, eps2, chunk,
                                                              _pull, q.shape[-1])
        if ctx.needs_input_grad[1]:  # ∂V/∂m_i = −G Σ_j m_j / r
            phi = _row_sums(q, layout, m, eps2, chunk, _inverse_distance_sum, 1)[..., 0]
            grad_m = (-g * phi * per_node).reshape(-1, m.shape[0]).sum(0)
        return grad_q, grad_m, None, None, None, None


def pair_potential(q: Tensor, m: Tensor, ptr: Tensor, G: float = 1.0,
                   softening: float = 0.0, chunk: int | None = None) -> Tensor:
    """Gravitational energy of every pair of each graph, by blocks of rows.

    ``V_g = −G Σ_{i<j ∈ g} m_i m_j / sqrt(|q_i − q_j|² + ε²)`` in ``O(N²)`` time and
    ``O(N · chunk)`` memory, no edge list; differentiable (its backward pass also
    runs by blocks: ``O(N)`` memory under autograd).

    Args:
        q: Positions ``[..., N, d]`` (leading time/batch axes allowed).
        m: Masses ``[N]``.
        ptr: Node offsets ``[G + 1]``.
        G: Gravitational constant.
        softening: ``ε >= 0``.
        chunk: Rows per block (``None``: about ``2^18`` pairs per block).

    Returns:
        ``V [..., G]``.

    Raises:
        ValueError: On a ``chunk`` that is not a positive int.
    """
    _check_chunk(chunk)
    return _PairPotential.apply(q, m, _layout(ptr, q.device), float(G),
                                float(softening) ** 2, chunk)


def pair_forces(q: Tensor, m: Tensor, ptr: Tensor, G: float = 1.0,
                softening: float = 0.0, chunk: int | None = None) -> Tensor:
    """``−∂V/∂q`` of :func:`pair_potential` (same arguments), by blocks of rows, in
    ``O(N · chunk)`` memory: ``F_i = −G m_i Σ_j m_j (q_i − q_j) / (|q_i − q_j|² + ε²)^{3/2}``,
    ``[..., N, d]`` like ``q``. Raises ``ValueError`` on a ``chunk`` that is not a
    positive int."""
    _check_chunk(chunk)
    return (-float(G)) * _row_sums(q, _layout(ptr, q.device), m, float(softening) ** 2,
                                   chunk, _pull, q.shape[-1])


def _check_chunk(chunk: int | None) -> None:
    if chunk is not None and not (isinstance(chunk, int) and chunk >= 1):
        raise ValueError(f"chunk must be a positive int (rows per block) or None, "
                         f"got {chunk!r}")


def _ordered_potential(q: Tensor, m: Tensor, g: float, eps2: float) -> float:
    """``V`` of one graph (``q [n, d]``, ``m [n]``) as a running sum of the pair terms
    in :func:`~hogn.graph.fully_connected`'s edge order, written as ``energy``'s edge
    list writes them: on the CPU bit for bit the edge-list result (the sampler's
    virial scaling, so that samples do not depend on how ``V`` is summed)."""
    total = q.new_zeros(())
    mg = m.unsqueeze(0)
    nodes = torch.arange(q.shape[0], device=q.device)[None]
    for a, b, _, r2, scratch in _blocks(q, nodes, eps2, None, reuse=True):
        # −G m_i m_j / r as the edge list writes it (i = j: −0.0), in the block's buffers
        terms = torch.mul(-g * mg[:, a:b, None], mg[:, None, :], out=scratch)
        terms = terms.div_(r2.sqrt_()).view(-1)
        terms[0] = total + terms[0]  # the running sum carried on: (total + t_0) + t_1 ...
        total = torch.cumsum(terms, 0, out=r2.view(-1))[-1].clone()
    return (0.5 * total).item()


def _complete_graphs(graph: GraphBatch) -> bool:
    """Whether ``graph`` holds exactly the complete graphs (no self loops), in
    :func:`~hogn.graph.fully_connected`'s edge order: checked by blocks of edges,
    ``O(E)`` time and ``O(block)`` memory (an edge list of distinct, strictly
    increasing ``(row 0, row 1)``, no self loops, no edge between graphs, and as
    many edges as the complete graphs have, is that of the complete graphs)."""
    ei = graph.edge_index
    sizes = graph.sizes
    if ei.shape[1] != int((sizes * (sizes - 1)).sum()):
        return False
    batch, total, last = graph.batch.to(ei.device), graph.num_nodes, None
    for a in range(0, ei.shape[1], _CHECK_BLOCK):
        src, dst = ei[0, a: a + _CHECK_BLOCK], ei[1, a: a + _CHECK_BLOCK]
        key = src * total + dst
        bad = (src == dst).any() | (batch[src] != batch[dst]).any() | (key[1:] <= key[:-1]).any()
        if last is not None:
            bad = bad | (key[0] <= last)
        if bool(bad):
            return False
        last = key[-1]
    return True


class GravityNBody(System):
    """Softened gravity between ``N`` point masses in ``dim`` dimensions (any ``N``).

    Initial states: positions uniform in a disc/ball of radius
    ``radius · N^(1/dim)``, Gaussian velocities with the centre-of-mass drift removed,
    scaled to the virial ratio ``T/|V| = virial`` (default 0.5), so ``H < 0``.

    Parameter ``edges`` (what ``edge_index`` a sample carries; see the module
    docstring for how ``H`` reads it): ``"auto"`` (default) the complete graphs while
    every graph has at most :data:`AUTO_COMPLETE_MAX` particles, else none (an empty
    ``edge_index``, read as all pairs); ``"complete"`` always the complete graphs
    (``N(N − 1)`` edges per graph: mind the memory); ``"none"`` never any, and ``H``
    then sums over every pair whatever ``edge_index`` holds.

    Attributes:
        chunk: Rows per block of the all-pairs sums of large complete graphs
            (``None``: about ``2^18`` pairs per block); any value gives the same
            result to round-off.
    """

    name = "gravity-nbody"
    separable = True
    native_dim = 2
    n_particles = None
    defaults: dict[str, Any] = {"G": 1.0, "mass": 1.0, "softening": 0.1, "dim": 2,
                                "radius": 0.5, "virial": 0.5, "min_distance": 0.0,
                                "edges": "auto"}
    chaotic = True
    max_step = 0.01
    description = "softened gravity, any N (ε = 0.1); virialised discs, H < 0"
    chunk: int | None = None

    def _validate(self) -> None:
        super()._validate()
        self._positive_range("mass")
        for key in ("softening", "min_distance"):
            if not (isinstance(self.params[key], (int, float)) and self.params[key] >= 0):
                raise ValueError(f"{self.name}: {key} must be a number >= 0, "
                                 f"got {self.params[key]!r}")
        if self.params.get("edges", "auto") not in EDGE_MODES:
            raise ValueError(f"{self.name}: edges must be one of {', '.join(EDGE_MODES)}, "
                             f"got {self.params['edges']!r}")

    # ---------------------------------------------------------------- which pairs
    def _every_pair(self, graph: GraphBatch) -> bool:
        """Whether ``H`` runs over every pair of each graph without reading the edge
        list: ``edges="none"``, or an empty ``edge_index`` (the complete graphs)."""
        return self.params.get("edges") == "none" or graph.edge_index.shape[1] == 0

    def _chunked(self, graph: GraphBatch) -> bool:
        """Whether to sum over every pair by blocks of rows: all pairs implied, or a
        long edge list that is that of the complete graphs."""
        return self._every_pair(graph) or (graph.edge_index.shape[1] >= _CHUNKED_MIN_EDGES
                                           and _complete_graphs(graph))

    # ------------------------------------------------------------------- physics
    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        m = graph.c[:, 0]
        kinetic = node_sum((p**2).sum(-1) / (2 * m), graph)
        n = graph.uniform_size
        eps2 = float(self.params["softening"]) ** 2
        if n is not None and self.n_particles is not None:
            # all graphs complete and of one size: every pair by dense indexing (fast path)
            i, j = _pairs(n, q.device)
            x = q.reshape(*q.shape[:-2], -1, n, q.shape[-1])
            mg = m.reshape(-1, n)
            r2 = ((x[..., i, :] - x[..., j, :]) ** 2).sum(-1) + self.params["softening"] ** 2
            return kinetic - (self.params["G"] * mg[:, i] * mg[:, j] / torch.sqrt(r2)).sum(-1)
        if self._chunked(graph):  # every pair by blocks of rows: no [E] tensors
            _check_chunk(self.chunk)
            return kinetic + _PairPotential.apply(q, m, _layout(graph.ptr, q.device),
                                                  float(self.params["G"]), eps2, self.chunk)
        src, dst = graph.edge_index
        r2 = ((q[..., src, :] - q[..., dst, :]) ** 2).sum(-1) + self.params["softening"] ** 2
        potential = pair_sum(-self.params["G"] * m[src] * m[dst] / torch.sqrt(r2), graph)
        return kinetic + potential

    def _native_field(self, graph: GraphBatch) -> VectorField:
        """``dq = p / m``, ``dp_i = Σ_j G m_i m_j (q_j − q_i) / (r² + ε²)^{3/2}`` by hand.

        Complete graphs of one size ``n <= 256`` (the few-body systems; any-``N``
        batches sampled with one size) use all ``n × n`` pairs by broadcasting, with
        the self-pairs' inverse distance held at zero by an infinite diagonal: no
        index gathers or scatters per evaluation. Larger complete graphs (and every
        batch whose pairs are implied, see :meth:`_every_pair`) sum over every pair
        by blocks of rows (:func:`pair_forces`: ``O(N · chunk)`` memory, no edge
        list). Others sum over the edge list.
        """
        m = graph.c[:, 0:1]
        inv_m = 1.0 / m
        unit = bool((inv_m == 1).all())  # unit masses: dq is p itself (one op fewer)
        g, eps2 = float(self.params["G"]), float(self.params["softening"]) ** 2
        n = graph.uniform_size
        every = self._every_pair(graph)
        if n is not None and (self.n_particles is not None or (
                n <= _DENSE_MAX and (every or _complete_graphs(graph)))):
            return _dense_field(m, n, g, eps2, self.native_dim, unit)
        if self._chunked(graph):
            _check_chunk(self.chunk)
            layout, masses, chunk = _layout(graph.ptr, m.device), m[:, 0], self.chunk

            def chunked(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
                force = _row_sums(q, layout, masses, eps2, chunk, _pull, q.shape[-1])
                return (p if unit else p * inv_m), force.mul_(-g)

            return chunked
        src, dst = graph.edge_index
        coupling = g * m[src] * m[dst]  # [E, 1]
        ones_d1 = torch.ones(self.native_dim, 1, dtype=m.dtype, device=m.device)

        def sparse(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
            diff = q.index_select(-2, src) - q.index_select(-2, dst)
            r2 = torch.matmul(diff * diff, ones_d1).add_(eps2)
            w = diff * (coupling / (r2 * r2.sqrt()))
            return (p if unit else p * inv_m), torch.zeros_like(q).index_add_(-2, src, -w)

        return sparse

    def stop_condition(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """Stop graphs with a pair closer than ``min_distance`` (a close pass)."""
        limit = self.params["min_distance"]
        if limit <= 0:
            return super().stop_condition(q, p, graph)
        if self._chunked(graph):  # every pair by blocks of rows
            _check_chunk(self.chunk)
            layout = _layout(graph.ptr, q.device)

            def close(diffs: list[Tensor], r2: Tensor, scratch: Tensor | None, m_rows: Tensor,
                      m_all: Tensor) -> Tensor:
                return (r2 < limit**2).any(-1, keepdim=True).to(r2.dtype)

            near = _row_sums(q, layout, graph.c[:, 0], 0.0, self.chunk, close, 1)[..., 0]
            hits = q.new_zeros((*q.shape[:-2], graph.num_graphs))
            return hits.index_add_(-1, layout.batch, near) > 0
        src, dst = graph.edge_index
        diff = q.index_select(-2, src) - q.index_select(-2, dst)
        close = torch.matmul(diff * diff, q.new_ones(q.shape[-1])) < limit**2  # [..., E]
        hits = q.new_zeros((*q.shape[:-2], graph.num_graphs))
        return hits.index_add_(-1, graph.edge_batch, close.to(q.dtype)) > 0

    # ---------------------------------------------------------------- sampling
    def default_edges(self, sizes: list[int], generator: torch.Generator
                      ) -> tuple[Tensor, Tensor | None]:
        """The complete graphs, or none (see the ``edges`` parameter)."""
        mode = self.params.get("edges", "complete")
        if mode == "none" or (mode == "auto" and max(sizes) > AUTO_COMPLETE_MAX):
            return torch.empty(2, 0, dtype=torch.long), None
        return super().default_edges(sizes, generator)

    def _sample(self, sizes: list[int], generator: torch.Generator
                ) -> tuple[Tensor, Tensor, Tensor]:
        d = self.native_dim
        c = constant_masses(sizes, self.params["mass"], generator)
        g, eps2 = float(self.params["G"]), float(self.params["softening"]) ** 2
        qs, ps = [], []
        offset = 0
        for n in sizes:
            m = c[offset: offset + n, 0:1]
            offset += n
            radius = self.params["radius"] * n ** (1 / d)
            direction = torch.randn(n, d, generator=generator, dtype=torch.float64)
            direction = direction / direction.norm(dim=-1, keepdim=True)
            q = direction * radius * uniform(generator, (n, 1), 0.0, 1.0) ** (1 / d)
            q = q - (m * q).sum(0) / m.sum()
            v = torch.randn(n, d, generator=generator, dtype=torch.float64)
            v = v - (m * v).sum(0) / m.sum()
            potential = -_ordered_potential(q, m[:, 0], g, eps2)  # no edge list
            kinetic = 0.5 * (m * v**2).sum().item()
            v = v * math.sqrt(self.params["virial"] * potential / max(kinetic, 1e-300))
            qs.append(q)
            ps.append(m * v)
        return torch.cat(qs), torch.cat(ps), c


def _dense_field(m: Tensor, n: int, g: float, eps2: float, dim: int, unit: bool
                 ) -> VectorField:
    """Field of complete graphs of one size ``n`` by broadcasting over all ``n × n``
    pairs (``m [G n, 1]``): the fast path of small systems."""
    inv_m = 1.0 / m
    mg = m.reshape(-1, n)
    coupling = -g * mg[:, :, None] * mg[:, None, :]  # [G, n, n]
    eye = torch.eye(n, dtype=m.dtype, device=m.device).bool()
    offset = torch.full((n, n), eps2, dtype=m.dtype, device=m.device
                        ).masked_fill(eye, float("inf"))
    ones_d = torch.ones(dim, dtype=m.dtype, device=m.device)
    ones_n = torch.ones(n, 1, dtype=m.dtype, device=m.device)

    def dense(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        # sums over the short axes as products with ones: torch's sum() over
        # an axis of 2 or 3 costs far more than a matrix product
        x = q.reshape(-1, n, q.shape[-1])  # [B, n, d], B = leading axes x G
        diff = x.unsqueeze(-2) - x.unsqueeze(-3)  # [B, n, n, d]: q_i − q_j
        w = torch.matmul(diff * diff, ones_d).add_(offset).rsqrt_().pow_(3)
        w.view(-1, *coupling.shape).mul_(coupling)  # −G m_i m_j / r³, 0 for i = j
        # Σ_j w_ij (q_i − q_j) = q_i Σ_j w_ij − (W q)_i
        force = torch.baddbmm(x * torch.matmul(w, ones_n), w, x, alpha=-1)
        return (p if unit else p * inv_m), force.view(q.shape)

    return dense


class _PlanarOrbits(GravityNBody):
    """Shared checks of the planar few-body orbit samplers."""

    def _validate(self) -> None:
        super()._validate()
        self._positive_range("radius_range")
        if self.native_dim != 2:
            raise ValueError(f"{self.name}: the orbit sampler is planar, dim must be 2")


class TwoBody(_PlanarOrbits):
    """Two gravitating bodies in the plane, ``m = G = 1``, no softening.

    Initial states (as in the HNN paper): separation ``r ~ U[0.5, 1.5]`` at a random
    angle about the centre of mass, relative velocity of the circular orbit plus
    Gaussian noise of relative size ``orbit_noise`` (0.1); total momentum zero.
    Trajectories passing closer than ``min_distance`` (0.1) are resampled.
    """

    name = "two-body"
    n_particles = 2
    defaults: dict[str, Any] = {"G": 1.0, "mass": 1.0, "softening": 0.0, "dim": 2,
                                "radius_range": (0.5, 1.5), "orbit_noise": 0.1,
                                "min_distance": 0.1}
    chaotic = False
    max_step = 0.01
    description = "2 bodies, m = G = 1; near-circular orbits, separation U[0.5, 1.5]"

    def _sample(self, sizes: list[int], generator: torch.Generator
                ) -> tuple[Tensor, Tensor, Tensor]:
        n = len(sizes)
        c = constant_masses(sizes, self.params["mass"], generator)
        m = c[:, 0].reshape(n, 2)
        total = m.sum(1, keepdim=True)
        r = uniform(generator, (n, 1), *self._positive_range("radius_range"))
        angle = uniform(generator, (n, 1), 0.0, 2 * math.pi)
        u = torch.cat([torch.cos(angle), torch.sin(angle)], -1)
        q1, q2 = (m[:, 1:] / total) * r * u, -(m[:, :1] / total) * r * u
        v_c = torch.sqrt(self.params["G"] * total / r)
        noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        v_rel = v_c * (_perp(u) + self.params["orbit_noise"] * noise)
        mu = m[:, :1] * m[:, 1:] / total
        q = torch.stack([q1, q2], 1).reshape(-1, 2)
        p = torch.stack([mu * v_rel, -mu * v_rel], 1).reshape(-1, 2)
        return q, p, c


class ThreeBody(_PlanarOrbits):
    """Three gravitating bodies in the plane, ``m = G = 1``, no softening.

    Initial states (as in the HNN paper): the rotating equilateral (Lagrange)
    configuration on a circle of radius ``r ~ U[0.9, 1.2]`` at a random angle, with
    Gaussian velocity noise of relative size ``orbit_noise`` (0.2); total momentum
    zero. The motion is chaotic; trajectories passing closer than ``min_distance``
    (0.1) are resampled.
    """

    name = "three-body"
    n_particles = 3
    defaults: dict[str, Any] = {"G": 1.0, "mass": 1.0, "softening": 0.0, "dim": 2,
                                "radius_range": (0.9, 1.2), "orbit_noise": 0.2,
                                "min_distance": 0.1}
    chaotic = True
    max_step = 0.005
    description = "3 bodies, m = G = 1; perturbed Lagrange triangles, radius U[0.9, 1.2]"

    def _sample(self, sizes: list[int], generator: torch.Generator
                ) -> tuple[Tensor, Tensor, Tensor]:
        n = len(sizes)
        c = constant_masses(sizes, self.params["mass"], generator)
        m = c[:, 0].reshape(n, 3, 1)
        r = uniform(generator, (n, 1, 1), *self._positive_range("radius_range"))
        angle = uniform(generator, (n, 1), 0.0, 2 * math.pi) + torch.tensor(
            [0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=torch.float64)
        q = r * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
        q = q - (m * q).sum(1, keepdim=True) / m.sum(1, keepdim=True)
        side = math.sqrt(3) * r
        omega = torch.sqrt(self.params["G"] * m.sum(1, keepdim=True) / side**3)
        v = omega * _perp(q)
        speed = v.norm(dim=-1, keepdim=True)
        v = v + self.params["orbit_noise"] * speed * torch.randn(
            n, 3, 2, generator=generator, dtype=torch.float64)
        v = v - (m * v).sum(1, keepdim=True) / m.sum(1, keepdim=True)
        return q.reshape(-1, 2), (m * v).reshape(-1, 2), c
