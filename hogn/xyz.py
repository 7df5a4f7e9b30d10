"""Trajectories as extended XYZ, the text format particle tools (ASE, OVITO) open.

One file holds one trajectory of one graph: a frame per saved time, each frame

.. code-block:: text

    2
    Lattice="4 0 0 0 4 0 0 0 1" Properties=species:S:1:pos:R:3:masses:R:1 Time=0.5 pbc="T T F" dim=2
    X 1.25 0.5 0 1
    X 3.5 2.75 0 2

- the particle count, then a comment line of ``key=value`` pairs, then one line per
  particle with the columns ``Properties`` names (``NAME:TYPE:COLUMNS``, types ``S``
  text, ``R`` real);
- ``pos`` and ``momenta`` always have three columns, as ASE and OVITO expect: a system
  with ``d < 3`` coordinates is padded with zeros (``dim=d`` on the comment line says
  how many are real; :func:`read_xyz` gives back ``[T, n, d]``);
- a periodic box ``[d]`` becomes ``Lattice`` (the three cell vectors, here the box
  lengths on the diagonal) with ``pbc="T T F"`` for ``d = 2``; an axis the system does
  not have gets length 1 and ``F`` (OVITO ignores a cell with a zero-length vector);
  without a box there is no ``Lattice`` and ``pbc="F F F"``. Positions are written as
  they are, not wrapped into the box (the tools wrap on request);
- node constants ``c [n, k]`` (mass first) become one real column each, by default
  named ``masses`` (the name ASE gives an atom's mass), ``c1``, ``c2``, ...;
- ``Time`` is the frame's time (always with a decimal point or an exponent, so that
  readers take every frame's as a real number); other ``key=value`` pairs can be added per file
  (e.g. ``system=spring-nbody``).

Particles are species ``X`` (ASE's placeholder element) unless named; atoms are
named by their atomic numbers with :func:`element_symbols` (``18`` -> ``Ar``). Numbers are
written with ``digits`` significant digits (17 is exact for float64). Files are
written atomically (:func:`hogn.io.atomic_write`).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hogn.io import atomic_write

__all__ = ["ELEMENTS", "XYZTrajectory", "element_symbols", "read_xyz", "write_xyz"]

ELEMENTS = (
    "X", "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P",
    "S", "Cl", "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
    "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh",
    "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd",
    "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re",
    "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th",
    "Pa", "U", "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db",
    "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og")
"""Element symbols by atomic number (``ELEMENTS[18] == "Ar"``; 0 is ASE's placeholder
``X``), as ``ase.data.chemical_symbols``."""

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_RESERVED = {"Lattice", "Properties", "Time", "pbc", "dim"}


@dataclass
class XYZTrajectory:
    """A trajectory read back by :func:`read_xyz`.

    Attributes:
        q: Positions ``[T, n, d]`` (float64).
        p: Momenta ``[T, n, d]``, or ``None`` when the file has none.
        t: Times ``[T]``, or ``None`` when the frames carry no ``Time``.
        c: Per-particle real columns other than positions and momenta ``[n, k]``
            (from the first frame), named by ``constant_names``.
        constant_names: Names of the columns of ``c``.
        species: One name per particle (``n``).
        box: Periodic box lengths ``[d]``, or ``None`` without a periodic axis.
        info: The other ``key=value`` pairs of the first frame's comment line.
    """

    q: Tensor
    p: Tensor | None
    t: Tensor | None
    c: Tensor
    constant_names: list[str]
    species: list[str]
    box: Tensor | None
    info: dict[str, str] = field(default_factory=dict)


def element_symbols(numbers: Tensor | np.ndarray | Sequence[float]) -> list[str]:
    """Element symbols of atomic numbers ``[n]`` (whole numbers 0 to 118; 0 is ``X``).

    Raises:
        ValueError: For a number that is not a whole number in that range.
    """
    values = np.asarray(numbers.detach().cpu() if isinstance(numbers, Tensor) else numbers,
                        dtype=np.float64).reshape(-1)
    bad = [v for v in values.tolist() if not (v == round(v) and 0 <= v < len(ELEMENTS))]
    if bad:
        raise ValueError(f"atomic numbers must be whole numbers from 0 to {len(ELEMENTS) - 1}, "
                         f"got {bad[0]!r}")
    return [ELEMENTS[int(v)] for v in values.tolist()]


def _array(x: Tensor | np.ndarray | Sequence[float], name: str) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(
        x, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"write_xyz: {name} holds non-finite values (NaN or inf); "
                         "extended XYZ needs finite numbers")
    return a


def _value(key: str, value: object) -> str:
    text = str(value)
    if '"' in text or "\n" in text or "=" in text:
        raise ValueError(f"write_xyz: info value of {key!r} must not contain '\"', '=' or "
                         f"a line break, got {text!r}")
    return f'"{text}"' if (not text or any(ch.isspace() for ch in text)) else text


def _check_names(names: Sequence[str], what: str) -> None:
    for name in names:
        if not _KEY.fullmatch(name):
            raise ValueError(f"write_xyz: {what} {name!r} is not a valid extended XYZ name "
                             "(a letter or _, then letters, digits, _ or -)")


def write_xyz(path: str | os.PathLike, q: Tensor | np.ndarray, p: Tensor | np.ndarray | None = None,
              *, t: Tensor | np.ndarray | Sequence[float] | None = None,
              c: Tensor | np.ndarray | None = None,
              box: Tensor | np.ndarray | Sequence[float] | None = None,
              species: str | Sequence[str] = "X", constant_names: Sequence[str] | None = None,
              info: Mapping[str, object] | None = None, digits: int = 10) -> Path:
    """Write one trajectory as an extended XYZ file (see the module notes).

    Args:
        path: Destination file (written atomically).
        q: Positions ``[T, n, d]`` (or one frame ``[n, d]``), ``1 <= d <= 3``.
        p: Momenta of the same shape, or ``None``.
        t: Times ``[T]``, written as ``Time`` (default: none).
        c: Node constants ``[n, k]``, mass first, one real column each.
        box: Periodic box lengths ``[d]`` (``> 0``), or ``None`` (open boundaries).
        species: One name for every particle, or one per particle (``n``); no spaces.
        constant_names: Names of the ``k`` columns of ``c`` (default ``masses``, ``c1``,
            ``c2``, ...).
        info: More ``key=value`` pairs for every frame's comment line.
        digits: Significant digits of every number, 1 to 17 (17: exact for float64).

    Returns:
        The written path.

    Raises:
        ValueError: On arrays of the wrong shape or with non-finite values, a box that
            is not ``[d]`` lengths ``> 0``, names with spaces, or ``digits`` out of range.
    """
    qa = _array(q, "q")
    if qa.ndim == 2:
        qa = qa[None]
    if qa.ndim != 3 or not 1 <= qa.shape[-1] <= 3:
        raise ValueError(f"write_xyz: q must be [T, n, d] (or [n, d]) with d = 1, 2 or 3, "
                         f"got shape {tuple(qa.shape)}")
    frames, n, d = qa.shape
    if frames == 0:
        raise ValueError("write_xyz: q holds no frames (T = 0); give at least one state")
    pa = None
    if p is not None:
        pa = _array(p, "p")
        pa = pa[None] if pa.ndim == 2 else pa
        if pa.shape != qa.shape:
            raise ValueError(f"write_xyz: p must have q's shape {tuple(qa.shape)}, got "
                             f"{tuple(pa.shape)}")
    times = None
    if t is not None:
        times = _array(t, "t").reshape(-1)
        if times.shape != (frames,):
            raise ValueError(f"write_xyz: t must hold one time per frame [{frames}], got "
                             f"{times.size} values")
    ca = np.zeros((n, 0)) if c is None else _array(c, "c")
    if ca.ndim == 1:
        ca = ca[:, None]
    if ca.ndim != 2 or ca.shape[0] != n:
        raise ValueError(f"write_xyz: c must be [n, k] with n = {n}, got {tuple(ca.shape)}")
    k = ca.shape[1]
    names = (["masses", *(f"c{i}" for i in range(1, k))][:k] if constant_names is None
             else list(constant_names))
    if len(names) != k:
        raise ValueError(f"write_xyz: constant_names must name the {k} columns of c, got "
                         f"{len(names)}")
    _check_names(names, "constant name")
    if len(set(names)) != len(names) or {"species", "pos", "momenta"} & set(names):
        raise ValueError(f"write_xyz: constant_names must be distinct and not species, pos "
                         f"or momenta, got {names}")
    labels = [species] * n if isinstance(species, str) else list(species)
    if len(labels) != n or any(not s or any(ch.isspace() for ch in s) for s in labels):
        raise ValueError(f"write_xyz: species must be one name without spaces, or {n} of "
                         "them (one per particle)")
    if not isinstance(digits, int) or isinstance(digits, bool) or not 1 <= digits <= 17:
        raise ValueError(f"write_xyz: digits must be an int in [1, 17], got {digits!r}")
    extra = dict(info or {})
    _check_names(list(extra), "info key")
    reserved = _RESERVED & set(extra)
    if reserved:
        raise ValueError(f"write_xyz: info keys {sorted(reserved)} are written by write_xyz "
                         "itself; choose other names")

    header = ["species:S:1:pos:R:3"] + (["momenta:R:3"] if pa is not None else []) + [
        f"{name}:R:1" for name in names]
    fixed = [f"Properties={':'.join(header)}"]
    if box is not None:
        lengths = _array(box, "box").reshape(-1)
        if lengths.shape != (d,) or not (lengths > 0).all():
            raise ValueError(f"write_xyz: box must hold {d} lengths > 0 (one per coordinate), "
                             f"got {lengths.tolist()}")
        cell = np.eye(3)
        cell[range(d), range(d)] = lengths
        fixed.insert(0, 'Lattice="' + " ".join(f"{x:.{digits}g}" for x in cell.ravel()) + '"')
        pbc = ["T"] * d + ["F"] * (3 - d)
    else:
        pbc = ["F"] * 3
    tail = [f'pbc="{" ".join(pbc)}"', f"dim={d}",
            *(f"{key}={_value(key, value)}" for key, value in extra.items())]

    width = max(len(s) for s in labels)
    number = f"%.{digits}g"
    padded = np.zeros((n, 3))
    row_format = "%-*s" + f" {number}" * 3 * (1 if pa is None else 2) + f" {number}" * k

    def frame_lines(i: int) -> Iterable[str]:
        comment = list(fixed)
        if times is not None:
            text = f"{times[i]:.{digits}g}"
            comment.append(f"Time={text if any(ch in text for ch in '.e') else text + '.0'}")
        yield f"{n}\n{' '.join(comment + tail)}\n"
        pos = padded.copy()
        pos[:, :d] = qa[i]
        blocks = [pos]
        if pa is not None:
            mom = padded.copy()
            mom[:, :d] = pa[i]
            blocks.append(mom)
        blocks.append(ca)
        values = np.concatenate(blocks, axis=1)
        yield "".join(row_format % (width, s, *row) + "\n"
                      for s, row in zip(labels, values.tolist(), strict=True))

    def write(fh: object) -> None:
        for i in range(frames):
            for text in frame_lines(i):
                fh.write(text.encode())  # type: ignore[attr-defined]

    return atomic_write(path, write)


def _parse_comment(line: str, where: str) -> dict[str, str]:
    try:
        tokens = shlex.split(line)
    except ValueError as exc:
        raise ValueError(f"{where}: the comment line is not key=value pairs ({exc})") from None
    pairs = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise ValueError(f"{where}: expected key=value on the comment line, got {token!r}")
        pairs[key] = value
    return pairs


def _parse_properties(text: str, where: str) -> list[tuple[str, str, int]]:
    fields = text.split(":")
    if len(fields) % 3 or not fields:
        raise ValueError(f"{where}: Properties must be NAME:TYPE:COLUMNS triples, got {text!r}")
    out = []
    for name, kind, cols in zip(fields[::3], fields[1::3], fields[2::3], strict=True):
        if kind not in "SRIL" or len(kind) != 1 or not cols.isdigit() or int(cols) < 1:
            raise ValueError(f"{where}: bad property {name}:{kind}:{cols} (types S, R, I, L; "
                             "columns >= 1)")
        out.append((name, kind, int(cols)))
    return out


def read_xyz(path: str | os.PathLike) -> XYZTrajectory:
    """Read an extended XYZ trajectory written by :func:`write_xyz` (or alike).

    Every frame must have the same particle count and ``Properties``; a ``pos``
    column of three is required. ``dim=d`` on the comment line (as :func:`write_xyz`
    writes) trims positions, momenta and the box to ``d`` coordinates.

    Args:
        path: The file.

    Returns:
        The trajectory (float64 tensors).

    Raises:
        ValueError: On a missing or malformed file, naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    lines = path.read_text().splitlines()
    at = 0
    qs, ps, ts = [], [], []
    constants: dict[str, np.ndarray] = {}  # the first frame's other real columns
    first: dict[str, str] | None = None
    count = 0
    props: list[tuple[str, str, int]] = []
    species: list[str] = []
    while at < len(lines):
        if not lines[at].strip():
            at += 1
            continue
        where = f"{path} line {at + 1}"
        try:
            n = int(lines[at])
        except ValueError:
            raise ValueError(f"{where}: expected the particle count, got {lines[at]!r}") \
                from None
        if n < 1:
            raise ValueError(f"{where}: a frame must announce at least one particle, got {n}")
        if at + 2 + n > len(lines):
            raise ValueError(f"{where}: the frame announces {n} particles but the file ends "
                             "before them (truncated?)")
        pairs = _parse_comment(lines[at + 1], f"{path} line {at + 2}")
        frame_props = _parse_properties(pairs.get("Properties", "species:S:1:pos:R:3"),
                                        f"{path} line {at + 2}")
        if first is None:
            first, props, count = pairs, frame_props, n
        elif frame_props != props or n != count:
            raise ValueError(f"{where}: every frame must have the first frame's particles and "
                             "Properties")
        rows = [line.split() for line in lines[at + 2: at + 2 + n]]
        width = sum(cols for _, _, cols in props)
        for j, row in enumerate(rows):
            if len(row) != width:
                raise ValueError(f"{path} line {at + 3 + j}: expected {width} columns, got "
                                 f"{len(row)}")
        columns: dict[str, np.ndarray] = {}
        start = 0
        for name, kind, cols in props:
            block = [row[start:start + cols] for row in rows]
            start += cols
            if kind == "S":
                if name == "species" and not species:
                    species = [b[0] for b in block]
                continue
            try:
                columns[name] = np.array(block, dtype=np.float64).reshape(n, cols)
            except ValueError:
                raise ValueError(f"{where}: column {name} holds a value that is not a "
                                 "number") from None
        if "pos" not in columns or columns["pos"].shape[1] != 3:
            raise ValueError(f"{where}: expected a pos:R:3 column in Properties")
        bad = [name for name, v in columns.items() if not np.isfinite(v).all()]
        if bad:
            raise ValueError(f"{where}: column {bad[0]} holds a value that is not finite "
                             "(nan or inf)")
        qs.append(columns.pop("pos"))
        if "momenta" in columns:
            ps.append(columns.pop("momenta"))
        if len(qs) == 1:
            constants = columns
        if "Time" in pairs:
            ts.append(float(pairs["Time"]))
        at += 2 + n
    if first is None:
        raise ValueError(f"{path}: holds no frame")
    d = int(first.get("dim", "3"))
    if not 1 <= d <= 3:
        raise ValueError(f"{path}: dim must be 1, 2 or 3, got {d}")
    box = None
    pbc = first.get("pbc", "T T T" if "Lattice" in first else "F F F").split()
    if "Lattice" in first and "T" in pbc:
        try:
            cell = np.array(first["Lattice"].split(), dtype=np.float64).reshape(3, 3)
        except ValueError:
            raise ValueError(f"{path}: Lattice must hold 9 numbers, got "
                             f"{first['Lattice']!r}") from None
        lengths = np.diag(cell)[:d]
        if not np.isfinite(cell).all() or (lengths <= 0).any() \
                or np.count_nonzero(cell - np.diag(np.diag(cell))):
            raise ValueError(f"{path}: Lattice must be an orthorhombic box of finite lengths "
                             f"> 0 (a diagonal cell), got {first['Lattice']!r}")
        box = torch.from_numpy(lengths.copy())
    names = list(constants)
    c = (torch.from_numpy(np.concatenate([constants[name] for name in names], axis=1))
         if names else torch.zeros(count, 0, dtype=torch.float64))
    info = {key: value for key, value in first.items() if key not in _RESERVED}
    return XYZTrajectory(
        q=torch.from_numpy(np.stack(qs)[..., :d].copy()),
        p=torch.from_numpy(np.stack(ps)[..., :d].copy()) if len(ps) == len(qs) else None,
        t=torch.tensor(ts, dtype=torch.float64) if len(ts) == len(qs) else None,
        c=c, constant_names=names, species=species, box=box, info=info)
