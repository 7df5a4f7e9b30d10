"""Datasets from ASE: molecular-dynamics frames (``ase.Atoms``) in, a :class:`Dataset` out.

ASE (the Atomic Simulation Environment) is an optional dependency
(``pip install hogn[ase]``), imported here only when a function runs: ``import systems``
does not load it. :func:`from_ase` takes the frames of one trajectory (the list
``ase.io.read(path, ":")`` gives) or a list of such lists (several trajectories of
equal length), :func:`load_ase` reads a file (``.xyz``, ``.extxyz``, ``.traj``, any
format ``ase.io.read`` knows by its extension; the ``hogn import`` command).

What a frame gives, in ASE's units (:data:`UNITS`: Å, eV, amu and the ASE time unit
``Å·(amu/eV)^½ ≈ 10.18 fs``, in which ``MolecularDynamics.get_time()`` counts):

- positions → ``q [T, N, 3]``, as the frames hold them (neither wrapped nor unwrapped);
- ``atoms.get_momenta()`` (velocities × masses) → ``p``; ``dq = p / m`` exactly;
- the calculator's forces (``atoms.get_forces()``, e.g. the ``SinglePointCalculator``
  ASE attaches to frames read from a file) → ``dp``;
- masses and atomic numbers → node constants ``c [N, 2]``, columns
  :data:`NODE_CONSTANTS` ``= [mass, atomic_number]`` (``meta["node_constants"]``);
  the elements in ``meta["species"]``, each trajectory's formula in
  ``meta["formulas"]``;
- cell and pbc → ``box [G, 3]``: only an orthorhombic cell periodic in all three
  directions is a box; a cell without periodic direction means open boundaries; mixed
  pbc or a skewed cell are refused. A periodic dataset needs ``cutoff``: each
  trajectory gets the edges of its first state's pairs closer than it (minimum image),
  as :class:`systems.lennard_jones.LennardJones` datasets store them (rebuild a state's
  edges with ``meta["cutoff"]``: :meth:`Dataset.snapshots`,
  :meth:`hogn.graph.GraphBatch.with_radius_edges`). A cell smaller than twice the
  cut-off comes in as its supercell (every replica with its atom's momenta and forces,
  energies times the replicas, ``meta["supercell"]``), in which each atom of the cell
  meets the images ASE's ``neighbor_list`` finds;
- ``atoms.info["time"]`` (or ``"Time"``, as :func:`hogn.xyz.write_xyz` writes it) →
  ``t``, in ASE time units; or ``dt=``. ASE's MD writers do not store the time by
  themselves: attach ``lambda: atoms.info.update(time=md.get_time())`` before the writer,
  or give ``dt``;
- the potential energy (calculator), the kinetic energy ``Σ p²/2m`` and their sum →
  ``meta["energies"]`` (``{"potential", "kinetic", "total"}``, each ``[G][T]`` in eV, or
  ``None``; lists in the order of the imported trajectories, not re-indexed by
  :meth:`Dataset.select`).

Missing forces (or momenta) are estimated by second-order central differences in time
(:func:`torch.gradient`; first order with two frames; positions differenced by the
minimum image in a box), and ``meta["derivatives"]`` says so. A single frame is a state
without time order (``T = 1``, ``data.dt is None``): it needs its momenta and forces.
Independent configurations (no time order) are one-frame trajectories:
``from_ase([[atoms] for atoms in frames])``.

The checks, and the arrays they make, are those of
:func:`systems.ase_fields.fields_from_ase` (where the names of ASE's units, the node
constants and the missing-ASE error are defined, handed on here), on which
:meth:`Dataset.from_ase` builds; the functions here build on :class:`Dataset` (the imports
go one way: ``ase_data → dataset → ase_fields → array_fields``).
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any

import torch

from hogn import checks
from systems.ase_fields import (
    ASE_MISSING,
    NODE_CONSTANTS,
    TIME_KEYS,
    UNITS,
    NotInFrames,
    ase_time_per_fs,
    require_ase,
    supercell_reps,
)
from systems.dataset import Dataset

__all__ = ["ASE_MISSING", "NODE_CONSTANTS", "TIME_KEYS", "UNITS", "NotInFrames",
           "ase_time_per_fs", "from_ase", "load_ase", "require_ase"]


def from_ase(images: Any, *, dt: float | None = None, test_fraction: float | None = None,
             seed: int = 0, system: str | None = None, cutoff: float | None = None
             ) -> Dataset:
    """Build a :class:`Dataset` from ASE frames (see the module notes for the mapping).

    Args:
        images: The ``ase.Atoms`` frames of one trajectory (the same atoms, in the same
            order, in every frame), one ``Atoms`` (a state), or a list of such lists
            (trajectories of equal length and atom count).
        dt: Time between frames in ASE time units (``5 * ase.units.fs`` for 5 fs),
            when the frames carry no ``info["time"]``; with times, it must agree.
        test_fraction: Held-out fraction of the trajectories in ``[0, 1)``, drawn with
            ``seed`` (default 0.2, as :func:`systems.arrays.from_arrays`).
        seed: Seed of the held-out draw.
        system: A label for the data; default: the empirical formula of the first frame
            (``"Ar"``, ``"Cu"``, ``"H2O"``).
        cutoff: Radius of the edges in Å (required with a periodic cell): each
            trajectory's edges are the pairs of its first state closer than it.

    Returns:
        The dataset: ``q, p, dq, dp [T, G·n, 3]`` float64 in ASE units, ``c [G·n, 2]``
        (mass, atomic number), ``box [G, 3]`` for periodic frames.

    Raises:
        ImportError: without ASE (naming ``pip install hogn[ase]``).
        NotInFrames: (a ``ValueError``) for frames without time and no ``dt``, or
            periodic frames without ``cutoff``.
        ValueError: for frames that change atoms, masses, cell or pbc within a
            trajectory, a skewed cell or mixed pbc, uneven times, or a single frame
            without momenta or forces.
    """
    return Dataset.from_ase(images, dt=dt, test_fraction=test_fraction, seed=seed,
                            system=system, cutoff=cutoff)


def load_ase(path: str | os.PathLike, *, dt: float | None = None, cutoff: float | None = None,
             test_fraction: float | None = None, seed: int = 0, system: str | None = None,
             format: str | None = None) -> Dataset:
    """Read every frame of a file with ASE's reader (that of ``ase.io.read``) into a
    :class:`Dataset` (one trajectory; see :func:`from_ase` for the arguments).

    The frames are read one at a time, and the dataset they will make is bounded before
    it is built, and before more frames are read than it may hold
    (:func:`hogn.checks.check_memory`, ``$HOGN_MAX_MEMORY``): a small file can make
    gigabytes (a compressed one, or thousands of atoms in open boundaries, whose graph is
    complete).

    Args:
        path: The file (``.xyz``, ``.extxyz``, ``.traj``, ... any format ASE knows by
            its extension, or by ``format``).
        format: ASE's format name, when the extension does not say it.

    Raises:
        ImportError: without ASE.
        NotInFrames, ValueError: as :func:`from_ase`, for a file ASE cannot read, or for
            frames whose dataset would not fit in memory (naming the estimate and the
            bound); every message starts with the path.
    """
    ase = require_ase(f"reading {os.fspath(path)}")
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a folder, not a file of frames")
    try:
        images = _read_frames(ase, path, format, cutoff)
    except checks.CheckError:  # the frames would not fit: said by _read_frames
        raise
    except Exception as exc:  # a foreign reader: any failure means "cannot read"
        advice = (" (ASE knows a format by its extension: .xyz, .extxyz, .traj, ...)"
                  if exc.__class__.__name__ == "UnknownFileTypeError" else "")
        raise ValueError(f"{path}: ASE cannot read it ({exc.__class__.__name__}: "
                         f"{_first_line(exc)}){advice}") from None
    try:
        data = from_ase(images, dt=dt, test_fraction=test_fraction, seed=seed, system=system,
                        cutoff=cutoff)
    except NotInFrames as exc:
        raise NotInFrames(exc.argument, f"{path}: {exc.what}", exc.hint) from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    data.meta["file"] = os.fspath(path)
    return data


NODE_BYTES = 8 * 3 * 4 * 3
"""Bytes a dataset of ASE frames takes per atom of each frame: float64 ``q, p, dq, dp`` of
three coordinates, three times (the frames' own arrays, the stacked tensors, the dataset)."""
EDGE_BYTES = 16 * 3
"""Bytes per edge: two int64 particle numbers, three times (as they are made)."""


def _read_frames(ase: Any, path: str | os.PathLike, format: str | None,
                 cutoff: float | None) -> list[Any]:
    """Every frame of ``path`` (``ase.io.iread``, the reader of ``ase.io.read``), refused
    as soon as the dataset they make would exceed the memory bound.

    Raises:
        hogn.checks.CheckError: (a ``ValueError``) naming the frames, the estimate and the
            bound; or for a malformed ``$HOGN_MAX_MEMORY``.
    """
    limit, _ = checks.memory_limit()
    frames: list[Any] = []
    atoms_in_all, edges, copies = 0, 0.0, 1
    with contextlib.closing(ase.io.iread(os.fspath(path), index=":", format=format)) as reader:
        for atoms in reader:
            if not frames:
                copies = _cell_copies(atoms, cutoff)
                edges = _edges_estimate(atoms, cutoff, copies)
            frames.append(atoms)
            atoms_in_all += len(atoms) * copies
            need = NODE_BYTES * atoms_in_all + EDGE_BYTES * edges
            if need > limit:
                checks.check_memory(need, f"{path}: its frames (at least {len(frames)}, of "
                                          f"{len(frames[0])} atoms, about {edges:.3g} edges)")
    return frames


def _cell_copies(atoms: Any, cutoff: Any) -> int:
    """How many copies of a periodic cell the dataset holds: its supercell's
    (:func:`systems.ase_fields.supercell_reps`) where the cell is smaller than twice
    the cut-off, else 1."""
    if not bool(atoms.pbc.all()):
        return 1
    lengths = torch.as_tensor(atoms.cell.lengths(), dtype=torch.float64)[None]
    reps = supercell_reps(lengths, cutoff)
    return 1 if reps is None else math.prod(reps)


def _edges_estimate(atoms: Any, cutoff: float | None, copies: int = 1) -> float:
    """The edges a graph of ``atoms`` (its cell repeated ``copies`` times) gets: all
    pairs without ``cutoff`` (a complete graph), else the pairs closer than it at the
    density of the cell (periodic) or of the atoms' bounding box (open boundaries)."""
    n = len(atoms) * copies
    if n < 2:
        return 0.0
    if cutoff is None:
        return float(n * (n - 1))
    try:
        radius = float(cutoff)
    except (TypeError, ValueError):
        return 0.0  # a cutoff that is no number: refused when the graph is built
    if not (math.isfinite(radius) and radius > 0):
        return 0.0
    if bool(atoms.pbc.all()):
        volume = abs(float(atoms.cell.volume)) * copies
    else:
        positions = atoms.get_positions()
        volume = float((positions.max(axis=0) - positions.min(axis=0) + radius).prod())
    if not (math.isfinite(volume) and volume > 0):
        return float(n * (n - 1))
    return n * min(n - 1.0, n * 4.0 / 3.0 * math.pi * radius**3 / volume)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""
