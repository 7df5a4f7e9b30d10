"""Plots a person would rather look at than read (matplotlib, Agg backend).

Every function takes plain tensors/arrays and writes a PNG atomically; nothing
here knows about particular physical systems.
"""

from __future__ import annotations

import io as _io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from torch import Tensor

from hogn.io import atomic_write

__all__ = ["TrajectoryPanel", "save_figure", "trajectories_and_energy"]


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
