"""Few-shot adaptation scored by RK4 rollouts: agreement with a direct integration,
an exact model that reproduces the truth (padded or not), and falling support loss; the
normalised derivative error at the held-out points (0 for the true field, 1 for a zero
one, the support points left out) and the normalised short-rollout error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hogn
import meta.evaluate
from hogn import integrators
from meta import adapt_and_evaluate, derivative_nmse, short_rollout_nmse
from meta.algorithms import parameters
from meta.metrics import held_out

F64 = torch.float64


def test_unadapted_mse_equals_a_direct_rk4_rollout(three_body):
    torch.manual_seed(0)
    model = hogn.models.get("hogn", dim=2, node_constants=1, hidden=8, steps=1).double()
    traj = three_body[1]
    result = adapt_and_evaluate(model, parameters(model), traj, shots=10, steps=0, keep=(0,))
    start = traj.state(0)
    q, p = integrators.integrate(model.vector_field(start), start.q, start.p, traj.dt,
                                 len(traj.t) - 1, method="rk4")
    mse = torch.cat([q - traj.q, p - traj.p], -1).square().mean()
    assert result.steps.tolist() == [0]
    torch.testing.assert_close(result.mse[0], mse.detach(), rtol=1e-10, atol=0)
    torch.testing.assert_close(result.rollouts[0][0], q.detach(), rtol=1e-10, atol=1e-12)


def _exact_spring_mlp(n_particles, pad_bias=0.0):
    """Linear MLP with dq = p, dp = −q for particle 0 (the mass-spring with m = k = 1)."""
    model = hogn.models.get("mlp", n_particles=n_particles, dim=2, node_constants=1,
                            layers=1).double()
    half = 2 * n_particles  # inputs [q (n·2), p (n·2), c (n)], outputs [dq (n·2), dp (n·2)]
    with torch.no_grad():
        w, b = model.net[0].weight, model.net[0].bias
        w.zero_()
        b.fill_(pad_bias)  # padding particles' outputs (and, below, the real ones reset)
        w[0, half], w[half, 0] = 1.0, -1.0
        b[[0, 1, half, half + 1]] = 0.0
        if n_particles > 1:  # dq_0 also reads particle 1's position, zero when padding
            w[0, 2] = 1.0
    return model


def test_an_exact_model_rolls_out_the_truth_and_stays_put(mass_spring):
    traj = mass_spring[2]
    results = {}
    for n_particles in (1, 3):
        # padded (n = 3): the padding outputs are non-zero and the real particle reads
        # the padding inputs, but padding particles stay at zero in the rollout and do
        # not count, so the result equals the unpadded one
        model = _exact_spring_mlp(n_particles, pad_bias=0.5)
        result = adapt_and_evaluate(model, parameters(model), traj, shots=10, steps=3,
                                    inner_lr=0.1, loss="mse", keep=(3,))
        # RK4 global error at dt = 0.25 over 10 time units: ~1e-4 in the state
        assert bool((result.mse < 1e-7).all()), result.mse
        assert float(result.support_loss.max()) < 1e-20
        assert torch.allclose(result.mse, result.mse[0].expand(4), rtol=1e-12, atol=0)
        q, _ = result.rollouts[3]
        assert q.shape == (len(traj.t), 1, 2)
        assert float((q - traj.q).abs().max()) < 1e-3
        results[n_particles] = result
    torch.testing.assert_close(results[3].mse, results[1].mse, rtol=1e-12, atol=0)


def test_adaptation_lowers_the_support_loss(pendulum):
    torch.manual_seed(0)
    model = hogn.models.get("hnn", n_particles=1, dim=2, node_constants=1, hidden=16).double()
    before = [p.detach().clone() for p in model.parameters()]
    result = adapt_and_evaluate(model, parameters(model), pendulum.heldout[0], shots=20,
                                steps=10, inner_lr=0.1, eval_steps=[0, 5, 10])
    assert result.steps.tolist() == [0, 5, 10] and result.mse.shape == (3,)
    assert result.support_loss.shape == (11,)
    assert bool((result.support_loss.diff() < 0).all())
    assert bool(torch.isfinite(result.mse).all())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    # the same seed draws the same points: identical results
    again = adapt_and_evaluate(model, parameters(model), pendulum.heldout[0], shots=20,
                               steps=10, inner_lr=0.1, eval_steps=[0, 5, 10])
    assert torch.equal(again.mse, result.mse)


def test_bad_arguments_raise(mass_spring):
    model = _exact_spring_mlp(1)
    with pytest.raises(ValueError, match="one trajectory"):
        adapt_and_evaluate(model, parameters(model), mass_spring[:2], shots=5, steps=1)
    with pytest.raises(ValueError, match="shots"):
        adapt_and_evaluate(model, parameters(model), mass_spring[0], shots=500, steps=1)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        adapt_and_evaluate(model, parameters(model), mass_spring[0], shots=5, steps=2,
                           eval_steps=[3])


def test_adaptation_rollouts_refuse_a_splitting_method_on_a_learned_h(three_body):
    torch.manual_seed(0)
    model = hogn.models.get("hogn", dim=2, node_constants=1, hidden=8, steps=1).double()
    traj = three_body[1]
    with pytest.raises(ValueError, match=r"leapfrog is a splitting method.*gauss4"):
        adapt_and_evaluate(model, parameters(model), traj, shots=10, steps=0,
                           integrator="leapfrog")
    # a symplectic method for any H is accepted and agrees with a direct integration
    result = adapt_and_evaluate(model, parameters(model), traj, shots=10, steps=0, keep=(0,),
                                integrator="implicit_midpoint")
    start = traj.state(0)
    q, _ = integrators.integrate(model.vector_field(start), start.q, start.p, traj.dt,
                                 len(traj.t) - 1, method="implicit_midpoint")
    torch.testing.assert_close(result.rollouts[0][0], q.detach(), rtol=1e-9, atol=1e-11)


def _zero_mlp(n_particles, pad_bias=0.0):
    """A linear MLP predicting dq = dp = 0 at the real particle (padding: ``pad_bias``)."""
    model = _exact_spring_mlp(n_particles, pad_bias)
    with torch.no_grad():
        model.net[0].weight.zero_()
    return model


def test_the_normalised_errors_of_the_true_and_of_a_zero_field(mass_spring):
    traj = mass_spring[2]
    for n_particles in (1, 3):  # padded: the padding's non-zero outputs do not count
        exact = _exact_spring_mlp(n_particles, pad_bias=0.5)
        result = adapt_and_evaluate(exact, parameters(exact), traj, shots=10, steps=2,
                                    inner_lr=0.1, loss="mse", keep=(2,))
        for values in (result.derivative_nmse, result.short_rollout_nmse):
            assert values.dtype == torch.float64 and values.shape == (3,)
            assert values.device.type == "cpu"
        # the true field: no derivative error at all; the rollout only RK4's own error
        assert float(result.derivative_nmse.max()) < 1e-25, result.derivative_nmse
        assert float(result.short_rollout_nmse.max()) < 1e-8, result.short_rollout_nmse
        q, p = result.rollouts[2]
        assert float(result.short_rollout_nmse[-1]) == pytest.approx(
            short_rollout_nmse(q, p, traj.q, traj.p), rel=1e-12)
        # a zero field: as bad as predicting nothing and as standing still, exactly
        zero = _zero_mlp(n_particles, pad_bias=0.5)
        result = adapt_and_evaluate(zero, parameters(zero), traj, shots=10, steps=0)
        assert result.derivative_nmse.tolist() == [1.0]
        assert result.short_rollout_nmse.tolist() == [1.0]


def test_the_derivative_error_is_taken_at_the_points_outside_the_support(three_body,
                                                                       monkeypatch):
    # a Hamiltonian graph network: its derivative needs autograd inside the evaluation
    torch.manual_seed(0)
    model = hogn.models.get("hogn", dim=2, node_constants=1, hidden=8, steps=1).double()
    traj = three_body[1]
    num_times = len(traj.t)
    seen: dict[str, list] = {"support": [], "true": []}
    real_loss, real_nmse = meta.evaluate.task_loss, meta.evaluate.derivative_nmse

    def loss_spy(model, params, points, loss):
        seen["support"].append(points.times.tolist())
        return real_loss(model, params, points, loss)

    def nmse_spy(dq, dp, dq_true, dp_true, mask=None):
        seen["true"].append((dq_true.clone(), dp_true.clone()))
        return real_nmse(dq, dp, dq_true, dp_true, mask)

    monkeypatch.setattr(meta.evaluate, "task_loss", loss_spy)
    monkeypatch.setattr(meta.evaluate, "derivative_nmse", nmse_spy)
    result = adapt_and_evaluate(model, parameters(model), traj, shots=10, steps=0, keep=(0,))
    (support,) = seen["support"]
    assert len(set(support)) == 10
    rest = held_out(num_times, support)
    assert rest.size == num_times - 10 and not set(rest.tolist()) & set(support)
    (dq_true, dp_true), = seen["true"]
    torch.testing.assert_close(dq_true, traj.dq[rest].reshape(-1, 2), rtol=0, atol=0)
    torch.testing.assert_close(dp_true, traj.dp[rest].reshape(-1, 2), rtol=0, atol=0)
    # the value: the model's own derivative at those states, normalised by hand
    field = model.vector_field(traj.state(0))
    pred = [field(traj.q[t], traj.p[t]) for t in rest.tolist()]
    dq = torch.stack([d for d, _ in pred]).detach()
    dp = torch.stack([d for _, d in pred]).detach()
    num = (dq - traj.dq[rest]).square().sum() + (dp - traj.dp[rest]).square().sum()
    den = traj.dq[rest].square().sum() + traj.dp[rest].square().sum()
    assert float(result.derivative_nmse[0]) == pytest.approx(float(num / den), rel=1e-9)
    assert float(result.derivative_nmse[0]) == pytest.approx(
        derivative_nmse(dq, dp, traj.dq[rest], traj.dp[rest]), rel=1e-12)
    # the short-rollout error is that of the first 10 % of the same rollout
    q, p = result.rollouts[0]
    assert float(result.short_rollout_nmse[0]) == pytest.approx(
        short_rollout_nmse(q, p, traj.q, traj.p), rel=1e-12)


def test_every_point_a_support_point_leaves_no_derivative_error(mass_spring):
    model = _exact_spring_mlp(1)
    traj = mass_spring[0]
    result = adapt_and_evaluate(model, parameters(model), traj, shots=len(traj.t), steps=0)
    assert bool(torch.isnan(result.derivative_nmse).all())
    assert np.isfinite(result.short_rollout_nmse.numpy()).all()
