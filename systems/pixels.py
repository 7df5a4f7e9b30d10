"""The HNN paper's pixel pendulum: frames rendered from the ``pendulum`` ground truth.

Greydanus, Dzamba and Yosinski, "Hamiltonian Neural Networks" (NeurIPS 2019),
learn a Hamiltonian from 28×28 grey frames of a pendulum; one observation is two
consecutive frames side by side, so that the velocity can be seen. Here the frames
are drawn by the project (numpy, deterministic, no downloads) from float64
``pendulum`` trajectories:

- :func:`render` draws angles ``q`` (0: hanging straight down, counter-clockwise
  positive) as a square ``size × size`` grey image in ``[0, 1]``: a rod from the
  pivot in the centre to a bob, both with a Gaussian profile (blurred, so the image
  moves smoothly with the angle). Lengths are in units of the half-width of the
  image (the image spans ``[-1, 1]²``), so a 14×14 and a 28×28 frame show the same
  picture.
- :func:`from_angles` turns a ``pendulum`` :class:`~systems.dataset.Dataset`
  (``T + 1`` saved points) into a pixel dataset of one node per graph with
  ``d = P = size²``: ``q[t]`` is frame ``t`` and ``p[t]`` frame ``t + 1``
  (``t = 0 .. T − 1``, so ``p[t] == q[t + 1]``), flattened row-major. Its
  ``dq, dp`` are second-order central differences in time (the dataset needs
  derivatives; the pixel model trains on the next state, ``target="rollout"``).
  Built with :meth:`~systems.dataset.Dataset.from_arrays` under the label
  ``"pixel-pendulum"``; ``meta["pixels"]`` records the drawing and the pendulum
  data's own ``meta`` (system, dt, seed), so the angles can be regenerated.
- :func:`generate` simulates the pendulum (:func:`systems.generate`) and renders it.
- :func:`centroid_angle` reads the angle back from a frame's intensity centroid
  (the drawing is symmetric about the rod): the check that a frame shows its angle.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import Tensor

from hogn import checks
from systems.dataset import Dataset

__all__ = ["DEFAULTS", "LABEL", "centroid_angle", "from_angles", "generate", "render"]

LABEL = "pixel-pendulum"
"""System label of a pixel dataset."""

DEFAULTS: dict[str, float] = {"arm": 0.7, "bob": 0.14, "rod": 0.05, "rod_intensity": 0.5}
"""Drawing, in units of the image's half-width: ``arm`` pivot-to-bob length, ``bob``
and ``rod`` the standard deviations of their Gaussian profiles, ``rod_intensity`` the
rod's peak grey (the bob's is 1)."""


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres ``x`` (right) and ``y`` (up), ``[size, size]`` each, in ``[-1, 1]``."""
    centres = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    return centres[None, :].repeat(size, 0), -centres[:, None].repeat(size, 1)


def render(angles: Tensor | np.ndarray, size: int = 28, arm: float = DEFAULTS["arm"],
           bob: float = DEFAULTS["bob"], rod: float = DEFAULTS["rod"],
           rod_intensity: float = DEFAULTS["rod_intensity"]) -> np.ndarray:
    """Grey frames of a pendulum at the given angles.

    Args:
        angles: Angles ``q`` in radians, any shape ``[...]`` (0: bob straight below the
            pivot; positive: counter-clockwise, the bob moves right).
        size: Frame side in pixels (>= 4).
        arm, bob, rod, rod_intensity: The drawing (see :data:`DEFAULTS`).

    Returns:
        float64 frames ``[..., size · size]`` in ``[0, 1]``, rows top to bottom,
        flattened row-major. The same angles give the same bytes.

    Raises:
        ValueError: for a size below 4, non-finite angles or a drawing parameter
            out of range.
    """
    size = checks.positive_int(size, "size")
    if size < 4:
        raise ValueError(f"size must be at least 4 pixels, got {size}")
    for key, value in (("arm", arm), ("bob", bob), ("rod", rod)):
        checks.positive_float(value, key)
    if not 0.0 <= float(rod_intensity) <= 1.0:
        raise ValueError(f"rod_intensity must be in [0, 1], got {rod_intensity!r}")
    q = angles.detach().cpu().double().numpy() if isinstance(angles, Tensor) else np.asarray(
        angles, dtype=np.float64)
    if not np.isfinite(q).all():
        raise ValueError("angles must be finite")
    x, y = _grid(size)
    ux, uy = np.sin(q)[..., None, None], -np.cos(q)[..., None, None]  # rod direction
    along = np.clip(x * ux + y * uy, 0.0, arm)  # closest point of the rod, distance from pivot
    rod_d2 = (x - along * ux) ** 2 + (y - along * uy) ** 2
    bob_d2 = (x - arm * ux) ** 2 + (y - arm * uy) ** 2
    a = rod_intensity * np.exp(-rod_d2 / (2 * rod**2))
    b = np.exp(-bob_d2 / (2 * bob**2))
    frames = 1.0 - (1.0 - a) * (1.0 - b)  # "screen" blend: smooth, stays in [0, 1]
    return frames.reshape(*q.shape, size * size)


