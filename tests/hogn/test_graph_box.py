"""GraphBatch with a periodic box: validation, and the box carried through replace, to,
select, cat, the PyG round trip, datasets on disk and the neighbour-edge rebuild."""

from __future__ import annotations

import pytest
import torch

from hogn.graph import GraphBatch, edge_vectors, fully_connected, ptr_from_sizes, radius_graph
from systems.dataset import Dataset

F64 = torch.float64
SIZES = [3, 1, 5, 2]


def _batch(sizes=SIZES, boxed=True, seed=0, steps=None, d=2):
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    shape = (n, d) if steps is None else (steps, n, d)
    edges = fully_connected(sizes)
    box = 2.0 + torch.rand(len(sizes), d, generator=gen, dtype=F64) if boxed else None
    return GraphBatch(4 * torch.rand(shape, generator=gen, dtype=F64),
                      torch.randn(shape, generator=gen, dtype=F64),
                      torch.rand(n, 1, generator=gen, dtype=F64) + 0.5,
                      edges, ptr_from_sizes(sizes),
                      torch.rand(edges.shape[1], 1, generator=gen, dtype=F64), box)


def _rows(graph, g):
    return slice(int(graph.ptr[g]), int(graph.ptr[g + 1]))


def test_default_is_no_box_and_positional_construction_is_unchanged():
    g = _batch(boxed=False)
    assert g.box is None
    again = GraphBatch(g.q, g.p, g.c, g.edge_index, g.ptr, g.edge_attr)
    assert again.box is None and again == g.replace()


@pytest.mark.parametrize("box, message", [
    (torch.ones(3, 2, dtype=F64), r"box must be periodic box lengths \[G, d\] = \[4, 2\]"),
    (torch.ones(4, 3, dtype=F64), r"\[G, d\] = \[4, 2\].*got \(4, 3\)"),
    (torch.ones(2, dtype=F64), r"\[G, d\] = \[4, 2\].*got \(2,\)"),
    (torch.ones(4, 2, dtype=torch.long), "box must be floating point, got torch.int64"),
    (torch.tensor([[1.0, 1.0], [1.0, 0.0], [1, 1], [1, 1]], dtype=F64),
     "box lengths must be finite and > 0"),
    (torch.full((4, 2), float("nan"), dtype=F64), "box lengths must be finite and > 0"),
    (torch.full((4, 2), -1.0, dtype=F64), "box lengths must be finite and > 0"),
    ([[1.0, 1.0]] * 4, r"box must be periodic box lengths.*got list"),
])
def test_malformed_boxes_are_named(box, message):
    g = _batch(boxed=False)
    with pytest.raises(ValueError, match=message):
        GraphBatch(g.q, g.p, g.c, g.edge_index, g.ptr, g.edge_attr, box)
    with pytest.raises(ValueError, match=message):
        g.replace(box=box)


def test_replace_and_to_carry_the_box():
    g = _batch(steps=3)
    moved = g.replace(q=g.q[0], p=g.p[0])
    assert torch.equal(moved.box, g.box)
    f32 = g.to(dtype=torch.float32)
    assert f32.box.dtype == torch.float32 and torch.allclose(f32.box.double(), g.box)
    assert torch.equal(g.to("cpu").box, g.box)


def test_select_takes_each_graphs_box_in_order():
    g = _batch()
    for order in ([2, 0], [3], [1, 2, 3, 0]):
        sub = g.select(order)
        assert torch.equal(sub.box, g.box[order])
        for k, i in enumerate(order):  # each graph keeps its own box with its nodes
            assert torch.equal(sub.q[_rows(sub, k)], g.q[_rows(g, i)])
    assert torch.equal(g.select(torch.tensor([3, 1])).box, g.box[[3, 1]])


def test_cat_stacks_boxes_and_refuses_to_mix():
    g = _batch()
    parts = [g.select([i]) for i in range(g.num_graphs)]
    back = GraphBatch.cat(parts)
    assert torch.equal(back.box, g.box) and torch.equal(back.edge_index, g.edge_index)
    with pytest.raises(ValueError, match="with and without a periodic box"):
        GraphBatch.cat([g, _batch(boxed=False)])
    with pytest.raises(ValueError, match="with and without a periodic box"):
        GraphBatch.cat([_batch(boxed=False), g])
    assert GraphBatch.cat([_batch(boxed=False)] * 2).box is None


