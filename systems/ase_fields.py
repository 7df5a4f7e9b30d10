"""The fields of a dataset built from ASE frames: what :func:`systems.ase_data.from_ase` and
:meth:`systems.dataset.Dataset.from_ase` make a :class:`~systems.dataset.Dataset` of (what
a frame gives, in which units, is described in :mod:`systems.ase_data`), and the names
that speak of ASE (its units, the node constants, the missing-ASE error).

ASE is optional (``pip install hogn[ase]``) and imported only inside the functions. This
module knows no dataset class: it returns the keyword arguments of
:class:`~systems.dataset.Dataset` (built on :func:`systems.array_fields.fields_from_arrays`),
so that ``Dataset.from_ase`` builds on it, and :mod:`systems.ase_data` (the public
functions, which return a ``Dataset``) builds on ``Dataset``: the imports go one way.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hogn import checks
from hogn.periodic import replicas_for, supercell
from systems.array_fields import fields_from_arrays

__all__ = ["ASE_MISSING", "NODE_CONSTANTS", "TIME_KEYS", "UNITS", "NotInFrames",
           "ase_time_per_fs", "fields_from_ase", "require_ase"]

ASE_MISSING = "needs ASE (the Atomic Simulation Environment): pip install hogn[ase]"
"""The end of the error raised where ASE is needed but not installed."""

NODE_CONSTANTS = ["mass", "atomic_number"]
"""The columns of the node constants ``c`` of a dataset from ASE."""

TIME_KEYS = ("time", "Time")
"""Keys of ``atoms.info`` read as the frame's time (ASE time units), first found wins."""

UNITS = {"length": "Å", "energy": "eV", "mass": "amu",
         "time": "ASE time unit, Å·(amu/eV)^(1/2) ≈ 10.1805 fs",
         "momentum": "amu·Å per ASE time unit", "force": "eV/Å"}
"""ASE's units, in which a dataset from ASE holds its arrays (``meta["units"]``)."""

_EVEN = 1e-6  # relative tolerance of evenly spaced times and of agreeing steps


class NotInFrames(ValueError):
    """The frames lack what an argument must give.

    Attributes:
        argument: The argument that gives it (``"dt"`` or ``"cutoff"``).
        what: What is missing, as text (without the advice).
        hint: What to pass.
    """

    def __init__(self, argument: str, what: str, hint: str) -> None:
        super().__init__(f"{what}: pass {argument}=, {hint}")
        self.argument, self.what, self.hint = argument, what, hint


def require_ase(what: str = "this") -> Any:
    """The ``ase`` package, or an ``ImportError`` saying how to install it.

    Args:
        what: What needs it, starting the message (``"{what} needs ASE ..."``).
    """
    try:
        import ase
        import ase.io  # the readers (systems.ase_data.load_ase)
    except ImportError as exc:
        raise ImportError(f"{what} {ASE_MISSING}") from exc
    return ase


def ase_time_per_fs() -> float:
    """One femtosecond in ASE time units (``ase.units.fs``, about 1/10.18)."""
    return float(require_ase("converting femtoseconds").units.fs)

