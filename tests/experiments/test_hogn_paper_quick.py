"""``experiments/hogn_paper.py --quick``: runs end to end on both systems, writes JSON,
plots and a markdown fragment made from the JSON alone, with finite errors in range,
every integrator and dt change evaluated, and the 16-particle zero-shot rollouts run."""

from __future__ import annotations

import json
import math


def _in_unit(x: float) -> bool:
    return x is not None and math.isfinite(x) and 0 <= x <= 1


def test_quick_run(tmp_path, run_script, load_script):
    mod = load_script("hogn_paper")
    run_script("hogn_paper", "--quick", "--out", tmp_path)
    result = json.loads((tmp_path / "hogn_paper.json").read_text())
    assert result["quick"] is True
    assert list(result["systems"]) == list(mod.SYSTEMS)
    models = [mod.REFERENCE, *mod.MODELS]
    for name, res in result["systems"].items():
        assert (tmp_path / f"hogn_paper_{name}.png").stat().st_size > 10_000
        assert set(res["training"]) == set(mod.MODELS)
        for t in res["training"].values():
            assert math.isfinite(t["best_val_loss"]) and t["best_val_loss"] > 0
        # (a) every model rolled out over the whole horizon, errors in [0, 1]
        horizon = result["config"]["horizon"]
        assert len(res["curves"]["t"]) == horizon + 1
        for label in models:
            curve = res["curves"]["rel_error"][label]
            assert len(curve) == horizon + 1 and all(_in_unit(x) for x in curve[1:]), label
            assert all(math.isfinite(x) and x >= 0 for x in res["curves"]["energy_error"][label])
        assert [r["model"] for r in res["rollout"]] == models
        for row in res["rollout"]:
            assert all(_in_unit(row[f"rel_error@{h}"]) for h in result["config"]["horizons"])
        # the truth through RK4 is far better than any model barely trained
        ref = res["rollout"][0]["rel_error@20"]
        assert ref < 1e-3 and all(r["rel_error@20"] > 10 * ref for r in res["rollout"][1:])
        # (b) every integrator for every derivative model; DeltaGN has none (n/a)
        rows = {(r["model"], r["integrator"]): r for r in res["integrators"]}
        assert set(rows) == {(m, i) for m in models for i in mod.INTEGRATORS}
        for (model, integ), r in rows.items():
            if model == "deltagn":
                assert r["rel_error"] is None
            else:
                assert _in_unit(r["rel_error"]), (model, integ)
        # the truth's own integrator error orders as the integrators' orders
        ref = {i: rows[(mod.REFERENCE, i)]["rel_error"] for i in mod.INTEGRATORS}
        assert ref["rk4"] < ref["rk2"] < ref["euler"] and ref["yoshida4"] < ref["leapfrog"]
        dts = {(r["model"], r["dt_factor"]): r for r in res["dt_change"]}
        assert set(dts) == {(m, f) for m in models for f in (1.0, 0.5, 2.0)}
        assert dts[("hogn", 2.0)]["steps"] * 2 == dts[("hogn", 1.0)]["steps"]
        assert _in_unit(dts[("hogn", 0.5)]["final_rel_error"])
        assert dts[("deltagn", 0.5)]["rel_error"] is None
        # (c) the 16-particle zero-shot rollouts ran for every model
        sized = [r for r in res["sizes"] if r["particles"] == 16]
        assert [r["model"] for r in sized] == models
        assert all(_in_unit(r["rel_error"]) and r["steps"] >= 10 for r in sized)
        assert all(r["diverged"] is False for r in sized)
        assert res["truth"]["n16"]["particles"] == 16
        assert res["truth"]["n16"]["max_rel_energy_drift"] < 1e-6
    assert (tmp_path / "hogn_paper_sizes.png").stat().st_size > 10_000
    # every claim judged on every system
    assert set(result["claims"]) == set(mod.CLAIMS)
    for claim in result["claims"].values():
        assert set(claim["systems"]) == set(mod.SYSTEMS)
        assert all(isinstance(s["holds"], bool) for s in claim["systems"].values())
    # the markdown is made from the JSON alone
    text = (tmp_path / "hogn_paper.md").read_text()
    assert text == mod.markdown(result)
    assert "python experiments/hogn_paper.py --quick --seed 0" in text
    assert "results/hogn_paper_sizes.png" in text
