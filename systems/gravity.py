"""Gravitating point masses: two-body, three-body and softened N-body gravity.

``H = Σ_i |p_i|²/2m_i − Σ_{i<j} G m_i m_j / sqrt(|q_i − q_j|² + ε²)`` summed over the
pairs of a complete graph (``ε = 0`` for two- and three-body).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor

from hogn.graph import GraphBatch, fully_connected, ptr_from_sizes
from hogn.integrators import VectorField
from systems.base import System, constant_masses, node_sum, pair_sum, uniform

__all__ = ["GravityNBody", "ThreeBody", "TwoBody"]


@functools.lru_cache(maxsize=32)
def _pairs(n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Index pairs ``i < j`` of ``n`` particles (cached: built once per size)."""
    i, j = torch.triu_indices(n, n, 1, device=device)
    return i, j


def _perp(x: Tensor) -> Tensor:
    """Rotate 2-D vectors ``[..., 2]`` by +90°."""
    return torch.stack([-x[..., 1], x[..., 0]], -1)


class GravityNBody(System):
    """Softened gravity between ``N`` point masses in ``dim`` dimensions (any ``N``).

    Initial states: positions uniform in a disc/ball of radius
    ``radius · N^(1/dim)``, Gaussian velocities with the centre-of-mass drift removed,
    scaled to the virial ratio ``T/|V| = virial`` (default 0.5), so ``H < 0``.
    """

    name = "gravity-nbody"
    separable = True
    native_dim = 2
    n_particles = None
    defaults: dict[str, Any] = {"G": 1.0, "mass": 1.0, "softening": 0.1, "dim": 2,
                                "radius": 0.5, "virial": 0.5, "min_distance": 0.0}
    chaotic = True
    max_step = 0.01
    description = "softened gravity, any N (ε = 0.1); virialised discs, H < 0"

    def _validate(self) -> None:
        super()._validate()
        self._positive_range("mass")
        for key in ("softening", "min_distance"):
            if not (isinstance(self.params[key], (int, float)) and self.params[key] >= 0):
                raise ValueError(f"{self.name}: {key} must be a number >= 0, "
                                 f"got {self.params[key]!r}")

    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        m = graph.c[:, 0]
        kinetic = node_sum((p**2).sum(-1) / (2 * m), graph)
        n = graph.uniform_size
        if n is not None and self.n_particles is not None:
            # all graphs complete and of one size: every pair by dense indexing (fast path)
            i, j = _pairs(n, q.device)
            x = q.reshape(*q.shape[:-2], -1, n, q.shape[-1])
            mg = m.reshape(-1, n)
            r2 = ((x[..., i, :] - x[..., j, :]) ** 2).sum(-1) + self.params["softening"] ** 2
            return kinetic - (self.params["G"] * mg[:, i] * mg[:, j] / torch.sqrt(r2)).sum(-1)
        src, dst = graph.edge_index
        r2 = ((q[..., src, :] - q[..., dst, :]) ** 2).sum(-1) + self.params["softening"] ** 2
        potential = pair_sum(-self.params["G"] * m[src] * m[dst] / torch.sqrt(r2), graph)
        return kinetic + potential

    def _native_field(self, graph: GraphBatch) -> VectorField:
        """``dq = p / m``, ``dp_i = Σ_j G m_i m_j (q_j − q_i) / (r² + ε²)^{3/2}`` by hand.

        Complete graphs of one size ``n`` (the few-body systems; any-``N`` batches
        sampled with one size and the default complete edges) use all ``n × n`` pairs
        by broadcasting, with the self-pairs' inverse distance held at zero by an
        infinite diagonal: no index gathers or scatters per evaluation. Others sum
        over the edge list.
        """
        m = graph.c[:, 0:1]
        inv_m = 1.0 / m
        unit = bool((inv_m == 1).all())  # unit masses: dq is p itself (one op fewer)
        g, eps2 = float(self.params["G"]), float(self.params["softening"]) ** 2
        n = graph.uniform_size
        if n is not None and (self.n_particles is not None or _complete_graphs(graph, n)):
            mg = m.reshape(-1, n)  # dense pairs (fast path)
            coupling = -g * mg[:, :, None] * mg[:, None, :]  # [G, n, n]
            eye = torch.eye(n, dtype=m.dtype, device=m.device).bool()
            offset = torch.full((n, n), eps2, dtype=m.dtype, device=m.device
                                ).masked_fill(eye, float("inf"))
            ones_d = torch.ones(self.native_dim, dtype=m.dtype, device=m.device)
            ones_n = torch.ones(n, 1, dtype=m.dtype, device=m.device)

            def dense(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
                # sums over the short axes as products with ones: torch's sum() over
                # an axis of 2 or 3 costs far more than a matrix product
                x = q.reshape(-1, n, q.shape[-1])  # [B, n, d], B = leading axes x G
                diff = x.unsqueeze(-2) - x.unsqueeze(-3)  # [B, n, n, d]: q_i − q_j
                w = torch.matmul(diff * diff, ones_d).add_(offset).rsqrt_().pow_(3)
                w.view(-1, *coupling.shape).mul_(coupling)  # −G m_i m_j / r³, 0 for i = j
                # Σ_j w_ij (q_i − q_j) = q_i Σ_j w_ij − (W q)_i
                force = torch.baddbmm(x * torch.matmul(w, ones_n), w, x, alpha=-1)
                return (p if unit else p * inv_m), force.view(q.shape)

            return dense
        src, dst = graph.edge_index
        coupling = g * m[src] * m[dst]  # [E, 1]
        ones_d1 = torch.ones(self.native_dim, 1, dtype=m.dtype, device=m.device)

        def sparse(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
            diff = q.index_select(-2, src) - q.index_select(-2, dst)
            r2 = torch.matmul(diff * diff, ones_d1).add_(eps2)
            w = diff * (coupling / (r2 * r2.sqrt()))
            return (p if unit else p * inv_m), torch.zeros_like(q).index_add_(-2, src, -w)

        return sparse

    def stop_condition(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """Stop graphs with a pair closer than ``min_distance`` (a close pass)."""
        limit = self.params["min_distance"]
        if limit <= 0 or graph.edge_index.numel() == 0:
            return super().stop_condition(q, p, graph)
        src, dst = graph.edge_index
        diff = q.index_select(-2, src) - q.index_select(-2, dst)
        close = torch.matmul(diff * diff, q.new_ones(q.shape[-1])) < limit**2  # [..., E]
        hits = q.new_zeros((*q.shape[:-2], graph.num_graphs))
        return hits.index_add_(-1, graph.edge_batch, close.to(q.dtype)) > 0

    def _sample(self, sizes: list[int], generator: torch.Generator
                ) -> tuple[Tensor, Tensor, Tensor]:
        d = self.native_dim
        c = constant_masses(sizes, self.params["mass"], generator)
        qs, ps = [], []
        offset = 0
        for n in sizes:
            m = c[offset: offset + n, 0:1]
            offset += n
            radius = self.params["radius"] * n ** (1 / d)
            direction = torch.randn(n, d, generator=generator, dtype=torch.float64)
            direction = direction / direction.norm(dim=-1, keepdim=True)
            q = direction * radius * uniform(generator, (n, 1), 0.0, 1.0) ** (1 / d)
            q = q - (m * q).sum(0) / m.sum()
            v = torch.randn(n, d, generator=generator, dtype=torch.float64)
            v = v - (m * v).sum(0) / m.sum()
            graph = GraphBatch(q, torch.zeros_like(q), m,
                               _complete(n), ptr_from_sizes([n]))
            potential = -self.energy(q, torch.zeros_like(q), graph).item()
            kinetic = 0.5 * (m * v**2).sum().item()
            v = v * math.sqrt(self.params["virial"] * potential / max(kinetic, 1e-300))
            qs.append(q)
            ps.append(m * v)
        return torch.cat(qs), torch.cat(ps), c


def _complete_graphs(graph: GraphBatch, n: int) -> bool:
    """Whether ``graph`` holds exactly the complete graphs of ``n`` nodes each, in
    :func:`~hogn.graph.fully_connected`'s edge order."""
    ei = graph.edge_index
    return (ei.shape[1] == graph.num_graphs * n * (n - 1)
            and torch.equal(ei, fully_connected([n] * graph.num_graphs, device=ei.device)))


def _complete(n: int) -> Tensor:
    idx = torch.arange(n)
    src, dst = torch.meshgrid(idx, idx, indexing="ij")
    keep = src != dst
    return torch.stack([src[keep], dst[keep]])


class _PlanarOrbits(GravityNBody):
    """Shared checks of the planar few-body orbit samplers."""

    def _validate(self) -> None:
        super()._validate()
        self._positive_range("radius_range")
        if self.native_dim != 2:
            raise ValueError(f"{self.name}: the orbit sampler is planar, dim must be 2")


class TwoBody(_PlanarOrbits):
    """Two gravitating bodies in the plane, ``m = G = 1``, no softening.

    Initial states (as in the HNN paper): separation ``r ~ U[0.5, 1.5]`` at a random
    angle about the centre of mass, relative velocity of the circular orbit plus
    Gaussian noise of relative size ``orbit_noise`` (0.1); total momentum zero.
    Trajectories passing closer than ``min_distance`` (0.1) are resampled.
    """

    name = "two-body"
    n_particles = 2
    defaults: dict[str, Any] = {"G": 1.0, "mass": 1.0, "softening": 0.0, "dim": 2,
                                "radius_range": (0.5, 1.5), "orbit_noise": 0.1,
                                "min_distance": 0.1}
    chaotic = False
    max_step = 0.01
    description = "2 bodies, m = G = 1; near-circular orbits, separation U[0.5, 1.5]"

    def _sample(self, sizes: list[int], generator: torch.Generator
                ) -> tuple[Tensor, Tensor, Tensor]:
        n = len(sizes)
        c = constant_masses(sizes, self.params["mass"], generator)
        m = c[:, 0].reshape(n, 2)
        total = m.sum(1, keepdim=True)
        r = uniform(generator, (n, 1), *self._positive_range("radius_range"))
        angle = uniform(generator, (n, 1), 0.0, 2 * math.pi)
        u = torch.cat([torch.cos(angle), torch.sin(angle)], -1)
        q1, q2 = (m[:, 1:] / total) * r * u, -(m[:, :1] / total) * r * u
        v_c = torch.sqrt(self.params["G"] * total / r)
        noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        v_rel = v_c * (_perp(u) + self.params["orbit_noise"] * noise)
        mu = m[:, :1] * m[:, 1:] / total
        q = torch.stack([q1, q2], 1).reshape(-1, 2)
        p = torch.stack([mu * v_rel, -mu * v_rel], 1).reshape(-1, 2)
        return q, p, c


class ThreeBody(_PlanarOrbits):
    """Three gravitating bodies in the plane, ``m = G = 1``, no softening.

    Initial states (as in the HNN paper): the rotating equilateral (Lagrange)
    configuration on a circle of radius ``r ~ U[0.9, 1.2]`` at a random angle, with
    Gaussian velocity noise of relative size ``orbit_noise`` (0.2); total momentum
    zero. The motion is chaotic; trajectories passing closer than ``min_distance``
    (0.1) are resampled.
    """

    name = "three-body"
    n_particles = 3
    defaults: dict[str, Any] = {"G": 1.0, "mass": 1.0, "softening": 0.0, "dim": 2,
                                "radius_range": (0.9, 1.2), "orbit_noise": 0.2,
                                "min_distance": 0.1}
    chaotic = True
    max_step = 0.005
    description = "3 bodies, m = G = 1; perturbed Lagrange triangles, radius U[0.9, 1.2]"

    def _sample(self, sizes: list[int], generator: torch.Generator
                ) -> tuple[Tensor, Tensor, Tensor]:
        n = len(sizes)
        c = constant_masses(sizes, self.params["mass"], generator)
        m = c[:, 0].reshape(n, 3, 1)
        r = uniform(generator, (n, 1, 1), *self._positive_range("radius_range"))
        angle = uniform(generator, (n, 1), 0.0, 2 * math.pi) + torch.tensor(
            [0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=torch.float64)
        q = r * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
        q = q - (m * q).sum(1, keepdim=True) / m.sum(1, keepdim=True)
        side = math.sqrt(3) * r
        omega = torch.sqrt(self.params["G"] * m.sum(1, keepdim=True) / side**3)
        v = omega * _perp(q)
        speed = v.norm(dim=-1, keepdim=True)
        v = v + self.params["orbit_noise"] * speed * torch.randn(
            n, 3, 2, generator=generator, dtype=torch.float64)
        v = v - (m * v).sum(1, keepdim=True) / m.sum(1, keepdim=True)
        return q.reshape(-1, 2), (m * v).reshape(-1, 2), c
