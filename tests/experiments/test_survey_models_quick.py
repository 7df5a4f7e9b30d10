"""``experiments/survey_models.py``: every available family beside HNN and MLP in
``--quick``; the claim rule on made-up numbers; finished pieces kept on a rerun; the
noisy data whose training derivatives are estimated from the observations."""

from __future__ import annotations

import json
import math
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
import torch

import systems

# ~60 s of the default run on 2 cores; the model families themselves are tested in
# tests/hogn. Run with: pytest -m slow tests/experiments
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def module(load_script) -> ModuleType:
    """The script as a module (``load_script`` registers it in ``sys.modules``, which
    its dataclasses need)."""
    return load_script("survey_models")


def test_quick_run_has_every_available_family(tmp_path, run_script, module):
    run_script("survey_models", "--quick", "--out", tmp_path, timeout=300)
    results = json.loads((tmp_path / "survey_models.json").read_text())
    assert (tmp_path / "survey_models.png").stat().st_size > 10_000
    text = (tmp_path / "survey_models.md").read_text()
    assert text == module.markdown(results)
    assert results["config"]["quick"] and results["config"]["seeds"] == [0]
    available = [f for f in module.FAMILIES if f.missing() is None]
    assert [f.name for f in available][:1] == ["dissipative"]  # there today
    assert set(results["skipped"]) == {f.name for f in module.FAMILIES} - {
        f.name for f in available}
    runs = results["runs"]
    assert len(runs) == sum(len(f.systems) * len(f.model_names) for f in available)
    for r in runs:
        assert math.isfinite(r["rollout_mse"]) and r["rollout_mse"] > 0, r["model"]
        assert math.isfinite(r["target_test_loss"]) and r["target_test_loss"] > 0
        if not r["family"] == "pixels":  # no true energy of frames
            assert math.isfinite(r["energy_error"]) and r["energy_error"] > 0, r["model"]
            assert len(r["energy_true"]) == len(r["energy_pred"]) > 1
        if r["model"] == "hnn-angles":  # derivatives in angle units: not scored
            assert math.isnan(r["deriv_mse"])
        elif r["model"] != "pixel-hnn":  # a stepper has no derivative
            assert math.isfinite(r["deriv_mse"]) and r["deriv_mse"] > 0
    # the angle-coordinate HNN beside CHNN: trained on angles, scored in Cartesian
    # coordinates: its start maps back to the true one (float32 rounding), its links
    # cannot stretch, and it is rolled out (errors grow from 0)
    angles = {r["model"]: r for r in runs if r["family"] == "constrained"}
    if "chnn" in angles:
        hnn_angles = angles["hnn-angles"]
        assert hnn_angles["key"]["recoordinated"]["convert"] == "angle_dataset"
        assert abs(hnn_angles["energy_pred"][0] - hnn_angles["energy_true"][0]) < 1e-5
        assert hnn_angles["constraint_error"] < 1e-12 < angles["hnn"]["constraint_error"]
        assert angles["chnn"]["constraint_error"] < 1e-6  # CHNN keeps its links (the claim)
        assert hnn_angles["target_test_loss"] > 0 and hnn_angles["rollout_mse"] > 1e-8
        assert "HNN-ANGLES" in text and "| n/a |" in text
    # the dissipative model reports the friction it learned, the baselines do not
    gammas = {(r["system"], r["model"]): r.get("gamma_hat") for r in runs
              if r["family"] == "dissipative"}
    assert all(math.isfinite(g) for (_, m), g in gammas.items() if m == "dhnn")
    assert all(g is None for (_, m), g in gammas.items() if m != "dhnn")
    # GHNN and HNN report how often their own learned H rises along their rollout (a
    # fraction of steps), the MLP has no H
    rises = {(r["system"], r["model"]): r.get("learned_h_increase") for r in runs
             if r["family"] == "generalized (GHNN)"}
    assert rises and all((0 <= v <= 1) if m != "mlp" else v is None
                         for (_, m), v in rises.items())
    # (P + Q)∇H with Q negative semi-definite: GHNN's own H does not rise (the claim's 1%)
    assert all(v <= 0.01 for (_, m), v in rises.items() if m == "ghnn"), rises
    # every family in the tables: a row per (system, model), or a skip line
    for family in module.FAMILIES:
        if family in available:
            for spec in family.systems:
                for name in family.model_names:
                    assert f"| {family.name} | {spec.label} | {name.upper()} |" in text
        else:
            assert f"**{family.name}** (`{family.model}`" in text and "**skipped**" in text
    # every claim judged (or said not measured) once
    claims = [line for line in text.splitlines() if line.startswith("| §")]
    assert len(claims) == len(module.CLAIMS)
    assert "| supported |" in text or "| contradicted |" in text


def _summary(a: list[float], b: list[float]) -> dict:
    def row(values: list[float]) -> dict:
        return {"m": [sum(values) / len(values), 0.0], "per_seed": {"m": values}}
    return {("f", "s", "x"): row(a), ("f", "s", "y"): row(b)}


