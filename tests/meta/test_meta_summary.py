"""Paired verdicts per held-out system (majority of the compared steps with p < 0.05),
the counts over systems per model and metric, and the comparison with the paper's four
evaluated systems."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from meta import against_paper, paired_comparison, paired_system, summary_block
from meta.summary import METRICS, PAPER_SYSTEMS

STEPS = [0, 1, 5, 15, 100]


def _values(rng, better_at, m=20, pretrained=True):
    """Per-trajectory values [M, 5]: meta 0.5× random at the steps ``better_at`` (else
    1.2×), pretrained equal to random."""
    base = rng.uniform(1.0, 2.0, size=(m, len(STEPS)))
    factor = np.array([0.5 if s in better_at else 1.2 for s in STEPS])
    methods = {"meta": base * factor * rng.uniform(0.9, 1.1, size=(m, len(STEPS))),
               "random": base}
    if pretrained:
        methods["pretrained"] = base.copy()
    return methods


def test_a_system_is_won_at_a_strict_majority_of_the_compared_steps():
    rng = np.random.default_rng(0)
    values = {"paper_mse": _values(rng, {1, 5, 15}),
              "derivative_nmse": _values(rng, {1, 5}),
              "short_rollout_nmse": {k: torch.from_numpy(v) for k, v in
                                     _values(rng, {0, 1, 5, 15, 100}).items()}}
    result = paired_system(values, STEPS, seed=3, resamples=500)
    assert list(result) == list(values)
    mse = result["paper_mse"]["meta_vs_random"]
    assert (mse["a"], mse["b"], mse["steps"]) == ("meta", "random", [1, 5, 15, 100])
    assert list(mse["comparisons"]) == ["1", "5", "15", "100"]  # step 0 is not compared
    assert mse["wins"] == [1, 5, 15] and mse["ahead"] is True  # 3 of 4
    deriv = result["derivative_nmse"]["meta_vs_random"]
    assert deriv["wins"] == [1, 5] and deriv["ahead"] is False  # 2 of 4 is no majority
    assert result["short_rollout_nmse"]["meta_vs_pretrained"]["ahead"] is True
    # each comparison is paired_comparison of the two columns, as a dict
    expected = paired_comparison(values["paper_mse"]["meta"][:, 2],
                                 values["paper_mse"]["random"][:, 2], seed=3, resamples=500)
    assert mse["comparisons"]["5"] == expected.to_dict()
    json.dumps(result)  # JSON-able


def test_missing_baselines_steps_and_bad_shapes():
    rng = np.random.default_rng(1)
    values = {"paper_mse": _values(rng, {1, 5}, m=6, pretrained=False)}
    # quick runs evaluate fewer steps: only those present are compared (1 and 5 here)
    result = paired_system({"paper_mse": {k: v[:, :3] for k, v in values["paper_mse"].items()}},
                           [0, 1, 5], resamples=200)
    assert list(result["paper_mse"]) == ["meta_vs_random"]  # no pretrained baseline
    assert result["paper_mse"]["meta_vs_random"]["steps"] == [1, 5]
    with pytest.raises(ValueError, match=r"expected values \[M, 5\]"):
        paired_system({"paper_mse": {"meta": np.ones((4, 3)), "random": np.ones((4, 3))}},
                      STEPS)
    with pytest.raises(ValueError, match="different numbers of trajectories"):
        paired_system({"paper_mse": {"meta": np.ones((4, 5)), "random": np.ones((3, 5))}},
                      STEPS)


def test_diverged_values_are_dropped_pairwise():
    rng = np.random.default_rng(2)
    values = _values(rng, {1, 5, 15, 100}, m=12)
    values["meta"][0, 1] = math.inf
    result = paired_system({"paper_mse": values}, STEPS, resamples=200)
    one = result["paper_mse"]["meta_vs_random"]["comparisons"]["1"]
    assert (one["n"], one["dropped"], one["a_nonfinite"]) == (11, 1, 1)


def _piece(ahead_random, ahead_pretrained, metrics=METRICS):
    return {metric: {"meta_vs_random": {"ahead": ahead_random},
                     "meta_vs_pretrained": {"ahead": ahead_pretrained}} for metric in metrics}


def test_the_summary_block_counts_systems_per_model_and_metric():
    paired = {
        "hogn": {"pendulum": _piece(True, False)},
        "hnn": {"mass-spring": _piece(True, True), "pendulum": _piece(False, True),
                "two-body": {**_piece(True, False), "derivative_nmse": {
                    "meta_vs_random": {"ahead": False}}}}}  # no pretrained baseline there
    block = summary_block(paired)
    assert list(block) == ["hnn", "hogn"]
    assert list(block["hnn"]) == list(METRICS)
    mse = block["hnn"]["paper_mse"]
    assert mse == {"systems": 3, "ahead_of_random": 2, "ahead_of_pretrained": 2,
                   "ahead_of_random_systems": ["mass-spring", "two-body"],
                   "ahead_of_pretrained_systems": ["mass-spring", "pendulum"]}
    deriv = block["hnn"]["derivative_nmse"]
    assert deriv["systems"] == 3 and deriv["ahead_of_random_systems"] == ["mass-spring"]
    assert deriv["ahead_of_pretrained_systems"] == ["mass-spring", "pendulum"]
    assert block["hogn"]["short_rollout_nmse"]["ahead_of_random"] == 1
    # a model asked for but not run: zero counts
    empty = summary_block(paired, models=["hnn", "hogn", "mlp"])["mlp"]["paper_mse"]
    assert empty["systems"] == 0 and empty["ahead_of_random_systems"] == []


def test_against_the_papers_four_systems():
    assert PAPER_SYSTEMS == ("magnetic-mirror", "double-pendulum", "pendulum", "mass-spring")
    ours = {"mass-spring": True, "pendulum": False, "double-pendulum": True,
            "magnetic-mirror": True, "two-body": False}
    result = against_paper(ours)
    assert result["paper_ahead"] == 4 and result["evaluated"] == list(PAPER_SYSTEMS)
    assert result["ahead"] == ["magnetic-mirror", "double-pendulum", "mass-spring"]
    assert result["not_ahead"] == ["pendulum"] and result["missing"] == []
    assert result["agrees"] is False
    ours["pendulum"] = True
    assert against_paper(ours)["agrees"] is True
    del ours["pendulum"]
    partial = against_paper(ours)
    assert partial["missing"] == ["pendulum"] and partial["agrees"] is False
