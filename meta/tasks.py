"""Meta-learning tasks: few-shot regression of the vector field of one trajectory.

A *task* is one trajectory of one system. Its phase-space points ``(q, p)`` at the
saved times, with the true time derivatives ``(dq, dp)`` as targets, are split into

- ``support``: ``K`` points (``shots``, default 50) for the inner (adaptation) loop;
- ``query``: held-out points of the same trajectory for the outer (meta) loss.

Each point is one small graph, so ``M`` points of a trajectory of ``n`` particles are
one :class:`hogn.graph.GraphBatch` of ``M`` graphs of ``n`` nodes (:class:`Points`).

Two node layouts:

- ``"graph"`` (graph models, e.g. HOGN): every point keeps its system's own graph
  (its ``n`` nodes, edges and edge constants), so systems of any size share one
  network.
- ``"padded"`` (fixed-size models, HNN and MLP, which see a flat vector of
  ``n_particles`` particles): every system is put in one shared layout of
  ``n_particles`` particles (default: the largest count among the datasets, 3 for the
  six systems of the meta-learning paper) by appending *padding particles* after the
  real ones: zero mass (all node constants zero), zero position and momentum, and
  no edges. Their targets are zero and :attr:`Points.mask` marks them so that the loss
  (:func:`meta.algorithms.task_loss`) averages over real particles only: a padding
  particle never adds to the loss, whatever the model predicts for it. The input
  slots of the padding particles are constant (zeros), so the network can learn to
  ignore them; in a rollout their derivatives are zeroed so they stay at zero
  (:func:`meta.evaluate.adapt_and_evaluate`). For a system that already has
  ``n_particles`` particles the padded layout is the graph layout.

All datasets of a :class:`TaskSampler` must share the coordinate dimension ``d``, the
number of node constants ``k`` and the number of edge constants ``a`` (the shared node
layout of DESIGN.md: the one-degree-of-freedom systems embedded in ``d = 2``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from hogn.graph import GraphBatch

__all__ = ["LAYOUTS", "SPLITS", "Points", "Task", "TaskSampler", "split_times",
           "trajectory_points"]

LAYOUTS = ("graph", "padded")
SPLITS = ("train", "test", "all")


@dataclass
class Points:
    """``M`` phase-space points of one trajectory with their true time derivatives.

    Attributes:
        graph: ``M`` graphs of ``n`` nodes each: ``q, p [M·n, d]``, ``c [M·n, k]``,
            ``edge_index [2, M·E]``, ``ptr [M + 1]``, ``edge_attr [M·E, a]`` or ``None``.
        dq: True ``dq/dt``, ``[M·n, d]`` (zero at padding particles).
        dp: True ``dp/dt``, ``[M·n, d]`` (zero at padding particles).
        mask: ``[M·n]`` bool, ``True`` at real particles; ``None`` when there is no
            padding (every particle is real).
        times: Time indices of the points in their trajectory, ``[M]`` (or ``None``).
    """

    graph: GraphBatch
    dq: Tensor
    dp: Tensor
    mask: Tensor | None = None
    times: Tensor | None = None

    @property
    def num_points(self) -> int:
        """Number of points ``M``."""
        return self.graph.num_graphs

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
           ) -> Points:
        """Move to ``device``; cast floating fields to ``dtype`` when given."""
        def mv(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)
        return Points(self.graph.to(device, dtype), mv(self.dq), mv(self.dp), mv(self.mask),
                      self.times)


@dataclass
class Task:
    """One task: support and query points of one trajectory of one system.

    Attributes:
        system: Name of the system (the key of its dataset in the sampler).
        trajectory: Index of the trajectory in that dataset.
        support: ``K`` points for the inner loop.
        query: Held-out points of the same trajectory for the outer loss.
    """

    system: str
    trajectory: int
    support: Points
    query: Points

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
           ) -> Task:
        """Move to ``device``; cast floating fields to ``dtype`` when given."""
        return Task(self.system, self.trajectory, self.support.to(device, dtype),
                    self.query.to(device, dtype))


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of: {', '.join(LAYOUTS)}")


def _positive_int(name: str, value: object, low: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def split_times(num_times: int, shots: int, query: int | None,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Draw disjoint support and query time indices of one trajectory.

    Args:
        num_times: Saved points of the trajectory ``T``.
        shots: Support points ``K``.
        query: Query points; ``None`` takes all ``T − K`` remaining points.
        generator: Random generator (for seeded draws).

    Returns:
        ``(support [K], query [Q])`` time indices, each sorted.

    Raises:
        ValueError: if the trajectory has fewer than ``K + max(query, 1)`` points.
    """
    _positive_int("shots", shots)
    if query is not None:
        _positive_int("query", query)
    need = shots + (1 if query is None else query)
    if num_times < need:
        raise ValueError(f"a trajectory of {num_times} points cannot give {shots} support "
                         f"and {'>= 1' if query is None else query} query points")
    order = torch.randperm(num_times, generator=generator)
    rest = order[shots:] if query is None else order[shots:shots + query]
    return order[:shots].sort().values, rest.sort().values


