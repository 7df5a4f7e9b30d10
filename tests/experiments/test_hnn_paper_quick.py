"""``experiments/hnn_paper.py --quick``: runs end to end, writes JSON, PNG and a markdown
fragment made from the JSON, and already shows HNN's lower energy error on mass-spring."""

from __future__ import annotations

import json
import math


def test_quick_run(tmp_path, run_script, load_script):
    run_script("hnn_paper", "--quick", "--out", tmp_path)
    results = json.loads((tmp_path / "hnn_paper.json").read_text())
    assert (tmp_path / "hnn_paper.png").stat().st_size > 10_000
    tasks = results["tasks"]
    assert list(tasks) == ["mass-spring", "real-pendulum", "two-body"]
    for task, r in tasks.items():
        assert sorted(r["seeds"]) == ["0", "1"]
        for key in ("train_loss", "test_loss", "energy_mse", "state_mse"):
            for model in ("mlp", "hnn"):
                mean, std = r[f"{key}_{model}"]
                assert math.isfinite(mean) and mean > 0 and math.isfinite(std) and std >= 0, (
                    task, key, model)
        # the paper's numbers travel with ours
        assert r["paper"]["energy_hnn"] == list(load_script("hnn_paper").PAPER[task]["energy_hnn"])
    # the paper's headline, already after a few hundred steps: the HNN conserves the
    # mass-spring energy better than the baseline, in every seed
    ms = tasks["mass-spring"]
    assert all(ratio > 1 for ratio in ms["energy_ratio_per_seed"]), ms["energy_ratio_per_seed"]
    # and the damped pendulum's energy decays along the truth (the HNN cannot follow it)
    row = tasks["real-pendulum"]["seeds"]["0"]["hnn"]
    assert row["truth_energy_curve"][-1] < 0.9 * row["truth_energy_curve"][0]
    # the markdown is made from the JSON alone
    text = (tmp_path / "hnn_paper.md").read_text()
    assert text == load_script("hnn_paper").markdown(results)
    assert f"{ms['energy_ratio']:.3g}" in text and "python experiments/hnn_paper.py --quick" in text
