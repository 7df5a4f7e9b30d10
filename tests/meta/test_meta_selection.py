"""Hyper-parameters chosen on the training systems only (meta.selection)."""

from __future__ import annotations

import math

import pytest
import torch

import systems
from meta import protocol, selection
from meta.algorithms import parameters


def test_validation_data_never_generate_the_held_out_system(monkeypatch):
    asked = []
    real = systems.from_preset

    def spy(name, *args, **kwargs):
        asked.append(name)
        if name == "meta-pendulum":
            raise AssertionError("the held-out system was generated for selection")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(systems, "from_preset", spy)
    data = selection.validation_data("pendulum", trajectories=2, seed=0)
    assert sorted(asked) == sorted(f"meta-{s}" for s in protocol.META_SYSTEMS
                                   if s != "pendulum")
    assert "pendulum" not in data
    # fresh draws: neither the training data's nor the evaluation data's trajectories
    train = protocol.load_systems(["mass-spring"], 2, seed=0)["mass-spring"]
    held = protocol.eval_data("mass-spring", 2, seed=0)
    for other in (train, held):
        assert not torch.allclose(data["mass-spring"].q[0], other.q[0])


def test_selection_refuses_data_of_the_held_out_system(meta_systems):
    with pytest.raises(ValueError, match="held-out system 'pendulum'"):
        selection.select_baseline("affine", meta_systems, "pendulum", shots=5)
    disguised = {k: v for k, v in meta_systems.items() if k != "pendulum"}
    disguised["mass-spring"] = protocol.eval_data("pendulum", 2)  # under another name
    with pytest.raises(ValueError, match="held-out system 'pendulum'"):
        selection.select_baseline("affine", disguised, "pendulum", shots=5)


def test_selection_reads_only_the_validation_systems(meta_systems):
    touched = []

    class Spy(dict):
        def __getitem__(self, key):
            touched.append(key)
            return super().__getitem__(key)

        def items(self):
            for k in self.keys():
                yield k, self[k]

    training = Spy({k: v for k, v in meta_systems.items() if k != "henon-heiles"})
    chosen = selection.select_baseline("affine", training, "henon-heiles", shots=8,
                                       grid=[{"ridge": 0.0}, {"ridge": 1e-2}])
    assert "henon-heiles" not in touched and set(touched) == set(training)
    assert len(chosen["scores"]) == 2 and chosen["hyper"] in ({"ridge": 0.0}, {"ridge": 1e-2})
    best = min(s["score"] for s in chosen["scores"])
    assert chosen["score"] == best


def test_criterion_is_the_mean_log_median_over_systems():
    value = selection.criterion({"a": torch.tensor([1e-2, 1e-2, 1.0]),
                                 "b": torch.tensor([[1e-4, 1e-2], [1e-4, 1e-2],
                                                    [1.0, 1.0]])})
    assert value == pytest.approx((-2 + (-4 - 2) / 2) / 2)
    assert selection.criterion({"a": torch.tensor([math.nan, math.nan, 1.0])}) == math.inf
    assert selection.criterion({"a": torch.zeros(3)}) == pytest.approx(-16)


def test_rate_selection_picks_a_rate_that_helps(meta_systems):
    model = protocol.make_model("hnn", torch.float64, seed=0, hidden=16)
    training = {k: v for k, v in meta_systems.items() if k in ("mass-spring", "pendulum")}
    chosen = selection.select_rate(model, parameters(model), training, "three-body",
                                   shots=8, rates=(1e-6, 0.1), steps=(1, 5))
    scores = {s["hyper"]["inner_lr"]: s["score"] for s in chosen["scores"]}
    assert chosen["hyper"]["inner_lr"] == min(scores, key=scores.get)
    assert math.isfinite(scores[1e-6])


def test_scores_made_once_choose_as_the_six_alone(meta_systems):
    """Scores over all seven systems, chosen for a held-out one, equal selection on the
    six alone (same setting, same scores); the held-out system's own scores never
    change the choice."""
    grid = [{"degree": 2, "ridge": 1e-8}, {"degree": 3, "ridge": 1e-8},
            {"degree": 3, "ridge": 1e-2}]
    from meta.fitted import baseline_fitter

    def make(**hyper):
        return baseline_fitter("polynomial", **hyper)

    scored = selection.fitter_scores(make, grid, meta_systems, shots=8, noise=0.05)
    assert all(set(e["systems"]) == set(meta_systems) for e in scored)
    for holdout in ("pendulum", "henon-heiles"):
        six = {k: v for k, v in meta_systems.items() if k != holdout}
        alone = selection.select_fitter(make, grid, six, holdout, shots=8, noise=0.05)
        shared = selection.choose(scored, holdout)
        assert shared == alone
        # any value of the held-out system's own scores leaves the choice as it is
        for bias in (-100.0, 100.0):
            skewed = [{"hyper": e["hyper"], "systems": {
                k: v + (bias * i if k == holdout else 0.0) for k, v in e["systems"].items()}}
                for i, e in enumerate(scored)]
            assert selection.choose(skewed, holdout) == alone


def test_choose_refuses_scores_of_the_held_out_system_alone():
    with pytest.raises(ValueError, match="no validation system other than"):
        selection.choose([{"hyper": {"a": 1}, "systems": {"pendulum": -3.0}}], "pendulum")
    with pytest.raises(ValueError, match="no setting"):
        selection.choose([], "pendulum")
    with pytest.raises(ValueError, match="unknown"):
        selection.choose([{"hyper": {}, "systems": {"pendulum": 0.0}}], "not-a-system")


@pytest.mark.parametrize("name", ["hnn", "hogn"])
def test_scores_adapt_every_system_together_as_one_at_a_time(meta_systems, name):
    """The selection adapts every (rate, system, trajectory) in one batch: the scores are
    those of evaluate_adaptation system by system, on the same points."""
    model = protocol.make_model(name, torch.float32, seed=0, hidden=16)
    params = parameters(model)
    val = {k: meta_systems[k] for k in ("mass-spring", "double-pendulum", "three-body")}
    for optimizer, rates, steps in (("sgd", (0.01, 0.3), (1, 4)), ("adam", (1e-2,), (3, 6))):
        together = selection._adaptation_scores(model, params, val, 6, 0.05, 2, rates,
                                                steps, optimizer)
        for rate, by_system in zip(rates, together, strict=True):
            for system, data in val.items():
                alone = protocol.evaluate_adaptation(
                    model, {"m": params}, data, shots=6, steps=max(steps), inner_lr=rate,
                    eval_steps=steps, seed=2, noise=0.05, optimizer=optimizer,
                    rollouts=False)["derivative_nmse"]["m"]
                torch.testing.assert_close(by_system[system], alone, rtol=1e-5, atol=0)
        assert not torch.equal(together[0]["mass-spring"][:, 0],
                               together[0]["mass-spring"][:, -1])  # adaptation moved
