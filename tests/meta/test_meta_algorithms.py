"""MAML / first-order MAML / Reptile: meta-gradients against explicit differentiation,
closed forms and joint SGD; learned inner rates; meta-training that helps adaptation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import hogn
import meta
import systems
from hogn.graph import GraphBatch
from hogn.models import HamiltonianModel
from meta.algorithms import MetaConfig, meta_gradient, parameters, task_loss
from meta.tasks import Points, TaskSampler

F64 = torch.float64


class TinyHNN(HamiltonianModel):
    """``H = w2 · tanh(W1 [q, p, c] + b1)`` for one-particle graphs (a graph = a node)."""

    name = "tiny-hnn"
    uses_edges = False

    def __init__(self, hidden: int = 6) -> None:
        super().__init__({"dim": 2, "node_constants": 1})
        g = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(0.7 * torch.randn(hidden, 5, generator=g, dtype=F64))
        self.b1 = nn.Parameter(0.3 * torch.randn(hidden, generator=g, dtype=F64))
        self.w2 = nn.Parameter(0.7 * torch.randn(hidden, generator=g, dtype=F64))

    def energy(self, q, p, graph):
        return torch.tanh(torch.cat([q, p, graph.c], -1) @ self.w1.T + self.b1) @ self.w2


def explicit_loss(theta, points):
    """The log-cosh task loss of TinyHNN written out by hand (no meta, no functional_call)."""
    w1, b1, w2 = theta
    q = points.graph.q.detach().requires_grad_(True)
    p = points.graph.p.detach().requires_grad_(True)
    h = (torch.tanh(torch.cat([q, p, points.graph.c], -1) @ w1.T + b1) @ w2).sum()
    dh_dq, dh_dp = torch.autograd.grad(h, (q, p), create_graph=True)
    residual = torch.cat([dh_dp - points.dq, -dh_dq - points.dp], -1)
    return torch.log(torch.cosh(residual)).mean()


def _theta(model):
    return [model.w1, model.b1, model.w2]


def _as_list(grads):
    return [grads["w1"], grads["b1"], grads["w2"]]


@pytest.mark.parametrize("inner_steps", [1, 2])
def test_maml_meta_gradient_equals_explicit_differentiation(tasks, inner_steps):
    model, alpha = TinyHNN(), 0.3
    theta = _theta(model)
    total = 0
    for task in tasks:  # θ' = θ − α ∇L_s(θ), repeated, by hand with create_graph=True
        th = theta
        for _ in range(inner_steps):
            g = torch.autograd.grad(explicit_loss(th, task.support), th, create_graph=True)
            th = [t - alpha * gi for t, gi in zip(th, g, strict=True)]
        total = total + explicit_loss(th, task.query)
    expected = torch.autograd.grad(total / len(tasks), theta)

    config = MetaConfig(algorithm="maml", inner_steps=inner_steps, inner_lr=alpha)
    grads, lr_grads, stats = meta_gradient(model, parameters(model), tasks, config)
    loss = meta.meta_loss(model, parameters(model), tasks, config)
    from_loss = torch.autograd.grad(loss, theta)
    assert lr_grads == {}
    assert stats["query_after"] == pytest.approx(float(total.detach() / len(tasks)), rel=1e-12)
    for got, via_loss, want in zip(_as_list(grads), from_loss, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-8)
        torch.testing.assert_close(via_loss, want, rtol=0, atol=1e-8)

    # the second-order term matters here, so dropping it could not pass unnoticed
    first, _, _ = meta_gradient(model, parameters(model), tasks,
                                MetaConfig(algorithm="fomaml", inner_steps=inner_steps,
                                           inner_lr=alpha))
    diff = sum((a - b).square().sum() for a, b in zip(_as_list(first), expected, strict=True))
    assert diff.sqrt() > 1e-3 * sum(w.square().sum() for w in expected).sqrt()


@pytest.mark.parametrize("inner_steps", [1, 2])
def test_first_order_maml_drops_the_second_order_term(tasks, inner_steps):
    model, alpha = TinyHNN(), 0.3
    total = [torch.zeros_like(t) for t in _theta(model)]
    for task in tasks:
        th = [t.detach() for t in _theta(model)]
        for _ in range(inner_steps):  # inner gradients as constants
            th = [t.requires_grad_(True) for t in th]
            g = torch.autograd.grad(explicit_loss(th, task.support), th)
            th = [(t - alpha * gi).detach() for t, gi in zip(th, g, strict=True)]
        th = [t.requires_grad_(True) for t in th]
        at_adapted = torch.autograd.grad(explicit_loss(th, task.query), th)  # ∇L_q(θ')
        total = [a + b / len(tasks) for a, b in zip(total, at_adapted, strict=True)]
    config = MetaConfig(algorithm="fomaml", inner_steps=inner_steps, inner_lr=alpha)
    grads, _, _ = meta_gradient(model, parameters(model), tasks, config)
    for got, want in zip(_as_list(grads), total, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def _linear_points(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, p, dq, dp = (torch.randn(n, 2, generator=g, dtype=F64) for _ in range(4))
    c = 0.5 + torch.rand(n, 1, generator=g, dtype=F64)
    graph = GraphBatch(q, p, c, torch.empty(2, 0, dtype=torch.long), torch.arange(n + 1))
    return Points(graph, dq, dp)


def test_one_inner_step_of_a_linear_model_matches_its_closed_form():
    torch.manual_seed(0)
    model = hogn.models.get("mlp", n_particles=1, dim=2, node_constants=1, layers=1).double()
    pts = _linear_points()
    x = torch.cat([pts.graph.q, pts.graph.p, pts.graph.c, torch.ones(12, 1, dtype=F64)], -1)
    y = torch.cat([pts.dq, pts.dp], -1)  # [n, 4]
    params = parameters(model)
    w = torch.cat([params["net.0.weight"], params["net.0.bias"][:, None]], 1).detach()

    def step(w, alpha):  # MSE over the n·4 entries: ∇ = (2 / 4n) (X Wᵀ − Y)ᵀ X
        return w - alpha * (2 / y.numel()) * (x @ w.T - y).T @ x

    for steps, alpha in ((1, 0.1), (2, 0.05)):
        adapted = meta.inner_update(model, params, pts, loss="mse", steps=steps, lr=alpha)
        want = w
        for _ in range(steps):
            want = step(want, alpha)
        got = torch.cat([adapted["net.0.weight"], adapted["net.0.bias"][:, None]], 1)
        torch.testing.assert_close(got.detach(), want, rtol=0, atol=1e-12)

    # per-element rates (Meta-SGD): α ⊙ ∇
    lrs = meta.init_inner_lr(params, 0.1)
    lrs["net.0.weight"] = torch.linspace(0.01, 0.2, 20, dtype=F64).reshape(4, 5)
    adapted = meta.inner_update(model, params, pts, loss="mse", steps=1, lr=lrs)
    grad = (2 / y.numel()) * (x @ w.T - y).T @ x
    want_w = w[:, :5] - lrs["net.0.weight"] * grad[:, :5]
    torch.testing.assert_close(adapted["net.0.weight"].detach(), want_w, rtol=0, atol=1e-12)


def _hnn(n_particles=1, hidden=16, seed=0):
    torch.manual_seed(seed)
    return hogn.models.get("hnn", n_particles=n_particles, dim=2, node_constants=1,
                           hidden=hidden).double()


def test_reptile_with_one_inner_step_is_joint_sgd(mass_spring, three_body):
    sampler = TaskSampler({"ms": mass_spring, "tb": three_body}, shots=6, query=4,
                          layout="padded", seed=0)
    tasks = sampler.sample(4)
    beta = 0.05
    model = _hnn(3)
    joint = sum(task_loss(model, parameters(model), t.support) for t in tasks) / len(tasks)
    g = torch.autograd.grad(joint, list(parameters(model).values()), allow_unused=True,
                            materialize_grads=True)
    expected = [p.detach() - beta * gi for p, gi in zip(parameters(model).values(), g,
                                                         strict=True)]
    for alpha in (0.01, 0.3):  # with one step the update does not depend on α
        model = _hnn(3)
        optimizer = torch.optim.SGD(model.parameters(), lr=beta)
        meta.meta_train_step(model, optimizer, tasks,
                             MetaConfig(algorithm="reptile", inner_steps=1, inner_lr=alpha))
        for got, want in zip(parameters(model).values(), expected, strict=True):
            torch.testing.assert_close(got.detach(), want, rtol=0, atol=1e-12)


def test_reptile_gradient_is_the_mean_displacement_over_the_inner_rate(mass_spring,
                                                                      pendulum):
    sampler = TaskSampler({"ms": mass_spring, "pe": pendulum}, shots=6, query=4,
                          layout="padded", seed=1)
    tasks, model, alpha = sampler.sample(3), _hnn(), 0.2
    config = MetaConfig(algorithm="reptile", inner_steps=3, inner_lr=alpha)
    grads, _, _ = meta_gradient(model, parameters(model), tasks, config)
    theta = parameters(model)
    want = {k: torch.zeros_like(v) for k, v in theta.items()}
    for t in tasks:
        adapted = meta.inner_update(model, theta, t.support, steps=3, lr=alpha)
        for k in want:
            want[k] += (theta[k] - adapted[k]).detach() / (alpha * len(tasks))
    joint = sum(task_loss(model, theta, t.support) for t in tasks) / len(tasks)
    joint_grad = torch.autograd.grad(joint, list(theta.values()), allow_unused=True,
                                     materialize_grads=True)
    for k in grads:
        torch.testing.assert_close(grads[k], want[k], rtol=0, atol=1e-12)
    # after three steps it is no longer the joint gradient (times three)
    assert any(not torch.allclose(grads[k], 3 * jg, atol=1e-6)
               for k, jg in zip(grads, joint_grad, strict=True))


@pytest.mark.parametrize("algorithm", ["maml", "fomaml"])
def test_learned_inner_rates_get_the_right_gradient_and_change(tasks, algorithm):
    model = TinyHNN()
    config = MetaConfig(algorithm=algorithm, inner_lr=0.2, learn_inner_lr=True,
                        outer_lr=0.01)
    lrs = meta.init_inner_lr(parameters(model), config.inner_lr)
    _, lr_grads, _ = meta_gradient(model, parameters(model), tasks, config, lrs)
    # one step, θ' = θ − α ⊙ g(θ): ∂L_q(θ')/∂α = −g ⊙ ∇L_q(θ') for both algorithms
    want = [torch.zeros_like(t) for t in _theta(model)]
    for task in tasks:
        g = torch.autograd.grad(explicit_loss(_theta(model), task.support), _theta(model))
        th = [(t - 0.2 * gi).detach().requires_grad_(True)
              for t, gi in zip(_theta(model), g, strict=True)]
        gq = torch.autograd.grad(explicit_loss(th, task.query), th)
        want = [w - gi * gqi / len(tasks) for w, gi, gqi in zip(want, g, gq, strict=True)]
    for got, w in zip(_as_list(lr_grads), want, strict=True):
        torch.testing.assert_close(got, w, rtol=0, atol=1e-10)
        assert got.abs().max() > 0

    before = {k: v.detach().clone() for k, v in lrs.items()}
    optimizer = meta.make_optimizer(model, config, lrs)
    stats = meta.meta_train_step(model, optimizer, tasks, config, lrs)
    assert stats["grad_norm"] > 0
    assert all(lrs[k].grad is not None for k in lrs)
    assert all(not torch.equal(lrs[k].detach(), before[k]) for k in lrs)


def _adaptation_loss(model, tasks, alpha):
    total = 0.0
    for t in tasks:
        adapted = meta.inner_update(model, parameters(model), t.support, steps=1, lr=alpha,
                                    first_order=True)
        total += float(task_loss(model, adapted, t.query).detach())
    return total / len(tasks)


def test_meta_training_on_two_systems_lowers_heldout_adaptation_loss(mass_spring, pendulum):
    """Held out: trajectories of the two training systems, and an unseen stiffer spring."""
    data = {"mass-spring": mass_spring, "pendulum": pendulum}
    stiff = systems.generate(systems.get("mass-spring", embed_dim=2, k=2.5), trajectories=6,
                             steps=40, dt=0.25, seed=5)
    kw = {"shots": 20, "query": 20, "layout": "padded", "dtype": torch.float32}
    train = TaskSampler(data, seed=0, **kw)
    heldout = {"trajectories": TaskSampler(data, split="test", seed=1, **kw).sample(12),
               "system": TaskSampler(stiff, split="all", seed=2, **kw).sample(6)}
    torch.manual_seed(0)
    model = hogn.models.get("hnn", n_particles=1, dim=2, node_constants=1, hidden=32)
    config = MetaConfig(algorithm="maml", inner_lr=0.1, outer_lr=3e-3, meta_batch=4,
                        shots=20, query=20)
    before = {k: _adaptation_loss(model, v, config.inner_lr) for k, v in heldout.items()}
    history = meta.meta_train(model, train, config, iterations=150)
    after = {k: _adaptation_loss(model, v, config.inner_lr) for k, v in heldout.items()}
    assert len(history) == 150
    assert all(math.isfinite(h["query_after"]) for h in history)
    assert after["trajectories"] < 0.1 * before["trajectories"], (before, after)
    assert after["system"] < 0.5 * before["system"], (before, after)


def test_meta_training_is_deterministic(mass_spring, pendulum):
    runs = []
    for _ in range(2):
        sampler = TaskSampler({"a": mass_spring, "b": pendulum}, shots=5, query=5,
                              layout="padded", seed=4)
        model = _hnn(hidden=8)
        config = MetaConfig(algorithm="fomaml", meta_batch=2, shots=5, query=5)
        runs.append((meta.meta_train(model, sampler, config, iterations=3), model))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1].parameters(), runs[1][1].parameters(), strict=True):
        assert torch.equal(a, b)


def test_hogn_graph_tasks_meta_gradient_matches_finite_differences(mass_spring, three_body):
    sampler = TaskSampler({"ms": mass_spring, "tb": three_body}, shots=5, query=5, seed=0)
    tasks = sampler.sample(2)
    assert {t.system for t in tasks} == {"ms", "tb"}
    torch.manual_seed(0)
    model = hogn.models.get("hogn", dim=2, node_constants=1, hidden=8, steps=1,
                            absolute_positions=True).double()
    config = MetaConfig(algorithm="maml", inner_lr=0.1, inner_steps=2)
    theta = parameters(model)
    grads, _, _ = meta_gradient(model, theta, tasks, config)
    assert all(torch.isfinite(g).all() for g in grads.values())
    nonzero = sum(int(g.abs().max() > 0) for g in grads.values())
    assert nonzero >= len(grads) - 1  # only the (constant-energy) output bias has none
    g = torch.Generator().manual_seed(1)
    direction = {k: torch.randn(v.shape, generator=g, dtype=F64) for k, v in theta.items()}
    eps = 1e-5

    def at(sign):
        shifted = {k: (v + sign * eps * direction[k]).detach() for k, v in theta.items()}
        return float(meta.meta_loss(model, shifted, tasks, config).detach())

    numeric = (at(1) - at(-1)) / (2 * eps)
    analytic = float(sum((grads[k] * direction[k]).sum() for k in theta))
    assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9)

    before = [p.detach().clone() for p in model.parameters()]
    stats = meta.meta_train_step(model, meta.make_optimizer(model, config), tasks, config)
    assert stats["grad_norm"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_bad_options_raise_listing_the_choices():
    with pytest.raises(ValueError, match="maml, fomaml, reptile"):
        MetaConfig(algorithm="anil")
    with pytest.raises(ValueError, match="logcosh, mse"):
        MetaConfig(loss="l1")
    with pytest.raises(ValueError, match="reptile"):
        MetaConfig(algorithm="reptile", learn_inner_lr=True)
    with pytest.raises(ValueError, match="inner_steps"):
        MetaConfig(inner_steps=0)
    with pytest.raises(ValueError, match="at least one task"):
        meta_gradient(TinyHNN(), parameters(TinyHNN()), [], MetaConfig())
    with pytest.raises(ValueError, match="no meta-loss"):
        meta.meta_loss(TinyHNN(), parameters(TinyHNN()), [], MetaConfig(algorithm="reptile"))
