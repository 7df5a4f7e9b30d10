"""Closed-form heads of basis models: the ridge solve against numpy's least squares, the
meta-gradient against finite differences, the losses against meta.algorithms, and
meta-training that makes the solved heads predict unseen trajectories."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hogn
import meta
from meta import closed_form as cf
from meta.algorithms import task_loss
from meta.tasks import Points, TaskSampler

F64 = torch.float64
RIDGE = 1e-2


def basis_model(name: str, hidden: int = 16, features: int = 5) -> hogn.models.DynamicsModel:
    """A small float64 basis model for the shared layout (d = 2, one node constant)."""
    torch.manual_seed(0)
    if name == "hnn-basis":
        model = hogn.models.get(name, n_particles=3, dim=2, node_constants=1, hidden=hidden,
                                features=features)
    else:
        model = hogn.models.get(name, dim=2, node_constants=1, hidden=hidden, steps=1,
                                absolute_positions=True, features=features)
    model = model.to(F64)
    with torch.no_grad():  # a prior unlike the default, so that w0 matters
        model.head.copy_(torch.linspace(-0.5, 1.0, features, dtype=F64))
    return model


@pytest.fixture(scope="module")
def mixed_tasks(mass_spring, three_body):
    """Per layout, four tasks of 6 support and 5 query points over a one-particle system
    and a three-particle one (padded: the mass-spring's two padding particles masked)."""
    out = {}
    for layout in ("padded", "graph"):
        sampler = TaskSampler({"mass-spring": mass_spring, "three-body": three_body}, shots=6,
                              query=5, layout=layout, seed=4)
        out[layout] = [sampler.task(s, 0) for s in ("mass-spring", "three-body")] + \
            [sampler.task(s, 1) for s in ("three-body", "mass-spring")]
    assert out["padded"][0].support.mask is not None and out["graph"][0].support.mask is None
    return out


def layout_of(name: str) -> str:
    return "padded" if name == "hnn-basis" else "graph"


def fields_one_by_one(model, points: Points) -> np.ndarray:
    """``Φ [R·2d, m]`` built independently: the model's own features (no functional_call),
    one autograd gradient per feature, real particles picked by hand."""
    g = points.graph
    q, p = g.q.clone().requires_grad_(True), g.p.clone().requires_grad_(True)
    phi = model.features_of(q, p, g)
    keep = torch.ones(g.num_nodes, dtype=torch.bool) if points.mask is None else points.mask
    cols = []
    for i in range(phi.shape[1]):
        gq, gp = torch.autograd.grad(phi[:, i].sum(), (q, p), retain_graph=True)
        cols.append(torch.cat([gp, -gq], -1)[keep].reshape(-1))
    return torch.stack(cols, 1).detach().numpy()


def lstsq_head(model, points: Points, ridge: float) -> np.ndarray:
    """``argmin ‖Φw − y‖² + λ'‖w − w0‖²`` by numpy's lstsq of ``[Φ; √λ' I] w = [y; √λ' w0]``."""
    phi = fields_one_by_one(model, points)
    keep = np.ones(points.graph.num_nodes, bool) if points.mask is None else \
        points.mask.numpy()
    y = np.concatenate([points.dq.numpy(), points.dp.numpy()], -1)[keep].reshape(-1)
    m = phi.shape[1]
    lam = ridge * np.trace(phi.T @ phi) / m
    w0 = model.head.detach().numpy()
    a = np.vstack([phi, np.sqrt(lam) * np.eye(m)])
    b = np.concatenate([y, np.sqrt(lam) * w0])
    return np.linalg.lstsq(a, b, rcond=None)[0]


# --------------------------------------------------------------------- the solve
@pytest.mark.parametrize("name", ["hnn-basis", "hogn-basis"])
def test_head_is_the_least_squares_solution(name, mixed_tasks):
    model = basis_model(name)
    tasks = mixed_tasks[layout_of(name)]
    params = meta.parameters(model)
    expected = [lstsq_head(model, t.support, RIDGE) for t in tasks]
    for task, want in zip(tasks, expected, strict=True):
        adapted = cf.solve_head(model, params, task.support, RIDGE)
        np.testing.assert_allclose(adapted["head"].detach().numpy(), want, rtol=0, atol=1e-10)
        assert np.abs(want - model.head.detach().numpy()).max() > 1e-2  # the solve moved w
        assert all(adapted[k] is v for k, v in params.items() if k != "head")
    # all tasks at once (different particle counts and masks): the same heads
    heads = cf.solve_heads(model, params, [t.support for t in tasks], RIDGE)
    np.testing.assert_allclose(heads.detach().numpy(), np.stack(expected), rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["hnn-basis", "hogn-basis"])
def test_head_recovers_the_law_it_was_generated_by(name, mixed_tasks):
    """Targets from the model's own field at a head ``w*``: a tiny ridge gives ``w*`` back,
    and the support field at the solved head is the target field."""
    model = basis_model(name)
    support = mixed_tasks[layout_of(name)][1].support
    truth = torch.tensor([0.7, -1.2, 0.4, 2.0, -0.3], dtype=F64)
    params = {**meta.parameters(model), "head": truth}
    dq, dp = meta.predict(model, params, support.graph, create_graph=False)
    generated = Points(support.graph, dq.detach(), dp.detach(), support.mask)
    solved = cf.solve_head(model, meta.parameters(model), generated, 1e-12)["head"]
    torch.testing.assert_close(solved.detach(), truth, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["hnn-basis", "hogn-basis"])
def test_batched_loop_and_tiled_jacobians_agree(name, mixed_tasks):
    model = basis_model(name)
    points = mixed_tasks[layout_of(name)][0].support
    params = meta.parameters(model)
    ref = fields_one_by_one(model, points)
    for method in ("loop", "vmap", "tile"):
        got = cf.feature_fields(model, params, points, method=method).detach().numpy()
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(cf.observed(points).reshape(-1, 4),
                               torch.cat([points.dq, points.dp], -1)[
                                   points.mask if points.mask is not None else ...])


def test_vmap_falls_back_to_the_loop_once(mixed_tasks, monkeypatch):
    """A model whose batched backward fails under vmap gets the loop, with one warning."""
    model = basis_model("hogn-basis")
    points = mixed_tasks["graph"][1].support
    params = meta.parameters(model)
    grad = torch.autograd.grad
    calls = []

    def no_batching(*args, is_grads_batched=False, **kwargs):
        calls.append(is_grads_batched)
        if is_grads_batched:
            raise RuntimeError("Batching rule not implemented for aten::something")
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_batching)
    monkeypatch.setattr(cf, "_NO_VMAP", set())
    with pytest.warns(RuntimeWarning, match="failed under vmap.*one by one"):
        got = cf.feature_fields(model, params, points, method="vmap")
    assert calls == [True] + [False] * 5
    np.testing.assert_allclose(got.detach().numpy(), fields_one_by_one(model, points), rtol=0,
                               atol=1e-12)
    calls.clear()
    cf.feature_fields(model, params, points, method="vmap")  # remembered: no second try
    assert calls == [False] * 5


