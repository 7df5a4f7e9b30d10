"""Building particle graphs: edge sets for batches of graphs of different sizes.

Node indices are global over a batch: graph ``g`` owns nodes
``ptr[g] .. ptr[g + 1] - 1``, as in a PyG ``Batch``. Edges are directed
``[2, E]`` (sender row 0, receiver row 1); an undirected pair appears twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import networkx as nx
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

__all__ = [
    "GraphBatch",
    "batch_vector",
    "from_networkx",
    "fully_connected",
    "ptr_from_sizes",
    "radius_graph",
    "select_indices",
]


def ptr_from_sizes(sizes: Sequence[int] | Tensor, device: torch.device | str | None = None
                   ) -> Tensor:
    """Node offsets ``ptr [G + 1]`` of graphs with ``sizes [G]`` nodes."""
    sizes = torch.as_tensor(sizes, dtype=torch.long, device=device)
    if sizes.dim() != 1 or (sizes < 1).any():
        raise ValueError(f"graph sizes must be a 1-D sequence of positive ints, got {sizes}")
    return torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])


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
        graph = nx.convert_node_labels_to_integers(graph)
    pairs = [(u, v) for u, v in graph.edges if u != v]
    if not graph.is_directed():
        pairs = pairs + [(v, u) for u, v in pairs]
    if not pairs:
        return torch.empty(2, 0, dtype=torch.long)
    edges = torch.tensor(sorted(pairs), dtype=torch.long).T
    return edges + offset


def radius_graph(q: Tensor, ptr: Tensor, radius: float) -> Tensor:
    """Edges between nodes of the same graph closer than ``radius`` (no self loops).

    Args:
        q: Positions ``[N, d]``.
        ptr: Node offsets ``[G + 1]``.
        radius: Cut-off distance.

    Returns:
        ``edge_index [2, E]`` with both directions of each close pair.
    """
    batch = batch_vector(ptr)
    dist = torch.cdist(q, q)
    close = (dist < radius) & (batch[:, None] == batch[None, :])
    close.fill_diagonal_(False)
    return close.nonzero().T.contiguous()


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
    """

    q: Tensor
    p: Tensor
    c: Tensor
    edge_index: Tensor
    ptr: Tensor
    edge_attr: Tensor | None = None

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
                          mv(self.ptr), mv(self.edge_attr))

    def select(self, graphs: Sequence[int] | Tensor) -> GraphBatch:
        """The sub-batch of the given graphs (in the given order), re-indexed."""
        nodes, edges, ptr, edge_index = select_indices(self.ptr, self.edge_index, graphs)
        return GraphBatch(
            self.q.index_select(-2, nodes.to(self.q.device)),
            self.p.index_select(-2, nodes.to(self.p.device)),
            self.c[nodes.to(self.c.device)], edge_index, ptr,
            None if self.edge_attr is None else self.edge_attr[edges.to(self.edge_attr.device)])

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
        return GraphBatch(
            torch.cat([b.q for b in batches], -2), torch.cat([b.p for b in batches], -2),
            torch.cat([b.c for b in batches]),
            torch.cat([b.edge_index + o for b, o in zip(batches, offsets, strict=True)], 1),
            ptr_from_sizes(torch.cat([b.sizes.cpu() for b in batches])).to(batches[0].ptr),
            None if attrs[0] is None else torch.cat(attrs))

    def to_pyg(self) -> Batch:
        """Convert to a PyG ``Batch`` of ``Data(q, p, c, edge_index, edge_attr)`` graphs."""
        if self.q.dim() != 2:
            raise ValueError("to_pyg needs a single state q [N, d], not a trajectory")
        ptr, eptr = self.ptr.tolist(), self.edge_ptr.tolist()
        data = []
        for g in range(self.num_graphs):
            a, b, ea, eb = ptr[g], ptr[g + 1], eptr[g], eptr[g + 1]
            kw = {} if self.edge_attr is None else {"edge_attr": self.edge_attr[ea:eb]}
            data.append(Data(q=self.q[a:b], p=self.p[a:b], c=self.c[a:b],
                             edge_index=self.edge_index[:, ea:eb] - a, num_nodes=b - a, **kw))
        return Batch.from_data_list(data)

    @classmethod
    def from_pyg(cls, batch: Batch | Data) -> GraphBatch:
        """Build from a PyG ``Data``/``Batch`` holding ``q, p, c, edge_index``."""
        ptr = getattr(batch, "ptr", None)
        if ptr is None:
            ptr = torch.tensor([0, batch.num_nodes], device=batch.q.device)
        return cls(batch.q, batch.p, batch.c, batch.edge_index, ptr,
                   getattr(batch, "edge_attr", None))
