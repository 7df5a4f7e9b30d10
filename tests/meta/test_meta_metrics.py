"""Normalised adaptation metrics and paired comparisons (meta.metrics): exact and
do-nothing predictions score 0 and 1, scale invariance, masked particles ignored, the
10 % window rounded up, a bootstrap that is seeded, and scipy's Wilcoxon p-value."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import wilcoxon

from meta.metrics import (
    PairedComparison,
    ahead_on_system,
    derivative_nmse,
    held_out,
    paired_comparison,
    short_rollout_nmse,
    short_steps,
)


def _fields(seed: int = 0, t: int = 12, n: int = 3, d: int = 2):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(t, n, d)), rng.normal(size=(t, n, d))


def _trajectory(seed: int = 0, t: int = 31, n: int = 3, d: int = 2):
    """A smooth random trajectory ``q, p [t, n, d]`` (moving at every step)."""
    rng = np.random.default_rng(seed)
    steps_q, steps_p = rng.normal(size=(2, t, n, d)) * 0.1 + 0.05
    steps_q[0] = steps_p[0] = 0.0
    return rng.normal(size=(n, d)) + steps_q.cumsum(0), rng.normal(size=(n, d)) + steps_p.cumsum(0)


# -- derivative_nmse ------------------------------------------------------------------


def test_derivative_nmse_exact_is_zero_and_zero_field_is_one():
    dq, dp = _fields()
    assert derivative_nmse(dq, dp, dq, dp) == 0.0
    assert derivative_nmse(np.zeros_like(dq), np.zeros_like(dp), dq, dp) == pytest.approx(1.0)
    # a prediction off by a known amount: (2y - y)² / y² = 1, (1.5y - y)² / y² = 0.25
    assert derivative_nmse(1.5 * dq, 1.5 * dp, dq, dp) == pytest.approx(0.25)


def test_derivative_nmse_is_scale_invariant():
    dq, dp = _fields(1)
    eq, ep = _fields(2)
    pred_q, pred_p = dq + 0.3 * eq, dp + 0.3 * ep
    base = derivative_nmse(pred_q, pred_p, dq, dp)
    assert 0.01 < base < 1.0
    for scale in (1e-4, 7.0, 1e5):
        assert derivative_nmse(scale * pred_q, scale * pred_p, scale * dq,
                               scale * dp) == pytest.approx(base, rel=1e-12)


def test_derivative_nmse_ignores_masked_particles():
    dq, dp = _fields(3)
    pred_q, pred_p = dq + 0.1, dp - 0.2
    mask = np.array([True, True, False])
    base = derivative_nmse(pred_q, pred_p, dq, dp, mask)
    # changing a masked particle's predicted or true values changes nothing
    for arrays in [(pred_q, pred_p, dq, dp)]:
        changed = [a.copy() for a in arrays]
        changed[0][:, 2] = 1e6
        changed[1][:, 2] = np.nan
        changed[2][:, 2] = -3e4
        changed[3][:, 2] = 5.0
        assert derivative_nmse(*changed, mask) == base
    # ... and a real particle's values do change it
    moved = pred_q.copy()
    moved[:, 1] += 1.0
    assert derivative_nmse(moved, pred_p, dq, dp, mask) != base
    # equal to the metric on the real particles alone
    real = [a[:, :2] for a in (pred_q, pred_p, dq, dp)]
    assert derivative_nmse(*real) == pytest.approx(base, rel=1e-12)


def test_derivative_nmse_accepts_tensors_and_flattened_points():
    dq, dp = _fields(4)
    pred_q, pred_p = 0.8 * dq, dp + 0.05
    mask = np.array([True, False, True])
    want = derivative_nmse(pred_q, pred_p, dq, dp, mask)
    tensors = [torch.tensor(a, dtype=torch.float32) for a in (pred_q, pred_p, dq, dp)]
    assert derivative_nmse(*tensors, torch.tensor(mask)) == pytest.approx(want, rel=1e-5)
    flat = [a.reshape(-1, 2) for a in (pred_q, pred_p, dq, dp)]  # [T'·N, d], mask [T'·N]
    assert derivative_nmse(*flat, np.tile(mask, dq.shape[0])) == pytest.approx(want, rel=1e-12)


def test_derivative_nmse_edge_cases():
    dq, dp = _fields(5)
    bad = dq.copy()
    bad[0, 0, 0] = np.nan
    assert derivative_nmse(bad, dp, dq, dp) == math.inf  # a diverged model
    zeros = np.zeros_like(dq)
    assert derivative_nmse(zeros, zeros, zeros, zeros) == 0.0  # no motion, exact
    assert derivative_nmse(dq, zeros, zeros, zeros) == math.inf  # no motion, wrong
    with pytest.raises(ValueError, match="shapes differ"):
        derivative_nmse(dq[:-1], dp, dq, dp)
    with pytest.raises(ValueError, match="mask"):
        derivative_nmse(dq, dp, dq, dp, np.array([True, False]))
    with pytest.raises(ValueError, match="boolean"):
        derivative_nmse(dq, dp, dq, dp, np.array([1, 0, 1]))


def test_held_out_is_the_complement_of_the_support():
    np.testing.assert_array_equal(held_out(8, [5, 1, 1, 6]), [0, 2, 3, 4, 7])
    np.testing.assert_array_equal(held_out(4, torch.tensor([0, 1, 2, 3])), [])
    with pytest.raises(ValueError, match=r"0\.\.3"):
        held_out(4, [4])


# -- short_rollout_nmse ----------------------------------------------------------------


def test_short_steps_rounds_up_with_at_least_one_step():
    # T - 1 steps in the horizon; ceil(0.1 · (T - 1)), never 0
    assert short_steps(101) == 10
    assert short_steps(31) == 3  # 0.1 · 30 = 3.0000000000000004 in floats: still 3
    assert short_steps(16) == 2  # ceil(1.5), floor would give 1
    assert short_steps(12) == 2  # ceil(1.1)
    assert short_steps(6) == 1   # ceil(0.5)
    assert short_steps(2) == 1
    assert short_steps(21, fraction=0.25) == 5
    assert short_steps(21, fraction=1.0) == 20
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            short_steps(11, bad)
    with pytest.raises(ValueError, match="num_times"):
        short_steps(1)


def test_short_rollout_nmse_do_nothing_is_one_and_truth_is_zero():
    q, p = _trajectory()
    still_q, still_p = np.broadcast_to(q[:1], q.shape), np.broadcast_to(p[:1], p.shape)
    assert short_rollout_nmse(still_q, still_p, q, p) == pytest.approx(1.0, rel=1e-12)
    assert short_rollout_nmse(q, p, q, p) == 0.0
    # halfway between holding still and the truth: (x_t/2 - x_0/2)² / (x_t - x_0)² = 1/4
    half_q, half_p = (q + still_q) / 2, (p + still_p) / 2
    assert short_rollout_nmse(half_q, half_p, q, p) == pytest.approx(0.25, rel=1e-12)
    # tensors give the same
    tq, tp, tq0, tp0 = (torch.tensor(a) for a in (half_q, half_p, q, p))
    assert short_rollout_nmse(tq, tp, tq0, tp0) == pytest.approx(0.25, rel=1e-12)


@pytest.mark.parametrize(("num_times", "window"), [(31, 3), (16, 2), (101, 10), (6, 1)])
def test_short_rollout_nmse_uses_the_first_ceil_tenth_of_the_steps(num_times, window):
    q, p = _trajectory(1, t=num_times)
    # wrong only after the window: not seen
    late_q = q.copy()
    late_q[window + 1:] += 10.0
    assert short_rollout_nmse(late_q, p, q, p) == 0.0
    # wrong at the window's last step: seen
    last_q = q.copy()
    last_q[window] += 1.0
    assert short_rollout_nmse(last_q, p, q, p) > 0.0
    # wrong at the initial state only: not scored (the rollout starts there)
    first_p = p.copy()
    first_p[0] += 1.0
    assert short_rollout_nmse(q, first_p, q, p) == 0.0
    # the value equals the formula over times 1..window
    pred_q, pred_p = q + 0.01 * np.arange(num_times)[:, None, None], p * 1.01
    num = ((pred_q - q)[1:window + 1] ** 2).sum() + ((pred_p - p)[1:window + 1] ** 2).sum()
    den = ((q - q[0])[1:window + 1] ** 2).sum() + ((p - p[0])[1:window + 1] ** 2).sum()
    assert short_rollout_nmse(pred_q, pred_p, q, p) == pytest.approx(num / den, rel=1e-12)


def test_short_rollout_nmse_ignores_masked_particles():
    q, p = _trajectory(2)
    mask = np.array([True, False, True])
    pred_q, pred_p = q * 1.02, p + 0.01
    base = short_rollout_nmse(pred_q, pred_p, q, p, mask)
    pq, pp, tq, tp = (a.copy() for a in (pred_q, pred_p, q, p))
    pq[:, 1] = 1e8
    pp[:, 1] = np.inf
    tq[:, 1] = 0.0  # a padded particle resting at zero, as in meta.tasks
    tp[:, 1] = -7.0
    assert short_rollout_nmse(pq, pp, tq, tp, torch.tensor(mask)) == base
    pq[:, 0] += 0.5
    assert short_rollout_nmse(pq, pp, tq, tp, mask) != base
    sub = [a[:, [0, 2]] for a in (pred_q, pred_p, q, p)]
    assert short_rollout_nmse(*sub) == pytest.approx(base, rel=1e-12)


def test_short_rollout_nmse_edge_cases():
    q, p = _trajectory(3, t=21)
    diverged = q.copy()
    diverged[2, 0, 0] = np.nan  # inside the window (2 steps)
    assert short_rollout_nmse(diverged, p, q, p) == math.inf
    diverged_late = q.copy()
    diverged_late[10:] = np.inf  # after the window
    assert short_rollout_nmse(diverged_late, p, q, p) == 0.0
    still_q, still_p = np.broadcast_to(q[:1], q.shape), np.broadcast_to(p[:1], p.shape)
    assert short_rollout_nmse(still_q, still_p, still_q, still_p) == 0.0  # at rest, exact
    assert short_rollout_nmse(q, p, still_q, still_p) == math.inf  # at rest, moving
    with pytest.raises(ValueError, match=r"\[T, N, d\]"):
        short_rollout_nmse(q[0], p[0], q[0], p[0])
    with pytest.raises(ValueError, match="fraction"):
        short_rollout_nmse(q, p, q, p, fraction=0.0)


# -- paired_comparison ------------------------------------------------------------------


def test_paired_comparison_finds_a_clear_halving():
    rng = np.random.default_rng(0)
    b = rng.lognormal(0.0, 1.0, size=40)
    a = 0.5 * b * rng.lognormal(0.0, 0.05, size=40)
    res = paired_comparison(a, b)
    assert res.n == 40 and res.dropped == 0 and res.ties == 0
    assert res.share_lower == pytest.approx(1.0)
    assert res.median_ratio == pytest.approx(0.5, abs=0.03)
    assert res.ci_low <= 0.5 <= res.ci_high
    assert res.ci_high - res.ci_low < 0.1
    assert res.p_value < 1e-3
    assert res.lower
    # and the other way round: b is not ahead of a
    back = paired_comparison(b, a)
    assert back.share_lower == 0.0 and back.median_ratio == pytest.approx(2.0, abs=0.15)
    assert back.p_value == pytest.approx(res.p_value) and not back.lower


def test_paired_comparison_on_exchangeable_pairs_finds_nothing():
    rng = np.random.default_rng(1)
    level = rng.lognormal(0.0, 1.0, size=40)
    a = level * rng.lognormal(0.0, 0.3, size=40)
    b = level * rng.lognormal(0.0, 0.3, size=40)
    res = paired_comparison(a, b)
    assert 0.25 < res.share_lower < 0.75
    assert res.p_value > 0.1
    assert res.ci_low < 1.0 < res.ci_high
    assert not res.lower


def test_paired_comparison_bootstrap_is_seeded():
    rng = np.random.default_rng(2)
    b = rng.lognormal(size=24)
    a = b * rng.lognormal(-0.2, 0.5, size=24)
    one, again = paired_comparison(a, b, seed=7), paired_comparison(a, b, seed=7)
    assert one == again
    # with few resamples the interval visibly depends on the seed
    few = [paired_comparison(a, b, seed=s, resamples=50) for s in (7, 7, 8)]
    assert few[0] == few[1]
    assert (few[2].ci_low, few[2].ci_high) != (few[0].ci_low, few[0].ci_high)
    other = paired_comparison(a, b, seed=8)
    assert other.median_ratio == one.median_ratio and other.p_value == one.p_value
    # tensors of either dtype give the same answer as arrays
    tens = paired_comparison(torch.tensor(a), torch.tensor(b), seed=7)
    assert tens == one


def test_paired_comparison_p_value_is_scipys():
    rng = np.random.default_rng(3)
    for n in (8, 30, 80):  # exact and normal-approximation regimes
        b = rng.lognormal(size=n)
        a = b * rng.lognormal(-0.1, 0.4, size=n)
        assert paired_comparison(a, b, resamples=200).p_value == pytest.approx(
            wilcoxon(a - b).pvalue, rel=1e-12)


def test_paired_comparison_drops_and_counts_non_finite_pairs():
    rng = np.random.default_rng(4)
    b = rng.lognormal(size=20)
    a = 0.7 * b
    a_bad, b_bad = a.copy(), b.copy()
    a_bad[[0, 3]] = [np.nan, np.inf]
    b_bad[[3, 5, 9]] = [np.inf, -np.inf, np.nan]
    res = paired_comparison(a_bad, b_bad, resamples=500)
    # pair 3 is non-finite on both sides: one dropped pair, counted on each side
    assert res.dropped == 4 and res.a_nonfinite == 2 and res.b_nonfinite == 3
    assert res.n == 16
    keep = np.setdiff1d(np.arange(20), [0, 3, 5, 9])
    clean = paired_comparison(a[keep], b[keep], resamples=500)
    assert (res.median_ratio, res.ci_low, res.ci_high, res.p_value, res.share_lower) == (
        clean.median_ratio, clean.ci_low, clean.ci_high, clean.p_value, clean.share_lower)
    none_left = paired_comparison([np.nan, 1.0], [2.0, np.inf])
    assert none_left.n == 0 and none_left.dropped == 2 and none_left.p_value == 1.0
    assert math.isnan(none_left.median_ratio) and not none_left.lower


def test_paired_comparison_ties_and_zeros():
    same = np.array([0.3, 1.0, 2.0, 0.0, 5.0])
    res = paired_comparison(same, same, resamples=300)
    assert res.p_value == 1.0 and res.ties == 5 and res.share_lower == 0.0
    assert res.median_ratio == 1.0 and res.ci_low == res.ci_high == 1.0  # 0/0 is a tie
    assert not res.lower
    # x/0 is an infinite ratio (a lost pair); 0/x is 0
    zeros = paired_comparison([1.0, 1.0, 1.0], [0.0, 0.0, 0.0], resamples=300)
    assert zeros.median_ratio == math.inf and zeros.ci_low == math.inf and not zeros.lower
    mixed = paired_comparison([0.0, 0.0, 2.0, 1.0], [1.0, 1.0, 1.0, 0.0], resamples=300)
    assert mixed.median_ratio == 1.0  # ratios 0, 0, 2, inf → (0 + 2) / 2
    assert not math.isnan(mixed.ci_low) and not math.isnan(mixed.ci_high)
    with pytest.raises(ValueError, match="non-negative"):
        paired_comparison([-1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="same length"):
        paired_comparison([1.0, 2.0], [1.0])


def test_paired_comparison_to_dict_is_json():
    rng = np.random.default_rng(5)
    b = rng.lognormal(size=12)
    res = paired_comparison(0.6 * b, b, resamples=300)
    back = json.loads(json.dumps(res.to_dict()))
    assert back["n"] == 12 and back["lower"] is True
    assert back == res.to_dict()
    assert all(type(v) in (int, float, bool) for v in back.values())


# -- ahead_on_system ----------------------------------------------------------------


def _cmp(median: float, p: float) -> PairedComparison:
    return PairedComparison(n=20, dropped=0, a_nonfinite=0, b_nonfinite=0, share_lower=0.5,
                            ties=0, median_ratio=median, ci_low=median, ci_high=median,
                            confidence=0.95, p_value=p, lower=median < 1 and p < 0.05,
                            alpha=0.05, resamples=100, seed=0)


def test_ahead_on_system_needs_a_strict_majority_of_significant_wins():
    win, lose, unsure = _cmp(0.5, 0.001), _cmp(2.0, 0.001), _cmp(0.5, 0.2)
    assert not ahead_on_system({1: win, 5: win, 15: lose, 100: lose})  # 2 of 4
    assert ahead_on_system({1: win, 5: win, 15: win, 100: lose})  # 3 of 4
    assert not ahead_on_system({1: win, 5: win, 15: unsure, 100: lose})  # p too large
    assert ahead_on_system({1: win, 5: win, 15: win, 100: unsure})
    # only the steps present count: 2 of 3 is a majority; other steps are ignored
    assert ahead_on_system({1: win, 5: win, 100: lose, 0: lose, 2: lose})
    assert not ahead_on_system({1: win, 100: lose})
    assert not ahead_on_system({})
    assert not ahead_on_system({0: win, 2: win})
    # alpha decides what counts as significant
    close = _cmp(0.5, 0.03)
    steps = {1: close, 5: close, 15: close, 100: lose}
    assert ahead_on_system(steps) and not ahead_on_system(steps, alpha=0.01)
    assert ahead_on_system({2: win, 3: win, 4: lose}, steps=(2, 3, 4))
