"""``experiments/hnn_paper.py --quick``: runs end to end, writes JSON, PNG and a markdown
fragment made from the JSON, and already shows HNN's lower energy error on mass-spring."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "hnn_paper.py"


def _module():
    spec = importlib.util.spec_from_file_location("hnn_paper", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT.relative_to(ROOT)), "--quick", "--out",
                           str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
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
        assert r["paper"]["energy_hnn"] == list(_module().PAPER[task]["energy_hnn"])
    # the paper's headline, already after a few hundred steps: the HNN conserves the
    # mass-spring energy better than the baseline, in every seed
    ms = tasks["mass-spring"]
    assert all(ratio > 1 for ratio in ms["energy_ratio_per_seed"]), ms["energy_ratio_per_seed"]
    # and the damped pendulum's energy decays along the truth (the HNN cannot follow it)
    row = tasks["real-pendulum"]["seeds"]["0"]["hnn"]
    assert row["truth_energy_curve"][-1] < 0.9 * row["truth_energy_curve"][0]
    # the markdown is made from the JSON alone
    text = (tmp_path / "hnn_paper.md").read_text()
    assert text == _module().markdown(results)
    assert f"{ms['energy_ratio']:.3g}" in text and "python experiments/hnn_paper.py --quick" in text
