"""The Hénon–Heiles Hamiltonian (Hénon & Heiles 1964).

``H = ½(p_x² + p_y²)/m + ½(x² + y²) + x²y − y³/3``, one particle in the plane
(unit mass by default). In polar coordinates the potential reads
``V = r²/2 + r³ sin(3θ)/3``, and it factorises as
``1/6 − V = ⅓ (y + ½) ((1 − y)² − 3x²)``: the level ``V = 1/6`` is the triangle with
vertices at the three saddle points ``(0, 1)`` and ``(±√3/2, −½)`` (all at ``r = 1``),
and the escape energy is ``E_esc = 1/6``. Below it the orbits are bounded: the region
``V < E`` around the origin lies inside that triangle and is star-shaped about the
origin (along each ray ``V`` rises monotonically up to the energy ``1/(6 sin²3θ) ≥ 1/6``
of its maximum), which is all the sampler relies on.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from hogn.graph import GraphBatch
from hogn.integrators import VectorField
from systems.base import System, constant_masses, node_sum, uniform

__all__ = ["ESCAPE_ENERGY", "SADDLES", "HenonHeiles", "in_bounded_region", "max_radius",
           "potential"]

ESCAPE_ENERGY = 1.0 / 6.0
SADDLES = ((0.0, 1.0), (math.sqrt(3) / 2, -0.5), (-math.sqrt(3) / 2, -0.5))
"""The saddle points of the potential, where ``V = E_esc``."""


def potential(x: Tensor, y: Tensor) -> Tensor:
    """The Hénon–Heiles potential ``V(x, y)`` (any matching shapes)."""
    return 0.5 * (x**2 + y**2) + x**2 * y - y**3 / 3


def in_bounded_region(x: Tensor, y: Tensor, energy: Tensor) -> Tensor:
    """Whether ``(x, y)`` lies in the bounded region ``V < energy`` around the origin.

    That region is ``r < r_E(θ)``, the first crossing of ``V = E`` along the ray, where
    ``V`` still rises: ``V < E`` and ``r ∂V/∂r = x² + y² + 3x²y − y³ > 0`` (or ``r = 0``).
    Requires ``energy < 1/6``.
    """
    radial = x**2 + y**2 + 3 * x**2 * y - y**3
    return (potential(x, y) < energy) & ((radial > 0) | ((x == 0) & (y == 0)))


def max_radius(energy: Tensor, iterations: int = 60) -> Tensor:
    """Largest distance from the origin of the bounded region at ``energy < 1/6``.

    Reached towards a saddle (``sin 3θ = −1``): the root in ``[0, 1]`` of
    ``r²/2 − r³/3 = E``, which rises monotonically there (bisection).
    """
    lo, hi = torch.zeros_like(energy), torch.ones_like(energy)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        above = mid**2 / 2 - mid**3 / 3 > energy
        lo, hi = torch.where(above, lo, mid), torch.where(above, mid, hi)
    return hi


class HenonHeiles(System):
    """A star in a galactic potential (Hénon–Heiles), coordinates ``(x, y)``.

    Initial states: energy ``E ~ U(energy_range)`` (default ``[0.02, 0.15]``, strictly
    below the escape energy 1/6; regular orbits at the low end, a mixed regular and
    chaotic phase space towards the top), the position uniform over the bounded
    region ``V < E`` (rejection sampling from the disk of radius :func:`max_radius`)
    and the remaining kinetic energy ``E − V`` in a uniformly random direction: at
    each energy this is the microcanonical distribution, since in two dimensions the
    momentum shell ``|p|² = 2m(E − V)`` has the same measure wherever ``V < E``.

    Orbits below the escape energy cannot leave the region (it is walled off by
    ``V = E``); :meth:`stop_condition` stops those of user-given states above it once
    they leave the saddle triangle.
    """

    name = "henon-heiles"
    separable = True  # H = |p|²/2m + V(x, y)
    native_dim = 2
    n_particles = 1
    defaults: dict[str, Any] = {"mass": 1.0, "energy_range": (0.02, 0.15)}
    chaotic = True
    max_step = 0.05
    description = ("Hénon–Heiles, V = (x²+y²)/2 + x²y − y³/3; E ~ U[0.02, 0.15] below "
                   "escape energy 1/6")

    def _validate(self) -> None:
        super()._validate()
        self._positive_range("energy_range", below=(ESCAPE_ENERGY, "the escape energy 1/6"))

    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        m = graph.c[:, 0]
        e = (p**2).sum(-1) / (2 * m) + potential(q[..., 0], q[..., 1])
        return node_sum(e, graph)

    def _native_field(self, graph: GraphBatch) -> VectorField:
        """``dq = p / m``, ``dp = −(x + 2xy, y + x² − y²)`` by hand."""
        inv_m = 1.0 / graph.c[:, 0:1]
        unit = bool((inv_m == 1).all())  # unit masses: dq is p itself (one op fewer)

        def field(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
            x, y = q[..., 0], q[..., 1]
            force = torch.stack([-(x + 2 * x * y), -(y + x * x - y * y)], -1)
            return (p if unit else p * inv_m), force

        return field

    def stop_condition(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """Stop orbits outside the saddle triangle ``V = 1/6``: escaped (only possible
        from states at or above the escape energy, never from sampled ones)."""
        x, y = q[..., 0], q[..., 1]
        return (y <= -0.5) | (1 - y <= math.sqrt(3) * x.abs())

    def _sample(self, sizes: list[int], generator: torch.Generator
                ) -> tuple[Tensor, Tensor, Tensor]:
        n = len(sizes)
        c = constant_masses(sizes, self.params["mass"], generator)
        energy = uniform(generator, n, *self._positive_range("energy_range"))
        radius = max_radius(energy)
        x = torch.zeros(n, dtype=torch.float64)
        y = torch.zeros(n, dtype=torch.float64)
        pending = torch.arange(n)
        for _ in range(1000):  # acceptance >= area of the triangle / π ≈ 0.41
            k = pending.numel()
            r = radius[pending] * uniform(generator, k, 0.0, 1.0).sqrt()
            theta = uniform(generator, k, 0.0, 2 * math.pi)
            xs, ys = r * torch.cos(theta), r * torch.sin(theta)
            ok = in_bounded_region(xs, ys, energy[pending])
            x[pending[ok]], y[pending[ok]] = xs[ok], ys[ok]
            pending = pending[~ok]
            if pending.numel() == 0:
                break
        else:  # pragma: no cover - probability below 0.6^1000
            raise RuntimeError(f"{self.name}: rejection sampling did not finish")
        kinetic = energy - potential(x, y)
        angle = uniform(generator, n, 0.0, 2 * math.pi)
        speed = torch.sqrt(2 * c[:, 0] * kinetic)
        q = torch.stack([x, y], -1)
        p = torch.stack([speed * torch.cos(angle), speed * torch.sin(angle)], -1)
        return q, p, c
