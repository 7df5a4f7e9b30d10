"""The dissipative Hamiltonian network (DHNN): its field is the Helmholtz split of two
learned scalars, it declares itself non-Hamiltonian, it saves, rolls out with rk4,
and, trained with ``hogn.train``, it learns no friction on a conservative
mass-spring and the true friction ``γ`` on the damped mass-spring and pendulum.

Estimating ``γ`` (see :mod:`hogn.models.dissipative` on identifiability): with
``dissipation_inputs="momenta"`` the learned ``∂D/∂p`` is ``−γ p`` up to a constant,
so ``γ`` is the least-squares slope of ``∂D/∂p`` against ``−p`` with an intercept;
with ``D(q, p)`` only ``ΔD = −γ`` is determined, so ``γ`` is minus the mean Laplacian.
"""

from __future__ import annotations

import pytest
import torch
from torch_geometric.nn import global_add_pool

import hogn
import hogn.models as models
import systems
from hogn import integrators
from hogn.graph import GraphBatch
from hogn.models.dissipative import DHNN, DissipativeModel

F32, F64 = torch.float32, torch.float64
TRAIN = {"steps": 300, "batch_size": 10**9, "val_fraction": 0.0, "lr": 1e-2,
         "schedule": "cosine", "progress": False}


def _model(seed: int = 0, **config) -> DHNN:
    torch.manual_seed(seed)
    return models.get("dhnn", **{"n_particles": 2, "dim": 2, "node_constants": 1,
                                 "hidden": 16, **config}).to(F64)


def _spring(**params) -> systems.System:
    return systems.get("damped-mass-spring", **params)


# --------------------------------------------------------------- declarations
def test_registered_and_declared_not_hamiltonian(flat_graphs):
    assert "dhnn" in models.names() and models.DHNN is DHNN
    model = _model()
    assert isinstance(model, models.DynamicsModel)
    assert not isinstance(model, models.HamiltonianModel)  # H is not conserved
    assert not model.is_stepper and not model.separable
    assert "rk4" in model.compatible_integrators()
    for method in ("leapfrog", "yoshida4", "symplectic_euler"):
        assert method not in model.compatible_integrators()
        with pytest.raises(ValueError, match=rf"{method} is a splitting method.*not separable"):
            model.check_integrator(method)
    with pytest.raises(ValueError, match="dissipation_inputs must be one of 'state', "
                                         "'momenta', got 'velocity'"):
        models.get("dhnn", dissipation_inputs="velocity")
    with pytest.raises(ValueError, match="dhnn expects graphs of exactly 2 particle"):
        model.time_derivative(flat_graphs(2, 3, 2, 1, seed=0))


# ------------------------------------------------------------------ the field
@pytest.mark.parametrize("inputs", ["state", "momenta"])
def test_field_is_the_helmholtz_split_of_h_and_d(inputs, flat_graphs):
    """``dq = ∂H/∂p + ∂D/∂q``, ``dp = −∂H/∂q + ∂D/∂p``, against autograd by hand on
    the two networks of random weights; the conservative part is an HNN's field."""
    model = _model(dissipation_inputs=inputs).eval()
    graph = flat_graphs(3, 2, 2, 1, seed=1)
    q, p = graph.q.clone().requires_grad_(True), graph.p.clone().requires_grad_(True)
    c = graph.c.reshape(3, -1)
    h = model.net(torch.cat([q.reshape(3, -1), p.reshape(3, -1), c], -1))[:, 0]
    d_in = [p.reshape(3, -1), c] if inputs == "momenta" else [q.reshape(3, -1),
                                                               p.reshape(3, -1), c]
    d = model.dissipation_net(torch.cat(d_in, -1))[:, 0]
    h_q, h_p = torch.autograd.grad(h.sum(), (q, p))
    d_q, d_p = torch.autograd.grad(d.sum(), (q, p), allow_unused=True, materialize_grads=True)
    dq, dp = model.time_derivative(graph)
    torch.testing.assert_close(dq, h_p + d_q, rtol=0, atol=1e-12)
    torch.testing.assert_close(dp, -h_q + d_p, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.hamiltonian(graph), h.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(model.dissipation(graph), d.detach(), rtol=0, atol=1e-12)
    (cq, cp), (dissipative_q, dissipative_p) = model.field_parts(graph)
    torch.testing.assert_close(dissipative_p, d_p, rtol=0, atol=1e-12)
    if inputs == "momenta":
        assert torch.equal(dissipative_q, torch.zeros_like(dissipative_q))
    else:
        assert dissipative_q.abs().max() > 1e-3  # D(q, p) moves q too
    assert dissipative_p.abs().max() > 1e-3  # the check above can fail
    hnn = models.get("hnn", n_particles=2, dim=2, node_constants=1, hidden=16).to(F64).eval()
    hnn.net.load_state_dict(model.net.state_dict())
    for x, y in zip((cq, cp), hnn.time_derivative(graph), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-12)


def test_training_mode_keeps_the_graph_eval_mode_does_not(flat_graphs):
    model = _model()
    graph = flat_graphs(2, 2, 2, 1, seed=2)
    dq, dp = model.train().time_derivative(graph)
    (dq.square().sum() + dp.square().sum()).backward()
    # D is trained too: every weight moves the field (its constant, the last bias, not)
    weights = [w for n, w in model.dissipation_net.named_parameters() if n.endswith("weight")]
    assert all(w.grad is not None and w.grad.abs().max() > 0 for w in weights)
    dq, dp = model.eval().time_derivative(graph)
    assert dq.grad_fn is None and dp.grad_fn is None


def test_save_and_load_round_trip(tmp_path, flat_graphs):
    model = _model(dissipation_inputs="momenta").eval()
    graph = flat_graphs(3, 2, 2, 1, seed=3)
    path = model.save(tmp_path / "dhnn.pt")
    loaded = models.load(path)
    assert type(loaded) is DHNN and loaded.config() == model.config()
    assert loaded.config()["dissipation_inputs"] == "momenta"
    assert loaded.param_dtype == F64 and not loaded.training
    for x, y in zip(model.time_derivative(graph), loaded.time_derivative(graph), strict=True):
        assert torch.equal(x, y)
    assert torch.equal(model.dissipation(graph), loaded.dissipation(graph))
    assert DHNN.load(path).config() == model.config()
    other = _model(seed=1).eval()  # different weights give a different field
    assert not torch.equal(other.time_derivative(graph)[1], model.time_derivative(graph)[1])


def test_rollout_is_rk4_on_the_field(flat_graphs):
    model = _model().eval()
    graph = flat_graphs(2, 2, 2, 1, seed=4)
    q, p = hogn.rollout(model, graph, steps=5, dt=0.05, integrator="rk4")
    q_ref, p_ref = integrators.integrate(model.vector_field(graph), graph.q, graph.p, 0.05, 5,
                                         method="rk4")
    torch.testing.assert_close(q, q_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(p, p_ref, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="leapfrog is a splitting method"):
        hogn.rollout(model, graph, steps=5, dt=0.05, integrator="leapfrog")


# ------------------------------------------------------------------- learning
def _trained(system: systems.System, inputs: str) -> tuple[DHNN, systems.Dataset]:
    data = systems.generate(system, trajectories=16, steps=25, dt=0.1, seed=0)
    torch.manual_seed(0)
    model = models.for_data("dhnn", data, hidden=32, dissipation_inputs=inputs)
    assert model.param_dtype == F32  # learning in float32
    result = hogn.train(model, data, **TRAIN)
    assert result.test_loss < 1e-3
    return model.eval(), data


def _states(system: systems.System) -> GraphBatch:
    """200 fresh float32 states from the system's own initial-state distribution."""
    return system.sample(200, seed=5).to(dtype=F32)


def _gamma_from_laplacian(model: DHNN, graph: GraphBatch) -> float:
    """``−mean ΔD`` over the states (one particle, ``d = 1``: ``ΔD = D_qq + D_pp``)."""
    q, p = graph.q.clone().requires_grad_(True), graph.p.clone().requires_grad_(True)
    d_q, d_p = torch.autograd.grad(model.rayleigh(q, p, graph).sum(), (q, p), create_graph=True,
                                   materialize_grads=True)
    laplacian = torch.autograd.grad(d_p.sum(), p, retain_graph=True)[0]
    if model.dissipation_inputs == "state":  # D(p) has D_qq = 0
        laplacian = laplacian + torch.autograd.grad(d_q.sum(), q)[0]
    return -float(laplacian.mean())


def test_learns_no_friction_on_a_conservative_mass_spring():
    """Measured (seed 0, float32): γ̂ = 0.0016; the D part less its constant (the gauge
    ``a·p``, here ``a = −0.073``) is 0.33% of the H part (6.8% with the constant)."""
    system = systems.get("mass-spring")
    model, _ = _trained(system, "momenta")
    graph = _states(system)
    gamma, _ = model.linear_friction(graph)
    assert abs(gamma) < 0.01  # a tenth of the damped systems' γ = 0.1
    (h_q, h_p), (d_q, d_p) = model.field_parts(graph, create_graph=False)
    assert torch.equal(d_q, torch.zeros_like(d_q))
    ratio = (d_p - d_p.mean()).norm() / torch.cat([h_q, h_p]).norm()
    assert ratio < 0.02


@pytest.mark.parametrize("name", ["damped-mass-spring", "damped-pendulum"])
def test_recovers_the_friction_of_damped_oscillators(name):
    """Measured (seed 0, float32): γ̂ = 0.1008 (mass-spring), 0.0966 (pendulum)."""
    gamma = 0.1
    system = _spring(gamma=gamma) if name == "damped-mass-spring" else systems.get(name)
    assert system.params["gamma"] == gamma
    model, data = _trained(system, "momenta")
    estimate, _ = model.linear_friction(_states(system))
    assert abs(estimate / gamma - 1) < 0.1
    # rolled out with rk4 from test states, it loses energy as the truth does
    test = torch.nonzero(data.test)[:4, 0]  # one particle per graph: node = graph
    first = GraphBatch(data.q[0, test], data.p[0, test], data.c[test],
                       torch.empty(2, 0, dtype=torch.long), torch.arange(test.numel() + 1))
    q, p = hogn.rollout(model, first.to(dtype=F32), steps=25, dt=0.1, integrator="rk4")
    h_model = system.hamiltonian(q.double(), p.double(), first)
    h_true = system.hamiltonian(data.q[:, test], data.p[:, test], first)
    assert (h_true[-1] < 0.9 * h_true[0]).all()
    torch.testing.assert_close(h_model, h_true, rtol=0.05, atol=0.01)


def test_state_dissipation_recovers_friction_from_its_laplacian():
    """With ``D(q, p)`` (the paper's inputs) ``∂D/∂p`` is not identifiable, ``ΔD`` is.
    Measured (seed 0, float32): γ̂ = 0.0968 against γ = 0.1 (0.0103 on the conservative
    mass-spring), while the slope of ``∂D/∂p`` gives 0.036."""
    gamma = 0.1
    system = _spring(gamma=gamma)
    model, _ = _trained(system, "state")
    estimate = _gamma_from_laplacian(model, _states(system))
    assert abs(estimate / gamma - 1) < 0.1


class _KnownFriction(DissipativeModel):
    """``H = |p|²/2 + |q|²/2`` and ``D = −γ|p|²/2 + a·p`` by hand (a test double)."""

    name = "known-friction"

    def __init__(self, gamma: float, offset: list[float]) -> None:
        super().__init__({"dim": len(offset), "node_constants": 1})
        self.gamma, self.offset = gamma, torch.tensor(offset, dtype=torch.float64)
        self.dummy = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def energy(self, q, p, graph):
        return global_add_pool(((p**2 + q**2).sum(-1) / 2)[:, None], graph.batch)[:, 0]

    def rayleigh(self, q, p, graph):
        e = -self.gamma * (p**2).sum(-1) / 2 + (p * self.offset).sum(-1)
        return global_add_pool(e[:, None], graph.batch)[:, 0]


def test_linear_friction_recovers_a_known_dissipation_exactly():
    model = _KnownFriction(0.37, [0.2, -0.5])
    gen = torch.Generator().manual_seed(0)
    n = 12
    graph = GraphBatch(torch.randn(n, 2, generator=gen, dtype=torch.float64),
                       torch.randn(n, 2, generator=gen, dtype=torch.float64),
                       torch.ones(n, 1, dtype=torch.float64),
                       torch.zeros(2, 0, dtype=torch.long), torch.tensor([0, 5, n]))
    gamma, offset = model.linear_friction(graph)
    assert gamma == pytest.approx(0.37, abs=1e-12)
    assert torch.allclose(offset, torch.tensor([0.2, -0.5], dtype=torch.float64), atol=1e-12)
    assert model.linear_friction(graph.replace(p=graph.p * 2))[0] == pytest.approx(0.37,
                                                                                  abs=1e-12)
