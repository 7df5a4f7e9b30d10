"""``benchmarks/bench_nbody.py --quick`` runs and reports what must hold whatever the
timing: the gravity sampler without edge lists draws bit for bit the states of the
complete-graph way, both fields agree (1e-10), and the dense spring field gives the edge-list
field's trajectories (no timing is asserted)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_quick_nbody_benchmark(tmp_path, monkeypatch, capsys):
    """Run in this process (``--quick`` measures memory in its own process anyway)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as `python benchmarks/bench_nbody.py`
    bench = importlib.import_module("bench_nbody")
    out = tmp_path / "bench_nbody.json"
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--quick", "--out", str(out)]) == 0  # sets one torch thread
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "sample peak MiB" in printed and "eval ms" in printed  # the tables
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
