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
