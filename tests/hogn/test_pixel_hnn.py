"""The pixel HNN (``pixel-hnn``): an autoencoder whose 2-D latent follows a learned H.

Checked here: the latent field is Hamilton's equations of the latent energy (finite
differences), the latent energy is conserved over a 300-step rk4 latent rollout and
drifts with Euler, the canonical-coordinates loss by hand, a short ``hogn.train``
lowers each of the paper's three losses, the stepper and ``hogn.rollout`` agree with
encode → latent step → decode, save/load, and the image strip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hogn
from hogn import models
from hogn.models.pixel import PixelHNN
from systems import pixels

F64 = torch.float64


@pytest.fixture(scope="module")
def data():
    """Twelve 14x14 pixel-pendulum trajectories of 24 observations (float64)."""
    return pixels.generate(12, 24, size=14, seed=0)


def make(data, dtype=F64, seed=0, **config) -> PixelHNN:
    torch.manual_seed(seed)
    model = models.for_data("pixel-hnn", data, **{"hidden": 32, "hnn_hidden": 32, **config})
    assert isinstance(model, PixelHNN)
    return model.to(dtype)


def test_registered_and_built_for_the_data(data):
    assert "pixel-hnn" in models.names() and models.PixelHNN is PixelHNN
    model = make(data)
    assert model.is_stepper and model.config()["dim"] == 196
    assert model.config()["dt"] == pytest.approx(0.15)
    assert model.compatible_integrators() == []
    with pytest.raises(ValueError, match=r"leapfrog is a splitting method.*not separable"):
        make(data, integrator="leapfrog")
    with pytest.raises(ValueError, match="unknown latent 'cnn'; expected one of: hnn, mlp"):
        make(data, latent="cnn")
    with pytest.raises(ValueError, match="cc_weight must be a finite number >= 0"):
        make(data, cc_weight=-1.0)
    with pytest.raises(ValueError, match="pixel-hnn: dt must be a finite number > 0, got nan"):
        make(data, dt=float("nan"))


def test_latent_field_is_hamiltons_equations(data):
    """``dz_q = ∂H/∂z_p``, ``dz_p = −∂H/∂z_q`` against central differences of H."""
    model = make(data).eval()
    z = model.encode(data.state(0))
    eps = 1e-6
    dq, dp = model.latent_field(z[:, :1], z[:, 1:])
    shift = torch.tensor([eps, 0.0], dtype=F64)
    dh_dq = (model.latent_energy(z + shift) - model.latent_energy(z - shift)) / (2 * eps)
    dh_dp = (model.latent_energy(z + shift.flip(0)) - model.latent_energy(z - shift.flip(0))
             ) / (2 * eps)
    torch.testing.assert_close(dq[:, 0], dh_dp, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(dp[:, 0], -dh_dq, rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="latent='mlp' learns a latent vector field"):
        make(data, latent="mlp").latent_energy(z)


def test_latent_energy_is_conserved_over_the_latent_rollout(data):
    """The acceptance check: the learned H is conserved along the paper's rollout
    (encode once, integrate the latent). A random model, 300 frames, float64: rk4's
    relative error of H stays below 1e-6 (measured 1.4e-8) while the latents travel
    far (path length > 5 per trajectory; measured 16.6); Euler, the same field,
    drifts above 1e-3 (measured 8.9e-3) — the check can fail."""
    graph = data.state(0)
    drift = {}
    for method in ("rk4", "euler"):
        model = make(data, integrator=method)
        z = model.latent_rollout(graph, 300)
        assert z.shape == (301, 12, 2) and model.training  # the mode is restored
        torch.testing.assert_close(z[0], model.encode(graph), rtol=0, atol=0)
        energy = model.latent_energy(z).detach()  # [301, 12]
        drift[method] = float(((energy - energy[0]).abs().max(0).values
                               / energy[0].abs()).max())
        path = (z[1:] - z[:-1]).norm(dim=-1).sum(0)
        assert path.min() > 5.0
    assert drift["rk4"] < 1e-6
    assert drift["euler"] > 1e-3


def test_cc_loss_by_hand(data):
    """``L_CC = mean (z_p^t − (z_q^{t+1} − z_q^t))²`` with ``z`` from the encoder's
    weights applied by hand (numpy), on a tiny model."""
    model = make(data, hidden=3, layers=2, hnn_hidden=4)
    graph, y_q, y_p = data.state(2), data.q[3], data.p[3]
    w1, b1, w2, b2 = (t.detach().numpy() for t in model.encoder.parameters())

    def encode(x: np.ndarray) -> np.ndarray:
        return np.maximum(x @ w1.T + b1, 0.0) @ w2.T + b2

    z = encode(torch.cat([graph.q, graph.p], -1).numpy())
    z_next = encode(torch.cat([y_q, y_p], -1).numpy())
    expected = np.mean((z[:, 1] - (z_next[:, 0] - z[:, 0])) ** 2)
    terms = model.loss_terms(graph, y_q, y_p)
    assert float(terms["cc"].detach()) == pytest.approx(expected, rel=1e-12)
    # a rollout target [N, k, P] reads its first step
    same = model.loss_terms(graph, torch.stack([y_q, y_q], 1), torch.stack([y_p, y_p], 1))
    assert torch.equal(same["cc"], terms["cc"])
    # L_AE and L_HNN as defined
    x = torch.cat([graph.q, graph.p], -1)
    z_t = torch.from_numpy(z)
    torch.testing.assert_close(terms["ae"], ((model.decode(z_t) - x) ** 2).mean())
    torch.testing.assert_close(terms["hnn"], ((model.latent_step(z_t)
                                               - torch.from_numpy(z_next)) ** 2).mean())
    weighted = terms["ae"] + terms["cc"] + 0.1 * terms["hnn"]
    torch.testing.assert_close(model.auxiliary_loss(graph, y_q, y_p), weighted)
    with pytest.raises(ValueError, match=r"next observations must be \[N, P\]"):
        model.loss_terms(graph, y_q[:, :10], y_p)


def test_short_training_lowers_each_loss(data):
    """150 full-batch Adam steps of ``hogn.train(target="rollout")`` (float32): each
    of L_AE, L_CC, L_HNN on a held-out batch falls (measured: 0.032 -> 0.016,
    2.5e-3 -> 5e-7, 6.9e-4 -> 2e-6)."""
    model = make(data, dtype=torch.float32)
    d32 = data.to(dtype=torch.float32)
    graph, y_q, y_p = d32.state(3), d32.q[4], d32.p[4]
    with torch.no_grad():
        before = {k: float(v) for k, v in model.loss_terms(graph, y_q, y_p).items()}
    result = hogn.train(model, data, target="rollout", rollout_steps=1, steps=150,
                        batch_size=10**6, progress=False)
    with torch.no_grad():
        after = {k: float(v) for k, v in model.loss_terms(graph, y_q, y_p).items()}
    for key in ("ae", "cc", "hnn"):
        assert after[key] < 0.8 * before[key], (key, before, after)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_stepper_rollout_and_files(data, tmp_path):
    model = make(data).eval()
    graph = data.state(5)
    q1, p1 = model.next_state(graph)
    x = model.decode(model.latent_step(model.encode(graph)))
    torch.testing.assert_close(torch.cat([q1, p1], -1), x, rtol=0, atol=0)
    dq, dp = model.delta(graph)
    torch.testing.assert_close(dq, q1 - graph.q, rtol=0, atol=0)
    torch.testing.assert_close(dp, p1 - graph.p, rtol=0, atol=0)
    # hogn.rollout re-encodes every decoded observation
    qs, ps = hogn.rollout(model, graph, 3, integrator=None)
    assert qs.shape == ps.shape == (4, 12, 196)
    q, p = graph.q, graph.p
    for i in range(1, 4):
        with torch.no_grad():
            q, p = model.next_state(graph.replace(q=q, p=p))
        torch.testing.assert_close(qs[i], q, rtol=0, atol=1e-12)
        torch.testing.assert_close(ps[i], p, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"is a stepper over its fixed dt=0\.15.*got integrator"):
        model.next_state(graph, "rk4")
    with pytest.raises(ValueError, match=r"built for dt=0\.15"):
        model.next_state(graph, dt=0.1)
    path = model.save(tmp_path / "pixel.pt")
    loaded = models.load(path)
    assert type(loaded) is PixelHNN and loaded.config() == model.config()
    assert torch.equal(loaded.latent_rollout(graph, 5), model.latent_rollout(graph, 5))


def test_image_strip_is_written(data, tmp_path):
    model = make(data).eval()
    graph = data.state(0).select([0])
    z = model.latent_rollout(graph, 11)  # [12, 1, 2]
    with torch.no_grad():
        pred = model.decode(z)[:, 0, :196]  # frame t of each observation
    path = hogn.plot.image_strip(data.q[:12, 0], pred, tmp_path / "strip.png", every=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    with pytest.raises(ValueError, match="one shape"):
        hogn.plot.image_strip(data.q[:12, 0], pred[:5], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="square P"):
        hogn.plot.image_strip(data.q[:3, 0, :10], pred[:3, :10], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
