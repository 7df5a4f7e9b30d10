"""Fixed edge sets: complete graphs, graphs from networkx, and cutting graphs out of a batch.

Edges are directed ``[2, E]`` (sender row 0, receiver row 1); an undirected pair
appears twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from hogn.graph.segments import batch_vector, ptr_from_sizes

if TYPE_CHECKING:  # networkx: imported by the conversion from its graphs
    import networkx as nx


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
