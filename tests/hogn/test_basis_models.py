"""Basis models ``H = φ · w`` (hnn-basis, hogn-basis): Hamilton's equations of the linear
head, batching, symmetries, rollouts by autograd, registry, files and bad ``features``."""

from __future__ import annotations

import pytest
import torch

import hogn
import hogn.models as models
import systems
from hogn.graph import GraphBatch
from hogn.models import HNN, HOGN, HNNBasis, HOGNBasis

F64 = torch.float64
CONFIGS = {
    "hnn-basis": {"n_particles": 3, "dim": 2, "node_constants": 1, "hidden": 16, "features": 5},
    "hogn-basis": {"dim": 2, "node_constants": 1, "edge_features": 2, "hidden": 16,
                   "steps": 2, "edge_energies": True, "features": 5},
}


def make(name: str, **overrides) -> models.DynamicsModel:
    torch.manual_seed(0)
    model = models.get(name, **{**CONFIGS[name], **overrides}).to(F64)
    with torch.no_grad():  # a head unlike the symmetric default, so features are told apart
        model.head.copy_(torch.linspace(-1.0, 1.5, model.head.numel(), dtype=F64))
    return model.eval()


def graph_for(name: str, springs: GraphBatch, triples: GraphBatch) -> GraphBatch:
    return triples if name == "hnn-basis" else springs


