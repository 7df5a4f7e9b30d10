"""``benchmarks/bench_generate.py --quick`` runs and reports what must hold whatever the
timing: every registered system is benchmarked, our ground truth agrees with a tight
scipy reference, and each scipy peer (one trajectory at a time, and all trajectories
packed into one call) runs at the loosest tried tolerance whose error is no larger
than ours, i.e. at matched accuracy (no timing is asserted)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import systems

ROOT = Path(__file__).resolve().parents[2]


def _check_matched(record: dict, ours: float, rtols: list[float], errors: dict) -> None:
    """``record['rtol']`` is the loosest tried tolerance with error <= ours (or, when
    none reached it, the tightest, flagged unmatched)."""
    tried = [t for t in rtols if f"{t:g}" in errors]
    assert tried == rtols[: len(tried)]  # tried loosest first, none skipped
    assert record["rtol"] == tried[-1]
    for tol in tried[:-1]:  # every looser one missed our accuracy
        assert errors[f"{tol:g}"] > ours
    last = errors[f"{tried[-1]:g}"]
    assert record["matched"] is (last <= ours)
    if not record["matched"]:
        assert record["rtol"] == rtols[-1]


def test_quick_generate_benchmark(tmp_path):
    out = tmp_path / "bench_generate.json"
    proc = subprocess.run([sys.executable, "benchmarks/bench_generate.py", "--quick",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "packed s" in proc.stdout and "1-by-1 s" in proc.stdout  # the table was printed
    report = json.loads(out.read_text())
    assert report["benchmark"] == "bench_generate" and report["quick"] is True
    # every registered system whose ground truth is the adaptive DOP853 (scipy's peer)
    assert set(report["systems"]) == {n for n in systems.names()
                                      if systems.get(n).ground_truth_method == "adaptive"}
    assert "lennard-jones" not in report["systems"]
    assert set(report["one_at_a_time_targets"]) == {"three-body", "pendulum"}
    rtols = report["rtols"]
    assert rtols == sorted(rtols, reverse=True) and report["reference_tol"] < rtols[-1]
    for name, r in report["systems"].items():
        ours = r["accuracy"]["ours_max_abs_error"]
        # the ground truth agrees with scipy's DOP853 at its tightest tolerance (the
        # bound of tests/systems/test_groundtruth.py)
        assert 0 < ours < 1e-7, (name, ours)
        one = r["scipy"]["DOP853"]
        _check_matched(one, ours, rtols, one["errors_by_rtol"])
        assert one["max_abs_error"] == one["errors_by_rtol"][f"{one['rtol']:g}"]
        assert one["speedup"] > 0 and math.isfinite(one["speedup"])
        assert (one["meets_target"] is None) is (name not in report["one_at_a_time_targets"])
        packed = r["packed"]
        assert packed["method"] == "DOP853" and packed["seconds"] > 0
        if not packed["timed_out"]:
            errors = {k: v["max_abs_error"] for k, v in packed["tried"].items()}
            _check_matched(packed, ours, rtols, errors)
        assert packed["faster"] is (packed["speedup"] > 1)
        assert r["targets"] == {"one_at_a_time_20x": one["meets_target"],
                                "faster_than_packed": packed["faster"]}
        assert r["pass"] is (one["meets_target"] is not False and packed["faster"])
    assert report["pass"] is all(r["pass"] for r in report["systems"].values())
    assert {"torch", "load_average_start", "load_average_end"} <= report["machine"].keys()
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically
