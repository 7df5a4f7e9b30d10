"""Batches cut by a budget of edges (or nodes), not by a count of graphs.

A batch of 64 graphs is 64 × 20 edges for springs of 5 particles and 64 × 65,000 for
systems of 4,096 particles on neighbour graphs: memory and time follow the edges.
:class:`EdgeBudgetBatches` is a batch sampler for :class:`torch.utils.data.DataLoader`
(``batch_sampler=``) that fills each batch with samples, in a shuffled order, until
the next one would pass the budget.

Its order depends only on ``seed`` and the epoch (:meth:`EdgeBudgetBatches.set_epoch`,
as :class:`torch.utils.data.DistributedSampler`), so its length is known before an
epoch starts, and under several processes (``num_replicas > 1``) every rank cuts the
same batches and takes every ``num_replicas``-th: all ranks get the same number of
batches (the last ones are repeated from the start of the epoch when the count does
not divide), which :class:`torch.nn.parallel.DistributedDataParallel` needs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from hogn import checks

__all__ = ["EdgeBudgetBatches", "budget_batches"]


def budget_batches(costs: Sequence[int] | Tensor, budget: int,
                   order: Sequence[int] | Tensor | None = None) -> list[list[int]]:
    """Cut ``order`` into consecutive batches whose summed cost stays within ``budget``.

    Args:
        costs: Cost of each sample (edges, or nodes), ``[S]`` non-negative ints.
        budget: Largest summed cost of a batch (a positive int). A sample that alone
            costs more than the budget gets a batch of its own.
        order: Sample indices in the order to cut (default ``0 .. S − 1``).

    Returns:
        The batches, lists of sample indices, in order; every index of ``order``
        appears exactly once.

    Raises:
        ValueError: On a non-positive budget, negative costs or an index out of range.
    """
    budget = checks.positive_int(budget, "budget")
    cost = torch.as_tensor(costs).reshape(-1)
    if cost.is_floating_point() or cost.dtype == torch.bool:
        raise ValueError(f"costs must be integers (edges or nodes per sample), got {cost.dtype}")
    if cost.numel() and int(cost.min()) < 0:
        raise ValueError(f"costs must be >= 0, got a minimum of {int(cost.min())}")
    ids = (torch.arange(cost.numel()) if order is None
           else torch.as_tensor(order, dtype=torch.long).reshape(-1))
    if ids.numel() and not (0 <= int(ids.min()) and int(ids.max()) < cost.numel()):
        raise ValueError(f"order holds indices outside [0, {cost.numel()})")
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, c in zip(ids.tolist(), cost[ids].tolist(), strict=True):
        if current and used + c > budget:
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += c
    if current:
        batches.append(current)
    return batches


class EdgeBudgetBatches(torch.utils.data.Sampler[list[int]]):
    """Batch sampler: shuffled samples cut into batches of at most ``budget`` edges.

    Args:
        costs: Edges (or nodes) of each sample, ``[S]``.
        budget: Largest summed cost of a batch (a sample above it goes alone).
        shuffle: Shuffle the samples every epoch (seeded by ``seed + epoch``); else
            keep their order.
        seed: Base seed of the shuffle.
        num_replicas: Processes sharing the batches (``torch.distributed`` world size).
        rank: This process's rank in ``[0, num_replicas)``.

    Example::

        sampler = EdgeBudgetBatches(edges_per_graph, budget=200_000, seed=0)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            for batch in loader: ...
    """

    def __init__(self, costs: Sequence[int] | Tensor, budget: int, *, shuffle: bool = True,
                 seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        self.costs = torch.as_tensor(costs).reshape(-1).cpu()
        self.budget = checks.positive_int(budget, "budget")
        self.shuffle = bool(shuffle)
        self.seed = checks.nonnegative_int(seed, "seed")
        self.num_replicas = checks.positive_int(num_replicas, "num_replicas")
        self.rank = checks.nonnegative_int(rank, "rank")
        if self.rank >= self.num_replicas:
            raise ValueError(f"rank must be in [0, {self.num_replicas}), got {self.rank}")
        if self.costs.numel() == 0:
            raise ValueError("EdgeBudgetBatches needs at least one sample")
        self.epoch = 0
        self._cut: tuple[int, list[list[int]]] | None = None  # (epoch, its batches)
        budget_batches(self.costs, self.budget, order=[])  # validates the costs

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffle of ``epoch`` (call before each epoch when shuffling)."""
        self.epoch = checks.nonnegative_int(epoch, "epoch")

    def _all_batches(self) -> list[list[int]]:
        """Every rank's batches of this epoch, cut once (``len`` and ``iter`` share them)."""
        if self._cut is None or self._cut[0] != self.epoch:
            self._cut = (self.epoch, self._cut_epoch())
        return self._cut[1]

    def _cut_epoch(self) -> list[list[int]]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.costs.numel(), generator=gen)
        else:
            order = torch.arange(self.costs.numel())
        batches = budget_batches(self.costs, self.budget, order)
        pad = -len(batches) % self.num_replicas
        return batches + (batches * (pad // len(batches) + 1))[:pad]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._all_batches()[self.rank::self.num_replicas]

    def __len__(self) -> int:
        return len(self._all_batches()) // self.num_replicas
