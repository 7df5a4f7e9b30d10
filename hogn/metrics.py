"""Rollout metrics over batches of graphs: state errors, relative errors, energy errors.

Trajectories are ``q, p [T, N, d]`` with nodes of ``G`` graphs concatenated
(``batch [N]`` gives each node's graph). Energies come from a caller-supplied
function (``hogn`` knows no physical system): ``energy(q, p) -> [T, G]``; energy
series are time first, ``[T, G]``.

Molecular-dynamics metrics of one system (any leading dims): force errors
(:func:`force_rmse`, :func:`force_relative_error`), positions in a periodic box
(:func:`minimum_image_rmsd`), :func:`temperature`, :func:`radial_distribution` and
:func:`energy_excursion_per_atom`. Units are the caller's; :func:`temperature`'s
default Boltzmann constant is in eV/K (ASE units).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from hogn.graph import segment_sum

__all__ = [
    "BOLTZMANN_EV_PER_K",
    "energy_drift",
    "energy_error",
    "energy_excursion_per_atom",
    "force_relative_error",
    "force_rmse",
    "geometric_mean",
    "minimum_image_rmsd",
    "radial_distribution",
    "relative_drift",
    "relative_error",
    "state_mse",
    "temperature",
    "time_to_threshold",
]

EnergyFn = Callable[[Tensor, Tensor], Tensor]

BOLTZMANN_EV_PER_K = 8.617333262e-5
"""Boltzmann constant in eV/K (CODATA 2018, exact in SI). ASE's ``ase.units.kB`` is
CODATA 2014 (8.617330e-5), 3.4e-7 smaller in relative terms."""


def _per_graph_sq(x: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """Sum of squares per graph: ``x [T, N, d] -> [T, G]``."""
    return segment_sum((x**2).sum(-1), batch, num_graphs, dim=-1)


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


def radial_distribution(q: Tensor, ptr: Tensor | None, box: Tensor, r_max: float,
                        bins: int = 50) -> tuple[Tensor, Tensor]:
    """Radial distribution function ``g(r)`` of particles in periodic boxes.

    Pair distances (minimum image, found by :func:`hogn.graph.radius_graph`'s cell
    lists, ``O(N)`` time and memory per frame, frames taken one at a time, so a few
    thousand atoms over many frames never form an ``N × N`` matrix) are histogrammed
    over ``[0, r_max)`` and divided by the count an ideal gas of the same density
    would give in each shell: each of ``n`` particles sees its ``n − 1`` others
    spread uniformly over the volume ``V``, so ``g → 1`` for uncorrelated points
    (exactly in expectation, at every ``r``) and at large ``r`` in a fluid. Frames
    and graphs are pooled (each graph normalised by its own density).

    With this normalisation ``Σ_shells (n − 1)/V · g · shell volume`` up to ``r``
    is the mean number of neighbours within ``r`` (e.g. 12 in the first shell of an
    FCC crystal). ``ase.geometry.rdf.get_rdf`` divides by ``n²/V`` instead: its
    ``g`` is this one times ``(n − 1)/n``.

    Args:
        q: Positions ``[N, d]`` or frames ``[T, N, d]`` (``d`` = 2 or 3).
        ptr: Node offsets ``[G + 1]``, or ``None``: all ``N`` particles are one system.
        box: Orthorhombic periodic box lengths ``[d]`` (every graph) or ``[G, d]``.
        r_max: Largest distance, > 0 and at most half the smallest box length (beyond
            it the minimum image no longer holds every pair).
        bins: Number of shells.

    Returns:
        ``(r [bins], g [bins])``: shell centres and ``g(r)``.

    Raises:
        ValueError: On positions that are not ``[N, d]`` / ``[T, N, d]`` with d = 2 or
            3, a box of the wrong shape or with lengths not finite and > 0, ``r_max``
            not in ``(0, min(box) / 2]``, or ``bins`` not a positive int.
    """
    from hogn.graph import edge_vectors, ptr_from_sizes, radius_graph

    if not isinstance(q, Tensor) or q.dim() not in (2, 3) or not q.is_floating_point():
        raise ValueError("radial_distribution needs floating-point positions [N, d] or "
                         f"[T, N, d], got {_describe(q)}")
    d = q.shape[-1]
    if d not in (2, 3):
        raise ValueError(f"radial_distribution needs d = 2 or 3, got positions {tuple(q.shape)}")
    if not (isinstance(r_max, (int, float)) and math.isfinite(r_max) and r_max > 0):
        raise ValueError(f"r_max must be a positive finite number, got {r_max!r}")
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    frames = q.reshape(-1, *q.shape[-2:])
    if ptr is None:
        ptr = ptr_from_sizes([frames.shape[1]], device=frames.device)
    num_graphs = ptr.numel() - 1
    box = torch.as_tensor(box).to(frames)
    if box.dim() == 1:
        box = box[None]
    if box.dim() != 2 or box.shape[1] != d or box.shape[0] not in (1, num_graphs):
        raise ValueError(f"box must hold orthorhombic lengths [d] = [{d}] or [G, d] = "
                         f"[{num_graphs}, {d}], got {tuple(box.shape)}")
    if not bool(torch.isfinite(box).all()) or bool((box <= 0).any()):
        raise ValueError(f"box lengths must be finite and > 0, got {box.tolist()[:4]}")
    half = 0.5 * float(box.min())
    if r_max > half:
        raise ValueError(f"r_max = {r_max:g} exceeds half the smallest box length ({half:g}): "
                         "beyond it the minimum image misses pairs; use r_max <= min(box) / 2")
    box = box.expand(num_graphs, d)
    sizes = (ptr[1:] - ptr[:-1]).to(frames)
    pairs_density = sizes * (sizes - 1) / box.prod(-1)  # [G]: ordered pairs per volume
    edges_r = torch.linspace(0.0, float(r_max), bins + 1, dtype=frames.dtype,
                             device=frames.device)
    shell = (edges_r[1:] ** d - edges_r[:-1] ** d) * (math.pi if d == 2 else 4 * math.pi / 3)
    counts = torch.zeros(bins, dtype=frames.dtype, device=frames.device)
    for x in frames:  # one frame at a time: memory O(N + pairs within r_max)
        edge_index = radius_graph(x, ptr, float(r_max), box=box)
        r = edge_vectors(x, edge_index, box=box, ptr=ptr).norm(dim=-1)
        counts += torch.histc(r, bins, 0.0, float(r_max))
    # an ideal gas: each of n particles sees its n − 1 others spread over the volume
    ideal = frames.shape[0] * pairs_density.sum() * shell
    return 0.5 * (edges_r[1:] + edges_r[:-1]), counts / ideal


def _describe(x: object) -> str:
    """``x``'s shape and dtype for an error message (its type if not a tensor)."""
    if isinstance(x, Tensor):
        return f"shape {tuple(x.shape)} {x.dtype}"
    return type(x).__name__


