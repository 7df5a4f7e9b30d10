"""Benchmark: ``hogn train`` in one process and in several (DDP under torchrun).

The same ``hogn train`` command on a small spring dataset (spring-nbody, 4-6
particles, float32 HOGN), run as it is in one process with one torch thread and with
as many threads as processes in the widest run (the other way to use the cores), and
under ``python -m torch.distributed.run --nproc-per-node P`` (gloo, one thread per
process). Reported per configuration (median over ``--repeats`` runs):

- training samples per second: the training states of an epoch divided by the
  epoch's wall time on rank 0 (from ``metrics.jsonl``; an epoch includes its
  validation pass over 10% held-out trajectories; the first epoch is left out as
  warm-up when there are more);
- the speed-up over one process with one thread;
- the whole command's wall time (start-up, data loading and the run folder included).

It also checks what must hold whatever the timing: every run recorded every epoch,
and the distributed runs end with the one-process weights (float32: to 1e-4, the
rounding of the two ways of summing the batch's gradient drifting over the steps)
and losses (relative 1e-4).

Prints a markdown table and writes JSON (atomically) to
``benchmarks/results/bench_ddp.json``::

    .venv/bin/python benchmarks/bench_ddp.py          # ~3 min on 2 cores
    .venv/bin/python benchmarks/bench_ddp.py --quick  # ~1 min; no timing claims

On a machine with two cores (shared with other work) expect little or no gain from
two processes: each step's gradients are averaged by an ``all_reduce`` and the two
processes compete with the rest of the machine for the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import code_version, load_average, machine_info

import systems
from hogn import models
from hogn.report import format_table, write_json

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_ddp.json"
COLUMNS = ("processes", "threads each", "samples/epoch", "epoch s", "samples/s",
           "speed-up", "command s", "max |Δw| vs 1 process", "epochs recorded")
LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
               "MASTER_PORT", "TORCHELASTIC_RUN_ID", "GROUP_RANK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(processes: int, train_args: list[str]) -> list[str]:
    """``hogn train`` in one process, or under torchrun with ``processes``."""
    if processes == 1:
        return [sys.executable, "-m", "hogn", "train", *train_args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
            "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
            "-m", "hogn", "train", *train_args]


def run_once(processes: int, threads: int, train_args: list[str], run: Path
             ) -> dict[str, Any]:
    """One timed ``hogn train`` into ``run``: epoch seconds, command seconds, weights."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    proc = subprocess.run(command(processes, [*train_args, "-o", str(run)]), cwd=ROOT,
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"hogn train in {processes} process(es) failed:\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    timed = rows[1:] if len(rows) > 1 else rows  # the first epoch warms up
    return {"epoch_seconds": statistics.median(r["seconds"] for r in timed),
            "command_seconds": seconds, "epochs": len(rows),
            "final_train_loss": rows[-1]["train_loss"],
            "weights": models.load(run / "last.pt").state_dict()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2],
                        help="process counts (1: no torchrun)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run")
    parser.add_argument("--hidden", type=int, default=64, help="HOGN hidden width")
    parser.add_argument("--batch", type=int, default=64, help="graphs per global batch")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes for CI (no timing claims)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = parser.parse_args(argv)
    trajectories, steps = 64, 32
    if args.quick:
        args.repeats, args.epochs, args.hidden, args.batch = 1, 2, 16, 16
        trajectories, steps = 10, 8
    widest = max(args.processes)
    configs = [(p, 1) for p in sorted(set(args.processes))]
    if widest > 1:  # one process using as many threads as the widest run has processes
        configs.insert(1, (1, widest))
    load_start = load_average()
    data = systems.generate("spring-nbody", trajectories, steps, 0.05, n_particles=(4, 6),
                            test_fraction=0.0, seed=0, progress=False)
    val = round(0.1 * trajectories)
    samples = (trajectories - val) * int(data.t.numel())
    rows, runs = [], {}
    with tempfile.TemporaryDirectory(prefix="bench_ddp.") as tmp:
        path = Path(tmp) / "springs.pt"
        data.save(path)
        train_args = ["hogn", str(path), "--hidden", str(args.hidden), "--epochs",
                      str(args.epochs), "--batch-size", str(args.batch), "--val-fraction",
                      "0.1", "--quiet"]
        for repeat in range(args.repeats):  # the configurations alternate
            for processes, threads in configs:
                run = Path(tmp) / f"run-{processes}-{threads}-{repeat}"
                runs.setdefault((processes, threads), []).append(
                    run_once(processes, threads, train_args, run))
                print(f"{processes} process(es) x {threads} thread(s), run {repeat + 1}: "
                      f"{runs[(processes, threads)][-1]['epoch_seconds']:.3f} s/epoch",
                      flush=True)
    base = runs[(1, 1)][0]
    base_rate = samples / statistics.median(r["epoch_seconds"] for r in runs[(1, 1)])
    for (processes, threads), results in runs.items():
        epoch = statistics.median(r["epoch_seconds"] for r in results)
        diff = max(float((r["weights"][k] - base["weights"][k]).abs().max())
                   for r in results for k in base["weights"])
        loss = max(abs(r["final_train_loss"] - base["final_train_loss"])
                   / abs(base["final_train_loss"]) for r in results)
        rows.append({"processes": processes, "threads each": threads,
                     "samples/epoch": samples, "epoch s": round(epoch, 3),
                     "samples/s": round(samples / epoch, 1),
                     "speed-up": round(samples / epoch / base_rate, 2),
                     "command s": round(statistics.median(r["command_seconds"]
                                                          for r in results), 1),
                     "max |Δw| vs 1 process": float(f"{diff:.3g}"),
                     "final loss rel. diff": float(f"{loss:.3g}"),
                     "epochs recorded": sorted({r["epochs"] for r in results})})
    print(f"\nhogn train, HOGN hidden {args.hidden} float32, spring-nbody 4-6 particles, "
          f"{samples} training states per epoch, global batch {args.batch}; median of "
          f"{args.repeats} run(s); samples/s = training states / epoch wall time (with its "
          "validation pass)\n")
    print(format_table(rows, COLUMNS))
    checks = {
        "epochs_recorded": all(r["epochs recorded"] == [args.epochs] for r in rows),
        "same_result_in_every_configuration": all(
            r["max |Δw| vs 1 process"] < 1e-4 and r["final loss rel. diff"] < 1e-4
            for r in rows),
    }
    for key, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {key}")
    write_json(args.out, {
        "benchmark": "ddp",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": {"system": "spring-nbody", "particles": [4, 6], "trajectories": trajectories,
                 "steps": steps, "dt": 0.05, "training_states": samples},
        "rows": rows, "checks": checks, "torch_distributed": torch.distributed.is_available(),
        "machine": machine_info(load_start), "code": code_version(("hogn",))})
    print(f"wrote {args.out}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
