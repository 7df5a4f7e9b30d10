"""``Dataset.snapshots``: every saved state as a graph of its own, with the edges of its
own positions, so that systems whose neighbours change can be trained on."""

from __future__ import annotations

import pytest
import torch

import systems
from hogn.graph import radius_graph


@pytest.fixture(scope="module")
def lj():
    return systems.generate("lennard-jones", trajectories=4, steps=6, dt=0.05,
                            n_particles=(16, 20), seed=0)


def test_each_snapshot_is_its_state_with_its_own_neighbours(lj):
    snap = lj.snapshots(2.5)
    assert snap.validate() is None
    steps, graphs = lj.t.numel(), lj.num_graphs
    assert snap.num_graphs == steps * graphs and snap.t.numel() == 1
    for t in (0, 3, steps - 1):
        for g in range(graphs):
            k = t * graphs + g
            a, b = int(snap.ptr[k]), int(snap.ptr[k + 1])
            a0, b0 = int(lj.ptr[g]), int(lj.ptr[g + 1])
            for name in ("q", "p", "dq", "dp"):
                assert torch.equal(getattr(snap, name)[0, a:b], getattr(lj, name)[t, a0:b0])
            assert torch.equal(snap.box[k], lj.box[g]) and bool(snap.test[k]) == bool(lj.test[g])
            # its edges are the pairs of *its* positions closer than the radius
            own = snap.edge_index[:, (snap.edge_index[0] >= a) & (snap.edge_index[0] < b)] - a
            ref = radius_graph(lj.q[t, a0:b0], torch.tensor([0, b0 - a0]), 2.5,
                               box=lj.box[g:g + 1])
            assert torch.equal(own, ref)
    # the neighbours do change over the trajectory (else this test shows nothing)
    first = snap.edge_index[:, snap.edge_index[0] < int(snap.ptr[1])]
    last_k = (steps - 1) * graphs
    a = int(snap.ptr[last_k])
    last = snap.edge_index[:, (snap.edge_index[0] >= a)
                           & (snap.edge_index[0] < int(snap.ptr[last_k + 1]))] - a
    assert not torch.equal(first, last)


def test_without_a_radius_the_stored_edges_repeat(lj):
    snap = lj.snapshots()
    steps, e = lj.t.numel(), lj.edge_index.shape[1]
    assert snap.edge_index.shape == (2, steps * e)
    n = lj.q.shape[1]
    assert torch.equal(snap.edge_index[:, 2 * e:3 * e], lj.edge_index + 2 * n)


def test_training_on_snapshots_reads_the_box(lj):
    import hogn

    snap = lj.snapshots(2.5)
    torch.manual_seed(0)
    model = hogn.models.get("hogn", dim=2, node_constants=1, hidden=8, cutoff=2.5)
    result = hogn.train(model, snap, None, target="derivative", epochs=1, batch_size=8,
                        progress=False)
    assert result.best_val == result.best_val  # finite, not NaN
    # moving a particle by a box length leaves the trained model's field unchanged: the box
    # reached the model through the batches
    state = snap.state(0).to(dtype=torch.float32)
    q = state.q.clone()
    q[0, 0] += state.box[0, 0]
    a = model.time_derivative(state)[1]
    b = model.time_derivative(state.replace(q=q))[1]
    assert torch.allclose(a, b, atol=1e-5)
