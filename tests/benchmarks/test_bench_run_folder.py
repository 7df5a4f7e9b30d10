"""``benchmarks/bench_run_folder.py --quick`` runs and reports what must hold whatever
the timing: every epoch trained and recorded, one checkpoint per short run, and the
same weights with and without a run folder (no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_folder_benchmark(tmp_path):
    out = tmp_path / "bench_run_folder.json"
    proc = subprocess.run([sys.executable, "benchmarks/bench_run_folder.py", "--quick",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "folder code ms/epoch" in proc.stdout  # the table was printed
    report = json.loads(out.read_text())
    assert report["benchmark"] == "run_folder" and report["config"]["quick"] is True
    assert report["checks"] == {"epochs_recorded": True,
                                "same_weights_with_and_without_folder": True,
                                "one_checkpoint_per_short_run": True}
    assert report["targets"] == {}  # timing targets only in the full run
    rows = report["rows"]
    assert {(r["model"], r["epochs"]) for r in rows} == {
        (m, e) for m in ("hnn", "hogn") for e in report["config"]["epochs"]}
    for row in rows:
        assert row["epochs recorded"] == [row["epochs"]]
        assert row["checkpoints"] == [1] and row["same weights"] is True
        assert row["ms/epoch bare"] > 0 and row["folder code ms/epoch"] > 0
    assert {"torch", "load_average_start", "load_average_end"} <= report["machine"].keys()
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically
