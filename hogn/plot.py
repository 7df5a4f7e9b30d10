"""Plots a person would rather look at than read (matplotlib, Agg backend).

Every function takes plain tensors/arrays and writes a PNG atomically; nothing
here knows about particular physical systems.
"""

from __future__ import annotations

import io as _io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from torch import Tensor

from hogn.io import atomic_write

__all__ = ["TrajectoryPanel", "loss_curves", "rollout_comparison", "save_figure",
           "trajectories_and_energy"]


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
    """Predicted vs true paths per model, and the true-energy error over time.

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
        _paths(ax, truth, lw=2.5, alpha=0.25)
        _paths(ax, _np(predictions[name]), lw=0.9)
        ax.set_title(f"{name} (thick: truth)", fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
        ax.tick_params(labelsize=7)
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
