"""Datasets from a user's own arrays: states or trajectories in, a :class:`Dataset` out.

Three layouts of ``q`` and ``p`` (``d`` coordinates per particle):

- ``[M, d]``: ``M`` states of one particle, without time order (each becomes a
  trajectory of one point; ``dq, dp`` required, as derivatives cannot be estimated);
- ``[M, n, d]``: ``M`` states of ``n`` particles (likewise);
- ``[G, T, n, d]``: ``G`` trajectories of ``T`` evenly spaced points (times ``t [T]``
  or a step ``dt``); ``dq, dp`` optional: when missing they are estimated by
  second-order central differences along time (:func:`torch.gradient`, one-sided at
  the ends; first order with two points), and the dataset says so
  (``meta["derivatives"]``, its ``repr`` and ``hogn info``).

Everything else is optional: node constants ``c`` (``[n, k]`` shared by all graphs,
``[M or G, n, k]`` per graph, or ``[M, k]`` for one particle; missing: no constant
columns, ``k = 0``), a shared ``edge_index [2, E]`` on each graph's particle numbers
``0 .. n-1`` (default: the complete graph without self loops, none for one particle)
with optional ``edge_attr [E, a]``, a periodic box ``box`` of lengths ``[d]`` (shared) or
``[M or G, d]`` (per graph) with the radius ``cutoff`` of the edges (see below), noisy
observations ``q_obs, p_obs`` (the shape of ``q``; training reads them as inputs, the
clean ``q, p`` stay the truth), and the held-out split: a boolean ``test`` mask over
the states ``[M]`` or trajectories ``[G]``, or a ``test_fraction`` drawn with ``seed``
(default 0.2, as :func:`systems.generate`). Arrays may be numpy arrays, torch tensors
or nested lists; they are stored in float64 (indices as int64).

**Radius edges and periodic boxes.** With ``cutoff`` each graph's edges are the pairs of
its first state closer than ``cutoff`` (:func:`hogn.graph.radius_graph`; the minimum
image in the box, when there is one), as the datasets of
:class:`systems.lennard_jones.LennardJones` store them: neighbours change as particles
move, so consumers rebuild a state's edges from its positions with the same radius
(``meta["cutoff"]``; :meth:`Dataset.snapshots`,
:meth:`hogn.graph.GraphBatch.with_radius_edges`). A box needs ``cutoff`` (or an
explicit ``edge_index``): a complete graph would ignore which image of a particle is
near. Every box length must be at least ``2 · cutoff`` (one image per pair).

:func:`load_npz` reads the same arrays from a ``.npz`` file (the ``hogn import``
command): the keys of :data:`NPZ_KEYS`, or the layout of the HNN paper's code
(``x, dx [M, 2d]`` with columns ``q`` then ``p``, and optional ``test_x, test_dx``).

The checks, and the arrays they make, are those of
:func:`systems.array_fields.fields_from_arrays`, on which :meth:`Dataset.from_arrays`
builds; the functions here build on :class:`Dataset` (the imports go one way:
``arrays → dataset → array_fields``).
"""

from __future__ import annotations

import lzma
import os
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from hogn import checks
from systems.array_fields import DEFAULT_LABEL
from systems.array_keys import HNN_KEYS, NPZ_KEYS
from systems.dataset import Dataset

__all__ = ["DEFAULT_LABEL", "HNN_KEYS", "NPZ_KEYS", "from_arrays", "load_npz"]


def from_arrays(q: Any, p: Any, *, dq: Any = None, dp: Any = None, t: Any = None,
                dt: float | None = None, c: Any = None, edge_index: Any = None,
                edge_attr: Any = None, q_obs: Any = None, p_obs: Any = None, test: Any = None,
                test_fraction: float | None = None, seed: int = 0,
                system: str = DEFAULT_LABEL, params: Mapping[str, Any] | None = None,
                box: Any = None, cutoff: float | None = None) -> Dataset:
    """Build a :class:`Dataset` from states or trajectories (see the module notes).

    Args:
        q: Positions ``[M, d]``, ``[M, n, d]`` (states) or ``[G, T, n, d]``
            (trajectories).
        p: Momenta, the shape of ``q``.
        dq, dp: Time derivatives, the shape of ``q``; both or neither. Required for
            states; estimated from trajectories when missing.
        t: Times of trajectories ``[T]``, evenly spaced and increasing.
        dt: Time step of trajectories (times ``0, dt, 2 dt, ...``), instead of ``t``.
        c: Node constants ``[n, k]`` (shared), ``[M or G, n, k]`` (per graph) or
            ``[M, k]`` (one particle per state); ``None``: ``k = 0``.
        edge_index: Edges ``[2, E]`` on particle numbers ``0 .. n-1``, the same for
            every graph; ``None``: the radius edges of ``cutoff`` when given, else the
            complete graph without self loops (no edges for ``n = 1``).
        edge_attr: Edge constants ``[E, a]``, one row per edge of ``edge_index``
            (of the default complete graph: pairs ``(i, j)`` in lexicographic order).
        q_obs, p_obs: Noisy observations, the shape of ``q`` (both or neither).
        test: Held-out mask over the graphs ``[M]`` or ``[G]``, bool or 0/1.
        test_fraction: Held-out fraction in ``[0, 1)`` drawn at random with ``seed``,
            instead of ``test``; default 0.2 (as :func:`systems.generate`).
        seed: Seed of the ``test_fraction`` draw.
        system: A label for the data (recorded as the system's name), or the name
            of a registered system (then ``hogn info`` and ``hogn evaluate`` report
            its true energy, when ``c`` holds the constants it reads).
        params: Parameters of a registered ``system``, recorded beside its name.
        box: Periodic box lengths ``[d]`` (every graph) or ``[M or G, d]`` (one box
            per graph), each ``> 0``; ``None``: open boundaries. Needs ``cutoff`` or
            ``edge_index``.
        cutoff: Radius of the edges (``> 0``, in the units of ``q``): each graph gets
            the pairs of its first state closer than it (minimum image in ``box``),
            instead of the complete graph; recorded as ``meta["cutoff"]``. Not with
            ``edge_index`` or ``edge_attr``.

    Returns:
        The dataset: ``q, p, dq, dp [T, G·n, d]`` float64, ``T = 1`` for states;
        ``box [G, d]`` with a box.

    Raises:
        ValueError: naming the array, its shape and the shape expected.
    """
    return Dataset.from_arrays(q, p, dq=dq, dp=dp, t=t, dt=dt, c=c, edge_index=edge_index,
                               edge_attr=edge_attr, q_obs=q_obs, p_obs=p_obs, test=test,
                               test_fraction=test_fraction, seed=seed, system=system,
                               params=params, box=box, cutoff=cutoff)


def load_npz(path: str | os.PathLike, *, test_fraction: float | None = None, seed: int = 0,
             system: str | None = None, params: Mapping[str, Any] | None = None,
             cutoff: float | None = None) -> Dataset:
    """Read a user's arrays from a ``.npz`` file into a :class:`Dataset`.

    The keys are those of :data:`NPZ_KEYS` (``q, p`` required) or of
    :data:`HNN_KEYS` (``x, dx`` required; ``test_x, test_dx`` are appended to them
    as the held-out states). Any other key is refused, naming the valid ones.

    Args:
        path: The ``.npz`` file (``numpy.savez``; no pickled objects).
        test_fraction, seed, params: As for :func:`from_arrays`.
        system: Label of the data; overrides a ``system`` key of the file.
        cutoff: Radius of the edges; overrides a ``cutoff`` key of the file.

    Raises:
        ValueError: for a file numpy cannot read, unknown or missing keys, or arrays
            :func:`from_arrays` refuses (the message names the file).
    """
    try:
        _check_members(path)
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"{path}: holds one array, not named arrays (save them with "
                             "numpy.savez(path, q=..., p=..., ...))")
        with archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder, not a .npz file") from None
    except ValueError as exc:
        if str(exc).startswith(f"{path}: "):
            raise
        raise ValueError(f"{path}: not a readable .npz file of named arrays "
                         f"({exc.__class__.__name__}: {_first_line(exc)})") from None
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError,
            NotImplementedError, RuntimeError, SyntaxError) as exc:  # damaged members
        raise ValueError(f"{path}: not a readable .npz file of named arrays "
                         f"({exc.__class__.__name__}: {_first_line(exc)})") from None
    except Exception as exc:  # numpy's header parser, on damaged bytes, raises anything
        raise ValueError(f"{path}: not a readable .npz file of named arrays (damaged? "
                         f"{exc.__class__.__name__})") from None
    try:
        kwargs = _npz_arguments(arrays)
        if system is not None:
            kwargs["system"] = system
        if cutoff is not None:
            kwargs["cutoff"] = cutoff
        return from_arrays(**kwargs, test_fraction=test_fraction, seed=seed, params=params)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


# ------------------------------------------------------------------------ helpers
_READABLE = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


