"""Tasks and the task sampler: points from the right trajectory, seeded draws, the
padded fixed-size layout whose padding never counts, and clear errors."""

from __future__ import annotations

import pytest
import torch

import hogn
import systems
from meta.algorithms import parameters, predict, task_loss
from meta.tasks import Points, TaskSampler, split_times


def _states(data, trajectory):
    a, b = int(data.ptr[trajectory]), int(data.ptr[trajectory + 1])
    return data.q[:, a:b], data.p[:, a:b], data.dq[:, a:b], data.dp[:, a:b], data.c[a:b]


def test_split_times_are_disjoint_sorted_and_seeded():
    g = torch.Generator().manual_seed(0)
    support, query = split_times(30, 10, None, g)
    assert support.numel() == 10 and query.numel() == 20
    assert torch.equal(torch.cat([support, query]).sort().values, torch.arange(30))
    assert torch.equal(support, support.sort().values)
    again = split_times(30, 10, None, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], support)
    s, q = split_times(30, 10, 5, g)
    assert q.numel() == 5 and not set(s.tolist()) & set(q.tolist())
    with pytest.raises(ValueError, match="cannot give"):
        split_times(10, 10, None)


def test_task_points_are_the_trajectory_states_at_their_times(three_body):
    sampler = TaskSampler({"tb": three_body}, shots=7, query=5, seed=0)
    task = sampler.sample(1)[0]
    assert task.trajectory in sampler.trajectories("tb")
    assert not bool(three_body.test[task.trajectory])  # train split by default
    q, p, dq, dp, c = _states(three_body, task.trajectory)
    for pts, m in ((task.support, 7), (task.query, 5)):
        g = pts.graph
        assert pts.num_points == m and g.num_nodes == 3 * m and pts.mask is None
        assert torch.equal(g.q, q[pts.times].reshape(-1, 2))
        assert torch.equal(g.p, p[pts.times].reshape(-1, 2))
        assert torch.equal(pts.dq, dq[pts.times].reshape(-1, 2))
        assert torch.equal(pts.dp, dp[pts.times].reshape(-1, 2))
        assert torch.equal(g.c, c.repeat(m, 1))
        assert torch.equal(g.ptr, torch.arange(m + 1) * 3)
        assert g.edge_index.shape == (2, 6 * m)  # complete graph per point
        assert bool((g.batch[g.edge_index[0]] == g.batch[g.edge_index[1]]).all())
    assert not set(task.support.times.tolist()) & set(task.query.times.tolist())


def test_sampler_is_seeded_and_draws_every_system(mass_spring, pendulum, three_body):
    data = {"ms": mass_spring, "pe": pendulum, "tb": three_body}

    def draw(seed):
        return [(t.system, t.trajectory, t.support.times.tolist())
                for t in TaskSampler(data, shots=5, query=5, seed=seed).sample(30)]

    first = draw(0)
    assert first == draw(0) and first != draw(1)
    assert {s for s, _, _ in first} == {"ms", "pe", "tb"}
    tasks = TaskSampler(data, shots=5, split="test", seed=0).sample(10)
    assert all(bool(data[t.system].test[t.trajectory]) for t in tasks)
    assert all(t.query.num_points == len(data[t.system].t) - 5 for t in tasks)


def test_padded_layout_zero_mass_zero_state_and_masked(mass_spring, three_body):
    sampler = TaskSampler({"ms": mass_spring, "tb": three_body}, shots=4, query=3,
                          layout="padded", seed=0)
    assert sampler.n_particles == 3
    task = sampler.sample(1, systems=["ms"])[0]
    pts = task.support
    q, p, dq, dp, c = _states(mass_spring, task.trajectory)
    g = pts.graph
    assert torch.equal(g.ptr, torch.arange(5) * 3)
    assert torch.equal(g.p[pts.mask], p[pts.times, 0])
    assert torch.equal(pts.dq[pts.mask], dq[pts.times, 0])
    assert torch.equal(pts.mask, torch.tensor([True, False, False] * 4))
    real, pad = pts.mask, ~pts.mask
    assert torch.equal(g.q[real], q[pts.times, 0]) and torch.equal(pts.dp[real],
                                                                   dp[pts.times, 0])
    for t in (g.q, g.p, g.c, pts.dq, pts.dp):
        assert bool((t[pad] == 0).all())
    assert torch.equal(g.c[real], c.repeat(4, 1))


