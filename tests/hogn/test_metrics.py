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


def _brute_rdf(q, box, r_max, bins):
    """All pairs of one graph, by hand (numpy), minimum image."""
    import numpy as np

    x, L = q.numpy(), box.numpy()
    rel = x[:, None] - x[None]
    rel -= L * np.round(rel / L)
    r = np.linalg.norm(rel, axis=-1)[~np.eye(len(x), dtype=bool)]
    counts, edges = np.histogram(r[r < r_max], bins=bins, range=(0, r_max))
    d = x.shape[1]
    shell = (edges[1:] ** d - edges[:-1] ** d) * (np.pi if d == 2 else 4 * np.pi / 3)
    return counts / (len(x) * (len(x) - 1) / L.prod() * shell)


@pytest.mark.parametrize("d", [2, 3])
def test_radial_distribution_equals_all_pairs_and_is_one_for_an_ideal_gas(d):
    from hogn.graph import ptr_from_sizes
    from hogn.metrics import radial_distribution

    gen = torch.Generator().manual_seed(d)
    sizes = [400, 300] if d == 2 else [500, 400]
    box = torch.tensor([[10.0] * d, [9.0] * d], dtype=torch.float64)
    q = torch.cat([torch.rand(n, d, generator=gen, dtype=torch.float64) * box[g]
                   for g, n in enumerate(sizes)])
    ptr = ptr_from_sizes(sizes)
    r, g = radial_distribution(q, ptr, box, 3.0, bins=15)
    assert r.shape == g.shape == (15,)
    assert torch.allclose(r, torch.linspace(0.1, 2.9, 15, dtype=torch.float64))
    # one graph alone equals the all-pairs histogram
    _, g0 = radial_distribution(q[:sizes[0]], ptr_from_sizes(sizes[:1]), box[:1], 3.0, bins=15)
    assert torch.allclose(g0, torch.as_tensor(_brute_rdf(q[:sizes[0]], box[0], 3.0, 15)),
                          rtol=1e-12)
    # uniform points: g = 1 up to counting noise (outer shells hold thousands of pairs)
    assert (g[5:] - 1).abs().max() < 0.15
    # frames are pooled: two copies of the same frame give the same g
    _, g2 = radial_distribution(torch.stack([q, q]), ptr, box, 3.0, bins=15)
    assert torch.allclose(g2, g)


def test_radial_distribution_of_a_lattice_peaks_at_its_spacing():
    from hogn.graph import ptr_from_sizes
    from hogn.metrics import radial_distribution

    side = torch.arange(10, dtype=torch.float64)
    q = torch.cartesian_prod(side, side)  # square lattice of spacing 1 in a box of 10
    r, g = radial_distribution(q, ptr_from_sizes([100]), torch.full((1, 2), 10.0,
                                                                    dtype=torch.float64),
                               2.4, bins=16)  # shells of 0.15: r = 1 in [0.9, 1.05)
    assert float(r[g.argmax()]) == pytest.approx(0.975)
    assert g[r < 0.9].abs().max() == 0  # nothing closer than the spacing
    assert g[(r > 1.35) & (r < 1.5)].item() > 1  # the diagonal neighbours at sqrt(2)


def test_radial_distribution_bad_input():
    from hogn.graph import ptr_from_sizes
    from hogn.metrics import radial_distribution

    q, ptr, box = torch.zeros(3, 2), ptr_from_sizes([3]), torch.full((1, 2), 5.0)
    with pytest.raises(ValueError, match="r_max"):
        radial_distribution(q, ptr, box, -1.0)
    with pytest.raises(ValueError, match="bins"):
        radial_distribution(q, ptr, box, 1.0, bins=0)
