"""The batches an epoch iterates: loaders over :class:`~hogn.train.samples.Samples`,
an epoch cut short, a rank's share of a global batch, and the progress bar."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from hogn import distributed
from hogn.train.samples import Batch, Samples


def _loader(samples: Samples, batch_size: int, shuffle: bool = False,
            sampler: Any = None, generator: torch.Generator | None = None,
            shards: int = 1, batch_sampler: Any = None) -> torch.utils.data.DataLoader:
    """Batches of sample indices collated by :meth:`Samples.collate`; with ``shards``
    processes, each global batch collated as this rank's :class:`_Share` of it (the
    batches and the random draws are those of one process). A ``batch_sampler``
    (:class:`hogn.batching.EdgeBudgetBatches`) replaces the other batching options."""
    collate = samples.collate if shards == 1 else _ShardCollate(samples)
    if batch_sampler is not None:
        return torch.utils.data.DataLoader(range(len(samples)), batch_sampler=batch_sampler,
                                           collate_fn=collate)
    return torch.utils.data.DataLoader(range(len(samples)), batch_size=batch_size,
                                       shuffle=shuffle, sampler=sampler, generator=generator,
                                       collate_fn=collate)


class _FirstBatches:
    """The first ``count`` batches of a loader: the last epoch of a run by steps, cut
    short (iterated and sized as the loader is by :func:`_batches`)."""

    def __init__(self, loader: torch.utils.data.DataLoader, count: int) -> None:
        self.loader, self.count = loader, count

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.loader), self.count)

    def __len__(self) -> int:
        return self.count


_Batches = torch.utils.data.DataLoader | _FirstBatches


@dataclass
class _Share:
    """One rank's part of a global batch (training in several processes).

    Attributes:
        batch: The rank's samples of the global batch; when it has none (a global
            batch smaller than the world), a stand-in (the batch's first sample) that
            enters the loss with weight 0, so that every rank takes part in each step.
        graphs: Graphs of the global batch.
        nodes: Nodes of the global batch.
        empty: Whether ``batch`` is the stand-in.
    """

    batch: Batch
    graphs: int
    nodes: int
    empty: bool


class _ShardCollate:
    """Collates a global batch of sample indices as this rank's :class:`_Share`: rank
    ``r`` of ``P`` takes positions ``r, r + P, ...`` of it (``DistributedSampler``'s
    rule, applied to each global batch of the one-process order, so that the union of
    the shares is the batch one process would take, and an epoch's shares are the
    epoch's order split as ``DistributedSampler`` splits it, without its padding)."""

    def __init__(self, samples: Samples) -> None:
        self.samples = samples

    def __call__(self, indices: list[int]) -> _Share:
        s = self.samples
        index = torch.as_tensor(indices, dtype=torch.long)
        g = s.index[index, 0]
        nodes = int((s.ptr[g + 1] - s.ptr[g]).sum())
        mine = torch.as_tensor(distributed.shard(index))
        empty = mine.numel() == 0
        return _Share(s.collate(index[:1] if empty else mine), index.numel(), nodes, empty)


def _batches(loader: _Batches, epoch: int, training: bool,
             progress: bool) -> Iterator[Any]:
    """The loader's batches, behind a tqdm bar when ``progress``."""
    batches: Iterator[Any] = iter(loader)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=len(loader), leave=False, disable=None,
                       desc=f"epoch {epoch}" + ("" if training else " val"))
    return batches
