"""The symplectic recurrent network (SRNN) and initial-state refinement.

SRNN's field is separable to the last bit (``∂dq/∂q = 0``, ``∂dp/∂p = 0``), so its
leapfrog step is a symplectic map; it trains through leapfrog rollouts. Refinement:
``refine_initial`` moves the training samples' noisy start states towards the clean
ones, and :func:`hogn.refine_start` recovers a clean start from noisy observations;
both are checked against the clean states of the ground truth, with a model whose
``T`` and ``V`` are the true ones (an ``SRNN`` whose energies are the system's) and
with a learned one.
"""

from __future__ import annotations

import pytest
import torch

import hogn
import hogn.models as models
import systems
from hogn import integrators
from hogn.graph import GraphBatch
from hogn.io import FileFormatError, load_checked, save_checked
from hogn.models.srnn import SRNN
from hogn.refine import refine_start

F64 = torch.float64
NOISE = 0.05


def _model(seed: int = 0, n: int = 2, d: int = 2, k: int = 1, **config) -> SRNN:
    torch.manual_seed(seed)
    return models.get("srnn", n_particles=n, dim=d, node_constants=k,
                      **{"hidden": 16, "layers": 3, **config}).to(F64)


class _TrueHenonHeiles(SRNN):
    """An SRNN whose ``T`` and ``V`` are the Hénon–Heiles system's own (its networks
    unused: training can move only the start offsets): ``V(q) = H(q, 0)``,
    ``T(p) = H(0, p) − H(0, 0)``."""

    system = systems.get("henon-heiles")

    def kinetic_energy(self, p, graph):
        zero = torch.zeros_like(p)
        return self.system.energy(zero, p, graph) - self.system.energy(zero, zero, graph)

    def potential_energy(self, q, graph):
        return self.system.energy(q, torch.zeros_like(q), graph)


@pytest.fixture(scope="module")
def noisy_hh():
    """Noisy Hénon–Heiles observations (noise 0.05 on q and p), dt 0.1."""
    return systems.generate("henon-heiles", trajectories=12, steps=24, dt=0.1, seed=3,
                            noise=NOISE)


def _true_model() -> _TrueHenonHeiles:
    torch.manual_seed(0)
    return _TrueHenonHeiles(n_particles=1, dim=2, node_constants=1, hidden=4, layers=2).to(F64)


# --------------------------------------------------------------- declarations
def test_registered_separable_and_accepts_every_integrator(flat_graphs):
    assert "srnn" in models.names() and models.SRNN is SRNN
    model = _model()
    assert isinstance(model, models.HamiltonianModel) and model.separable
    assert model.config()["hidden"] == 16
    assert set(model.compatible_integrators()) == set(integrators.names())
    for method in ("leapfrog", "yoshida4", "symplectic_euler", "rk4"):
        assert model.check_integrator(method).name == method
    defaults = SRNN(n_particles=3, dim=2)
    assert (defaults.config()["hidden"], defaults.config()["layers"]) == (512, 4)
    with pytest.raises(ValueError, match="srnn expects graphs of exactly 2 particle"):
        model.time_derivative(flat_graphs(2, 3, 2, 1, seed=0))
    with pytest.raises(ValueError, match="n_particles must be an int >= 1"):
        models.get("srnn", n_particles=0)


# ------------------------------------------------------------------ the field
def test_field_is_separable_exactly_and_is_minus_grad_v_and_grad_t(flat_graphs):
    """float64 Jacobians of the field: ``∂dq/∂q`` and ``∂dp/∂p`` vanish exactly (not
    to rounding: the networks never see the other half), while the cross blocks do
    not; ``dq = ∂T/∂p``, ``dp = −∂V/∂q`` against autograd of the two networks."""
    model = _model().eval()
    graph = flat_graphs(3, 2, 2, 1, seed=1)

    def field(q, p):
        return model.derivative(q, p, graph, create_graph=True)

    (dq_dq, dq_dp), (dp_dq, dp_dp) = torch.autograd.functional.jacobian(
        field, (graph.q, graph.p), create_graph=False)
    assert torch.count_nonzero(dq_dq) == 0 and torch.count_nonzero(dp_dp) == 0
    assert dq_dp.abs().max() > 1e-3 and dp_dq.abs().max() > 1e-3
    q, p = graph.q.clone().requires_grad_(True), graph.p.clone().requires_grad_(True)
    c = graph.c.reshape(3, -1)
    t = model.kinetic(torch.cat([p.reshape(3, -1), c], -1)).sum()
    v = model.potential(torch.cat([q.reshape(3, -1), c], -1)).sum()
    dq, dp = model.time_derivative(graph)
    assert torch.allclose(dq, torch.autograd.grad(t, p)[0], rtol=0, atol=1e-14)
    assert torch.allclose(dp, -torch.autograd.grad(v, q)[0], rtol=0, atol=1e-14)
    h = model.hamiltonian(graph)
    assert torch.allclose(h, model.kinetic_energy(graph.p, graph)
                          + model.potential_energy(graph.q, graph), atol=0)


