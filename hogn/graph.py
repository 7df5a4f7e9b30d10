"""Building particle graphs: edge sets for batches of graphs of different sizes.

Node indices are global over a batch: graph ``g`` owns nodes
``ptr[g] .. ptr[g + 1] - 1``, as in a PyG ``Batch``. Edges are directed
``[2, E]`` (sender row 0, receiver row 1); an undirected pair appears twice.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # networkx and PyG: imported by the conversions from or to their objects
    import networkx as nx
    from torch_geometric.data import Batch, Data

__all__ = [
    "RADIUS_BACKENDS",
    "GraphBatch",
    "NeighbourList",
    "batch_vector",
    "edge_vectors",
    "from_networkx",
    "fully_connected",
    "ptr_from_sizes",
    "radius_graph",
    "segment_max",
    "segment_sum",
    "select_indices",
]


def ptr_from_sizes(sizes: Sequence[int] | Tensor, device: torch.device | str | None = None
                   ) -> Tensor:
    """Node offsets ``ptr [G + 1]`` of graphs with ``sizes [G]`` nodes."""
    sizes = torch.as_tensor(sizes, dtype=torch.long, device=device)
    if sizes.dim() != 1 or (sizes < 1).any():
        raise ValueError(f"graph sizes must be a 1-D sequence of positive ints, got {sizes}")
    return torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])


def _along(src: Tensor, index: Tensor, num: int, dim: int) -> tuple[int, Tensor, list[int]]:
    if index.dim() != 1 or index.numel() != src.shape[dim]:
        raise ValueError(f"index must be [{src.shape[dim]}] (one bucket per entry along dim "
                         f"{dim}), got {tuple(index.shape)}")
    dim = dim % src.dim()
    shape = [1] * src.dim()
    shape[dim] = -1
    size = list(src.shape)
    size[dim] = num
    return dim, index.view(shape).expand_as(src), size


def segment_sum(src: Tensor, index: Tensor, num: int, dim: int = -1) -> Tensor:
    """Sums of the entries of ``src`` along ``dim`` into ``num`` buckets by ``index``
    (``[src.shape[dim]]``); empty buckets give 0. One ``scatter_add_``: the values and
    their rounding are those of PyG's ``scatter(..., reduce="sum")``, without importing
    PyG (per-graph sums of per-node values, ``segment_sum(x, batch, G)``)."""
    dim, idx, size = _along(src, index, num, dim)
    return src.new_zeros(size).scatter_add_(dim, idx, src)


def segment_max(src: Tensor, index: Tensor, num: int, dim: int = -1) -> Tensor:
    """Maxima of the entries of ``src`` along ``dim`` in ``num`` buckets by ``index``;
    empty buckets give 0 (as PyG's ``scatter(..., reduce="max")``)."""
    dim, idx, size = _along(src, index, num, dim)
    return src.new_zeros(size).scatter_reduce_(dim, idx, src, "amax", include_self=False)


def batch_vector(ptr: Tensor) -> Tensor:
    """Graph index of each node, ``[N]``, from node offsets ``ptr [G + 1]``."""
    sizes = ptr[1:] - ptr[:-1]
    return torch.repeat_interleave(torch.arange(len(sizes), device=ptr.device), sizes)


def fully_connected(sizes: Sequence[int] | Tensor, self_loops: bool = False,
                    device: torch.device | str | None = None) -> Tensor:
    """Edges of a batch of complete graphs.

    Args:
        sizes: Number of nodes of each graph, ``[G]``.
        self_loops: Include ``i -> i`` edges.
        device: Device of the result.

    Returns:
        ``edge_index [2, E]`` with ``E = sum(n * (n - 1))`` (or ``n * n`` with self
        loops), both directions of every pair, ordered by graph.
    """
    ptr = ptr_from_sizes(sizes, device)
    parts = []
    for n in torch.unique(ptr[1:] - ptr[:-1]).tolist():
        starts = ptr[:-1][(ptr[1:] - ptr[:-1]) == n]
        local = torch.cartesian_prod(torch.arange(n, device=ptr.device),
                                     torch.arange(n, device=ptr.device)).T
        if not self_loops:
            local = local[:, local[0] != local[1]]
        parts.append((local[:, None, :] + starts[None, :, None]).reshape(2, -1))
    edges = torch.cat(parts, dim=1)
    order = torch.argsort(edges[0] * ptr[-1] + edges[1])
    return edges[:, order]


def select_indices(ptr: Tensor, edge_index: Tensor, graphs: Sequence[int] | Tensor
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Indices that cut the given graphs out of a batch.

    Args:
        ptr: Node offsets ``[G + 1]``.
        edge_index: Edges ``[2, E]`` grouped by graph.
        graphs: Graph indices to keep, in order.

    Returns:
        ``nodes [N']`` and ``edges [E']`` to keep, the new ``ptr [G' + 1]`` and the
        re-indexed ``edge_index [2, E']`` (on the devices of the inputs).
    """
    graphs = torch.as_tensor(graphs, dtype=torch.long).reshape(-1).cpu()
    num_graphs = ptr.numel() - 1
    if graphs.numel() == 0:
        raise IndexError(f"the selection is empty: choose at least one of the {num_graphs} "
                         "graph(s) (a boolean mask that is all False selects none)")
    if graphs.min() < 0 or graphs.max() >= num_graphs:
        raise IndexError(f"graph indices must lie in [0, {num_graphs}), got "
                         f"{graphs.tolist()[:8]}")
    ptr_c = ptr.cpu()
    counts = torch.bincount(batch_vector(ptr_c)[edge_index[0].cpu()], minlength=num_graphs)
    eptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    nodes = _ranges(ptr_c[graphs], ptr_c[graphs + 1])
    edges = _ranges(eptr[graphs], eptr[graphs + 1])
    remap = torch.full((int(ptr_c[-1]),), -1, dtype=torch.long)
    remap[nodes] = torch.arange(nodes.numel())
    new_ptr = ptr_from_sizes(ptr_c[graphs + 1] - ptr_c[graphs])
    dev = edge_index.device
    return (nodes, edges, new_ptr.to(ptr.device),
            remap.to(dev)[edge_index[:, edges.to(dev)]])


def _ranges(starts: Tensor, ends: Tensor) -> Tensor:
    """Concatenation of ``arange(starts[i], ends[i])`` for all ``i`` (vectorised)."""
    sizes = ends - starts
    offsets = torch.cumsum(sizes, 0) - sizes
    return torch.repeat_interleave(starts - offsets, sizes) + torch.arange(int(sizes.sum()))


def from_networkx(graph: nx.Graph, offset: int = 0) -> Tensor:
    """Directed ``edge_index [2, E]`` of a networkx graph on nodes ``0..n-1``.

    Undirected edges are emitted in both directions; ``offset`` is added to all
    indices (to place the graph inside a batch).
    """
    n = graph.number_of_nodes()
    if sorted(graph.nodes) != list(range(n)):
        import networkx as nx

        graph = nx.convert_node_labels_to_integers(graph)
    pairs = [(u, v) for u, v in graph.edges if u != v]
    if not graph.is_directed():
        pairs = pairs + [(v, u) for u, v in pairs]
    if not pairs:
        return torch.empty(2, 0, dtype=torch.long)
    edges = torch.tensor(sorted(pairs), dtype=torch.long).T
    return edges + offset


RADIUS_BACKENDS = ("auto", "cells", "brute", "torch_cluster")
"""Names accepted by :func:`radius_graph`'s ``backend`` option."""

_AUTO_BRUTE_PAIRS = 1 << 15  # auto: brute force while sum(n_g²) is at most this (faster)
_CANDIDATES_PER_CHUNK = 1 << 21  # cell list: candidate pairs expanded at once (memory bound)
_BLOCK_SLOTS = 1 << 15  # cell list on CPU: particles x visited cells per block (cache size)


def radius_graph(q: Tensor, ptr: Tensor, radius: float, *,
                 box: Tensor | Sequence[float] | None = None, backend: str = "auto") -> Tensor:
    """Edges between nodes of the same graph closer than ``radius`` (no self loops).

    A pair ``(i, j)`` of one graph is joined when ``|q_j − q_i| < radius`` (strictly:
    a pair exactly at the radius is not joined), the squared distance being summed
    dimension by dimension in ``q``'s dtype (the same arithmetic on every backend,
    so all of them return identical edges). With a periodic ``box`` the distance is
    that of the minimum image, ``Δ − L·round(Δ / L)`` per dimension (see
    :func:`edge_vectors`); positions may lie anywhere, inside the box or not.

    Backends (all exact, identical results):

    - ``"cells"``: a cell list in torch, for any ``d``, on any device. Particles are
      binned into cells of side at least ``radius`` (per graph; per dimension
      ``floor(L / radius)`` cells across a periodic box), sorted by cell, and each
      pair of neighbouring cells (the ``3^d`` around each) is searched once; each
      close pair is found once, then written in both directions. Time
      ``O(N log N + E log E)`` (two sorts; the rest linear), memory ``O(N + E)``:
      particles are taken in blocks (sized for the CPU caches; one block on a GPU)
      and candidates expanded at most ~2M at a time, and empty cells cost nothing
      (a grid with more than ``4 N`` cells is searched by key instead of a table).
      Vectorised: the only Python loops run over blocks, coordinates and offsets.
    - ``"brute"``: every pair of each graph, ``O(Σ n_g²)`` time and memory: for small
      graphs and as the reference in tests.
    - ``"torch_cluster"``: ``torch_cluster.radius_graph`` (needs the optional
      ``torch-cluster`` package; no periodic box), its pairs re-checked with the
      criterion above.
    - ``"auto"`` (default): ``"brute"`` while ``Σ n_g² ≤ 32768`` (where it is the
      fastest), else ``"torch_cluster"`` when it is importable and there is no box,
      else ``"cells"``.

    Args:
        q: Positions ``[N, d]`` (float32 or float64; not differentiated through).
        ptr: Node offsets ``[G + 1]``: ``ptr[0] = 0``, non-decreasing (empty graphs
            allowed), ``ptr[G] = N``.
        radius: Cut-off distance, finite and ``>= 0``.
        box: Periodic box lengths, ``[d]`` (all graphs) or ``[G, d]`` (one box per
            graph), or ``None`` (open boundaries). Every length must be at least
            ``2 · radius``, so that a pair has at most one image closer than the
            radius.
        backend: One of :data:`RADIUS_BACKENDS`.

    Returns:
        ``edge_index [2, E]`` (int64, on ``q``'s device) with both directions of each
        close pair, sorted by row 0, then row 1 (so grouped by graph), as
        :func:`fully_connected` orders its edges. With a box, take each edge's vector
        from :func:`edge_vectors`: ``q[row 1] − q[row 0]`` is not the minimum image.

    Raises:
        ValueError: On a malformed ``q``, ``ptr``, ``radius`` or ``box`` (the message
            says what was expected), or an unknown backend.
        ImportError: For ``backend="torch_cluster"`` without ``torch-cluster``.
    """
    q, ptr, r, box = _check_radius_inputs(q, ptr, radius, box, "radius")
    name = _resolve_backend(backend, ptr, box)
    n = q.shape[0]
    if n == 0 or r == 0.0:
        return torch.empty(2, 0, dtype=torch.long, device=q.device)
    batch = batch_vector(ptr)
    if name == "brute":
        i, j = _all_pairs(ptr, batch)
        keep = (i != j) & _closer_than(q.T.contiguous(), i, j, r, box, batch)
        return torch.stack([i[keep], j[keep]])  # already in (row 0, row 1) order
    if name == "torch_cluster":
        import torch_cluster

        max_size = int((ptr[1:] - ptr[:-1]).max())
        found = torch_cluster.radius_graph(q, r * (1 + 1e-5) + 1e-30, batch=batch,
                                           loop=False, max_num_neighbors=max_size)
        i, j = found[1], found[0]
        close = _closer_than(q.T.contiguous(), i, j, r, box, batch)
        keep = torch.nonzero((i != j) & close).squeeze(1)
        i, j = i.index_select(0, keep), j.index_select(0, keep)
    else:
        i, j = _cell_pairs(q, ptr, batch, r, box)
        i, j = torch.cat([i, j]), torch.cat([j, i])
    pair_key = torch.sort(i * n + j).values
    return torch.stack([torch.div(pair_key, n, rounding_mode="floor"), pair_key % n])


def edge_vectors(q: Tensor, edge_index: Tensor, *, box: Tensor | Sequence[float] | None = None,
                 ptr: Tensor | None = None) -> Tensor:
    """Vector of every edge, ``q[receiver] − q[sender]``, as the minimum image in a box.

    The vector :func:`hogn.nn.edge_geometry` takes (``q_i − q_j`` for an edge
    ``j → i``), differentiable in ``q``. With a periodic ``box`` each component
    ``Δ`` becomes ``Δ − L · round(Δ / L)``, the arithmetic :func:`radius_graph`
    decides with; ``round`` is piecewise constant, so the gradient is that of ``Δ``.

    Args:
        q: Positions ``[N, d]``.
        edge_index: ``[2, E]``, senders in row 0, receivers in row 1.
        box: Periodic box lengths ``[d]`` or ``[G, d]``, or ``None``.
        ptr: Node offsets ``[G + 1]``; needed for a box of several rows.

    Returns:
        ``[E, d]`` in ``q``'s dtype.
    """
    rel = q[edge_index[1]] - q[edge_index[0]]
    if box is None:
        return rel
    lengths = torch.as_tensor(box, dtype=q.dtype, device=q.device)
    if lengths.dim() == 2 and lengths.shape[0] > 1:
        if ptr is None:
            raise ValueError(f"a box of {lengths.shape[0]} rows [G, d] needs ptr [G + 1] to "
                             "know each edge's graph")
        lengths = lengths[batch_vector(ptr.to(q.device))[edge_index[0]]]
    return rel - lengths * torch.round(rel / lengths)


class NeighbourList:
    """Radius graph rebuilt only when particles have moved far enough (a Verlet list).

    :meth:`update` returns the graph of cut-off ``radius + skin``, built anew only
    when some particle has moved more than ``skin / 2`` since the last build (or the
    batch layout, dtype or device changed). Two particles then have approached by
    at most ``skin``, so every pair now closer than ``radius`` is among the edges.
    The listed edges also hold pairs up to ``radius + skin`` apart: callers cut or
    weight them by the true distance (e.g. a smooth cut-off reaching zero at
    ``radius``), or pass ``trim=True`` to get exactly the pairs closer than
    ``radius`` at a cost of one distance per listed edge per update (``O(E)``, no
    search). Checking for the rebuild costs one displacement per particle (``O(N)``
    and one device synchronisation).

    Args:
        radius: Interaction radius, finite and ``>= 0``.
        skin: Extra margin, finite and ``>= 0`` (0: a rebuild whenever anything moved).
        box: Periodic box lengths ``[d]`` or ``[G, d]`` (each at least
            ``2 · (radius + skin)``), or ``None``.
        backend: Search backend of :func:`radius_graph`.
        trim: Return only the pairs closer than ``radius``.

    Attributes:
        rebuilds: Number of searches so far.
        updates: Number of :meth:`update` calls so far.
        edge_index: The last listed graph (cut-off ``radius + skin``), ``[2, E]``.
    """

    def __init__(self, radius: float, skin: float, box: Tensor | Sequence[float] | None = None,
                 *, backend: str = "auto", trim: bool = False) -> None:
        self.radius = _check_length(radius, "radius")
        self.skin = _check_length(skin, "skin")
        if backend not in RADIUS_BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {RADIUS_BACKENDS}")
        self.box = None if box is None else torch.as_tensor(box, dtype=torch.float64)
        if self.box is not None:
            _check_box_values(self.box, self.radius + self.skin, "radius + skin")
        self.backend, self.trim = backend, trim
        self.rebuilds = 0
        self.updates = 0
        self.edge_index: Tensor | None = None
        self._ref: Tensor | None = None
        self._ptr: Tensor | None = None

    def reset(self) -> None:
        """Forget the last build: the next :meth:`update` searches anew."""
        self.edge_index, self._ref, self._ptr = None, None, None

    def needs_rebuild(self, q: Tensor, ptr: Tensor) -> bool:
        """Whether :meth:`update` would search anew for positions ``q [N, d]``."""
        ref = self._ref
        if (ref is None or ref.shape != q.shape or ref.dtype != q.dtype
                or ref.device != q.device or self._ptr is None
                or self._ptr.shape != ptr.shape or not torch.equal(self._ptr, ptr.to(q.device))):
            return True
        if q.shape[0] == 0:
            return False
        disp = q.detach() - ref
        if self.box is not None:
            lengths = self.box.to(q)
            if lengths.dim() == 2 and lengths.shape[0] > 1:
                lengths = lengths[batch_vector(self._ptr)]
            disp = disp - lengths * torch.round(disp / lengths)
        return bool(disp.square().sum(-1).max() > (self.skin / 2) ** 2)

    def update(self, q: Tensor, ptr: Tensor) -> Tensor:
        """The neighbour graph for positions ``q [N, d]`` of graphs ``ptr [G + 1]``.

        Returns:
            ``edge_index [2, E]``, ordered as :func:`radius_graph`'s: all pairs
            closer than ``radius + skin`` at the last build (or, with ``trim``, the
            pairs closer than ``radius`` now).
        """
        self.updates += 1
        if self.needs_rebuild(q, ptr):
            self.edge_index = radius_graph(q, ptr, self.radius + self.skin,
                                           box=self.box, backend=self.backend)
            self._ref = q.detach().clone()
            self._ptr = torch.as_tensor(ptr, device=q.device).clone()
            self.rebuilds += 1
        assert self.edge_index is not None
        if not self.trim or self.edge_index.shape[1] == 0:
            return self.edge_index
        _, ptr_c, r, box = _check_radius_inputs(q, self._ptr, self.radius, self.box, "radius")
        i, j = self.edge_index
        close = _closer_than(q.detach().T.contiguous(), i, j, r, box, batch_vector(ptr_c))
        return self.edge_index[:, close]


def _check_length(value: float, name: str) -> float:
    """``value`` as a float, which must be finite and ``>= 0``."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}") from None
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return x


def _check_box_values(box: Tensor, cutoff: float, what: str) -> None:
    if not bool(torch.isfinite(box).all()) or bool((box <= 0).any()):
        raise ValueError(f"box lengths must be finite and > 0, got {box.tolist()}")
    if bool((box < 2 * cutoff).any()):
        raise ValueError(
            f"box lengths {box.tolist()} are smaller than "
            f"{f'2 * ({what})' if ' ' in what else f'2 * {what}'} = {2 * cutoff:g} in some "
            "dimension: the minimum image is only unique for box >= 2 * cut-off (use a "
            "larger box or a smaller cut-off)")


def _check_radius_inputs(q: Tensor, ptr: Tensor, radius: float,
                         box: Tensor | Sequence[float] | None, what: str
                         ) -> tuple[Tensor, Tensor, float, Tensor | None]:
    """Validated ``q`` (detached), ``ptr`` (int64, on ``q``'s device), radius, box.

    The box comes back as ``[1, d]`` or ``[G, d]`` in ``q``'s dtype and device.
    """
    if not isinstance(q, Tensor) or q.dim() != 2 or not q.is_floating_point():
        shape = tuple(q.shape) if isinstance(q, Tensor) else type(q).__name__
        raise ValueError(f"q must be a floating-point tensor of positions [N, d], got {shape}")
    n, d = q.shape
    if d < 1:
        raise ValueError(f"q must have at least one coordinate per node, got shape {(n, d)}")
    r = _check_length(radius, what)
    ptr = torch.as_tensor(ptr, device=q.device)
    if ptr.dim() != 1 or ptr.numel() < 1 or ptr.is_floating_point() or ptr.is_complex():
        raise ValueError(f"ptr must be a 1-D integer tensor of node offsets [G + 1], got "
                         f"{tuple(ptr.shape)} {ptr.dtype}")
    ptr = ptr.long()
    if int(ptr[0]) != 0 or int(ptr[-1]) != n or bool((ptr.diff() < 0).any()):
        raise ValueError(f"ptr must start at 0, never decrease and end at N = {n} (the rows "
                         f"of q), got {ptr.tolist()[:8]}{' ...' if ptr.numel() > 8 else ''}")
    if n and not bool(torch.isfinite(q).all()):
        raise ValueError("q must hold finite positions; it has NaN or infinite entries")
    if box is None:
        return q.detach(), ptr, r, None
    lengths = torch.as_tensor(box, dtype=q.dtype, device=q.device)
    g = ptr.numel() - 1
    if lengths.dim() == 1:
        lengths = lengths[None]
    if lengths.dim() != 2 or lengths.shape[1] != d or lengths.shape[0] not in (1, g):
        raise ValueError(f"box must hold lengths [d] = [{d}] or [G, d] = [{g}, {d}], got "
                         f"{tuple(torch.as_tensor(box).shape)}")
    _check_box_values(lengths, r, what)
    return q.detach(), ptr, r, lengths


def _resolve_backend(backend: str, ptr: Tensor, box: Tensor | None) -> str:
    if backend not in RADIUS_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {RADIUS_BACKENDS}")
    if backend == "torch_cluster":
        if box is not None:
            raise ValueError("backend 'torch_cluster' has no periodic box: use 'cells' "
                             "(or 'auto')")
        import torch_cluster  # noqa: F401  (ImportError names the missing package)
    if backend != "auto":
        return backend
    sizes = ptr[1:] - ptr[:-1]
    if int((sizes * sizes).sum()) <= _AUTO_BRUTE_PAIRS:
        return "brute"
    if box is None and importlib.util.find_spec("torch_cluster") is not None:
        return "torch_cluster"
    return "cells"


def _closer_than(columns: Tensor, i: Tensor, j: Tensor, r: float, box: Tensor | None,
                 batch: Tensor) -> Tensor:
    """Mask ``[M]``: pairs ``(i, j)`` with ``|q_j − q_i| < r`` (minimum image in ``box``).

    The one criterion of every backend: per coordinate ``Δ = q_j − q_i`` (minimum
    image ``Δ − L·round(Δ / L)``), squares added in coordinate order in ``q``'s dtype,
    compared with ``r²``. Exactly symmetric in ``i`` and ``j`` (every step commutes
    with negation), so one orientation decides both edges of a pair.

    Args:
        columns: Positions by coordinate, ``[d, N]`` (contiguous rows).
        i, j: Node indices of the pairs, ``[M]`` each.
        r: Cut-off.
        box: Box lengths ``[1, d]`` or ``[G, d]``, or ``None``.
        batch: Graph of each node, ``[N]`` (used with a box of several rows).
    """
    per_pair = box is not None and box.shape[0] > 1
    graph_of_pair = batch.index_select(0, i) if per_pair else None
    d2 = None
    for k, column in enumerate(columns):  # one coordinate at a time: 1-D gathers
        diff = column.index_select(0, j) - column.index_select(0, i)
        if box is not None:
            length = box[:, k].index_select(0, graph_of_pair) if per_pair else box[0, k]
            diff = diff - length * torch.round(diff / length)
        d2 = diff * diff if d2 is None else d2 + diff * diff
    return d2 < r * r


def _all_pairs(ptr: Tensor, batch: Tensor) -> tuple[Tensor, Tensor]:
    """Every ordered pair ``(i, j)`` of each graph, self pairs included, sorted."""
    sizes = ptr[1:] - ptr[:-1]
    per_node = sizes[batch]
    total = int(per_node.sum())
    i = torch.repeat_interleave(torch.arange(batch.numel(), device=ptr.device), per_node,
                                output_size=total)
    first = torch.cumsum(per_node, 0) - per_node
    j = torch.arange(total, device=ptr.device) + (ptr[batch] - first)[i]
    return i, j


def _cell_pairs(q: Tensor, ptr: Tensor, batch: Tensor, r: float, box: Tensor | None
                ) -> tuple[Tensor, Tensor]:
    """The close pairs ``(i [P], j [P])`` (each unordered pair once) by a cell list.

    Cells are boxes of side at least ``r`` (plus a margin for rounding) in a grid per
    graph, keyed by one int64 (graph offset + mixed-radix cell index). Particles are
    sorted by key (then by index); a particle's candidates are the particles after it
    in its own cell and all particles of half of the ``3^d − 1`` cells around its own:
    those reached by an offset whose last non-zero component is +1 (wrapped across a
    periodic box), or, where a periodic grid has under 3 cells in some dimension, all
    distinct neighbouring cells with a larger key. So every pair of neighbouring
    cells is visited once. Everything runs on the cell-sorted copy
    (contiguous gathers), a block of particles at a time; memory ``O(N)`` plus a
    block's ``[B, 3^d]`` tables and a chunk of candidates, whatever the number of
    (empty) cells.
    """
    n, d = q.shape
    g = ptr.numel() - 1
    dev = q.device
    x = q.to(torch.float64)  # binning in float64: cells exact to the positions given
    eps = torch.finfo(q.dtype).eps
    scale = torch.zeros(g, device=dev, dtype=torch.float64).scatter_reduce(
        0, batch, x.abs().amax(1), "amax")
    if box is None:
        idx = batch[:, None].expand(n, d)
        lo = torch.full((g, d), math.inf, device=dev, dtype=torch.float64).scatter_reduce(
            0, idx, x, "amin")
        hi = torch.full((g, d), -math.inf, device=dev, dtype=torch.float64).scatter_reduce(
            0, idx, x, "amax")
        empty = (ptr[1:] == ptr[:-1])[:, None]
        lo, hi = lo.masked_fill(empty, 0.0), hi.masked_fill(empty, 0.0)
        # a margin: a pair judged closer than r in q's dtype is closer than a cell side
        side = (r * (1 + 1e-6) + 16 * eps * (scale + r))[:, None].expand(g, d).clone()
        dims = torch.floor((hi - lo) / side) + 3  # + an empty layer of cells on each side
    else:
        lengths = box.to(torch.float64).expand(g, d)
        side = r * (1 + 1e-6) + 16 * eps * (scale[:, None] + lengths + r)
        dims = torch.floor(lengths / side).clamp(min=1)
        lo = torch.zeros(g, d, device=dev, dtype=torch.float64)
        per_node = lengths.index_select(0, batch)
        x = x - per_node * torch.floor(x / per_node)
    # keep every graph's grid within an int64 key (only far-flung sparse systems)
    cap = 2.0 ** 60 / max(g, 1)
    while True:
        over = dims.prod(1) / cap
        if not bool((over > 1).any()):
            break
        grow = torch.where(over > 1, over ** (1 / d) * 1.01, torch.ones_like(over))[:, None]
        if box is None:
            side = side * grow
            dims = torch.floor((hi - lo) / side) + 3
        else:
            dims = torch.floor(dims / grow).clamp(min=1)
    if box is not None:
        side = lengths / dims
    dims_l = dims.long()
    strides = torch.cumprod(torch.cat([dims_l.new_ones(g, 1), dims_l[:, :-1]], 1), 1)
    cells = dims_l.prod(1)
    goff = torch.cumsum(cells, 0) - cells
    cell = torch.floor((x - lo.index_select(0, batch)) / side.index_select(0, batch)).long()
    if box is None:  # cells 1 .. dims - 2: the outer layers stay empty
        cell = torch.minimum(cell.clamp(min=0) + 1, dims_l.index_select(0, batch) - 2)
    else:
        cell = torch.minimum(cell.clamp(min=0), dims_l.index_select(0, batch) - 1)
    key = goff.index_select(0, batch) + (cell * strides.index_select(0, batch)).sum(1)
    key, order = torch.sort(key, stable=True)
    # from here on, particles in cell order: p = rank in that order
    batch_s = batch.index_select(0, order)
    goff_s = goff.index_select(0, batch_s)
    size_s, stride_s = dims_l.index_select(0, batch_s), strides.index_select(0, batch_s)
    cell = cell.index_select(0, order)

    # Neighbouring cells visited from each particle. Half of the 3^d - 1 offsets (those
    # whose last non-zero component is +1) visit every pair of distinct neighbouring
    # cells once where each dimension has >= 3 cells (one offset reaches B from A; its
    # negative, not in the half, would reach A from B).
    half = torch.tensor([o for o in itertools.product((-1, 0, 1), repeat=d)
                         if any(o) and [c for c in o if c][-1] == 1], device=dev,
                        dtype=torch.long)
    if box is None:
        # all strides > 0 and stride_k > sum of the lower ones: these offsets raise the
        # key; with the empty outer layers no neighbour of an occupied cell leaves the grid
        steps = (strides[:, None, :] * half).sum(-1)  # [G, K] (no integer matmul on GPUs)
        one_grid = g == 1 or bool((strides == strides[0]).all())
        mode = "open"
    elif bool((dims_l >= 3).all()):
        mode = "wrap"
    else:  # a grid of 1 or 2 cells somewhere: all offsets, repeats and duplicates masked
        everywhere = torch.tensor([o for o in itertools.product((-1, 0, 1), repeat=d)
                                   if any(o)], device=dev, dtype=torch.long)
        mode = "masked"

    def neighbour_keys(a: int, b: int) -> tuple[Tensor, Tensor | None]:
        """Keys ``[B, K]`` of the cells visited from particles ``a .. b - 1`` (sorted
        order) and which of them count (``None``: all)."""
        if mode == "open":
            step = steps[0] if one_grid else steps.index_select(0, batch_s[a:b])
            return key[a:b, None] + step, None
        nkey = goff_s[a:b, None]
        if mode == "wrap":  # wrapped coordinate x stride for the offsets -1, 0, +1
            for k in range(d):
                size = size_s[a:b, k:k + 1]
                c = cell[a:b, k:k + 1] + torch.arange(-1, 2, device=dev)  # [B, 3]
                c = torch.where(c < 0, c + size, torch.where(c >= size, c - size, c))
                nkey = nkey + (c * stride_s[a:b, k:k + 1]).index_select(1, half[:, k] + 1)
            return nkey, None
        valid = None
        for k in range(d):
            size, off = size_s[a:b, k:k + 1], everywhere[:, k]
            # where the grid has 1 or 2 cells, -1 (and +1) repeat other offsets
            ok = (size >= 3) | (off == 0) | ((size == 2) & (off == 1))
            valid = ok if valid is None else valid & ok
            nkey = nkey + torch.remainder(cell[a:b, k:k + 1] + off, size) * stride_s[a:b, k:k + 1]
        return nkey, valid & (nkey > key[a:b, None])  # each pair of cells from one side

    total_cells = int(cells.sum())
    dense_table = total_cells <= 4 * n + 1024
    if dense_table:  # a table over all cells
        count_all = torch.bincount(key, minlength=total_cells)
        start_all = torch.cumsum(count_all, 0) - count_all
        own_end = start_all.index_select(0, key) + count_all.index_select(0, key)
    else:  # look the occupied cells up by key (sparse grids)
        occupied, count_occ = torch.unique_consecutive(key, return_counts=True)
        start_occ = torch.cumsum(count_occ, 0) - count_occ
        own = torch.searchsorted(occupied, key)
        own_end = start_occ.index_select(0, own) + count_occ.index_select(0, own)

    def ranges(a: int, b: int) -> tuple[Tensor, Tensor]:
        """First candidate and number of candidates ``[B, 1 + K]`` of particles
        ``a .. b - 1``: the later ones of its own cell, then each visited cell's."""
        nkey, valid = neighbour_keys(a, b)
        if dense_table:
            if valid is not None:
                nkey = nkey.masked_fill(~valid, 0)
            flat = nkey.reshape(-1)
            start = start_all.index_select(0, flat).view_as(nkey)
            count = count_all.index_select(0, flat).view_as(nkey)
        else:
            at = torch.searchsorted(occupied, nkey).clamp(max=occupied.numel() - 1)
            found = occupied[at] == nkey
            valid = found if valid is None else valid & found
            start, count = start_occ[at], count_occ[at]
        if valid is not None:
            count = count.masked_fill(~valid, 0)
        after = torch.arange(a + 1, b + 1, device=dev)
        return (torch.cat([after[:, None], start], 1),
                torch.cat([(own_end[a:b] - after)[:, None], count], 1))

    # blocks of particles small enough for the CPU caches (one block on GPUs); within
    # a block, at most _CANDIDATES_PER_CHUNK candidate pairs at once (dense clusters)
    width = half.shape[0] + 1 if mode != "masked" else everywhere.shape[0] + 1
    block = max(1, _BLOCK_SLOTS // width) if dev.type == "cpu" else max(n, 1)
    columns = q.T.index_select(1, order)  # [d, N] in cell order
    found_i, found_j = [], []
    for a0 in range(0, n, block):
        b0 = min(n, a0 + block)
        start, count = ranges(a0, b0)
        per_particle = count.sum(1)
        ends = torch.cumsum(per_particle, 0)
        total = int(ends[-1])
        bounds = [0]
        if total > _CANDIDATES_PER_CHUNK:
            marks = torch.arange(_CANDIDATES_PER_CHUNK, total, _CANDIDATES_PER_CHUNK,
                                 device=dev)
            bounds += torch.searchsorted(ends, marks, right=True).tolist()
        bounds.append(b0 - a0)
        for a, b in itertools.pairwise(bounds):
            if b <= a:
                continue
            cnt = count[a:b].reshape(-1)
            size = int(cnt.sum())
            slot = torch.repeat_interleave(torch.arange(cnt.numel(), device=dev), cnt,
                                           output_size=size)
            shift = start[a:b].reshape(-1) - (torch.cumsum(cnt, 0) - cnt)
            j = torch.arange(size, device=dev) + shift.index_select(0, slot)
            i = (a0 + a) + torch.div(slot, width, rounding_mode="floor")
            keep = torch.nonzero(_closer_than(columns, i, j, r, box, batch_s)).squeeze(1)
            found_i.append(order.index_select(0, i.index_select(0, keep)))
            found_j.append(order.index_select(0, j.index_select(0, keep)))
    return torch.cat(found_i), torch.cat(found_j)


@dataclass
class GraphBatch:
    """A batch of particle graphs of possibly different sizes (nodes concatenated).

    Mirrors the PyG ``Batch`` attribute names, so functions written for one accept
    the other; :meth:`to_pyg` converts for PyG loaders and layers.

    Attributes:
        q: Positions ``[N, d]`` (or ``[..., N, d]`` with leading time/batch axes).
        p: Momenta, same shape as ``q``.
        c: Node constants ``[N, k]`` (mass first).
        edge_index: Directed edges ``[2, E]`` with global node indices, grouped by graph.
        ptr: Node offsets ``[G + 1]``.
        edge_attr: Edge constants ``[E, a]`` or ``None``.
        box: Periodic box lengths ``[G, d]``, one box per graph (floating, finite,
            ``> 0``; ``d`` is ``q``'s last axis), or ``None`` (open boundaries). With a
            box, an edge's vector is the minimum image: take it from
            :meth:`edge_vectors`, not ``q[receiver] − q[sender]``. Batches with and
            without a box do not mix (:meth:`cat` refuses).
    """

    q: Tensor
    p: Tensor
    c: Tensor
    edge_index: Tensor
    ptr: Tensor
    edge_attr: Tensor | None = None
    box: Tensor | None = None

    def __post_init__(self) -> None:
        n = int(self.ptr[-1])
        if self.q.shape[-2] != n or self.p.shape != self.q.shape:
            raise ValueError(f"q and p must be [..., {n}, d] for {self.num_graphs} graphs with "
                             f"{n} nodes, got {tuple(self.q.shape)} and {tuple(self.p.shape)}")
        if self.c.dim() != 2 or self.c.shape[0] != n:
            raise ValueError(f"node constants c must be [{n}, k], got {tuple(self.c.shape)}")
        if self.edge_index.dim() != 2 or self.edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must be [2, E], got {tuple(self.edge_index.shape)}")
        if self.edge_attr is not None and self.edge_attr.shape[0] != self.edge_index.shape[1]:
            raise ValueError(f"edge_attr must be [{self.edge_index.shape[1]}, a], got "
                             f"{tuple(self.edge_attr.shape)}")
        if self.box is not None:
            _check_graph_box(self.box, self.num_graphs, self.q.shape[-1])

    @property
    def num_graphs(self) -> int:
        """Number of graphs ``G``."""
        return self.ptr.numel() - 1

    @property
    def num_nodes(self) -> int:
        """Total number of nodes ``N``."""
        return int(self.ptr[-1])

    @property
    def sizes(self) -> Tensor:
        """Nodes per graph, ``[G]``."""
        return self.ptr[1:] - self.ptr[:-1]

    @cached_property
    def batch(self) -> Tensor:
        """Graph index of each node, ``[N]`` (computed once)."""
        return batch_vector(self.ptr)

    @cached_property
    def uniform_size(self) -> int | None:
        """Nodes per graph when all graphs have the same size, else ``None``."""
        sizes = self.sizes
        return int(sizes[0]) if bool((sizes == sizes[0]).all()) else None

    @cached_property
    def edge_batch(self) -> Tensor:
        """Graph index of each edge, ``[E]`` (computed once)."""
        return self.batch[self.edge_index[0]]

    @property
    def edge_ptr(self) -> Tensor:
        """Edge offsets ``[G + 1]`` (edges are grouped by graph)."""
        counts = torch.bincount(self.edge_batch, minlength=self.num_graphs)
        return torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    def replace(self, **changes: Tensor) -> GraphBatch:
        """A copy with some fields replaced (e.g. a new state ``q``, ``p``)."""
        return replace(self, **changes)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
           ) -> GraphBatch:
        """Move to ``device``; cast floating fields to ``dtype`` when given."""
        def mv(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)
        return GraphBatch(mv(self.q), mv(self.p), mv(self.c), mv(self.edge_index),
                          mv(self.ptr), mv(self.edge_attr), mv(self.box))

    def select(self, graphs: Sequence[int] | Tensor) -> GraphBatch:
        """The sub-batch of the given graphs (in the given order), re-indexed."""
        nodes, edges, ptr, edge_index = select_indices(self.ptr, self.edge_index, graphs)
        return GraphBatch(
            self.q.index_select(-2, nodes.to(self.q.device)),
            self.p.index_select(-2, nodes.to(self.p.device)),
            self.c[nodes.to(self.c.device)], edge_index, ptr,
            None if self.edge_attr is None else self.edge_attr[edges.to(self.edge_attr.device)],
            None if self.box is None else self.box[
                torch.as_tensor(graphs, dtype=torch.long).reshape(-1).to(self.box.device)])

    @staticmethod
    def cat(batches: Sequence[GraphBatch]) -> GraphBatch:
        """Concatenate batches (graphs of the first, then of the second, ...)."""
        if not batches:
            raise ValueError("cannot concatenate an empty list of graph batches")
        offsets = [0]
        for b in batches[:-1]:
            offsets.append(offsets[-1] + b.num_nodes)
        attrs = [b.edge_attr for b in batches]
        if any(a is None for a in attrs) and not all(a is None for a in attrs):
            raise ValueError("cannot concatenate batches with and without edge_attr")
        boxes = [b.box for b in batches]
        if any(x is None for x in boxes) and not all(x is None for x in boxes):
            raise ValueError("cannot concatenate batches with and without a periodic box "
                             "(box [G, d] on some, None on others)")
        return GraphBatch(
            torch.cat([b.q for b in batches], -2), torch.cat([b.p for b in batches], -2),
            torch.cat([b.c for b in batches]),
            torch.cat([b.edge_index + o for b, o in zip(batches, offsets, strict=True)], 1),
            ptr_from_sizes(torch.cat([b.sizes.cpu() for b in batches])).to(batches[0].ptr),
            None if attrs[0] is None else torch.cat(attrs),
            None if boxes[0] is None else torch.cat(boxes))

    def to_pyg(self) -> Batch:
        """Convert to a PyG ``Batch`` of ``Data(q, p, c, edge_index, edge_attr, box)``
        graphs (``box [1, d]`` per graph, so the batch holds ``box [G, d]``)."""
        from torch_geometric.data import Batch, Data

        if self.q.dim() != 2:
            raise ValueError("to_pyg needs a single state q [N, d], not a trajectory")
        ptr, eptr = self.ptr.tolist(), self.edge_ptr.tolist()
        data = []
        for g in range(self.num_graphs):
            a, b, ea, eb = ptr[g], ptr[g + 1], eptr[g], eptr[g + 1]
            kw = {} if self.edge_attr is None else {"edge_attr": self.edge_attr[ea:eb]}
            if self.box is not None:
                kw["box"] = self.box[g:g + 1]
            data.append(Data(q=self.q[a:b], p=self.p[a:b], c=self.c[a:b],
                             edge_index=self.edge_index[:, ea:eb] - a, num_nodes=b - a, **kw))
        return Batch.from_data_list(data)

    @classmethod
    def from_pyg(cls, batch: Batch | Data) -> GraphBatch:
        """Build from a PyG ``Data``/``Batch`` holding ``q, p, c, edge_index`` (and
        optionally ``edge_attr`` and ``box``: ``[G, d]``, or ``[d]`` for one graph)."""
        ptr = getattr(batch, "ptr", None)
        if ptr is None:
            ptr = torch.tensor([0, batch.num_nodes], device=batch.q.device)
        box = getattr(batch, "box", None)
        if box is not None and box.dim() == 1:
            box = box[None]
        return cls(batch.q, batch.p, batch.c, batch.edge_index, ptr,
                   getattr(batch, "edge_attr", None), box)

    @property
    def edge_box(self) -> Tensor | None:
        """Periodic box lengths of each edge's graph, ``[E, d]`` in ``q``'s dtype and
        device (``None`` without a box)."""
        if self.box is None:
            return None
        return self.box.to(self.q)[self.edge_batch.to(self.box.device)]

    def edge_vectors(self) -> Tensor:
        """Every edge's vector ``q[receiver] − q[sender]``, the minimum image in the
        box when there is one: ``[..., E, d]`` (leading axes of ``q`` kept)."""
        rel = self.q[..., self.edge_index[1], :] - self.q[..., self.edge_index[0], :]
        lengths = self.edge_box
        return rel if lengths is None else rel - lengths * torch.round(rel / lengths)

    def with_radius_edges(self, radius: float, *, backend: str = "auto") -> GraphBatch:
        """A copy whose edges are the pairs closer than ``radius`` now (minimum image in
        the box, if any; see :func:`radius_graph`), without edge constants.

        For systems whose neighbours change over time (short-range forces in a box):
        rebuild a state's graph from its positions ``q [N, d]`` before using edges.
        """
        if self.q.dim() != 2:
            raise ValueError("with_radius_edges needs a single state q [N, d], got "
                             f"{tuple(self.q.shape)}: select one time first")
        edge_index = radius_graph(self.q, self.ptr, radius, box=self.box, backend=backend)
        return replace(self, edge_index=edge_index, edge_attr=None)


def _check_graph_box(box: Tensor, graphs: int, d: int) -> None:
    """Validate a :class:`GraphBatch` box: ``[G, d]``, floating, finite, ``> 0``."""
    if not isinstance(box, Tensor) or box.dim() != 2 or tuple(box.shape) != (graphs, d):
        shape = tuple(box.shape) if isinstance(box, Tensor) else type(box).__name__
        raise ValueError(f"box must be periodic box lengths [G, d] = [{graphs}, {d}] (one box "
                         f"per graph), got {shape}")
    if not box.is_floating_point():
        raise ValueError(f"box must be floating point, got {box.dtype}")
    if box.numel() and not bool((torch.isfinite(box) & (box > 0)).all()):
        raise ValueError(f"box lengths must be finite and > 0, got {box.tolist()[:4]}")

