"""Radius graphs: the pairs of nodes of each graph closer than a cut-off.

:func:`radius_graph` checks its inputs, picks a backend (:data:`RADIUS_BACKENDS`)
and orders the edges; the cell list lives in :mod:`hogn.graph.cells`, the distance
criterion in :mod:`hogn.graph.minimum_image`.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from hogn.graph.cells import _cell_pairs
from hogn.graph.minimum_image import _closer_than
from hogn.graph.segments import batch_vector

RADIUS_BACKENDS = ("auto", "cells", "brute", "torch_cluster")
"""Names accepted by :func:`radius_graph`'s ``backend`` option."""

_AUTO_BRUTE_PAIRS = 1 << 15  # auto: brute force while sum(n_g²) is at most this (faster)


def radius_graph(q: Tensor, ptr: Tensor, radius: float, *,
                 box: Tensor | Sequence[float] | None = None, backend: str = "auto") -> Tensor:
    """Edges between nodes of the same graph closer than ``radius`` (no self loops).

    A pair ``(i, j)`` of one graph is joined when ``|q_j − q_i| < radius`` (strictly:
    a pair exactly at the radius is not joined), the squared distance being summed
    dimension by dimension in ``q``'s dtype (the same arithmetic on every backend,
    so all of them return identical edges). With a periodic ``box`` the distance is
    that of the minimum image, ``Δ − L·round(Δ / L)`` per dimension (see
    :func:`edge_vectors`); positions may lie anywhere, inside the box or not.

    Backends (all exact, identical results):

    - ``"cells"``: a cell list in torch, for any ``d``, on any device. Particles are
      binned into cells of side at least ``radius`` (per graph; per dimension
      ``floor(L / radius)`` cells across a periodic box), sorted by cell, and each
      pair of neighbouring cells (the ``3^d`` around each) is searched once; each
      close pair is found once, then written in both directions. Time
      ``O(N log N + E log E)`` (two sorts; the rest linear), memory ``O(N + E)``:
      particles are taken in blocks (sized for the CPU caches; one block on a GPU)
      and candidates expanded at most ~2M at a time, and empty cells cost nothing
      (a grid with more than ``4 N`` cells is searched by key instead of a table).
      Vectorised: the only Python loops run over blocks, coordinates and offsets.
    - ``"brute"``: every pair of each graph, ``O(Σ n_g²)`` time and memory: for small
      graphs and as the reference in tests.
    - ``"torch_cluster"``: ``torch_cluster.radius_graph`` (needs the optional
      ``torch-cluster`` package; no periodic box), its pairs re-checked with the
      criterion above.
    - ``"auto"`` (default): ``"brute"`` while ``Σ n_g² ≤ 32768`` (where it is the
      fastest), else ``"torch_cluster"`` when it is importable and there is no box,
      else ``"cells"``.

    Args:
        q: Positions ``[N, d]`` (float32 or float64; not differentiated through).
        ptr: Node offsets ``[G + 1]``: ``ptr[0] = 0``, non-decreasing (empty graphs
            allowed), ``ptr[G] = N``.
        radius: Cut-off distance, finite and ``>= 0``.
        box: Periodic box lengths, ``[d]`` (all graphs) or ``[G, d]`` (one box per
            graph), or ``None`` (open boundaries). Every length must be at least
            ``2 · radius``, so that a pair has at most one image closer than the
            radius.
        backend: One of :data:`RADIUS_BACKENDS`.

    Returns:
        ``edge_index [2, E]`` (int64, on ``q``'s device) with both directions of each
        close pair, sorted by row 0, then row 1 (so grouped by graph), as
        :func:`fully_connected` orders its edges. With a box, take each edge's vector
        from :func:`edge_vectors`: ``q[row 1] − q[row 0]`` is not the minimum image.

    Raises:
        ValueError: On a malformed ``q``, ``ptr``, ``radius`` or ``box`` (the message
            says what was expected), or an unknown backend.
        ImportError: For ``backend="torch_cluster"`` without ``torch-cluster``.
    """
    q, ptr, r, box = _check_radius_inputs(q, ptr, radius, box, "radius")
    name = _resolve_backend(backend, ptr, box)
    n = q.shape[0]
    if n == 0 or r == 0.0:
        return torch.empty(2, 0, dtype=torch.long, device=q.device)
    batch = batch_vector(ptr)
    if name == "brute":
        i, j = _all_pairs(ptr, batch)
        keep = (i != j) & _closer_than(q.T.contiguous(), i, j, r, box, batch)
        return torch.stack([i[keep], j[keep]])  # already in (row 0, row 1) order
    if name == "torch_cluster":
        import torch_cluster

        max_size = int((ptr[1:] - ptr[:-1]).max())
        found = torch_cluster.radius_graph(q, r * (1 + 1e-5) + 1e-30, batch=batch,
                                           loop=False, max_num_neighbors=max_size)
        i, j = found[1], found[0]
        close = _closer_than(q.T.contiguous(), i, j, r, box, batch)
        keep = torch.nonzero((i != j) & close).squeeze(1)
        i, j = i.index_select(0, keep), j.index_select(0, keep)
    else:
        i, j = _cell_pairs(q, ptr, batch, r, box)
        i, j = torch.cat([i, j]), torch.cat([j, i])
    pair_key = torch.sort(i * n + j).values
    return torch.stack([torch.div(pair_key, n, rounding_mode="floor"), pair_key % n])


