"""Vectors and distances of pairs of nodes, as minimum images in a periodic box.

:func:`edge_vectors` gives each edge's vector; :func:`_closer_than` is the one
distance criterion with which every backend of :func:`hogn.graph.radius_graph` (and
a trimmed :class:`hogn.graph.NeighbourList`) decides which pairs are close.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from hogn.graph.segments import batch_vector


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
