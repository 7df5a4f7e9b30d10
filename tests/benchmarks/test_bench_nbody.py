"""``benchmarks/bench_nbody.py --quick`` runs and reports what must hold whatever the
timing: the gravity sampler without edge lists draws bit for bit the states of the
complete-graph way, both fields agree (1e-10), and the dense spring field gives the edge-list
field's trajectories (no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_nbody_benchmark(tmp_path):
    out = tmp_path / "bench_nbody.json"
    proc = subprocess.run([sys.executable, "benchmarks/bench_nbody.py", "--quick",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "sample peak MiB" in proc.stdout and "eval ms" in proc.stdout  # tables printed
    report = json.loads(out.read_text())
    assert report["benchmark"] == "bench_nbody" and report["quick"] is True
    assert report["pass"] is True and all(report["checks"].values())
    sizes = report["config"]["sizes"]
    assert {f"gravity.sample_identical_{n}" for n in sizes} <= set(report["checks"])
    assert {f"gravity.field_close_{n}" for n in sizes} <= set(report["checks"])
    rows = report["gravity"]["rows"]
    assert {(r["way"], r["N"]) for r in rows} == {(w, n) for w in ("old", "new") for n in sizes}
    for r in rows:
        for part in ("sample", "field_build", "field"):
            assert r[part]["cpu_s"] >= 0 and r[part]["wall_s"] > 0
            assert r[part]["peak_mib"] >= 0
    springs = report["springs"]
    assert [r["field"] for r in springs["rows"]] == ["edge list (old)", "dense (new)"]
    assert all(r["edges"] >= 2048 and r["accepted_steps"] > 0 for r in springs["rows"])
    assert springs["trajectory_max_rel_diff"] <= 1e-9
    assert report["machine"]["torch_threads"] == 1 and report["code"]["commit"]
