"""``experiments/hnn_paper.py --quick``: runs end to end through ``hogn.train`` on the
authors' code's presets, writes JSON, PNG and a markdown fragment made from the JSON,
already shows HNN's lower energy error on mass-spring, and both models at the
observation-noise floor of the code's spring (H = q² + p²: 4σ², not the report's σ²)."""

from __future__ import annotations

import json
import math


def test_quick_run(tmp_path, run_script, load_script):
    run_script("hnn_paper", "--quick", "--out", tmp_path)
    results = json.loads((tmp_path / "hnn_paper.json").read_text())
    script = load_script("hnn_paper")
    assert (tmp_path / "hnn_paper.png").stat().st_size > 10_000
    tasks = results["tasks"]
    assert list(tasks) == ["mass-spring", "real-pendulum", "two-body"]
    for task, r in tasks.items():
        assert r["preset"] == script.TASKS[task]["preset"]  # the code's presets
        assert sorted(r["seeds"]) == ["0", "1"]
        for key in ("train_loss", "test_loss", "energy_mse", "state_mse"):
            for model in ("mlp", "hnn"):
                mean, std = r[f"{key}_{model}"]
                assert math.isfinite(mean) and mean > 0 and math.isfinite(std) and std >= 0, (
                    task, key, model)
        for row in r["seeds"].values():  # trained by hogn.train: exactly the steps asked
            for model in ("mlp", "hnn"):
                assert row[model]["optimizer_steps"] == r["steps"]
                assert row[model]["full_batch"] == (r["batch"] == "full")
        # the paper's numbers travel with ours
        assert r["paper"]["energy_hnn"] == list(script.PAPER[task]["energy_hnn"])
    # the paper's headline, already after a few hundred steps: the HNN conserves the
    # mass-spring energy better than the baseline, in every seed
    ms = tasks["mass-spring"]
    assert all(ratio > 1 for ratio in ms["energy_ratio_per_seed"]), ms["energy_ratio_per_seed"]
    assert (ms["train_trajectories"], ms["test_trajectories"], ms["points"]) == (10, 10, 30)
    # noise floor of H = q² + p² at σ = 0.1: 4σ² = 0.04, a little less for the radii
    # drawn (the field is 2p, −2q); both models end near it, as the paper's 37e-3
    floor = ms["noise_floor"][0]
    assert 0.032 < floor < 0.046, floor
    for model in ("mlp", "hnn"):
        assert 0.75 * floor < ms[f"test_loss_{model}"][0] < 1.5 * floor, (model, ms)
    assert tasks["two-body"]["noise_floor"] == [0.0, 0.0]  # the code adds no input noise
    # and the damped pendulum's energy decays along the truth (the HNN cannot follow it)
    row = tasks["real-pendulum"]["seeds"]["0"]["hnn"]
    assert row["truth_energy_curve"][-1] < 0.9 * row["truth_energy_curve"][0]
    # the markdown is made from the JSON alone
    text = (tmp_path / "hnn_paper.md").read_text()
    assert text == script.markdown(results)
    assert f"{ms['energy_ratio']:.3g}" in text and "python experiments/hnn_paper.py --quick" in text
    assert "`hnn-mass-spring`" in text


def test_before_after_table(tmp_path, load_script):
    """The before/after rows come from summaries of results JSONs; a run compared with
    itself is within its seed spread everywhere, a shifted one is not."""
    script = load_script("hnn_paper")
    r = {"label": "Ideal mass-spring", "preset": "hnn-mass-spring", "scale": 1e3,
         "weight_decay": 1e-4, "noise_floor": [0.04, 0.001], "paper": None,
         "seeds": {"0": {}, "1": {}}}
    for model in ("mlp", "hnn"):
        for i, key in enumerate(script.METRICS):
            r[f"{key}_{model}"] = [0.01 * (i + 1), 0.001]
            for seed in ("0", "1"):
                r["seeds"][seed].setdefault(model, {})[key] = 0.01 * (i + 1)
    results = {"tasks": {"mass-spring": r}, "config": {"command": "run"}}
    same = script.summarize(results, "same run")
    shifted = json.loads(json.dumps(same))
    shifted["tasks"]["mass-spring"]["test_loss_hnn"] = [0.05, 0.001]
    results["compare"] = {"before": same, "report": same}
    table = "\n".join(script.before_after(results))
    assert table.count(" ✓ |") == 6 and "✗" not in table
    results["compare"] = {"before": shifted, "report": same}
    table = "\n".join(script.before_after(results))
    assert table.count(" ✓ |") == 5 and table.count(" ✗ |") == 1
    assert "40 ± 1" in table  # the noise floor, ×10³