def test_ridge_solve_is_the_regularised_normal_equations():
    gen = torch.Generator().manual_seed(0)
    phi = torch.randn(3, 20, 4, generator=gen, dtype=F64)
    phi[0, 12:] = 0  # padding rows change nothing
    y = torch.randn(3, 20, generator=gen, dtype=F64)
    w0 = torch.randn(4, generator=gen, dtype=F64)
    w = cf.ridge_solve(phi, y, w0, 0.1)
    for b in range(3):
        rows = 12 if b == 0 else 20
        a, t = phi[b, :rows].numpy(), y[b, :rows].numpy()
        lam = 0.1 * np.trace(a.T @ a) / 4
        want = np.linalg.solve(a.T @ a + lam * np.eye(4), a.T @ t + lam * w0.numpy())
        np.testing.assert_allclose(w[b].numpy(), want, rtol=0, atol=1e-12)
    # scale-free: the same head whatever the units of the data (Φ and y scaled alike)
    torch.testing.assert_close(cf.ridge_solve(1e3 * phi, 1e3 * y, w0, 0.1), w)
    with pytest.raises(FloatingPointError, match="not positive definite"):
        cf.ridge_solve(torch.zeros(2, 3, dtype=F64), torch.ones(2, dtype=F64),
                       torch.zeros(3, dtype=F64), 0.1)


