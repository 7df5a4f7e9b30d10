"""Rollout metrics over batches of graphs: state errors, relative errors, energy errors.

Trajectories are ``q, p [T, N, d]`` with nodes of ``G`` graphs concatenated
(``batch [N]`` gives each node's graph). Energies come from a caller-supplied
function (``hogn`` knows no physical system): ``energy(q, p) -> [T, G]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch_geometric.utils import scatter

__all__ = [
    "energy_drift",
    "energy_error",
    "geometric_mean",
    "radial_distribution",
    "relative_drift",
    "relative_error",
    "state_mse",
    "time_to_threshold",
]

EnergyFn = Callable[[Tensor, Tensor], Tensor]


def _per_graph_sq(x: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """Sum of squares per graph: ``x [T, N, d] -> [T, G]``."""
    return scatter((x**2).sum(-1), batch, dim=-1, dim_size=num_graphs, reduce="sum")


def state_mse(q: Tensor, p: Tensor, q_true: Tensor, p_true: Tensor, batch: Tensor,
              num_graphs: int) -> Tensor:
    """Mean squared error of the phase-space state per step and graph.

    Args:
        q, p: Predicted ``[T, N, d]``.
        q_true, p_true: Ground truth ``[T, N, d]``.
        batch: Graph of each node ``[N]``.
        num_graphs: ``G``.

    Returns:
        ``[T, G]``: mean over the graph's ``2 n d`` state components.
    """
    sq = _per_graph_sq(q - q_true, batch, num_graphs) + _per_graph_sq(p - p_true, batch,
                                                                      num_graphs)
    sizes = torch.bincount(batch, minlength=num_graphs).to(sq.dtype)
    return sq / (2 * q.shape[-1] * sizes)


def relative_error(q: Tensor, p: Tensor, q_true: Tensor, p_true: Tensor, batch: Tensor,
                   num_graphs: int) -> Tensor:
    """Relative error ``‖a − b‖ / (‖a‖ + ‖b‖)`` of the whole state per step and graph.

    Bounded in ``[0, 1]``; the HOGN paper's rollout metric.

    Returns:
        ``[T, G]``.
    """
    diff = _per_graph_sq(q - q_true, batch, num_graphs) + _per_graph_sq(p - p_true, batch,
                                                                        num_graphs)
    norm_a = (_per_graph_sq(q, batch, num_graphs) + _per_graph_sq(p, batch, num_graphs)).sqrt()
    norm_b = (_per_graph_sq(q_true, batch, num_graphs)
              + _per_graph_sq(p_true, batch, num_graphs)).sqrt()
    return diff.sqrt() / (norm_a + norm_b).clamp_min(torch.finfo(q.dtype).tiny)


def geometric_mean(x: Tensor, dim: int = -1, eps: float = 1e-30) -> Tensor:
    """Geometric mean along ``dim`` (values floored at ``eps`` before the log)."""
    return x.clamp_min(eps).log().mean(dim).exp()


def energy_error(q: Tensor, p: Tensor, energy: EnergyFn, reference: Tensor | None = None
                 ) -> Tensor:
    """Relative error of the true energy along a predicted trajectory.

    Args:
        q, p: Predicted trajectory ``[T, N, d]``.
        energy: True Hamiltonian ``energy(q, p) -> [T, G]``.
        reference: True energies ``[G]`` to compare with (default: the energy of the
            first predicted state, i.e. the initial condition), or a true energy curve
            ``[T, G]`` (for systems whose energy changes by design), compared time by
            time and still relative to its initial value.

    Returns:
        ``|H(q_t, p_t) − H_ref| / |H_ref|`` (``|H(q_t, p_t) − H_ref,t| / |H_ref,0|`` for
        a curve), ``[T, G]``.
    """
    h = energy(q, p)
    ref = h[0] if reference is None else reference
    scale = ref[0] if ref.dim() == h.dim() else ref
    return (h - ref).abs() / scale.abs().clamp_min(torch.finfo(h.dtype).tiny)


def relative_drift(h: Tensor) -> Tensor:
    """Largest relative change ``max_t |h_t − h_0| / |h_0|`` of energies ``h [T, G]``, ``[G]``."""
    return ((h - h[0]).abs() / h[0].abs().clamp_min(torch.finfo(h.dtype).tiny)).amax(0)


def energy_drift(q: Tensor, p: Tensor, energy: EnergyFn) -> Tensor:
    """Largest relative energy change along a trajectory, ``[G]``."""
    return relative_drift(energy(q, p))


def time_to_threshold(error: Tensor, t: Tensor, threshold: float) -> Tensor:
    """First time at which a per-step error exceeds ``threshold``.

    Args:
        error: ``[T, G]`` (e.g. :func:`relative_error`).
        t: Times ``[T]``.
        threshold: Error level.

    Returns:
        ``[G]``: the first ``t`` with ``error > threshold``, or ``inf`` if never.
    """
    above = error > threshold
    first = torch.where(above.any(0), above.to(torch.int8).argmax(0),
                        torch.full_like(above[0], -1, dtype=torch.long))
    out = torch.full(first.shape, float("inf"), dtype=t.dtype, device=t.device)
    hit = first >= 0
    out[hit] = t[first[hit]]
    return out


def radial_distribution(q: Tensor, ptr: Tensor, box: Tensor, r_max: float, bins: int = 50
                        ) -> tuple[Tensor, Tensor]:
    """Radial distribution function ``g(r)`` of particles in periodic boxes.

    Pair distances (minimum image, found by :func:`hogn.graph.radius_graph`'s cell
    lists, ``O(N)``) are histogrammed over ``[0, r_max)`` and divided by the count an
    ideal gas of the same density would give in each shell: ``g → 1`` at large ``r``
    for a fluid. Frames and graphs are pooled (each graph normalised by its own
    density).

    Args:
        q: Positions ``[N, d]`` or frames ``[T, N, d]`` (``d`` = 2 or 3).
        ptr: Node offsets ``[G + 1]``.
        box: Periodic box lengths ``[G, d]`` (each at least ``2 r_max``).
        r_max: Largest distance (> 0).
        bins: Number of shells.

    Returns:
        ``(r [bins], g [bins])``: shell centres and ``g(r)``.
    """
    from hogn.graph import edge_vectors, radius_graph

    d = q.shape[-1]
    if d not in (2, 3):
        raise ValueError(f"radial_distribution needs d = 2 or 3, got positions {tuple(q.shape)}")
    if not (isinstance(r_max, (int, float)) and math.isfinite(r_max) and r_max > 0):
        raise ValueError(f"r_max must be a positive finite number, got {r_max!r}")
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    frames = q.reshape(-1, *q.shape[-2:])
    box = box.to(frames)
    sizes = (ptr[1:] - ptr[:-1]).to(frames)
    pairs_density = sizes * (sizes - 1) / box.prod(-1)  # [G]: ordered pairs per volume
    edges_r = torch.linspace(0.0, float(r_max), bins + 1, dtype=frames.dtype,
                             device=frames.device)
    shell = (edges_r[1:] ** d - edges_r[:-1] ** d) * (math.pi if d == 2 else 4 * math.pi / 3)
    counts = torch.zeros(bins, dtype=frames.dtype, device=frames.device)
    ideal = torch.zeros(bins, dtype=frames.dtype, device=frames.device)
    for x in frames:
        edge_index = radius_graph(x, ptr, float(r_max), box=box)
        r = edge_vectors(x, edge_index, box=box, ptr=ptr).norm(dim=-1)
        counts += torch.histc(r, bins, 0.0, float(r_max))
        # an ideal gas: each of N particles sees its N − 1 others spread over the volume
        ideal += pairs_density.sum() * shell
    return 0.5 * (edges_r[1:] + edges_r[:-1]), counts / ideal
