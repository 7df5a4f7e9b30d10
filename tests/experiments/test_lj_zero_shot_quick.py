"""``experiments/lj_zero_shot.py --quick``: a cutoff graph Hamiltonian trained on small
Lennard-Jones fluids, rolled out on neighbour lists at larger sizes beside the ground
truth; JSON, PNG and the markdown made from the JSON; a second run resumes every piece."""

from __future__ import annotations

import json
import math


def test_quick_run_and_resume(tmp_path, run_script, load_script):
    out, work = tmp_path / "out", tmp_path / "work"
    run_script("lj_zero_shot", "--quick", "--out", out, "--work", work)
    results = json.loads((out / "lj_zero_shot.json").read_text())
    assert (out / "lj_zero_shot.png").stat().st_size > 10_000
    sizes = results["sizes"]
    assert [r["particles"] for r in sizes] == [256, 1024]
    for r in sizes:
        assert r["finite"] and r["neighbour_rebuilds"] >= 1 and r["edges_last"] > 0
        for key in ("force_nmse", "energy_drift_model", "energy_drift_truth", "rdf_error_model",
                    "rdf_error_initial_state", "short_error_model", "model_us_per_particle_step",
                    "truth_us_per_particle_step"):
            assert math.isfinite(r[key]) and r[key] >= 0, key
        # the ground truth (velocity Verlet, dt 0.005) keeps the true energy to 1e-3 per
        # particle, and its structure is a fluid's: g(r) far from an ideal gas's 1
        assert r["energy_drift_truth"] < 1e-3
        assert r["rdf_error_ideal_gas"] > 0.3
        g = r["rdf"]["truth"]
        assert max(g) > 1.5 and min(g[:5]) == 0  # a first-neighbour peak, a hard core
    text = (out / "lj_zero_shot.md").read_text()
    assert text == load_script("lj_zero_shot").markdown(results)
    assert "| 1,024 |" in text
    # resumed: the data, the trained model and both sizes are kept, not recomputed
    proc = run_script("lj_zero_shot", "--quick", "--out", out, "--work", work)
    assert proc.stdout.count("kept from") == 2
    again = json.loads((out / "lj_zero_shot.json").read_text())
    assert again["sizes"] == sizes
