"""Few-shot adaptation scored by RK4 rollouts: agreement with a direct integration,
an exact model that reproduces the truth (padded or not), and falling support loss."""

from __future__ import annotations

import pytest
import torch

import hogn
from hogn import integrators
from meta import adapt_and_evaluate
from meta.algorithms import parameters

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
