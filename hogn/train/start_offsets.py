"""The learnable offsets of the training samples' start states (``refine_initial``)."""

from __future__ import annotations

import torch
from torch import Tensor

from hogn.train.samples import Batch


class _StartOffsets(torch.nn.Module):
    """Learnable offsets of the training samples' start states (``refine_initial``):
    ``q, p [T, N_all, d]``, zero at first, one per state of the dataset (only those
    where a training sample starts ever receive a gradient, so Adam leaves the rest
    at zero)."""

    def __init__(self, like: Tensor) -> None:
        super().__init__()
        self.q = torch.nn.Parameter(torch.zeros_like(like))
        self.p = torch.nn.Parameter(torch.zeros_like(like))

    def shift(self, batch: Batch) -> Batch:
        """The batch with its start states moved by their offsets (differentiably)."""
        if batch.start is None:
            raise ValueError("refine_initial needs batches that know where their states "
                             "lie in the dataset (Batch.start)")
        d = self.q.shape[-1]
        graph = batch.graph
        graph = graph.replace(q=graph.q + self.q.view(-1, d)[batch.start],
                              p=graph.p + self.p.view(-1, d)[batch.start])
        return Batch(graph, batch.y_q, batch.y_p, batch.start)

    def starts(self, q_obs: Tensor, p_obs: Tensor) -> tuple[Tensor, Tensor]:
        """The observations ``[T, N_all, d]`` plus the offsets (detached)."""
        return (q_obs + self.q).detach(), (p_obs + self.p).detach()
