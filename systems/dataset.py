"""Trajectory datasets: ground-truth states, true derivatives, constants and provenance.

A :class:`Dataset` holds ``G`` trajectories of graphs (possibly of different sizes)
sampled at the same times, nodes concatenated as in a PyG ``Batch``:

- ``t [T]``; ``q, p, dq, dp [T, N, d]`` (clean states and the analytic ``dH``);
- ``q_obs, p_obs [T, N, d]`` noisy observations when ``noise > 0`` (else ``None``);
- ``c [N, k]`` node constants, ``edge_index [2, E]``, ``edge_attr [E, a]`` or ``None``,
  ``ptr [G + 1]`` node offsets, ``test [G]`` the held-out split;
- ``box [G, d]`` periodic box lengths, one per trajectory, or ``None`` (open
  boundaries). Systems in a box whose neighbours change over time (Lennard-Jones)
  store the edges of the initial states only: rebuild a state's edges from its
  positions (:meth:`hogn.graph.GraphBatch.with_radius_edges`) before using them;
- ``meta``: system config, dt, seed, noise, integrator, sub-steps, resampling counts.

Your own arrays enter through :meth:`Dataset.from_arrays` (:mod:`systems.arrays`; the
fields are built by :mod:`systems.array_fields`, which imports no dataset class):
states ``[M, d]`` or ``[M, n, d]`` become ``M`` trajectories of one point (``T = 1``,
``meta["dt"]`` is ``None``: they have no time order), trajectories ``[G, T, n, d]``
keep their times; ``meta["source"] = "arrays"``, ``meta["layout"]`` and
``meta["derivatives"]`` (``"given"`` or how they were estimated) say where they came
from, and the system's name is the caller's label. Molecular-dynamics frames of ASE
enter through :meth:`Dataset.from_ase` (:mod:`systems.ase_data`, built by
:mod:`systems.ase_fields`; ``meta["source"] = "ase"``, in ASE's units, ``meta["units"]``).

Saved atomically as a checksummed ``hogn-dataset`` file (:mod:`hogn.io`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hogn.graph import GraphBatch, select_indices
from hogn.io import FileFormatError, load_archive, save_archive
from hogn.metrics import relative_drift
from systems.splits import random_test_mask as random_test_mask  # defined here before

__all__ = ["FORMAT", "VERSION", "Dataset"]

FORMAT = "hogn-dataset"
VERSION = 1
_NODE_SERIES = ("q", "p", "dq", "dp", "q_obs", "p_obs")


@dataclass
class Dataset:
    """Ground-truth trajectories of one system (see module docstring for shapes)."""

    t: Tensor
    q: Tensor
    p: Tensor
    dq: Tensor
    dp: Tensor
    c: Tensor
    edge_index: Tensor
    ptr: Tensor
    test: Tensor
    meta: dict[str, Any] = field(default_factory=dict)
    edge_attr: Tensor | None = None
    q_obs: Tensor | None = None
    p_obs: Tensor | None = None
    box: Tensor | None = None

    @classmethod
    def from_arrays(cls, q: Any, p: Any, **options: Any) -> Dataset:
        """A dataset of your own states ``[M, d]``, ``[M, n, d]`` or trajectories
        ``[G, T, n, d]``: see :func:`systems.arrays.from_arrays` for the options
        (derivatives, times, constants, edges, observations, test split, label)."""
        from systems.array_fields import fields_from_arrays

        return cls._checked(fields_from_arrays(q, p, **options))

    @classmethod
    def from_ase(cls, images: Any, **options: Any) -> Dataset:
        """A dataset of ASE frames (``ase.Atoms``: one trajectory, or a list of
        trajectories; needs ``pip install hogn[ase]``): see
        :func:`systems.ase_data.from_ase` for the options (``dt``, ``cutoff``, test
        split, label) and what each frame gives."""
        from systems.ase_fields import fields_from_ase

        return cls._checked(fields_from_ase(images, **options))

    @classmethod
    def _checked(cls, fields: dict[str, Any]) -> Dataset:
        """The dataset of a builder's ``fields`` (keyword arguments of the class), validated.

        Raises:
            ValueError: when the arrays do not fit together (the builders' own checks
                should leave nothing for this one).
        """
        data = cls(**fields)
        problem = data.validate()
        if problem:
            raise ValueError(f"the arrays do not fit together: {problem}")
        return data

    # ----------------------------------------------------------------- views
    def __len__(self) -> int:
        return self.ptr.numel() - 1

    @property
    def num_graphs(self) -> int:
        """Number of trajectories ``G``."""
        return len(self)

    @property
    def sizes(self) -> Tensor:
        """Particles per trajectory, ``[G]``."""
        return self.ptr[1:] - self.ptr[:-1]

    @property
    def dim(self) -> int:
        """Coordinates per particle ``d``."""
        return self.q.shape[-1]

    @property
    def dt(self) -> float | None:
        """Time between saved states (``None`` for states without time order, as
        :meth:`from_arrays` builds from ``[M, d]`` or ``[M, n, d]`` states)."""
        dt = self.meta.get("dt")
        return None if dt is None else float(dt)

    @property
    def particle_range(self) -> str:
        """Particles per graph as text: ``"4"`` when every graph has 4, else ``"4-6"``."""
        lo, hi = int(self.sizes.min()), int(self.sizes.max())
        return str(lo) if lo == hi else f"{lo}-{hi}"

    @property
    def derivatives(self) -> str:
        """Where ``dq, dp`` come from: ``"analytic"`` (generated ground truth),
        ``"given"`` (the user's arrays) or ``"estimated: ..."`` (finite differences)."""
        return str(self.meta.get("derivatives", "analytic"))

    @property
    def system_name(self) -> str | None:
        """The system's registry name or label as ``meta`` records it (``None``: none)."""
        system = self.meta.get("system")
        name = system.get("name") if isinstance(system, dict) else system
        return None if name is None else str(name)

    @property
    def system_config(self) -> dict[str, Any]:
        """Config that rebuilds the system with ``systems.get(**config)``.

        Raises:
            ValueError: when ``meta`` names no system (a dataset built by hand; build
                it with :meth:`from_arrays`, which records a label).
        """
        system = self.meta.get("system")
        if not isinstance(system, dict) or "name" not in system:
            raise ValueError("this dataset's meta names no system (expected meta['system'] "
                             "= {'name': ...}); build it with Dataset.from_arrays")
        return dict(system)

    @property
    def graph(self) -> GraphBatch:
        """The whole dataset as a graph batch with trajectories ``q, p [T, N, d]``."""
        return GraphBatch(self.q, self.p, self.c, self.edge_index, self.ptr, self.edge_attr,
                          self.box)

    def state(self, index: int = 0, observed: bool = False) -> GraphBatch:
        """All graphs at saved time ``index`` as a batch with ``q, p [N, d]``.

        Args:
            index: Time index into ``t``.
            observed: Use the noisy observations when the dataset has them.
        """
        q, p = (self.q_obs, self.p_obs) if observed and self.q_obs is not None else (self.q,
                                                                                     self.p)
        return GraphBatch(q[index], p[index], self.c, self.edge_index, self.ptr,
                          self.edge_attr, self.box)

    def select(self, graphs: Any) -> Dataset:
        """The trajectories with the given indices (or boolean mask), re-indexed."""
        graphs = torch.as_tensor(graphs)
        if graphs.dtype == torch.bool:
            graphs = graphs.nonzero().flatten()
        nodes, edges, ptr, edge_index = select_indices(self.ptr, self.edge_index, graphs)
        series = {name: None if getattr(self, name) is None
                  else getattr(self, name).index_select(-2, nodes.to(self.q.device))
                  for name in _NODE_SERIES}
        return replace(self, c=self.c[nodes], edge_index=edge_index, ptr=ptr,
                       edge_attr=None if self.edge_attr is None else self.edge_attr[edges],
                       test=self.test[graphs],
                       box=None if self.box is None else self.box[graphs.to(self.box.device)],
                       **series)

    def __getitem__(self, index: int | slice | Tensor) -> Dataset:
        if isinstance(index, int):
            if not -len(self) <= index < len(self):
                raise IndexError(f"trajectory {index} out of range for {len(self)}")
            index = [index % len(self)]
        elif isinstance(index, slice):
            index = list(range(len(self)))[index]
        return self.select(index)

    @property
    def train(self) -> Dataset:
        """The training trajectories."""
        return self.select(~self.test)

    @property
    def heldout(self) -> Dataset:
        """The held-out (test) trajectories."""
        return self.select(self.test)

    def snapshots(self, radius: float | None = None) -> Dataset:
        """Every saved state as a one-state graph of its own (``T = 1``, ``T · G`` graphs).

        For training on the derivative target when the edges change over time (short-
        range forces in a box): each state gets the edges of its own positions, the
        pairs closer than ``radius`` (minimum image with a box; cell lists, ``O(N)``),
        instead of the initial state's edges for the whole trajectory. The graphs are
        time-major (all graphs at ``t_0``, then at ``t_1``, ...); a state keeps its
        trajectory's ``test`` flag, box and constants; the observations, if any, come
        along; ``t`` keeps the first time only (a snapshot has no time step).

        Args:
            radius: Cut-off of the rebuilt edges (> 0); ``None`` keeps each
                trajectory's stored edges (and edge constants) for all its states.

        Returns:
            The snapshot dataset.
        """
        from hogn.graph import ptr_from_sizes, radius_graph

        steps, d = self.t.numel(), self.dim
        ptr = ptr_from_sizes(self.sizes.repeat(steps).tolist(), self.ptr.device)
        box = None if self.box is None else self.box.repeat(steps, 1)
        series = {name: None if getattr(self, name) is None
                  else getattr(self, name).reshape(1, -1, d) for name in _NODE_SERIES}
        if radius is None:
            n, edges = self.q.shape[1], self.edge_index.shape[1]
            shift = torch.arange(steps, device=self.edge_index.device).repeat_interleave(edges)
            edge_index = self.edge_index.repeat(1, steps) + n * shift
            edge_attr = None if self.edge_attr is None else self.edge_attr.repeat(steps, 1)
        else:
            edge_index = radius_graph(series["q"][0], ptr, radius, box=box)
            edge_attr = None
        return replace(self, t=self.t[:1], c=self.c.repeat(steps, 1), edge_index=edge_index,
                       ptr=ptr, edge_attr=edge_attr, test=self.test.repeat(steps), box=box,
                       meta={**self.meta, "snapshots": {"radius": radius, "of_points": steps}},
                       **series)

    # --------------------------------------------------------------- physics
    def system(self) -> Any:
        """Rebuild the :class:`systems.base.System` that generated this dataset.

        Raises:
            ValueError: when the data names no registered system (the label of a
                dataset built from arrays), or parameters it does not take.
        """
        import systems

        config = self.system_config
        origin = {"arrays": "arrays", "ase": "ASE frames"}.get(self.meta.get("source"))
        if origin is not None and config.get("name") not in systems.names():
            raise ValueError(f"{config.get('name')!r} labels a dataset built from {origin}, "
                             "not a registered system: its true energy is unknown")
        return systems.get(**config)

    def energy_problem(self) -> str | None:
        """Why the true energy cannot be evaluated here (``None`` when it can).

        A dataset built from arrays may name no registered system, or lack the node
        constants (masses, ...) that its system's Hamiltonian reads.
        """
        try:
            system = self.system()
        except (ValueError, KeyError, TypeError) as exc:
            return f"its system cannot be rebuilt ({exc})"
        try:
            with torch.no_grad():
                h = system.hamiltonian(self.q[:1], self.p[:1], self.graph)
        except (IndexError, ValueError, RuntimeError, KeyError, TypeError) as exc:
            return (f"{system.name}'s energy does not apply to it (node constants "
                    f"{tuple(self.c.shape)}: {exc.__class__.__name__}: {exc})")
        if tuple(h.shape) != (1, self.num_graphs):
            return f"{system.name}'s energy has shape {tuple(h.shape)}, not [1, {len(self)}]"
        return None

    def energy_function(self) -> Callable[[Tensor, Tensor], Tensor] | None:
        """The true Hamiltonian on this dataset's graphs, ``energy(q [T, N, d], p) -> [T, G]``
        (for states a model predicted: :func:`hogn.evaluate`'s ``energy``), or ``None``
        where it cannot be evaluated (:meth:`energy_problem` says why)."""
        if self.energy_problem() is not None:
            return None
        system, graph = self.system(), self.graph
        return lambda q, p: system.hamiltonian(q, p, graph)

    def energy_reference(self) -> str:
        """What a prediction's true energy is compared with (:func:`hogn.evaluate`):
        ``"truth"`` (the true energy curve) for a system whose energy changes by design
        (damped, driven), else ``"initial"`` (its drift from the initial energy)."""
        if self.energy_problem() is not None:
            return "initial"
        return "truth" if self.system().dissipative else "initial"

    def energy(self) -> Tensor:
        """True energy of every saved state, ``[T, G]``."""
        return self.system().hamiltonian(self.q, self.p, self.graph)

    def energy_drift(self) -> Tensor:
        """Largest relative energy change ``max_t |H(t) − H(0)| / |H(0)|`` per trajectory."""
        return relative_drift(self.energy())

    def summary(self) -> dict[str, Any]:
        """One row of facts: system, particles, dims, trajectories, energy range, drift
        (the energy numbers are ``nan`` where :meth:`energy_problem` says why)."""
        h = self.energy() if self.energy_problem() is None else torch.full(
            (self.t.numel(), len(self)), math.nan, dtype=self.q.dtype)
        return {
            "system": self.system_name,
            "particles": self.particle_range,
            "dims": self.dim,
            "trajectories": len(self),
            "points": self.t.numel(),
            "test": int(self.test.sum()),
            "energy_min": float(h[0].min()),
            "energy_max": float(h[0].max()),
            "max_rel_energy_drift": float(relative_drift(h).max()),
            "resampled": int(sum(self.meta.get("resampled", {}).values())),
        }

    # ---------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically as a checksummed ``hogn-dataset`` file."""
        arrays = {name: getattr(self, name) for name in
                  ("t", "c", "edge_index", "ptr", "test", *_NODE_SERIES, "edge_attr", "box")
                  if getattr(self, name) is not None}
        return save_archive(path, FORMAT, VERSION, self.meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str | None = None
             ) -> Dataset:
        """Read and validate a dataset file.

        Raises:
            FileFormatError: if the file is missing, corrupted, edited, or its arrays
                do not fit together; the message names the file.
        """
        meta, arrays, _ = load_archive(path, FORMAT, (VERSION,))
        missing = {"t", "q", "p", "dq", "dp", "c", "edge_index", "ptr", "test"} - set(arrays)
        if missing or "system" not in meta or "dt" not in meta:
            raise FileFormatError(f"{path}: dataset lacks {sorted(missing) or 'metadata'}")
        unknown = set(arrays) - {"t", "c", "edge_index", "ptr", "test", "edge_attr", "box",
                                 *_NODE_SERIES}
        if unknown:
            raise FileFormatError(f"{path}: dataset holds unknown arrays {sorted(unknown)}")
        data = cls(meta=meta, **arrays)
        problem = data.validate()
        if problem:
            raise FileFormatError(f"{path}: inconsistent dataset: {problem}")
        return data.to(device) if device is not None else data

    def validate(self) -> str | None:
        """Check that the arrays fit together; the problem as text, or ``None``."""
        t, q = self.t, self.q
        if t.dim() != 1 or q.dim() != 3 or q.shape[0] != t.numel():
            return f"t must be [T] and q [T, N, d], got {tuple(t.shape)} and {tuple(q.shape)}"
        for name in _NODE_SERIES:
            x = getattr(self, name)
            if x is not None and (x.shape != q.shape or x.dtype != q.dtype):
                return f"{name} must match q {tuple(q.shape)} {q.dtype}, got {tuple(x.shape)}"
        if not q.is_floating_point():
            return f"states must be floating point, got {q.dtype}"
        n = q.shape[1]
        if self.ptr.dim() != 1 or int(self.ptr[0]) != 0 or int(self.ptr[-1]) != n or (
                self.ptr.diff() < 1).any():
            return f"ptr must rise from 0 to N={n}"
        if self.c.shape[0] != n:
            return f"c must have {n} rows, got {tuple(self.c.shape)}"
        if self.edge_index.numel() and (self.edge_index.min() < 0 or self.edge_index.max() >= n):
            return "edge_index points outside the nodes"
        if self.edge_attr is not None and self.edge_attr.shape[0] != self.edge_index.shape[-1]:
            return f"edge_attr must have one row per edge ({self.edge_index.shape[-1]})"
        if self.test.dtype != torch.bool or self.test.shape != (len(self),):
            return f"test must be a bool mask over {len(self)} trajectories"
        box = self.box
        if box is not None and (box.shape != (len(self), q.shape[-1]) or not box.is_floating_point()
                                or not bool((torch.isfinite(box) & (box > 0)).all())):
            return (f"box must hold finite lengths > 0, [G, d] = [{len(self)}, {q.shape[-1]}], "
                    f"got {tuple(box.shape)} {box.dtype}")
        return None

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
           ) -> Dataset:
        """Move to ``device``; cast floating arrays to ``dtype`` when given."""
        def mv(x: Tensor | None) -> Tensor | None:
            if x is None:
                return None
            return x.to(device=device, dtype=dtype if x.is_floating_point() else None)
        changes = {f: mv(getattr(self, f)) for f in
                   ("t", "c", "edge_index", "ptr", "test", "edge_attr", "box", *_NODE_SERIES)}
        return replace(self, **changes)

    def __repr__(self) -> str:
        name = self.system_name
        if self.dt is None:  # states without time order
            head = f"states={len(self)}"
            tail = ""
        else:
            head = f"trajectories={len(self)}, points={self.t.numel()}"
            tail = f", dt={self.dt:g}"
        told = self.derivatives
        said = f", derivatives {told.split(':')[0]}" if told != "analytic" else ""
        return (f"Dataset({name}, {head}, particles={self.particle_range}, dims={self.dim}{tail}"
                f"{said})")

