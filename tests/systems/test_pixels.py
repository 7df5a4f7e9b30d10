"""The pixel pendulum's frames: deterministic, showing the true angle (read back from
the intensity centroid), and laid out as the HNN paper's two-frame observations
(``q[t]`` = frame ``t``, ``p[t]`` = frame ``t + 1``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import systems
from systems import pixels


@pytest.fixture(scope="module")
def angles() -> systems.Dataset:
    """Six float64 pendulum trajectories of 21 points (dt 0.15), E in [0.2, 1.5]."""
    return systems.generate("pendulum", trajectories=6, steps=20, dt=0.15, seed=3)


@pytest.fixture(scope="module")
def frames(angles) -> systems.Dataset:
    return pixels.from_angles(angles, size=14)


def test_rendering_is_deterministic_and_in_range():
    q = np.linspace(-2.0, 2.0, 9)
    a, b = pixels.render(q, 14), pixels.render(torch.tensor(q), 14)
    assert a.shape == (9, 196) and a.dtype == np.float64
    assert a.tobytes() == b.tobytes()
    assert a.min() >= 0.0 and a.max() <= 1.0 and a.max() > 0.9  # the bob's centre is bright
    assert not np.array_equal(a[0], a[1])  # different angles, different frames


def test_centroid_follows_the_true_angle(angles):
    """The frames show the simulated angle: the intensity centroid's direction from
    the pivot is the angle q of the ground truth (measured: max error 5.3e-3 rad at
    14x14, 1.3e-3 at 28x28, over swings up to 120 degrees)."""
    q = angles.q[..., 0]  # [T, G], up to ~2 rad from the vertical
    assert q.abs().max() > 1.0
    for size, tol in ((14, 1e-2), (28, 3e-3)):
        read = pixels.centroid_angle(pixels.render(q, size))
        assert np.abs(read - q.numpy()).max() < tol
    # the check can fail: a mirrored drawing reads -q
    mirrored = pixels.centroid_angle(pixels.render(-q, 14))
    assert np.abs(mirrored - q.numpy()).max() > 1.0


def test_dataset_layout(angles, frames):
    g, points = len(angles), angles.t.numel()
    assert frames.q.shape == (points - 1, g, 196) and frames.q.dtype == torch.float64
    assert frames.system_name == pixels.LABEL and frames.dt == pytest.approx(0.15)
    torch.testing.assert_close(frames.t, angles.t[:-1], rtol=0, atol=0)
    # p[t] is the frame after q[t]: p[t] == q[t + 1] frame-wise
    assert torch.equal(frames.p[:-1], frames.q[1:])
    # and q[t] is the rendering of the angle at t (the last frame only appears in p)
    expected = torch.from_numpy(pixels.render(angles.q[..., 0], 14))
    assert torch.equal(frames.q, expected[:-1]) and torch.equal(frames.p, expected[1:])
    assert torch.equal(frames.test, angles.test)
    assert frames.c.shape == (g, 0) and frames.sizes.tolist() == [1] * g
    # derivatives by central differences (the dataset needs them; the model does not)
    torch.testing.assert_close(frames.dq[1], (frames.q[2] - frames.q[0]) / 0.3)
    meta = frames.meta["pixels"]
    assert meta["size"] == 14 and meta["angles"]["system"]["name"] == "pendulum"
    assert meta["angles"]["seed"] == 3


def test_generate_is_deterministic_and_refuses_what_it_cannot_draw(angles):
    a = pixels.generate(3, 5, size=8, seed=1)
    b = pixels.generate(3, 5, size=8, seed=1)
    assert a.q.shape == (5, 3, 64) and torch.equal(a.q, b.q) and torch.equal(a.p, b.p)
    assert not torch.equal(a.q, pixels.generate(3, 5, size=8, seed=2).q)
    with pytest.raises(ValueError, match="one angle per graph"):
        pixels.from_angles(replace(angles, q=angles.q.repeat(1, 1, 2)))
    with pytest.raises(ValueError, match="at least 3 saved points"):
        pixels.from_angles(systems.generate("pendulum", 2, 1, 0.1))
    with pytest.raises(ValueError, match="unknown drawing parameter"):
        pixels.from_angles(angles, size=8, colour=1.0)
    with pytest.raises(ValueError, match="size must be at least 4"):
        pixels.render([0.0], 3)
    with pytest.raises(ValueError, match="square"):
        pixels.centroid_angle(np.ones((2, 10)))