def centroid_angle(frames: Tensor | np.ndarray) -> np.ndarray:
    """The angle shown by frames, from their intensity centroid about the pivot.

    Args:
        frames: Square frames ``[..., P]`` (``P = size²``, as :func:`render` writes
            them) or ``[..., size, size]``.

    Returns:
        Angles ``[...]`` in ``(-π, π]``.

    Raises:
        ValueError: if the last dimension is not a square number of pixels.
    """
    f = frames.detach().cpu().double().numpy() if isinstance(frames, Tensor) else np.asarray(
        frames, dtype=np.float64)
    size = math.isqrt(f.shape[-1])
    if size * size != f.shape[-1]:
        raise ValueError(f"frames must be square, [..., size²], got last dimension "
                         f"{f.shape[-1]}")
    x, y = (g.reshape(-1) for g in _grid(size))
    mass = f.sum(-1)
    return np.arctan2((f * x).sum(-1) / mass, -(f * y).sum(-1) / mass)


def from_angles(data: Dataset, size: int = 28, **drawing: float) -> Dataset:
    """The pixel dataset of a ``pendulum`` dataset (see the module notes).

    Args:
        data: Trajectories of a one-angle system (``q [T + 1, G, 1]``, ``T + 1 >= 3``
            saved points, one node per graph), e.g. ``systems.generate("pendulum",
            ...)``. Its test split is kept.
        size: Frame side in pixels.
        **drawing: :func:`render`'s ``arm, bob, rod, rod_intensity``.

    Returns:
        A float64 dataset with ``q, p [T, G, size²]`` (``p[t] == q[t + 1]``), ``t``
        the first ``T`` times of ``data``, no node constants.

    Raises:
        ValueError: for data of more than one coordinate or node per graph, fewer than
            three points, or an invalid drawing.
    """
    unknown = set(drawing) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown drawing parameter(s) {sorted(unknown)}; expected "
                         f"{', '.join(DEFAULTS)}")
    if data.q.shape[-1] != 1 or int(data.sizes.max()) != 1:
        raise ValueError(f"from_angles needs one angle per graph (q [T, G, 1], one node per "
                         f"graph), got q {tuple(data.q.shape)} with sizes up to "
                         f"{int(data.sizes.max())}")
    points = data.t.numel()
    if points < 3:
        raise ValueError(f"from_angles needs at least 3 saved points (two-frame observations "
                         f"and their next state), got {points}")
    frames = render(data.q[..., 0], size, **drawing)  # [T + 1, G, P]
    pairs = np.moveaxis(frames, 0, 1)[:, :, None, :]  # [G, T + 1, 1, P]
    out = Dataset.from_arrays(pairs[:, :-1], pairs[:, 1:], t=data.t[:-1].cpu(),
                              test=data.test.cpu(), system=LABEL)
    out.meta["pixels"] = {"size": size, **DEFAULTS, **{k: float(v) for k, v in drawing.items()},
                          "layout": "q[t] = frame t, p[t] = frame t + 1 (row-major, "
                                    "flattened); angle 0 hangs down",
                          "angles": {k: data.meta.get(k) for k in
                                     ("system", "dt", "steps", "seed", "method", "rtol",
                                      "test_fraction")}}
    return out


def generate(trajectories: int, steps: int, dt: float = 0.15, size: int = 28, seed: int = 0,
             system_params: dict[str, Any] | None = None, **drawing: float
             ) -> Dataset:
    """Simulate ``pendulum`` trajectories (float64, :func:`systems.generate`) and render them.

    Args:
        trajectories: Trajectories ``G``.
        steps: Pixel observations per trajectory ``T >= 2`` (``T + 1`` frames are drawn).
        dt: Time between frames (default 0.15: about 42 frames per small swing of the
            default pendulum, period ``2π``).
        size: Frame side in pixels (the paper: 28).
        seed: Seed of the initial states and the test split.
        system_params: ``pendulum`` parameters (mass, g, l, energy_range, ...).
        **drawing: :func:`render`'s drawing parameters.

    Returns:
        The pixel dataset of :func:`from_angles`.
    """
    import systems

    pendulum = systems.get("pendulum", **(system_params or {}))
    angles = systems.generate(pendulum, trajectories, steps, dt, seed=seed)
    return from_angles(angles, size, **drawing)
