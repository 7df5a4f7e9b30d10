"""Small periodic cells: periodic images of the atoms themselves.

A minimum-image neighbour list (:func:`hogn.graph.radius_graph` with a box) needs every
box length at least twice the cut-off (plus the Verlet skin): then a pair has at most
one image within reach. Crystals are often simulated in smaller cells (4 copper atoms
in a 3.6 Å cube, a cut-off of 5 Å), where an atom meets several images of the same
neighbour, and of itself. Two tools, both exact for an orthorhombic cell:

- :func:`image_pairs`: every pair ``(i, j, S)`` with ``|q_j + S·L − q_i| < cutoff`` (``S``
  an integer image shift, ``(i, i, 0)`` excluded), as ASE's
  ``ase.neighborlist.neighbor_list("ijS", ...)`` lists them (tested equal);
- :func:`supercell`: the cell repeated ``reps`` times per direction, large enough for
  the minimum image. A periodic system *is* its supercell: a model of local energies
  gives the supercell ``K = Π reps`` times the cell's energy, and every replica of an
  atom the same force, so the cell's energy is the supercell's over ``K`` and its
  forces those of the first replica. :class:`hogn.ase.Calculator` computes small
  cells this way.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["fitting_skin", "image_pairs", "replicas_for", "supercell"]


def _check(q: Tensor, box: Tensor | Sequence[float], length: float, name: str
           ) -> tuple[Tensor, Tensor]:
    if not isinstance(q, Tensor) or q.dim() != 2 or not q.is_floating_point():
        raise ValueError(f"q must be a floating tensor [N, d], got "
                         f"{getattr(q, 'shape', type(q).__name__)}")
    lengths = torch.as_tensor(box, dtype=q.dtype, device=q.device).reshape(-1)
    if lengths.numel() != q.shape[1] or not bool(torch.isfinite(lengths).all()) or bool(
            (lengths <= 0).any()):
        raise ValueError(f"box must hold {q.shape[1]} positive finite lengths, got "
                         f"{lengths.tolist()}")
    if not (isinstance(length, (int, float)) and math.isfinite(length) and length >= 0):
        raise ValueError(f"{name} must be a finite length >= 0, got {length!r}")
    return q, lengths


def fitting_skin(box: Tensor | Sequence[float] | None, radius: float, skin: float | None = None
                 ) -> float | None:
    """The Verlet skin a neighbour list of ``radius`` can have in ``box``: ``skin``
    (default a tenth of the radius), thinned so that the smallest box length holds
    ``2 · (radius + skin)``; ``None`` where the box is shorter than ``2 · radius`` (a pair
    meets several images: a supercell is needed, :func:`supercell`)."""
    skin = 0.1 * radius if skin is None else skin
    if box is None:
        return skin
    room = 0.5 * min(box.reshape(-1).tolist() if isinstance(box, Tensor)
                     else [float(b) for b in box]) - radius
    return None if room < 0 else min(skin, room)


def replicas_for(box: Tensor | Sequence[float], length: float) -> tuple[int, ...]:
    """Repetitions per direction that make every box length at least ``length``
    (``2 · (cutoff + skin)`` for a minimum-image neighbour list); at least 1 each."""
    lengths = (box.reshape(-1).tolist() if isinstance(box, Tensor)
               else [float(b) for b in box])
    return tuple(max(1, math.ceil(length / b - 1e-12)) for b in lengths)


def supercell(q: Tensor, box: Tensor | Sequence[float], reps: Sequence[int]
              ) -> tuple[Tensor, Tensor, Tensor]:
    """The cell repeated ``reps`` times per direction.

    Args:
        q: Positions ``[N, d]`` of one cell.
        box: Its lengths ``[d]``.
        reps: Repetitions per direction (positive ints).

    Returns:
        ``(q_super [K·N, d], box_super [d], shifts [K, d])``: replica ``k`` is ``q +
        shifts[k] · box`` at rows ``k·N … (k+1)·N − 1``, replica 0 the cell itself
        (``shifts[0] = 0``), ``K = Π reps``.
    """
    q, lengths = _check(q, box, 0.0, "length")
    if len(reps) != q.shape[1] or any(not isinstance(r, int) or r < 1 for r in reps):
        raise ValueError(f"reps must be {q.shape[1]} positive ints, got {list(reps)}")
    shifts = torch.tensor(list(itertools.product(*(range(r) for r in reps))),
                          dtype=q.dtype, device=q.device).reshape(-1, q.shape[1])
    q_super = (q[None] + (shifts * lengths)[:, None]).reshape(-1, q.shape[1])
    return q_super, lengths * torch.tensor(reps, dtype=q.dtype, device=q.device), shifts


def image_pairs(q: Tensor, box: Tensor | Sequence[float], cutoff: float
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Every pair of an atom and a periodic image of an atom closer than ``cutoff``.

    Brute force over the images within reach (``O(N² · Π (2 ⌈r/L⌉ + 1))``): meant for
    the small cells that need it.

    Args:
        q: Positions ``[N, d]`` (anywhere; not wrapped).
        box: Orthorhombic cell lengths ``[d]``, periodic in every direction.
        cutoff: Strict distance bound ``|q_j + S·L − q_i| < cutoff``.

    Returns:
        ``(i [E], j [E], S [E, d])`` (``S`` int64), sorted by ``i``, then ``j``, then
        ``S``; ``(i, i, 0)`` is never listed, ``(i, j, S)`` and ``(j, i, −S)`` both are.
    """
    q, lengths = _check(q, box, cutoff, "cutoff")
    n, d = q.shape
    if n == 0 or cutoff == 0:
        empty = torch.empty(0, dtype=torch.long, device=q.device)
        return empty, empty, torch.empty(0, d, dtype=torch.long, device=q.device)
    reach = [math.ceil(cutoff / float(b)) + 1 for b in lengths]  # + 1: unwrapped positions
    shifts = torch.tensor(list(itertools.product(*(range(-k, k + 1) for k in reach))),
                          dtype=torch.long, device=q.device)  # [M, d]
    images = q[None] + (shifts.to(q.dtype) * lengths)[:, None]  # [M, N, d]
    diff = images[:, None, :, :] - q[None, :, None, :]  # [M, N(i), N(j), d]
    close = diff.square().sum(-1) < cutoff * cutoff  # [M, N, N]
    zero = (shifts == 0).all(-1)
    close[zero] &= ~torch.eye(n, dtype=torch.bool, device=q.device)
    m, i, j = torch.nonzero(close, as_tuple=True)
    s = shifts[m]
    order = torch.argsort(((i * n + j) * shifts.shape[0] + m), stable=True)
    return i[order], j[order], s[order]
