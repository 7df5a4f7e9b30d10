"""Lennard-Jones particles in a periodic box: a short-range many-body system.

``H = Σ_i |p_i|²/2m + Σ_{i<j, r_ij < r_c} V_sf(r_ij)``, with ``r_ij`` the minimum-image
distance in the graph's periodic box (:attr:`hogn.graph.GraphBatch.box`) and

- ``V(r) = 4ε [(σ/r)¹² − (σ/r)⁶]``, the Lennard-Jones pair potential;
- ``V_sf(r) = V(r) − V(r_c) − (r − r_c) V'(r_c)`` for ``r < r_c``, ``0`` beyond: the
  *shifted-force* truncation. Both ``V_sf`` and the force ``−V_sf'`` reach zero at
  ``r_c``, so ``H`` is C¹ everywhere (continuous energy and forces: a symplectic
  integrator conserves it without the kicks a plain truncation or a shifted energy
  gives at each crossing of ``r_c``). The second derivative jumps by ``V''(r_c)``
  at ``r_c`` (about ``0.14 ε/σ²`` at the default ``r_c = 2.5σ``, ~1% of the
  well's curvature); a C² form (e.g. a polynomial switch) would also smooth the
  force's derivative, which matters for learned Hessians and high-order
  integrators, but changes the potential over a whole switching range; the
  shifted force is the standard MD choice and keeps ``V`` closest to
  Lennard-Jones.

Reduced units: lengths in ``σ``, energies in ``ε``, time in ``σ √(m/ε)``; the
parameters ``cutoff`` (``r_c/σ``), ``skin`` (``/σ``), ``density`` (``ρσ^d``) and
``temperature`` (``k_B T/ε``) are reduced. Defaults ``ρ = 0.5``, ``T = 1``: a dense
fluid, supercritical in 2-D (the 2-D critical temperature is ≈ 0.5) and a liquid-like
fluid near coexistence in 3-D (``T_c`` ≈ 1.1 for this truncation).

**Graphs, boxes and changing neighbours.** Every sampled graph has its own box
``L = σ (N/ρ)^(1/d)`` (a square/cube) in ``GraphBatch.box [G, d]``, and the edges of
its initial state: the pairs closer than ``r_c`` (the interacting pairs; from
:func:`hogn.graph.radius_graph` with the box). The neighbours change as the particles
move, so a trajectory or dataset (one ``edge_index``) keeps the initial edges only:
consumers rebuild a state's edges from its positions
(:meth:`~hogn.graph.GraphBatch.with_radius_edges` with radius ``r_c``) and take edge
vectors as minimum images (:meth:`~hogn.graph.GraphBatch.edge_vectors`). This system
itself never reads ``edge_index``: :meth:`LennardJones.energy` finds the pairs within
``r_c`` of the positions it is given, and the analytic field keeps a Verlet
neighbour list (:class:`hogn.graph.NeighbourList`, cut-off ``r_c + skin``).

**Ground truth** is fixed-step velocity Verlet (kick–drift–kick leapfrog; ``H`` is
separable), one force evaluation per step, with the neighbour list rebuilt only when
some particle has moved more than ``skin / 2`` since the last build. Positions are not
wrapped into the box (trajectories are continuous, e.g. for diffusion); every
distance is a minimum image, so wrapped and unwrapped positions are the same state.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from hogn.graph import GraphBatch, NeighbourList, batch_vector, edge_vectors, ptr_from_sizes
from hogn.graph import radius_graph as _radius_graph
from systems.base import System, node_sum

__all__ = ["LennardJones", "LennardJonesField"]

_CHUNK_NODES = 1 << 18  # nodes per piece when H or the field is taken over many states


class LennardJones(System):
    """Lennard-Jones particles in a periodic box, shifted-force truncation (any ``N``).

    Parameters (reduced units, see the module docstring): ``dim`` (2 or 3),
    ``epsilon`` and ``sigma`` (well depth and size, default 1), ``mass`` (all
    particles, default 1), ``cutoff`` ``r_c/σ`` (2.5), ``density`` ``ρσ^d`` (0.5),
    ``temperature`` ``k_B T/ε`` (1.0), ``skin`` of the neighbour list in ``σ`` (0.3),
    ``jitter`` of the initial lattice (0.1 of the spacing) and ``equilibrate``, the
    velocity-Verlet steps of ``max_step`` run by the sampler (100, i.e. ``t = 0.5``).

    Initial states: each graph of ``N`` particles gets the box ``L = σ (N/ρ)^(1/d)``
    (which must be at least ``2 (r_c + skin)``: the minimum image is unique only
    then); positions are ``N`` sites drawn without replacement from the square/cubic
    lattice of ``k = ⌈N^(1/d)⌉`` sites a side (spacing ``a = L/k``) plus a uniform
    jitter of ``± jitter · a / 2`` per coordinate (no two particles closer than
    ``(1 − jitter) a``); momenta are Maxwell–Boltzmann at ``T`` with zero total
    momentum, rescaled so that the kinetic temperature
    ``Σ|p|²/m / (d (N − 1))`` is exactly ``T``. Then ``equilibrate`` velocity-Verlet
    steps let the lattice melt, positions are wrapped into ``[0, L)``, and the momenta
    are rescaled to ``T`` exactly again (the total momentum stays zero).
    """

    name = "lennard-jones"
    separable = True
    native_dim = 2
    n_particles = None
    chaotic = True
    defaults: dict[str, Any] = {"dim": 2, "epsilon": 1.0, "sigma": 1.0, "mass": 1.0,
                                "cutoff": 2.5, "density": 0.5, "temperature": 1.0,
                                "skin": 0.3, "jitter": 0.1, "equilibrate": 100}
    max_step = 0.005
    ground_truth_method = "leapfrog"
    # H of the fluid lies near 0 (kinetic and potential energies cancel), so its relative
    # drift measures nothing: generate keeps every finite trajectory; the per-particle
    # drift (energy_drift_per_particle) is what the tests bound
    max_energy_drift = math.inf
    description = ("Lennard-Jones fluid in a periodic box, shifted force at r_c = 2.5σ, "
                   "any N; ρ = 0.5, T = 1")

    # ---------------------------------------------------------------- parameters
    def _validate(self) -> None:
        super()._validate()
        prm = self.params
        if prm["dim"] not in (2, 3):
            raise ValueError(f"{self.name}: dim must be 2 or 3, got {prm['dim']!r}")
        if self.embed_dim != self.native_dim:
            raise ValueError(f"{self.name}: embed_dim must equal dim = {self.native_dim} (the "
                             f"box has one length per coordinate), got {self.embed_dim}")
        for key in ("epsilon", "sigma", "mass", "cutoff", "density", "temperature"):
            v = prm[key]
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v)
                                           and v > 0):
                raise ValueError(f"{self.name}: {key} must be a positive finite number, "
                                 f"got {v!r}")
        skin, jitter, steps = prm["skin"], prm["jitter"], prm["equilibrate"]
        if isinstance(skin, bool) or not (isinstance(skin, (int, float)) and math.isfinite(skin)
                                          and skin >= 0):
            raise ValueError(f"{self.name}: skin must be a finite number >= 0, got {skin!r}")
        if isinstance(jitter, bool) or not (isinstance(jitter, (int, float)) and 0 <= jitter < 1):
            raise ValueError(f"{self.name}: jitter must be a number in [0, 1) (a fraction of "
                             f"the lattice spacing), got {jitter!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"{self.name}: equilibrate must be an int >= 0 (velocity-Verlet "
                             f"steps), got {steps!r}")

    @property
    def cutoff(self) -> float:
        """Cut-off distance ``r_c`` (in length units: ``cutoff · σ``)."""
        return float(self.params["cutoff"]) * float(self.params["sigma"])

    @property
    def skin(self) -> float:
        """Neighbour-list skin in length units (``skin · σ``)."""
        return float(self.params["skin"]) * float(self.params["sigma"])

    def box_length(self, n: int) -> float:
        """Side ``L = σ (N/ρ)^(1/d)`` of the box of ``n`` particles at the density."""
        return float(self.params["sigma"]) * (n / float(self.params["density"])) ** (
            1 / self.native_dim)

    def min_particles(self) -> int:
        """Fewest particles whose box holds the minimum image: ``L >= 2 (r_c + skin)``."""
        reach = 2 * (self.cutoff + self.skin) / float(self.params["sigma"])
        n = max(2, math.ceil(float(self.params["density"]) * reach ** self.native_dim - 1e-9))
        while self.box_length(n) < 2 * (self.cutoff + self.skin):  # round-off at the edge
            n += 1
        return n

    # ---------------------------------------------------------------- physics
    def _pair_constants(self) -> tuple[float, float, float, float]:
        """``(σ², 4ε, V(r_c), V'(r_c))``."""
        eps, sigma, rc = float(self.params["epsilon"]), float(self.params["sigma"]), self.cutoff
        s6 = (sigma / rc) ** 6
        return sigma**2, 4 * eps, 4 * eps * (s6 * s6 - s6), -24 * eps * (2 * s6 * s6 - s6) / rc

    def pair_energy(self, r2: Tensor) -> Tensor:
        """Shifted-force pair energy ``V_sf(r)`` of squared distances ``r2`` (any shape);
        zero at and beyond ``r_c``."""
        sigma2, four_eps, v_c, dv_c = self._pair_constants()
        rc = self.cutoff
        inside = r2 < rc * rc
        r2 = torch.where(inside, r2, torch.full_like(r2, rc * rc))  # no overflow outside
        s6 = (sigma2 / r2) ** 3
        v = four_eps * (s6 * s6 - s6) - v_c - (r2.sqrt() - rc) * dv_c
        return torch.where(inside, v, torch.zeros_like(v))

    def pair_force_weight(self, r2: Tensor) -> Tensor:
        """``−V_sf'(r) / r`` of squared distances ``r2``: the force on the receiver of an
        edge is this times the edge vector (receiver − sender); zero beyond ``r_c``."""
        sigma2, four_eps, _, dv_c = self._pair_constants()
        rc = self.cutoff
        inside = r2 < rc * rc
        r2 = torch.where(inside, r2, torch.full_like(r2, rc * rc))
        s6 = (sigma2 / r2) ** 3
        w = (6 * four_eps) * (2 * s6 * s6 - s6) / r2 + dv_c * r2.rsqrt()
        return torch.where(inside, w, torch.zeros_like(w))

    def check_box(self, graph: GraphBatch) -> Tensor:
        """The graph's box ``[G, d]``, checked to hold the cut-off and skin.

        Raises:
            ValueError: without a box, or with a box side below ``2 (r_c + skin)``.
        """
        if graph.box is None:
            raise ValueError(f"{self.name}: the graph has no periodic box; give GraphBatch.box "
                             f"[G, {self.native_dim}] (systems.get('{self.name}').sample(...) "
                             "sets it)")
        need = 2 * (self.cutoff + self.skin)
        small = graph.box < need * (1 - 1e-12)
        if bool(small.any()):
            raise ValueError(
                f"{self.name}: box sides must be at least 2 (r_c + skin) = {need:g} for the "
                f"minimum image and the neighbour list, got {graph.box.min().item():g}: use at "
                f"least {self.min_particles()} particles at density {self.params['density']} "
                "(or a smaller cutoff or skin)")
        return graph.box

    def potential(self, q: Tensor, graph: GraphBatch) -> Tensor:
        """Potential energy ``Σ_{pairs within r_c} V_sf`` of positions ``q [..., N, d]``,
        ``[..., G]``: the pairs are found anew from ``q`` (minimum image in the box; no
        search is differentiated), whatever the graph's edges."""
        box = self.check_box(graph)
        *lead, n, d = q.shape
        flat = q.reshape(-1, n, d)
        parts = []
        for x, ptr, boxes in _pieces(flat, graph, box):
            xs = x.reshape(-1, d)
            edges = _radius_graph(xs.detach(), ptr, self.cutoff, box=boxes)
            rel = edge_vectors(xs, edges, box=boxes, ptr=ptr)
            e = self.pair_energy((rel * rel).sum(-1))
            graph_of = batch_vector(ptr)[edges[0]]
            parts.append(0.5 * e.new_zeros(boxes.shape[0]).index_add(0, graph_of, e))
        return torch.cat(parts).reshape(*lead, graph.num_graphs)

    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        m = graph.c[:, 0]
        return node_sum((p**2).sum(-1) / (2 * m), graph) + self.potential(q, graph)

    def _native_field(self, graph: GraphBatch) -> LennardJonesField:
        return LennardJonesField(self, graph)

    def energy_drift_per_particle(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """Largest energy change per particle along trajectories ``q, p [T, N, d]``:
        ``max_t |H(t) − H(0)| / N`` per graph, ``[G]`` (the fluid's ``H`` lies near 0, so
        this, not the relative drift, measures the integration error)."""
        h = self.hamiltonian(q, p, graph)
        return (h - h[0]).abs().amax(0) / graph.sizes.to(h)

    def kinetic_temperature(self, p: Tensor, graph: GraphBatch) -> Tensor:
        """``Σ|p|²/m / (d (N − 1))`` per graph, ``[..., G]`` (zero total momentum: the
        ``d`` centre-of-mass degrees of freedom are not counted)."""
        dof = (graph.sizes.to(p) - 1) * self.native_dim
        return 2 * node_sum((p**2).sum(-1) / (2 * graph.c[:, 0]), graph) / dof

    # ---------------------------------------------------------------- sampling
    def default_edges(self, sizes: list[int], generator: torch.Generator
                      ) -> tuple[Tensor, None]:
        """No edges yet: :meth:`sample` sets the pairs closer than ``r_c`` once the
        positions are known."""
        return torch.empty(2, 0, dtype=torch.long), None

    def _sample(self, sizes: list[int], generator: torch.Generator
                ) -> tuple[Tensor, Tensor, Tensor]:
        small = [n for n in sizes if n < self.min_particles()]
        if small:
            raise ValueError(
                f"{self.name}: {min(small)} particles at density {self.params['density']} fill "
                f"a box of side {self.box_length(min(small)):.4g} < 2 (r_c + skin) = "
                f"{2 * (self.cutoff + self.skin):g} (the minimum image needs it): use at "
                f"least {self.min_particles()} particles in {self.native_dim}-D, or a lower "
                "density, cutoff or skin")
        d, jitter = self.native_dim, float(self.params["jitter"])
        mass = float(self.params["mass"])
        qs = []
        for n in sizes:
            side = self.box_length(n)
            k = math.ceil(n ** (1 / d) - 1e-9)
            while k**d < n:  # round-off in the root
                k += 1
            sites = torch.randperm(k**d, generator=generator)[:n]
            digits = torch.stack([torch.div(sites, k**i, rounding_mode="floor") % k
                                  for i in range(d)], -1).to(torch.float64)
            shake = torch.rand(n, d, generator=generator, dtype=torch.float64) - 0.5
            qs.append((digits + 0.5 + jitter * shake) * (side / k))
        q = torch.cat(qs)
        c = torch.full((q.shape[0], 1), mass, dtype=torch.float64)
        p = math.sqrt(mass * float(self.params["temperature"])) * torch.randn(
            q.shape, generator=generator, dtype=torch.float64)
        graph = self._blank_graph(q, p, c, sizes)
        p = self._thermalise(p, graph)
        steps = self.params["equilibrate"]
        if steps:
            f = LennardJonesField(self, graph)
            q, p = _verlet(f, q, p, self.max_step, steps)
            box = graph.box[graph.batch]
            q = q - box * torch.floor(q / box)
            p = self._thermalise(p, graph)
        return q, p, c

    def _blank_graph(self, q: Tensor, p: Tensor, c: Tensor, sizes: list[int]) -> GraphBatch:
        box = torch.tensor([[self.box_length(n)] * self.native_dim for n in sizes],
                           dtype=q.dtype, device=q.device)
        return GraphBatch(q, p, c, torch.empty(2, 0, dtype=torch.long, device=q.device),
                          ptr_from_sizes(sizes, q.device), box=box)

    def _thermalise(self, p: Tensor, graph: GraphBatch) -> Tensor:
        """Momenta with each graph's total momentum removed and its kinetic temperature
        scaled to ``temperature`` exactly (equal masses)."""
        mean = node_sum(p.T, graph).T / graph.sizes[:, None].to(p)
        p = p - mean[graph.batch]
        scale = (float(self.params["temperature"]) / self.kinetic_temperature(p, graph)).sqrt()
        return p * scale[graph.batch, None]

    def sample(self, n: int, seed: int | torch.Generator = 0,
               n_particles: int | tuple[int, int] | None = None,
               dtype: torch.dtype = torch.float64,
               device: torch.device | str | None = None) -> GraphBatch:
        """Draw ``n`` fluid states, each in its own box (see the class docstring).

        Returns:
            A :class:`GraphBatch` with ``q, p [N, d]``, ``box [G, d]`` and the edges of
            the pairs closer than ``r_c`` (minimum image).
        """
        graph = super().sample(n, seed, n_particles)  # float64, CPU, no edges
        graph = graph.replace(box=self._blank_graph(graph.q, graph.p, graph.c,
                                                    graph.sizes.tolist()).box)
        graph = graph.with_radius_edges(self.cutoff)
        return graph.to(device, dtype)

    # -------------------------------------------------------------- simulation
    def check_graph(self, graph: GraphBatch) -> None:
        super().check_graph(graph)
        self.check_box(graph)

    def trajectory(self, graph: GraphBatch, dt: float, steps: int, method: str | None = None,
                   substeps: int = 1, rtol: float = 1e-12, atol: float = 1e-12,
                   stop: bool = False, progress: bool = False
                   ) -> tuple[Tensor, Tensor, Tensor]:
        """Integrate with velocity Verlet and a Verlet neighbour list (the ground truth).

        With ``method="leapfrog"`` (the default) each saved step ``dt`` is taken as
        ``substeps · ⌈dt / (substeps · max_step)⌉`` velocity-Verlet steps (so never one
        longer than ``max_step = 0.005``), one force evaluation each, the neighbour list
        rebuilt only when some particle moved more than ``skin / 2``. Other fixed-step
        integrators run through :func:`hogn.integrators.integrate` on the same field;
        the adaptive method is not offered (the forces' derivative jumps at ``r_c``).
        Positions are not wrapped into the box. ``rtol``, ``atol`` and ``stop`` are
        accepted for the common signature and unused (nothing is stopped).

        Returns:
            ``q [T + 1, N, d]``, ``p [T + 1, N, d]`` and an all-False stopped mask ``[G]``.
        """
        method = self.ground_truth_method if method is None else method
        if method == "adaptive":
            raise ValueError(f"{self.name}: the ground truth is fixed-step velocity Verlet "
                             "(method='leapfrog', the default); the adaptive method is not "
                             "offered (the force's derivative jumps at the cut-off)")
        if method != "leapfrog":
            return super().trajectory(graph, dt, steps, method=method, substeps=substeps,
                                      progress=progress)
        self.check_graph(graph)
        self._check_run(graph, dt, steps, substeps)
        per_save = substeps * max(1, math.ceil(dt / substeps / self.max_step - 1e-9))
        f = LennardJonesField(self, graph)
        q, p = _verlet(f, graph.q, graph.p, dt / per_save, steps * per_save, per_save,
                       progress=self.name if progress else False)
        return q, p, torch.zeros(graph.num_graphs, dtype=torch.bool, device=q.device)


class LennardJonesField:
    """The hand-derived field ``f(q, p) -> (dq, dp)`` of a :class:`LennardJones` graph.

    ``dq = p/m``, ``dp_j = Σ_i −V_sf'(r_ij) (q_j − q_i)/r_ij`` over the pairs within
    ``r_c`` (minimum image). For a single state ``q [N, d]`` the pairs come from a
    Verlet neighbour list (:attr:`neighbours`, cut-off ``r_c + skin``), rebuilt only
    when some particle moved more than ``skin / 2`` since its last build; each pair
    is held once and its force added to both particles. States with leading axes
    ``[..., N, d]`` (a trajectory) are searched afresh at ``r_c``, a piece at a time.

    Attributes:
        neighbours: The :class:`hogn.graph.NeighbourList` (``rebuilds``, ``updates``).
    """

    def __init__(self, system: LennardJones, graph: GraphBatch) -> None:
        self.system = system
        self.graph = graph
        self.box = system.check_box(graph)
        m = graph.c[:, 0:1]
        self.inv_m = 1.0 / m
        self.unit = bool((m == 1).all())  # unit masses: dq is p itself
        self.neighbours = NeighbourList(system.cutoff, system.skin, box=self.box)
        self._built = -1
        self._pairs: tuple[Tensor, Tensor, Tensor] | None = None

    def __call__(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        return (p if self.unit else p * self.inv_m), self.force(q)

    def force(self, q: Tensor) -> Tensor:
        """``dp = −∂H/∂q`` of positions ``q [..., N, d]``, shaped like ``q``."""
        if q.dim() != 2:
            n, d = q.shape[-2:]
            parts = [self._force_of_pieces(x, ptr, boxes)
                     for x, ptr, boxes in _pieces(q.reshape(-1, n, d), self.graph, self.box)]
            return torch.cat(parts).reshape(q.shape)
        edges = self.neighbours.update(q, self.graph.ptr)
        if self.neighbours.rebuilds != self._built or self._pairs is None:
            half = edges[:, edges[0] < edges[1]]  # each pair once
            lengths = self.box.to(q)[self.graph.batch.to(q.device)[half[0]]]
            self._pairs = (half[0], half[1], lengths)
            self._built = self.neighbours.rebuilds
        src, dst, lengths = self._pairs
        return self._pair_forces(q, src, dst, lengths)

    def _pair_forces(self, q: Tensor, src: Tensor, dst: Tensor, lengths: Tensor) -> Tensor:
        rel = q.index_select(0, dst) - q.index_select(0, src)
        rel = rel - lengths * torch.round(rel / lengths)
        w = rel * self.system.pair_force_weight((rel * rel).sum(-1, keepdim=True))
        return torch.zeros_like(q).index_add_(0, dst, w).index_add_(0, src, -w)

    def _force_of_pieces(self, x: Tensor, ptr: Tensor, boxes: Tensor) -> Tensor:
        xs = x.reshape(-1, x.shape[-1])
        edges = _radius_graph(xs, ptr, self.system.cutoff, box=boxes)
        half = edges[:, edges[0] < edges[1]]
        lengths = boxes[batch_vector(ptr)[half[0]]]
        return self._pair_forces(xs, half[0], half[1], lengths).reshape(x.shape)


def _pieces(flat: Tensor, graph: GraphBatch, box: Tensor):
    """Split states ``flat [B, N, d]`` into pieces of at most ~``_CHUNK_NODES`` nodes,
    each as ``(x [b, N, d], ptr [b·G + 1], box [b·G, d])``: the ``b`` copies of the
    batch as one batch of ``b·G`` graphs."""
    b_all, n = flat.shape[0], flat.shape[1]
    per = max(1, _CHUNK_NODES // max(n, 1))
    sizes = graph.sizes.to(flat.device)
    boxes = box.to(flat)
    for a in range(0, b_all, per):
        x = flat[a:a + per]
        b = x.shape[0]
        yield x, ptr_from_sizes(sizes.repeat(b), flat.device), boxes.repeat(b, 1)


def _verlet(f: LennardJonesField, q: Tensor, p: Tensor, h: float, steps: int,
            save_every: int | None = None, progress: bool | str = False
            ) -> tuple[Tensor, Tensor]:
    """Velocity Verlet (kick–drift–kick), one force evaluation per step.

    Returns the final ``(q, p)``, or with ``save_every`` the states every that many
    steps, ``[steps / save_every + 1, N, d]`` each (the first the initial state).
    """
    inv_m = None if f.unit else f.inv_m
    saves = None if save_every is None else steps // save_every
    if saves is not None:
        qs, ps = q.new_empty((saves + 1, *q.shape)), p.new_empty((saves + 1, *p.shape))
        qs[0], ps[0] = q, p
    force = f.force(q)
    iterator = range(1, steps + 1)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=str(progress), leave=False, disable=None)
    for i in iterator:
        p = p + (0.5 * h) * force
        q = q + h * (p if inv_m is None else p * inv_m)
        force = f.force(q)
        p = p + (0.5 * h) * force
        if saves is not None and i % save_every == 0:
            qs[i // save_every], ps[i // save_every] = q, p
    return (q, p) if saves is None else (qs, ps)