def fields_from_ase(images: Any, *, dt: float | None = None,
                    test_fraction: float | None = None, seed: int = 0,
                    system: str | None = None, cutoff: float | None = None
                    ) -> dict[str, Any]:
    """The :class:`~systems.dataset.Dataset` fields of ASE frames.

    Takes the arguments of :func:`systems.ase_data.from_ase` (see there) and checks
    them, but builds no dataset: ``Dataset(**fields_from_ase(images, ...))`` is the
    dataset (:meth:`~systems.dataset.Dataset.from_ase` also validates it).

    Returns:
        The keyword arguments of :class:`~systems.dataset.Dataset`, as
        :func:`~systems.array_fields.fields_from_arrays` returns them: ``q, p, dq, dp
        [T, G·n, 3]`` float64 in ASE units, ``c [G·n, 2]`` (mass, atomic number),
        ``box [G, 3]`` for periodic frames (else ``None``), and ``meta`` with
        ``meta["source"] = "ase"`` and what the frames gave.

    Raises:
        ImportError: without ASE (naming ``pip install hogn[ase]``).
        NotInFrames, ValueError: as :func:`systems.ase_data.from_ase`.
    """
    ase = require_ase("systems.from_ase")
    from ase.data import chemical_symbols

    runs = _trajectories(images, ase.Atoms)
    many = len(runs) > 1
    for i, frames in enumerate(runs):
        _check_same_atoms(frames, f"trajectory {i}, " if many else "")
    points, n = len(runs[0]), len(runs[0][0])
    for i, frames in enumerate(runs[1:], 1):
        if len(frames[0]) != n:
            raise ValueError(f"trajectory {i} has {len(frames[0])} atoms, trajectory 0 has "
                             f"{n}: every trajectory needs the same number of atoms")
    box = _boxes(runs, many)
    if box is not None and cutoff is None:
        raise NotInFrames("cutoff", f"the frames are periodic (box {_lengths(box)} Å)",
                          "the radius of the edges in Å (e.g. the potential's cut-off): "
                          "each state gets the pairs closer than it, not a complete graph")
    masses = torch.tensor(np.array([frames[0].get_masses() for frames in runs]),
                          dtype=torch.float64)  # [G, n]
    numbers = torch.tensor(np.array([frames[0].numbers for frames in runs]),
                           dtype=torch.float64)
    q = _stack(runs, lambda a: a.get_positions())  # [G, T, n, 3]
    has_momenta = all("momenta" in a.arrays for frames in runs for a in frames)
    p = _stack(runs, lambda a: a.get_momenta()) if has_momenta else None
    forces = [[_property(a, "forces") for a in frames] for frames in runs]
    has_forces = all(f is not None for frames in forces for f in frames)
    if points == 1 and not (has_momenta and has_forces):
        lacking = " and ".join(x for x, ok in (("momenta", has_momenta),
                                               ("forces", has_forces)) if not ok)
        raise ValueError(f"a single frame is a state without time order: it needs momenta "
                         f"and forces, and {lacking} are missing (pass a trajectory of "
                         "frames with their times to estimate them)")
    times, step, timing = _time_axis(runs, dt, many)
    dp = torch.tensor(np.array(forces), dtype=torch.float64) if has_forces else None
    p, dq, dp, derivatives = _derivatives(q, p, dp, masses, times, box)
    energies = _energies(runs, p, masses)
    reps = supercell_reps(box, cutoff)
    if reps is not None:  # a cell smaller than twice the cut-off: its supercell
        assert box is not None
        q, box, (p, dq, dp, masses, numbers) = _supercell(q, box, reps,
                                                          (p, dq, dp, masses, numbers))
        count = math.prod(reps)
        energies = {key: None if value is None else
                    (torch.tensor(value, dtype=torch.float64) * count).tolist()
                    for key, value in energies.items()}
    label = system if system is not None else runs[0][0].get_chemical_formula(empirical=True)
    fields = fields_from_arrays(q, p, dq=dq, dp=dp, t=times,
                                c=torch.stack([masses, numbers], dim=-1), box=box,
                                cutoff=cutoff, test_fraction=test_fraction, seed=seed,
                                system=label)
    symbols = [chemical_symbols[z] for z in sorted({int(z) for z in numbers.flatten()})]
    fields["meta"].update({
        "source": "ase", "derivatives": derivatives, "units": dict(UNITS),
        "time_unit_fs": 1.0 / ase_time_per_fs(), "times": timing,
        "node_constants": list(NODE_CONSTANTS), "species": symbols,
        "formulas": [frames[0].get_chemical_formula() for frames in runs],
        "energies": energies, "ase_version": ase.__version__, "file": None,
        "supercell": None if reps is None else {"reps": list(reps), "cell_atoms": n}})
    if step is not None:
        fields["meta"]["dt"] = step  # the step itself, not (t[-1] - t[0]) / (T - 1)
    return fields


# ------------------------------------------------------------------------ helpers
_GIVEN = "given: dq = p/m (the frames' momenta over masses), dp = the frames' forces"
_NO_FORCES = ("estimated: dp by {order}-order central differences of p in time "
              "(torch.gradient), the frames have no forces; dq = p/m")
_NO_MOMENTA = ("estimated: dq and p = m dq by {order}-order central differences of the "
               "positions in time (torch.gradient), the frames have no momenta; dp = forces")
_NO_MOMENTA_NOR_FORCES = ("estimated: dq, p = m dq and dp by {order}-order central "
                          "differences in time (torch.gradient), the frames have no momenta "
                          "nor forces")


def _trajectories(images: Any, atoms_type: type) -> list[list[Any]]:
    """``images`` as a list of trajectories, each a non-empty list of ``Atoms``."""
    expected = ("images must be ase.Atoms frames of one trajectory, or a list of such lists "
                "(trajectories of equal length)")
    if isinstance(images, atoms_type):
        return [[images]]
    if isinstance(images, (str, bytes)) or not hasattr(images, "__iter__"):
        raise ValueError(f"{expected}, got {type(images).__name__}")
    items = list(images)
    if not items:
        raise ValueError("images holds no frame")
    if all(isinstance(x, atoms_type) for x in items):
        return [items]
    runs = []
    for i, item in enumerate(items):
        frames = ([] if isinstance(item, (atoms_type, str, bytes))
                  or not hasattr(item, "__iter__") else list(item))
        if not frames or not all(isinstance(x, atoms_type) for x in frames):
            raise ValueError(f"{expected}; item {i} is {type(item).__name__}"
                             + (" (empty)" if hasattr(item, "__len__") and not frames else ""))
        runs.append(frames)
    lengths = sorted({len(frames) for frames in runs})
    if len(lengths) > 1:
        raise ValueError(f"trajectories must have equal lengths, got {lengths[0]} to "
                         f"{lengths[-1]} frames")
    return runs


def _check_same_atoms(frames: list[Any], where: str) -> None:
    """Every frame holds frame 0's atoms, masses, pbc and cell."""
    first = frames[0]
    numbers, masses, pbc, cell = first.numbers, first.get_masses(), first.pbc, first.cell.array
    scale = max(float(np.abs(cell).max()), 1.0)
    for k, atoms in enumerate(frames[1:], 1):
        at = f"{where}frame {k}"
        if len(atoms) != len(first) or not np.array_equal(atoms.numbers, numbers):
            raise ValueError(f"{at} holds other atoms ({atoms.get_chemical_formula()}) than "
                             f"frame 0 ({first.get_chemical_formula()}): a trajectory keeps "
                             "the same atoms in the same order")
        if not np.array_equal(atoms.get_masses(), masses):
            raise ValueError(f"{at} gives the atoms other masses than frame 0")
        if not np.array_equal(atoms.pbc, pbc):
            raise ValueError(f"{at} has pbc {atoms.pbc.tolist()}, frame 0 {pbc.tolist()}: a "
                             "trajectory keeps its boundaries")
        if pbc.any() and np.abs(atoms.cell.array - cell).max() > 1e-12 * scale:
            raise ValueError(f"{at} has another cell than frame 0: a trajectory keeps one box "
                             "(constant volume, not constant pressure)")


def _boxes(runs: list[list[Any]], many: bool) -> Tensor | None:
    """Box lengths ``[G, 3]`` of periodic frames, ``None`` for open boundaries."""
    boxes = []
    for i, frames in enumerate(runs):
        atoms, at = frames[0], f"trajectory {i}: " if many else ""
        pbc, cell = atoms.pbc, np.asarray(atoms.cell.array, dtype=np.float64)
        if pbc.all():
            diag = np.diag(cell).copy()
            off = cell - np.diag(diag)
            if (diag <= 0).any() or np.abs(off).max() > 1e-10 * np.abs(diag).max():
                raise ValueError(
                    f"{at}the cell {np.round(cell, 6).tolist()} is not orthorhombic: hogn's "
                    "periodic box is three lengths along x, y, z (a rectangular cell, "
                    "periodic in every direction) or none (no periodic direction)")
            boxes.append(diag)
        elif pbc.any():
            raise ValueError(
                f"{at}mixed periodic boundaries pbc={pbc.tolist()} are not supported: hogn "
                "takes an orthorhombic cell periodic in all three directions (a box), or no "
                "periodic direction (open boundaries)")
        else:
            boxes.append(None)
    if all(b is None for b in boxes):
        return None
    if any(b is None for b in boxes):
        raise ValueError("some trajectories are periodic and others not: give one kind")
    return torch.tensor(np.array(boxes), dtype=torch.float64)


