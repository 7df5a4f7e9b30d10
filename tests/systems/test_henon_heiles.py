"""Hénon–Heiles: the escape energy is the potential's saddle value, the bounded region is
what the sampler and the module say it is, the sampler fills its documented range, and
the ground truth agrees with scipy's DOP853 on the equations of motion written out by
hand and conserves energy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import systems
from hogn.graph import GraphBatch, ptr_from_sizes
from systems.henon_heiles import (
    ESCAPE_ENERGY,
    SADDLES,
    in_bounded_region,
    max_radius,
    potential,
)

F64 = torch.float64


def _states(q: list[list[float]], p: list[list[float]], mass: float = 1.0) -> GraphBatch:
    n = len(q)
    return GraphBatch(torch.tensor(q, dtype=F64), torch.tensor(p, dtype=F64),
                      torch.full((n, 1), mass, dtype=F64), torch.empty(2, 0, dtype=torch.long),
                      ptr_from_sizes([1] * n))


def turning_radius(theta: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """First crossing of ``V = E`` along the ray at angle ``θ``: the smallest positive
    root of ``sin(3θ) r³/3 + r²/2 − E`` (numpy's polynomial roots, independent of the
    module's bisection)."""
    out = []
    for t, e in zip(np.ravel(theta), np.ravel(energy), strict=True):
        roots = np.roots([math.sin(3 * t) / 3, 0.5, 0.0, -e])
        real = roots[(np.abs(roots.imag) < 1e-12) & (roots.real > 0)].real
        out.append(real.min())
    return np.array(out).reshape(np.shape(theta))


def hessian(x: float, y: float) -> torch.Tensor:
    xy = torch.tensor([x, y], dtype=F64)
    return torch.autograd.functional.hessian(lambda v: potential(v[0], v[1]), xy)


# ----------------------------------------------------------------- the potential
def test_escape_energy_is_the_saddle_value():
    system = systems.get("henon-heiles")
    saddles = torch.tensor(SADDLES, dtype=F64)
    g = _states(saddles.tolist(), [[0.0, 0.0]] * 3)
    h = system.hamiltonian(g.q, g.p, g)
    torch.testing.assert_close(h, torch.full((3,), 1 / 6, dtype=F64), rtol=1e-15, atol=0)
    assert ESCAPE_ENERGY == pytest.approx(1 / 6, rel=1e-15)
    dq, dp = system.time_derivative(g.q, g.p, g)
    assert dp.abs().max() < 1e-15 and dq.abs().max() == 0  # equilibria
    for x, y in SADDLES:  # one rising and one falling direction: saddles
        low, high = torch.linalg.eigvalsh(hessian(x, y)).tolist()
        assert low < -0.5 and high > 0.5
    # the origin is the minimum, V = 0 with Hessian the identity (unit frequencies)
    assert potential(torch.tensor(0.0, dtype=F64), torch.tensor(0.0, dtype=F64)) == 0
    torch.testing.assert_close(hessian(0.0, 0.0), torch.eye(2, dtype=F64))
    # and these are all the critical points: ∂V/∂x = x(1 + 2y) = 0 leaves x = 0
    # (y = 0 or 1) or y = −1/2 (x² = 3/4); check the field vanishes nowhere else on a grid
    grid = torch.linspace(-1.5, 1.5, 301, dtype=F64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    force = torch.stack([xx + 2 * xx * yy, yy + xx**2 - yy**2], -1).norm(dim=-1)
    near = torch.stack([xx, yy], -1)[force < 0.02]
    critical = torch.cat([torch.zeros(1, 2, dtype=F64), saddles])
    assert torch.cdist(near, critical).min(1).values.max() < 0.03


def test_potential_factorises_into_the_saddle_triangle():
    """``1/6 − V = ⅓ (y + ½)((1 − y)² − 3x²)``: ``V = 1/6`` on the three lines through the
    saddles, ``V < 1/6`` inside the triangle they bound, whose inscribed circle (radius
    1/2) touches the level set at the middle of each side."""
    gen = torch.Generator().manual_seed(0)
    x, y = 3 * torch.rand(2, 1000, generator=gen, dtype=F64) - 1.5
    torch.testing.assert_close(1 / 6 - potential(x, y),
                               (y + 0.5) * ((1 - y) ** 2 - 3 * x**2) / 3, rtol=0, atol=1e-14)
    inside = (y > -0.5) & (1 - y > math.sqrt(3) * x.abs())
    assert (potential(x[inside], y[inside]) < 1 / 6).all() and inside.sum() > 100
    theta = torch.linspace(0, 2 * math.pi, 3601, dtype=F64)
    for radius, top in ((0.3, None), (0.49, None), (0.5, 1 / 6)):
        v = potential(radius * torch.cos(theta), radius * torch.sin(theta))
        assert v.max() < 1 / 6 if top is None else v.max().item() == pytest.approx(top,
                                                                                  abs=1e-12)
    # the side midpoints, e.g. (0, −1/2), are on the level set too
    assert potential(torch.tensor(0.0, dtype=F64), torch.tensor(-0.5, dtype=F64)).item() \
        == pytest.approx(1 / 6, abs=1e-15)


def test_bounded_region_is_star_shaped_inside_the_triangle():
    """Below 1/6, ``V`` rises along every ray up to the first crossing ``r_E(θ)``; the
    module's test of membership is ``r < r_E(θ)``, the region stays inside the triangle
    and within :func:`max_radius` (reached towards a saddle), and the outer regions
    where ``V < E`` again (past the saddles) are excluded."""
    gen = torch.Generator().manual_seed(1)
    theta = 2 * math.pi * torch.rand(400, generator=gen, dtype=F64)
    energy = 0.005 + (ESCAPE_ENERGY - 0.006) * torch.rand(400, generator=gen, dtype=F64)
    r_e = torch.from_numpy(turning_radius(theta.numpy(), energy.numpy()))
    c, s = torch.cos(theta), torch.sin(theta)
    torch.testing.assert_close(potential(r_e * c, r_e * s), energy, rtol=0, atol=1e-12)
    frac = torch.linspace(0.0, 1.0, 101, dtype=F64)[:, None]
    v = potential(frac * r_e * c, frac * r_e * s)
    assert (v.diff(dim=0) > 0).all()  # rising along the ray: star-shaped about the origin
    assert (r_e <= max_radius(energy) + 1e-12).all() and (max_radius(energy) < 1).all()
    toward_saddle = torch.full_like(energy, math.pi / 2)  # towards (0, 1): sin 3θ = −1
    torch.testing.assert_close(max_radius(energy), torch.from_numpy(
        turning_radius(toward_saddle.numpy(), energy.numpy())), rtol=0, atol=1e-12)
    # membership: random points on the same rays, inside and outside r_E
    r = 2 * r_e * torch.rand(400, generator=gen, dtype=F64)
    member = in_bounded_region(r * c, r * s, energy)
    assert torch.equal(member, r < r_e) and 50 < member.sum() < 350
    system = systems.get("henon-heiles")
    assert not system.stop_condition(torch.stack([r * c, r * s], -1)[member][:, None],
                                     None, _states([[0.0, 0.0]], [[0.0, 0.0]])).any()
    # past a saddle V < E holds again, but that is the outside
    far = torch.tensor([2.0], dtype=F64)
    assert potential(torch.zeros(1, dtype=F64), far) < 0.1
    origin = torch.zeros(1, dtype=F64)
    assert not in_bounded_region(origin, far, torch.tensor([0.1], dtype=F64)).any()
    assert in_bounded_region(origin, origin, torch.tensor([0.01], dtype=F64)).all()


# ------------------------------------------------------------------------ sampler
@pytest.mark.parametrize("params, lo, hi", [
    ({}, 0.02, 0.15),
    ({"energy_range": (0.1, 0.165), "mass": (0.5, 2.0)}, 0.1, 0.165),
])
def test_sampled_states_fill_the_range_inside_the_region(params, lo, hi):
    system = systems.get("henon-heiles", **params)
    g = system.sample(3000, seed=0)
    h = system.hamiltonian(g.q, g.p, g)
    assert h.min() >= lo - 1e-14 and h.max() <= hi + 1e-14 and h.max() < ESCAPE_ENERGY
    assert h.min() < lo + 0.02 * (hi - lo) and h.max() > hi - 0.02 * (hi - lo)
    x, y = g.q[:, 0], g.q[:, 1]
    r, theta = g.q.norm(dim=-1), torch.atan2(y, x)
    r_e = torch.from_numpy(turning_radius(theta.numpy(), h.numpy()))
    assert (r < r_e).all()  # in the bounded region, by the independent turning radius
    assert not system.stop_condition(g.q, g.p, g).any()
    # positions uniform over the region: the region shrunk by 1/√2 about the origin (it
    # is star-shaped) holds half the area, so half the points
    assert (r < r_e / math.sqrt(2)).double().mean().item() == pytest.approx(0.5, abs=0.03)
    # momenta in a uniformly random direction
    hist = torch.histc(torch.atan2(g.p[:, 1], g.p[:, 0]), bins=4, min=-math.pi, max=math.pi)
    assert (hist > 0.22 * 3000).all()


@pytest.mark.parametrize("energy_range", [(0.02, 1 / 6), (0.1, 0.2), (0.2, 0.3)])
def test_energy_range_at_or_above_escape_is_refused(energy_range):
    with pytest.raises(ValueError, match=r"henon-heiles: energy_range must stay below the "
                                         r"escape energy 1/6 ≈ 0\.1667"):
        systems.get("henon-heiles", energy_range=energy_range)
    with pytest.raises(ValueError, match="energy_range must be a number or"):
        systems.get("henon-heiles", energy_range=(0.0, 0.1))
    assert systems.get("henon-heiles", energy_range=(0.1, 0.1666)).params["energy_range"]


# -------------------------------------------------------------------- dynamics
def test_analytic_field_equals_autograd_of_h():
    """The fast path of the simulation, with a leading time axis, masses, states outside
    the region and an embedding whose surplus momentum is not zero."""
    system = systems.get("henon-heiles", mass=(0.5, 2.0), embed_dim=3)
    g = system.sample(6, seed=3)
    gen = torch.Generator().manual_seed(4)
    q = torch.stack([g.q, 3 * torch.randn(g.q.shape, generator=gen, dtype=F64)])
    p = torch.stack([g.p, torch.randn(g.p.shape, generator=gen, dtype=F64)])
    dq_a, dp_a = system.analytic_field(q, p, g)
    dq, dp = system.time_derivative(q, p, g)
    torch.testing.assert_close(dq_a, dq, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(dp_a, dp, rtol=1e-13, atol=1e-13)
    assert dp[1, :, 2].abs().max() == 0 and dq[1, :, 2].abs().max() == 0


def scipy_henon_heiles(q0: np.ndarray, p0: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``ẍ = −x − 2xy``, ``ÿ = −y − x² + y²`` (unit mass) by DOP853, ``[T, 4]``."""
    def rhs(_t, s):
        x, y, px, py = s
        return [px, py, -x - 2 * x * y, -y - x * x + y * y]

    sol = solve_ivp(rhs, (0.0, t[-1]), [*q0, *p0], method="DOP853", t_eval=t, rtol=1e-12,
                    atol=1e-12)
    assert sol.success, sol.message
    return sol.y.T


def test_preset_ground_truth_agrees_with_scipy_and_conserves_energy():
    preset = systems.get_preset("meta-henon-heiles")
    assert (preset.system, preset.points, preset.t_end) == ("henon-heiles", 200, 20.0)
    mirror = systems.get_preset("meta-magnetic-mirror")  # the same sampling of time
    assert (preset.trajectories, preset.points, preset.t_end) == (
        mirror.trajectories, mirror.points, mirror.t_end)
    data = systems.from_preset("meta-henon-heiles", trajectories=4, seed=0)
    assert data.q.shape == (200, 4, 2) and data.t[-1].item() == pytest.approx(20.0)
    assert data.meta["resampled"] == {"rejected_by_system": 0, "energy_drift": 0}
    h = data.energy()
    assert (h - h[:1]).abs().max() < 1e-10
    assert h[0].min() >= 0.02 and h[0].max() <= 0.15
    # every orbit stays in its bounded region, and goes around in it
    x, y = data.q[..., 0], data.q[..., 1]
    assert in_bounded_region(x, y, h[0] + 1e-12).all()
    assert (data.q.amax(0) - data.q.amin(0)).min() > 0.1
    t = data.t.numpy()
    worst = 0.0
    for g in range(4):
        ref = scipy_henon_heiles(data.q[0, g].numpy(), data.p[0, g].numpy(), t)
        ours = torch.cat([data.q[:, g], data.p[:, g]], -1).numpy()
        worst = max(worst, np.abs(ours - ref).max())
    print(f"\n[scipy] henon-heiles: max |ours - DOP853| = {worst:.1e} over t <= 20")
    assert worst < 1e-8


def test_orbits_above_the_escape_energy_leave_and_are_stopped():
    """Aimed at the saddle (0, 1) along the y axis: just below 1/6 the orbit turns back,
    just above it escapes through the saddle and is stopped; the others run on."""
    system = systems.get("henon-heiles")

    def speed(energy):  # from the origin, V = 0
        return math.sqrt(2 * energy)

    g = _states([[0.0, 0.0]] * 3, [[0.0, speed(0.99 / 6)], [0.0, speed(1.01 / 6)],
                                   [speed(0.1), 0.0]])
    q, _, stopped = system.trajectory(g, 0.1, 80, stop=True)  # the escape takes t ≈ 4
    assert stopped.tolist() == [False, True, False]
    assert torch.isfinite(q[:, [0, 2]]).all()
    assert 0.8 < q[:, 0, 1].max() < 1  # came close to the saddle, turned back
    assert q[-1, 0, 1] < q[:, 0, 1].max() - 0.1
    escaped = q[:, 1, 1]
    last = int(torch.isfinite(escaped).sum())
    assert 0 < last < 81 and torch.isnan(escaped[last:]).all()
    assert 0.9 < escaped[last - 1] < 1  # stopped once through the saddle
    assert torch.equal(q[:, 0, 0], torch.zeros(81, dtype=F64))  # stays on the axis
