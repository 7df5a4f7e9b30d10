"""The potential model H = Σ|p|²/2m + V_θ(q): exact velocities, forces −∂V/∂q, velocity
Verlet with one force evaluation a step, and training from forces alone."""

from __future__ import annotations

import math

import pytest
import torch

import hogn
import hogn.models as models
from hogn import energy_gradient, integrators
from hogn.graph import GraphBatch, NeighbourList, fully_connected, ptr_from_sizes, radius_graph
from hogn.models import inference


def _cluster(sizes=(5, 7), dim: int = 3, seed: int = 0, dtype=torch.float64) -> GraphBatch:
    """Particles of masses 1–3 (node constants [mass, species]) on complete graphs."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    q = 2.0 * torch.rand(n, dim, generator=gen, dtype=dtype)
    p = torch.randn(n, dim, generator=gen, dtype=dtype)
    mass = 1.0 + 2.0 * torch.rand(n, 1, generator=gen, dtype=dtype)
    species = torch.randint(0, 2, (n, 1), generator=gen).to(dtype)
    return GraphBatch(q, p, torch.cat([mass, species], 1), fully_connected(sizes),
                      ptr_from_sizes(sizes))


def _model(dtype=torch.float64, **config) -> models.PotentialHOGN:
    torch.manual_seed(0)
    config = {"dim": 3, "node_constants": 2, "hidden": 16, "edge_energies": True, **config}
    return models.get("potential-hogn", **config).to(dtype)


def test_velocity_is_p_over_m_and_force_is_minus_grad_v():
    model, graph = _model(), _cluster()
    dq, dp = model.time_derivative(graph)
    assert torch.equal(dq, graph.p / graph.c[:, :1])
    q = graph.q.clone().requires_grad_(True)
    (dv,) = torch.autograd.grad(model.potential_energy(q, graph).sum(), q)
    torch.testing.assert_close(dp, -dv, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model.forces(graph), -dv, rtol=1e-10, atol=1e-12)
    # H is kinetic + potential, and its p-gradient agrees with p/m
    kinetic = 0.5 * ((graph.p ** 2).sum(1) / graph.c[:, 0])
    expected = torch.zeros(2, dtype=torch.float64).index_add_(0, graph.batch, kinetic)
    torch.testing.assert_close(model.hamiltonian(graph) - model.potential_energy(graph.q, graph),
                               expected)


def test_forces_match_finite_differences_of_the_energy():
    model, graph = _model(), _cluster(sizes=(6,))
    forces = model.forces(graph)
    h = 1e-6
    for node, axis in [(0, 0), (3, 2), (5, 1)]:
        plus, minus = graph.q.clone(), graph.q.clone()
        plus[node, axis] += h
        minus[node, axis] -= h
        fd = (model.potential_energy(plus, graph) - model.potential_energy(minus, graph)) / (2 * h)
        assert forces[node, axis].item() == pytest.approx(-fd.item(), rel=1e-6, abs=1e-9)


def test_forces_are_trainable_in_the_parameters():
    """The written-out force keeps a graph in the parameters when training: its
    parameter gradient equals double autograd of the potential."""
    model, graph = _model(), _cluster(sizes=(5,))
    model.train()
    _, dp = model.derivative(graph.q, graph.p, graph, create_graph=True)
    loss = (dp ** 2).sum()
    written = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    q = graph.q.clone().requires_grad_(True)
    (dv,) = torch.autograd.grad(model.potential_energy(q, graph).sum(), q, create_graph=True)
    reference = torch.autograd.grad((dv ** 2).sum(), list(model.parameters()), allow_unused=True)
    for a, b in zip(written, reference, strict=True):
        if b is None:
            assert a is None or not a.abs().any()
        else:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def _count_network_calls(monkeypatch) -> list[int]:
    """Count the rollouts' calls of the written-out potential gradient."""
    calls: list[int] = []
    real = inference._GraphNetworkGradient.__call__

    def counting(self, q, p):
        calls.append(1)
        return real(self, q, p)

    monkeypatch.setattr(inference._GraphNetworkGradient, "__call__", counting)
    return calls


