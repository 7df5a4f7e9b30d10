"""``benchmarks/bench_ddp.py --quick`` runs ``hogn train`` in one process (one and two
threads) and in two under torchrun, and reports what must hold whatever the timing:
every epoch recorded and the same result in every configuration (no timing is
asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with the gloo backend is not available")
def test_quick_ddp_benchmark(tmp_path):
    out = tmp_path / "bench_ddp.json"
    proc = subprocess.run([sys.executable, "benchmarks/bench_ddp.py", "--quick",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "samples/s" in proc.stdout and "speed-up" in proc.stdout  # the table was printed
    report = json.loads(out.read_text())
    assert report["benchmark"] == "ddp" and report["config"]["quick"] is True
    assert report["checks"] == {"epochs_recorded": True,
                                "same_result_in_every_configuration": True}
    rows = report["rows"]
    assert [(r["processes"], r["threads each"]) for r in rows] == [(1, 1), (1, 2), (2, 1)]
    for row in rows:
        assert row["epochs recorded"] == [report["config"]["epochs"]]
        assert row["samples/s"] > 0 and row["samples/epoch"] == rows[0]["samples/epoch"]
    assert rows[0]["speed-up"] == 1.0 and rows[0]["max |Δw| vs 1 process"] == 0.0
    assert {"torch", "load_average_start", "load_average_end"} <= report["machine"].keys()
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically
