"""Fitted few-shot methods scored by the adaptation's code (meta.fitted), observation noise
of the support points, Adam adaptation, and the verdicts against every baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import systems
from meta import protocol
from meta.adaptation import adapt_many
from meta.algorithms import parameters, task_loss
from meta.evaluate import AdaptationPoints
from meta.fitted import (
    baseline_fitter,
    evaluate_fits,
    flat_state,
    residual_fitter,
    score_field,
)
from meta.summary import baselines_block, medians, versus_baselines

CPU = torch.device("cpu")


def _points(data, shots=10, seed=3, n_particles=None, noise=0.0, dtype=torch.float64):
    return AdaptationPoints(data[0], shots, seed, n_particles, dtype, CPU, noise)


# ------------------------------------------------------------------------ noise
def test_noise_is_the_same_in_both_layouts_and_scaled_by_each_coordinates_spread(pendulum):
    padded = _points(pendulum, n_particles=3, noise=0.05)
    graph = _points(pendulum, noise=0.05)
    exact = _points(pendulum)
    mask = padded.support.mask
    # the same noisy support in the padded and the graph layout; padding untouched
    assert torch.equal(padded.support.graph.q[mask], graph.support.graph.q)
    assert torch.equal(padded.support.dp[mask], graph.support.dp)
    assert torch.all(padded.support.graph.q[~mask] == 0)
    # held-out points, start and truth stay exact
    assert torch.equal(graph.heldout.dq, exact.heldout.dq)
    assert torch.equal(graph.q_true, exact.q_true)
    # the noise of each coordinate: about 5 % of its spread over the trajectory
    many = AdaptationPoints(pendulum[0], 41, 0, None, torch.float64, CPU, 0.05)
    clean = AdaptationPoints(pendulum[0], 41, 0, None, torch.float64, CPU, 0.0)
    noise = many.support.graph.q - clean.support.graph.q  # [41, 2]
    spread = clean.q_true.reshape(41, -1).std(0)
    assert noise[:, 1].abs().max() == 0  # the constant surplus coordinate gets none
    ratio = float(noise[:, 0].std() / (0.05 * spread[0]))
    assert 0.6 < ratio < 1.4


def test_bad_noise_is_refused(pendulum):
    for bad in (-0.1, 1.5, math.nan, True, "0.05"):
        with pytest.raises(ValueError, match="noise must be"):
            _points(pendulum, noise=bad)


# ----------------------------------------------------------------------- fitted
def test_scores_of_the_zero_field_and_of_the_true_field(mass_spring):
    pts = _points(mass_spring)
    mse0, deriv0, short0, _ = score_field(baseline_fitter("zero")(pts), pts)
    assert deriv0 == pytest.approx(1.0) and short0 == pytest.approx(1.0)  # standing still
    truth = systems.get("mass-spring", embed_dim=2)

    def true_field(graph, q, p):
        return truth.vector_field(graph)(q, p)

    mse, deriv, short, (q, _) = score_field(true_field, pts, substeps=8)
    assert deriv < 1e-20 and short < 1e-11 and mse < 1e-11  # RK4's own error, dt = 0.25 / 8
    assert mse0 > 0.1
    assert q.shape == pts.q_true.shape


def test_affine_fit_scores_exactly_on_the_mass_spring_through_evaluate_fits(mass_spring):
    result = evaluate_fits({"affine": baseline_fitter("affine", ridge=0.0),
                            "zero": baseline_fitter("zero")}, mass_spring[:3], shots=8,
                           eval_steps=(0, 1, 5))
    aff = result["derivative_nmse"]["affine"]
    assert aff.shape == (3, 3) and torch.all(aff[:, 0] == aff[:, 2])  # one fit, every step
    assert float(aff.max()) < 1e-16
    assert torch.allclose(result["derivative_nmse"]["zero"], torch.ones(3, 3, dtype=torch.float64))
    assert float(result["mse"]["affine"].max()) < 2e-8  # RK4's own error at dt = 0.25


def test_flat_state_keeps_real_particles_in_order(pendulum):
    padded = _points(pendulum, n_particles=3).support
    graph = _points(pendulum).support
    a = flat_state(padded.graph.q, padded.graph.p, padded.graph, padded.mask)
    b = flat_state(graph.graph.q, graph.graph.p, graph.graph)
    assert torch.equal(a, b) and a.shape == (10, 4)


# ------------------------------------------------------------------------- Adam
def test_adam_adaptation_equals_torch_adam_pair_by_pair(mass_spring, pendulum):
    model = protocol.make_model("hnn", torch.float64, seed=0, hidden=16)
    start = parameters(model)
    lr, steps = 3e-3, 6
    results = adapt_many(model, [start, start], [mass_spring[0], pendulum[0]], [lr, lr],
                         [1, 2], shots=8, steps=steps, eval_steps=[steps], optimizer="adam",
                         rollouts=False)
    for data, seed, result in zip((mass_spring, pendulum), (1, 2), results, strict=True):
        pts = AdaptationPoints(data[0], 8, seed, 3, torch.float64, CPU)
        live = {k: v.detach().clone().requires_grad_(True) for k, v in start.items()}
        opt = torch.optim.Adam(live.values(), lr=lr)
        losses = []
        for _ in range(steps):
            loss = task_loss(model, live, pts.support)
            losses.append(float(loss.detach()))
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses.append(float(task_loss(model, live, pts.support).detach()))
        assert np.allclose(result.support_loss.numpy(), losses, rtol=1e-9, atol=0)
        assert math.isnan(float(result.mse[0]))  # no rollout asked for
        assert math.isfinite(float(result.derivative_nmse[0]))


def test_unknown_optimizer_is_refused(mass_spring):
    model = protocol.make_model("hnn", torch.float64, seed=0, hidden=8)
    with pytest.raises(ValueError, match="unknown optimizer"):
        adapt_many(model, [parameters(model)], [mass_spring[0]], [0.1], [0], shots=5,
                   steps=1, optimizer="lbfgs")


# ------------------------------------------------------------------- verdicts
def test_ahead_of_every_baseline_needs_a_paired_win_against_each():
    rng = np.random.default_rng(0)
    m = 40
    base = rng.uniform(1.0, 2.0, (m, 3))
    values = {"meta": base * 0.5, "a": base, "b": base * 0.45, "c": base * 1.3}
    verdict = versus_baselines(values, [1, 5, 15], ["meta"], ["a", "b", "c"])["meta"]
    assert not verdict["ahead"] and verdict["behind"] == ["b"]
    assert verdict["versus"]["a"]["ahead"] and verdict["versus"]["c"]["ahead"]
    values["b"] = base * 0.9
    verdict = versus_baselines(values, [1, 5, 15], ["meta"], ["a", "b", "c"])["meta"]
    assert verdict["ahead"] and verdict["ahead_early"] and verdict["behind"] == []
    block = baselines_block({"x": {"derivative_nmse": {"meta": verdict}}}, ["meta"],
                            ["derivative_nmse"])
    assert block["meta"]["derivative_nmse"]["ahead_of_baselines_systems"] == ["x"]


def test_medians_count_diverged_values_as_infinite():
    values = {"m": torch.tensor([[1.0, math.nan], [2.0, math.nan], [3.0, 1.0]])}
    out = medians(values, [0, 5], [0, 5, 15])
    assert out == {"m": {"0": 2.0, "5": math.inf}}


def test_residual_fit_of_a_zero_prior_is_the_kernel_and_of_the_truth_is_the_truth(pendulum):
    pts = _points(pendulum, shots=12, noise=0.05)
    held = pts.heldout
    kernel = baseline_fitter("kernel", lengthscale=1.0, ridge=1e-6)(pts)
    hybrid = residual_fitter(baseline_fitter("zero"), lengthscale=1.0, ridge=1e-6)(pts)
    for a, b in zip(kernel(held.graph, held.graph.q, held.graph.p),
                    hybrid(held.graph, held.graph.q, held.graph.p), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # a prior that is the true field leaves only the noise to the residual's kernel, so
    # the hybrid is far closer to the truth than the kernel alone
    truth = systems.get("pendulum", embed_dim=2)

    def exact(points):
        return lambda graph, q, p: truth.vector_field(graph)(q, p)

    on_truth = residual_fitter(exact, lengthscale=1.0, ridge=1e-2)(pts)
    _, deriv_truth, _, _ = score_field(on_truth, pts, rollout=False)
    _, deriv_kernel, _, _ = score_field(kernel, pts, rollout=False)
    assert deriv_truth < 0.1 * deriv_kernel


def test_all_trajectories_at_once_equal_one_at_a_time(pendulum):
    from meta.fitted import fit_many, head_fitter, score_many

    model = protocol.make_model("hnn-basis", torch.float64, seed=0, hidden=16, features=4)
    head = head_fitter(model, parameters(model), ridge=1e-3)
    fitters = {"affine": (baseline_fitter("affine"), None), "head": (head, 3),
               "hybrid": (residual_fitter(head, lengthscale=1.0, ridge=1e-4), 3),
               "polynomial": (baseline_fitter("polynomial", degree=6, ridge=0.0), None)}
    for name, (fitter, n) in fitters.items():
        points = [AdaptationPoints(pendulum[i], 8, i, n, torch.float64, CPU, 0.05)
                  for i in range(3)]
        together = score_many(fit_many(fitter, points), points)
        if name == "head":  # the solved head through the model's own prediction
            from meta.algorithms import predict
            from meta.closed_form import solve_head

            for pts in points:
                solved = solve_head(model, parameters(model), pts.support, 1e-3)
                held = pts.heldout
                want = predict(model, solved, held.graph, create_graph=False)
                got = fitter(pts)(held.graph, held.graph.q, held.graph.p)
                for a, b in zip(got, want, strict=True):
                    torch.testing.assert_close(a, b.detach(), rtol=1e-9, atol=1e-12)
        for pts, (mse, deriv, short, (q, _)) in zip(points, together, strict=True):
            mse1, deriv1, short1, (q1, _) = score_field(fitter(pts), pts)
            assert deriv == pytest.approx(deriv1, rel=1e-9), name
            if math.isfinite(mse1):
                assert mse == pytest.approx(mse1, rel=1e-7) and short == pytest.approx(
                    short1, rel=1e-7), name
                torch.testing.assert_close(q, q1, rtol=1e-7, atol=1e-10)
            else:  # a diverged rollout diverges together too, without touching the others
                assert not math.isfinite(mse), name
