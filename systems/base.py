"""The :class:`System` base class: an analytic Hamiltonian, its parameters, an
initial-condition sampler, and batched float64 ground-truth simulation.

Shapes: a batch of ``G`` graphs with ``N`` nodes in all holds ``q, p [N, d]`` (or
``[..., N, d]`` with leading time axes), node constants ``c [N, k]`` (mass first),
``edge_index [2, E]`` and node offsets ``ptr [G + 1]`` (see
:class:`hogn.graph.GraphBatch`). Every Hamiltonian returns ``H [..., G]``.

Systems with one degree of freedom per particle can be *embedded* in ``d = 2``
(``embed_dim=2``): the surplus coordinate is held at a constant (``surplus``) with
zero momentum; ``H`` ignores it, so its derivatives there vanish.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from hogn import checks, integrators
from hogn.graph import GraphBatch, fully_connected, ptr_from_sizes, segment_sum

__all__ = ["System", "node_sum", "pair_sum"]


def node_sum(e: Tensor, graph: GraphBatch) -> Tensor:
    """Sum per-node values ``e [..., N]`` to per-graph ``[..., G]``."""
    return segment_sum(e, graph.batch, graph.num_graphs, dim=-1)


def pair_sum(e: Tensor, graph: GraphBatch) -> Tensor:
    """Sum per-directed-edge values ``e [..., E]`` to per-graph ``[..., G]``, halved so
    that an undirected pair stored in both directions counts once."""
    return 0.5 * segment_sum(e, graph.edge_batch, graph.num_graphs, dim=-1)


class System:
    """A Hamiltonian particle system.

    Subclasses set the class attributes and implement :meth:`energy` (in native
    coordinates) and :meth:`_sample` (native initial states).

    Class attributes:
        name: Registry name.
        native_dim: Spatial dimensions per particle of the physical system.
        n_particles: Fixed particle count, or ``None`` when any ``N`` is allowed.
        defaults: Parameter names and default values.
        chaotic: Whether nearby trajectories diverge exponentially (affects tests).
        dissipative: Whether the dynamics lose energy by design (friction): then
            ``H`` is not conserved and energy-drift checks do not apply.
        separable: Whether the vector field splits as ``H = T(p) + V(q)`` does
            (``dq`` depends on ``p`` alone, ``dp`` on ``q`` alone): only then may the
            splitting integrators (leapfrog, yoshida4, symplectic_euler) step it.
        max_step: First trial step of the adaptive ground-truth integrator (a
            fixed-step ground truth's longest step).
        ground_truth_method: The method :meth:`trajectory` (and
            :func:`systems.generate`) use when none is named.
        max_energy_drift: The relative energy drift above which
            :func:`systems.generate` resamples a trajectory when no bound is named.
        description: One-line summary including the sampled energy/orbit range.
    """

    name: ClassVar[str] = ""
    native_dim: ClassVar[int] = 1
    n_particles: ClassVar[int | None] = 1
    defaults: ClassVar[dict[str, Any]] = {}
    chaotic: ClassVar[bool] = False
    dissipative: ClassVar[bool] = False
    separable: ClassVar[bool] = False
    max_step: ClassVar[float] = 0.05
    ground_truth_method: ClassVar[str] = "adaptive"
    max_energy_drift: ClassVar[float] = 1e-8
    description: ClassVar[str] = ""

    def __init__(self, embed_dim: int | None = None, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(f"{self.name}: unknown parameter(s) {unknown}; expected some of "
                             f"{sorted(self.defaults)} (and embed_dim)")
        numeric = [k for k, v in params.items() if isinstance(v, bool)
                   and isinstance(self.defaults.get(k), (int, float))
                   and not isinstance(self.defaults.get(k), bool)]
        if numeric:
            raise ValueError(f"{self.name}: parameter {numeric[0]} must be a number, got "
                             f"{params[numeric[0]]!r} (a bool is not a number)")
        self.params: dict[str, Any] = {**self.defaults, **params}
        if "dim" in self.defaults:  # any-dimension systems take their d as a parameter
            dim = self.params["dim"]
            if not isinstance(dim, int) or dim < 1:
                raise ValueError(f"{self.name}: dim must be a positive int, got {dim!r}")
            self.native_dim = dim
        if embed_dim is None:
            embed_dim = self.native_dim
        if not isinstance(embed_dim, int) or embed_dim < self.native_dim:
            raise ValueError(f"{self.name}: embed_dim must be an int >= {self.native_dim}, "
                             f"got {embed_dim!r}")
        self.embed_dim = embed_dim
        self._validate()

    # ----------------------------------------------------------------- description
    @property
    def dim(self) -> int:
        """Spatial dimensions per particle as stored (``embed_dim``)."""
        return self.embed_dim

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this system with :func:`systems.get`."""
        return {"name": self.name, "embed_dim": self.embed_dim, **self.params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args}, embed_dim={self.embed_dim})"

    def _validate(self) -> None:
        """Check parameter values; subclasses extend. Raises ``ValueError``."""
        for key in ("mass", "k", "g", "l", "l1", "l2", "G"):
            if key not in self.params:
                continue
            v = self.params[key]
            if key == "mass" and isinstance(v, (tuple, list)):
                self._positive_range(key)
            elif not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{self.name}: parameter {key} must be a positive finite "
                                 f"number, got {v!r}")

    def _positive_range(self, key: str, allow_zero: bool = False,
                        below: tuple[float, str] | None = None) -> tuple[float, float]:
        """Read a ``(lo, hi)`` parameter, checking ``0 < lo <= hi`` (or ``0 <= lo``), and
        with ``below=(limit, what)`` also ``hi < limit`` (the error names ``what``)."""
        value = self.params[key]
        try:
            lo, hi = (value, value) if isinstance(value, (int, float)) else tuple(value)
            ok = math.isfinite(lo) and math.isfinite(hi) and lo <= hi and (
                lo >= 0 if allow_zero else lo > 0)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"{self.name}: {key} must be a number or (lo, hi) with "
                             f"{bound} lo <= hi, got {value!r}")
        if below is not None and hi >= below[0]:
            raise ValueError(f"{self.name}: {key} must stay below {below[1]} ≈ "
                             f"{below[0]:.4f}, got {value!r}")
        return float(lo), float(hi)

    # ------------------------------------------------------------------- physics
    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """Hamiltonian in native coordinates.

        Args:
            q: Positions ``[..., N, native_dim]``.
            p: Momenta ``[..., N, native_dim]``.
            graph: Static graph (``c``, ``edge_index``, ``edge_attr``, ``ptr``).

        Returns:
            ``H [..., G]``.
        """
        raise NotImplementedError

    def hamiltonian(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """Hamiltonian of states stored in ``embed_dim`` coordinates.

        Args:
            q: Positions ``[..., N, d]``.
            p: Momenta ``[..., N, d]``.
            graph: Static graph.

        Returns:
            ``H [..., G]``.
        """
        nd = self.native_dim
        return self.energy(q[..., :nd], p[..., :nd], graph)

    def time_derivative(self, q: Tensor, p: Tensor, graph: GraphBatch,
                        create_graph: bool = False) -> tuple[Tensor, Tensor]:
        """Hamilton's equations by autograd: ``dq = dH/dp``, ``dp = -dH/dq``.

        Args:
            q: Positions ``[..., N, d]``.
            p: Momenta ``[..., N, d]``.
            graph: Static graph.
            create_graph: Keep the graph of the derivative (for higher derivatives).

        Returns:
            ``(dq, dp)``, each shaped like ``q``.
        """
        with torch.enable_grad():
            if not create_graph:
                q, p = q.detach(), p.detach()
            if not q.requires_grad:
                q = q.requires_grad_(True)
            if not p.requires_grad:
                p = p.requires_grad_(True)
            h = self.hamiltonian(q, p, graph).sum()
            dh_dq, dh_dp = torch.autograd.grad(h, (q, p), create_graph=create_graph,
                                               materialize_grads=True)
        return dh_dp, -dh_dq

    def analytic_field(self, q: Tensor, p: Tensor, graph: GraphBatch
                       ) -> tuple[Tensor, Tensor] | None:
        """Hand-derived ``(dq, dp)``, the fast path of simulation, or ``None``.

        Tests hold it equal to :meth:`time_derivative` (autograd of
        :meth:`hamiltonian`, which stays the definition).

        Args:
            q: Positions ``[..., N, d]``.
            p: Momenta ``[..., N, d]``.
            graph: Static graph.

        Returns:
            ``(dq, dp)``, each shaped like ``q``, or ``None`` without a hand-derived
            field.
        """
        field = self.analytic_vector_field(graph)
        return None if field is None else field(q, p)

    def analytic_vector_field(self, graph: GraphBatch) -> integrators.VectorField | None:
        """The hand-derived field ``f(q, p) -> (dq, dp)`` of the static ``graph``, with
        its constants (inverse masses, coupling products, edge lists) computed once
        here rather than at every evaluation; ``None`` when the system has none.

        Subclasses override :meth:`_native_field`; this wraps it for the embedding.
        ``f`` takes ``q, p [..., N, d]`` (leading time axes allowed); its outputs are
        to be read, not written: ``dq`` may be ``p`` itself (unit masses).
        """
        field = self._native_field(graph)
        if field is None:
            return None
        surplus = self.embed_dim - self.native_dim
        if surplus == 0:
            return field
        nd = self.native_dim

        def embedded(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
            dq, dp = field(q[..., :nd], p[..., :nd])  # H ignores the surplus coordinates
            return (torch.nn.functional.pad(dq, (0, surplus)),
                    torch.nn.functional.pad(dp, (0, surplus)))

        return embedded

    def _native_field(self, graph: GraphBatch) -> integrators.VectorField | None:
        """Hand-derived ``f(q, p) -> (dq, dp)`` in native coordinates
        (``q, p [..., N, native_dim]``), or ``None`` (the base class: autograd only)."""
        return None

    def vector_field(self, graph: GraphBatch, analytic: bool = True
                     ) -> integrators.VectorField:
        """``f(q, p) -> (dq, dp)`` for the static ``graph``, for the integrators.

        Args:
            graph: Static graph.
            analytic: Use :meth:`analytic_vector_field` where the system has one (it
                is checked against autograd by the tests); else autograd of ``H``.
        """
        field = self.analytic_vector_field(graph) if analytic else None
        if field is not None:
            return field
        return lambda q, p: self.time_derivative(q, p, graph)

    # ---------------------------------------------------------------- sampling
    def default_edges(self, sizes: list[int], generator: torch.Generator
                      ) -> tuple[Tensor, Tensor | None]:
        """Edges (and edge constants) of graphs with ``sizes`` nodes: complete graphs."""
        return fully_connected(sizes), None

    def _sample(self, sizes: list[int], generator: torch.Generator
                ) -> tuple[Tensor, Tensor, Tensor]:
        """Native initial states: ``q, p [N, native_dim]`` and ``c [N, 1]`` (float64)."""
        raise NotImplementedError

    def _sample_graph(self, sizes: list[int], generator: torch.Generator
                      ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """Native ``q, p [N, native_dim]``, ``c [N, k]``, ``edge_index [2, E]`` and
        ``edge_attr [E, a]`` or ``None``: :meth:`_sample` then :meth:`default_edges`.
        Systems whose edge constants are drawn with the states override this."""
        q, p, c = self._sample(sizes, generator)
        edge_index, edge_attr = self.default_edges(sizes, generator)
        return q, p, c, edge_index, edge_attr

    def _sizes(self, n: int, n_particles: int | tuple[int, int] | None,
               generator: torch.Generator) -> list[int]:
        if self.n_particles is not None:
            if n_particles not in (None, self.n_particles):
                raise ValueError(f"{self.name} has exactly {self.n_particles} particle(s), "
                                 f"got n_particles={n_particles!r}")
            return [self.n_particles] * n
        if n_particles is None:
            raise ValueError(f"{self.name} needs n_particles (an int or a (min, max) range)")
        lo, hi = (n_particles, n_particles) if isinstance(n_particles, int) else n_particles
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
            raise ValueError(f"n_particles must be a positive int or (min, max) range, "
                             f"got {n_particles!r}")
        return torch.randint(lo, hi + 1, (n,), generator=generator).tolist()

    def sample(self, n: int, seed: int | torch.Generator = 0,
               n_particles: int | tuple[int, int] | None = None,
               dtype: torch.dtype = torch.float64,
               device: torch.device | str | None = None) -> GraphBatch:
        """Draw ``n`` initial states as one batch of graphs.

        Args:
            n: Number of graphs (trajectories).
            seed: Seed or generator (CPU); the same seed gives the same states.
            n_particles: Particles per graph for any-``N`` systems: an int, or
                ``(min, max)`` to draw each graph's size uniformly.
            dtype: Floating dtype of the states.
            device: Device of the result.

        Returns:
            A :class:`GraphBatch` with ``q, p [N, d]``.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"number of samples must be a positive int, got {n!r}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be floating point, got {dtype}")
        gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
        sizes = self._sizes(n, n_particles, gen)
        q, p, c, edge_index, edge_attr = self._sample_graph(sizes, gen)
        q, p = self.embed(q, p, len(sizes))
        graph = GraphBatch(q, p, c, edge_index, ptr_from_sizes(sizes), edge_attr)
        return graph.to(device, dtype)

    def surplus_values(self, n_graphs: int) -> Tensor:
        """Constant values of the surplus coordinates, ``[N, embed_dim - native_dim]``."""
        n = self.n_particles or 1
        return torch.zeros(n_graphs * n, self.embed_dim - self.native_dim, dtype=torch.float64)

    def embed(self, q: Tensor, p: Tensor, n_graphs: int) -> tuple[Tensor, Tensor]:
        """Pad native ``q, p [N, native_dim]`` to ``[N, embed_dim]``."""
        if self.embed_dim == self.native_dim:
            return q, p
        extra = self.surplus_values(n_graphs).to(q)
        return torch.cat([q, extra], -1), torch.cat([p, torch.zeros_like(extra)], -1)

    # -------------------------------------------------------------- simulation
    def check_graph(self, graph: GraphBatch) -> None:
        """Validate a state before simulation. Raises ``ValueError`` naming the problem."""
        integrators.check_state(graph.q, graph.p)
        if graph.q.dim() != 2 or graph.q.shape[-1] != self.embed_dim:
            raise ValueError(f"{self.name}: q and p must be [N, {self.embed_dim}], got "
                             f"{tuple(graph.q.shape)}")
        if self.n_particles is not None and (graph.sizes != self.n_particles).any():
            raise ValueError(f"{self.name}: every graph must have {self.n_particles} "
                             f"particle(s), got sizes {graph.sizes.unique().tolist()}")
        if graph.c.dtype != graph.q.dtype or not torch.isfinite(graph.c).all():
            raise ValueError(f"{self.name}: node constants c must be finite and of dtype "
                             f"{graph.q.dtype}")
        if (graph.c[:, 0] <= 0).any():
            raise ValueError(f"{self.name}: masses (c[:, 0]) must be positive, got min "
                             f"{graph.c[:, 0].min().item():.3g}")

    def trajectory(self, graph: GraphBatch, dt: float, steps: int, method: str | None = None,
                   substeps: int = 1, rtol: float = 1e-12, atol: float = 1e-12,
                   stop: bool = False, progress: bool = False
                   ) -> tuple[Tensor, Tensor, Tensor]:
        """Integrate a batch of initial states with the true Hamiltonian.

        Args:
            graph: Initial states, ``q, p [N, d]`` (float64 for ground truth).
            dt: Time between saved states (> 0).
            steps: Number of saved steps ``T``.
            method: ``"adaptive"`` (eighth-order Dormand–Prince with a step size per
                graph, see :func:`hogn.integrators.integrate_adaptive`) or any
                registered integrator name for fixed steps; ``None``: the system's
                :attr:`ground_truth_method` (``"adaptive"`` unless it says otherwise).
            substeps: Fixed-step methods: integrator steps per saved step.
            rtol: Adaptive method: relative local tolerance.
            atol: Adaptive method: absolute local tolerance.
            stop: Stop graphs that meet :meth:`stop_condition` (checked after every
                adaptive step; on saved states for fixed-step methods).
            progress: Show a progress bar.

        Returns:
            ``q [T + 1, N, d]``, ``p [T + 1, N, d]`` and the stopped mask ``[G]``
            (stopped graphs hold NaN after the stop when adaptive).

        Raises:
            ValueError: on a malformed state, non-positive masses or ``dt``, an
                unknown method, or a splitting method on a non-separable system.
        """
        method = self.ground_truth_method if method is None else method
        self.check_graph(graph)
        self._check_run(graph, dt, steps, substeps)
        rtol, atol = checks.tolerance(rtol, "rtol"), checks.nonnegative_float(atol, "atol")
        f = self.vector_field(graph)
        desc = self.name if progress else False
        check = self.stop_condition if stop else None
        if method == "adaptive":
            def restrict(ids: Tensor) -> tuple[integrators.VectorField, Any]:
                sub = graph.select(ids.cpu())
                test = None if check is None else (lambda q, p: check(q, p, sub))
                return self.vector_field(sub), test

            q, p, _, stopped = integrators.integrate_adaptive(
                f, graph.q, graph.p, dt, steps, graph.batch, graph.num_graphs, rtol=rtol,
                atol=atol, h0=min(dt, self.max_step), progress=desc,
                stop=None if check is None else (lambda q, p: check(q, p, graph)),
                restrict=restrict)
            return q, p, stopped
        if method not in integrators.names():
            raise ValueError(f"unknown method {method!r}; expected 'adaptive' or one of: "
                             f"{', '.join(integrators.names())}")
        q, p = integrators.integrate(f, graph.q, graph.p, dt, steps, method=method,
                                     substeps=substeps, progress=desc, separable=self.separable)
        stopped = torch.zeros(graph.num_graphs, dtype=torch.bool, device=q.device)
        if check is not None:
            stopped = check(q, p, graph).any(0)
        return q, p, stopped

    def _check_run(self, graph: GraphBatch, dt: Any, steps: Any, substeps: Any) -> None:
        """The rules every ground-truth run obeys: a float64 state, ``dt > 0`` finite,
        ``steps >= 0`` and ``substeps >= 1`` ints (bools are not numbers)."""
        if graph.q.dtype != torch.float64 or graph.p.dtype != torch.float64:
            raise ValueError(f"{self.name}: ground truth runs in float64, got a {graph.q.dtype} "
                             "state (cast it with graph.to(dtype=torch.float64))")
        checks.positive_float(dt, "dt")
        checks.nonnegative_int(steps, "steps")
        checks.positive_int(substeps, "substeps")

    def simulate(self, graph: GraphBatch, dt: float, steps: int, **options: Any) -> Any:
        """Simulate initial states into a :class:`~systems.dataset.Dataset`.

        Args:
            graph: Initial states (see :meth:`sample`).
            dt: Time between saved states.
            steps: Saved steps ``T``; the dataset holds ``T + 1`` points.
            **options: ``method``, ``substeps``, ``rtol``, ``atol``, ``progress`` of
                :meth:`trajectory` (no stopping: every trajectory is integrated).

        Returns:
            The dataset: states, true derivatives, constants; no noise, no test split.
        """
        from systems.dataset import Dataset

        q, p, _ = self.trajectory(graph, dt, steps, **options)
        traj = graph.replace(q=q, p=p)
        dq, dp = self.time_derivative(q, p, traj)
        meta = {"system": self.config(), "dt": float(dt), "steps": steps, "seed": None,
                "noise": 0.0, "method": options.get("method") or self.ground_truth_method,
                "resampled": {}}
        return Dataset(t=torch.arange(steps + 1, dtype=q.dtype, device=q.device) * dt,
                       q=q, p=p, dq=dq, dp=dp, c=graph.c, edge_index=graph.edge_index,
                       ptr=graph.ptr, edge_attr=graph.edge_attr, meta=meta, box=graph.box,
                       test=torch.zeros(graph.num_graphs, dtype=torch.bool,
                                        device=q.device))

    def stop_condition(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """States to abandon for a system-specific reason (close passes, escapes).

        Args:
            q: Positions ``[..., N, d]``.
            p: Momenta ``[..., N, d]``.
            graph: Static graph.

        Returns:
            Boolean ``[..., G]``; the base class stops nothing.
        """
        return torch.zeros((*q.shape[:-2], graph.num_graphs), dtype=torch.bool,
                           device=q.device)


def uniform(generator: torch.Generator, shape: tuple[int, ...] | int, lo: float, hi: float
            ) -> Tensor:
    """Float64 uniform samples in ``[lo, hi)`` from a CPU generator."""
    shape = (shape,) if isinstance(shape, int) else shape
    return lo + (hi - lo) * torch.rand(shape, generator=generator, dtype=torch.float64)


def constant_masses(sizes: list[int], mass: float | tuple[float, float],
                    generator: torch.Generator) -> Tensor:
    """Node constants ``c [N, 1]``: masses, fixed or drawn uniformly from a range."""
    n = sum(sizes)
    if isinstance(mass, (int, float)):
        return torch.full((n, 1), float(mass), dtype=torch.float64)
    return uniform(generator, (n, 1), *mass)

