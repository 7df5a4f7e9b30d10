"""``benchmarks/bench_md_step.py --quick`` runs both comparisons and reports them (no
timing is asserted): the hogn calculator and ASE's Lennard-Jones on the same atoms, and
the potential model with leapfrog beside HOGN with rk4."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
pytest.importorskip("ase")


def test_quick_md_step_benchmark(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = importlib.import_module("bench_md_step")
    out = tmp_path / "bench_md_step.json"
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--quick", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "MD force call, 108 atoms" in printed and "per particle-step, 216" in printed
    report = json.loads(out.read_text())
    assert report["quick"] is True and len(report["rows"]) == 3
    for row in report["rows"]:
        assert row["hogn ms (min)"] > 0 and row["reference ms (min)"] > 0
        assert row["ratio"] == pytest.approx(row["hogn ms (min)"] / row["reference ms (min)"])
