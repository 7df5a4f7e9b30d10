"""The keys of a ``.npz`` file of your own arrays (:func:`systems.arrays.load_npz`), and
what each holds; torch-free, so that ``hogn import --help`` lists them without importing
torch."""

from __future__ import annotations

__all__ = ["HNN_KEYS", "NPZ_KEYS"]

NPZ_KEYS = {
    "q": "positions: states [M, d] or [M, n, d], or trajectories [G, T, n, d] (required)",
    "p": "momenta, the shape of q (required)",
    "dq": "time derivative of q, the shape of q (required for states)",
    "dp": "time derivative of p, the shape of q (required for states)",
    "t": "times [T] of trajectories, evenly spaced (or dt)",
    "dt": "time step of trajectories, a number (or t)",
    "c": "node constants [n, k], [M or G, n, k], or [M, k] for one particle",
    "edge_index": "edges [2, E] on particle numbers 0..n-1, shared by every graph",
    "edge_attr": "edge constants [E, a], one row per edge of edge_index",
    "box": "periodic box lengths [d] (shared) or [M or G, d] (per graph); needs cutoff",
    "cutoff": "radius of the edges, a number (the pairs closer than it in each first state)",
    "q_obs": "noisy observations of q, the shape of q",
    "p_obs": "noisy observations of p, the shape of q",
    "test": "held-out mask (bool or 0/1) over the states [M] or trajectories [G]",
    "system": "a label (text), or the name of a registered system",
}
"""Keys of a ``.npz`` file read by :func:`load_npz`, and what each holds."""

HNN_KEYS = {
    "x": "states [M, 2d]: columns q_1..q_d, then p_1..p_d (one particle)",
    "dx": "their time derivatives [M, 2d] (dq, then dp)",
    "test_x": "held-out states [M', 2d] (optional)",
    "test_dx": "their derivatives [M', 2d]",
}
"""The HNN paper's code layout, also read by :func:`load_npz` (not mixed with q, p)."""
