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
