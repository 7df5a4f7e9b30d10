"""Graph models in a periodic box and with a smooth cutoff.

In a box, edge vectors are minimum images: moving a particle by a box vector changes
nothing, and the written gradients (training and rollout) equal autograd's. With a
``cutoff``, edges beyond it carry nothing: ``H`` is the same whichever longer edges a
neighbour graph holds, and it stays smooth as particles cross the cutoff.
"""

from __future__ import annotations

import pytest
import torch

import hogn.models as models
from hogn import energy_gradient
from hogn.graph import GraphBatch, ptr_from_sizes, radius_graph
from hogn.nn import cutoff_envelope

F64 = torch.float64


def boxed(sizes=(12, 9), box=3.0, radius=1.4, seed=0, dim=2) -> GraphBatch:
    """Random particles in square boxes (one length per graph) on a periodic radius graph."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    lengths = torch.tensor([[box + 0.3 * g] * dim for g in range(len(sizes))], dtype=F64)
    ptr = ptr_from_sizes(list(sizes))
    graph_of = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    q = torch.rand(n, dim, generator=gen, dtype=F64) * lengths[graph_of]
    p = torch.randn(n, dim, generator=gen, dtype=F64)
    c = 1 + torch.rand(n, 1, generator=gen, dtype=F64)
    edges = radius_graph(q, ptr, radius, box=lengths)
    return GraphBatch(q, p, c, edges, ptr, box=lengths)


def make(name: str, seed: int = 0, **config) -> models.DynamicsModel:
    torch.manual_seed(seed)
    extra = {"dt": 0.1} if name == "deltagn" else {}
    return models.get(name, dim=2, node_constants=1, hidden=16, **extra, **config).double()


def autograd_derivative(model, graph):
    q = graph.q.detach().requires_grad_(True)
    p = graph.p.detach().requires_grad_(True)
    gq, gp = torch.autograd.grad(model.energy(q, p, graph).sum(), (q, p))
    return gp, -gq


@pytest.mark.parametrize("name", ["hogn", "separable-hogn", "ogn", "deltagn"])
@pytest.mark.parametrize("cutoff", [None, 1.2])
def test_moving_a_particle_by_a_box_vector_changes_nothing(name, cutoff):
    model = make(name, cutoff=cutoff)
    graph = boxed()
    q = graph.q.clone()
    q[3, 0] += graph.box[0, 0]
    q[15, 1] -= 2 * graph.box[1, 1]
    moved = graph.replace(q=q)
    if model.is_stepper:
        a, b = model.delta(graph), model.delta(moved)
    else:
        a, b = model.time_derivative(graph), model.time_derivative(moved)
    for x, y in zip(a, b, strict=True):
        assert torch.allclose(x, y, rtol=1e-10, atol=1e-12)
    # without the box the same move is a different state
    plain = models.get(name, dim=2, node_constants=1, hidden=16,
                       **({"dt": 0.1} if name == "deltagn" else {})).double()
    plain.load_state_dict(model.state_dict())
    if cutoff is None and not model.is_stepper:
        unboxed = graph.replace(box=None)
        moved_unboxed = moved.replace(box=None)
        assert not torch.allclose(plain.time_derivative(unboxed)[1],
                                  plain.time_derivative(moved_unboxed)[1])


@pytest.mark.parametrize("name", ["hogn", "separable-hogn"])
@pytest.mark.parametrize(("cutoff", "edge_energies"), [(None, False), (1.2, False), (1.2, True)])
def test_written_gradients_equal_autograd_in_a_box(name, cutoff, edge_energies):
    model = make(name, cutoff=cutoff, edge_energies=edge_energies)
    graph = boxed(seed=1)
    assert energy_gradient.supports(model.gn if name == "hogn" else model.potential)
    dq, dp = model.time_derivative(graph)
    ref_q, ref_p = autograd_derivative(model, graph)
    assert torch.allclose(dq, ref_q, rtol=1e-10, atol=1e-12)
    assert torch.allclose(dp, ref_p, rtol=1e-10, atol=1e-12)
    # the frozen-weight rollout field too
    fq, fp = model.rollout_field(graph)(graph.q, graph.p)
    assert torch.allclose(fq, ref_q, rtol=1e-10, atol=1e-12)
    assert torch.allclose(fp, ref_p, rtol=1e-10, atol=1e-12)
    # and the parameter gradients of a training loss
    loss = sum(x.square().sum() for x in model.derivative(graph.q, graph.p, graph,
                                                          create_graph=True))
    written = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    q = graph.q.detach().requires_grad_(True)
    p = graph.p.detach().requires_grad_(True)
    gq, gp = torch.autograd.grad(model.energy(q, p, graph).sum(), (q, p), create_graph=True)
    ref = torch.autograd.grad(gq.square().sum() + gp.square().sum(), list(model.parameters()),
                              allow_unused=True)
    for a, b in zip(written, ref, strict=True):
        if a is None or b is None:
            assert (a is None or not a.any()) and (b is None or not b.any())
        else:
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["hogn", "separable-hogn", "ogn"])
def test_edges_beyond_the_cutoff_carry_nothing(name):
    model = make(name, cutoff=1.0, edge_energies=True) if name == "hogn" else make(
        name, cutoff=1.0)
    graph = boxed(sizes=(30, 24), box=4.0, radius=1.0, seed=2)
    wider = graph.replace(edge_index=radius_graph(graph.q, graph.ptr, 1.6, box=graph.box))
    assert wider.edge_index.shape[1] > graph.edge_index.shape[1]
    a, b = model.time_derivative(graph), model.time_derivative(wider)
    for x, y in zip(a, b, strict=True):
        assert torch.allclose(x, y, rtol=1e-12, atol=1e-13)
    if name != "ogn":
        assert torch.allclose(model.hamiltonian(graph), model.hamiltonian(wider), rtol=1e-12)
        # without the cutoff the longer edges do change H
        plain = make(name)
        assert not torch.allclose(plain.hamiltonian(graph), plain.hamiltonian(wider))


def test_cutoff_enters_the_written_gradient(monkeypatch):
    """The written gradient carries the envelope's own derivative: treating the envelope
    as a constant (autograd of an energy whose envelope is detached) differs from it by
    far more than rounding, so the equality above is a real check."""
    import hogn.nn as hnn

    model = make("hogn", cutoff=1.2)
    assert energy_gradient.supports(model.gn)
    graph = boxed(seed=3)
    _, dp = model.time_derivative(graph)
    original = hnn.cutoff_envelope
    monkeypatch.setattr(hnn, "cutoff_envelope",
                        lambda dist, cutoff: original(dist.detach(), cutoff))
    q = graph.q.detach().requires_grad_(True)
    p = graph.p.detach().requires_grad_(True)
    gq, _ = torch.autograd.grad(model.energy(q, p, graph).sum(), (q, p))
    assert (dp + gq).abs().max() > 1e-3 * dp.abs().max()


def test_envelope_is_twice_smooth_at_the_cutoff():
    r = torch.tensor([[0.0], [0.5], [0.999999], [1.0], [1.5]], dtype=F64, requires_grad=True)
    w = cutoff_envelope(r, 1.0)
    assert torch.allclose(w.detach()[[0, 3, 4], 0], torch.tensor([1.0, 0.0, 0.0], dtype=F64))
    assert 0 < w[1, 0] < 1 and w[2, 0] < 1e-15
    (g,) = torch.autograd.grad(w.sum(), r, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), r)
    assert abs(g[2, 0]) < 1e-9 and abs(g[3, 0]) == 0 and abs(h[2, 0]) < 1e-4
    assert abs(g[1, 0] - (-30 * 0.25 * 0.25)) < 1e-12  # w' = −30 x²(1 − x)²


def test_energy_is_smooth_as_a_particle_crosses_the_cutoff():
    model = make("hogn", cutoff=1.0)
    c = torch.ones(2, 1, dtype=F64)
    ptr = ptr_from_sizes([2])
    edges = torch.tensor([[0, 1], [1, 0]])
    p = torch.tensor([[0.3, -0.1], [0.2, 0.4]], dtype=F64)

    def energy(r):
        q = torch.tensor([[0.0, 0.0], [r, 0.0]], dtype=F64)
        return model.hamiltonian(GraphBatch(q, p, c, edges, ptr)).item()

    far = energy(1.3)
    for r in (1.0, 1.0001, 1.1):
        assert abs(energy(r) - far) < 1e-12
    # approaching the cutoff from inside, H joins the far value with zero slope
    gaps = [abs(energy(1.0 - h) - far) for h in (1e-2, 1e-3)]
    assert gaps[1] < gaps[0] * 1e-2  # at least third order: (1e-3 / 1e-2)^3 = 1e-3


def test_cutoff_and_box_survive_save_and_load(tmp_path):
    model = make("hogn", cutoff=1.1)
    path = model.save(tmp_path / "m.pt")
    loaded = models.load(path)
    assert loaded.config()["cutoff"] == 1.1 and loaded.gn.cutoff == 1.1
    graph = boxed(seed=4)
    assert torch.allclose(loaded.time_derivative(graph)[0], model.time_derivative(graph)[0])


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), "1", True])
def test_bad_cutoff_is_refused(bad):
    with pytest.raises(ValueError, match="cutoff"):
        make("hogn", cutoff=bad)


@pytest.mark.parametrize("name", ["hogn", "separable-hogn"])
@pytest.mark.parametrize("config", [
    {}, {"cutoff": 1.2}, {"cutoff": 1.2, "edge_energies": True},
    {"cutoff": 1.2, "activation": "tanh", "layers": 3}, {"cutoff": 1.2, "activation": "silu"},
    {"cutoff": 1.2, "steps": 1, "layers": 1}], ids=lambda c: ",".join(f"{k}={v}" for k, v in
                                                                       c.items()) or "default")
def test_rollout_field_with_kept_buffers_equals_autograd_call_after_call(monkeypatch, name,
                                                                          config):
    """Large graphs keep their edge-sized tensors from one call of the rollout field to
    the next (hogn.models.inference._Buffers): each call must still give autograd's
    field, later calls reuse the first call's tensors, and an earlier result is not
    overwritten by a later call."""
    from hogn.models import inference

    monkeypatch.setattr(inference, "KEEP_EDGE_BUFFERS", 0)  # these small graphs keep them
    made = []

    class Recorded(inference._Buffers):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(inference, "_Buffers", Recorded)
    model = make(name, **config)
    graph = boxed(seed=2)
    field = model.rollout_field(graph)
    assert len(made) == 1 and made[0].on
    gen = torch.Generator().manual_seed(3)
    results, kept = [], None
    for _ in range(3):
        q = graph.q + 0.2 * torch.rand(graph.q.shape, generator=gen, dtype=F64)
        p = graph.p + torch.randn(graph.p.shape, generator=gen, dtype=F64)
        fq, fp = field(q, p)
        ref_q, ref_p = autograd_derivative(model, graph.replace(q=q, p=p))
        assert torch.allclose(fq, ref_q, rtol=1e-10, atol=1e-12)
        assert torch.allclose(fp, ref_p, rtol=1e-10, atol=1e-12)
        results.append((fq.clone(), fp.clone(), fq, fp))
        ids = sorted(t.data_ptr() for t in made[0].kept.values())
        assert ids and (kept is None or ids == kept)  # the same tensors, reused
        kept = ids
    for saved_q, saved_p, fq, fp in results:
        assert torch.equal(saved_q, fq) and torch.equal(saved_p, fp)