def _lengths(box: Tensor) -> str:
    rows = {tuple(round(x, 6) for x in row) for row in box.tolist()}
    text = ", ".join(f"{x:g}" for x in min(rows))
    return f"[{text}]" + (f" and {len(rows) - 1} other(s)" if len(rows) > 1 else "")


def _stack(runs: list[list[Any]], get: Any) -> Tensor:
    """``get(atoms) [n, 3]`` of every frame, ``[G, T, n, 3]`` float64."""
    return torch.tensor(np.array([[get(a) for a in frames] for frames in runs]),
                        dtype=torch.float64)


def _property(atoms: Any, name: str) -> np.ndarray | float | None:
    """The calculator's ``forces`` (``[n, 3]``, without constraints) or ``energy`` of a
    frame, ``None`` when it has none (no calculator, or one that lacks it)."""
    from ase.calculators.calculator import PropertyNotImplementedError

    if atoms.calc is not None:
        try:
            if name == "forces":
                return np.asarray(atoms.get_forces(apply_constraint=False), dtype=np.float64)
            return float(atoms.get_potential_energy())
        except PropertyNotImplementedError:
            pass
    if name == "forces" and "forces" in atoms.arrays:
        return np.asarray(atoms.arrays["forces"], dtype=np.float64)
    return None


def _derivatives(q: Tensor, p: Tensor | None, forces: Tensor | None, masses: Tensor,
                 times: Tensor | None, box: Tensor | None
                 ) -> tuple[Tensor, Tensor, Tensor, str]:
    """``p, dq, dp [G, T, n, 3]`` and how they were found (``meta["derivatives"]``).

    ``dq = p / m`` from the frames' momenta, else ``dq`` (and ``p = m dq``) by central
    differences of the positions; ``dp`` the forces, else central differences of ``p``.
    """
    m = masses[:, None, :, None]
    text = _GIVEN
    if p is None:
        dq = _gradient(_unwrapped(q, box), times)
        p, text = m * dq, _NO_MOMENTA
    else:
        dq = p / m
    if forces is None:
        forces = _gradient(p, times)
        text = _NO_FORCES if text == _GIVEN else _NO_MOMENTA_NOR_FORCES
    if text != _GIVEN:
        assert times is not None  # one frame needs momenta and forces (checked before)
        text = text.format(order="second" if times.numel() >= 3 else "first")
    return p, dq, forces, text


def supercell_reps(box: Tensor | None, cutoff: Any) -> tuple[int, ...] | None:
    """Repetitions per direction that give every cell of ``box [G, 3]`` lengths of at
    least twice ``cutoff`` (one set for all trajectories, so that they keep one atom
    count), or ``None`` where none is needed (no box, no valid cut-off, or every cell
    already that large)."""
    if box is None or not isinstance(cutoff, (int, float)) or isinstance(cutoff, bool):
        return None
    if not (math.isfinite(cutoff) and cutoff > 0) or bool((box >= 2 * cutoff).all()):
        return None
    return replicas_for(box.amin(dim=0), 2 * cutoff)


def _supercell(q: Tensor, box: Tensor, reps: tuple[int, ...], per_atom: tuple[Any, ...]
               ) -> tuple[Tensor, Tensor, tuple[Any, ...]]:
    """Each trajectory's cell repeated ``reps`` times (:func:`hogn.periodic.supercell`):
    positions ``q [G, T, n, 3]`` shifted per replica, the per-atom arrays (``[G, T, n, 3]``
    or ``[G, n]``; ``None`` passes through) repeated, replica 0 the cell itself, and
    ``box [G, 3]`` times ``reps``."""
    g, t, n, d = q.shape
    parts = [supercell(q[i].reshape(t * n, d), box[i], reps) for i in range(g)]
    count = parts[0][2].shape[0]
    big = torch.stack([qs.view(count, t, n, d).transpose(0, 1).reshape(t, count * n, d)
                       for qs, _, _ in parts])  # [G, T, K·n, 3]

    def repeat(x: Any) -> Any:
        if x is None:
            return None
        sizes = [1] * x.dim()
        sizes[2 if x.dim() == 4 else 1] = count  # the atoms' axis
        return x.repeat(*sizes)

    return big, torch.stack([lengths for _, lengths, _ in parts]), tuple(map(repeat, per_atom))