# -------------------------------------------------------------------- meta-loss
@pytest.mark.parametrize("name", ["hnn-basis", "hogn-basis"])
@pytest.mark.parametrize("loss", ["mse", "logcosh"])
def test_meta_loss_and_stats_match_task_loss(name, loss, mixed_tasks):
    """Support loss at the prior and query loss at the solved heads, by the separate path
    of meta.algorithms (model.derivative at the adapted parameters, masked mean)."""
    model = basis_model(name)
    tasks = mixed_tasks[layout_of(name)]
    params = meta.parameters(model)
    value, stats = cf.closed_form_meta_loss(model, params, tasks, RIDGE, loss)
    before = after_s = after_q = 0.0
    for task in tasks:
        adapted = cf.solve_head(model, params, task.support, RIDGE)
        before += float(task_loss(model, params, task.support, loss).detach()) / len(tasks)
        after_s += float(task_loss(model, adapted, task.support, loss).detach()) / len(tasks)
        after_q += float(task_loss(model, adapted, task.query, loss).detach()) / len(tasks)
    assert float(value.detach()) == pytest.approx(after_q, rel=1e-10)
    assert stats["query_after"] == pytest.approx(after_q, rel=1e-10)
    assert stats["support_before"] == pytest.approx(before, rel=1e-10)
    assert stats["support_after"] == pytest.approx(after_s, rel=1e-10)
    assert stats["support_after"] < stats["support_before"]


@pytest.mark.parametrize("name", ["hnn-basis", "hogn-basis"])
def test_meta_gradient_matches_finite_differences(name, mixed_tasks):
    """End to end through the solve: directional derivatives along random directions of
    the features' first-layer weight, of their last-layer weight, of the prior head, and of
    all parameters at once, against central differences."""
    model = basis_model(name, hidden=8, features=4)
    tasks = mixed_tasks[layout_of(name)][:3]
    params = meta.parameters(model)
    ridge = 0.3  # strong enough that the prior head has a clear share of the gradient
    value, _ = cf.closed_form_meta_loss(model, params, tasks, ridge, "logcosh")
    grads = dict(zip(params, torch.autograd.grad(value, list(params.values()), allow_unused=True,
                                                 materialize_grads=True), strict=True))
    names = list(params)  # head, then the first layer's weight ... the last layer's bias
    assert names[-1].endswith(".bias") and not bool(grads[names[-1]].any())  # φ's offsets
    gen = torch.Generator().manual_seed(0)
    eps = 1e-5
    for keys in ([names[1]], [names[-2]], ["head"], names):
        direction = {k: torch.randn(params[k].shape, generator=gen, dtype=F64) for k in keys}
        slope = sum(float((grads[k] * direction[k]).sum()) for k in keys)
        ends = []
        for sign in (1, -1):
            moved = {k: v.detach() + sign * eps * direction[k] if k in direction
                     else v.detach() for k, v in params.items()}
            ends.append(float(cf.closed_form_meta_loss(model, moved, tasks, ridge,
                                                       "logcosh")[0].detach()))
        fd = (ends[0] - ends[1]) / (2 * eps)
        assert abs(fd) > 1e-4, keys
        assert slope == pytest.approx(fd, rel=1e-6), keys


