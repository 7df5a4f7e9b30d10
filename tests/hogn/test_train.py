"""Training: losses, determinism, run folders, resuming, non-finite losses, bad input."""

import json
import math

import pytest
import torch

import hogn
import systems
from hogn.train import NonFiniteLossError, log_cosh


@pytest.fixture(scope="module")
def springs():
    return systems.generate("spring-nbody", trajectories=12, steps=12, dt=0.05,
                            n_particles=(3, 4), seed=0)


def _model(name="ogn", **kw):
    torch.manual_seed(0)
    return hogn.models.get(name, dim=2, node_constants=1, edge_features=2, hidden=16,
                           **kw).double()


def test_log_cosh_matches_definition_and_is_stable():
    x = torch.tensor([-3.0, -0.5, 0.0, 0.2, 4.0], dtype=torch.float64)
    assert torch.allclose(log_cosh(x), torch.log(torch.cosh(x)), atol=1e-14)
    big = log_cosh(torch.tensor([1e4], dtype=torch.float64))
    assert math.isclose(big.item(), 1e4 - math.log(2.0), rel_tol=1e-12)


def test_training_lowers_the_loss_and_is_deterministic(springs):
    runs = []
    for _ in range(2):
        model = _model()
        result = hogn.train(model, springs, epochs=4, batch_size=16, lr=3e-3, progress=False)
        runs.append((result, model))
    (r1, m1), (r2, m2) = runs
    assert r1.history[-1]["train_loss"] < 0.7 * r1.history[0]["train_loss"]
    assert [h["train_loss"] for h in r1.history] == [h["train_loss"] for h in r2.history]
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert r1.best_val == min(h["val_loss"] for h in r1.history)


@pytest.mark.parametrize("name, target, extra", [
    ("hogn", "rollout", {}), ("deltagn", "rollout", {"dt": 0.05}), ("hogn", "derivative", {}),
])
def test_every_target_trains(springs, name, target, extra):
    model = _model(name, **extra)
    result = hogn.train(model, springs, target=target, integrator="rk4", epochs=2,
                        batch_size=32, lr=3e-3, max_samples=64, progress=False)
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_gauss4_step_of_a_learned_h_passes_gradcheck(springs, monkeypatch):
    """Training through the implicit stages: the implicit-function gradient of two
    gauss4 steps of a tiny HOGN, with respect to every parameter and the state, equals
    finite differences (float64). Weights are scaled up so that the stage coupling
    ``dt ∂f/∂x`` is large enough for the check to fail without the correction."""
    torch.manual_seed(0)
    model = hogn.models.get("hogn", dim=2, node_constants=1, edge_features=2, hidden=4,
                            steps=1).double()
    with torch.no_grad():
        for t in model.parameters():
            t.mul_(3.0)
    graph = springs.state(0).select(torch.tensor([0]))
    names = [n for n, _ in model.named_parameters()]
    step = hogn.integrators.get("gauss4")

    class Field(torch.nn.Module):  # functional_call needs a forward
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, q, p):
            return self.model.derivative(q, p, graph, create_graph=True)

    wrapper = Field()

    def two_steps(q, p, *params):
        weights = {f"model.{n}": t for n, t in zip(names, params, strict=True)}

        def field(q_, p_):
            return torch.func.functional_call(wrapper, weights, (q_, p_))

        for _ in range(2):
            q, p = step(field, q, p, 0.3)
        return q, p

    inputs = (graph.q.clone().requires_grad_(), graph.p.clone().requires_grad_(),
              *(t.detach().clone().requires_grad_() for t in model.parameters()))
    assert torch.autograd.gradcheck(two_steps, inputs, atol=1e-7, rtol=1e-5, fast_mode=True)

    def gradients():
        q, p = two_steps(*inputs)
        return torch.autograd.grad(q.sum() + p.square().sum(), inputs, allow_unused=True)

    # the check can fail: without the adjoint solve (the gradient of the last stage
    # evaluation alone) the gradients are off by far more than gradcheck's tolerance
    exact = gradients()
    monkeypatch.setattr(hogn.integrators.gauss, "_implicit_gradient",
                        lambda stage_map, k, *_: stage_map(k.detach().requires_grad_(True)))
    naive = gradients()
    errors = [((a - b).abs().max() / a.abs().max()).item()
              for a, b in zip(exact, naive, strict=True) if a is not None and a.abs().max() > 0]
    assert max(errors) > 1e-2


def test_rollout_target_trains_through_gauss4(springs):
    model = _model("hogn")
    result = hogn.train(model, springs, target="rollout", integrator="gauss4", rollout_steps=2,
                        epochs=4, batch_size=16, lr=1e-2, max_samples=64, progress=False)
    losses = [h["train_loss"] for h in result.history]
    print(f"\n[gauss4 rollout target] train loss by epoch: {losses}")
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.7 * losses[0]


