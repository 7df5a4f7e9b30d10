"""``experiments/hogn_paper.py --quick``: runs end to end on both systems, writes JSON,
plots and a markdown fragment made from the JSON alone, with finite errors in range,
every integrator evaluated where it is valid (never a splitting method on a
non-separable H), every dt change evaluated, and the 16-particle zero-shot rollouts run."""

from __future__ import annotations

import json
import math

from hogn import integrators


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
        # (b) each integrator exactly where it is valid: the splitting methods only on a
        # separable H (SeparableHOGN, the true H), none on DeltaGN (a stepper); the
        # symplectic methods for any H on HOGN and OGN
        assert res["separable"] == {mod.REFERENCE: True, "deltagn": False, "ogn": False,
                                    "hogn": False, "separable-hogn": True}
        rows = {(r["model"], r["integrator"]): r for r in res["integrators"]}
        splitting = {i for i in integrators.names() if integrators.get(i).needs_separable}
        assert splitting >= {"leapfrog", "yoshida4"}
        assert not [(m, i) for m, i in rows if i in splitting and not res["separable"][m]]
        assert set(rows) == {(m, i) for m in models if m != "deltagn" for i in mod.INTEGRATORS
                             if integrators.get(i).fits(res["separable"][m])}
        for m in ("hogn", "ogn"):
            assert {(m, "implicit_midpoint"), (m, "gauss4"), (m, "rk4")} <= set(rows)
        assert {("separable-hogn", "leapfrog"), (mod.REFERENCE, "yoshida4")} <= set(rows)
        for (model, integ), r in rows.items():
            assert "failed" not in r and _in_unit(r["rel_error"]), (model, integ)
        # the truth's own integrator error orders as the integrators' orders
        ref = {i: rows[(mod.REFERENCE, i)]["rel_error"] for i in mod.INTEGRATORS}
        assert ref["rk4"] < ref["rk2"] < ref["euler"] and ref["yoshida4"] < ref["leapfrog"]
        assert ref["gauss6"] < ref["gauss4"] < ref["implicit_midpoint"]
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
    # the integrator claim is judged on the valid methods only
    evidence = result["claims"]["integrator_change"]["systems"]["spring-nbody"]["evidence"]
    assert {"hogn/implicit_midpoint", "hogn/gauss4", "separable-hogn/leapfrog"} <= set(evidence)
    assert not [k for k in evidence if k.split("/")[0] in ("ogn", "hogn")
                and k.split("/")[1] in splitting]
    # the markdown is made from the JSON alone; the invalid cells read as such
    text = (tmp_path / "hogn_paper.md").read_text()
    assert text == mod.markdown(result)
    hogn_rows = [line for line in text.splitlines() if line.startswith("| hogn | ")]
    assert any(line.endswith(f"| {mod.INVALID} | {mod.INVALID} |") for line in hogn_rows)
    # an implicit method whose stages did not converge counts against the claim, and the
    # markdown says so with the retry at a smaller step
    res = result["systems"]["gravity-nbody"]
    row = next(r for r in res["integrators"]
               if (r["model"], r["integrator"]) == ("hogn", "implicit_midpoint"))
    row.update(rel_error=None, energy_drift=None, failed="step 7 of 10: did not converge",
               retry={"substeps": 2, "rel_error": 0.5, "energy_drift": 0.1})
    claims = mod.check_claims(result["systems"], result["config"])
    verdict = claims["integrator_change"]["systems"]["gravity-nbody"]
    assert verdict["holds"] is False
    assert verdict["evidence"]["hogn/implicit_midpoint"] == "no convergence"
    result["claims"] = claims
    text = mod.markdown(result)
    assert "- hogn, implicit_midpoint: step 7 of 10: did not converge. Retried: with 2 " in text
    assert "| hogn | " in text and "| no convergence |" in text
    assert "python experiments/hogn_paper.py --quick --seed 0" in text
    assert "results/hogn_paper_sizes.png" in text
