"""Training samples: the states of chosen trajectories at chosen times
(:class:`Samples`), cut into batches (:class:`Batch`), and the split of a dataset's
training trajectories into training and validation (:func:`_split`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data

from hogn.graph import GraphBatch, ptr_from_sizes
from hogn.graph.complete import _ranges

__all__ = ["Batch", "Samples"]


@dataclass
class Batch:
    """A training batch: states of ``G`` graphs and their targets.

    Attributes:
        graph: The states ``q, p [N, d]`` with ``c``, edges and ``ptr``.
        y_q, y_p: Targets, ``[N, d]`` (derivative) or ``[N, k, d]`` (the next ``k``
            states, rollout).
        start: Where each node's state lies in the dataset's ``[T, N_all, d]`` arrays,
            as the flat index ``t · N_all + node`` ``[N]`` (``None``: not known).
    """

    graph: GraphBatch
    y_q: Tensor
    y_p: Tensor
    start: Tensor | None = None

    @property
    def num_graphs(self) -> int:
        return self.graph.num_graphs

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.graph.to(device), self.y_q.to(device), self.y_p.to(device),
                     None if self.start is None else self.start.to(device))


class Samples(torch.utils.data.Dataset):
    """States of chosen trajectories at chosen times.

    ``samples[i]`` is one state as a PyG ``Data`` (with targets ``y_q, y_p``);
    :meth:`collate` cuts a whole batch out of the dataset's arrays at once, giving
    the same nodes, edges and targets as a PyG ``Batch`` of those ``Data`` but
    without building an object per state (vectorised gathers: ~100x less overhead).
    """

    def __init__(self, data: Any, graphs: Tensor, k: int, target: str) -> None:
        self.data, self.k, self.target = data, k, target
        self.q = data.q_obs if getattr(data, "q_obs", None) is not None else data.q
        self.p = data.p_obs if getattr(data, "p_obs", None) is not None else data.p
        times = data.t.numel() - (k if target == "rollout" else 0)
        if times < 1:
            raise ValueError(f"trajectories of {data.t.numel()} points are too short for "
                             f"{k} rollout step(s)")
        grid = torch.cartesian_prod(graphs, torch.arange(times))
        self.index = grid.reshape(-1, 2)
        ptr = data.ptr.cpu()
        counts = torch.bincount(
            torch.repeat_interleave(torch.arange(ptr.numel() - 1), ptr.diff())[
                data.edge_index[0].cpu()], minlength=ptr.numel() - 1)
        self.ptr, self.eptr = ptr, torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    def __len__(self) -> int:
        return self.index.shape[0]

    def costs(self) -> Tensor:
        """Edges plus nodes of every sample's graph, ``[len(self)]`` (the size that
        :class:`hogn.batching.EdgeBudgetBatches` budgets)."""
        g = self.index[:, 0]
        return (self.eptr[g + 1] - self.eptr[g]) + (self.ptr[g + 1] - self.ptr[g])

    def __getitem__(self, i: int) -> Data:
        g, t = self.index[i].tolist()
        a, b = int(self.ptr[g]), int(self.ptr[g + 1])
        ea, eb = int(self.eptr[g]), int(self.eptr[g + 1])
        d = self.data
        item = Data(q=self.q[t, a:b], p=self.p[t, a:b], c=d.c[a:b],
                    edge_index=d.edge_index[:, ea:eb] - a, num_nodes=b - a)
        if d.edge_attr is not None:
            item.edge_attr = d.edge_attr[ea:eb]
        if getattr(d, "box", None) is not None:
            item.box = d.box[g:g + 1]
        if self.target == "derivative":
            item.y_q, item.y_p = d.dq[t, a:b], d.dp[t, a:b]
        else:  # node-major so PyG concatenates along nodes: [n, k, d]
            item.y_q = self.q[t + 1: t + 1 + self.k, a:b].transpose(0, 1)
            item.y_p = self.p[t + 1: t + 1 + self.k, a:b].transpose(0, 1)
        return item

    def collate(self, indices: list[int] | Tensor) -> Batch:
        """The samples ``indices`` as one :class:`Batch` (nodes graph after graph)."""
        d = self.data
        g, t = self.index[torch.as_tensor(indices, dtype=torch.long)].unbind(1)
        n_sizes = self.ptr[g + 1] - self.ptr[g]
        e_sizes = self.eptr[g + 1] - self.eptr[g]
        nodes = _ranges(self.ptr[g], self.ptr[g + 1])
        edges = _ranges(self.eptr[g], self.eptr[g + 1])
        ptr = ptr_from_sizes(n_sizes)
        shift = torch.repeat_interleave(ptr[:-1] - self.ptr[g], e_sizes)
        t_node = torch.repeat_interleave(t, n_sizes)
        dev = self.q.device
        nodes_d, edges_d, t_d = nodes.to(dev), edges.to(dev), t_node.to(dev)
        edge_index = d.edge_index[:, edges_d] + shift.to(dev)
        graph = GraphBatch(self.q[t_d, nodes_d], self.p[t_d, nodes_d], d.c[nodes_d],
                           edge_index, ptr.to(dev),
                           None if d.edge_attr is None else d.edge_attr[edges_d],
                           None if getattr(d, "box", None) is None else d.box[g.to(dev)])
        start = t_d * self.q.shape[1] + nodes_d
        if self.target == "derivative":
            return Batch(graph, d.dq[t_d, nodes_d], d.dp[t_d, nodes_d], start)
        ahead = t_d[:, None] + torch.arange(1, self.k + 1, device=dev)  # [N, k]
        return Batch(graph, self.q[ahead, nodes_d[:, None]], self.p[ahead, nodes_d[:, None]],
                     start)


def _split(data: Any, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    train_ids = (~data.test.cpu()).nonzero().flatten()
    if train_ids.numel() == 0:
        raise ValueError("the dataset has no training trajectories")
    gen = torch.Generator().manual_seed(seed)
    perm = train_ids[torch.randperm(train_ids.numel(), generator=gen)]
    n_val = round(val_fraction * perm.numel()) if perm.numel() > 1 else 0
    return perm[n_val:], perm[:n_val]
