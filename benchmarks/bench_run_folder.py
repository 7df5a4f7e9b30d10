"""Benchmark: what a training run folder costs per epoch, at 200 and 2,000 epochs.

The HNN paper trains for 2,000 one-step epochs; a run folder that rewrote its metrics
and saved three fsynced files every epoch cost more than half of such a run. This
script trains with one optimizer step per epoch (``max_samples = batch_size``, no
validation split), float32, an HNN (3 × 200, the paper's) and a small HOGN (hidden
64) on 3-particle springs, each for 200 and 2,000 epochs, with no run folder and
with one (default settings: a checkpoint every 30 s and at the end), alternating the
two ``--repeats`` times. Reported per epoch:

- the wall time without and with the folder (median over the repeats) and their
  difference (noisy on a busy machine: two long runs' jitter);
- the time spent in the run folder's own code, measured inside the run: metrics
  lines appended, in-memory snapshots, checkpoint and model-file writes, and the
  one-off set-up (folder, config.json), summed and divided by the epochs; and its
  share of a bare one-step epoch (target: below 5%, the same at 200 and 2,000 epochs).

It also checks what must hold whatever the timing: each run trained and recorded
every epoch (history, ``metrics.jsonl`` lines), the folder runs wrote their
checkpoint as configured (a run shorter than 30 s: once, at its end), and their
weights equal the bare runs' bit for bit.

Prints a markdown table and writes JSON (atomically) to
``benchmarks/results/bench_run_folder.json``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_run_folder.py          # ~5 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_run_folder.py --quick  # ~20 s
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import code_version, load_average, machine_info

import systems
from hogn import io as hio
from hogn import models
from hogn.report import format_table, write_json

training = importlib.import_module("hogn.train")  # the package (hogn.train is the function)
loop = importlib.import_module("hogn.train.loop")  # where the run folder's steps are called

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_run_folder.json"
MODELS = {"hnn": {"hidden": 200}, "hogn": {"hidden": 64}}
# the run folder's own code, timed where it runs: (owner, attribute, label)
TIMED = ((loop, "_prepare_run", "setup"), (loop, "_open_metrics", "setup"),
         (loop, "_append_line", "append"),
         (training._RunFolder, "take_snapshot", "snapshot"),
         (training._RunFolder, "commit", "commit"))


class Timers:
    """Seconds and calls of the run folder's functions (wrapped while in use)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.checkpoints = 0
        self._saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> Timers:
        for owner, name, label in TIMED:
            real = getattr(owner, name)
            self._saved.append((owner, name, real))
            setattr(owner, name, self._wrap(real, label))
        real_write = hio.atomic_write

        def counted(path: Any, write: Callable[[Any], Any]) -> Path:
            self.checkpoints += Path(path).name == "checkpoint.pt"
            return real_write(path, write)

        self._saved.append((hio, "atomic_write", real_write))
        hio.atomic_write = counted
        return self

    def _wrap(self, real: Callable[..., Any], label: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.calls[label] += 1
        return timed

    def __exit__(self, *exc: object) -> None:
        for owner, name, real in reversed(self._saved):
            setattr(owner, name, real)
        self._saved.clear()


def one_run(name: str, data: Any, epochs: int, batch: int, run: Path | None
            ) -> dict[str, Any]:
    """Train from the same initial weights; wall time, timers and final weights."""
    torch.manual_seed(0)
    model = models.for_data(name, data, **MODELS[name])
    settings = dict(epochs=epochs, batch_size=batch, max_samples=batch, val_fraction=0.0,
                    lr=1e-3, progress=False)
    with Timers() as timers:
        start = time.perf_counter()
        result = training.train(model, data, run, **settings)
        seconds = time.perf_counter() - start
    lines = (len((run / "metrics.jsonl").read_text().splitlines())
             if run is not None else None)
    return {"seconds": seconds, "timers": timers, "history": len(result.history),
            "lines": lines, "weights": {k: v.clone() for k, v in model.state_dict().items()}}


def measure(name: str, data: Any, epochs: int, args: argparse.Namespace, root: Path
            ) -> dict[str, Any]:
    """``args.repeats`` bare and folder runs, alternating; one table row."""
    bare, folder = [], []
    for i in range(args.repeats):
        bare.append(one_run(name, data, epochs, args.batch, None))
        folder.append(one_run(name, data, epochs, args.batch, root / f"{name}-{epochs}-{i}"))
    per_epoch = {k: statistics.median(r["seconds"] for r in runs) / epochs
                 for k, runs in (("bare", bare), ("folder", folder))}
    own = [sum(r["timers"].seconds.values()) / epochs for r in folder]
    parts = {label: statistics.median(r["timers"].seconds[label] for r in folder) / epochs
             for label in ("append", "snapshot", "commit", "setup")}
    same = all(torch.equal(f["weights"][k], b["weights"][k])
               for f, b in zip(folder, bare, strict=True) for k in b["weights"])
    own_ms = 1e3 * statistics.median(own)
    return {
        "model": name, "epochs": epochs,
        "ms/epoch bare": 1e3 * per_epoch["bare"], "ms/epoch folder": 1e3 * per_epoch["folder"],
        "wall diff ms/epoch": 1e3 * (per_epoch["folder"] - per_epoch["bare"]),
        "folder code ms/epoch": own_ms,
        "folder code % of epoch": 100 * own_ms / (1e3 * per_epoch["bare"]),
        **{f"{label} ms/epoch": 1e3 * v for label, v in parts.items()},
        "checkpoints": [r["timers"].checkpoints for r in folder],
        "snapshots": [r["timers"].calls["snapshot"] for r in folder],
        "epochs recorded": sorted({r["history"] for r in bare + folder}
                                  | {r["lines"] for r in folder}),
        "same weights": same,
        "run seconds": [round(r["seconds"], 2) for r in bare + folder],
    }


COLUMNS = ("model", "epochs", "ms/epoch bare", "ms/epoch folder", "wall diff ms/epoch",
           "folder code ms/epoch", "folder code % of epoch", "append ms/epoch",
           "snapshot ms/epoch", "commit ms/epoch", "setup ms/epoch", "checkpoints")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[200, 2000],
                        help="epoch counts (one optimizer step each)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    parser.add_argument("--repeats", type=int, default=2,
                        help="bare and folder runs per size, alternating")
    parser.add_argument("--batch", type=int, default=64, help="states per (only) batch")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes for CI (no timing targets)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    trajectories, steps = 32, 50
    if args.quick:
        args.epochs, args.repeats, args.batch, trajectories, steps = [5, 15], 1, 16, 4, 10
    load_start = load_average()
    data = systems.generate("spring-nbody", trajectories, steps, 0.05, n_particles=3,
                            test_fraction=0.0, seed=0, progress=False)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_run_folder.") as tmp:
        for name in args.models:
            for epochs in args.epochs:
                rows.append(measure(name, data, epochs, args, Path(tmp)))
                print(f"{name} {epochs} epochs: {rows[-1]['run seconds']} s", flush=True)
    print(f"\none optimizer step per epoch (batch {args.batch}, no validation), float32, "
          f"spring-nbody 3 particles, {args.threads} thread(s); median of {args.repeats} "
          "run(s) each; run folder with default checkpoint settings\n")
    print(format_table(rows, COLUMNS))
    checks = {
        "epochs_recorded": all(r["epochs recorded"] == [r["epochs"]] for r in rows),
        "same_weights_with_and_without_folder": all(r["same weights"] for r in rows),
        "one_checkpoint_per_short_run": all(
            c == 1 for r in rows for c in r["checkpoints"]
            if r["ms/epoch folder"] * r["epochs"] < 25e3),
    }
    targets = {}
    if not args.quick:
        big, small = max(args.epochs), min(args.epochs)
        for name in args.models:
            at = {r["epochs"]: r for r in rows if r["model"] == name}
            targets[f"{name}_folder_below_5pct"] = all(
                r["folder code % of epoch"] < 5 for r in at.values())
            targets[f"{name}_cost_independent_of_epochs"] = (
                at[big]["folder code ms/epoch"] <= 1.5 * at[small]["folder code ms/epoch"] + 0.01)
    for key, ok in {**checks, **targets}.items():
        print(f"{'PASS' if ok else 'FAIL'}: {key}")
    write_json(args.out, {
        "benchmark": "run_folder",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": {"system": "spring-nbody", "particles": 3, "trajectories": trajectories,
                 "steps": steps, "dt": 0.05},
        "rows": rows, "checks": checks, "targets": targets,
        "machine": machine_info(load_start), "code": code_version(("hogn",))})
    print(f"wrote {args.out}")
    return 0 if all(checks.values()) and all(targets.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
