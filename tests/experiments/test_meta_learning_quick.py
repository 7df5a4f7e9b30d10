"""``experiments/meta_learning.py --quick``: the leave-one-system-out protocol end to end
for all six systems, JSON + markdown (made from the JSON) + two figures, with finite
rollout errors and adaptation that lowers every method's loss on its K points."""

from __future__ import annotations

import json
import math

SYSTEMS = ["mass-spring", "pendulum", "double-pendulum", "two-body", "three-body",
           "magnetic-mirror"]
METHODS = ["meta", "random", "pretrained"]


def test_quick_run(tmp_path, run_script, load_script):
    run_script("meta_learning", "--quick", "--quiet", "--out", tmp_path)
    results = json.loads((tmp_path / "meta_learning.json").read_text())
    for name in ("meta_learning_curves.png", "meta_learning_trajectories.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
    assert results["quick"] is True and list(results["systems"]) == SYSTEMS
    steps = results["sizes"]["eval_steps"]
    for holdout, res in results["systems"].items():
        assert holdout not in res["training_systems"] and len(res["training_systems"]) == 5
        assert res["steps"] == steps
        for method in METHODS:
            rows = res["summary"][method]
            assert [r["step"] for r in rows] == steps
            assert all(r["diverged"] == 0 and r["finite"] == 2 for r in rows), (holdout, method)
            for r in rows:
                assert 0 < r["ci_low"] <= r["mean"] <= r["ci_high"] or r["ci_low"] <= 0
                assert math.isfinite(r["mean"]) and r["mean"] > 0
            # the mean of the saved per-trajectory MSEs is the reported mean
            per_traj = res["mse"][method]
            assert math.isclose(sum(t[0] for t in per_traj) / len(per_traj), rows[0]["mean"],
                                rel_tol=1e-9)
            # gradient steps on the K points lower the loss on those points, every time
            loss = res["support_loss"][method]
            assert all(a < b for a, b in zip(loss["after"], loss["before"], strict=True)), (
                holdout, method, loss)
        # the pretrained and meta-trained runs start from the random-init weights, so
        # they differ from it only through training: not all three step-0 errors agree
        zero = {m: res["summary"][m][0]["mean"] for m in METHODS}
        assert zero["meta"] != zero["random"] and zero["pretrained"] != zero["random"]
    counts = results["counts"]
    assert counts["systems"] == 6 and 0 <= counts["meta_beats_random"] <= 6
    assert counts["meta_beats_random"] == sum(
        r["compare"]["meta_vs_random"]["ahead"] for r in results["systems"].values())
    # the markdown is made from the JSON: its cells carry the JSON's numbers
    text = (tmp_path / "meta_learning.md").read_text()
    first = results["systems"]["mass-spring"]["summary"]["meta"][0]["mean"]
    assert f"| meta-trained | {first:.3g} ±" in text
    assert f"**{counts['meta_beats_random']} of 6**" in text
    assert "Reduced sizes" in text
