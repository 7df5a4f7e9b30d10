"""The magnetic-mirror (magnetic bottle) Hamiltonian of Efthymiopoulos et al. (2015).

``H = ½(p_ρ² + p_z²) + ½ρ² + ½ρ²z² − ⅛ρ⁴ + ⅛ρ²z⁴ − 1/16 ρ⁴z² + 1/128 ρ⁶``,
one particle with coordinates ``(ρ, z)``. The potential factorises as
``V = ρ² (ρ² − 8 − 4z²)² / 128 ≥ 0``: an inner valley around the axis ``ρ = 0`` is
walled off from an outer valley ``ρ² = 8 + 4z²`` by a ridge whose lowest point,
at ``z = 0``, ``ρ² = 8/3``, has the escape energy ``E_esc = 16/27 ≈ 0.593``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hogn.graph import GraphBatch
from hogn.integrators import VectorField
from systems.base import System, constant_masses, node_sum, uniform

__all__ = ["ESCAPE_ENERGY", "MagneticMirror"]

ESCAPE_ENERGY = 16.0 / 27.0


def potential(rho: Tensor, z: Tensor) -> Tensor:
    """The mirror potential ``V(ρ, z)`` (any matching shapes)."""
    r2, z2 = rho**2, z**2
    return (0.5 * r2 + 0.5 * r2 * z2 - r2**2 / 8 + r2 * z2**2 / 8 - r2**2 * z2 / 16
            + r2**3 / 128)


def inner_turning_radius(energy: Tensor, z: Tensor, iterations: int = 80) -> Tensor:
    """Largest ``ρ ≥ 0`` of the inner valley with ``V(ρ, z) ≤ energy`` (bisection).

    ``V`` rises monotonically in ``ρ²`` on ``[0, 8w/3]``, ``w = 1 + z²/2``, up to the
    ridge value ``16 w³ / 27 ≥ E_esc``; requires ``energy < 16 w³ / 27``.
    """
    w = 1 + z**2 / 2
    lo, hi = torch.zeros_like(energy), 8 * w / 3
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        above = potential(mid.sqrt(), z) > energy
        lo, hi = torch.where(above, lo, mid), torch.where(above, mid, hi)
    return lo.sqrt()


class MagneticMirror(System):
    """Charged particle in a magnetic bottle, coordinates ``(ρ, z)``, unit mass.

    Initial states: energy ``E ~ U(energy_range)`` (default ``[0.1, 0.5]``, below the
    escape energy 16/27), ``z ~ U[−z_range, z_range]`` (0.5), ``ρ`` a uniform fraction
    ``rho_fraction`` (``[0.2, 0.9]``) of the inner turning radius at that ``z``, and the
    remaining kinetic energy in a random direction. Orbits that still run off along
    the axis beyond ``|z| > escape_z`` (10) are resampled.
    """

    name = "magnetic-mirror"
    separable = True  # H = |p|²/2m + V(ρ, z) in these coordinates
    native_dim = 2
    n_particles = 1
    defaults: dict[str, Any] = {"mass": 1.0, "energy_range": (0.1, 0.5), "z_range": 0.5,
                                "rho_fraction": (0.2, 0.9), "escape_z": 10.0}
    chaotic = True
    max_step = 0.05
    description = "magnetic bottle (ρ, z); E ~ U[0.1, 0.5] below escape energy 16/27"

    def _validate(self) -> None:
        super()._validate()
        self._positive_range("energy_range",
                             below=(ESCAPE_ENERGY, "the escape energy 16/27"))
        _, f_hi = self._positive_range("rho_fraction")
        if f_hi > 1:
            raise ValueError(f"{self.name}: rho_fraction must lie in (0, 1], got "
                             f"{self.params['rho_fraction']!r}")

    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        m = graph.c[:, 0]
        e = (p**2).sum(-1) / (2 * m) + potential(q[..., 0], q[..., 1])
        return node_sum(e, graph)

    def _native_field(self, graph: GraphBatch) -> VectorField:
        """``dq = p / m``; with ``r = ρ²``, ``w = z²``: ``ṗ_ρ = −2ρ (½ + ½w − r/4 + w²/8
        − rw/8 + 3r²/128)``, ``ṗ_z = −2z (½r + rw/4 − r²/16)``."""
        inv_m = 1.0 / graph.c[:, 0:1]
        unit = bool((inv_m == 1).all())  # unit masses: dq is p itself (one op fewer)

        def field(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
            rho, z = q[..., 0], q[..., 1]
            r, w = rho * rho, z * z
            d_r = 0.5 + 0.5 * w - 0.25 * r + 0.125 * w * w - 0.125 * r * w + (3 / 128) * r * r
            d_w = r * (0.5 + 0.25 * w - r / 16)
            return (p if unit else p * inv_m), torch.stack([-2 * rho * d_r, -2 * z * d_w], -1)

        return field

    def stop_condition(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """Stop orbits that leave the bottle along its axis (``|z| > escape_z``)."""
        return q[..., 1].abs() > self.params["escape_z"]

    def _sample(self, sizes: list[int], generator: torch.Generator
                ) -> tuple[Tensor, Tensor, Tensor]:
        n = len(sizes)
        c = constant_masses(sizes, self.params["mass"], generator)
        energy = uniform(generator, n, *self._positive_range("energy_range"))
        z_max = float(self.params["z_range"])
        z = uniform(generator, n, -z_max, z_max)
        rho_t = inner_turning_radius(energy, z)
        rho = rho_t * uniform(generator, n, *self._positive_range("rho_fraction"))
        kinetic = (energy - potential(rho, z)).clamp(min=0.0)
        angle = uniform(generator, n, 0.0, 2 * torch.pi)
        speed = torch.sqrt(2 * c[:, 0] * kinetic)
        q = torch.stack([rho, z], -1)
        p = torch.stack([speed * torch.cos(angle), speed * torch.sin(angle)], -1)
        return q, p, c
