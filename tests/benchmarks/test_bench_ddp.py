"""``benchmarks/bench_ddp.py --quick`` runs ``hogn train`` in one process (one and two
threads) and in two under torchrun, and reports what must hold whatever the timing:
every epoch recorded and the same result in every configuration (no timing is
asserted)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch.distributed as dist

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with the gloo backend is not available")
def test_quick_ddp_benchmark(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as `python benchmarks/bench_ddp.py`
    bench = importlib.import_module("bench_ddp")  # its runs are subprocesses of their own
    out = tmp_path / "bench_ddp.json"
    assert bench.main(["--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "samples/s" in printed and "speed-up" in printed  # the table was printed
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
