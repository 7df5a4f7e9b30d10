"""hogn.plot.animate_rollout: a GIF that opens, with the frames and pixels asked for,
whose prediction panel shows the prediction; mistakes are named."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from hogn.io import is_temp_file
from hogn.plot import animate_rollout, frame_indices

SMALL = {"size": (3.0, 1.6), "dpi": 40}  # 120 x 64 pixels: fast


def _circles(points: int = 21, n: int = 3, d: int = 2) -> np.ndarray:
    """Particles on a circle of radius 1 about (2, 2): ``[T, n, d]``."""
    angle = np.linspace(0, 2, points)[:, None] + 2 * np.pi * np.arange(n)[None] / n
    q = np.stack([2 + np.cos(angle), 2 + np.sin(angle), np.zeros_like(angle)], axis=-1)
    return q[..., :d]


def _frames(path) -> list[np.ndarray]:
    with Image.open(path) as im:
        out = []
        for i in range(im.n_frames):
            im.seek(i)
            out.append(np.asarray(im.convert("RGB")).astype(int))
        return out


def test_frame_indices_stride_and_cap():
    assert frame_indices(10, 3).tolist() == [0, 3, 6, 9]
    assert frame_indices(10_001, max_frames=100).size <= 100
    assert frame_indices(10_001, 2, max_frames=100).tolist()[:2] == [0, 101]  # widened
    assert frame_indices(1).tolist() == [0]
    for bad in ({"points": 0}, {"points": 5, "stride": 0}, {"points": 5, "max_frames": 0}):
        with pytest.raises(ValueError, match="must be an int >= 1"):
            frame_indices(**bad)


def test_gif_has_the_frames_size_and_time_order(tmp_path):
    q = _circles(points=25)
    path = animate_rollout(q, q, tmp_path / "a.gif", t=np.linspace(0, 1, 25), max_frames=10,
                           fps=10, title="circle", **SMALL)
    with Image.open(path) as im:
        assert im.format == "GIF" and im.size == (120, 64)
        assert im.n_frames == math.ceil(25 / math.ceil(25 / 10)) == 9
        assert im.info["loop"] == 0 and im.info["duration"] == 100
    frames = _frames(path)
    assert not np.array_equal(frames[0], frames[-1])  # the particles moved
    assert not [f for f in tmp_path.iterdir() if is_temp_file(f)]


def test_prediction_panel_shows_the_prediction(tmp_path):
    q = _circles()
    box = [4.0, 4.0]  # fixed axes, whatever the prediction
    same = _frames(animate_rollout(q, q, tmp_path / "same.gif", box=box, stride=10, **SMALL))
    moved = q.copy()
    moved[..., 0] += 0.8
    off = _frames(animate_rollout(q, moved, tmp_path / "off.gif", box=box, stride=10,
                                  **SMALL))
    assert len(same) == len(off) == 3
    half = same[0].shape[1] // 2
    for a, b in zip(same, off, strict=True):
        # the truth panel is the same up to the GIF's per-frame palette (a few levels)
        assert np.abs(a[:, :half] - b[:, :half]).max() <= 40
        # the prediction panel moved: many pixels change by much more than that
        assert (np.abs(a[:, half:] - b[:, half:]).max(axis=-1) > 100).mean() > 0.01


def test_one_dimensional_and_three_dimensional_systems(tmp_path):
    q1 = _circles(points=12, d=1)
    for box in (None, [3.0]):
        path = animate_rollout(q1, q1 + 0.1, tmp_path / "one.gif", box=box, stride=4, **SMALL)
        with Image.open(path) as im:
            assert im.n_frames == 3 and im.size == (120, 64)
    q3 = _circles(points=6, d=3)
    with Image.open(animate_rollout(q3, q3, tmp_path / "three.gif", **SMALL)) as im:
        assert im.n_frames == 6


def test_a_diverged_prediction_still_animates(tmp_path):
    q = _circles(points=6)
    bad = q.copy()
    bad[3:] = np.nan
    bad[2] *= 1e6
    with Image.open(animate_rollout(q, bad, tmp_path / "d.gif", **SMALL)) as im:
        assert im.n_frames == 6


@pytest.mark.parametrize(("truth", "pred", "kwargs", "match"), [
    (np.zeros((0, 3, 2)), np.zeros((0, 3, 2)), {}, "non-empty trajectory"),
    (np.zeros((4, 0, 2)), np.zeros((4, 0, 2)), {}, "non-empty trajectory"),
    (np.zeros((4, 3, 2)), np.zeros((3, 3, 2)), {}, "pred_q must have truth_q's shape"),
    (np.full((4, 3, 2), np.nan), np.zeros((4, 3, 2)), {}, "non-finite"),
    (np.zeros((4, 3, 2)), np.zeros((4, 3, 2)), {"box": [1.0]}, "box must hold 2"),
    (np.zeros((4, 3, 2)), np.zeros((4, 3, 2)), {"t": np.zeros(3)}, "t must hold 4"),
    (np.zeros((4, 3, 2)), np.zeros((4, 3, 2)), {"fps": 0}, "fps"),
    (np.zeros((4, 3, 2)), np.zeros((4, 3, 2)), {"stride": 0}, "stride"),
])
def test_mistakes_are_named_and_nothing_is_written(tmp_path, truth, pred, kwargs, match):
    path = tmp_path / "x.gif"
    with pytest.raises(ValueError, match=match):
        animate_rollout(truth, pred, path, **kwargs)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------- hogn rollout --animate --xyz
def test_rollout_writes_the_gif_and_xyz_of_its_first_trajectory(tmp_path_factory, cli_run,
                                                                 capsys):
    import torch

    from hogn.cli import main
    from hogn.io import load_archive
    from hogn.xyz import read_xyz

    root, _, run = cli_run(tmp_path_factory.mktemp("pictures"), particles="3", trajectories=4,
                           steps=10, epochs=1, train=["--hidden", "8", "--max-samples", "32",
                                                      "--quiet"])
    gif, xyz, saved = root / "roll.gif", root / "roll.xyz", root / "roll.pt"
    argv = ["rollout", str(run), "--n-particles", "4", "--trajectories", "2", "--steps", "8",
            "--quiet", "--animate", str(gif), "--xyz", str(xyz)]
    assert main([*argv, "-o", str(saved)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {gif}" in out and f"wrote {xyz}" in out
    with Image.open(gif) as im:
        assert im.n_frames == 9 and im.size == (560, 280)
    _, arrays, _ = load_archive(saved, "hogn-rollout")
    back = read_xyz(xyz)  # the first graph's prediction, as saved with -o
    assert back.q.shape == (9, 4, 2) and back.info["kind"] == "prediction"
    torch.testing.assert_close(back.q, arrays["q"][:, :4].double(), rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(back.p, arrays["p"][:, :4].double(), rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(back.t, arrays["t"].double())
    before = gif.read_bytes()
    assert main(argv) == 2  # refused before any work, the GIF kept
    assert "already exists" in capsys.readouterr().err and gif.read_bytes() == before
    assert main(["rollout", str(run), "--steps", "2", "--quiet", "--animate", str(xyz),
                 "--xyz", str(xyz), "--force"]) == 2
    assert "same file" in capsys.readouterr().err


def test_a_resting_truth_still_shows_a_moving_prediction(tmp_path):
    truth = np.ones((5, 1, 2))  # one particle at rest: no range to take axes from
    pred = truth + np.linspace(0, 0.5, 5)[:, None, None]
    frames = _frames(animate_rollout(truth, pred, tmp_path / "r.gif", **SMALL))
    half = frames[0].shape[1] // 2
    for frame in frames:  # the coloured prediction dot stays inside its panel
        chroma = frame[:, half:].max(axis=-1) - frame[:, half:].min(axis=-1)
        assert (chroma > 80).sum() >= 4
    chroma0 = frames[0][:, half:].max(axis=-1) - frames[0][:, half:].min(axis=-1)
    chroma1 = frames[-1][:, half:].max(axis=-1) - frames[-1][:, half:].min(axis=-1)
    assert not np.array_equal(chroma0 > 80, chroma1 > 80)  # and it moved
