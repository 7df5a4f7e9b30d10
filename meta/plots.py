"""Figures of few-shot adaptation, as in the meta-learning paper's Figures 1 and 2.

- :func:`adaptation_curves`: rollout MSE against adaptation steps, one line (with its
  95 % interval shaded) per method, one panel per held-out system.
- :func:`adaptation_trajectories`: the first coordinate and momentum of the first
  particle over time after a given number of steps, truth and each method, one row
  per system.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from hogn.plot import plt, save_figure

__all__ = ["METHOD_STYLE", "adaptation_curves", "adaptation_trajectories"]

METHOD_STYLE = {"meta": ("C0", "meta-trained"), "random": ("C3", "random init"),
                "pretrained": ("C2", "pretrained")}


def _style(method: str, i: int) -> tuple[str, str]:
    return METHOD_STYLE.get(method, (f"C{i + 4}", method))


def adaptation_curves(panels: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
                      path: str | os.PathLike, ylabel: str = "rollout MSE") -> Path:
    """MSE vs adaptation steps per method, one panel per system.

    Args:
        panels: Panel title (e.g. the held-out system) → method → rows of
            :func:`meta.protocol.summarize` (``step``, ``mean``, ``ci_low``, ``ci_high``).
        path: PNG destination.
        ylabel: Label of the y axis.

    Returns:
        The written path.
    """
    n = len(panels)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 3.0 * rows), squeeze=False)
    for ax, (title, methods) in zip(axes.flat, panels.items(), strict=False):
        means = [r["mean"] for stats in methods.values() for r in stats]
        positive = [m for m in means if math.isfinite(m) and m > 0]
        # an interval reaching zero cannot be drawn on a log axis: shade it down to here
        floor = 0.3 * min(positive) if positive else 1e-12
        for i, (method, stats) in enumerate(methods.items()):
            color, label = _style(method, i)
            # step 0 cannot sit on a log axis: draw it at 0.5 and say so on the tick
            x = np.array([max(r["step"], 0.5) for r in stats], dtype=float)
            mean = np.array([r["mean"] for r in stats], dtype=float)
            low = np.array([r["ci_low"] for r in stats], dtype=float)
            high = np.array([r["ci_high"] for r in stats], dtype=float)
            ax.plot(x, mean, "-o", ms=2.5, lw=1.3, color=color, label=label)
            ok = np.isfinite(low) & np.isfinite(high)
            low = np.where(low > 0, low, floor)
            ax.fill_between(x[ok], low[ok], high[ok], color=color, alpha=0.15, lw=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([0.5, 1, 5, 15, 100], ["0", "1", "5", "15", "100"])
        ax.set_xlabel("adaptation steps")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both", lw=0.4)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def adaptation_trajectories(rows: Mapping[str, Mapping[str, Any]], path: str | os.PathLike,
                            step: int = 15) -> Path:
    """Predicted vs true dynamics after ``step`` adaptation steps, one row per system.

    Args:
        rows: Row title → ``{"t": [T], "q": [T, n, d], "p": [T, n, d], "predictions":
            {method: (q, p)}}`` (truth and rollouts of one trajectory).
        path: PNG destination.
        step: The number of steps taken (for the titles).

    Returns:
        The written path.
    """
    fig, axes = plt.subplots(len(rows), 2, figsize=(9, 2.4 * len(rows)), squeeze=False)
    for (ax_q, ax_p), (title, row) in zip(axes, rows.items(), strict=True):
        t = _np(row["t"])
        for ax, index, name in ((ax_q, 0, "q"), (ax_p, 1, "p")):
            truth = _np(row["q"] if index == 0 else row["p"])
            ax.plot(t, truth[:, 0, 0], color="k", lw=2.4, alpha=0.35, label="truth")
            for i, (method, pred) in enumerate(row["predictions"].items()):
                color, label = _style(method, i)
                ax.plot(t[: len(pred[index])], _np(pred[index])[:, 0, 0], color=color,
                        lw=1.0, label=label)
            ax.set_xlabel("t")
            ax.set_ylabel(f"{name} (particle 0, coordinate 0)", fontsize=8)
            ax.set_title(f"{title}: {name} after {step} steps", fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
