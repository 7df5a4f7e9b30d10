"""Graph batches: complete and radius graphs, selection, concatenation, PyG round trips."""

from __future__ import annotations

import itertools

import networkx as nx
import pytest
import torch

from hogn.graph import (
    GraphBatch,
    batch_vector,
    from_networkx,
    fully_connected,
    ptr_from_sizes,
    radius_graph,
    select_indices,
)

SIZES = [3, 1, 5, 2, 5]


def _pairs(edge_index):
    return {tuple(e) for e in edge_index.T.tolist()}


def _batch(sizes=SIZES, edge_attr=True, seed=0, steps=None):
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    shape = (n, 2) if steps is None else (steps, n, 2)
    edges = fully_connected(sizes)
    attr = torch.rand(edges.shape[1], 2, generator=gen, dtype=torch.float64) if edge_attr \
        else None
    return GraphBatch(torch.randn(shape, generator=gen, dtype=torch.float64),
                      torch.randn(shape, generator=gen, dtype=torch.float64),
                      torch.rand(n, 1, generator=gen, dtype=torch.float64) + 0.5,
                      edges, ptr_from_sizes(sizes), attr)


def test_ptr_and_batch_vector():
    ptr = ptr_from_sizes(SIZES)
    assert ptr.tolist() == [0, 3, 4, 9, 11, 16]
    assert batch_vector(ptr).tolist() == [0, 0, 0, 1, 2, 2, 2, 2, 2, 3, 3, 4, 4, 4, 4, 4]
    for bad in ([3, 0, 2], [[1, 2]], [-1]):
        with pytest.raises(ValueError, match="positive ints"):
            ptr_from_sizes(bad)


def test_fully_connected_is_every_ordered_pair_within_each_graph():
    edges = fully_connected(SIZES)
    ptr = ptr_from_sizes(SIZES)
    assert edges.shape == (2, sum(n * (n - 1) for n in SIZES))
    assert not (edges[0] == edges[1]).any()  # no self loops
    batch = batch_vector(ptr)
    assert torch.equal(batch[edges[0]], batch[edges[1]])  # no cross-graph edges
    expected = set()
    for g in range(len(SIZES)):
        nodes = range(int(ptr[g]), int(ptr[g + 1]))
        expected |= {(i, j) for i, j in itertools.product(nodes, nodes) if i != j}
    assert _pairs(edges) == expected
    assert edges.shape[1] == len(expected)  # no duplicates
    # grouped by graph (the selection relies on it)
    assert (batch[edges[0]].diff() >= 0).all()


def test_fully_connected_with_self_loops():
    edges = fully_connected([2, 3], self_loops=True)
    assert edges.shape[1] == 4 + 9
    assert int((edges[0] == edges[1]).sum()) == 5


def test_select_indices_rejects_bad_graphs():
    g = _batch()
    for bad in ([5], [-1]):
        with pytest.raises(IndexError, match="graph indices must lie in"):
            select_indices(g.ptr, g.edge_index, bad)
    for empty in ([], torch.zeros(0, dtype=torch.long)):
        with pytest.raises(IndexError, match="the selection is empty"):
            select_indices(g.ptr, g.edge_index, empty)


def test_select_keeps_each_graph_intact():
    g = _batch()
    for i, n in enumerate(SIZES):
        one = g.select([i])
        a, b = int(g.ptr[i]), int(g.ptr[i + 1])
        assert one.num_graphs == 1 and one.num_nodes == n
        assert torch.equal(one.q, g.q[a:b]) and torch.equal(one.p, g.p[a:b])
        assert torch.equal(one.c, g.c[a:b])
        assert _pairs(one.edge_index) == _pairs(fully_connected([n]))
        # edge constants follow their edges
        original = {(s - a, r - a): tuple(x) for (s, r), x in
                    zip(g.edge_index.T.tolist(), g.edge_attr.tolist(), strict=True)
                    if a <= s < b}
        selected = {tuple(e): tuple(x) for e, x in
                    zip(one.edge_index.T.tolist(), one.edge_attr.tolist(), strict=True)}
        assert selected == original


