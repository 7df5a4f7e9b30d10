"""``benchmarks/bench_rollout.py --quick`` runs and reports what must hold whatever the
timing: the fast rollout equals the straightforward one in float64, and (with
torchdiffeq) differs from torchdiffeq's rk4 — Kutta's 3/8 rule — only by a
fourth-order method difference; the import table is complete (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HAVE_TORCHDIFFEQ = importlib.util.find_spec("torchdiffeq") is not None


def test_quick_rollout_benchmark(tmp_path):
    out = tmp_path / "bench_rollout.json"
    proc = subprocess.run([sys.executable, "benchmarks/bench_rollout.py", "--quick",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "hogn.rollout ms/step" in proc.stdout  # the table was printed
    report = json.loads(out.read_text())
    assert report["benchmark"] == "rollout" and report["config"]["quick"] is True
    assert {r["model"] for r in report["rollout"]} == {"hogn-64", "hnn"}
    for row in report["agreement"]:
        assert row["ours vs direct"] < 1e-10
    checks = report["checks"]
    assert checks["ours_equals_direct_float64"] is True
    if HAVE_TORCHDIFFEQ:
        assert report["torchdiffeq"] and checks["ours_vs_torchdiffeq_fourth_order"] is True
        for row in report["rollout"]:
            assert row["torchdiffeq (autograd) ms/step"] > 0 and row["td autograd / ours"] > 0
        for row in report["agreement"]:
            assert row["ours vs td (dt)"] < 1e-6
    else:
        assert "torchdiffeq is not installed" in proc.stdout
        assert checks["ours_vs_torchdiffeq_fourth_order"] is None
    imports = {r["import"]: r for r in report["imports"]}
    assert set(imports) == {"torch", "hogn", "systems", "meta"}
    assert imports["torch"]["/ import torch"] == 1.0
    assert all(r["median s"] > 0 for r in imports.values())
    assert {"torch", "load_average_start", "load_average_end"} <= report["machine"].keys()
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically
