"""``experiments/meta_learning.py --quick``: the leave-one-system-out protocol end to end
for both models and all seven systems, run as separate pieces (one model per
invocation; the second report assembles both), JSON + markdown (made from the JSON) +
two figures per model, with finite errors, adaptation that lowers every method's loss on
its K points, paired verdicts and a summary block whose counts are those verdicts."""

from __future__ import annotations

import json
import math

import pytest

# ~165 s of the default run on 2 cores; the meta-learning code itself is tested in
# tests/meta. Run with: pytest -m slow tests/experiments
pytestmark = pytest.mark.slow

SYSTEMS = ["mass-spring", "pendulum", "double-pendulum", "two-body", "three-body",
           "magnetic-mirror", "henon-heiles"]
METHODS = ["meta", "random", "pretrained"]
METRICS = ["paper_mse", "derivative_nmse", "short_rollout_nmse"]
PAPER_SYSTEMS = ["magnetic-mirror", "double-pendulum", "pendulum", "mass-spring"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory, run_script):
    out = tmp_path_factory.mktemp("meta")
    # two invocations, one model each: the second report holds both
    run_script("meta_learning", "--quick", "--quiet", "--out", out, "--models", "hnn")
    first = json.loads((out / "meta_learning.json").read_text())
    run_script("meta_learning", "--quick", "--quiet", "--out", out, "--models", "hogn")
    return out, first, json.loads((out / "meta_learning.json").read_text())


def _check_system(holdout, res, steps):
    assert holdout not in res["training_systems"] and len(res["training_systems"]) == 6
    assert res["steps"] == steps
    for metric in METRICS:
        for method in METHODS:
            rows = res["summary"][metric][method]
            assert [r["step"] for r in rows] == steps
            assert all(r["diverged"] == 0 and r["finite"] == 2 for r in rows), (
                holdout, metric, method)
            for r in rows:
                assert math.isfinite(r["mean"]) and r["mean"] > 0
                assert 0 < r["ci_low"] <= r["mean"] <= r["ci_high"] or r["ci_low"] <= 0
            # the mean of the saved per-trajectory values is the reported mean
            per_traj = res["per_trajectory"][metric][method]
            assert len(per_traj) == 2 and all(len(t) == len(steps) for t in per_traj)
            assert math.isclose(sum(t[0] for t in per_traj) / 2, rows[0]["mean"],
                                rel_tol=1e-9)
    for method in METHODS:
        # gradient steps on the K points lower the loss on those points, every time
        loss = res["support_loss"][method]
        assert all(a < b for a, b in zip(loss["after"], loss["before"], strict=True)), (
            holdout, method, loss)
    # the pretrained and meta-trained runs start from the random-init weights, so
    # they differ from it only through training: not all three step-0 errors agree
    zero = {m: res["summary"]["paper_mse"][m][0]["mean"] for m in METHODS}
    assert zero["meta"] != zero["random"] and zero["pretrained"] != zero["random"]
    # paired comparisons at the compared steps that were evaluated (quick: 1 and 5)
    for metric in METRICS:
        assert set(res["paired"][metric]) == {"meta_vs_random", "meta_vs_pretrained"}
        for pair in res["paired"][metric].values():
            assert pair["steps"] == [1, 5] and list(pair["comparisons"]) == ["1", "5"]
            assert all(c["n"] == 2 and c["dropped"] == 0 for c in pair["comparisons"].values())
            wins = [int(s) for s, c in pair["comparisons"].items()
                    if c["median_ratio"] < 1 and c["p_value"] < 0.05]
            assert pair["wins"] == wins and pair["ahead"] == (2 * len(wins) > 2)
    seconds = res["seconds"]
    assert seconds["train"] > 0 and seconds["eval"] > 0


def test_quick_pieces_assemble_into_one_report(quick):
    out, first, results = quick
    assert list(first["models"]) == ["hnn"] and list(first["summary"]) == ["hnn"]
    assert results["quick"] is True and list(results["models"]) == ["hnn", "hogn"]
    for model in ("hnn", "hogn"):
        for kind in ("curves", "trajectories"):
            name = f"meta_learning_{model}_{kind}.png"
            assert (out / name).stat().st_size > 10_000, name
        res = results["models"][model]
        assert list(res["systems"]) == SYSTEMS and res["missing"] == []
        for holdout, detail in res["systems"].items():
            _check_system(holdout, detail, results["sizes"]["eval_steps"])
    # the hnn pieces were not redone by the second invocation
    assert results["models"]["hnn"]["systems"]["pendulum"]["seconds"] == \
        first["models"]["hnn"]["systems"]["pendulum"]["seconds"]
    assert results["models"]["hogn"]["systems"]["pendulum"]["protocol"]["model_args"] == \
        results["sizes"]["model_args"]["hogn"]
    # wall time per piece and their total
    pieces = results["seconds"]["pieces"]
    assert list(pieces) == ["hnn", "hogn"] and all(list(p) == SYSTEMS for p in pieces.values())
    total = results["seconds"]["total"]
    assert math.isclose(total["train"], sum(s["train"] for p in pieces.values()
                                            for s in p.values()), rel_tol=1e-12)
    assert math.isclose(total["all"], total["train"] + total["eval"], rel_tol=1e-12)


def test_the_summary_block_counts_the_per_system_verdicts(quick):
    _, _, results = quick
    summary = results["summary"]
    assert list(summary) == ["hnn", "hogn"]
    for model, by_metric in summary.items():
        assert list(by_metric) == METRICS
        systems = results["models"][model]["systems"]
        for metric, block in by_metric.items():
            assert set(block) == {"systems", "ahead_of_random", "ahead_of_pretrained",
                                  "ahead_of_random_systems", "ahead_of_pretrained_systems"}
            assert block["systems"] == 7
            for pair, key in (("meta_vs_random", "ahead_of_random"),
                              ("meta_vs_pretrained", "ahead_of_pretrained")):
                ahead = [h for h, r in systems.items() if r["paired"][metric][pair]["ahead"]]
                assert block[f"{key}_systems"] == ahead
                assert block[key] == len(ahead)
        # the comparison with the paper's four systems uses the same verdicts
        versus = results["versus_paper"][model]
        assert versus["paper_mse"]["evaluated"] == PAPER_SYSTEMS
        assert versus["paper_mse"]["ahead"] == [
            h for h in PAPER_SYSTEMS if systems[h]["paired"]["paper_mse"]["meta_vs_random"][
                "ahead"]]
        assert versus["paper_mse_mean"]["ahead"] == [
            h for h in PAPER_SYSTEMS
            if systems[h]["compare"]["paper_mse"]["meta_vs_random"]["ahead"]]
        counts = results["models"][model]["counts"]
        assert counts["systems"] == 7 and counts["meta_beats_random"] == sum(
            r["compare"]["paper_mse"]["meta_vs_random"]["ahead"] for r in systems.values())
    assert results["paper"] == {"systems": PAPER_SYSTEMS, "evaluated": 4,
                                "meta_ahead_of_random": 4}


def test_the_markdown_is_made_from_the_json(quick):
    out, _, results = quick
    text = (out / "meta_learning.md").read_text()
    hnn = results["models"]["hnn"]
    first = hnn["systems"]["mass-spring"]["summary"]["paper_mse"]["meta"][0]["mean"]
    assert f"| meta-trained | {first:.3g} ±" in text
    assert f"**{hnn['counts']['meta_beats_random']} of 7**" in text
    assert "paper: 4 of its 4 evaluated systems" in text and "of 6)" not in text
    assert "Reduced sizes" in text and "### HOGN, henon-heiles held out" in text
    block = results["summary"]["hogn"]["derivative_nmse"]
    assert (f"| HOGN | derivative NMSE | 7 | {block['ahead_of_random']} (" in text)
    for model in ("hnn", "hogn"):
        versus = results["versus_paper"][model]["paper_mse_mean"]
        line = next(x for x in text.splitlines() if x.startswith(
            f"- {model.upper()}, paper MSE, mean"))
        assert f"**{len(versus['ahead'])} of 4**" in line
        assert ("differs from the paper" in line) == bool(versus["not_ahead"])


def test_report_only_reassembles_and_bad_options_are_refused(quick, tmp_path, load_script,
                                                             capsys):
    out, _, results = quick
    script = load_script("meta_learning")
    again = tmp_path / "again"
    assert script.main(["--quick", "--quiet", "--report-only", "--out", str(again),
                        "--runs", str(out / "meta_learning_runs")]) == 0
    rebuilt = json.loads((again / "meta_learning.json").read_text())
    assert rebuilt["summary"] == results["summary"]
    assert rebuilt["models"]["hogn"]["systems"]["two-body"]["paired"] == \
        results["models"]["hogn"]["systems"]["two-body"]["paired"]
    assert rebuilt["seeds"] == {"0": results["summary"]} and "Across seeds" not in (
        again / "meta_learning.md").read_text()
    # another seed's report beside it: seed 0's report sets their counts side by side
    other = {**results, "seed": 1, "summary": {"hnn": results["summary"]["hnn"]}}
    (again / "meta_learning_seed1.json").write_text(json.dumps(other))
    assert script.main(["--quick", "--quiet", "--report-only", "--out", str(again),
                        "--runs", str(out / "meta_learning_runs")]) == 0
    both = json.loads((again / "meta_learning.json").read_text())
    assert list(both["seeds"]) == ["0", "1"] and both["seeds"]["1"] == other["summary"]
    text = (again / "meta_learning.md").read_text()
    assert "## Across seeds" in text and "| seed 0 | seed 1 |" in text
    c = results["summary"]["hogn"]["derivative_nmse"]
    assert (f"| HOGN | derivative NMSE | {c['ahead_of_random']} / {c['ahead_of_pretrained']} "
            f"of {c['systems']} | – |") in text
    # nothing finished with these options (other iterations): a clear one-line error
    capsys.readouterr()
    assert script.main(["--quick", "--quiet", "--report-only", "--iterations", "3", "--out",
                        str(tmp_path / "none"), "--runs", str(out / "meta_learning_runs")]) == 2
    err = capsys.readouterr()
    assert "no finished piece of seed 0" in err.err and "other options" in err.out
    with pytest.raises(SystemExit) as exc:
        script.main(["--quick", "--models", "ogn"])
    assert exc.value.code == 2
    assert "invalid choice: 'ogn'" in capsys.readouterr().err
