"""Plots a person would rather look at than read (matplotlib, Agg backend).

Every function takes plain tensors/arrays and writes a PNG (or, for
:func:`animate_rollout`, a GIF) atomically; nothing here knows about particular
physical systems.
"""

from __future__ import annotations

import io as _io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle
from PIL import Image
from torch import Tensor

from hogn.io import atomic_write

__all__ = ["TrajectoryPanel", "animate_rollout", "frame_indices", "image_strip", "loss_curves",
           "rollout_comparison", "save_figure", "trajectories_and_energy"]


@dataclass
class TrajectoryPanel:
    """One row of :func:`trajectories_and_energy`.

    Attributes:
        title: Row title (e.g. the system name).
        t: Times ``[T]``.
        q: Positions of one trajectory ``[T, n, d]``.
        energy: Energy of that trajectory ``[T]``.
        labels: Names of the coordinates (default ``q0, q1``).
    """

    title: str
    t: Tensor | np.ndarray
    q: Tensor | np.ndarray
    energy: Tensor | np.ndarray
    labels: Sequence[str] | None = None


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def save_figure(fig: plt.Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Render ``fig`` to PNG and write it atomically; closes the figure."""
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def trajectories_and_energy(panels: Sequence[TrajectoryPanel], path: str | os.PathLike
                            ) -> Path:
    """A grid: per row, the particles' paths (or coordinate vs time for 1-D
    systems) beside the relative energy error ``(H(t) − H(0)) / |H(0)|``.

    Args:
        panels: One entry per row.
        path: PNG destination.

    Returns:
        The written path.
    """
    fig, axes = plt.subplots(len(panels), 2, figsize=(9, 2.6 * len(panels)), squeeze=False)
    for (ax_q, ax_e), panel in zip(axes, panels, strict=True):
        t, q, e = _np(panel.t), _np(panel.q), _np(panel.energy)
        if q.shape[-1] >= 2:
            for i in range(q.shape[1]):
                ax_q.plot(q[:, i, 0], q[:, i, 1], lw=1)
                ax_q.plot(q[0, i, 0], q[0, i, 1], "o", ms=3, color="k")
            ax_q.set_xlabel(panel.labels[0] if panel.labels else "q0")
            ax_q.set_ylabel(panel.labels[1] if panel.labels else "q1")
            ax_q.set_aspect("equal", adjustable="datalim")
        else:
            for i in range(q.shape[1]):
                ax_q.plot(t, q[:, i, 0], lw=1, label=f"particle {i}")
            ax_q.set_xlabel("t")
            ax_q.set_ylabel(panel.labels[0] if panel.labels else "q")
        ax_q.set_title(panel.title, fontsize=10)
        rel = (e - e[0]) / max(abs(float(e[0])), 1e-300)
        ax_e.plot(t, rel, lw=1)
        ax_e.set_xlabel("t")
        ax_e.set_ylabel("(H − H₀)/|H₀|")
        ax_e.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    fig.tight_layout()
    return save_figure(fig, path)


def _paths(ax: plt.Axes, q: np.ndarray, **style: object) -> None:
    """Draw each particle's path ``q [T, n, d]`` in the (q0, q1) plane."""
    for i in range(q.shape[1]):
        ax.plot(q[:, i, 0], q[:, i, 1] if q.shape[-1] > 1 else np.zeros(len(q)),
                color=f"C{i % 10}", **style)