def trajectory_points(q: Tensor, p: Tensor, dq: Tensor, dp: Tensor, c: Tensor,
                      edge_index: Tensor, times: Tensor, edge_attr: Tensor | None = None,
                      n_particles: int | None = None) -> Points:
    """The points at ``times`` of one trajectory, as a batch of graphs.

    Args:
        q: Positions of the trajectory, ``[T, n, d]`` (and ``p``, ``dq``, ``dp`` alike).
        p: Momenta ``[T, n, d]``.
        dq: True ``dq/dt`` ``[T, n, d]``.
        dp: True ``dp/dt`` ``[T, n, d]``.
        c: Node constants ``[n, k]``.
        edge_index: Edges of the trajectory's graph, local node indices ``[2, E]``.
        times: Time indices ``[M]``.
        edge_attr: Edge constants ``[E, a]`` or ``None``.
        n_particles: Pad every graph to this many particles (see module docstring);
            ``None`` keeps the ``n`` real ones (graph layout).

    Returns:
        ``M`` points (:class:`Points`), each a graph of ``n`` (or ``n_particles``) nodes.

    Raises:
        ValueError: if ``n_particles`` is smaller than ``n``.
    """
    n, d = q.shape[-2], q.shape[-1]
    m = times.numel()
    size = n if n_particles is None else n_particles
    if size < n:
        raise ValueError(f"cannot pad a graph of {n} particles to {size}")
    series = [s[times] for s in (q, p, dq, dp)]  # [M, n, d]
    cs = c
    mask = None
    if size > n:
        pad = q.new_zeros(m, size - n, d)
        series = [torch.cat([s, pad], 1) for s in series]
        cs = torch.cat([c, c.new_zeros(size - n, c.shape[1])])
        mask = torch.cat([torch.ones(n, dtype=torch.bool, device=q.device),
                          torch.zeros(size - n, dtype=torch.bool, device=q.device)]).repeat(m)
    qs, ps, dqs, dps = (s.reshape(m * size, d) for s in series)
    offsets = torch.arange(m, device=edge_index.device) * size
    edges = (edge_index[:, None, :] + offsets[None, :, None]).reshape(2, -1)
    ptr = torch.arange(m + 1, device=edge_index.device) * size
    attr = None if edge_attr is None else edge_attr.repeat(m, 1)
    graph = GraphBatch(qs, ps, cs.repeat(m, 1), edges, ptr, attr)
    return Points(graph, dqs, dps, mask, times)


class _Trajectories:
    """Per-trajectory slices of one dataset (nodes and edges grouped by graph)."""

    def __init__(self, name: str, data: object, split: str) -> None:
        for attr in ("t", "q", "p", "dq", "dp", "c", "edge_index", "ptr", "test"):
            if getattr(data, attr, None) is None:
                raise ValueError(f"dataset {name!r} has no {attr!r}; expected a "
                                 "systems.Dataset")
        self.name = name
        self.data = data
        test = data.test.bool().cpu()
        keep = {"train": ~test, "test": test, "all": torch.ones_like(test)}[split]
        self.index = keep.nonzero().flatten().tolist()
        if not self.index:
            raise ValueError(f"dataset {name!r} has no {split!r} trajectories")
        ptr = data.ptr.cpu()
        self.ptr = ptr.tolist()
        counts = torch.bincount(
            torch.repeat_interleave(torch.arange(ptr.numel() - 1), ptr[1:] - ptr[:-1])[
                data.edge_index[0].cpu()], minlength=ptr.numel() - 1)
        self.eptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).tolist()
        self.num_times = data.q.shape[0]
        self.max_size = int((ptr[1:] - ptr[:-1]).max())

    def points(self, g: int, times: Tensor, n_particles: int | None) -> Points:
        a, b = self.ptr[g], self.ptr[g + 1]
        ea, eb = self.eptr[g], self.eptr[g + 1]
        d = self.data
        attr = None if d.edge_attr is None else d.edge_attr[ea:eb]
        return trajectory_points(d.q[:, a:b], d.p[:, a:b], d.dq[:, a:b], d.dp[:, a:b],
                                 d.c[a:b], d.edge_index[:, ea:eb] - a, times.to(d.q.device),
                                 attr, n_particles)


