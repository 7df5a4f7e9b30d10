"""``benchmarks/bench_scaling.py --quick`` runs and reports what must hold whatever the
timing: every method at every size finds the same graph as scipy's cKDTree (twice its
pair count: both directions), open and periodic; the Lennard-Jones ground truth's
listed force equals the all-pairs and the autograd forces; the HOGN's rollout field
equals its autograd derivative and ignores edges beyond its cutoff; the peak-memory
child run works (no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow  # ~55 s of the default run on 2 cores (passed in the full run of 080a446)
def test_quick_scaling_benchmark(tmp_path):
    out = tmp_path / "bench_scaling.json"
    proc = subprocess.run([sys.executable, "benchmarks/bench_scaling.py", "--quick",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "| d | N | method | edges |" in proc.stdout  # the markdown table was printed
    report = json.loads(out.read_text())
    assert report["benchmark"] == "scaling" and report["config"]["quick"] is True
    assert report["complete"] is True
    assert all(report["sections"][s]["complete"] for s in ("neighbours", "groundtruth", "hogn"))
    assert report["checks"] == {
        "neighbours.edges_equal_ckdtree_pairs_x2": True,
        "groundtruth.listed_force_equals_dense_all_pairs": True,
        "groundtruth.listed_force_equals_autograd_force": True,
        "groundtruth.energy_change_per_particle_below_1e-3": True,
        "hogn.rollout_field_equals_time_derivative": True,
        "hogn.listed_graph_equals_cutoff_graph": True,
        "hogn.rollout_finite": True}
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
    small, large = min(sizes), max(sizes)

    truth = report["sections"]["groundtruth"]
    assert "| N | listed edges | rebuilds | step us/particle |" in proc.stdout
    assert [r["N"] for r in truth["rows"]] == sizes
    for r in truth["rows"]:
        assert r["steps"] == report["config"]["lj_steps"] > 0
        assert 1 <= r["rebuilds"] <= r["steps"] + 1
        assert r["listed edges"] > 0 and r["dense force error"] < 1e-10
        assert r["autograd force error"] < 1e-10 and r["energy change per particle"] < 1e-3
        for key in ("step", "force", "list build", "autograd force", "dense force"):
            assert r[f"{key} us/particle"] > 0, (key, r)
        assert r["step peak MiB"] >= 0 and r["autograd force peak MiB"] >= 0
    assert {f"step us/particle growth {small}->{large}",
            f"dense force / listed force at {large}"} <= truth["summary"].keys()
    assert truth["targets"] == {}

    model = report["sections"]["hogn"]
    assert "| N | listed edges | time_derivative us/particle |" in proc.stdout
    assert [r["N"] for r in model["rows"]] == sizes
    for r in model["rows"]:
        assert r["field vs time_derivative error"] < 1e-4 and r["rollout finite"]
        assert r["listed vs cutoff graph error"] < 1e-4
        for key in ("time_derivative", "rollout_field", "rollout step", "truth force"):
            assert r[f"{key} us/particle"] > 0, (key, r)
        # the same in a process whose malloc keeps freed memory (no page faults)
        assert r["time_derivative us/particle, heap kept"] > 0
        assert r["rollout_field us/particle, heap kept"] > 0
        assert 0 <= r["time_derivative sys share"] <= 1
        assert 0 <= r["time_derivative sys share, heap kept"] <= 1
        assert r["time_derivative peak MiB"] >= 0 and r["rollout step peak MiB"] >= 0
    assert {f"time_derivative us/particle growth {small}->{large}",
            f"rollout_field us/particle growth {small}->{large}",
            f"rollout step peak MiB at {large}",
            f"time_derivative us/particle, heap kept growth {small}->{large}"
            } <= model["summary"].keys()
    assert model["targets"] == {}
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_peak_memory_child_run_lennard_jones_and_hogn():
    proc = subprocess.run([sys.executable, "benchmarks/bench_scaling.py", "--child",
                           "lj step,hogn rollout step", "256", "2"], cwd=ROOT,
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) == {"lj step", "hogn rollout step"}
    # the ground truth lists pairs within r_c, the rollout's list within r_c + skin
    assert 0 < result["lj step"]["edges"] < result["hogn rollout step"]["edges"]
    assert all(peak["peak_mib"] > 0 for peak in result.values())


def test_peak_memory_child_run():
    proc = subprocess.run([sys.executable, "benchmarks/bench_scaling.py", "--child",
                           "cells,ckdtree", "2048", "3"], cwd=ROOT, capture_output=True,
                          text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) == {"cells", "ckdtree"}
    assert result["cells"]["edges"] == result["ckdtree"]["edges"] > 6 * 2048
    for peak in result.values():
        assert peak["peak_mib"] > 0
        assert peak["how"] in ("VmHWM - VmRSS after clear_refs", "ru_maxrss growth")
