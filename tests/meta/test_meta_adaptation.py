"""meta.adaptation.adapt_many: many pairs in one call equal adapt_and_evaluate pair by pair."""

from __future__ import annotations

import pytest
import torch

from meta import algorithms
from meta.adaptation import adapt_many
from meta.evaluate import adapt_and_evaluate
from meta.protocol import make_model

FIELDS = ("mse", "support_loss", "derivative_nmse", "short_rollout_nmse")


def _pairs(model, data, trajectories=2):
    """Pairs of (start, trajectory, rule, seed): three starting points and rules (a
    float, Meta-SGD-like per-element rates, the decoder only) on each trajectory."""
    base = algorithms.parameters(model)
    shifted = {k: v + 0.01 for k, v in base.items()}
    rules = [0.05, {k: torch.full_like(v, 0.02) for k, v in base.items()},
             {k: torch.tensor(0.05, dtype=torch.float64)
              for k in algorithms.decoder_names(model)}]
    out = []
    for i in range(trajectories):
        for rule, start in zip(rules, (base, shifted, base), strict=True):
            out.append((start, data[i], rule, 7 + i))
    return out


@pytest.mark.parametrize("name", ["hogn", "hnn"])
def test_adapt_many_equals_adapt_and_evaluate_pair_by_pair(pendulum, name):
    model = make_model(name, torch.float64, seed=0, hidden=12)
    pairs = _pairs(model, pendulum)
    starts, trajs, rules, seeds = map(list, zip(*pairs, strict=True))
    many = adapt_many(model, starts, trajs, rules, seeds, shots=8, steps=3,
                      eval_steps=[0, 1, 3], keep=(1,))
    assert len(many) == len(pairs)
    for got, (start, traj, rule, seed) in zip(many, pairs, strict=True):
        ref = adapt_and_evaluate(model, start, traj, shots=8, steps=3, inner_lr=rule,
                                 eval_steps=[0, 1, 3], seed=seed, keep=(1,))
        assert torch.equal(got.steps, ref.steps)
        for field in FIELDS:
            torch.testing.assert_close(getattr(got, field), getattr(ref, field),
                                       rtol=1e-10, atol=1e-14, msg=field)
        torch.testing.assert_close(got.rollouts[1][0], ref.rollouts[1][0], rtol=1e-10,
                                   atol=1e-12)
    # the methods really differ (the comparison is not vacuous)
    assert not torch.allclose(many[0].mse, many[1].mse)
    assert float(many[0].support_loss[-1]) < float(many[0].support_loss[0])


def test_adapt_many_refuses_mismatched_inputs(pendulum, three_body, mass_spring):
    model = make_model("hogn", torch.float64, seed=0, hidden=8)
    start = algorithms.parameters(model)
    with pytest.raises(ValueError, match="one entry per pair"):
        adapt_many(model, [start, start], [pendulum[0]], [0.1, 0.1], [0, 1], shots=5, steps=1)
    with pytest.raises(ValueError, match="at least one pair"):
        adapt_many(model, [], [], [], [], shots=5, steps=1)
    with pytest.raises(ValueError, match="share their number of saved times"):
        adapt_many(model, [start, start], [pendulum[0], three_body[0]], [0.1, 0.1], [0, 0],
                   shots=5, steps=1)
    with pytest.raises(ValueError, match="one trajectory"):
        adapt_many(model, [start], [mass_spring[:2]], [0.1], [0], shots=5, steps=1)
    with pytest.raises(ValueError, match=r"must lie in 0\.\.1"):
        adapt_many(model, [start], [pendulum[0]], [0.1], [0], shots=5, steps=1,
                   eval_steps=[2])
    with pytest.raises(ValueError, match="unknown parameter"):
        adapt_many(model, [start], [pendulum[0]], [{"nope": torch.tensor(0.1)}], [0],
                   shots=5, steps=1)
