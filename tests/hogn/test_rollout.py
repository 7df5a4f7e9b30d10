"""Rolling learned models out: agreement with the integrators, learned-energy
conservation, larger systems than trained on, and misuse errors."""

import pytest
import torch

import hogn
import systems
from hogn.rollout import rollout


@pytest.fixture(scope="module")
def springs():
    return systems.get("spring-nbody")


def _model(name, **kw):
    torch.manual_seed(0)
    return hogn.models.get(name, dim=2, node_constants=1, edge_features=2, hidden=16,
                           **kw).double()


def test_rollout_matches_direct_integration(springs):
    model = _model("hogn")
    state = springs.sample(3, seed=1, n_particles=(3, 5))
    q, p = rollout(model, state, steps=20, dt=0.01, integrator="rk4")
    q_ref, p_ref = hogn.integrate(model.vector_field(state), state.q, state.p, 0.01, 20, "rk4")
    assert q.shape == (21, state.num_nodes, 2)
    assert torch.allclose(q, q_ref, atol=1e-12) and torch.allclose(p, p_ref, atol=1e-12)
    assert model.training  # training mode restored


def test_leapfrog_rollout_conserves_the_learned_energy_of_a_separable_model(springs):
    """Leapfrog is symplectic for H = T(p) + V(q): the model's own H stays bounded
    over a long rollout on a system 4x larger than a 4-particle training size."""
    model = _model("separable-hogn").eval()
    state = springs.sample(2, seed=2, n_particles=16)
    q, p = rollout(model, state, steps=1000, dt=0.004, integrator="leapfrog")
    h = torch.stack([model.energy(q[i], p[i], state) for i in range(0, 1001, 100)])
    rel = ((h - h[0]).abs() / h[0].abs()).max()
    q_e, p_e = rollout(model, state, steps=1000, dt=0.004, integrator="euler")
    h_e = torch.stack([model.energy(q_e[i], p_e[i], state) for i in range(0, 1001, 100)])
    rel_e = ((h_e - h_e[0]).abs() / h_e[0].abs()).max()
    assert rel < 1e-3
    assert rel_e > 10 * rel


def test_stepper_rollout_and_misuse(springs):
    model = _model("deltagn", dt=0.05)
    state = springs.sample(2, seed=3, n_particles=4)
    q, p = rollout(model, state, steps=5, integrator=None)
    q1, p1 = model.eval().next_state(state)
    assert torch.allclose(q[1], q1) and torch.allclose(p[1], p1)
    with pytest.raises(ValueError, match="pass integrator=None"):
        rollout(model, state, steps=5, integrator="rk4")
    with pytest.raises(ValueError, match=r"trained for dt=0\.05"):
        rollout(model, state, steps=5, dt=0.1, integrator=None)


def test_rollout_rejects_unknown_integrator_and_missing_dt(springs):
    model = _model("ogn")
    state = springs.sample(1, seed=4, n_particles=3)
    with pytest.raises(ValueError, match="unknown integrator"):
        rollout(model, state, steps=3, dt=0.1, integrator="rk5")
    with pytest.raises(ValueError, match="needs a dt"):
        rollout(model, state, steps=3)


def test_rollout_from_a_dataset_uses_its_first_states():
    data = systems.generate("spring-nbody", trajectories=2, steps=3, dt=0.1, n_particles=3)
    model = _model("ogn")
    q, _ = rollout(model, data, steps=2, dt=0.1)
    assert torch.equal(q[0], data.q[0])


# --------------------------------------------------------------- rollout_field
def _autograd(model, graph):
    """(∂H/∂p, −∂H/∂q) by autograd of model.energy: the reference field."""
    with torch.enable_grad():
        q = graph.q.detach().requires_grad_(True)
        p = graph.p.detach().requires_grad_(True)
        dh_dq, dh_dp = torch.autograd.grad(model.energy(q, p, graph).sum(), (q, p),
                                           materialize_grads=True)
    return dh_dp, -dh_dq


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


GRAPH_VARIANTS = [
    {},
    {"activation": "tanh", "layers": 3},
    {"activation": "silu", "steps": 1},
    {"edge_energies": True, "absolute_positions": True},
    {"steps": 0, "layers": 1},
]


@pytest.mark.parametrize("name", ["hogn", "separable-hogn"])
@pytest.mark.parametrize("variant", GRAPH_VARIANTS, ids=lambda v: ",".join(v) or "default")
def test_rollout_field_equals_autograd_of_h(springs, name, variant):
    """The written-out ∂H (hogn.models.inference) is autograd's to rounding, for every
    option of the graph Hamiltonians, on graphs of several sizes with edge constants."""
    model = _model(name, **variant)
    state = hogn.models.as_graph(springs.sample(3, seed=1, n_particles=(3, 5)))
    dq, dp = model.rollout_field(state)(state.q, state.p)
    dq_ref, dp_ref = _autograd(model, state)
    assert _rel(dq, dq_ref) < 1e-12 and _rel(dp, dp_ref) < 1e-12
    assert not dq.requires_grad and not dp.requires_grad  # no graph, even outside no_grad


