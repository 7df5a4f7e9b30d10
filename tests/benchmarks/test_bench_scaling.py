"""``benchmarks/bench_scaling.py --quick`` runs and reports what must hold whatever the
timing: every method at every size finds the same graph as scipy's cKDTree (twice its
pair count: both directions), open and periodic; the peak-memory child run works (no
timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_quick_scaling_benchmark(tmp_path):
    out = tmp_path / "bench_scaling.json"
    proc = subprocess.run([sys.executable, "benchmarks/bench_scaling.py", "--quick",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          env=ENV, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "| d | N | method | edges |" in proc.stdout  # the markdown table was printed
    report = json.loads(out.read_text())
    assert report["benchmark"] == "scaling" and report["config"]["quick"] is True
    assert report["complete"] is True and report["sections"]["neighbours"]["complete"]
    assert report["checks"] == {"neighbours.edges_equal_ckdtree_pairs_x2": True}
    assert report["targets"] == {}  # timing targets only in the full run
    section = report["sections"]["neighbours"]
    rows = section["rows"]
    sizes, dims = report["config"]["sizes"], report["config"]["dims"]
    methods = {"cells", "cells pbc", "dense", "ckdtree", "ckdtree pbc"}
    assert {(r["d"], r["N"], r["method"]) for r in rows} == {
        (d, n, m) for d in dims for n in sizes for m in methods}
    for r in rows:
        # the graph of every method is cKDTree's pairs, both directions
        assert r["edges"] == r["ckdtree pairs x 2"] > 0, r
        assert r["cpu ms"] > 0 and r["wall ms"] > 0 and r["us/particle"] > 0 and r["peak MiB"] >= 0
    for d in dims:  # about 9 neighbours per particle at the largest size
        big = next(r for r in rows if r["d"] == d and r["N"] == max(sizes)
                   and r["method"] == "ckdtree")
        assert 6 < big["edges"] / big["N"] < 10
    assert set(section["summary"]) >= {f"d{d} cells / ckdtree at {max(sizes)}" for d in dims}
    assert {"torch", "load_average_start", "load_average_end"} <= report["machine"].keys()
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_peak_memory_child_run():
    proc = subprocess.run([sys.executable, "benchmarks/bench_scaling.py", "--child",
                           "cells,ckdtree", "2048", "3"], cwd=ROOT, capture_output=True,
                          text=True, env=ENV, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) == {"cells", "ckdtree"}
    assert result["cells"]["edges"] == result["ckdtree"]["edges"] > 6 * 2048
    for peak in result.values():
        assert peak["peak_mib"] > 0
        assert peak["how"] in ("VmHWM - VmRSS after clear_refs", "ru_maxrss growth")
