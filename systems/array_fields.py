"""The fields of a dataset built from a user's arrays: what
:func:`systems.arrays.from_arrays` and :meth:`systems.dataset.Dataset.from_arrays` make a
:class:`~systems.dataset.Dataset` of (the layouts, options and checks are described in
:mod:`systems.arrays`).

This module knows no dataset class: it returns the keyword arguments of
:class:`~systems.dataset.Dataset`, so that ``Dataset.from_arrays`` builds on it, and
:mod:`systems.arrays` (the public functions, which return a ``Dataset``) builds on
``Dataset``: the imports go one way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hogn import checks
from hogn.graph import fully_connected, ptr_from_sizes, radius_graph
from systems.splits import random_test_mask

__all__ = ["DEFAULT_LABEL", "fields_from_arrays"]

DEFAULT_LABEL = "user"
"""System label of a dataset built from arrays when the caller names none."""

_ESTIMATED = "estimated: second-order central differences in time (torch.gradient)"
_ESTIMATED_FIRST = "estimated: first-order differences in time (two points)"


def fields_from_arrays(q: Any, p: Any, *, dq: Any = None, dp: Any = None, t: Any = None,
                       dt: float | None = None, c: Any = None, edge_index: Any = None,
                       edge_attr: Any = None, q_obs: Any = None, p_obs: Any = None,
                       test: Any = None, test_fraction: float | None = None, seed: int = 0,
                       system: str = DEFAULT_LABEL, params: Mapping[str, Any] | None = None,
                       box: Any = None, cutoff: float | None = None) -> dict[str, Any]:
    """The :class:`~systems.dataset.Dataset` fields of states or trajectories.

    Takes the arguments of :func:`systems.arrays.from_arrays` (see there) and checks
    them, but builds no dataset: ``Dataset(**fields_from_arrays(q, p, ...))`` is the
    dataset (:meth:`~systems.dataset.Dataset.from_arrays` also validates it).

    Returns:
        The keyword arguments of :class:`~systems.dataset.Dataset`: ``t [T]``;
        ``q, p, dq, dp [T, G·n, d]`` float64 (``T = 1`` for states); ``q_obs, p_obs``
        (the shape of ``q``) or ``None``; ``c [G·n, k]``; ``edge_index [2, E]``;
        ``edge_attr [E, a]`` or ``None``; ``ptr [G + 1]``; ``test [G]`` bool;
        ``box [G, d]`` or ``None``; ``meta`` (a new dict, the caller's to extend).

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

    return {"t": times, "q": flat(arrays["q"]), "p": flat(arrays["p"]),
            "dq": flat(arrays["dq"]), "dp": flat(arrays["dp"]), "c": nodes,
            "edge_index": edges, "ptr": ptr_from_sizes(sizes), "test": mask, "meta": meta,
            "edge_attr": attrs, "q_obs": flat(arrays["q_obs"]), "p_obs": flat(arrays["p_obs"]),
            "box": boxes}


# ------------------------------------------------------------------------ helpers
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
        pairs = float(count) * n * (n - 1)
        try:  # the edges of every graph and their copy while batching
            checks.check_memory(2 * 16.0 * pairs,
                                f"a complete graph on each of {count} graph(s) of {n} "
                                f"particles ({pairs:.3g} edges; give cutoff= for edges "
                                "within a radius, or edge_index=)")
        except checks.CheckError as exc:
            raise ValueError(str(exc)) from None
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
