"""A periodic box in a user's arrays: ``from_arrays(box=, cutoff=)`` and the ``box``,
``cutoff`` keys of ``hogn import`` keep the box and give each graph the radius edges of
its first state (minimum image), never a silent complete graph."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import systems
from systems.arrays import NPZ_KEYS, load_npz

RNG = np.random.default_rng(3)


def _pairs(q: np.ndarray, box: np.ndarray | None, cutoff: float) -> set[tuple[int, int]]:
    """Every ordered pair closer than ``cutoff`` (minimum image), by brute force."""
    close = set()
    for i, j in itertools.permutations(range(len(q)), 2):
        delta = q[j] - q[i]
        if box is not None:
            delta = delta - box * np.round(delta / box)
        if np.sqrt((delta ** 2).sum()) < cutoff:
            close.add((i, j))
    return close


def _trajectories(g: int = 3, points: int = 4, n: int = 12, side: float = 6.0):
    q = RNG.uniform(0, side, size=(g, points, n, 3))
    return q, RNG.normal(size=q.shape)


def test_a_shared_box_is_kept_and_edges_are_minimum_image_neighbours():
    q, p = _trajectories()
    data = systems.from_arrays(q, p, dt=0.1, box=[6.0, 6.0, 7.0], cutoff=2.5)
    assert data.box.shape == (3, 3) and data.box.dtype == torch.float64
    assert data.box.tolist() == [[6.0, 6.0, 7.0]] * 3 and data.meta["cutoff"] == 2.5
    for g in range(3):  # graph g's edges are its first state's close pairs
        mine = data.edge_index[:, data.edge_index[0] // 12 == g] - 12 * g
        assert set(map(tuple, mine.T.tolist())) == _pairs(q[g, 0], np.array([6, 6, 7.0]), 2.5)
    open_edges = _pairs(q[0, 0], None, 2.5)
    assert set(map(tuple, data.edge_index[:, data.edge_index[0] < 12].T.tolist())) != open_edges


def test_a_box_per_trajectory_and_open_radius_edges():
    q, p = _trajectories(g=2)
    boxes = np.array([[6.0, 6.0, 6.0], [8.0, 9.0, 10.0]])
    data = systems.from_arrays(q, p, dt=0.1, box=boxes, cutoff=2.0)
    assert torch.equal(data.box, torch.tensor(boxes)) and torch.equal(data[1].box[0],
                                                                      torch.tensor(boxes[1]))
    loose = systems.from_arrays(q, p, dt=0.1, cutoff=2.0)  # open boundaries, radius edges
    assert loose.box is None
    assert set(map(tuple, loose.edge_index[:, loose.edge_index[0] < 12].T.tolist())) == \
        _pairs(q[0, 0], None, 2.0)
    states = systems.from_arrays(q[:, 0], p[:, 0], dq=p[:, 0], dp=-q[:, 0], box=[6.0] * 3,
                                 cutoff=2.0)  # states [M, n, d]: a box each
    assert states.box.shape == (2, 3) and states.dt is None


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"box": [6.0, 6.0, 6.0]}, "a periodic box needs cutoff"),
    ({"box": [6.0, 6.0]}, r"box must be lengths \[d\] = \[3\]"),
    ({"box": [[6.0] * 3] * 5, "cutoff": 1.0}, r"\[G, d\] = \[3, 3\]"),
    ({"box": [6.0, 0.0, 6.0], "cutoff": 1.0}, "box lengths must be > 0"),
    ({"box": [6.0] * 3, "cutoff": 3.5}, r"cutoff 3.5: box lengths .* smaller than 2"),
    ({"cutoff": -1.0}, "cutoff must be a finite number > 0"),
    ({"cutoff": 1.0, "edge_index": [[0], [1]]}, "give edge_index or cutoff"),
    ({"cutoff": 1.0, "edge_attr": [[1.0]]}, "edge_attr needs edge_index"),
])
def test_box_mistakes_are_named(kwargs, match):
    q, p = _trajectories()
    with pytest.raises(ValueError, match=match):
        systems.from_arrays(q, p, dt=0.1, **kwargs)


def test_a_box_with_explicit_edges_keeps_them():
    q, p = _trajectories()
    data = systems.from_arrays(q, p, dt=0.1, box=[6.0] * 3, edge_index=[[0, 1], [1, 0]])
    assert data.edge_index.shape == (2, 6) and data.meta["cutoff"] is None


def test_npz_keys_box_and_cutoff(tmp_path):
    assert {"box", "cutoff"} <= set(NPZ_KEYS)
    q, p = _trajectories()
    np.savez(tmp_path / "box.npz", q=q, p=p, dt=0.1, box=np.array([6.0, 6.0, 6.0]), cutoff=2.0)
    data = load_npz(tmp_path / "box.npz")
    assert data.box.tolist() == [[6.0] * 3] * 3 and data.meta["cutoff"] == 2.0
    wider = load_npz(tmp_path / "box.npz", cutoff=2.5)  # hogn import --cutoff
    assert wider.meta["cutoff"] == 2.5
    assert wider.edge_index.shape[1] > data.edge_index.shape[1]
    np.savez(tmp_path / "nocut.npz", q=q, p=p, dt=0.1, box=np.array([6.0, 6.0, 6.0]))
    with pytest.raises(ValueError, match=r"nocut\.npz: a periodic box needs cutoff"):
        load_npz(tmp_path / "nocut.npz")
    path = tmp_path / "box.pt"
    data.save(path)
    assert torch.equal(systems.load(path).box, data.box)