# ------------------------------------------------------------------- H = φ · w
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_field_is_the_head_weighted_sum_of_the_feature_fields(name, springs, triples):
    """``(dq, dp) = Σ_i w_i (∂φ_i/∂p, −∂φ_i/∂q)``, the features' fields taken one by one,
    and ``H = φ · w``."""
    model = make(name)
    graph = graph_for(name, springs, triples)
    q = graph.q.clone().requires_grad_(True)
    p = graph.p.clone().requires_grad_(True)
    phi = model.features_of(q, p, graph)
    assert phi.shape == (graph.num_graphs, model.features)
    torch.testing.assert_close(model.hamiltonian(graph), phi.detach() @ model.head.detach(),
                               rtol=0, atol=1e-13)
    dq, dp = torch.zeros_like(q), torch.zeros_like(p)
    for i in range(model.features):
        gq, gp = torch.autograd.grad(phi[:, i].sum(), (q, p), retain_graph=True)
        dq, dp = dq + model.head[i] * gp, dp - model.head[i] * gq
    got_q, got_p = model.time_derivative(graph)
    torch.testing.assert_close(got_q, dq.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(got_p, dp.detach(), rtol=0, atol=1e-12)
    # the field is linear in the head: doubling w doubles it
    with torch.no_grad():
        model.head.mul_(2)
    twice_q, _ = model.time_derivative(graph)
    torch.testing.assert_close(twice_q, 2 * got_q, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_field_matches_finite_differences_of_h(name, springs, triples):
    model = make(name)
    graph = graph_for(name, springs, triples).select([0])
    dq, dp = model.time_derivative(graph)
    eps = 1e-6
    for x, sign, target in ((graph.q, -1, dp), (graph.p, 1, dq)):
        for node in range(graph.num_nodes):
            for k in range(graph.q.shape[1]):
                up, down = x.clone(), x.clone()
                up[node, k] += eps
                down[node, k] -= eps
                moved = [graph.replace(**{"q" if x is graph.q else "p": y}) for y in (up, down)]
                with torch.no_grad():
                    slope = (model.hamiltonian(moved[0]) - model.hamiltonian(moved[1])) / (2 * eps)
                assert float(sign * slope) == pytest.approx(float(target[node, k]), abs=1e-7)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_rollout_field_is_the_models_own(name, springs, triples):
    """The rollout path must not borrow the parent's written-out gradient (one output)."""
    model = make(name)
    graph = graph_for(name, springs, triples)
    fast = model.rollout_field(graph)(graph.q, graph.p)
    for x, y in zip(fast, model.time_derivative(graph), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-12)
    # and the rollout keeps the learned H (RK4, dt = 0.01: conserved to O(dt⁴))
    q, p = hogn.rollout(model, graph, steps=20, dt=0.01, integrator="rk4")
    with torch.no_grad():
        start, end = (model.hamiltonian(graph.replace(q=q[t], p=p[t])) for t in (0, -1))
        moved = (q[-1] - q[0]).abs().max()
    assert float((end - start).abs().max()) < 1e-8 < 1e-3 < float(moved)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_batch_equals_one_graph_at_a_time(name, springs, triples):
    model = make(name)
    graph = graph_for(name, springs, triples)
    together = model.time_derivative(graph)
    for i in range(graph.num_graphs):
        alone = graph.select([i])
        nodes = slice(int(graph.ptr[i]), int(graph.ptr[i + 1]))
        for x, y in zip(together, model.time_derivative(alone), strict=True):
            torch.testing.assert_close(x[nodes], y, rtol=0, atol=1e-12)
        torch.testing.assert_close(model.features_of(alone.q, alone.p, alone),
                                   model.features_of(graph.q, graph.p, graph)[i:i + 1],
                                   rtol=0, atol=1e-12)


def test_hogn_basis_is_equivariant_and_translation_invariant(springs):
    model = make("hogn-basis")
    gen = torch.Generator().manual_seed(0)
    perm = torch.cat([a + torch.randperm(b - a, generator=gen) for a, b in
                      zip(springs.ptr[:-1].tolist(), springs.ptr[1:].tolist(), strict=True)])
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel())
    moved = GraphBatch(springs.q[perm] + 3.0, springs.p[perm], springs.c[perm],
                       inverse[springs.edge_index], springs.ptr, springs.edge_attr)
    torch.testing.assert_close(model.features_of(moved.q, moved.p, moved),
                               model.features_of(springs.q, springs.p, springs),
                               rtol=0, atol=1e-10)
    for x, y in zip(model.time_derivative(moved), model.time_derivative(springs), strict=True):
        torch.testing.assert_close(x, y[perm], rtol=0, atol=1e-10)


# ------------------------------------------------------------- registry, files
def test_registered_with_their_parents_arguments():
    assert {"hnn-basis", "hogn-basis"} <= set(models.names())
    assert type(models.get("hnn-basis")) is HNNBasis and issubclass(HNNBasis, HNN)
    assert type(models.get("hogn-basis")) is HOGNBasis and issubclass(HOGNBasis, HOGN)
    hnn = models.get("hnn-basis", n_particles=2, dim=2, hidden=8, layers=2, features=3)
    assert hnn.config() == {"n_particles": 2, "dim": 2, "node_constants": 1, "hidden": 8,
                            "layers": 2, "activation": "tanh", "features": 3}
    assert hnn.net[-1].out_features == 3 and hnn.head.shape == (3,)
    gn = models.get("hogn-basis", hidden=8, edge_energies=True, features=4)
    assert gn.config() == {**models.get("hogn", hidden=8, edge_energies=True).config(),
                           "features": 4}
    assert gn.gn.node_decoder[-1].out_features == 4 == gn.gn.edge_decoder[-1].out_features
    assert models.get("hogn-basis").features == 32  # the default
    torch.testing.assert_close(models.get("hogn-basis", features=4).head,
                               torch.full((4,), 0.5))
    # parameters: the parent's networks plus the head
    names = {n for n, _ in models.get("hnn-basis").named_parameters()}
    assert names == {n for n, _ in models.get("hnn").named_parameters()} | {"head"}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_checkpoint_reloads_to_identical_outputs(name, springs, triples, tmp_path):
    model = make(name)
    graph = graph_for(name, springs, triples)
    path = model.save(tmp_path / f"{name}.pt")
    loaded = models.load(path)
    assert type(loaded) is type(model) and loaded.config() == model.config()
    assert loaded.param_dtype == F64 and not loaded.training
    assert torch.equal(loaded.head, model.head)
    for x, y in zip(model.time_derivative(graph), loaded.time_derivative(graph), strict=True):
        assert torch.equal(x, y)
    assert type(model).load(path).config() == model.config()


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "8", None])
def test_bad_features_are_refused(name, bad):
    with pytest.raises(ValueError, match=rf"{name}: features must be an int >= 1.*got "
                                         rf"{bad!r}"):
        models.get(name, features=bad)


def test_training_fits_a_harmonic_oscillator():
    """A few Adam steps on a 1-D oscillator's field lower the error (head and basis)."""
    data = systems.generate("mass-spring", trajectories=6, steps=20, dt=0.2, seed=0)
    graph = GraphBatch.cat([data.state(i) for i in range(data.q.shape[0])])
    dq, dp = data.dq.reshape(-1, 1), data.dp.reshape(-1, 1)
    torch.manual_seed(0)
    model = models.get("hnn-basis", n_particles=1, dim=1, hidden=32, features=8).to(F64)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def error() -> torch.Tensor:
        pq, pp = model.time_derivative(graph, create_graph=True)
        return torch.cat([pq - dq, pp - dp]).square().mean()

    before = float(error().detach())
    head = model.head.detach().clone()
    for _ in range(150):
        optimizer.zero_grad()
        error().backward()
        optimizer.step()
    assert float(error().detach()) < 0.05 * before
    assert not torch.equal(model.head.detach(), head)  # the head is trained too