# ----------------------------------------------------------------- meta-training
@pytest.mark.parametrize("name", ["hnn-basis", "hogn-basis"])
def test_meta_training_makes_solved_heads_predict_unseen_trajectories(name, mass_spring,
                                                                      pendulum):
    """200 closed-form meta-updates on mass-spring and pendulum tasks (float64, CPU: about
    2 s): the query loss on held-out trajectories at their solved heads drops by more than
    20x (measured: 0.136 → 2.5e-4 for hnn-basis, 0.238 → 2.6e-3 for hogn-basis), and the
    solved head predicts them far better than the prior head (measured: > 100x)."""
    torch.manual_seed(0)
    if name == "hnn-basis":
        model = hogn.models.get(name, n_particles=1, dim=2, node_constants=1, hidden=32,
                                features=8)
    else:
        model = hogn.models.get(name, dim=2, node_constants=1, hidden=16, steps=1,
                                absolute_positions=True, features=8)
    model = model.to(F64)
    data = {"mass-spring": mass_spring, "pendulum": pendulum}
    layout = layout_of(name)
    train = TaskSampler(data, shots=10, query=10, layout=layout, seed=0)
    held_out = TaskSampler(data, shots=10, query=20, layout=layout, split="test",
                           seed=1).sample(8)

    def held_out_loss() -> float:
        return cf.closed_form_meta_loss(model, meta.parameters(model), held_out, 1e-3)[1][
            "query_after"]

    before = held_out_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = [cf.closed_form_meta_train_step(model, optimizer, train.sample(4), 1e-3)
               for _ in range(200)]
    assert set(history[0]) == {"support_before", "support_after", "query_after", "grad_norm"}
    after = held_out_loss()
    assert after < before / 20
    assert np.mean([h["query_after"] for h in history[-10:]]) < np.mean(
        [h["query_after"] for h in history[:10]]) / 5
    params = meta.parameters(model)
    for task in held_out[:4]:
        prior = float(task_loss(model, params, task.query, "mse").detach())
        solved = cf.solve_head(model, params, task.support, 1e-3)
        assert float(task_loss(model, solved, task.query, "mse").detach()) < prior / 20


def test_non_finite_meta_gradient_updates_nothing(mixed_tasks):
    model = basis_model("hnn-basis")
    tasks = mixed_tasks["padded"][:2]
    bad = tasks[1].query
    dq = bad.dq.clone()
    dq[0, 0] = float("inf")
    tasks = [tasks[0], meta.Task(tasks[1].system, tasks[1].trajectory, tasks[1].support,
                                 Points(bad.graph, dq, bad.dp, bad.mask))]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with pytest.raises(FloatingPointError, match="meta-gradient is not finite"):
        cf.closed_form_meta_train_step(model, optimizer, tasks, RIDGE)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # a finite step: the gradient Adam gets is clipped to the norm asked for
    stats = cf.closed_form_meta_train_step(model, optimizer, mixed_tasks["padded"][:2], RIDGE,
                                           grad_clip=1e-3)
    assert stats["grad_norm"] > 1e-2
    first_moment = [optimizer.state[p]["exp_avg"] for p in model.parameters()]
    norm = torch.linalg.vector_norm(torch.cat([m.reshape(-1) for m in first_moment]))
    assert float(norm) == pytest.approx(0.1 * 1e-3, rel=1e-9)  # (1 − β1) · clipped gradient
    assert not torch.equal(model.head.detach(), before["head"])


def test_bad_inputs_are_refused(mixed_tasks):
    model = basis_model("hnn-basis")
    tasks = mixed_tasks["padded"][:1]
    params = meta.parameters(model)
    for ridge in (0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="ridge must be a finite number > 0"):
            cf.solve_head(model, params, tasks[0].support, ridge)
    with pytest.raises(ValueError, match="unknown method 'jvp'; expected one of: loop, vmap, tile"):
        cf.feature_fields(model, params, tasks[0].support, method="jvp")
    with pytest.raises(ValueError, match="unknown loss 'l1'"):
        cf.closed_form_meta_loss(model, params, tasks, RIDGE, "l1")
    with pytest.raises(ValueError, match="at least one task"):
        cf.closed_form_meta_loss(model, params, [], RIDGE)
    with pytest.raises(ValueError, match="grad_clip must be"):
        cf.closed_form_meta_train_step(model, torch.optim.Adam(model.parameters()), tasks,
                                       RIDGE, grad_clip=-1.0)
    plain = hogn.models.get("hnn", n_particles=3, dim=2, node_constants=1).to(F64)
    with pytest.raises(ValueError, match=r"needs a basis model .*\(hnn-basis, hogn-basis\), "
                                         r"got hnn"):
        cf.solve_head(plain, meta.parameters(plain), tasks[0].support, RIDGE)
    wrong = hogn.models.get("hnn-basis", n_particles=2, dim=2, features=5).to(F64)
    with pytest.raises(ValueError, match=r"expects graphs of exactly 2 particle"):
        cf.solve_head(wrong, meta.parameters(wrong), tasks[0].support, RIDGE)