@pytest.mark.parametrize(("a", "b", "verdict"), [
    ([1.0, 2.0, 3.0], [1.2, 2.5, 30.0], "supported"),
    ([1.2, 2.5, 30.0], [1.0, 2.0, 3.0], "contradicted"),
    ([1.0, 2.0, 3.0], [1.2, 1.0, 30.0], "not resolved (seeds disagree or within the margin)"),
    ([1.0, 2.0, 3.0], [1.05, 2.5, 30.0], "not resolved (seeds disagree or within the margin)"),
    ([1.0, 2.0], [math.inf, 3.0], "supported"),
    ([math.inf], [math.inf], "not resolved (both diverged)"),
])
def test_judge_lower_compares_seed_by_seed(module, a, b, verdict):
    claim = module.Claim("text", "f", "s", "m", "x", "y")
    evidence, got = module.judge(claim, _summary(a, b))
    assert got == verdict
    lower = sum(x < y for x, y in zip(a, b, strict=True))
    assert f"lower in {lower} of {len(a)} seed(s)" in evidence


def test_judge_near_and_missing(module):
    near = module.Claim("text", "f", "s", "m", "x", kind="near", target=0.1, tolerance=0.01)
    assert module.judge(near, _summary([0.09, 0.1], [0.0]))[1] == "supported"
    assert module.judge(near, _summary([0.085], [0.0]))[1] == "not supported"
    assert module.judge(near, {})[1].startswith("not measured")


def test_finished_pieces_are_kept(tmp_path, module):
    family = module.FAMILIES[0]
    tiny = module.Family(name=family.name, model=family.model, section=family.section,
                         systems=family.systems[:1], options=family.options,
                         baselines=("mlp",), metric=family.metric)
    logs: list[str] = []
    first = module.run((tiny,), [0], True, tmp_path, logs.append)
    assert len(list(tmp_path.glob("*.json"))) == 2 and not any("kept" in m for m in logs)
    logs.clear()
    again = module.run((tiny,), [0], True, tmp_path, logs.append)
    assert sum("kept" in m for m in logs) == 2
    assert again["runs"] == json.loads(json.dumps(first["runs"]))


def test_observed_derivatives_are_differences_of_the_noisy_training_data(module):
    options = {"trajectories": 5, "steps": 10, "dt": 0.1, "noise": 0.05}
    exact = systems.generate("henon-heiles", seed=0, **options)
    data = module.observed_derivatives("henon-heiles", seed=0, **options)
    assert torch.equal(data.q_obs, exact.q_obs) and data.derivatives.startswith("estimated")
    train = ~data.test[data.graph.batch]
    assert 0 < int(train.sum()) < train.numel()
    # test trajectories keep the exact targets, training ones get the noisy differences
    assert torch.equal(data.dq[:, ~train], exact.dq[:, ~train])
    fd = torch.from_numpy(np.gradient(exact.p_obs.numpy(), 0.1, axis=0, edge_order=2))
    torch.testing.assert_close(data.dp[:, train], fd[:, train], rtol=0, atol=0)
    assert (data.dp[:, train] - exact.dp[:, train]).abs().mean() > 0.1  # noise / dt
    with pytest.raises(ValueError, match="needs noisy observations"):
        module.observed_derivatives("henon-heiles", seed=0, **{**options, "noise": 0.0})


def test_finite_geometric_mean_counts_a_diverged_trajectory_as_inf(module):
    x = torch.tensor([1e-2, 1e-4], dtype=torch.float64)
    assert module.finite_geometric_mean(x) == pytest.approx(1e-3, rel=1e-12)
    assert module.finite_geometric_mean(torch.tensor([1e-2, math.nan])) == math.inf
    assert module.finite_geometric_mean(torch.zeros(3)) == pytest.approx(1e-30)  # the floor


def test_energy_error_of_a_scaled_rollout(module):
    """A rollout ``s · (q, p)`` of a mass-spring (``H`` quadratic) has the true energy
    ``s² H`` at every step: relative error ``|s² − 1|`` on every trajectory."""
    system = systems.get("mass-spring")
    test = systems.generate(system, trajectories=3, steps=20, dt=0.1, seed=0)
    exact = module.energy_error(system, test, SimpleNamespace(q=test.q, p=test.p))
    assert exact[0] <= 1e-29 and exact[1] == exact[2]
    err, h_true, h_pred = module.energy_error(
        system, test, SimpleNamespace(q=1.1 * test.q, p=1.1 * test.p))
    assert err == pytest.approx(0.21, rel=1e-6)
    np.testing.assert_allclose(h_pred, 1.21 * np.array(h_true), rtol=1e-12)


def test_constraint_error_of_stretched_links(module):
    """Positions scaled by 1.1 about the pivot stretch every link by a tenth of its
    length: the error is 0.1 · the longest link, per trajectory (geometric mean)."""
    test = systems.generate("pendulum-chain", trajectories=3, steps=10, dt=0.05,
                            n_particles=2, seed=0)
    x = test.q[0].numpy().reshape(test.num_graphs, 2, 2)  # [G, n, d] from the pivot
    links = np.linalg.norm(np.diff(x, axis=1, prepend=0.0), axis=-1)  # [G, n]
    expected = np.exp(np.log(0.1 * links.max(1)).mean())
    assert module.constraint_error(None, None, test, SimpleNamespace(q=test.q))[
        "constraint_error"] < 1e-8  # the truth keeps its links
    got = module.constraint_error(None, None, test, SimpleNamespace(q=1.1 * test.q))
    assert got["constraint_error"] == pytest.approx(expected, rel=1e-6)
