"""Rollouts on neighbour lists: the edges follow the particles (rebuilt only when one
has moved more than half the skin), and for a model with a smooth cutoff the result
equals a rollout on the complete graph, where every pair is an edge throughout."""

from __future__ import annotations

import pytest
import torch

import hogn
import hogn.models as models
from hogn.graph import GraphBatch, NeighbourList, fully_connected, ptr_from_sizes

F64 = torch.float64


def boxed_fluid(sizes=(40, 30), box=7.0, seed=0) -> GraphBatch:
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    lengths = torch.full((len(sizes), 2), box, dtype=F64)
    # a jittered lattice: no two particles close, as in a fluid
    side = int(box)
    cells = torch.cartesian_prod(torch.arange(side), torch.arange(side)).to(F64)
    q = torch.cat([cells[torch.randperm(len(cells), generator=gen)[:k]] for k in sizes])
    q = q + 0.5 + 0.2 * torch.rand(n, 2, generator=gen, dtype=F64)
    p = torch.randn(n, 2, generator=gen, dtype=F64)
    c = torch.ones(n, 1, dtype=F64)
    return GraphBatch(q, p, c, fully_connected(list(sizes)), ptr_from_sizes(list(sizes)),
                      box=lengths)


def make(name="hogn", cutoff=1.5, seed=0):
    torch.manual_seed(seed)
    extra = {"dt": 0.02} if name == "deltagn" else {}
    return models.get(name, dim=2, node_constants=1, hidden=16, cutoff=cutoff,
                      **extra).double()


@pytest.mark.parametrize(("name", "integrator"), [("hogn", "rk4"), ("separable-hogn", "leapfrog"),
                                                   ("ogn", "rk4"), ("deltagn", None)])
def test_neighbour_list_rollout_equals_the_complete_graph(name, integrator):
    model = make(name)
    graph = boxed_fluid()
    steps = 40
    dt = 0.02 if integrator else None
    q_ref, p_ref = hogn.rollout(model, graph, steps, dt=dt, integrator=integrator)
    skin = 0.1
    nl = NeighbourList(1.5, skin, box=graph.box)
    q, p = hogn.rollout(model, graph, steps, dt=dt, integrator=integrator, neighbours=nl)
    assert torch.allclose(q, q_ref, rtol=1e-10, atol=1e-11)
    assert torch.allclose(p, p_ref, rtol=1e-10, atol=1e-11)
    assert nl.updates == steps
    # the list was searched exactly when a particle had moved more than skin / 2 since
    # the last search (before each step, from the positions then)
    expected, ref = 0, None
    for t in range(steps):
        moved = None if ref is None else q_ref[t] - ref
        if moved is not None:
            moved = moved - graph.box[0] * torch.round(moved / graph.box[0])
        if ref is None or moved.norm(dim=-1).max() > skin / 2:
            expected, ref = expected + 1, q_ref[t]
    assert nl.rebuilds == expected
    if name in ("separable-hogn", "ogn"):  # these random models move their particles a bit
        assert 1 < nl.rebuilds < steps
    complete = graph.edge_index.shape[1]
    assert nl.edge_index.shape[1] < complete / 3  # far fewer edges than every pair


def test_substeps_on_neighbour_lists():
    model = make()
    graph = boxed_fluid(seed=1)
    q_ref, _ = hogn.rollout(model, graph, 10, dt=0.04, integrator="rk4", substeps=2)
    q, _ = hogn.rollout(model, graph, 10, dt=0.04, integrator="rk4", substeps=2,
                        neighbours=NeighbourList(1.5, 0.4, box=graph.box))
    assert torch.allclose(q, q_ref, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize(("cutoff", "match"), [(None, "cutoff=None"), (2.0, "cutoff=2.0")])
def test_models_that_read_longer_edges_are_refused(cutoff, match):
    graph = boxed_fluid()
    with pytest.raises(ValueError, match=match):
        hogn.rollout(make(cutoff=cutoff), graph, 3, dt=0.02,
                     neighbours=NeighbourList(1.5, 0.4, box=graph.box))


def test_edge_constants_are_refused():
    graph = boxed_fluid()
    graph = graph.replace(edge_attr=torch.ones(graph.edge_index.shape[1], 1, dtype=F64))
    with pytest.raises(ValueError, match="edge constants"):
        hogn.rollout(make(), graph, 3, dt=0.02, neighbours=NeighbourList(1.5, 0.4, box=graph.box))
