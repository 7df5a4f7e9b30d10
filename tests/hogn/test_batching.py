"""Edge-budget batches: every sample once per epoch, no batch over the budget unless a
single sample is, the same batches on every rank with equal counts, reproducible."""

from __future__ import annotations

import itertools

import pytest
import torch

from hogn.batching import EdgeBudgetBatches, budget_batches


def test_budget_batches_respects_the_budget_and_keeps_every_sample():
    gen = torch.Generator().manual_seed(0)
    costs = torch.randint(1, 50, (300,), generator=gen)
    costs[7] = 500  # alone above the budget: a batch of its own
    batches = budget_batches(costs, 120)
    flat = [i for b in batches for i in b]
    assert flat == list(range(300))
    for b in batches:
        total = int(costs[b].sum())
        assert total <= 120 or b == [7]
    # greedy: adding the next batch's first sample would have passed the budget
    for b, nxt in itertools.pairwise(batches):
        assert int(costs[b].sum()) + int(costs[nxt[0]]) > 120


def test_budget_batches_follows_the_given_order():
    costs = [3, 3, 3, 3]
    assert budget_batches(costs, 6, order=[3, 1, 2, 0]) == [[3, 1], [2, 0]]
    assert budget_batches(costs, 6, order=[]) == []


@pytest.mark.parametrize(("costs", "budget", "match"), [
    ([1, 2], 0, "budget"), ([1, -2], 5, ">= 0"), ([1.5, 2.0], 5, "integers"),
])
def test_budget_batches_bad_input(costs, budget, match):
    with pytest.raises(ValueError, match=match):
        budget_batches(costs, budget)


def test_sampler_epochs_are_shuffles_and_reproducible():
    costs = torch.arange(1, 41)
    s = EdgeBudgetBatches(costs, 60, seed=3)
    first = list(s)
    assert sorted(i for b in first for i in b) == list(range(40))
    assert len(first) == len(s)
    assert list(s) == first  # the same epoch gives the same batches
    s.set_epoch(1)
    assert list(s) != first
    assert list(EdgeBudgetBatches(costs, 60, seed=3)) == first
    assert list(EdgeBudgetBatches(costs, 60, shuffle=False)) == budget_batches(costs, 60)


@pytest.mark.parametrize("replicas", [2, 3])
def test_ranks_share_the_batches_with_equal_counts(replicas):
    costs = torch.randint(1, 30, (101,), generator=torch.Generator().manual_seed(1))
    samplers = [EdgeBudgetBatches(costs, 90, seed=5, num_replicas=replicas, rank=r)
                for r in range(replicas)]
    for s in samplers:
        s.set_epoch(2)
    per_rank = [list(s) for s in samplers]
    assert len({len(b) for b in per_rank}) == 1
    assert all(len(b) == len(s) for b, s in zip(per_rank, samplers, strict=True))
    single = EdgeBudgetBatches(costs, 90, seed=5)
    single.set_epoch(2)
    everything = list(single)
    seen = [i for batches in per_rank for b in batches for i in b]
    assert set(seen) == set(range(101))  # every sample somewhere
    # rank r takes batches r, r + R, ... of the single-process cut (padded by repeats)
    for r, batches in enumerate(per_rank):
        for k, b in enumerate(batches):
            assert b == everything[(r + k * replicas) % len(everything)]


def test_sampler_in_a_dataloader():
    costs = [5] * 10
    loader = torch.utils.data.DataLoader(list(range(10)),
                                         batch_sampler=EdgeBudgetBatches(costs, 15, seed=0))
    sizes = [len(b) for b in loader]
    assert sum(sizes) == 10 and max(sizes) == 3 and len(loader) == 4


def test_sampler_bad_input():
    with pytest.raises(ValueError, match="rank"):
        EdgeBudgetBatches([1, 2], 5, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="at least one sample"):
        EdgeBudgetBatches([], 5)
    with pytest.raises(ValueError, match="budget"):
        EdgeBudgetBatches([1], -1)


def test_training_with_an_edge_budget(tmp_path, monkeypatch):
    """``hogn.train(edge_budget=...)``: every training sample once per epoch in batches
    within the budget (the largest graphs alone), reproducible, resumable."""
    import hogn
    import systems

    data = systems.generate("spring-nbody", trajectories=10, steps=4, dt=0.05,
                            n_particles=(3, 12), seed=0)
    seen: list[list[int]] = []

    def run(folder, epochs):
        torch.manual_seed(0)
        model = hogn.models.get("hogn", dim=2, node_constants=1, edge_features=2, hidden=8)
        result = hogn.train(model, data, folder, epochs=epochs, edge_budget=300,
                            progress=False)
        return model, result

    original = EdgeBudgetBatches.__iter__

    def spy(self):
        for batch in original(self):
            seen.append(batch)
            yield batch

    with monkeypatch.context() as patch:
        patch.setattr(EdgeBudgetBatches, "__iter__", spy)
        model, result = run(tmp_path / "a", 2)
    assert len(result.history) == 2
    from hogn.train import Samples, _split

    train_ids, _ = _split(data.to(dtype=torch.float32), 0.1, 0)
    costs = Samples(data, train_ids, 1, "derivative").costs()
    per_epoch = len(seen) // 2
    for epoch in (seen[:per_epoch], seen[per_epoch:]):
        flat = sorted(i for b in epoch for i in b)
        assert flat == list(range(len(costs)))  # every sample once
        assert all(int(costs[b].sum()) <= 300 or len(b) == 1 for b in epoch)
    assert len({len(b) for b in seen}) > 1  # sizes differ: batches hold different counts
    assert seen[:per_epoch] != seen[per_epoch:]  # reshuffled each epoch
    # the same run again, and one stopped after an epoch and resumed, end equal
    again, _ = run(tmp_path / "b", 2)
    run(tmp_path / "c", 1)
    resumed, _ = run(tmp_path / "c", 2)
    for a, b, c in zip(model.parameters(), again.parameters(), resumed.parameters(),
                       strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_edge_budget_rules():
    import hogn
    import systems

    data = systems.generate("spring-nbody", trajectories=4, steps=2, dt=0.05,
                            n_particles=(3, 4), seed=0)
    model = hogn.models.get("hogn", dim=2, node_constants=1, edge_features=2, hidden=8)
    with pytest.raises(ValueError, match="edge_budget and max_samples cannot be combined"):
        hogn.train(model, data, None, epochs=1, edge_budget=100, max_samples=5,
                   progress=False)
    with pytest.raises(ValueError, match="edge_budget must be an int >= 0"):
        hogn.train(model, data, None, epochs=1, edge_budget=-1, progress=False)
