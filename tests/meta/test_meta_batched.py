"""meta.batched: many tasks in one call give the task-by-task results (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hogn import models
from hogn.nn import MLP, Linear
from meta import algorithms, batched, training
from meta.protocol import _pretrain_step
from meta.tasks import TaskSampler

TOL = 1e-10


@pytest.fixture(scope="module")
def mixed(pendulum, three_body):
    """Graph-layout tasks of a one-particle system (no edges) and the three-body problem
    (3 nodes, 6 edges per point): node and edge counts differ from task to task."""
    sampler = TaskSampler({"pendulum": pendulum, "three-body": three_body}, shots=6,
                          query=7, seed=5, dtype=torch.float64)
    tasks = sampler.sample(5)
    assert len({t.system for t in tasks}) == 2
    return tasks


@pytest.fixture(scope="module")
def padded(pendulum, three_body):
    sampler = TaskSampler({"pendulum": pendulum, "three-body": three_body}, shots=6,
                          query=7, layout="padded", seed=6, dtype=torch.float64)
    return sampler.sample(4)


def _model(name: str, seed: int = 0) -> models.DynamicsModel:
    torch.manual_seed(seed)
    args = {"n_particles": 3, "hidden": 12} if name in ("hnn", "mlp") else {
        "hidden": 12, "absolute_positions": True, "edge_energies": name != "ogn"}
    if name == "ogn":
        args.pop("edge_energies")
    return models.get(name, dim=2, node_constants=1, **args).double()


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-300))
               for k in a)


CONFIGS = [
    dict(algorithm="maml", inner_steps=2, inner_lr=0.05),
    dict(algorithm="fomaml"),
    dict(algorithm="reptile", inner_steps=2),
    dict(algorithm="maml", anil=True),
    dict(algorithm="maml", learn_inner_lr=True),
]


@pytest.mark.parametrize("options", CONFIGS, ids=lambda o: "-".join(
    str(v) for v in o.values()))
@pytest.mark.parametrize("name", ["hogn", "separable-hogn", "ogn"])
def test_batched_meta_gradient_equals_the_task_by_task_one_on_graphs(mixed, name, options):
    model = _model(name)
    config = algorithms.MetaConfig(shots=6, query=7, **options)
    params = algorithms.parameters(model)
    rates = (algorithms.init_inner_lr(algorithms.inner_parameters(model, config), 0.03)
             if config.learn_inner_lr else None)
    g_loop, lr_loop, s_loop = algorithms.meta_gradient(model, params, mixed, config, rates)
    g_batch, lr_batch, s_batch = batched.meta_gradient(model, params, mixed, config, rates)
    assert _close(g_batch, g_loop) < TOL
    if rates is not None:
        assert _close(lr_batch, lr_loop) < TOL
    assert s_batch == pytest.approx(s_loop, rel=1e-12)
    assert max(float(g.abs().max()) for g in g_loop.values()) > 0  # a real gradient


@pytest.mark.parametrize("options", CONFIGS[:3], ids=lambda o: o["algorithm"])
@pytest.mark.parametrize("name", ["hnn", "mlp"])
def test_batched_meta_gradient_equals_the_task_by_task_one_padded(padded, name, options):
    model = _model(name)
    config = algorithms.MetaConfig(shots=6, query=7, **options)
    params = algorithms.parameters(model)
    g_loop, _, _ = algorithms.meta_gradient(model, params, padded, config)
    g_batch, _, _ = batched.meta_gradient(model, params, padded, config)
    assert _close(g_batch, g_loop) < TOL


def test_meta_train_step_batched_and_task_by_task_make_the_same_update(mixed):
    after = {}
    for flag in (True, False):
        model = _model("hogn", seed=3)
        config = algorithms.MetaConfig(shots=6, query=7, batched=flag)
        optimizer = training.make_optimizer(model, config)
        training.meta_train_step(model, optimizer, mixed, config)
        after[flag] = {k: v.detach().clone() for k, v in model.named_parameters()}
    assert _close(after[True], after[False]) < TOL
    with pytest.raises(ValueError, match="batched must be None, True or False"):
        algorithms.MetaConfig(batched="yes")


def test_padding_never_reaches_a_real_particle(mixed):
    """Per-task derivatives from the stacked batch equal each task's own, and padding
    nodes carry zero loss weight."""
    model = _model("hogn")
    kinds = batched.row_kinds(model)
    points = [t.query for t in mixed]
    stacked = batched.stack_points(points, set(kinds.values()))
    assert set(stacked.blocks) == {"nodes", "edges"}
    # every task its own (perturbed) copy of the weights
    params = algorithms.parameters(model)
    own = {k: torch.stack([v + 0.01 * (i + 1) * torch.ones_like(v) for i in range(len(points))])
           for k, v in params.items()}
    dq, dp = algorithms.predict(model, batched.blocked_params(model, own, stacked, kinds),
                                stacked.graph, create_graph=False)
    for i, pts in enumerate(points):
        ref_q, ref_p = algorithms.predict(model, {k: v[i] for k, v in own.items()}, pts.graph,
                                          create_graph=False)
        a, n = stacked.offsets[i], pts.graph.num_nodes
        torch.testing.assert_close(dq[a:a + n], ref_q, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(dp[a:a + n], ref_p, rtol=1e-12, atol=1e-12)
        assert float(stacked.weight[a + n:stacked.offsets[i + 1]].abs().sum()) == 0
    assert float(stacked.real.sum()) == sum(p.graph.num_nodes for p in points)
    losses = batched.task_losses(model, params, stacked, "mse", kinds).detach()
    for i, pts in enumerate(points):
        assert float(losses[i]) == pytest.approx(
            float(algorithms.task_loss(model, params, pts, "mse").detach()), rel=1e-12)


def test_choose_block_minimises_padding_plus_block_overhead():
    assert batched.choose_block([50, 100, 150, 300]) == 50  # no padding at all
    assert batched.choose_block([0, 0]) == 1
    counts = [7, 13, 30]
    best = batched.choose_block(counts, overhead=4)

    def cost(r):
        return sum(-(-c // r) * (r + 4) for c in counts)

    assert cost(best) == min(cost(r) for r in range(1, 31))


def test_linear_applies_one_weight_per_block_and_checks_shapes():
    layer = Linear(3, 2).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    weight = torch.randn(3, 2, 3, dtype=torch.float64)
    bias = torch.randn(3, 2, dtype=torch.float64)
    out = torch.func.functional_call(layer, {"weight": weight, "bias": bias}, (x,))
    for b in range(3):
        torch.testing.assert_close(out[2 * b:2 * b + 2],
                                   nn.functional.linear(x[2 * b:2 * b + 2], weight[b], bias[b]))
    with pytest.raises(ValueError, match=r"need inputs \[3·R, 3\], got \(7, 3\)"):
        torch.func.functional_call(layer, {"weight": weight, "bias": bias},
                                   (torch.randn(7, 3, dtype=torch.float64),))
    with pytest.raises(ValueError, match="rows must be None or one of"):
        MLP(2, 4, 1, rows="particles")


def test_a_parameter_outside_an_mlp_with_rows_is_refused_with_the_way_out(mixed):
    model = _model("hogn")
    model.scale = nn.Parameter(torch.ones((), dtype=torch.float64))
    assert batched.supports(_model("hogn"))
    with pytest.raises(ValueError, match=r"scale .*MetaConfig\(batched=False\)"):
        batched.row_kinds(model)
    assert not batched.supports(model)
    # the default (batched=None) then meta-trains it task by task
    config = algorithms.MetaConfig(shots=6, query=7)
    optimizer = training.make_optimizer(model, config)
    stats = training.meta_train_step(model, optimizer, mixed, config)
    assert stats["grad_norm"] > 0
    with pytest.raises(ValueError, match="scale"):
        training.meta_train_step(model, optimizer, mixed, algorithms.MetaConfig(
            shots=6, query=7, batched=True))


def test_pretraining_step_in_one_call_equals_the_sum_over_tasks(mixed):
    grads = {}
    for how in ("batched", "loop"):
        model = _model("hogn", seed=4)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        if how == "batched":
            _pretrain_step(model, optimizer, mixed, "logcosh")
        else:
            params = algorithms.parameters(model)
            value = 0.0
            for t in mixed:
                k, q = t.support.num_points, t.query.num_points
                value = value + (k * algorithms.task_loss(model, params, t.support)
                                 + q * algorithms.task_loss(model, params, t.query)) / (
                    (k + q) * len(mixed))
            value.backward()
        grads[how] = {k: torch.zeros_like(v) if v.grad is None else v.grad.clone()
                      for k, v in model.named_parameters()}
    assert _close(grads["batched"], grads["loop"]) < TOL


def test_tasks_without_edges_batch_too(tasks):
    """One-particle systems have no edges: the edge MLPs get no rows at all."""
    model = _model("hogn")
    tasks = [t.to(dtype=torch.float64) for t in tasks]
    config = algorithms.MetaConfig(shots=8, query=10)
    params = algorithms.parameters(model)
    stacked = batched.stack_points([t.support for t in tasks],
                                   set(batched.row_kinds(model).values()))
    assert stacked.graph.edge_index.shape[1] == 0 and stacked.blocks["edges"].numel() == 0
    g_loop, _, _ = algorithms.meta_gradient(model, params, tasks, config)
    g_batch, _, _ = batched.meta_gradient(model, params, tasks, config)
    assert _close(g_batch, g_loop) < TOL