def test_select_then_cat_round_trip_in_any_order():
    g = _batch(steps=4)  # trajectories [T, N, d] select along the node axis
    parts = [g.select([i]) for i in range(g.num_graphs)]
    back = GraphBatch.cat(parts)
    for name in ("q", "p", "c", "edge_index", "ptr", "edge_attr"):
        assert torch.equal(getattr(back, name), getattr(g, name)), name
    order = [3, 0, 4]
    picked = g.select(order)
    assert picked.sizes.tolist() == [SIZES[i] for i in order]
    again = GraphBatch.cat([g.select([i]) for i in order])
    for name in ("q", "p", "c", "edge_index", "ptr", "edge_attr"):
        assert torch.equal(getattr(again, name), getattr(picked, name)), name
    assert torch.equal(picked.select([1]).q, g.select([0]).q)


def test_cat_refuses_mixed_edge_attr_and_empty():
    with pytest.raises(ValueError, match="with and without edge_attr"):
        GraphBatch.cat([_batch([2]), _batch([2], edge_attr=False)])
    with pytest.raises(ValueError, match="empty"):
        GraphBatch.cat([])


def test_batch_properties():
    g = _batch()
    assert g.num_graphs == len(SIZES)
    assert g.sizes.tolist() == SIZES
    assert g.uniform_size is None
    assert _batch([4, 4]).uniform_size == 4
    assert torch.equal(g.edge_batch, g.batch[g.edge_index[0]])
    counts = [n * (n - 1) for n in SIZES]
    assert g.edge_ptr.tolist() == [0, *itertools.accumulate(counts)]
    moved = g.to(dtype=torch.float32)
    assert moved.q.dtype == moved.c.dtype == moved.edge_attr.dtype == torch.float32
    assert moved.edge_index.dtype == moved.ptr.dtype == torch.long


def test_pyg_round_trip():
    g = _batch()
    pyg = g.to_pyg()
    assert pyg.num_graphs == len(SIZES)
    assert torch.equal(pyg.ptr, g.ptr)
    second = pyg.get_example(2)  # a graph on its own has local node indices
    assert torch.equal(second.q, g.q[4:9])
    assert _pairs(second.edge_index) == _pairs(fully_connected([5]))
    back = GraphBatch.from_pyg(pyg)
    for name in ("q", "p", "c", "edge_index", "ptr", "edge_attr"):
        assert torch.equal(getattr(back, name), getattr(g, name)), name
    single = GraphBatch.from_pyg(second)
    assert single.num_graphs == 1 and torch.equal(single.q, g.select([2]).q)
    with pytest.raises(ValueError, match="single state"):
        _batch(steps=3).to_pyg()


def test_graph_batch_validates_shapes():
    g = _batch()
    with pytest.raises(ValueError, match="q and p must be"):
        GraphBatch(g.q, g.p[:, :1], g.c, g.edge_index, g.ptr)
    with pytest.raises(ValueError, match="q and p must be"):
        GraphBatch(g.q[:-1], g.p[:-1], g.c, g.edge_index, g.ptr)
    with pytest.raises(ValueError, match="node constants c"):
        GraphBatch(g.q, g.p, g.c[:-1], g.edge_index, g.ptr)
    with pytest.raises(ValueError, match="edge_index must be"):
        GraphBatch(g.q, g.p, g.c, g.edge_index[0], g.ptr)
    with pytest.raises(ValueError, match="edge_attr must be"):
        GraphBatch(g.q, g.p, g.c, g.edge_index, g.ptr, g.edge_attr[:-1])


def test_from_networkx():
    ring = from_networkx(nx.cycle_graph(4), offset=10)
    assert _pairs(ring) == {(10, 11), (11, 10), (11, 12), (12, 11), (12, 13), (13, 12),
                            (13, 10), (10, 13)}
    directed = from_networkx(nx.DiGraph([(0, 1), (1, 2)]))
    assert _pairs(directed) == {(0, 1), (1, 2)}
    relabelled = from_networkx(nx.Graph([("a", "b")]))
    assert _pairs(relabelled) == {(0, 1), (1, 0)}
    assert from_networkx(nx.empty_graph(3)).shape == (2, 0)


def test_radius_graph_matches_brute_force():
    gen = torch.Generator().manual_seed(1)
    sizes = [6, 9, 4]
    q = torch.rand(sum(sizes), 2, generator=gen, dtype=torch.float64)
    ptr = ptr_from_sizes(sizes)
    batch = batch_vector(ptr)
    edges = radius_graph(q, ptr, 0.4)
    expected = {(i, j) for i in range(len(q)) for j in range(len(q))
                if i != j and batch[i] == batch[j] and (q[i] - q[j]).norm() < 0.4}
    assert expected  # the test means something
    assert _pairs(edges) == expected
