"""``experiments/fewshot.py --quick``: every method on the same points, settings chosen on
the training systems, the affine fit exact on the (linear) mass-spring, the do-nothing
field at exactly 1, and the summary counts made from the per-system verdicts."""

from __future__ import annotations

import json
import math

import pytest
import torch

META_LEARNED = ["hnn:meta", "hogn:meta", "hnn-basis:closed-form", "hogn-basis:closed-form"]
METRICS = ["paper_mse", "derivative_nmse", "short_rollout_nmse"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory, run_script):
    out = tmp_path_factory.mktemp("fewshot")
    run_script("fewshot", "--quick", "--quiet", "--out", out, "--systems", "mass-spring",
               "--regimes", "k20")
    return out, json.loads((out / "fewshot.json").read_text())


def test_every_method_is_scored_on_the_held_out_system(quick):
    _, results = quick
    res = results["results"]["k20"]
    assert res["shots"] == 20 and res["noise"] == 0.0
    piece = res["systems"]["mass-spring"]
    assert "mass-spring" not in piece["training_systems"]
    assert len(piece["training_systems"]) == 6
    methods = set(piece["medians"]["derivative_nmse"])
    assert set(META_LEARNED) <= methods
    assert {"zero", "affine", "polynomial", "kernel", "nearest", "hnn:random", "hnn:scratch",
            "hnn:pretrained", "hogn:scratch", "hnn-basis:random-features"} <= methods
    # every method's settings were chosen (the zero field has none)
    assert set(piece["selection"]) == methods
    assert piece["selection"]["zero"] == {}


def test_the_simple_fields_score_what_they_must(quick):
    _, results = quick
    piece = results["results"]["k20"]["systems"]["mass-spring"]
    deriv = piece["per_trajectory"]["derivative_nmse"]
    short = piece["per_trajectory"]["short_rollout_nmse"]
    # fitted methods take no steps: one value per trajectory (the same at every step);
    # adapted networks have one per evaluated step
    for name in ("affine", "zero", "kernel", "hnn-basis:closed-form"):
        assert all(isinstance(v, float) for v in deriv[name]), name
    assert all(len(row) == 3 for row in deriv["hnn:meta"])
    # the mass-spring's field is linear: an affine fit to 20 exact points is exact
    assert max(deriv["affine"]) < 1e-10
    # predicting nothing scores exactly 1 on both normalised errors
    for values in (deriv["zero"], short["zero"]):
        assert all(math.isclose(v, 1.0, rel_tol=1e-9) for v in values)


def test_summary_counts_are_the_per_system_verdicts(quick):
    out, results = quick
    res = results["results"]["k20"]
    for method in META_LEARNED:
        for metric in METRICS:
            verdict = res["systems"]["mass-spring"]["versus_baselines"][metric][method]
            block = res["summary"]["ahead_of_baselines"][method][metric]
            assert block["ahead_of_baselines"] == int(verdict["ahead"])
            assert block["ahead_of_baselines_systems"] == (["mass-spring"] if verdict["ahead"]
                                                           else [])
            # the affine fit is exact here, so no network is ahead of every baseline
            assert not verdict["ahead"] and "affine" in verdict["behind"]
    assert res["summary"]["best"] in META_LEARNED
    text = (out / "fewshot.md").read_text()
    assert "## Regime k20: K = 20, noise 0%" in text and "### mass-spring held out" in text


def test_shared_scores_are_kept_and_the_wall_time_reported(quick):
    out, results = quick
    shared = out / "fewshot_pieces" / "seed0" / "shared" / "k20.pt"
    assert shared.is_file()
    res = results["results"]["k20"]
    assert res["shared_select_seconds"] > 0
    clock = res["systems"]["mass-spring"]["clock"]
    assert clock[1] > clock[0] and results["wall_s"] >= clock[1] - clock[0]
    assert results["compute_s"] >= res["shared_select_seconds"]


def test_meta_learning_summary_gets_the_counts_of_every_seed(quick, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
    import meta_learning

    _, results = quick
    for seed in (0, 3):  # a full run's report of two seeds (the quick flag taken off)
        report = {**results, "quick": False, "seed": seed}
        name = "fewshot.json" if seed == 0 else f"fewshot_seed{seed}.json"
        (tmp_path / name).write_text(json.dumps(report))
    (tmp_path / "fewshot_quick.json").write_text(json.dumps(results))  # quick: not counted
    versus = meta_learning.versus_baselines_summary(tmp_path)
    assert list(versus["seeds"]) == ["0", "3"]
    res = results["results"]["k20"]
    best = res["summary"]["best"]
    for seed in ("0", "3"):
        block = versus["seeds"][seed]["regimes"]["k20"]
        assert block["best"] == best and block["systems"] == ["mass-spring"]
        for metric in METRICS:
            want = res["summary"]["ahead_of_baselines"][best][metric]
            got = block["models"][best][metric]
            assert got["ahead_of_baselines"] == want["ahead_of_baselines"]
            assert got["ahead_early_systems"] == want["ahead_early_systems"]
            assert versus["spread"]["k20"][metric]["ahead_of_baselines"][seed] == \
                want["ahead_of_baselines"]
    assert meta_learning.versus_baselines_summary(tmp_path / "empty") is None


def test_variants_are_scored_beside_the_networks(quick):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
    import fewshot

    from meta import protocol
    from meta.protocol import decoder_names

    out, results = quick
    piece = results["results"]["k20"]["systems"]["mass-spring"]
    for variant in fewshot.DEFAULT_VARIANTS:
        assert f"{variant}:meta" in piece["medians"]["derivative_nmse"]
        assert f"{variant}:meta" in piece["versus_random"]
        assert f"{variant}:train" in piece["seconds"]
    assert set(piece["selection"]["hnn-meta-sgd:meta"]) == {"scale"}
    assert piece["selection"]["hnn-anil:meta"]["inner_lr"] in fewshot.QUICK["sgd_rates"]
    runs = out / "fewshot_runs" / "seed0"
    anil = protocol.load_run(runs / "hnn-anil" / "mass-spring")
    rule = fewshot.variant_rule(anil, 0.1)  # ANIL: rates on the decoder only
    assert anil.config.anil and set(rule) == set(decoder_names(anil.model))
    sgd = protocol.load_run(runs / "hnn-meta-sgd" / "mass-spring")
    rule = fewshot.variant_rule(sgd, 2.0)  # Meta-SGD: the learned rates, scaled
    assert all(torch.equal(rule[k], 2.0 * v) for k, v in sgd.inner_lr.items())
    assert not anil.config.pretrain and "pretrained" not in anil.params