def test_pyg_round_trip_keeps_the_box():
    g = _batch()
    pyg = g.to_pyg()
    assert tuple(pyg.box.shape) == (g.num_graphs, 2)
    back = GraphBatch.from_pyg(pyg)
    assert torch.equal(back.box, g.box) and torch.equal(back.q, g.q)
    single = GraphBatch.from_pyg(pyg.get_example(2))
    assert torch.equal(single.box, g.box[2:3])
    plain = GraphBatch.from_pyg(_batch(boxed=False).to_pyg())
    assert plain.box is None


def test_edge_vectors_are_the_minimum_image_per_graph():
    g = _batch(steps=2)
    vec = g.edge_vectors()
    assert vec.shape == (2, g.edge_index.shape[1], 2)
    for t in range(2):
        torch.testing.assert_close(vec[t], edge_vectors(g.q[t], g.edge_index, box=g.box,
                                                         ptr=g.ptr), rtol=0, atol=0)
    # every component within half the box of its graph; plain differences otherwise
    half = 0.5 * g.box[g.edge_batch]
    assert (vec.abs() <= half + 1e-12).all()
    plain = g.replace(box=None)
    torch.testing.assert_close(plain.edge_vectors()[0],
                               g.q[0][g.edge_index[1]] - g.q[0][g.edge_index[0]])


def test_with_radius_edges_rebuilds_neighbours_in_the_box():
    gen = torch.Generator().manual_seed(3)
    sizes = [20, 30]
    box = torch.tensor([[5.0, 6.0], [7.0, 5.0]], dtype=F64)
    q = torch.rand(50, 2, generator=gen, dtype=F64) * 7 - 1  # some outside the box
    g = GraphBatch(q, torch.zeros_like(q), torch.ones(50, 1, dtype=F64),
                   torch.empty(2, 0, dtype=torch.long), ptr_from_sizes(sizes), box=box)
    rebuilt = g.with_radius_edges(1.5)
    assert torch.equal(rebuilt.edge_index, radius_graph(q, g.ptr, 1.5, box=box))
    assert rebuilt.edge_index.shape[1] > 0 and rebuilt.edge_attr is None
    dist = rebuilt.edge_vectors().norm(dim=-1)
    assert (dist < 1.5).all()
    with pytest.raises(ValueError, match=r"single state q \[N, d\]"):
        _batch(steps=2).with_radius_edges(1.0)


def _dataset(boxed: bool) -> Dataset:
    g = _batch(steps=4, boxed=boxed)
    test = torch.tensor([False, True, False, False])
    return Dataset(t=torch.arange(4, dtype=F64), q=g.q, p=g.p, dq=g.p, dp=-g.q, c=g.c,
                   edge_index=g.edge_index, ptr=g.ptr, test=test,
                   meta={"system": {"name": "spring-nbody"}, "dt": 1.0},
                   edge_attr=g.edge_attr, box=g.box)


def test_dataset_round_trips_the_box(tmp_path):
    data = _dataset(boxed=True)
    data.save(tmp_path / "boxed.pt")
    back = Dataset.load(tmp_path / "boxed.pt")
    assert torch.equal(back.box, data.box)
    assert torch.equal(back.graph.box, data.box) and torch.equal(back.state(2).box, data.box)
    assert torch.equal(back.select([3, 1]).box, data.box[[3, 1]])
    assert torch.equal(back.train.box, data.box[[0, 2, 3]])
    assert torch.equal(back.heldout.box, data.box[[1]])
    assert back.to(dtype=torch.float32).box.dtype == torch.float32
    unboxed = _dataset(boxed=False)
    unboxed.save(tmp_path / "plain.pt")
    plain = Dataset.load(tmp_path / "plain.pt")
    assert plain.box is None and plain.graph.box is None


def test_dataset_with_a_malformed_box_is_named():
    data = _dataset(boxed=True)
    assert data.validate() is None
    for bad in (data.box[:2], data.box.long(), -data.box, data.box[:, :1]):
        data.box = bad
        assert "box must hold finite lengths > 0, [G, d] = [4, 2]" in data.validate()
