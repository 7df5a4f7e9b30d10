"""``benchmarks/bench_train.py --quick`` and ``benchmarks/bench_dtype.py --quick`` run and
report what must hold whatever the timing: the written HOGN gradient path gives the
reference PyG implementation's loss and parameter gradients (float64 1e-10, float32
1e-5), and the float32/float64 comparison trains the same model from the same weights
(no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, out: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, f"benchmarks/{script}", "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_quick_train_benchmark(tmp_path):
    out = tmp_path / "bench_train.json"
    proc = _run("bench_train.py", out)
    assert "speed-up" in proc.stdout and "grad rel diff" in proc.stdout
    report = json.loads(out.read_text())
    assert report["benchmark"] == "bench_train" and report["quick"] is True
    tolerance = {"float64": 1e-10, "float32": 1e-5}
    assert {c["dtype"] for c in report["cases"]} == set(tolerance)
    for case in report["cases"]:
        assert case["grad_rel_diff"] < tolerance[case["dtype"]], case
        assert case["loss_rel_diff"] < tolerance[case["dtype"]], case
        assert case["ours_ms"] > 0 and case["reference_ms"] > 0
        assert case["ours_gflop"] < case["reference_gflop"]  # the split layer saves FLOPs
    assert not list(tmp_path.glob(".*.tmp"))


def test_quick_dtype_benchmark(tmp_path):
    out = tmp_path / "bench_dtype.json"
    proc = _run("bench_dtype.py", out)
    assert "f32 mean inside" in proc.stdout
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [r["dtype"] for r in rows] == ["float32", "float64"] * report["seeds"]
    for f32, f64 in zip(rows[0::2], rows[1::2], strict=True):
        assert f32["seed"] == f64["seed"]
        # same initial weights and batches: after one short epoch the two dtypes agree
        # to float32 rounding, far closer than two seeds do
        assert abs(f32["rel_error"] - f64["rel_error"]) < 1e-3 * f64["rel_error"]
    seeds = [r["rel_error"] for r in rows[1::2]]
    assert max(seeds) - min(seeds) > 0  # different seeds give different models