def test_run_folder_files_and_resume_equal_a_straight_run(springs, tmp_path):
    straight = _model()
    hogn.train(straight, springs, tmp_path / "a", epochs=3, batch_size=16, progress=False)
    resumed = _model()
    hogn.train(resumed, springs, tmp_path / "b", epochs=1, batch_size=16, progress=False)
    again = _model()  # fresh weights: resuming must restore them from the run folder
    result = hogn.train(again, springs, tmp_path / "b", epochs=3, batch_size=16, progress=False)
    a = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    assert len(result.history) == 3
    for name in ("config.json", "best.pt", "last.pt", "checkpoint.pt"):
        assert (tmp_path / "b" / name).exists()
    best = hogn.models.load(tmp_path / "a" / "best.pt")
    for x, y in zip(best.state_dict().values(), straight.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_a_folder_holding_a_different_run_is_refused(springs, tmp_path):
    hogn.train(_model(), springs, tmp_path / "run", epochs=1, progress=False)
    with pytest.raises(ValueError, match="already holds a different run"):
        hogn.train(_model(), springs, tmp_path / "run", epochs=1, lr=0.5, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        hogn.train(_model(), springs, tmp_path / "other", epochs=1, progress=False)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_non_finite_loss_names_the_step_and_keeps_the_checkpoint(springs, tmp_path):
    model = _model()
    hogn.train(model, springs, tmp_path / "run", epochs=1, progress=False)
    before = (tmp_path / "run" / "best.pt").read_bytes()
    poisoned = springs.select(torch.arange(len(springs)))
    poisoned.dq = poisoned.dq.clone()
    poisoned.dq[:] = float("inf")
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 0"):
        hogn.train(_model(), poisoned, tmp_path / "run", epochs=2, progress=False)
    assert (tmp_path / "run" / "best.pt").read_bytes() == before


def test_bad_input_is_refused_before_training(springs):
    with pytest.raises(ValueError, match="expects d=3"):
        hogn.train(hogn.models.get("ogn", dim=3, node_constants=1, edge_features=2,
                                   hidden=8).double(), springs, epochs=1, progress=False)
    with pytest.raises(ValueError, match="stepper"):
        hogn.train(_model("deltagn", dt=0.05), springs, target="derivative", progress=False)
    with pytest.raises(ValueError, match=r"steps dt"):
        hogn.train(_model("deltagn", dt=0.1), springs, target="rollout", progress=False)
    with pytest.raises(ValueError, match="unknown integrator"):
        hogn.train(_model(), springs, target="rollout", integrator="rk5", progress=False)
    with pytest.raises(ValueError, match="unknown loss"):
        hogn.train(_model(), springs, loss="l1", progress=False)


def test_a_float32_stepper_accepts_data_sampled_at_its_dt():
    """dt = 0.1 is checked before the data is cast (0.1 is not exact in float32)."""
    data = systems.generate("spring-nbody", 4, 5, 0.1, n_particles=3, progress=False)
    model = hogn.models.for_data("deltagn", data, hidden=8)
    assert model.param_dtype == torch.float32 and model.config()["dt"] == 0.1
    result = hogn.train(model, data, epochs=1, progress=False)
    assert math.isfinite(result.best_val)


@pytest.mark.parametrize("target, k", [("derivative", 1), ("rollout", 3)])
def test_collated_batches_equal_pyg_batches_of_single_states(springs, target, k):
    from torch_geometric.data import Batch as PygBatch

    from hogn.train import Samples

    samples = Samples(springs, torch.tensor([5, 0, 3]), k, target)
    picks = [7, 0, len(samples) - 1, 12]
    ours = samples.collate(picks)
    ref = PygBatch.from_data_list([samples[i] for i in picks])
    for key in ("q", "p", "c", "edge_index", "edge_attr", "ptr"):
        assert torch.equal(getattr(ours.graph, key), getattr(ref, key)), key
    assert torch.equal(ours.y_q, ref.y_q) and torch.equal(ours.y_p, ref.y_p)
    assert ours.num_graphs == 4 and ours.graph.sizes.tolist() == ref.ptr.diff().tolist()


class _ConstantExtra(hogn.models.OGN):
    """OGN whose auxiliary loss is a constant (no gradient) or a weight penalty."""

    penalty = 0.0

    def auxiliary_loss(self, graph, y_q, y_p):
        if self.penalty:
            return self.penalty * sum(p.square().sum() for p in self.parameters())
        return torch.tensor(3.0, dtype=y_q.dtype)


def test_auxiliary_loss_is_added_to_every_reported_loss_and_trained(springs):
    kw = dict(dim=2, node_constants=1, edge_features=2, hidden=16)
    runs = {}
    for key, cls, penalty in (("plain", hogn.models.OGN, 0.0), ("constant", _ConstantExtra, 0.0),
                              ("penalty", _ConstantExtra, 1.0)):
        torch.manual_seed(0)
        model = cls(**kw).double()
        model.penalty = penalty
        result = hogn.train(model, springs, epochs=2, batch_size=16, lr=3e-3, progress=False)
        runs[key] = (result, model)
    (plain, m0), (const, _), (_, m2) = runs["plain"], runs["constant"], runs["penalty"]
    for a, b in zip(plain.history, const.history, strict=True):  # no gradient: same weights
        for key in ("train_loss", "val_loss"):
            assert b[key] == pytest.approx(a[key] + 3.0, rel=1e-9)
    assert const.test_loss == pytest.approx(plain.test_loss + 3.0, rel=1e-9)
    norm = [sum(float(p.detach().square().sum()) for p in m.parameters()) for m in (m0, m2)]
    assert norm[1] < 0.9 * norm[0]  # the penalty was trained on