def _energies(runs: list[list[Any]], p: Tensor, masses: Tensor) -> dict[str, Any]:
    """``meta["energies"]``: potential (the calculator's, or ``None``), kinetic
    ``Σ p²/2m`` and total, each ``[G][T]`` in eV."""
    kinetic = 0.5 * (p * p / masses[:, None, :, None]).sum(dim=(-1, -2))  # [G, T]
    potential = [[_property(a, "energy") for a in frames] for frames in runs]
    if not all(e is not None for frames in potential for e in frames):
        return {"potential": None, "kinetic": kinetic.tolist(), "total": None}
    total = torch.tensor(potential, dtype=torch.float64) + kinetic
    return {"potential": potential, "kinetic": kinetic.tolist(), "total": total.tolist()}


def _frame_times(frames: list[Any], where: str) -> np.ndarray | None:
    """The frames' times from ``info`` (``None`` unless every frame has one)."""
    values = []
    for k, atoms in enumerate(frames):
        key = next((key for key in TIME_KEYS if key in atoms.info), None)
        if key is None:
            return None
        try:
            values.append(float(atoms.info[key]))
        except (TypeError, ValueError):
            raise ValueError(f"{where}frame {k}: info[{key!r}] is not a number, got "
                             f"{atoms.info[key]!r}") from None
    return np.array(values)


def _time_axis(runs: list[list[Any]], dt: float | None, many: bool
               ) -> tuple[Tensor | None, float | None, str | None]:
    """Times ``[T]``, the step and where they came from (``None``s for one frame)."""
    points = len(runs[0])
    if points == 1:
        return None, None, None
    given = None if dt is None else checks.positive_float(dt, "dt")
    steps: list[float] = []
    found = []
    for i, frames in enumerate(runs):
        where = f"trajectory {i}, " if many else ""
        times = _frame_times(frames, where)
        found.append(times)
        if times is None:
            if given is None:
                of = f" of trajectory {i}" if many else ""
                raise NotInFrames("dt", f"the {points} frames{of} carry no time "
                                  "(atoms.info['time'])", "the time between frames in ASE "
                                  "time units (5 fs is 5 * ase.units.fs)")
            continue
        diffs = np.diff(times)
        step = float((times[-1] - times[0]) / (points - 1))
        if not step > 0 or (diffs <= 0).any() or np.abs(diffs - step).max() > _EVEN * step:
            raise ValueError(f"{where}the frames' times (info['time']) must increase evenly "
                             f"(hogn steps with one dt), got steps from {diffs.min():g} to "
                             f"{diffs.max():g}: keep every k-th frame of a run")
        if given is not None and abs(step - given) > _EVEN * given:
            raise ValueError(f"{where}the frames' times step by {step:.10g}, but dt = "
                             f"{given:.10g}: give dt only for frames without times")
        steps.append(step)
    if steps and max(steps) - min(steps) > _EVEN * min(steps):
        raise ValueError(f"the trajectories' frames step by {min(steps):.10g} to "
                         f"{max(steps):.10g}: every trajectory needs the same time step")
    if given is None and all(times is not None for times in found):
        first = found[0]
        if all(np.array_equal(times, first) for times in found):
            return torch.tensor(first, dtype=torch.float64), steps[0], "frames"
        return torch.arange(points, dtype=torch.float64) * steps[0], steps[0], \
            "frames (each trajectory from t = 0)"
    return torch.arange(points, dtype=torch.float64) * given, given, "dt"


def _unwrapped(q: Tensor, box: Tensor | None) -> Tensor:
    """Positions ``[G, T, n, d]`` made continuous in time: each step taken as the minimum
    image in the box (so that wrapped positions difference correctly)."""
    if box is None:
        return q
    lengths = box[:, None, None, :]
    steps = q.diff(dim=1)
    steps = steps - lengths * torch.round(steps / lengths)
    return torch.cat([q[:, :1], q[:, :1] + steps.cumsum(dim=1)], dim=1)


def _gradient(x: Tensor, times: Tensor | None) -> Tensor:
    """``dx/dt`` of ``x [G, T, n, d]`` by central differences (second order for ``T >= 3``)."""
    assert times is not None and times.numel() >= 2  # one frame: momenta and forces given
    order = 2 if times.numel() >= 3 else 1
    return torch.gradient(x, spacing=(times,), dim=1, edge_order=order)[0]
