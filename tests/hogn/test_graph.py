"""Graph batches: complete and radius graphs, selection, concatenation, PyG round trips."""

from __future__ import annotations

import itertools
import math

import networkx as nx
import numpy as np
import pytest
import torch

from hogn.graph import (
    GraphBatch,
    NeighbourList,
    batch_vector,
    edge_vectors,
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


# --- radius graphs: cell list, brute force, periodic boxes, neighbour lists -----------

GRAPH_SIZES = [0, 1, 37, 0, 150, 2, 90]  # empty graphs, a single particle, uneven sizes


def _reference_pairs(q, ptr, radius, box=None):
    """Every ordered pair closer than ``radius``, by numpy broadcasting per graph."""
    q = q.detach().cpu().double().numpy()
    ptr = ptr.tolist()
    pairs = set()
    for g in range(len(ptr) - 1):
        a, b = ptr[g], ptr[g + 1]
        diff = q[a:b][None, :, :] - q[a:b][:, None, :]  # [i, j] = q_j - q_i
        if box is not None:
            lengths = np.asarray(torch.as_tensor(box, dtype=torch.float64))
            lengths = lengths[g] if lengths.ndim == 2 else lengths
            diff = diff - lengths * np.round(diff / lengths)
        close = (diff**2).sum(-1) < radius * radius
        np.fill_diagonal(close, False)
        pairs |= {(a + i, a + j) for i, j in zip(*np.nonzero(close), strict=True)}
    return pairs


def _check_sorted(edges, n):
    keys = edges[0] * max(n, 1) + edges[1]
    assert (keys.diff() > 0).all(), "edges sorted by row 0 then row 1, no duplicates"


def _system(sizes, d, extent, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(sum(sizes), d, generator=gen, dtype=dtype) * extent, ptr_with_empty(sizes)


def ptr_with_empty(sizes):
    return torch.tensor([0, *itertools.accumulate(sizes)])


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("periodic", [None, "shared", "per-graph"])
def test_cells_equal_brute_force_and_reference(d, periodic):
    radius = {1: 0.05, 2: 0.3, 3: 0.6}[d]
    extent = 3.0
    q, ptr = _system(GRAPH_SIZES, d, extent, seed=10 * d)
    box = None
    if periodic == "shared":
        box = torch.full((d,), extent, dtype=torch.float64)
    elif periodic == "per-graph":  # boxes from 2 r (two cells) to the whole extent
        box = torch.linspace(2 * radius, extent, len(GRAPH_SIZES), dtype=torch.float64)
        box = box[:, None].expand(-1, d).clone()
        box[:, 0] = extent
    if box is not None:  # positions inside, outside and on the faces of the box
        q[::7] -= 2 * extent
        q[1::11] = 0.0
        q[2::13] = (box.expand(len(q), d) if box.dim() == 1 else box[batch_vector(ptr)])[2::13]
    brute = radius_graph(q, ptr, radius, box=box, backend="brute")
    cells = radius_graph(q, ptr, radius, box=box, backend="cells")
    expected = _reference_pairs(q, ptr, radius, box)
    assert len(expected) > 100  # the test means something
    assert _pairs(brute) == expected and brute.shape[1] == len(expected)
    assert torch.equal(cells, brute)
    assert torch.equal(radius_graph(q, ptr, radius, box=box), brute)  # auto
    _check_sorted(cells, len(q))
    batch = batch_vector(ptr)
    assert torch.equal(batch[cells[0]], batch[cells[1]])  # never across graphs
    assert cells.dtype == torch.long


def test_float32_equal_brute_force():
    q, ptr = _system(GRAPH_SIZES, 3, 2.0, seed=3, dtype=torch.float32)
    for box in (None, [2.0, 2.0, 2.0]):
        brute = radius_graph(q, ptr, 0.45, box=box, backend="brute")
        assert brute.shape[1] > 100
        assert torch.equal(radius_graph(q, ptr, 0.45, box=box, backend="cells"), brute)
        assert _pairs(brute) == _reference_pairs(q, ptr, 0.45, box)


def test_more_dimensions_and_larger_systems():
    q, ptr = _system([700, 300], 4, 3.0, seed=4)
    box = torch.tensor([3.0, 3.0, 3.0, 3.0], dtype=torch.float64)
    for b in (None, box):
        brute = radius_graph(q, ptr, 0.7, box=b, backend="brute")
        assert brute.shape[1] > 1000
        assert torch.equal(radius_graph(q, ptr, 0.7, box=b, backend="cells"), brute)


def test_old_behaviour_kept():
    """The dense ``cdist`` graph of before, for a plain call: same edges, same order."""
    q, ptr = _system([40, 25, 60], 2, 1.0, seed=5)
    batch = batch_vector(ptr)
    dense = (torch.cdist(q, q) < 0.2) & (batch[:, None] == batch[None, :])
    dense.fill_diagonal_(False)
    assert torch.equal(radius_graph(q, ptr, 0.2), dense.nonzero().T)
    assert torch.equal(radius_graph(q, ptr, 0.2, backend="cells"), dense.nonzero().T)


def test_all_particles_in_one_cell_give_complete_graphs():
    q, ptr = _system([30, 1, 12], 3, 0.1, seed=6)
    for box in (None, [2.0, 2.0, 2.0]):
        edges = radius_graph(q, ptr, 1.0, box=box, backend="cells")
        assert torch.equal(edges, fully_connected([30, 1, 12]))


def test_empty_and_trivial_inputs():
    for backend in ("brute", "cells"):
        none = radius_graph(torch.zeros(0, 2), torch.tensor([0]), 1.0, backend=backend)
        assert none.shape == (2, 0) and none.dtype == torch.long
        empties = radius_graph(torch.zeros(0, 3), torch.tensor([0, 0, 0]), 1.0, backend=backend)
        assert empties.shape == (2, 0)
        single = radius_graph(torch.zeros(1, 2), torch.tensor([0, 0, 1, 1]), 1.0,
                              backend=backend)
        assert single.shape == (2, 0)
        q = torch.rand(10, 2)
        assert radius_graph(q, torch.tensor([0, 10]), 0.0, backend=backend).shape == (2, 0)
        # one particle per graph: never an edge, however close
        assert radius_graph(torch.zeros(5, 2), torch.arange(6), 1.0, backend=backend
                            ).shape == (2, 0)


@pytest.mark.parametrize("backend", ["brute", "cells"])
def test_the_radius_is_exclusive(backend):
    """A pair exactly ``radius`` apart is not joined; just inside, it is (also across
    a periodic boundary)."""
    spacing = 0.5  # exact in binary: distances on the lattice are exact
    lattice = torch.cartesian_prod(torch.arange(6.0), torch.arange(6.0)).double() * spacing
    ptr = torch.tensor([0, 36])
    for box in (None, [3.0, 3.0]):
        at = radius_graph(lattice, ptr, spacing, box=box, backend=backend)
        assert at.shape == (2, 0)
        inside = radius_graph(lattice, ptr, spacing * (1 + 1e-12), box=box, backend=backend)
        per_node = 4 if box is not None else None
        degrees = torch.bincount(inside[0], minlength=36)
        if per_node:
            assert (degrees == per_node).all()  # across the faces too
        else:
            assert inside.shape[1] == 2 * 2 * 6 * 5  # 2 directions, 2 axes, 6 rows of 5
    # across the box face only: 0 and 2.5 are 0.5 apart through the face of a 3.0 box
    pair = torch.tensor([[0.0, 1.0], [2.5, 1.0]], dtype=torch.float64)
    two = torch.tensor([0, 2])
    assert radius_graph(pair, two, 0.5, box=[3.0, 3.0], backend=backend).shape == (2, 0)
    assert _pairs(radius_graph(pair, two, 0.5001, box=[3.0, 3.0], backend=backend)) == {
        (0, 1), (1, 0)}
    assert radius_graph(pair, two, 0.5001, backend=backend).shape == (2, 0)  # open: 2.5


@pytest.mark.parametrize("ratio", [2.0, 2.5, 3.0, 3.5, 7.0])
def test_small_periodic_boxes_count_each_pair_once(ratio):
    """Boxes of 2 to 7 radii (grids of 1 to 6 cells per side): no pair twice."""
    radius = 1.0
    q, ptr = _system([60, 45], 3, ratio * radius, seed=int(10 * ratio))
    box = torch.tensor([ratio, ratio + 1.5, 2.0 if ratio == 2.0 else 2.5],
                       dtype=torch.float64)  # grids with 1 cell, or >= 2 in every dimension
    brute = radius_graph(q, ptr, radius, box=box, backend="brute")
    cells = radius_graph(q, ptr, radius, box=box, backend="cells")
    assert brute.shape[1] > 100
    assert torch.equal(cells, brute)
    assert _pairs(brute) == _reference_pairs(q, ptr, radius, box)


def test_sparse_and_far_flung_grids():
    """Clusters far apart (a grid of many empty cells, looked up by key), and a
    spread so wide for the radius that the cells are coarsened to fit an int64 key."""
    gen = torch.Generator().manual_seed(8)
    clusters = torch.rand(4, 3, generator=gen, dtype=torch.float64) * 1000
    q = (clusters.repeat_interleave(25, 0)
         + torch.rand(100, 3, generator=gen, dtype=torch.float64))
    ptr = torch.tensor([0, 50, 100])
    brute = radius_graph(q, ptr, 0.4, backend="brute")
    assert brute.shape[1] > 50
    assert torch.equal(radius_graph(q, ptr, 0.4, backend="cells"), brute)
    far = torch.tensor([[0.0, 0, 0], [1e-7, 0, 0], [1e9, 1e9, 1e9], [1e9, 1e9, 1e9 + 5e-8]],
                       dtype=torch.float64)
    edges = radius_graph(far, torch.tensor([0, 4]), 1e-6, backend="cells")
    assert _pairs(edges) == {(0, 1), (1, 0), (2, 3), (3, 2)}


def test_backend_choice():
    q, ptr = _system([20], 2, 1.0, seed=9)
    with pytest.raises(ValueError, match=r"unknown backend 'kd'.*'auto', 'cells', 'brute'"):
        radius_graph(q, ptr, 0.3, backend="kd")
    with pytest.raises(ValueError, match="'torch_cluster' has no periodic box"):
        radius_graph(q, ptr, 0.3, box=[1.0, 1.0], backend="torch_cluster")


def test_torch_cluster_backend_equal():
    pytest.importorskip("torch_cluster")
    q, ptr = _system(GRAPH_SIZES, 3, 2.0, seed=11)
    brute = radius_graph(q, ptr, 0.5, backend="brute")
    assert torch.equal(radius_graph(q, ptr, 0.5, backend="torch_cluster"), brute)
    q32 = q.float()
    assert torch.equal(radius_graph(q32, ptr, 0.5, backend="torch_cluster"),
                       radius_graph(q32, ptr, 0.5, backend="brute"))


def test_bad_inputs_name_what_was_wrong():
    q = torch.rand(6, 2)
    ptr = torch.tensor([0, 2, 6])
    for bad in (-0.1, math.nan, math.inf, "one"):
        with pytest.raises(ValueError, match=r"radius must be a finite number >= 0, got"):
            radius_graph(q, ptr, bad)
    for bad, what in (([1, 2, 6], "start at 0"), ([0, 4, 2, 6], "never decrease"),
                      ([0, 2, 5], r"end at N = 6"), ([[0, 6]], "1-D integer"),
                      ([0.0, 6.0], "1-D integer"), ([], "1-D integer")):
        with pytest.raises(ValueError, match=r"ptr must .*" + what if what != "1-D integer"
                           else "ptr must be a 1-D integer tensor"):
            radius_graph(q, torch.tensor(bad), 0.3)
    with pytest.raises(ValueError, match=r"q must be a floating-point tensor of positions "
                       r"\[N, d\], got \(6,\)"):
        radius_graph(torch.rand(6), ptr, 0.3)
    with pytest.raises(ValueError, match="floating-point"):
        radius_graph(torch.ones(6, 2, dtype=torch.long), ptr, 0.3)
    with pytest.raises(ValueError, match="NaN or infinite"):
        radius_graph(torch.full((6, 2), math.nan), ptr, 0.3)
    with pytest.raises(ValueError, match=r"smaller than 2 \* radius = 0.8.*box >= 2 \* cut-off"):
        radius_graph(q, ptr, 0.4, box=[1.0, 0.7])
    with pytest.raises(ValueError, match=r"box must hold lengths \[d\] = \[2\] or \[G, d\] = "
                       r"\[2, 2\], got \(3,\)"):
        radius_graph(q, ptr, 0.3, box=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"got \(3, 2\)"):
        radius_graph(q, ptr, 0.3, box=torch.ones(3, 2))
    for bad in ([0.0, 1.0], [math.inf, 1.0], [-1.0, 1.0]):
        with pytest.raises(ValueError, match="box lengths must be finite and > 0"):
            radius_graph(q, ptr, 0.3, box=bad)


def test_edge_vectors_are_minimum_images_and_differentiable():
    q, ptr = _system([30, 20], 2, 2.0, seed=12)
    box = torch.tensor([[2.0, 2.0], [2.5, 3.0]], dtype=torch.float64)
    edges = radius_graph(q, ptr, 0.6, box=box)
    q.requires_grad_(True)
    vec = edge_vectors(q, edges, box=box, ptr=ptr)
    lengths = box[batch_vector(ptr)[edges[0]]]
    assert (vec.abs() <= lengths / 2).all() and (vec.norm(dim=-1) < 0.6).all()
    raw = q[edges[1]] - q[edges[0]]
    images = (raw - vec) / lengths  # whole numbers of box lengths
    assert (images - images.round()).abs().max() < 1e-12
    assert not torch.allclose(raw, vec)  # some edges cross a face
    (grad,) = torch.autograd.grad(vec[:, 0].sum(), q)
    expected = (torch.bincount(edges[1], minlength=50)
                - torch.bincount(edges[0], minlength=50)).double()
    assert torch.equal(grad[:, 0], expected) and (grad[:, 1] == 0).all()
    assert torch.equal(edge_vectors(q, edges), raw)
    with pytest.raises(ValueError, match="needs ptr"):
        edge_vectors(q, edges, box=box)


def _walk(n, d, extent, steps, step_size, seed, sizes=None):
    gen = torch.Generator().manual_seed(seed)
    q = torch.rand(n, d, generator=gen, dtype=torch.float64) * extent
    v = torch.randn(n, d, generator=gen, dtype=torch.float64)
    for _ in range(steps):
        v = v + 0.3 * torch.randn(n, d, generator=gen, dtype=torch.float64)
        v = v / v.norm(dim=-1, keepdim=True)
        q = q + step_size * v
        yield q


@pytest.mark.parametrize("box", [None, [4.0, 4.0]])
def test_neighbour_list_rebuilds_rarely_and_misses_no_pair(box):
    radius, skin = 0.35, 0.1
    ptr = torch.tensor([0, 70, 70, 150])
    lists = {trim: NeighbourList(radius, skin, box=box, trim=trim) for trim in (False, True)}
    steps = 60
    for q in _walk(150, 2, 4.0, steps, step_size=0.005, seed=13):
        wanted = radius_graph(q, ptr, radius, box=box, backend="brute")
        padded = lists[False].update(q, ptr)
        assert _pairs(wanted) <= _pairs(padded)
        assert torch.equal(lists[True].update(q, ptr), wanted)  # trimmed: exactly these
        assert torch.equal(padded, radius_graph(lists[False]._ref, ptr, radius + skin,
                                                box=box, backend="brute"))
    for nl in lists.values():
        assert nl.updates == steps
        # 60 steps of 0.005 move a particle by at most 0.3: a rebuild every 10 steps
        assert 2 <= nl.rebuilds <= steps // 10 + 1
    assert wanted.shape[1] > 50


def test_neighbour_list_rebuild_threshold_and_layout_changes():
    q = torch.tensor([[0.0, 0.0], [0.5, 0.0], [3.0, 3.0]], dtype=torch.float64)
    ptr = torch.tensor([0, 3])
    nl = NeighbourList(0.6, 0.2, box=[5.0, 5.0])
    nl.update(q, ptr)
    assert nl.rebuilds == 1
    moved = q.clone()
    moved[2, 0] += 0.099  # under skin / 2
    nl.update(moved, ptr)
    assert nl.rebuilds == 1
    moved[2, 0] += 0.002  # over skin / 2 since the build
    nl.update(moved, ptr)
    assert nl.rebuilds == 2
    wrapped = moved.clone()
    wrapped[0, 0] += 5.0  # the same state, one particle written one box further
    nl.update(wrapped, ptr)
    assert nl.rebuilds == 2
    nl.update(moved, torch.tensor([0, 1, 3]))  # another batch layout
    assert nl.rebuilds == 3
    nl.update(moved.float(), torch.tensor([0, 1, 3]))  # another dtype
    assert nl.rebuilds == 4
    nl.reset()
    nl.update(moved.float(), torch.tensor([0, 1, 3]))
    assert nl.rebuilds == 5
    with pytest.raises(ValueError, match=r"smaller than 2 \* \(radius \+ skin\) = 1.6"):
        NeighbourList(0.6, 0.2, box=[1.5, 5.0])
    with pytest.raises(ValueError, match="skin must be a finite number >= 0"):
        NeighbourList(0.6, -0.2)
    with pytest.raises(ValueError, match="unknown backend"):
        NeighbourList(0.6, 0.2, backend="octree")


def test_cells_in_small_blocks_and_chunks(monkeypatch):
    """Particles taken a few at a time, candidates expanded a few at a time: the same
    edges (the paths that large systems and dense clusters take)."""
    import hogn.graph.cells as cells

    monkeypatch.setattr(cells, "_BLOCK_SLOTS", 100)
    monkeypatch.setattr(cells, "_CANDIDATES_PER_CHUNK", 37)
    q, ptr = _system(GRAPH_SIZES, 3, 2.0, seed=14)
    cluster = torch.cat([q, torch.full((40, 3), 0.5, dtype=torch.float64)
                         + 0.01 * torch.rand(40, 3, dtype=torch.float64)])
    ptr_c = torch.cat([ptr, ptr[-1:] + 40])
    for positions, offsets in ((q, ptr), (cluster, ptr_c)):
        for box in (None, [2.0, 2.0, 2.0], [2.0, 1.2, 2.0]):  # open, wrapped, masked
            brute = radius_graph(positions, offsets, 0.55, box=box, backend="brute")
            assert torch.equal(radius_graph(positions, offsets, 0.55, box=box,
                                            backend="cells"), brute)
    far = q.clone()
    far[::2] += 1000.0  # sparse: cells looked up by key
    brute = radius_graph(far, ptr, 0.55, backend="brute")
    assert brute.shape[1] > 100
    assert torch.equal(radius_graph(far, ptr, 0.55, backend="cells"), brute)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cells_on_cuda_equal_brute_force_on_cpu():
    q, ptr = _system(GRAPH_SIZES, 3, 3.0, seed=15)
    for box in (None, [3.0, 3.0, 3.0], [3.0, 1.5, 3.0]):
        brute = radius_graph(q, ptr, 0.6, box=box, backend="brute")
        on_gpu = radius_graph(q.cuda(), ptr.cuda(), 0.6, box=box, backend="cells")
        assert on_gpu.device.type == "cuda"
        assert torch.equal(on_gpu.cpu(), brute)
    nl = NeighbourList(0.6, 0.1, box=[3.0, 3.0, 3.0], trim=True)
    assert torch.equal(nl.update(q.cuda(), ptr.cuda()).cpu(),
                       radius_graph(q, ptr, 0.6, box=[3.0, 3.0, 3.0], backend="brute"))


def test_auto_backend_choice(monkeypatch):
    import importlib.util

    from hogn.graph.radius import _resolve_backend

    small, large = torch.tensor([0, 100, 181]), torch.tensor([0, 100, 400])
    assert _resolve_backend("auto", small, None) == "brute"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert _resolve_backend("auto", large, None) == "cells"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert _resolve_backend("auto", large, None) == "torch_cluster"
    assert _resolve_backend("auto", large, torch.ones(1, 2)) == "cells"  # no box there
    assert _resolve_backend("cells", small, None) == "cells"


def test_segment_sum_and_max_equal_pyg_scatter_bit_for_bit():
    """hogn.graph's per-bucket sums and maxima are PyG's scatter (the same kernel), so
    ground truth and metrics keep their values without importing PyG."""
    from torch_geometric.utils import scatter

    from hogn.graph import segment_max, segment_sum

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 37, generator=gen, dtype=torch.float64)
    index = torch.randint(0, 6, (37,), generator=gen)  # bucket 6 of 7 stays empty
    for dim in (-1, 1):
        assert torch.equal(segment_sum(x, index, 7, dim=dim),
                           scatter(x, index, dim=dim, dim_size=7, reduce="sum"))
    rows = torch.randn(37, 3, generator=gen)
    assert torch.equal(segment_sum(rows, index, 7, dim=0),
                       scatter(rows, index, dim=0, dim_size=7, reduce="sum"))
    assert torch.equal(segment_max(rows, index, 7, dim=0),
                       scatter(rows, index, dim=0, dim_size=7, reduce="max"))
    with pytest.raises(ValueError, match=r"index must be \[37\]"):
        segment_sum(rows, index[:5], 7, dim=0)