def _check_pair(pred: Tensor, true: Tensor, what: str, names: tuple[str, str] = ("pred", "true")
                ) -> None:
    """Both floating-point tensors ``[..., N, d]`` of one shape, not empty."""
    for name, x in zip(names, (pred, true), strict=True):
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
            raise ValueError(f"{name} must be floating-point {what} [..., N, d], got "
                             f"{_describe(x)}")
    if pred.shape != true.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape [..., N, d], "
                         f"got {tuple(pred.shape)} and {tuple(true.shape)}")
    if pred.numel() == 0:
        raise ValueError(f"{what} are empty (shape {tuple(pred.shape)}): nothing to compare")


def force_rmse(pred: Tensor, true: Tensor) -> Tensor:
    """Root-mean-square error of forces over all their components.

    Args:
        pred: Predicted forces ``[..., N, d]`` (any leading dims, e.g. frames).
        true: Reference forces, same shape.

    Returns:
        Scalar ``sqrt(mean((pred − true)²))`` over every frame, atom and component.

    Raises:
        ValueError: If either is not a floating-point ``[..., N, d]`` tensor, their
            shapes differ, or they are empty.
    """
    _check_pair(pred, true, "forces")
    return ((pred - true) ** 2).mean().sqrt()


def force_relative_error(pred: Tensor, true: Tensor) -> Tensor:
    """Relative force error ``‖pred − true‖ / ‖true‖`` over all components.

    Frobenius norms over every frame, atom and component, so this is the RMSE divided
    by the RMS of the reference forces (0: exact; 1: as far off as predicting zero).

    Args:
        pred: Predicted forces ``[..., N, d]``.
        true: Reference forces, same shape, not all zero.

    Returns:
        Scalar.

    Raises:
        ValueError: As :func:`force_rmse`, or if the reference forces are all zero
            (the relative error is undefined).
    """
    _check_pair(pred, true, "forces")
    norm = torch.linalg.vector_norm(true)
    if not bool(norm > 0):
        raise ValueError("the reference forces true are all zero (norm 0): the relative "
                         "error is undefined; use force_rmse")
    return torch.linalg.vector_norm(pred - true) / norm