def test_leapfrog_calls_the_network_once_a_step(monkeypatch):
    model, graph = _model(), _cluster()
    assert energy_gradient.supports(model.potential)
    calls = _count_network_calls(monkeypatch)
    steps = 20
    q, p = hogn.rollout(model, graph, steps=steps, dt=0.01, integrator="leapfrog")
    assert len(calls) == steps + 1  # the first force, then one a step
    # the same states as leapfrog on the plain (unsplit) field
    field = model.vector_field(graph)
    q_ref, p_ref = integrators.integrate(field, graph.q, graph.p, 0.01, steps, "leapfrog")
    torch.testing.assert_close(q, q_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(p, p_ref, rtol=1e-10, atol=1e-12)


def test_velocity_verlet_conserves_the_learned_energy_to_second_order():
    model, graph = _model(), _cluster(sizes=(6,))
    errors = []
    for dt in (0.02, 0.01):
        steps = round(2.0 / dt)
        q, p = hogn.rollout(model, graph, steps=steps, dt=dt, integrator="leapfrog")
        energy = torch.stack([model.energy(q[i], p[i], graph) for i in range(0, steps + 1, 10)])
        errors.append((energy - energy[0]).abs().max().item())
    assert errors[0] < 1e-2
    assert math.log2(errors[0] / errors[1]) == pytest.approx(2.0, abs=0.3)


def test_neighbour_list_rollout_reuses_the_force_between_rebuilds(monkeypatch):
    torch.manual_seed(1)
    n, box = 64, 6.0
    q = box * torch.rand(n, 3, dtype=torch.float64)
    p = 0.1 * torch.randn(n, 3, dtype=torch.float64)
    c = torch.cat([torch.ones(n, 1), torch.zeros(n, 1)], 1).double()
    ptr = ptr_from_sizes([n])
    boxes = torch.full((1, 3), box, dtype=torch.float64)
    edges = radius_graph(q, ptr, 2.0, box=boxes)
    graph = GraphBatch(q, p, c, edges, ptr, box=boxes)
    model = _model(cutoff=1.5)
    calls = _count_network_calls(monkeypatch)
    neighbours = NeighbourList(1.5, 0.5, box=boxes)
    steps = 10
    q_nl, _ = hogn.rollout(model, graph, steps=steps, dt=0.01, integrator="leapfrog",
                           neighbours=neighbours)
    assert len(calls) == steps + neighbours.rebuilds
    q_fixed, _ = hogn.rollout(model, graph, steps=steps, dt=0.01, integrator="leapfrog")
    torch.testing.assert_close(q_nl, q_fixed, rtol=1e-9, atol=1e-10)


def test_learns_a_pair_potential_from_forces_alone():
    """Forces of a harmonic pair potential V = Σ_{i<j} (r_ij − 1)² / 2 train the model;
    its potential differences then follow the true ones."""
    gen = torch.Generator().manual_seed(0)
    sizes = [4] * 64
    n = sum(sizes)
    q = 1.5 * torch.rand(n, 2, generator=gen, dtype=torch.float64)
    ptr = ptr_from_sizes(sizes)
    edges = fully_connected(sizes)
    graph = GraphBatch(q, torch.zeros_like(q), torch.ones(n, 1, dtype=torch.float64), edges, ptr)

    def true_potential(x):
        send, recv = edges
        r = (x[recv] - x[send]).norm(dim=1)
        e = 0.25 * (r - 1.0) ** 2  # each pair appears twice
        return torch.zeros(len(sizes), dtype=x.dtype).index_add_(0, graph.edge_batch, e)

    x = q.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(true_potential(x).sum(), x)
    forces = -grad
    torch.manual_seed(0)
    model = models.get("potential-hogn", dim=2, node_constants=1, hidden=32,
                       edge_energies=True).double()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(300):
        opt.zero_grad()
        _, dp = model.derivative(graph.q, graph.p, graph)
        loss = ((dp - forces) ** 2).mean()
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert loss.item() < 0.02 * first
    v = model.potential_energy(q, graph).detach()
    truth = true_potential(q)
    corr = torch.corrcoef(torch.stack([v - v.mean(), truth - truth.mean()]))[0, 1]
    assert corr > 0.95


def test_bad_mass_column_and_masses_are_refused():
    with pytest.raises(ValueError, match="mass_column must be None or an int in"):
        models.get("potential-hogn", dim=3, node_constants=1, mass_column=1)
    model, graph = _model(), _cluster()
    bad = graph.replace(c=torch.cat([torch.zeros_like(graph.c[:, :1]), graph.c[:, 1:]], 1))
    with pytest.raises(ValueError, match="must be positive and finite"):
        hogn.rollout(model, bad, steps=2, dt=0.01, integrator="leapfrog")
    unit = _model(mass_column=None)
    dq, _ = unit.time_derivative(graph)
    assert torch.equal(dq, graph.p)


def test_split_field_is_an_ordinary_vector_field_too():
    f = integrators.SplitField(lambda p: 2 * p, lambda q: -q)
    q, p = torch.ones(3, dtype=torch.float64), torch.full((3,), 0.5, dtype=torch.float64)
    dq, dp = f(q, p)
    assert torch.equal(dq, 2 * p) and torch.equal(dp, -q)
    # harmonic oscillator H = p² + q²/2: leapfrog on the split field equals it on a lambda
    for name in ("leapfrog", "yoshida4", "symplectic_euler"):
        a = integrators.integrate(f, q, p, 0.1, 30, name, separable=True)
        b = integrators.integrate(lambda x, y: (2 * y, -x), q, p, 0.1, 30, name, separable=True)
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-15)
        torch.testing.assert_close(a[1], b[1], rtol=0, atol=1e-15)


@pytest.mark.parametrize("config", [{}, {"steps": 1}, {"steps": 1, "cutoff": 1.5},
                                    {"steps": 3, "edge_energies": False}],
                         ids=["default", "one-step", "one-step-cutoff", "three-steps"])
def test_the_rollout_force_is_autograds_force(config):
    """force_field (the written-out gradient, hogn.models.inference, which computes the
    constant node latents and their part of the first edge MLP once) equals autograd's
    −∂V/∂q, two species and two graphs, with and without a cut-off."""
    model, graph = _model(**config), _cluster()
    q = graph.q.clone().requires_grad_(True)
    (dv,) = torch.autograd.grad(model.potential_energy(q, graph).sum(), q)
    force = model.force_field(graph)
    torch.testing.assert_close(force(graph.q), -dv, rtol=1e-12, atol=1e-13)
    moved = graph.q + 0.1
    q = moved.clone().requires_grad_(True)
    (dv,) = torch.autograd.grad(model.potential_energy(q, graph).sum(), q)
    torch.testing.assert_close(force(moved), -dv, rtol=1e-12, atol=1e-13)
