"""One-particle and two-link oscillators: mass-spring, pendulum, double pendulum.

Each has one degree of freedom per particle (``native_dim = 1``); pass
``embed_dim=2`` to hold a constant surplus coordinate, as in the meta-learning
paper (mass-spring ``y = 0``; pendulum ``r = l``; double pendulum ``r_i = l_i``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hogn.graph import GraphBatch
from hogn.integrators import VectorField
from systems.base import System, constant_masses, node_sum, uniform

__all__ = ["DoublePendulum", "MassSpring", "Pendulum"]


def _energy_range(system: System) -> tuple[float, float]:
    lo, hi = system.params["energy_range"]
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{system.name}: energy_range must be (lo, hi) with lo < hi, "
                         f"got {system.params['energy_range']!r}")
    return float(lo), float(hi)


class _Oscillator(System):
    """One particle, one degree of freedom, energies sampled from a positive range, or
    (``radius_range`` set) initial states on circles of the ``(q, p)`` plane."""

    native_dim = 1
    n_particles = 1

    def _validate(self) -> None:
        super()._validate()
        lo, _ = _energy_range(self)
        if lo <= 0:
            raise ValueError(f"{self.name}: energy_range must be positive, got "
                             f"{self.params['energy_range']!r}")
        if self.params["radius_range"] is not None:
            self._positive_range("radius_range")

    def _sample_radius(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor] | None:
        """Initial ``(q, p)``, each ``[n]``, at a phase-space radius ``r ~ U(radius_range)``
        and a uniform angle ``φ``: ``q = r cos φ``, ``p = r sin φ`` (the HNN authors'
        code samples its spring and pendulum so); ``None`` when ``radius_range`` is
        unset (then the energy is sampled from ``energy_range``)."""
        if self.params["radius_range"] is None:
            return None
        radius = uniform(generator, n, *self._positive_range("radius_range"))
        phase = uniform(generator, n, 0.0, 2 * math.pi)
        return radius * torch.cos(phase), radius * torch.sin(phase)


class MassSpring(_Oscillator):
    """Ideal mass on a spring, ``H = p²/2m + k q²/2``.

    Initial states: energy ``E ~ U(energy_range)`` (default ``[0.2, 1.0]``, the HNN
    report's range) at a uniformly random phase angle; or, with ``radius_range``
    ``(lo, hi)``, ``(q, p)`` at a radius ``r ~ U(lo, hi)`` of the phase plane and a
    uniform angle (the HNN authors' code: ``mass=0.5, k=2`` gives their
    ``H = q² + p²``, so ``E = r²``, and ``ω = 2``).
    """

    name = "mass-spring"
    separable = True
    defaults = {"mass": 1.0, "k": 1.0, "energy_range": (0.2, 1.0), "radius_range": None}
    max_step = 0.1
    description = "1 mass on a spring, H = p²/2m + kq²/2; E ~ U[0.2, 1]"

    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        m = graph.c[:, 0]
        e = p[..., 0] ** 2 / (2 * m) + 0.5 * self.params["k"] * q[..., 0] ** 2
        return node_sum(e, graph)

    def _native_field(self, graph: GraphBatch) -> VectorField:
        """``dq = p / m``, ``dp = −k q``."""
        inv_m = 1.0 / graph.c[:, 0:1]
        minus_k = -float(self.params["k"])
        if bool((inv_m == 1).all()):  # unit masses: dq is p itself (one op fewer)
            return lambda q, p: (p, q * minus_k)
        return lambda q, p: (p * inv_m, q * minus_k)

    def _sample(self, sizes: list[int], generator: torch.Generator
                ) -> tuple[Tensor, Tensor, Tensor]:
        n = len(sizes)
        c = constant_masses(sizes, self.params["mass"], generator)
        on_circle = self._sample_radius(n, generator)
        if on_circle is not None:
            return on_circle[0][:, None], on_circle[1][:, None], c
        energy = uniform(generator, n, *_energy_range(self))
        phase = uniform(generator, n, 0.0, 2 * math.pi)
        q = torch.sqrt(2 * energy / self.params["k"]) * torch.cos(phase)
        p = torch.sqrt(2 * energy * c[:, 0]) * torch.sin(phase)
        return q[:, None], p[:, None], c


class Pendulum(_Oscillator):
    """Ideal pendulum, ``H = p²/2ml² + mgl(1 − cos q)``.

    Initial states: ``E ~ U(energy_range)`` (default ``[0.2, 1.5]``, librations below
    the separatrix energy ``2mgl = 2``); ``q`` uniform over the angles the energy
    reaches, ``p`` of random sign completing the energy. Or, with ``radius_range``
    ``(lo, hi)``, ``(q, p)`` at a radius ``r ~ U(lo, hi)`` of the phase plane and a
    uniform angle (the HNN authors' code: ``mass=0.5, g=6`` gives their
    ``H = 3(1 − cos q) + p²``; radii below 2.3 stay under the separatrix ``2mgl``).
    """

    name = "pendulum"
    separable = True
    defaults = {"mass": 1.0, "g": 1.0, "l": 1.0, "energy_range": (0.2, 1.5),
                "radius_range": None}
    max_step = 0.05
    description = "pendulum, H = p²/2ml² + mgl(1−cos q); E ~ U[0.2, 1.5] (separatrix 2mgl)"

    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        m, g, l = graph.c[:, 0], self.params["g"], self.params["l"]
        e = p[..., 0] ** 2 / (2 * m * l**2) + m * g * l * (1 - torch.cos(q[..., 0]))
        return node_sum(e, graph)

    def _native_field(self, graph: GraphBatch) -> VectorField:
        """``dq = p / ml²``, ``dp = −mgl sin q``."""
        m, g, l = graph.c[:, 0:1], float(self.params["g"]), float(self.params["l"])
        inv_inertia, minus_torque = 1.0 / (m * l**2), -m * (g * l)
        if bool((inv_inertia == 1).all()):  # unit inertia: dq is p itself (one op fewer)
            return lambda q, p: (p, torch.sin(q) * minus_torque)
        return lambda q, p: (p * inv_inertia, torch.sin(q) * minus_torque)

    def surplus_values(self, n_graphs: int) -> Tensor:
        extra = super().surplus_values(n_graphs)  # [N, embed_dim - 1]: r = l, then zeros
        extra[:, :1] = float(self.params["l"])
        return extra

    def _sample(self, sizes: list[int], generator: torch.Generator
                ) -> tuple[Tensor, Tensor, Tensor]:
        n = len(sizes)
        c = constant_masses(sizes, self.params["mass"], generator)
        on_circle = self._sample_radius(n, generator)
        if on_circle is not None:
            return on_circle[0][:, None], on_circle[1][:, None], c
        m, g, l = c[:, 0], self.params["g"], self.params["l"]
        energy = uniform(generator, n, *_energy_range(self))
        cos_max = (1 - energy / (m * g * l)).clamp(min=-1.0)
        q_max = torch.arccos(cos_max)
        q = q_max * uniform(generator, n, -1.0, 1.0)
        kinetic = (energy - m * g * l * (1 - torch.cos(q))).clamp(min=0.0)
        sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).double()
        p = sign * torch.sqrt(2 * m * l**2 * kinetic)
        return q[:, None], p[:, None], c


class DoublePendulum(System):
    """Double pendulum (two links), angles ``θ1, θ2`` from the vertical.

    ``H = [m2 l2² p1² + (m1+m2) l1² p2² − 2 m2 l1 l2 p1 p2 cos(θ1−θ2)]
    / [2 m2 l1² l2² (m1 + m2 sin²(θ1−θ2))] − (m1+m2) g l1 cos θ1 − m2 g l2 cos θ2``,
    with ``m1, m2`` the masses of nodes 0 and 1.

    Initial states: ``θi ~ U[−π/2, π/2]``, ``pi ~ U[−1, 1]``, kept when
    ``H ∈ energy_range`` (default ``[−2.5, −0.5]``; chaotic at the upper end).
    """

    name = "double-pendulum"
    native_dim = 1
    n_particles = 2
    defaults = {"mass": 1.0, "g": 1.0, "l1": 1.0, "l2": 1.0, "energy_range": (-2.5, -0.5),
                "max_angle": math.pi / 2, "max_momentum": 1.0}
    chaotic = True
    max_step = 0.02
    description = "double pendulum, all constants 1; E ∈ [−2.5, −0.5] (chaotic)"

    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        lead = q.shape[:-2]
        th = q.reshape(*lead, -1, 2)
        pp = p.reshape(*lead, -1, 2)
        m = graph.c[:, 0].reshape(-1, 2)
        m1, m2 = m[:, 0], m[:, 1]
        l1, l2, g = self.params["l1"], self.params["l2"], self.params["g"]
        t1, t2, p1, p2 = th[..., 0], th[..., 1], pp[..., 0], pp[..., 1]
        cos_d = torch.cos(t1 - t2)
        sin_d = torch.sin(t1 - t2)
        num = m2 * l2**2 * p1**2 + (m1 + m2) * l1**2 * p2**2 - 2 * m2 * l1 * l2 * p1 * p2 * cos_d
        den = 2 * m2 * l1**2 * l2**2 * (m1 + m2 * sin_d**2)
        return num / den - (m1 + m2) * g * l1 * torch.cos(t1) - m2 * g * l2 * torch.cos(t2)

    def _native_field(self, graph: GraphBatch) -> VectorField:
        """Hamilton's equations of :meth:`energy` by hand. With ``Δ = θ1 − θ2``,
        ``D = 2 m2 l1² l2² (m1 + m2 sin²Δ)`` and ``T`` the kinetic term:
        ``θ̇1 = 2 (m2 l2² p1 − m2 l1 l2 p2 cos Δ) / D``,
        ``θ̇2 = 2 ((m1+m2) l1² p2 − m2 l1 l2 p1 cos Δ) / D``,
        ``∂T/∂Δ = (2 m2 l1 l2 p1 p2 − 4 T m2² l1² l2² cos Δ) sin Δ / D`` and
        ``ṗ1 = −∂T/∂Δ − (m1+m2) g l1 sin θ1``, ``ṗ2 = ∂T/∂Δ − m2 g l2 sin θ2``."""
        m = graph.c[:, 0].reshape(-1, 2)
        m1, m2 = m[:, 0], m[:, 1]
        l1, l2, g = (float(self.params[k]) for k in ("l1", "l2", "g"))
        a1, a2, a12 = 2 * m2 * l2**2, 2 * (m1 + m2) * l1**2, 2 * m2 * l1 * l2
        d0, d1 = 2 * m2 * l1**2 * l2**2 * m1, 2 * m2**2 * l1**2 * l2**2
        t4 = 4 * m2**2 * l1**2 * l2**2
        w1, w2 = (m1 + m2) * g * l1, m2 * g * l2

        def field(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
            lead = q.shape[:-2]
            th, pp = q.reshape(*lead, -1, 2), p.reshape(*lead, -1, 2)
            t1, t2, p1, p2 = th[..., 0], th[..., 1], pp[..., 0], pp[..., 1]
            cos_d, sin_d = torch.cos(t1 - t2), torch.sin(t1 - t2)
            inv_den = 1.0 / (d0 + d1 * sin_d**2)
            v1 = (a1 * p1 - a12 * p2 * cos_d) * inv_den
            v2 = (a2 * p2 - a12 * p1 * cos_d) * inv_den
            kinetic = 0.5 * (p1 * v1 + p2 * v2)  # T = ½ p·∂T/∂p (quadratic in p)
            dt_dd = (a12 * p1 * p2 - t4 * kinetic * cos_d) * sin_d * inv_den
            dp1 = -dt_dd - w1 * torch.sin(t1)
            dp2 = dt_dd - w2 * torch.sin(t2)
            return (torch.stack([v1, v2], -1).reshape(q.shape),
                    torch.stack([dp1, dp2], -1).reshape(q.shape))

        return field

    def surplus_values(self, n_graphs: int) -> Tensor:
        lengths = torch.tensor([self.params["l1"], self.params["l2"]], dtype=torch.float64)
        extra = super().surplus_values(n_graphs)  # [N, embed_dim - 1]: r_i = l_i, then zeros
        extra[:, :1] = lengths.repeat(n_graphs)[:, None]
        return extra

    def _sample(self, sizes: list[int], generator: torch.Generator
                ) -> tuple[Tensor, Tensor, Tensor]:
        n = len(sizes)
        lo, hi = _energy_range(self)
        a, b = self.params["max_angle"], self.params["max_momentum"]
        kept: list[tuple[Tensor, Tensor, Tensor]] = []
        total = 0
        for _ in range(1000):  # rejection sampling into the energy window
            m = min(4 * n, 100_000)
            q = uniform(generator, (m, 2), -a, a).reshape(-1, 1)
            p = uniform(generator, (m, 2), -b, b).reshape(-1, 1)
            c = constant_masses([2] * m, self.params["mass"], generator)
            cand = GraphBatch(q, p, c, torch.empty(2, 0, dtype=torch.long),
                              torch.arange(0, 2 * m + 1, 2))
            h = self.energy(q, p, cand)
            ok = ((h >= lo) & (h <= hi)).repeat_interleave(2)
            kept.append((q[ok], p[ok], c[ok]))
            total += int(ok.sum()) // 2
            if total >= n:
                break
        else:
            raise ValueError(f"{self.name}: could not sample energies in "
                             f"{self.params['energy_range']} from the angle/momentum box; "
                             "widen max_angle or max_momentum")
        q, p, c = (torch.cat(parts)[: 2 * n] for parts in zip(*kept, strict=True))
        return q, p, c