def _check_members(path: str | os.PathLike) -> None:
    """Refuse, before anything is unpacked, a ``.npz`` (zip) archive whose members are
    not plain ``.npy`` arrays (encrypted, of an unknown compression, of another kind),
    or whose unpacked arrays would not fit in memory (a small archive may unpack to
    gigabytes). Files that are not zip archives are left to ``numpy.load``."""
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
    for info in members:
        if not info.filename.endswith(".npy"):
            raise ValueError(f"{path}: member {info.filename!r} is not a .npy array (a .npz "
                             "file holds only arrays saved by numpy.savez)")
        if info.flag_bits & 0x1:
            raise ValueError(f"{path}: member {info.filename!r} is encrypted")
        if info.compress_type not in _READABLE:
            raise ValueError(f"{path}: member {info.filename!r} uses compression method "
                             f"{info.compress_type}, which numpy cannot read (stored or "
                             "deflated, as numpy.savez and savez_compressed write)")
    unpacked = float(sum(info.file_size for info in members))
    try:  # the arrays, their float64 copies and the dataset made of them
        checks.check_memory(4 * unpacked, f"{path}: its arrays ({checks.format_bytes(unpacked)}"
                                          " unpacked) and the dataset made of them")
    except checks.CheckError as exc:
        raise ValueError(str(exc)) from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def _npz_arguments(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """:func:`from_arrays` arguments from the named arrays of a ``.npz`` file."""
    keys = set(arrays)
    hnn = keys & set(HNN_KEYS)
    if hnn and keys & {"q", "p", "dq", "dp", "q_obs", "p_obs"}:
        raise ValueError(f"holds both the HNN layout ({', '.join(sorted(hnn))}) and q/p "
                         "arrays; use one of them")
    valid = set(_valid_keys(hnn=bool(hnn)))
    unknown = keys - valid
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}; expected "
                         f"{', '.join(_valid_keys(hnn=bool(hnn)))}")
    kwargs: dict[str, Any] = {}
    if "system" in arrays:
        label = arrays.pop("system")
        if label.dtype.kind != "U" or label.size != 1:
            raise ValueError(f"system must be one text label, got an array "
                             f"{label.dtype} {label.shape}")
        kwargs["system"] = str(label.reshape(()))
    for key in ("dt", "cutoff"):
        if key in arrays:
            value = arrays.pop(key)
            if value.size != 1 or value.dtype.kind not in "fiu":
                raise ValueError(f"{key} must be one number, got an array {value.dtype} "
                                 f"{value.shape}")
            kwargs[key] = float(value.reshape(()))
    if not hnn:
        for key in ("q", "p"):
            if key not in arrays:
                raise ValueError(f"the key {key!r} is missing (required: q, p; optional: "
                                 f"{', '.join(k for k in NPZ_KEYS if k not in 'qp')})")
        return {**kwargs, **arrays}
    return {**kwargs, **_hnn_arguments(arrays)}


def _valid_keys(hnn: bool = False) -> list[str]:
    """The valid ``.npz`` keys in documentation order (of the HNN layout with ``hnn``)."""
    return [*HNN_KEYS, "system"] if hnn else list(NPZ_KEYS)


def _hnn_arguments(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """``q, p, dq, dp`` and the test mask from the HNN layout ``x, dx [M, 2d]``."""
    for need, pair in (("x", "dx"), ("dx", "x"), ("test_x", "test_dx"),
                       ("test_dx", "test_x")):
        if pair in arrays and need not in arrays:
            raise ValueError(f"the HNN layout has {pair} but not {need}; expected x and dx "
                             "(and optionally test_x with test_dx)")
    x, dx = arrays["x"], arrays["dx"]
    test_x, test_dx = arrays.get("test_x"), arrays.get("test_dx")
    columns = x.shape[-1] if x.ndim == 2 else 0
    for name, value in (("x", x), ("dx", dx), ("test_x", test_x), ("test_dx", test_dx)):
        if value is not None and (value.ndim != 2 or value.shape[1] != columns
                                  or columns % 2 or columns == 0):
            raise ValueError(f"{name} must be [M, 2d] (columns q_1..q_d, then p_1..p_d) "
                             f"with the columns of x, got shape {value.shape}")
    if dx.shape != x.shape or (test_x is not None and test_dx.shape != test_x.shape):
        raise ValueError(f"dx must have the shape of x {x.shape} (and test_dx that of "
                         f"test_x), got {dx.shape}"
                         + (f" and {test_dx.shape}" if test_dx is not None else ""))
    test = None
    if test_x is not None:
        test = np.concatenate([np.zeros(len(x), bool), np.ones(len(test_x), bool)])
        x, dx = np.concatenate([x, test_x]), np.concatenate([dx, test_dx])
    d = columns // 2
    return {"q": x[:, :d], "p": x[:, d:], "dq": dx[:, :d], "dp": dx[:, d:], "test": test}