class TaskSampler:
    """Seeded sampler of meta-batches of tasks over the datasets of several systems.

    A task is drawn by picking a system uniformly (so every system is equally likely
    whatever its dataset size), then one of its trajectories uniformly, then ``shots``
    support and ``query`` query times of that trajectory (disjoint, uniformly).

    Args:
        datasets: System name → ``systems.Dataset`` (a single dataset is named
            ``"system"``).
        shots: Support points per task ``K``.
        query: Query points per task; ``None``: all the trajectory's other points.
        layout: ``"graph"`` (graph models) or ``"padded"`` (fixed-size models; see the
            module docstring).
        n_particles: Particles of the padded layout (default: the largest graph among
            the datasets); ignored by the graph layout.
        split: Trajectories to draw from: ``"train"``, ``"test"`` (the datasets'
            held-out split) or ``"all"``.
        seed: Seed of the draws.
        device: Device of the tasks (default: the datasets').
        dtype: Floating dtype of the tasks (default: the datasets', usually float64;
            never changed silently: pass the model's dtype).

    Raises:
        ValueError: for no datasets, an unknown layout or split, datasets that do not
            share ``d``, ``k`` and ``a``, trajectories too short for ``shots + query``
            points, or a padded size smaller than a dataset's graphs.
    """

    def __init__(self, datasets: Mapping[str, object] | object, shots: int = 50,
                 query: int | None = None, layout: str = "graph",
                 n_particles: int | None = None, split: str = "train", seed: int = 0,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None
                 ) -> None:
        if not isinstance(datasets, Mapping):
            datasets = {"system": datasets}
        if not datasets:
            raise ValueError("TaskSampler needs at least one dataset")
        _check_layout(layout)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")
        _positive_int("shots", shots)
        if query is not None:
            _positive_int("query", query)
        self.shots, self.query, self.layout, self.split = shots, query, layout, split
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self._trajectories: dict[str, _Trajectories] = {}
        shapes = {}
        for name, data in datasets.items():
            if dtype is not None or device is not None:
                data = data.to(device, dtype)
            traj = _Trajectories(name, data, split)
            split_times(traj.num_times, shots, query)  # raises if too short
            a = 0 if data.edge_attr is None else data.edge_attr.shape[-1]
            shapes[name] = (data.q.shape[-1], data.c.shape[-1], a)
            self._trajectories[name] = traj
        if len(set(shapes.values())) > 1:
            listing = "; ".join(f"{n}: d={s[0]}, k={s[1]}, a={s[2]}" for n, s in shapes.items())
            raise ValueError("datasets must share the node layout (coordinates d, node "
                             f"constants k, edge constants a); got {listing}. Embed 1-DOF "
                             "systems with embed_dim (systems.get(name, embed_dim=2))")
        self.dim, self.node_constants, self.edge_features = next(iter(shapes.values()))
        largest = max(t.max_size for t in self._trajectories.values())
        self.n_particles: int | None = None
        if layout == "padded":
            self.n_particles = largest if n_particles is None else _positive_int(
                "n_particles", n_particles)
            if self.n_particles < largest:
                too_big = [n for n, t in self._trajectories.items()
                           if t.max_size > self.n_particles]
                raise ValueError(f"padded layout of {self.n_particles} particles is smaller "
                                 f"than the graphs of {', '.join(too_big)} ({largest})")

    @property
    def systems(self) -> list[str]:
        """Names of the systems, in the order given."""
        return list(self._trajectories)

    def trajectories(self, system: str) -> list[int]:
        """Dataset indices of the trajectories a system's tasks are drawn from."""
        return list(self._traj(system).index)

    def _traj(self, system: str) -> _Trajectories:
        try:
            return self._trajectories[system]
        except KeyError:
            raise ValueError(f"unknown system {system!r}; expected one of: "
                             f"{', '.join(self.systems)}") from None

    def task(self, system: str, trajectory: int, generator: torch.Generator | None = None
             ) -> Task:
        """The task of one given trajectory (support/query times drawn at random).

        Args:
            system: System name.
            trajectory: Trajectory index in that system's dataset (any split).
            generator: Random generator of the times (default: the sampler's).
        """
        traj = self._traj(system)
        if not 0 <= trajectory < len(traj.ptr) - 1:
            raise ValueError(f"trajectory {trajectory} out of range for {system!r} "
                             f"({len(traj.ptr) - 1} trajectories)")
        gen = self.generator if generator is None else generator
        support, query = split_times(traj.num_times, self.shots, self.query, gen)
        return Task(system, trajectory, traj.points(trajectory, support, self.n_particles),
                    traj.points(trajectory, query, self.n_particles))

    def sample(self, batch: int, systems: Sequence[str] | None = None) -> list[Task]:
        """A meta-batch of tasks.

        Args:
            batch: Number of tasks.
            systems: Restrict the draw to these systems (default: all).

        Returns:
            ``batch`` tasks, each of a (system, trajectory) drawn as in the class doc.
        """
        _positive_int("batch", batch)
        names = self.systems if systems is None else list(systems)
        for name in names:
            self._traj(name)
        picks = torch.randint(len(names), (batch,), generator=self.generator).tolist()
        tasks = []
        for s in picks:
            traj = self._trajectories[names[s]]
            j = int(torch.randint(len(traj.index), (1,), generator=self.generator))
            tasks.append(self.task(names[s], traj.index[j]))
        return tasks

    def __repr__(self) -> str:
        return (f"TaskSampler(systems={self.systems}, shots={self.shots}, query={self.query}, "
                f"layout={self.layout!r}, n_particles={self.n_particles}, "
                f"split={self.split!r}, seed={self.seed})")
