"""The cell-list search of :func:`hogn.graph.radius_graph` (backend ``"cells"``).

:func:`_cell_pairs` finds each close pair once; the constants below bound its
blocks of particles and chunks of candidates (tests patch them here to take the
paths of large systems).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from hogn.graph.minimum_image import _closer_than

_CANDIDATES_PER_CHUNK = 1 << 21  # cell list: candidate pairs expanded at once (memory bound)
_BLOCK_SLOTS = 1 << 15  # cell list on CPU: particles x visited cells per block (cache size)


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