@pytest.mark.parametrize("activation,layers", [("tanh", 3), ("softplus", 2), ("silu", 1)])
def test_hnn_rollout_field_equals_autograd_of_h(springs, activation, layers):
    torch.manual_seed(0)
    model = hogn.models.get("hnn", n_particles=4, dim=2, node_constants=1, hidden=16,
                            activation=activation, layers=layers).double()
    state = hogn.models.as_graph(springs.sample(3, seed=2, n_particles=4))
    dq, dp = model.rollout_field(state)(state.q, state.p)
    dq_ref, dp_ref = _autograd(model, state)
    assert _rel(dq, dq_ref) < 1e-12 and _rel(dp, dp_ref) < 1e-12


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("name", ["hogn", "hnn"])
def test_fast_rollout_equals_the_straightforward_one(springs, name, dtype, tol):
    """hogn.rollout (rollout_field) against integrate(vector_field) with autograd."""
    torch.manual_seed(0)
    if name == "hnn":
        model = hogn.models.get("hnn", n_particles=4, dim=2, node_constants=1, hidden=32)
    else:
        model = hogn.models.get("hogn", dim=2, node_constants=1, edge_features=2, hidden=32)
    model = model.to(dtype)
    state = springs.sample(4, seed=3, n_particles=4, dtype=dtype)
    q, p = rollout(model, state, steps=30, dt=0.01, integrator="rk4")
    with torch.no_grad():
        f = hogn.models.as_graph(state)
        q_ref, p_ref = hogn.integrate(lambda q, p: _autograd(model, f.replace(q=q, p=p)),
                                      state.q, state.p, 0.01, 30, "rk4")
    assert q.dtype == dtype
    assert _rel(q, q_ref) < tol and _rel(p, p_ref) < tol


def test_unrecognised_models_fall_back_to_their_own_derivative(springs):
    """What hogn.models.inference does not write out (an activation it does not know,
    a subclass with its own energy) is stepped by the model's derivative."""
    from hogn.models.inference import energy_gradient

    torch.manual_seed(0)
    hnn = hogn.models.get("hnn", n_particles=3, dim=2, node_constants=1, hidden=16).double()
    hnn.net[1] = torch.nn.Softsign()
    state = hogn.models.as_graph(springs.sample(2, seed=4, n_particles=3))
    assert energy_gradient(hnn, state) is None
    dq, dp = hnn.rollout_field(state)(state.q, state.p)
    dq_ref, dp_ref = _autograd(hnn, state)
    assert _rel(dq, dq_ref) < 1e-12 and _rel(dp, dp_ref) < 1e-12

    class Doubled(hogn.models.HOGN):
        def energy(self, q, p, graph):
            return 2.0 * super().energy(q, p, graph)

    model = Doubled(dim=2, node_constants=1, edge_features=2, hidden=16).double().eval()
    assert energy_gradient(model, state) is None
    dq, dp = model.rollout_field(state)(state.q, state.p)
    dq_ref, dp_ref = model.derivative(state.q, state.p, state)
    assert _rel(dq, dq_ref) < 1e-12 and _rel(dp, dp_ref) < 1e-12


def test_rollout_leaves_training_gradients_unchanged(springs):
    """A rollout between two training steps changes neither the parameters' grad flags
    nor the gradients of a derivative loss (training still differentiates ∂H)."""
    model = _model("hogn")
    state = hogn.models.as_graph(springs.sample(2, seed=5, n_particles=4))

    def grads():
        model.zero_grad()
        dq, dp = model.time_derivative(state)
        assert dq.requires_grad  # create_graph in training mode
        (dq.square().sum() + dp.square().sum()).backward()
        return [torch.zeros_like(t) if t.grad is None else t.grad.clone()
                for t in model.parameters()]

    before = grads()
    rollout(model, state, steps=5, dt=0.01, integrator="rk4")
    assert model.training and all(t.requires_grad for t in model.parameters())
    after = grads()
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_rollout_field_checks_the_graph_once_and_refuses_steppers(springs):
    state = springs.sample(1, seed=6, n_particles=3)
    with pytest.raises(ValueError, match="expects 2 edge feature"):
        _model("hogn").rollout_field(state.replace(edge_attr=None))
    with pytest.raises(ValueError, match="stepper"):
        _model("deltagn", dt=0.1).rollout_field(state)


def test_a_model_with_project_is_projected_after_every_integrator_step(springs):
    """A model with ``project(q, p, graph)`` (as CHNN) is mapped back after every
    (sub)step, also by a splitting method (whose cached kick would skip the projection's
    move of ``q``): the rollout equals a hand loop of step-then-project, ends on the
    'manifold' (here: every ``|q_i| = 1``) and differs from the unprojected rollout."""
    calls = []

    class OnCircles(type(_model("separable-hogn"))):
        def project(self, q, p, graph):
            calls.append(1)
            return q / q.norm(dim=-1, keepdim=True), p

    torch.manual_seed(0)
    model = OnCircles(**_model("separable-hogn").config()).double()
    state = springs.sample(2, seed=4, n_particles=3)
    state = state.replace(q=state.q / state.q.norm(dim=-1, keepdim=True))
    steps, substeps, dt = 6, 3, 0.02
    q, p = rollout(model, state, steps=steps, dt=dt, integrator="leapfrog", substeps=substeps)
    assert len(calls) == steps * substeps
    field = model.eval().rollout_field(state)
    method = hogn.integrators.get("leapfrog")
    q_ref, p_ref = state.q, state.p
    for _ in range(steps * substeps):
        q_ref, p_ref = model.project(*method.step(field, q_ref, p_ref, dt / substeps), state)
    assert torch.allclose(q[-1], q_ref, rtol=0, atol=1e-12)
    assert torch.allclose(p[-1], p_ref, rtol=0, atol=1e-12)
    assert ((q.norm(dim=-1) - 1).abs() < 1e-12).all()
    q_free, _ = rollout(_model("separable-hogn"), state, steps=steps, dt=dt,
                        integrator="leapfrog", substeps=substeps)
    assert (q_free[-1].norm(dim=-1) - 1).abs().max() > 1e-6
