"""Evaluating models against the truth: an exact model scores (almost) zero, a wrong
one does not, and the numbers equal the metrics computed by hand."""

from typing import ClassVar

import pytest
import torch

import hogn
import systems
from hogn.graph import GraphBatch
from hogn.metrics import geometric_mean, relative_error
from hogn.models.base import DynamicsModel


class TrueField(DynamicsModel):
    """The system's own vector field as a 'model' (a test double, not registered)."""

    name: ClassVar[str] = "true-field"

    def __init__(self, system, scale: float = 1.0) -> None:
        super().__init__({"dim": 2, "node_constants": 1, "edge_features": 2})
        self.system, self.scale = system, scale
        self.dummy = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def _derivative(self, q, p, graph: GraphBatch, create_graph):
        dq, dp = self.system.time_derivative(q, p, graph)
        return dq, self.scale * dp


@pytest.fixture(scope="module")
def truth():
    springs = systems.get("spring-nbody")
    return systems.generate(springs, 4, 40, 0.05, seed=3, n_particles=(3, 5),
                            test_fraction=0.0, progress=False)


def _energy(data):
    system, graph = data.system(), data.graph
    return lambda q, p: system.hamiltonian(q, p, graph)


def test_the_exact_field_scores_near_zero_and_a_wrong_one_does_not(truth):
    exact = hogn.evaluate(TrueField(truth.system()), truth, energy=_energy(truth),
                          integrator="rk4", substeps=4)
    s = exact.summary()
    assert s["rel_error"] < 1e-6 and s["energy_drift"] < 1e-5
    assert s["time_to_threshold"] == float("inf") and s["trajectories"] == 4
    wrong = hogn.evaluate(TrueField(truth.system(), scale=1.5), truth, energy=_energy(truth),
                          integrator="rk4", substeps=4).summary()
    assert wrong["rel_error"] > 1e3 * s["rel_error"]
    assert wrong["energy_drift"] > 1e-2 and wrong["time_to_threshold"] < 2.0


def test_numbers_equal_the_metrics_by_hand(truth):
    torch.manual_seed(0)
    model = hogn.models.for_data("ogn", truth, hidden=8).double()
    ev = hogn.evaluate(model, truth, integrator="rk2", steps=10)
    q, p = hogn.rollout(model, truth.state(0), 10, dt=truth.dt, integrator="rk2")
    assert torch.equal(ev.q, q) and ev.t.numel() == 11 and ev.energy_error is None
    graph = truth.graph
    rel = relative_error(q, p, truth.q[:11], truth.p[:11], graph.batch, graph.num_graphs)
    assert torch.allclose(ev.relative_error, rel)
    expected = geometric_mean(rel[1:].mean(0)).item()
    assert ev.summary()["rel_error"] == pytest.approx(expected, rel=1e-12)
    assert ev.summary()["energy_drift"] != ev.summary()["energy_drift"]  # nan without H


def test_a_float32_model_is_evaluated_against_float64_truth(truth):
    torch.manual_seed(0)
    model = hogn.models.for_data("hogn", truth, hidden=8)
    ev = hogn.evaluate(model, truth, energy=_energy(truth), steps=5)
    assert ev.q.dtype == torch.float64 and torch.isfinite(ev.energy_error).all()


def test_steppers_and_bad_horizons(truth):
    model = hogn.models.for_data("deltagn", truth, hidden=8).double()
    assert model.config()["dt"] == pytest.approx(truth.dt)
    ev = hogn.evaluate(model, truth, integrator=None, steps=3)
    assert ev.relative_error.shape == (4, 4)
    with pytest.raises(ValueError, match="integrator=None"):
        hogn.evaluate(model, truth, integrator="rk4")
    with pytest.raises(ValueError, match=r"steps must be an int in \[1, 40\]"):
        hogn.evaluate(model, truth, integrator=None, steps=41)


def test_for_data_infers_sizes_and_refuses_mixed_sizes_for_fixed_models(truth):
    model = hogn.models.for_data("hogn", truth, hidden=8)
    assert (model.dim, model.node_constants, model.edge_features) == (2, 1, 2)
    with pytest.raises(ValueError, match=r"needs graphs of one size.*\[3, 4, 5\]|"
                                         r"needs graphs of one size"):
        hogn.models.for_data("mlp", truth)
    sizes = truth.sizes
    one = truth.select(sizes == sizes[0])
    mlp = hogn.models.for_data("mlp", one, hidden=8)
    assert mlp.config()["n_particles"] == int(sizes[0])
    with pytest.raises(ValueError, match="unknown model"):
        hogn.models.for_data("nope", truth)


class _DampedTrueField(TrueField):
    def __init__(self, system, scale: float = 1.0) -> None:
        DynamicsModel.__init__(self, {"dim": 1, "node_constants": 1, "edge_features": 0})
        self.system, self.scale = system, scale
        self.dummy = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))


def test_energy_against_the_true_curve_for_a_damped_system():
    data = systems.generate("damped-mass-spring", 3, 60, 0.1, seed=1, test_fraction=0.0,
                            progress=False)
    system, energy = data.system(), _energy(data)
    exact = _DampedTrueField(system)
    drift = hogn.evaluate(exact, data, energy=energy, substeps=4).summary()
    truth = hogn.evaluate(exact, data, energy=energy, substeps=4, energy_reference="truth")
    s = truth.summary()
    # the exact field loses energy by design: a large 'drift' but no error against the curve
    assert drift["energy_drift"] > 0.1 and s["energy_error"] < 1e-6
    assert "energy_drift" not in s
    wrong = hogn.evaluate(_DampedTrueField(system, scale=1.3), data, energy=energy,
                          energy_reference="truth")
    h_pred, h_true = energy(wrong.q, wrong.p), energy(data.q, data.p)
    expected = (h_pred - h_true).abs() / h_true[0].abs()
    assert torch.allclose(wrong.energy_error, expected, rtol=1e-12)
    assert wrong.summary()["energy_error"] > 1e-2
    with pytest.raises(ValueError, match="energy_reference"):
        hogn.evaluate(exact, data, energy=energy, energy_reference="final")


def test_a_bad_energy_reference_is_refused_on_states_without_time_order():
    gen = torch.Generator().manual_seed(0)
    q, p = torch.randn(2, 5, 1, generator=gen, dtype=torch.float64)
    states = systems.Dataset.from_arrays(q, p, dq=p, dp=-q)
    model = hogn.models.for_data("hnn", states, hidden=8).double()
    assert hogn.evaluate(model, states).summary()["derivative_mse"] > 0
    with pytest.raises(ValueError, match="energy_reference"):
        hogn.evaluate(model, states, energy_reference="final")


def test_references_score_standing_still_and_the_true_field(truth):
    """The true field through the same integrator is what hogn.evaluate gives the exact
    field as a model (the same rollout), standing still keeps the start; a stepper and a
    splitting method on a field that is not separable get no true-field row."""
    from hogn.evaluation import STILL, references

    refs = references(truth, "rk4", substeps=4, energy=_energy(truth))
    assert set(refs) == {STILL, "true field, rk4"}
    exact = hogn.evaluate(TrueField(truth.system()), truth, energy=_energy(truth),
                          integrator="rk4", substeps=4)
    torch.testing.assert_close(refs["true field, rk4"].relative_error, exact.relative_error)
    still = refs[STILL]
    assert torch.equal(still.q[-1], truth.q[0]) and torch.equal(still.p[7], truth.p[0])
    expected = relative_error(truth.q[:1].expand_as(truth.q), truth.p[:1].expand_as(truth.p),
                              truth.q, truth.p, truth.graph.batch, truth.graph.num_graphs)
    torch.testing.assert_close(still.relative_error, expected)
    assert still.summary()["rel_error"] > 1e3 * refs["true field, rk4"].summary()["rel_error"]
    assert set(references(truth, None)) == {STILL}
    assert set(references(truth, "rk4", steps=5)) == {STILL, "true field, rk4"}
    with pytest.raises(ValueError, match=r"steps must be an int in \[1, 40\]"):
        references(truth, "rk4", steps=41)
