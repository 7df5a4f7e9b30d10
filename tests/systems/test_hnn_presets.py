"""The HNN presets hold the authors' code's data (greydanus/hamiltonian-nn,
experiment-*/data.py), measured on the generated data: Hamiltonians written out from
the code's formulas (not through our classes), radius ranges, points and time span,
splits, and the observation noise against the noise-free trajectories. The report's
variants (``hnn-report-*``) keep the presets as the report's text describes them."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

import systems


@pytest.fixture(scope="module")
def spring() -> systems.Dataset:
    return systems.from_preset("hnn-mass-spring", seed=0)


@pytest.fixture(scope="module")
def pendulum() -> systems.Dataset:
    return systems.from_preset("hnn-pendulum", seed=0)


def _grid(data: systems.Dataset, points: int, t_end: float) -> None:
    assert data.t.numel() == points
    torch.testing.assert_close(data.t, torch.linspace(0.0, t_end, points, dtype=torch.float64))


def _noise(data: systems.Dataset, sigma: float) -> None:
    """The observed states are the clean ones plus independent N(0, sigma²) noise."""
    assert data.q_obs is not None and data.p_obs is not None
    err = torch.cat([(data.q_obs - data.q).flatten(), (data.p_obs - data.p).flatten()])
    n = err.numel()
    # std within 4 standard errors (sigma / sqrt(2n)), mean within 4 of sigma / sqrt(n)
    assert abs(float(err.std()) - sigma) < 4 * sigma / math.sqrt(2 * n), float(err.std())
    assert abs(float(err.mean())) < 4 * sigma / math.sqrt(n), float(err.mean())
    assert stats.normaltest(err.numpy()).pvalue > 1e-3


def _radius_uniform(name: str, lo: float, hi: float) -> None:
    """Initial phase-plane radii uniform on [lo, hi] (Kolmogorov–Smirnov), angles
    uniform on the circle."""
    system = systems.get(systems.get_preset(name).system, **systems.get_preset(name).params)
    g = system.sample(4000, seed=3)
    r = torch.hypot(g.q[:, 0], g.p[:, 0])
    assert float(r.min()) >= lo and float(r.max()) <= hi
    assert stats.kstest(r.numpy(), stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3
    angle = torch.atan2(g.p[:, 0], g.q[:, 0]) % (2 * math.pi)
    assert stats.kstest(angle.numpy(), stats.uniform(0, 2 * math.pi).cdf).pvalue > 1e-3


# ----------------------------------------------------------- the authors' code
def test_mass_spring_is_the_codes_spring(spring):
    """experiment-spring/data.py: H = q² + p², radii U[0.1, 1], 30 points over t = 3,
    noise 0.1, 50 trajectories split 25/25."""
    q, p = spring.q[..., 0], spring.p[..., 0]  # [T, G], clean
    code_h = q**2 + p**2
    torch.testing.assert_close(spring.energy(), code_h, rtol=1e-12, atol=1e-12)
    # its field: dq = ∂H/∂p = 2p, dp = −∂H/∂q = −2q (ω = 2)
    torch.testing.assert_close(spring.dq[..., 0], 2 * p, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(spring.dp[..., 0], -2 * q, rtol=1e-12, atol=1e-12)
    # and the trajectories are the exact rotations at ω = 2
    t = spring.t[:, None]
    exact_q = q[0] * torch.cos(2 * t) + p[0] * torch.sin(2 * t)
    torch.testing.assert_close(q, exact_q, rtol=0, atol=1e-9)
    radius = code_h[0].sqrt()
    assert float(radius.min()) >= 0.1 and float(radius.max()) <= 1.0
    assert float(radius.min()) < 0.3 and float(radius.max()) > 0.8  # the range is used
    _grid(spring, 30, 3.0)
    assert len(spring) == 50 and int(spring.test.sum()) == 25
    _noise(spring, 0.1)


def test_mass_spring_radii_are_uniform():
    _radius_uniform("hnn-mass-spring", 0.1, 1.0)


def test_pendulum_is_the_codes_pendulum(pendulum):
    """experiment-pend/data.py: H = 3(1 − cos q) + p², radii U[1.3, 2.3], 45 points
    over t = 3, noise 0.1, 25/25."""
    q, p = pendulum.q[..., 0], pendulum.p[..., 0]
    code_h = 3 * (1 - torch.cos(q)) + p**2
    torch.testing.assert_close(pendulum.energy(), code_h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pendulum.dq[..., 0], 2 * p, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pendulum.dp[..., 0], -3 * torch.sin(q), rtol=1e-12, atol=1e-12)
    radius = torch.hypot(q[0], p[0])
    assert float(radius.min()) >= 1.3 and float(radius.max()) <= 2.3
    assert float(code_h.max()) < 6.0  # librations: below the separatrix 2mgl = 6
    _grid(pendulum, 45, 3.0)
    assert len(pendulum) == 50 and int(pendulum.test.sum()) == 25
    _noise(pendulum, 0.1)


def test_pendulum_radii_are_uniform():
    _radius_uniform("hnn-pendulum", 1.3, 2.3)


def test_two_body_is_the_codes_orbits():
    """experiment-2body/data.py: 1000 orbits x 50 points over t = 20, no input noise,
    80/20, separations in [√2, 3√2], near-circular (orbit noise 0.05)."""
    data = systems.from_preset("hnn-two-body", seed=0)
    assert data.q_obs is None and data.p_obs is None and data.meta["noise"] == 0.0
    _grid(data, 50, 20.0)
    assert len(data) == 1000 and int(data.test.sum()) == 200
    q0 = data.q[0].reshape(-1, 2, 2)
    separation = (q0[:, 0] - q0[:, 1]).norm(dim=-1)
    assert float(separation.min()) >= math.sqrt(2) and float(separation.max()) <= 3 * math.sqrt(2)
    # near-circular: the speed of body 1 over the circular speed 1 / (2 sqrt(r)), r = sep/2
    speed = data.p[0].reshape(-1, 2, 2)[:, 0].norm(dim=-1)
    ratio = speed * 2 * (separation / 2).sqrt()
    assert abs(float(ratio.mean()) - 1) < 0.01 and 0.01 < float(ratio.std()) < 0.06


def test_three_body_is_the_codes_orbits():
    """experiment-3body/data.py: 5000 orbits x 20 points over t = 5, no input noise, 80/20."""
    data = systems.from_preset("hnn-three-body", trajectories=400, seed=0)
    preset = systems.get_preset("hnn-three-body")
    assert (preset.trajectories, preset.points, preset.t_end, preset.noise,
            preset.test_fraction) == (5000, 20, 5.0, 0.0, 0.2)
    assert data.q_obs is None and int(data.test.sum()) == 80
    _grid(data, 20, 5.0)
    radius = data.q[0].reshape(-1, 3, 2).norm(dim=-1)  # centred Lagrange triangles
    assert float(radius.min()) >= 0.9 - 1e-12 and float(radius.max()) <= 1.2 + 1e-12


# ---------------------------------------------------------- the report's text
def test_report_variants_keep_the_reports_setup():
    spring = systems.from_preset("hnn-report-mass-spring", seed=0)
    q, p = spring.q[..., 0], spring.p[..., 0]
    torch.testing.assert_close(spring.energy(), (q**2 + p**2) / 2, rtol=1e-12, atol=1e-12)
    energy = spring.energy()[0]
    assert float(energy.min()) >= 0.2 and float(energy.max()) <= 1.0
    assert len(spring) == 50 and int(spring.test.sum()) == 10 and spring.t.numel() == 30
    pend = systems.from_preset("hnn-report-pendulum", seed=0)
    e0 = pend.energy()[0]
    assert float(e0.min()) >= 1.3 and float(e0.max()) <= 2.3 and pend.t.numel() == 30
    for name, points, t_end in (("hnn-report-two-body", 50, 20.0),
                                ("hnn-report-three-body", 50, 5.0)):
        preset = systems.get_preset(name)
        assert (preset.trajectories, preset.points, preset.t_end, preset.noise,
                preset.test_fraction) == (1000, points, t_end, 0.05, 0.2)


# ------------------------------------------------------------- the parameter
def test_radius_range_default_leaves_the_energy_sampler():
    for name in ("mass-spring", "pendulum", "damped-pendulum"):
        system = systems.get(name)
        assert system.params["radius_range"] is None
        lo, hi = system.params["energy_range"]
        e = system.hamiltonian(*(lambda g: (g.q, g.p, g))(system.sample(500, seed=1)))
        assert float(e.min()) >= lo and float(e.max()) <= hi


@pytest.mark.parametrize("value", [(1.0, 0.1), (-0.1, 1.0), (0.0, 1.0), "wide"])
def test_bad_radius_range_is_refused(value):
    with pytest.raises(ValueError, match=r"mass-spring: radius_range must be a number or "
                                         r"\(lo, hi\)"):
        systems.get("mass-spring", radius_range=value)
