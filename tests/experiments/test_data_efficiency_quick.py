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
