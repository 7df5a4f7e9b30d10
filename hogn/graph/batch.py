"""A batch of particle graphs (:class:`GraphBatch`), mirroring PyG's ``Batch``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from hogn.graph.complete import select_indices
from hogn.graph.radius import radius_graph
from hogn.graph.segments import batch_vector, ptr_from_sizes

if TYPE_CHECKING:  # PyG: imported by the conversions from or to its objects
    from torch_geometric.data import Batch, Data


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
