"""Rollout metrics: values checked against hand computations and known limits."""

import math

import pytest
import torch

from hogn import metrics


def _two_graphs():
    # graph 0: nodes 0, 1; graph 1: node 2
    batch = torch.tensor([0, 0, 1])
    q_true = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]]], dtype=torch.float64)
    p_true = torch.zeros_like(q_true)
    return batch, q_true, p_true


def test_state_mse_matches_hand_computation():
    batch, q_true, p_true = _two_graphs()
    q = q_true.clone()
    q[0, 0, 0] += 0.5   # graph 0: one component off by 0.5 over 2 nodes x 2 dims x (q, p)
    q[0, 2, 1] -= 2.0   # graph 1: one component off by 2 over 1 node x 2 dims x (q, p)
    mse = metrics.state_mse(q, p_true, q_true, p_true, batch, 2)
    assert torch.allclose(mse, torch.tensor([[0.25 / 8, 4.0 / 4]], dtype=torch.float64))


def test_relative_error_limits_and_value():
    batch, q_true, p_true = _two_graphs()
    zero = metrics.relative_error(q_true, p_true, q_true, p_true, batch, 2)
    assert torch.equal(zero, torch.zeros(1, 2, dtype=torch.float64))
    # opposite states: |a - b| = 2|a|, |a| + |b| = 2|a| -> 1
    opposite = metrics.relative_error(-q_true, p_true, q_true, p_true, batch, 2)
    assert torch.allclose(opposite, torch.ones(1, 2, dtype=torch.float64))
    # scaled by 2: |a - b| = |a|, |a| + |b| = 3|a| -> 1/3
    scaled = metrics.relative_error(2 * q_true, p_true, q_true, p_true, batch, 2)
    assert torch.allclose(scaled, torch.full((1, 2), 1 / 3, dtype=torch.float64))


def test_geometric_mean():
    x = torch.tensor([1e-2, 1e-4], dtype=torch.float64)
    assert math.isclose(metrics.geometric_mean(x).item(), 1e-3, rel_tol=1e-12)


def test_energy_error_and_drift_of_a_known_trajectory():
    # energy = sum of q^2 per graph; trajectory doubles q of graph 0 at the last step
    batch = torch.tensor([0, 1])
    q = torch.ones(3, 2, 1, dtype=torch.float64)
    q[2, 0] = 2.0
    p = torch.zeros_like(q)

    def energy(q, p):
        return torch.stack([q[..., 0, 0] ** 2, q[..., 1, 0] ** 2], -1)

    err = metrics.energy_error(q, p, energy)
    assert torch.allclose(err[:, 0], torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64))
    assert torch.equal(err[:, 1], torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(metrics.energy_drift(q, p, energy),
                          torch.tensor([3.0, 0.0], dtype=torch.float64))
    ref = torch.tensor([2.0, 1.0], dtype=torch.float64)
    assert torch.allclose(metrics.energy_error(q, p, energy, reference=ref)[0],
                          torch.tensor([0.5, 0.0], dtype=torch.float64))
    del batch


@pytest.mark.parametrize("threshold, expected", [(0.05, [1.0, 2.0]), (0.5, [math.inf, 2.0])])
def test_time_to_threshold(threshold, expected):
    t = torch.tensor([0.0, 1.0, 2.0])
    error = torch.tensor([[0.0, 0.0], [0.1, 0.01], [0.2, 0.9]])
    got = metrics.time_to_threshold(error, t, threshold)
    assert got.tolist() == expected


def test_relative_drift_of_known_energies():
    h = torch.tensor([[2.0, -1.0], [2.5, -1.0], [1.0, -0.5]], dtype=torch.float64)
    assert torch.allclose(metrics.relative_drift(h), torch.tensor([0.5, 0.5], dtype=torch.float64))