def _symplectic_defect(model: SRNN, graph: GraphBatch, method: str, dt: float,
                       steps: int = 1) -> float:
    """``max |Mᵀ J M − J|`` of the Jacobian ``M`` of ``steps`` steps of ``method`` on
    the model's field, differentiated through the steps as training differentiates
    them (partial derivatives: :func:`hogn.models.base.state_gradients`)."""
    f = model.vector_field(graph)
    step = integrators.get(method)
    n = graph.q.numel()
    eye, zero = torch.eye(n, dtype=F64), torch.zeros(n, n, dtype=F64)
    J = torch.cat([torch.cat([zero, eye], 1), torch.cat([-eye, zero], 1)], 0)

    def flow(x):
        q, p = x[:n].reshape(graph.q.shape), x[n:].reshape(graph.p.shape)
        for _ in range(steps):
            q, p = step(f, q, p, dt)
        return torch.cat([q.reshape(-1), p.reshape(-1)])

    M = torch.autograd.functional.jacobian(flow, torch.cat([graph.q.reshape(-1),
                                                             graph.p.reshape(-1)]))
    return float((M.T @ J @ M - J).abs().max())


def test_splitting_steps_of_srnn_are_symplectic_maps(flat_graphs):
    """The Jacobian ``M`` of leapfrog and yoshida4 rollouts (3 steps) of a random SRNN
    keeps the symplectic form, ``Mᵀ J M = J``, to rounding (float64; measured ~4e-16);
    rk4 steps of the same field do not (measured 1.8e-7 for one step at dt 0.3, with
    first layers scaled ×10 for a strongly nonlinear field)."""
    model = _model(seed=2).eval()
    with torch.no_grad():
        for net in (model.kinetic, model.potential):
            net[0].weight.mul_(10)
    graph = flat_graphs(1, 2, 2, 1, seed=4)
    for method in ("leapfrog", "yoshida4", "symplectic_euler"):
        assert _symplectic_defect(model, graph, method, 0.3, steps=3) < 1e-13, method
    assert _symplectic_defect(model, graph, "rk4", 0.3) > 1e-9


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4", "rk4"])
def test_training_rollout_is_the_models_own_rollout(method, flat_graphs):
    """The differentiable k-step rollout that training matches (``_prediction``) is
    the same trajectory as the model's plain rollout (:func:`hogn.rollout`), also after
    a splitting step's last kick has made ``p`` a function of ``q`` (see
    :func:`hogn.models.base.state_gradients`: without its fresh views the second
    leapfrog step's kick is off by ~1e-4 here)."""
    from hogn.train import Batch, TrainConfig, _prediction

    model = _model(seed=2).train()
    graph = flat_graphs(2, 2, 2, 1, seed=5)
    k = 4
    batch = Batch(graph, torch.zeros(4, k, 2, dtype=F64), torch.zeros(4, k, 2, dtype=F64))
    cfg = TrainConfig(target="rollout", integrator=method, rollout_steps=k)
    pred, _ = _prediction(model, batch, cfg, 0.3)
    q, p = hogn.rollout(model, graph, steps=k, dt=0.3, integrator=method)
    assert pred.requires_grad
    expect = torch.cat([q[1:].transpose(0, 1), p[1:].transpose(0, 1)], -1)
    assert torch.allclose(pred, expect, rtol=0, atol=1e-12)


def test_true_energies_roll_out_the_system_with_leapfrog(noisy_hh):
    """The hand-set SRNN (the system's T and V) rolled out with leapfrog by
    :func:`hogn.rollout` follows the clean ground truth to leapfrog's error, and its
    energy, the system's, stays within leapfrog's O(dt²) band."""
    model = _true_model()
    q, p = hogn.rollout(model, noisy_hh.state(0), steps=24, dt=0.1, integrator="leapfrog")
    assert (q - noisy_hh.q).abs().max() < 5e-3
    assert (q - noisy_hh.q).abs().max() > 1e-6  # leapfrog's error, not the ground truth
    system = _TrueHenonHeiles.system
    energy = torch.stack([system.energy(q[i], p[i], noisy_hh.state(0)) for i in range(25)])
    relative = ((energy - energy[0]) / energy[0]).abs().max()
    assert relative < 1e-2  # leapfrog's O(dt²) band (measured 2.6e-3)