def minimum_image_rmsd(q_pred: Tensor, q_true: Tensor, box: Tensor | None = None
                       ) -> Tensor:
    """Root-mean-square displacement between two sets of positions, per leading index.

    ``sqrt(mean_i |Δ_i|²)`` over the ``N`` atoms, with each component of
    ``Δ = q_pred − q_true`` wrapped to the minimum image ``Δ − L·round(Δ / L)`` in an
    orthorhombic periodic box (so an atom that crossed the boundary, or a whole
    configuration shifted by a box vector, counts as not displaced). No alignment
    (rotation or translation) is removed.

    Args:
        q_pred: Positions ``[..., N, d]`` (e.g. frames ``[T, N, d]``).
        q_true: Reference positions, same shape.
        box: Box lengths ``[d]``, or ``[..., d]`` broadcastable to the leading dims
            (e.g. one box per frame ``[T, d]``); ``None``: open boundaries.

    Returns:
        ``[...]`` (e.g. ``[T]``; a scalar for ``[N, d]``).

    Raises:
        ValueError: If the positions are not floating-point ``[..., N, d]`` tensors of
            one shape, or the box is not ``[..., d]`` broadcastable to the leading
            dims with finite lengths > 0.
    """
    _check_pair(q_pred, q_true, "positions", ("q_pred", "q_true"))
    rel = q_pred - q_true
    if box is not None:
        lead, d = tuple(rel.shape[:-2]), rel.shape[-1]
        box = torch.as_tensor(box).to(rel)
        shape_ok = box.dim() >= 1 and box.shape[-1] == d
        if shape_ok:
            try:
                shape_ok = torch.broadcast_shapes(box.shape[:-1], lead) == lead
            except RuntimeError:
                shape_ok = False
        if not shape_ok:
            raise ValueError(f"box must be orthorhombic lengths [d] = [{d}] or [..., d] "
                             f"broadcastable to the leading dims {list(lead)} of the "
                             f"positions, got {tuple(box.shape)}")
        if not bool(torch.isfinite(box).all()) or bool((box <= 0).any()):
            raise ValueError(f"box lengths must be finite and > 0, got "
                             f"{box.reshape(-1).tolist()[:6]}")
        box = box.unsqueeze(-2)  # [..., 1, d]: the same box for every atom
        rel = rel - box * torch.round(rel / box)
    return (rel**2).sum(-1).mean(-1).sqrt()


