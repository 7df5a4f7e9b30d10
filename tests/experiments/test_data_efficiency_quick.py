"""``experiments/data_efficiency.py --quick``: HNN, HOGN and MLP trained on nested
three-body sets; JSON, one PNG and a markdown fragment made from the JSON."""

from __future__ import annotations

import json
import math


def test_quick_run(tmp_path, run_script, load_script):
    run_script("data_efficiency", "--quick", "--out", tmp_path)
    results = json.loads((tmp_path / "data_efficiency.json").read_text())
    assert (tmp_path / "data_efficiency.png").stat().st_size > 10_000
    cfg = results["config"]
    assert cfg["sizes"] == [10, 40] and cfg["model_names"] == ["mlp", "hnn", "hogn"]
    runs = results["runs"]
    assert len(runs) == 2 * 3
    for r in runs:
        for key in ("train_loss", "test_loss", "test_loss_clean", "rel_error", "energy_drift"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["model"], key)
        assert 0 < r["rel_error"] < 1  # bounded relative error of a finite rollout
    # the HOGN is a graph model, the two MLPs flatten the 3 bodies
    params = {r["model"]: r["parameters"] for r in runs}
    assert params["hnn"] != params["hogn"]
    # nested training sets: the same test set, so the clean and the noisy test losses
    # differ only through the observation noise
    assert len(results["summary"]) == 6
    text = (tmp_path / "data_efficiency.md").read_text()
    assert text == load_script("data_efficiency").markdown(results)
    assert "| HOGN |" in text and "10 traj." in text and "40 traj." in text


def test_before_after_marks_means_outside_the_seed_spread(load_script):
    """✓ where before and after differ by no more than the larger seed std, ✗ beyond;
    a size the earlier run lacks shows only the new value."""
    script = load_script("data_efficiency")
    after = [{"model": "mlp", "trajectories": n, "test_loss_clean": [1.0, 0.1],
              "rel_error": [0.5, 0.05]} for n in (10, 40)]
    before = [{"model": "mlp", "trajectories": 10, "test_loss_clean": [1.05, 0.01],
               "rel_error": [0.7, 0.05]}]
    results = {"summary": after, "config": {"sizes": [10, 40], "model_names": ["mlp"]},
               "before": {"command": "old", "summary": before}}
    text = "\n".join(script.before_after(results))
    assert "1.05 ± 0.01 → 1 ± 0.1 ✓" in text  # 0.05 apart, within the larger std 0.1
    assert "0.7 ± 0.05 → 0.5 ± 0.05 ✗" in text  # 0.2 apart, std 0.05
    assert text.count("– → ") == 2  # no earlier run at 40 trajectories