def rollout_comparison(t: Tensor | np.ndarray, q_true: Tensor | np.ndarray,
                       predictions: Mapping[str, Tensor | np.ndarray],
                       energy_errors: Mapping[str, Tensor | np.ndarray],
                       path: str | os.PathLike, title: str = "") -> Path:
    """Predicted vs true paths of one trajectory (one system), a panel per model (truth
    black dashed, prediction a colour per particle, a legend), and the true-energy error
    over time.

    Args:
        t: Times ``[T]``.
        q_true: True positions of one trajectory ``[T, n, d]``.
        predictions: Model name to predicted positions ``[T, n, d]``.
        energy_errors: Model name to ``|H(x̂_t) − H₀| / |H₀|`` ``[T]`` (log scale).
        path: PNG destination.
        title: Figure title.

    Returns:
        The written path.
    """
    names = list(predictions)
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(3.2 * (len(names) + 1), 3.3),
                             squeeze=False)
    truth = _np(q_true)
    for ax, name in zip(axes[0], names, strict=False):
        for i in range(truth.shape[1]):  # truth: black dashed, the same for every panel
            ax.plot(truth[:, i, 0], truth[:, i, 1] if truth.shape[-1] > 1
                    else np.zeros(len(truth)), color="k", ls="--", lw=0.9, alpha=0.7)
        _paths(ax, _np(predictions[name]), lw=1.2)  # prediction: a colour per particle
        start = truth[0]
        ax.plot(start[:, 0], start[:, 1] if start.shape[-1] > 1 else np.zeros(len(start)),
                "o", ms=3.5, color="k")
        ax.set_title(name, fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
        ax.tick_params(labelsize=7)
        ax.legend(handles=[plt.Line2D([], [], color="k", ls="--", lw=0.9, label="truth"),
                           plt.Line2D([], [], color="C0", lw=1.2, label=f"{name} (a colour "
                                      "per particle)"),
                           plt.Line2D([], [], color="k", marker="o", ls="", ms=3.5,
                                      label="start")], fontsize=6, loc="upper center",
                  bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    ax_e = axes[0][-1]
    for name, err in energy_errors.items():
        ax_e.semilogy(_np(t), np.maximum(_np(err), 1e-16), lw=1, label=name)
    ax_e.set_xlabel("t")
    ax_e.set_title("true-energy error |H − H₀|/|H₀|", fontsize=9)
    ax_e.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def loss_curves(histories: Mapping[str, Sequence[Mapping[str, float]]],
                path: str | os.PathLike, title: str = "") -> Path:
    """Training and validation loss per epoch, one colour per run (log scale).

    Args:
        histories: Run name to its rows (``epoch``, ``train_loss``, optional
            ``val_loss``), as in a run's ``metrics.jsonl``.
        path: PNG destination.
        title: Figure title.

    Returns:
        The written path.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for i, (name, rows) in enumerate(histories.items()):
        epochs = [r["epoch"] for r in rows]
        ax.semilogy(epochs, [r["train_loss"] for r in rows], color=f"C{i}", lw=1.2,
                    label=f"{name} train")
        if rows and "val_loss" in rows[0]:
            ax.semilogy(epochs, [r["val_loss"] for r in rows], color=f"C{i}", lw=1.2,
                        ls="--", label=f"{name} val")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save_figure(fig, path)


def frame_indices(points: int, stride: int | None = None, max_frames: int = 150) -> np.ndarray:
    """The saved times an animation shows: every ``stride``-th of ``points``, from 0.

    Args:
        points: Saved times ``T`` (``>= 1``).
        stride: Show every ``stride``-th time (``>= 1``); default: the smallest stride
            that keeps the count within ``max_frames``.
        max_frames: Cap on the frame count (``>= 1``): a ``stride`` that would give
            more frames is widened to the smallest one that does not.

    Returns:
        Time indices ``[F]``, ``F = ceil(T / stride) <= max_frames``.

    Raises:
        ValueError: On ``points``, ``stride`` or ``max_frames`` below 1.
    """
    for name, value in (("points", points), ("max_frames", max_frames),
                        ("stride", 1 if stride is None else stride)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    step = max(stride or 1, math.ceil(points / max_frames))
    return np.arange(0, points, step)


def _limits(truth: np.ndarray, pred: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    """Axis limits ``[d, 2]`` shared by both panels: the box, or the truth's range
    widened to take in the prediction up to one truth span beyond it (a truth that
    does not move along an axis spans ``max(1, |q|)`` there)."""
    def span(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return np.where(hi > lo, hi - lo, np.maximum(1.0, np.abs(lo)))

    if box is not None:
        lo, hi = np.zeros_like(box), box
    else:
        lo, hi = np.nanmin(truth, axis=(0, 1)), np.nanmax(truth, axis=(0, 1))
        width = span(lo, hi)
        inside = np.clip(pred, lo - width, hi + width)
        lo = np.minimum(lo, np.nanmin(inside, axis=(0, 1), initial=np.inf))
        hi = np.maximum(hi, np.nanmax(inside, axis=(0, 1), initial=-np.inf))
    margin = 0.05 * span(lo, hi)
    return np.stack([lo - margin, hi + margin], axis=-1)


def animate_rollout(truth_q: Tensor | np.ndarray, pred_q: Tensor | np.ndarray,
                    path: str | os.PathLike, *, t: Tensor | np.ndarray | None = None,
                    box: Tensor | np.ndarray | Sequence[float] | None = None,
                    stride: int | None = None, max_frames: int = 150, fps: int = 15,
                    title: str = "", labels: tuple[str, str] = ("truth", "prediction"),
                    size: tuple[float, float] = (7.0, 3.5), dpi: int = 80) -> Path:
    """An animated GIF of a predicted trajectory beside the true one.

    Two panels with the same axes: the truth on the left, the prediction on the right
    (with the truth as faint rings, so errors show as distance). Each particle keeps
    its colour. Systems with ``d >= 2`` show the particles in the (q0, q1) plane (a
    projection for ``d = 3``); with a periodic ``box`` the positions are wrapped into
    ``[0, L)`` and the box is drawn. Systems with ``d = 1`` show ``q`` against time,
    drawn up to the frame's time (with a box: wrapped, as points, between lines at 0
    and ``L``). The title gives the frame's time.

    Long rollouts are thinned (see :func:`frame_indices`): ``stride`` saved times per
    frame, at most ``max_frames`` frames. Each frame is drawn once on the Agg canvas
    and the frames are saved with Pillow (the library matplotlib's ``PillowWriter``
    uses), through a temporary file moved into place (:func:`hogn.io.atomic_write`).

    Args:
        truth_q: True positions ``[T, n, d]``.
        pred_q: Predicted positions ``[T, n, d]`` (non-finite values, a diverged
            rollout, are not drawn).
        path: GIF destination.
        t: Times ``[T]`` (default ``0, 1, ..., T - 1``).
        box: Periodic box lengths ``[d]``, or ``None``.
        stride: Saved times per frame (default: as few as ``max_frames`` allows).
        max_frames: Cap on the number of frames.
        fps: Frames per second.
        title: Text before the time in the title.
        labels: Panel titles (truth, prediction).
        size: Figure size in inches; the GIF is ``size * dpi`` pixels.
        dpi: Pixels per inch.

    Returns:
        The written path.

    Raises:
        ValueError: On empty or mismatched trajectories, a bad box, stride or fps.
    """
    truth, pred = _np(truth_q).astype(np.float64), _np(pred_q).astype(np.float64)
    if truth.ndim != 3 or truth.shape[0] == 0 or truth.shape[1] == 0:
        raise ValueError("animate_rollout: truth_q must be a non-empty trajectory [T, n, d] "
                         f"(T, n >= 1), got shape {tuple(truth.shape)}")
    if pred.shape != truth.shape:
        raise ValueError(f"animate_rollout: pred_q must have truth_q's shape "
                         f"{tuple(truth.shape)}, got {tuple(pred.shape)}")
    if not np.isfinite(truth).all():
        raise ValueError("animate_rollout: truth_q holds non-finite values")
    points, n, d = truth.shape
    times = np.arange(points, dtype=np.float64) if t is None else _np(t).astype(np.float64)
    if times.shape != (points,):
        raise ValueError(f"animate_rollout: t must hold {points} times, got shape "
                         f"{tuple(times.shape)}")
    lengths = None
    if box is not None:
        lengths = _np(box).astype(np.float64).reshape(-1)
        if lengths.shape != (d,) or not (np.isfinite(lengths) & (lengths > 0)).all():
            raise ValueError(f"animate_rollout: box must hold {d} finite lengths > 0, got "
                             f"{lengths.tolist()}")
        truth, pred = np.mod(truth, lengths), np.mod(pred, lengths)
    if not isinstance(fps, int) or isinstance(fps, bool) or fps < 1:
        raise ValueError(f"animate_rollout: fps must be an int >= 1, got {fps!r}")
    frames = frame_indices(points, stride, max_frames)
    lim = _limits(truth, pred, lengths)

    fig, axes = plt.subplots(1, 2, figsize=size, dpi=dpi, sharex=True, sharey=True)
    colors = [f"C{i % 10}" for i in range(n)]
    ms = float(np.clip(40 / math.sqrt(n), 1.5, 7))
    if d >= 2:
        for ax, label in zip(axes, labels, strict=True):
            ax.set_xlim(*lim[0])
            ax.set_ylim(*lim[1])
            ax.set_aspect("equal", adjustable="box")
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("q0", fontsize=8)
            ax.tick_params(labelsize=7)
            if lengths is not None:
                ax.add_patch(Rectangle((0, 0), lengths[0], lengths[1], fill=False, lw=1,
                                       ec="0.4"))
        axes[0].set_ylabel("q1", fontsize=8)
        ghost = axes[1].scatter(truth[0, :, 0], truth[0, :, 1], s=(1.6 * ms) ** 2,
                                facecolors="none", edgecolors="0.7", lw=0.8)
        dots = [ax.scatter(x[0, :, 0], x[0, :, 1], s=ms ** 2, c=colors)
                for ax, x in zip(axes, (truth, pred), strict=True)]

        def draw(i: int) -> None:
            ghost.set_offsets(truth[i, :, :2])
            for dot, x in zip(dots, (truth, pred), strict=True):
                dot.set_offsets(x[i, :, :2])
    else:
        style = {"ls": "none", "marker": "."} if lengths is not None else {"lw": 1}
        for ax, label in zip(axes, labels, strict=True):
            ax.set_xlim(times[0], times[-1] if points > 1 else times[0] + 1)
            ax.set_ylim(*lim[0])
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("t", fontsize=8)
            ax.tick_params(labelsize=7)
            if lengths is not None:
                for y in (0.0, lengths[0]):
                    ax.axhline(y, color="0.4", lw=1)
        axes[0].set_ylabel("q", fontsize=8)
        paths = [[ax.plot([], [], color=colors[j], ms=2, **style)[0] for j in range(n)]
                 for ax in axes]
        heads = [ax.scatter(np.full(n, times[0]), x[0, :, 0], s=ms ** 2, c=colors, zorder=3)
                 for ax, x in zip(axes, (truth, pred), strict=True)]

        def draw(i: int) -> None:
            for lines, head, x in zip(paths, heads, (truth, pred), strict=True):
                for j, line in enumerate(lines):
                    line.set_data(times[: i + 1], x[: i + 1, j, 0])
                head.set_offsets(np.stack([np.full(n, times[i]), x[i, :, 0]], axis=-1))
    prefix = f"{title}   " if title else ""
    heading = fig.suptitle(f"{prefix}t = {times[0]:.4g}", fontsize=10)

    def update(i: int) -> None:
        draw(int(i))
        heading.set_text(f"{prefix}t = {times[int(i)]:.4g}")

    fig.tight_layout()
    images = []
    try:
        for i in frames:  # one Agg draw per frame, grabbed as pixels
            update(i)
            fig.canvas.draw()
            images.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB"))
    finally:
        plt.close(fig)

    def write(fh: BinaryIO) -> None:
        images[0].save(fh, format="GIF", save_all=True, append_images=images[1:],
                       duration=max(1, round(1000 / fps)), loop=0)

    return atomic_write(path, write)


def image_strip(frames_true: Tensor | np.ndarray, frames_pred: Tensor | np.ndarray,
                path: str | os.PathLike, every: int = 1, max_frames: int = 16,
                labels: tuple[str, str] = ("truth", "prediction"), title: str | None = None
                ) -> Path:
    """A PNG strip of frames: the true ones in the top row, the predicted below.

    Args:
        frames_true: Square grey frames ``[T, P]`` (``P = size²``, row-major) or
            ``[T, size, size]``.
        frames_pred: Predicted frames, the shape of ``frames_true``.
        path: PNG file (written atomically).
        every: Show every ``every``-th frame (from the first).
        max_frames: At most this many columns (then the frames shown are spread
            evenly over the ones kept by ``every``).
        labels: Row labels.
        title: Figure title.

    Returns:
        The path written.

    Raises:
        ValueError: for frames that are not square, of different shapes, or empty.
    """
    truth, pred = _np(frames_true).astype(float), _np(frames_pred).astype(float)
    if truth.shape != pred.shape or truth.ndim not in (2, 3) or truth.shape[0] == 0:
        raise ValueError(f"frames must be [T, P] or [T, size, size] of one shape, got "
                         f"{truth.shape} and {pred.shape}")
    if truth.ndim == 2:
        size = math.isqrt(truth.shape[1])
        if size * size != truth.shape[1]:
            raise ValueError(f"frames [T, P] need a square P, got P = {truth.shape[1]}")
        truth, pred = (x.reshape(-1, size, size) for x in (truth, pred))
    if truth.shape[1] != truth.shape[2]:
        raise ValueError(f"frames must be square, got {truth.shape[1]}x{truth.shape[2]}")
    if not isinstance(every, int) or every < 1 or not isinstance(max_frames, int) or (
            max_frames < 1):
        raise ValueError(f"every and max_frames must be ints >= 1, got {every!r}, "
                         f"{max_frames!r}")
    kept = np.arange(0, truth.shape[0], every)
    if kept.size > max_frames:
        kept = kept[np.linspace(0, kept.size - 1, max_frames).round().astype(int)]
    lo, hi = min(truth.min(), pred.min()), max(truth.max(), pred.max())
    fig, axes = plt.subplots(2, kept.size, figsize=(0.8 * kept.size + 0.6, 2.0),
                             squeeze=False)
    for col, i in enumerate(kept):
        for row, frames in enumerate((truth, pred)):
            ax = axes[row, col]
            ax.imshow(frames[i], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(str(int(i)), fontsize=7)
        if col == 0:
            for row, label in enumerate(labels):
                axes[row, 0].set_ylabel(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