def temperature(p: Tensor, masses: Tensor, dof: float | None = None,
                boltzmann: float = BOLTZMANN_EV_PER_K) -> Tensor:
    """Instantaneous kinetic temperature ``T = 2 KE / (dof · k_B)``.

    ``KE = Σ_i |p_i|² / (2 m_i)``. In ASE units (energies eV, masses amu, momenta
    amu·Å/ASE-time, as ``ase.Atoms.get_momenta``) the default ``k_B`` gives kelvin;
    ``ase.Atoms.get_temperature`` is this with ``boltzmann=ase.units.kB`` (an older
    CODATA value, 3.4e-7 smaller) and ``dof = 3 N`` less its constraints' degrees.

    Args:
        p: Momenta ``[..., N, d]`` (e.g. frames ``[T, N, d]``).
        masses: Masses ``[N]`` (or ``[..., N]`` broadcastable to the leading dims), > 0.
        dof: Degrees of freedom (> 0); default ``N · d``. Pass ``d (N − 1)`` when the
            total momentum is held at zero.
        boltzmann: ``k_B`` in the caller's energy per temperature unit (> 0).

    Returns:
        ``[...]`` (a scalar for ``[N, d]``).

    Raises:
        ValueError: If ``p`` is not a floating-point ``[..., N, d]`` tensor, ``masses``
            is not ``[N]`` / broadcastable ``[..., N]`` with finite entries > 0, or
            ``dof`` / ``boltzmann`` is not a positive finite number.
    """
    if not isinstance(p, Tensor) or not p.is_floating_point() or p.dim() < 2:
        raise ValueError(f"p must be floating-point momenta [..., N, d], got {_describe(p)}")
    n, d = p.shape[-2:]
    masses = torch.as_tensor(masses).to(p)
    lead = tuple(p.shape[:-2])
    shape_ok = masses.dim() >= 1 and masses.shape[-1] == n
    if shape_ok:
        try:
            shape_ok = torch.broadcast_shapes(masses.shape[:-1], lead) == lead
        except RuntimeError:
            shape_ok = False
    if not shape_ok:
        raise ValueError(f"masses must be [N] = [{n}] (or [..., N] broadcastable to the "
                         f"leading dims {list(lead)} of p), got {tuple(masses.shape)}")
    if not bool(torch.isfinite(masses).all()) or bool((masses <= 0).any()):
        raise ValueError("masses must be finite and > 0, got "
                         f"{masses.reshape(-1).tolist()[:6]}")
    for name, value in (("dof", dof), ("boltzmann", boltzmann)):
        if value is None:
            continue
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value <= 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    dof = n * d if dof is None else dof
    kinetic = ((p**2).sum(-1) / (2 * masses)).sum(-1)
    return 2 * kinetic / (dof * boltzmann)


def energy_excursion_per_atom(energies: Tensor, n_atoms: int | Tensor) -> Tensor:
    """Largest energy excursion per atom, ``max_t |E(t) − E(0)| / n_atoms``.

    The absolute measure of an NVE integration's error where the relative drift is
    meaningless (energies near zero, or offset arbitrarily by the potential's zero).
    Time is the first axis, as everywhere in this module (``energy(q, p) -> [T, G]``).

    Args:
        energies: An energy series ``[T]``, or ``[T, G]`` for ``G`` systems.
        n_atoms: Atoms of the system (an int > 0), or per system ``[G]``.

    Returns:
        A scalar for ``[T]``, else ``[G]``.

    Raises:
        ValueError: If ``energies`` is not a floating-point ``[T]`` or ``[T, G]`` tensor
            with ``T >= 1``, or ``n_atoms`` is not positive / not ``[G]``.
    """
    if (not isinstance(energies, Tensor) or not energies.is_floating_point()
            or energies.dim() not in (1, 2) or energies.shape[0] < 1):
        raise ValueError("energies must be a floating-point series [T] or [T, G] (time "
                         f"first) with T >= 1, got {_describe(energies)}")
    if isinstance(n_atoms, bool) or not isinstance(n_atoms, (int, Tensor)):
        raise ValueError(f"n_atoms must be an int > 0 or a tensor [G], got {n_atoms!r}")
    count = torch.as_tensor(n_atoms, device=energies.device)
    expected = () if energies.dim() == 1 else (energies.shape[1],)
    if count.shape not in ((), expected):
        raise ValueError(f"n_atoms must be a number or [G] = {list(expected)} for energies "
                         f"{tuple(energies.shape)}, got {tuple(count.shape)}")
    if not bool(torch.isfinite(count).all()) or bool((count <= 0).any()):
        raise ValueError(f"n_atoms must be > 0, got {count.tolist()}")
    return (energies - energies[0]).abs().amax(0) / count.to(energies)