# ------------------------------------------------------------------ training
def test_rollout_training_through_leapfrog_reaches_the_noise_floor(noisy_hh):
    """Trained through 4-step leapfrog rollouts of noisy observations, the loss falls
    to the floor set by the noise: a perfect model still meets the noise of its start
    (carried along, near-unchanged over 4 short steps) and of its targets, a mean
    squared error of about ``2σ²`` (measured: 8.2e-3 at first, 5.3e-3 after 100 steps;
    2σ² = 5.0e-3)."""
    model = _model(n=1, d=2, k=1, hidden=32)
    result = hogn.train(model, noisy_hh, target="rollout", integrator="leapfrog",
                        rollout_steps=4, steps=100, batch_size=10**9, val_fraction=0.0,
                        lr=1e-2, schedule="cosine", progress=False)
    floor = 2 * NOISE**2
    first, last = result.history[0]["train_loss"], result.history[-1]["train_loss"]
    print(f"leapfrog training: loss {first:.2e} -> {last:.2e}, noise floor {floor:.2e}")
    assert first > 1.5 * floor and last < 1.15 * floor
    assert result.refined_starts is None


def _start_errors(data, refined, k):
    """Mean |refined − clean| and |observed − clean| over the training starts."""
    train = (~data.test).nonzero().flatten()
    nodes = torch.cat([torch.arange(int(data.ptr[g]), int(data.ptr[g + 1])) for g in train])
    times = slice(0, data.t.numel() - k)
    clean = torch.cat([data.q, data.p], -1)[times, nodes]
    obs = torch.cat([data.q_obs, data.p_obs], -1)[times, nodes]
    ref = torch.cat(refined, -1)[times, nodes].to(F64)
    return float((ref - clean).norm(dim=-1).mean()), float((obs - clean).norm(dim=-1).mean())


def test_refine_initial_moves_starts_towards_the_clean_states(noisy_hh):
    """With the true ``T`` and ``V`` only the offsets train: every start is fitted to
    the next 6 noisy observations and lands nearer the clean state (measured: mean
    error 0.037 from 0.095). Validation and test starts keep their observations."""
    k = 6
    model = _true_model()
    result = hogn.train(model, noisy_hh, target="rollout", integrator="leapfrog",
                        rollout_steps=k, refine_initial=True, refine_lr=2e-2, steps=60,
                        batch_size=10**9, val_fraction=0.0, progress=False)
    refined, observed = _start_errors(noisy_hh, result.refined_starts, k)
    print(f"refine_initial (true T, V): mean start error {refined:.4f}, observed {observed:.4f}")
    assert refined < 0.7 * observed
    test = noisy_hh.test.nonzero().flatten()
    assert torch.equal(result.refined_starts[0][:, test], noisy_hh.q_obs[:, test])
    assert torch.equal(result.refined_starts[1][-k:], noisy_hh.p_obs[-k:])


def test_refine_initial_with_a_learned_srnn_moves_starts_towards_the_clean_states(noisy_hh):
    """Jointly with an SRNN learned from scratch (the paper's setting; measured: mean
    error 0.045 from 0.096)."""
    k = 4
    model = _model(n=1, d=2, k=1, hidden=32).float()
    result = hogn.train(model, noisy_hh, target="rollout", integrator="leapfrog",
                        rollout_steps=k, refine_initial=True, refine_lr=1e-2, steps=150,
                        batch_size=10**9, val_fraction=0.0, lr=3e-3, progress=False)
    refined, observed = _start_errors(noisy_hh, result.refined_starts, k)
    print(f"refine_initial (learned SRNN): mean start error {refined:.4f}, observed "
          f"{observed:.4f}")
    assert refined < 0.85 * observed
    assert result.refined_starts[0].dtype == torch.float32


def test_refine_initial_matches_the_refined_start_to_its_observation_too(noisy_hh):
    """With refine_initial the training loss is the mean over ``k + 1`` states, the
    refined start against its observation first: before any step (offsets zero) it is
    exactly ``k / (k + 1)`` of the plain rollout loss."""
    k = 3
    losses = []
    for refine in (False, True):
        result = hogn.train(_true_model(), noisy_hh, target="rollout", integrator="leapfrog",
                            rollout_steps=k, refine_initial=refine, steps=1,
                            batch_size=10**9, val_fraction=0.0, progress=False)
        losses.append(result.history[0]["train_loss"])
    assert losses[1] == pytest.approx(k / (k + 1) * losses[0], rel=1e-12)


