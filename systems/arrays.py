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
"""

from __future__ import annotations

import lzma
import math
import os
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hogn import checks
from hogn.graph import fully_connected, ptr_from_sizes, radius_graph
from systems.array_keys import HNN_KEYS, NPZ_KEYS
from systems.dataset import Dataset, random_test_mask

__all__ = ["DEFAULT_LABEL", "HNN_KEYS", "NPZ_KEYS", "from_arrays", "load_npz"]

DEFAULT_LABEL = "user"
"""System label of a dataset built from arrays when the caller names none."""

_ESTIMATED = "estimated: second-order central differences in time (torch.gradient)"
_ESTIMATED_FIRST = "estimated: first-order differences in time (two points)"
_SERIES = ("p", "dq", "dp", "q_obs", "p_obs")


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
    q_t = _floats("q", q)
    layout, count, points, n, d = _layout(q_t)
    g_label = "M" if layout.startswith("states") else "G"
    shape4 = (count, points, n, d)
    given = {"p": p, "dq": dq, "dp": dp, "q_obs": q_obs, "p_obs": p_obs}
    series = {name: None if value is None else _same_shape(name, _floats(name, value), q_t)
              for name, value in given.items()}
    if series["p"] is None:
        raise ValueError(f"p is required: momenta of the shape of q {tuple(q_t.shape)}")
    for a, b in (("dq", "dp"), ("q_obs", "p_obs")):
        if (series[a] is None) != (series[b] is None):
            raise ValueError(f"give both {a} and {b}, or neither (got only "
                             f"{a if series[a] is not None else b})")
    q4 = q_t.reshape(shape4)
    arrays = {name: None if x is None else x.reshape(shape4) for name, x in series.items()}
    arrays["q"] = q4
    times, step = _times(layout, points, t, dt)
    if arrays["dq"] is None:
        if points < 2:
            raise ValueError(f"dq and dp are required for {layout}: derivatives cannot be "
                             "estimated from one point without time order (pass "
                             "trajectories [G, T, n, d] of T >= 2 with t or dt to estimate "
                             "them)")
        order = 2 if points >= 3 else 1
        arrays["dq"], arrays["dp"] = (torch.gradient(arrays[x], spacing=(times,), dim=1,
                                                     edge_order=order)[0] for x in "qp")
        derivatives = _ESTIMATED if order == 2 else _ESTIMATED_FIRST
    else:
        derivatives = "given"
    sizes = [n] * count
    nodes = _node_constants(c, count, n, g_label)
    boxes = _box(box, count, d, g_label)
    if cutoff is None:
        if boxes is not None and edge_index is None:
            raise ValueError("a periodic box needs cutoff, the radius of the edges (each "
                             "graph gets the pairs of its first state closer than it, by the "
                             "minimum image), or an explicit edge_index: a complete graph "
                             "ignores which image of a particle is near")
        edges, attrs = _edges(edge_index, edge_attr, count, n)
    else:
        cutoff = checks.positive_float(cutoff, "cutoff")
        edges = _radius_edges(q4[:, 0].reshape(count * n, d), edge_index, edge_attr, cutoff,
                              sizes, boxes)
        attrs = None
    mask, fraction = _test_mask(test, test_fraction, seed, count, g_label)
    label = system if isinstance(system, str) else None
    if not label or not label.strip():
        raise ValueError(f"system must be a non-empty text label, got {system!r}")
    meta = {"system": {"name": label.strip(), **dict(params or {})}, "dt": step,
            "steps": points - 1, "seed": seed if fraction is not None else None,
            "noise": None, "method": None, "substeps": None, "n_particles": n,
            "resampled": {}, "rtol": None, "preset": None, "test_fraction": fraction,
            "source": "arrays", "layout": layout, "derivatives": derivatives,
            "cutoff": cutoff}

    def flat(x: Tensor | None) -> Tensor | None:  # [G, T, n, d] -> [T, G·n, d]
        return None if x is None else x.transpose(0, 1).reshape(points, count * n, d)

    data = Dataset(t=times, q=flat(arrays["q"]), p=flat(arrays["p"]), dq=flat(arrays["dq"]),
                   dp=flat(arrays["dp"]), c=nodes, edge_index=edges,
                   ptr=ptr_from_sizes(sizes), test=mask, meta=meta, edge_attr=attrs,
                   q_obs=flat(arrays["q_obs"]), p_obs=flat(arrays["p_obs"]), box=boxes)
    problem = data.validate()
    if problem:  # the checks above should leave nothing for this one
        raise ValueError(f"the arrays do not fit together: {problem}")
    return data


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


def _numpy(name: str, value: Any) -> np.ndarray:
    """``value`` (a numpy array, a torch tensor on any device, nested lists) as numpy."""
    x = value.detach().cpu() if isinstance(value, Tensor) else value
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise ValueError(f"{name} must be an array of numbers ({exc})") from None


def _floats(name: str, value: Any) -> Tensor:
    """``value`` as a float64 CPU tensor of finite real numbers."""
    array = _numpy(name, value)
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}"
                         + (" (bool)" if array.dtype.kind == "b" else ""))
    out = torch.as_tensor(array, dtype=torch.float64).clone()
    if out.numel() and not bool(torch.isfinite(out).all()):
        bad = int((~torch.isfinite(out)).sum())
        raise ValueError(f"{name} holds {bad} NaN or infinite value(s); remove or fill them")
    return out


def _layout(q: Tensor) -> tuple[str, int, int, int, int]:
    """``(layout, graphs, points, particles, dims)`` from the shape of ``q``."""
    shape = tuple(q.shape)
    if q.dim() == 2:
        layout, (count, d), points, n = "states [M, d]", shape, 1, 1
    elif q.dim() == 3:
        layout, (count, n, d), points = "states [M, n, d]", shape, 1
    elif q.dim() == 4:
        layout, (count, points, n, d) = "trajectories [G, T, n, d]", shape
    else:
        raise ValueError(f"q must be states [M, d] or [M, n, d], or trajectories "
                         f"[G, T, n, d], got shape {shape}")
    if min(shape) < 1:
        raise ValueError(f"q must have every size >= 1 ({layout}), got shape {shape}")
    return layout, count, points, n, d


def _same_shape(name: str, x: Tensor, q: Tensor) -> Tensor:
    if x.shape != q.shape:
        raise ValueError(f"{name} must have the shape of q {tuple(q.shape)}, got "
                         f"{tuple(x.shape)}")
    return x


def _times(layout: str, points: int, t: Any, dt: float | None
           ) -> tuple[Tensor, float | None]:
    """Times ``[T]`` and the step (``None`` for states, which have no time order)."""
    if layout.startswith("states"):
        if t is not None or dt is not None:
            raise ValueError(f"{layout} have no time axis: t and dt apply to trajectories "
                             "[G, T, n, d]")
        return torch.zeros(1, dtype=torch.float64), None
    if t is not None and dt is not None:
        raise ValueError("give the times t or the step dt, not both")
    if dt is not None:
        step = _check_step(checks.positive_float(dt, "dt"), points, "dt")
        return torch.arange(points, dtype=torch.float64) * step, step
    if t is None:
        if points == 1:
            return torch.zeros(1, dtype=torch.float64), None
        raise ValueError(f"trajectories of {points} points need their times: pass t [T] "
                         "(evenly spaced) or dt")
    times = _floats("t", t)
    if times.shape != (points,):
        raise ValueError(f"t must be [T] = [{points}] (the time axis of q [G, T, n, d]), "
                         f"got shape {tuple(times.shape)}")
    if points == 1:
        return times, None
    steps = times.diff()
    step = float((times[-1] - times[0]) / (points - 1))
    if not step > 0 or bool((steps <= 0).any()):
        raise ValueError("t must increase strictly")
    if float((steps - step).abs().max()) > 1e-6 * step:
        raise ValueError(f"t must be evenly spaced (hogn steps with one dt), got steps from "
                         f"{float(steps.min()):g} to {float(steps.max()):g}")
    return times, _check_step(step, points, "the step of t")


_TINY = float(torch.finfo(torch.float64).tiny)


def _check_step(step: float, points: int, name: str) -> float:
    """``step`` if its times ``0 .. (T − 1) step`` and the rates ``1 / step`` are finite
    normal float64 numbers; else ``ValueError`` naming ``name`` and the range."""
    if step < _TINY:
        raise ValueError(f"{name} must be at least {_TINY:.3g} (a normal float64; smaller "
                         f"steps make the derivatives infinite), got {step:g}")
    if not math.isfinite(step * (points - 1)) or not math.isfinite(1.0 / step):
        raise ValueError(f"{name} = {step:g} makes the times infinite over {points} points: "
                         "give a step whose times are finite float64 numbers")
    return step


def _node_constants(c: Any, count: int, n: int, g_label: str) -> Tensor:
    """Node constants ``[G·n, k]``."""
    if c is None:
        return torch.zeros(count * n, 0, dtype=torch.float64)
    x = _floats("c", c)
    expected = (f"[n, k] = [{n}, k] or [{g_label}, n, k] = [{count}, {n}, k]"
                + (f" or [{g_label}, k] = [{count}, k]" if n == 1 else ""))
    if x.dim() == 2 and x.shape[0] == n:
        return x.repeat(count, 1)
    if x.dim() == 2 and n == 1 and x.shape[0] == count:
        return x
    if x.dim() == 3 and x.shape[:2] == (count, n):
        return x.reshape(count * n, -1)
    raise ValueError(f"c must be {expected}, got shape {tuple(x.shape)}")


def _edges(edge_index: Any, edge_attr: Any, count: int, n: int
           ) -> tuple[Tensor, Tensor | None]:
    """``edge_index [2, G·E]`` (graph after graph) and ``edge_attr [G·E, a]``."""
    if edge_index is None:
        local = (fully_connected([n]) if n > 1 else torch.zeros(2, 0, dtype=torch.long))
    else:
        array = _numpy("edge_index", edge_index)
        if array.dtype.kind not in "iu":
            raise ValueError(f"edge_index must hold integer particle numbers, got dtype "
                             f"{array.dtype}")
        local = torch.as_tensor(array, dtype=torch.long)
        if local.dim() != 2 or local.shape[0] != 2:
            raise ValueError(f"edge_index must be [2, E] (senders, receivers), got shape "
                             f"{tuple(local.shape)}")
        if local.numel() and (local.min() < 0 or local.max() >= n):
            raise ValueError(f"edge_index must number the particles of one graph, 0 .. "
                             f"{n - 1}, got values from {int(local.min())} to "
                             f"{int(local.max())}")
    e = local.shape[1]
    offsets = torch.arange(count, dtype=torch.long) * n
    edges = (local[:, None, :] + offsets[None, :, None]).reshape(2, count * e)
    if edge_attr is None:
        return edges, None
    attrs = _floats("edge_attr", edge_attr)
    if attrs.dim() != 2 or attrs.shape[0] != e:
        raise ValueError(f"edge_attr must be [E, a] = [{e}, a] (one row per edge of "
                         f"edge_index), got shape {tuple(attrs.shape)}")
    return edges, attrs.repeat(count, 1)


def _box(box: Any, count: int, d: int, g_label: str) -> Tensor | None:
    """Periodic box lengths ``[G, d]`` (``None``: open boundaries)."""
    if box is None:
        return None
    x = _floats("box", box)
    if x.shape == (d,):
        x = x.repeat(count, 1)
    elif x.shape != (count, d):
        raise ValueError(f"box must be lengths [d] = [{d}] (every graph) or [{g_label}, d] = "
                         f"[{count}, {d}] (one box per graph), got shape {tuple(x.shape)}")
    if not bool((x > 0).all()):
        raise ValueError(f"box lengths must be > 0, got {float(x.min()):g}")
    return x


def _radius_edges(first: Tensor, edge_index: Any, edge_attr: Any, cutoff: float,
                  sizes: list[int], box: Tensor | None) -> Tensor:
    """Edges ``[2, G·E_g]`` of the pairs closer than ``cutoff`` in each graph's first
    state ``first [G·n, d]`` (minimum image in ``box [G, d]``)."""
    if edge_index is not None:
        raise ValueError("give edge_index or cutoff (radius edges), not both")
    if edge_attr is not None:
        raise ValueError("edge_attr needs edge_index: the radius edges of cutoff differ from "
                         "graph to graph")
    try:
        return radius_graph(first, ptr_from_sizes(sizes), cutoff, box=box)
    except ValueError as exc:  # a box below 2 * cutoff
        raise ValueError(f"cutoff {cutoff:g}: {exc}") from None


def _test_mask(test: Any, test_fraction: float | None, seed: int, count: int,
               g_label: str) -> tuple[Tensor, float | None]:
    """The held-out mask ``[G]`` and the fraction it was drawn with (``None``: given)."""
    if test is not None and test_fraction is not None:
        raise ValueError("give the test mask or test_fraction, not both")
    if test is None:
        fraction = checks.fraction(0.2 if test_fraction is None else test_fraction,
                                   "test_fraction", upper_open=True)
        seed = checks.nonnegative_int(seed, "seed")
        return random_test_mask(count, fraction, torch.Generator().manual_seed(seed)), fraction
    array = _numpy("test", test)
    if array.dtype.kind in "iu" and np.isin(array, (0, 1)).all():
        array = array.astype(bool)
    if array.dtype.kind != "b":
        raise ValueError(f"test must be a mask of booleans (or 0/1), got dtype {array.dtype}")
    if array.shape != (count,):
        raise ValueError(f"test must be a mask over the {count} "
                         f"{'states' if g_label == 'M' else 'trajectories'} "
                         f"[{g_label}] = [{count}], got shape {array.shape}")
    return torch.as_tensor(array.copy()), None
