"""``experiments/argon_md.py --quick``: ASE frames through ``hogn import`` and ``hogn
train`` (the commands, no glue), then ASE's MD on ``hogn.ase.Calculator`` beside ASE's
own; the markdown made from the JSON; a second run reuses the frames, data and run."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("ase")


def test_quick_run_and_resume(tmp_path, run_script, load_script):
    out, work = tmp_path / "out", tmp_path / "work"
    run_script("argon_md", "--quick", "--out", out, "--work", work)
    result = json.loads((out / "argon_md_quick.json").read_text())
    for name in ("train.extxyz", "test.extxyz", "argon.pt", "run-h8/best.pt"):
        assert (work / name).is_file(), name
    width = result["widths"]["8"]
    assert width["hidden"] == 8 and width["parameters"] > 0
    md = width["md"]["108"]
    # ASE's own MD keeps its energy; its temperature is a solid's near 50 K
    assert md["energy_excursion_mev_per_atom_ase"] < 0.01
    assert 30 < md["temperature_k_ase"][0] < 80
    for key in ("force_relative_error_start", "energy_excursion_mev_per_atom",
                "rdf_abs_difference_integral"):
        assert math.isfinite(md[key]) and md[key] >= 0, key
    assert width["cost_ms"]["108"]["ase_lj"][0] > 0
    text = (out / "argon_md_quick.md").read_text()
    assert text == load_script("argon_md").render(result)
    stamp = (work / "run-h8" / "best.pt").stat().st_mtime
    run_script("argon_md", "--quick", "--out", out, "--work", work)
    assert (work / "run-h8" / "best.pt").stat().st_mtime == stamp  # kept, not retrained