def test_refine_initial_is_refused_where_it_cannot_work(noisy_hh, monkeypatch):
    model = _model(n=1, d=2, k=1)
    with pytest.raises(ValueError, match=r"refine_initial needs target 'rollout'.*got target "
                                         r"'derivative'"):
        hogn.train(model, noisy_hh, refine_initial=True, progress=False)
    with pytest.raises(ValueError, match=r"refine_lr=0\.1 is set but refine_initial is off"):
        hogn.train(model, noisy_hh, target="rollout", refine_lr=0.1, progress=False)
    with pytest.raises(ValueError, match="refine_initial must be True or False, got 'yes'"):
        hogn.train(model, noisy_hh, target="rollout", refine_initial="yes", progress=False)
    monkeypatch.setattr(hogn.distributed, "active", lambda: True)
    monkeypatch.setattr(hogn.distributed, "world_size", lambda: 2)
    with pytest.raises(ValueError, match="refine_initial .* several processes .* one "
                                         r"process \(got 2\)"):
        hogn.train(model, noisy_hh, target="rollout", integrator="leapfrog",
                   refine_initial=True, progress=False)


def test_refine_initial_resumes_to_the_same_offsets_and_weights(noisy_hh, tmp_path):
    """A run with refine_initial stopped after 2 epochs and resumed to 4 equals a run
    of 4 (weights and refined starts bit for bit): the offsets and their Adam state
    are in the checkpoint. A checkpoint without offsets is refused by name."""
    kw = dict(target="rollout", integrator="leapfrog", rollout_steps=3, refine_initial=True,
              refine_lr=1e-2, batch_size=64, lr=3e-3, progress=False)
    straight = _model(n=1, d=2, k=1)
    a = hogn.train(straight, noisy_hh, tmp_path / "a", epochs=4, **kw)
    resumed = _model(n=1, d=2, k=1)
    hogn.train(resumed, noisy_hh, tmp_path / "b", epochs=2, **kw)
    resumed = _model(n=1, d=2, k=1)
    b = hogn.train(resumed, noisy_hh, tmp_path / "b", epochs=4, **kw)
    assert b.resumed_epoch == 2
    for x, y in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    for x, y in zip(a.refined_starts, b.refined_starts, strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(a.refined_starts[0], noisy_hh.q_obs)
    path = tmp_path / "b" / "checkpoint.pt"
    snapshot = load_checked(path)
    del snapshot["start_offsets"]
    save_checked(path, snapshot, keep_previous=False)  # a well-formed checkpoint without them
    with pytest.raises(FileFormatError, match=r"checkpoint\.pt: no start offsets that fit"):
        hogn.train(_model(n=1, d=2, k=1), noisy_hh, tmp_path / "b", epochs=6, **kw)


# ------------------------------------------------------- refinement at test time
def test_refine_start_recovers_the_clean_start_better_than_the_observation(noisy_hh):
    """From 10 noisy observations of each test trajectory, the fitted start is far
    nearer the clean start than the first observation (measured: 0.031 from 0.089);
    the model is left untouched."""
    model = _true_model()
    test = noisy_hh.select(noisy_hh.test)
    q0, p0 = refine_start(model, test, test.q_obs[:10], test.p_obs[:10], dt=0.1,
                          integrator="leapfrog", iterations=50)
    clean = torch.cat([test.q[0], test.p[0]], -1)
    fitted = float((torch.cat([q0, p0], -1) - clean).norm(dim=-1).mean())
    raw = float((torch.cat([test.q_obs[0], test.p_obs[0]], -1) - clean).norm(dim=-1).mean())
    print(f"refine_start: mean start error {fitted:.4f}, first observation's {raw:.4f}")
    assert fitted < 0.6 * raw
    assert not q0.requires_grad and model.training
    assert all(p.grad is None for p in model.parameters())
    assert hogn.refine_start is refine_start


def test_refine_start_refuses_bad_input(noisy_hh):
    model = _true_model()
    graph = noisy_hh.state(0)
    obs = noisy_hh.q_obs[:5]
    with pytest.raises(ValueError, match=r"q_obs must be \[S, 12, 2\]"):
        refine_start(model, graph, obs[0], obs, dt=0.1)
    with pytest.raises(ValueError, match="dt must be"):
        refine_start(model, graph, obs, obs, dt=-1.0)
    with pytest.raises(ValueError, match="float32"):
        refine_start(model, graph, obs.float(), obs.float(), dt=0.1)
    hnn = models.get("hnn", n_particles=1, dim=2, node_constants=1).to(F64)
    with pytest.raises(ValueError, match="leapfrog is a splitting method"):
        refine_start(hnn, graph, obs, obs, dt=0.1)