def _check_length(value: float, name: str) -> float:
    """``value`` as a float, which must be finite and ``>= 0``."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}") from None
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return x


def _check_box_values(box: Tensor, cutoff: float, what: str) -> None:
    if not bool(torch.isfinite(box).all()) or bool((box <= 0).any()):
        raise ValueError(f"box lengths must be finite and > 0, got {box.tolist()}")
    if bool((box < 2 * cutoff).any()):
        raise ValueError(
            f"box lengths {box.tolist()} are smaller than "
            f"{f'2 * ({what})' if ' ' in what else f'2 * {what}'} = {2 * cutoff:g} in some "
            "dimension: the minimum image is only unique for box >= 2 * cut-off (use a "
            "larger box or a smaller cut-off)")


def _check_radius_inputs(q: Tensor, ptr: Tensor, radius: float,
                         box: Tensor | Sequence[float] | None, what: str
                         ) -> tuple[Tensor, Tensor, float, Tensor | None]:
    """Validated ``q`` (detached), ``ptr`` (int64, on ``q``'s device), radius, box.

    The box comes back as ``[1, d]`` or ``[G, d]`` in ``q``'s dtype and device.
    """
    if not isinstance(q, Tensor) or q.dim() != 2 or not q.is_floating_point():
        shape = tuple(q.shape) if isinstance(q, Tensor) else type(q).__name__
        raise ValueError(f"q must be a floating-point tensor of positions [N, d], got {shape}")
    n, d = q.shape
    if d < 1:
        raise ValueError(f"q must have at least one coordinate per node, got shape {(n, d)}")
    r = _check_length(radius, what)
    ptr = torch.as_tensor(ptr, device=q.device)
    if ptr.dim() != 1 or ptr.numel() < 1 or ptr.is_floating_point() or ptr.is_complex():
        raise ValueError(f"ptr must be a 1-D integer tensor of node offsets [G + 1], got "
                         f"{tuple(ptr.shape)} {ptr.dtype}")
    ptr = ptr.long()
    if int(ptr[0]) != 0 or int(ptr[-1]) != n or bool((ptr.diff() < 0).any()):
        raise ValueError(f"ptr must start at 0, never decrease and end at N = {n} (the rows "
                         f"of q), got {ptr.tolist()[:8]}{' ...' if ptr.numel() > 8 else ''}")
    if n and not bool(torch.isfinite(q).all()):
        raise ValueError("q must hold finite positions; it has NaN or infinite entries")
    if box is None:
        return q.detach(), ptr, r, None
    lengths = torch.as_tensor(box, dtype=q.dtype, device=q.device)
    g = ptr.numel() - 1
    if lengths.dim() == 1:
        lengths = lengths[None]
    if lengths.dim() != 2 or lengths.shape[1] != d or lengths.shape[0] not in (1, g):
        raise ValueError(f"box must hold lengths [d] = [{d}] or [G, d] = [{g}, {d}], got "
                         f"{tuple(torch.as_tensor(box).shape)}")
    _check_box_values(lengths, r, what)
    return q.detach(), ptr, r, lengths


def _resolve_backend(backend: str, ptr: Tensor, box: Tensor | None) -> str:
    if backend not in RADIUS_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {RADIUS_BACKENDS}")
    if backend == "torch_cluster":
        if box is not None:
            raise ValueError("backend 'torch_cluster' has no periodic box: use 'cells' "
                             "(or 'auto')")
        import torch_cluster  # noqa: F401  (ImportError names the missing package)
    if backend != "auto":
        return backend
    sizes = ptr[1:] - ptr[:-1]
    if int((sizes * sizes).sum()) <= _AUTO_BRUTE_PAIRS:
        return "brute"
    if box is None and importlib.util.find_spec("torch_cluster") is not None:
        return "torch_cluster"
    return "cells"


def _all_pairs(ptr: Tensor, batch: Tensor) -> tuple[Tensor, Tensor]:
    """Every ordered pair ``(i, j)`` of each graph, self pairs included, sorted."""
    sizes = ptr[1:] - ptr[:-1]
    per_node = sizes[batch]
    total = int(per_node.sum())
    i = torch.repeat_interleave(torch.arange(batch.numel(), device=ptr.device), per_node,
                                output_size=total)
    first = torch.cumsum(per_node, 0) - per_node
    j = torch.arange(total, device=ptr.device) + (ptr[batch] - first)[i]
    return i, j
