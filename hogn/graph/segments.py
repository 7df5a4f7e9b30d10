"""Node offsets and per-bucket reductions: ``ptr``, the graph of each node, sums and maxima.

Node indices are global over a batch: graph ``g`` owns nodes
``ptr[g] .. ptr[g + 1] - 1``, as in a PyG ``Batch``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


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