def test_padded_and_graph_layouts_agree_for_the_largest_system(three_body):
    torch.manual_seed(0)
    model = hogn.models.get("hnn", n_particles=3, dim=2, node_constants=1, hidden=8).double()
    padded = TaskSampler({"tb": three_body}, shots=6, layout="padded", seed=3).sample(2)
    graph = TaskSampler({"tb": three_body}, shots=6, layout="graph", seed=3).sample(2)
    for a, b in zip(padded, graph, strict=True):
        assert a.support.mask is None
        assert torch.equal(a.support.graph.q, b.support.graph.q)
        assert task_loss(model, parameters(model), a.query) == task_loss(
            model, parameters(model), b.query)


def test_padding_particles_do_not_count_in_the_loss(mass_spring, pendulum):
    sampler = TaskSampler({"ms": mass_spring, "pe": pendulum}, shots=8, query=4,
                          layout="padded", n_particles=3, seed=0)
    task = sampler.sample(1)[0]
    pts = task.support
    torch.manual_seed(0)
    model = hogn.models.get("mlp", n_particles=3, dim=2, node_constants=1, hidden=8).double()
    theta = parameters(model)
    loss = task_loss(model, theta, pts, "mse")
    # by hand: the mean over real particles only
    dq, dp = predict(model, theta, pts.graph)
    real = pts.mask
    by_hand = torch.cat([dq[real] - pts.dq[real], dp[real] - pts.dp[real]], -1).square().mean()
    torch.testing.assert_close(loss, by_hand, rtol=1e-14, atol=0)
    assert (dq[~real].abs() > 0).any()  # the model does predict something there ...
    # ... and whatever the targets of padding particles, loss and gradient are the same
    junk = Points(pts.graph, pts.dq.masked_fill(~real[:, None], 100.0),
                  pts.dp.masked_fill(~real[:, None], -7.0), pts.mask)
    junk_loss = task_loss(model, theta, junk, "mse")
    assert junk_loss == loss
    g1 = torch.autograd.grad(loss, list(theta.values()))
    g2 = torch.autograd.grad(junk_loss, list(theta.values()))
    assert all(torch.equal(a, b) for a, b in zip(g1, g2, strict=True))
    # without the mask the junk would count: the mask is what keeps it out
    unmasked = Points(junk.graph, junk.dq, junk.dp, None)
    assert task_loss(model, theta, unmasked, "mse") > 10 * loss


def test_graph_tasks_of_varying_size_with_edge_constants():
    springs = systems.generate("spring-nbody", trajectories=4, steps=12, dt=0.05,
                               n_particles=(3, 4), seed=0)
    sampler = TaskSampler({"springs": springs}, shots=5, split="all", seed=0)
    sizes = {t.support.graph.num_nodes // 5 for t in sampler.sample(8)}
    assert sizes == {3, 4}
    torch.manual_seed(0)
    model = hogn.models.get("hogn", dim=2, node_constants=1, edge_features=2,
                            hidden=8, steps=1).double()
    task = sampler.sample(1)[0]
    assert task.support.graph.edge_attr.shape[1] == 2
    loss = task_loss(model, parameters(model), task.support)
    grads = torch.autograd.grad(loss, list(parameters(model).values()), allow_unused=True,
                                materialize_grads=True)
    assert torch.isfinite(loss) and any(g.abs().max() > 0 for g in grads)


def test_bad_inputs_raise_clear_errors(mass_spring, three_body):
    native = systems.generate("mass-spring", trajectories=3, steps=10, dt=0.25, seed=0)
    with pytest.raises(ValueError, match=r"d=1.*d=2|d=2.*d=1"):
        TaskSampler({"ms-native": native, "tb": three_body}, shots=5)
    springs = systems.generate("spring-nbody", trajectories=3, steps=10, dt=0.05,
                               n_particles=3, seed=0)
    with pytest.raises(ValueError, match="a=2"):
        TaskSampler({"springs": springs, "tb": three_body}, shots=5)
    with pytest.raises(ValueError, match="cannot give"):
        TaskSampler({"tb": three_body}, shots=31)
    with pytest.raises(ValueError, match="smaller than the graphs of tb"):
        TaskSampler({"ms": mass_spring, "tb": three_body}, shots=5, layout="padded",
                    n_particles=2)
    with pytest.raises(ValueError, match="graph, padded"):
        TaskSampler({"tb": three_body}, shots=5, layout="flat")
    with pytest.raises(ValueError, match="train, test, all"):
        TaskSampler({"tb": three_body}, shots=5, split="val")
    with pytest.raises(ValueError, match="unknown system"):
        TaskSampler({"tb": three_body}, shots=5).sample(2, systems=["pendulum"])
    with pytest.raises(ValueError, match="at least one"):
        TaskSampler({}, shots=5)
