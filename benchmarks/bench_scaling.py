"""Benchmark: how the cost of large particle systems grows with the number of particles.

Sections (each a function in :data:`SECTIONS` returning rows, a summary, checks and
targets; ``--sections`` picks some):

1. ``neighbours``: building the radius graph. ``N = 1,024 … 65,536`` particles,
   uniform in a cube (``d = 3``) or square (``d = 2``) at constant density, about 9
   neighbours per particle (radius 1, side ``(N · V_d(1) / 9)^(1/d)``), float64:

   - ``cells``: :func:`hogn.graph.radius_graph` with ``backend="cells"`` (both
     directions of each pair, sorted), open boundaries; ``cells pbc``: the same in a
     periodic box of that side;
   - ``dense``: the dense ``torch.cdist`` graph that ``radius_graph`` was before
     (copied below), up to ``--dense-max`` particles (its memory grows as ``N²``);
   - ``ckdtree``: scipy's ``cKDTree(q).query_pairs(1, output_type="ndarray")`` (tree
     build included; each pair once, unsorted, so it does half our output's work);
     ``ckdtree pbc``: the same with ``boxsize``.

   Reported per size: the edge count (checked: ``2 ×`` cKDTree's pairs, for every
   method), the time of ``--repeats`` calls (methods interleaved so that the load of
   the machine hits all alike), the cost per particle, and the peak memory of one
   call. *Time* is the CPU time of this process (``time.process_time``; all methods
   run single-threaded), minimum and median over the calls, beside the wall time: on
   a machine shared with other busy processes a call longer than a scheduler slice
   is pre-empted, so its wall time counts other processes' work and grows with the
   call's length for every method alike (cKDTree's wall time per particle grew 2-4×
   from 1k to 16k particles here while its CPU time grew 1.1-1.3×). The per-particle
   cost, its growth and the ratios use the minimum CPU time. Targets (full run only): the
   per-particle cost of ``cells`` grows by less than 1.5× from 1,024 to 16,384
   particles, and ``cells`` takes at most 3× cKDTree's time at 16,384.

   *Peak memory.* ``tracemalloc`` does not see torch's allocations, and torch tracks
   peak memory only on CUDA, so each size runs once in a fresh subprocess that
   builds its input and then, method by method (the largest last), returns freed
   heap pages to the kernel (``malloc_trim``), resets the kernel's peak-RSS mark
   (``echo 5 > /proc/self/clear_refs``) and reads ``VmHWM − VmRSS`` after one
   call: the extra resident memory at the call's peak, whatever allocated it
   (torch, numpy, scipy's C++). Where that reset is not allowed, it falls back to
   the growth of ``getrusage(RUSAGE_SELF).ru_maxrss`` over the call (which reads
   low for a call smaller than an earlier one). The fresh process keeps the
   timing runs' heap out of the measurement. ``--quick`` measures in its own
   process instead (``--memory``), to stay fast; its memory column is indicative.

2. Later rows (ground-truth step, HOGN evaluation cost per particle): add a
   function ``(args, progress) -> dict`` with the same keys (``rows``, ``summary``,
   ``checks``, ``targets``, ``complete``, ``columns``; ``progress(partial)`` after
   each size writes the JSON so far) and register it in :data:`SECTIONS`;
   :func:`main` prints and records every section it runs.

Prints markdown tables and writes JSON (atomically) to
``benchmarks/results/bench_scaling.json``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scaling.py          # ~10 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scaling.py --quick  # seconds
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import code_version, load_average, machine_info
from scipy.spatial import cKDTree

from hogn.graph import batch_vector, radius_graph
from hogn.report import write_json

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_scaling.json"
SIZES = [1024, 2048, 4096, 8192, 16384, 32768, 65536]
QUICK_SIZES = [64, 256, 1024]
NEIGHBOURS = 9.0  # mean neighbours per particle (constant density)
RADIUS = 1.0
METHODS = ("cells", "cells pbc", "dense", "ckdtree", "ckdtree pbc")


# --- section 1: neighbour graphs ----------------------------------------------------

def dense_radius_graph(q: torch.Tensor, ptr: torch.Tensor, radius: float) -> torch.Tensor:
    """``radius_graph`` as it was before the cell list: a dense ``[N, N]`` distance matrix."""
    batch = batch_vector(ptr)
    dist = torch.cdist(q, q)
    close = (dist < radius) & (batch[:, None] == batch[None, :])
    close.fill_diagonal_(False)
    return close.nonzero().T.contiguous()


def side_length(n: int, d: int) -> float:
    """Side of the cube holding ``n`` particles with ``NEIGHBOURS`` within ``RADIUS``."""
    ball = math.pi ** (d / 2) / math.gamma(d / 2 + 1) * RADIUS**d
    return (n * ball / NEIGHBOURS) ** (1 / d)


def positions(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """``[n, d]`` float64 positions, uniform in ``[0, side)^d``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=gen, dtype=torch.float64) * side_length(n, d)


def make_call(method: str, q: torch.Tensor) -> Callable[[], int]:
    """A call of ``method`` on positions ``q``, returning its number of directed edges."""
    n, d = q.shape
    ptr = torch.tensor([0, n])
    side = side_length(n, d)
    if method == "cells":
        return lambda: radius_graph(q, ptr, RADIUS, backend="cells").shape[1]
    if method == "cells pbc":
        box = torch.full((d,), side, dtype=q.dtype)
        return lambda: radius_graph(q, ptr, RADIUS, box=box, backend="cells").shape[1]
    if method == "dense":
        return lambda: dense_radius_graph(q, ptr, RADIUS).shape[1]
    x = q.numpy()
    box = side if method == "ckdtree pbc" else None
    if method in ("ckdtree", "ckdtree pbc"):
        return lambda: 2 * len(cKDTree(x, boxsize=box).query_pairs(RADIUS,
                                                                    output_type="ndarray"))
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1))


def _trim_heap() -> None:
    """Give freed heap pages back to the kernel (glibc), so the next peak starts low."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure_peak(method: str, n: int, d: int) -> dict[str, Any]:
    """Run one call in this process and return its peak extra memory (see the module doc)."""
    make_call(method, positions(64, d))()  # one-time costs (lazy kernels) not counted
    call = make_call(method, positions(n, d))
    _trim_heap()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib("VmRSS")
        edges = call()
        peak = _status_kib("VmHWM") - before
        how = "VmHWM - VmRSS after clear_refs"
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        edges = call()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        how = "ru_maxrss growth"
    return {"peak_mib": peak / 1024, "edges": edges, "how": how}


def peaks_in_subprocess(methods: list[str], n: int, d: int, threads: int
                        ) -> dict[str, dict[str, Any]]:
    """:func:`measure_peak` of each method, in order, in one fresh interpreter
    (``--child``)."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", ",".join(methods), str(n), str(d), "--threads",
         str(threads)], capture_output=True, text=True, timeout=3600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory run at N = {n} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def neighbours(args: argparse.Namespace, progress: Callable[[dict[str, Any]], None]
               ) -> dict[str, Any]:
    """Time, memory and edges of each neighbour search, per dimension and size."""
    rows: list[dict[str, Any]] = []
    for d in args.dims:
        for n in args.sizes:
            q = positions(n, d)
            methods = [m for m in METHODS if m != "dense" or n <= args.dense_max]
            calls = {m: make_call(m, q) for m in methods}
            edges, warm = {}, {}
            for m in methods:  # also warms up
                start = time.process_time()
                edges[m] = calls[m]()
                warm[m] = time.process_time() - start
            repeats = max(args.repeats, min(20, 16384 // n)) if not args.quick \
                else args.repeats
            wall: dict[str, list[float]] = {m: [] for m in methods}
            cpu: dict[str, list[float]] = {m: [] for m in methods}
            for rep in range(repeats):  # interleaved: the same load for every method
                for m in methods:
                    if rep >= 2 and warm[m] > 0.5:  # slow calls (dense): 2 are enough
                        continue
                    start, start_cpu = time.perf_counter(), time.process_time()
                    calls[m]()
                    cpu[m].append(time.process_time() - start_cpu)
                    wall[m].append(time.perf_counter() - start)
            order = sorted(methods, key=lambda m: m == "dense")  # the largest last
            peaks = ({m: measure_peak(m, n, d) for m in order} if args.memory == "inprocess"
                     else peaks_in_subprocess(order, n, d, args.threads))
            for m in methods:
                peak = peaks[m]
                best = min(cpu[m])
                reference = "ckdtree pbc" if m.endswith("pbc") else "ckdtree"
                rows.append({"d": d, "N": n, "method": m, "edges": edges[m],
                             "ckdtree pairs x 2": edges[reference],
                             "cpu ms": 1e3 * best, "cpu ms median": 1e3 * statistics.median(
                                 cpu[m]), "wall ms": 1e3 * min(wall[m]),
                             "wall ms median": 1e3 * statistics.median(wall[m]),
                             "us/particle": 1e6 * best / n, "peak MiB": peak["peak_mib"],
                             "memory how": peak["how"], "repeats": len(cpu[m])})
            print(f"  d = {d}, N = {n}: " + ", ".join(
                f"{r['method']} {r['cpu ms']:.1f} ms, {r['peak MiB']:.1f} MiB" for r in rows
                if r["N"] == n and r["d"] == d), flush=True)
            progress(_neighbour_result(args, rows))
    return _neighbour_result(args, rows)


def _neighbour_result(args: argparse.Namespace, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows with their summary, checks and targets (of the dimensions done so far)."""
    summary: dict[str, Any] = {}
    small, large = min(args.sizes), (16384 if 16384 in args.sizes else max(args.sizes))

    def row(d: int, n: int, m: str) -> dict[str, Any]:
        return next(r for r in rows if r["d"] == d and r["N"] == n and r["method"] == m)

    done = [d for d in args.dims if {(d, n) for n in args.sizes} <= {
        (r["d"], r["N"]) for r in rows}]
    for d in done:
        for m in ("cells", "cells pbc"):
            summary[f"d{d} {m} per-particle growth {small}->{large}"] = (
                row(d, large, m)["us/particle"] / row(d, small, m)["us/particle"])
        summary[f"d{d} cells / ckdtree at {large}"] = (
            row(d, large, "cells")["cpu ms"] / row(d, large, "ckdtree")["cpu ms"])
        summary[f"d{d} cells pbc / ckdtree pbc at {large}"] = (
            row(d, large, "cells pbc")["cpu ms"] / row(d, large, "ckdtree pbc")["cpu ms"])
    checks = {"edges_equal_ckdtree_pairs_x2": all(
        r["edges"] == r["ckdtree pairs x 2"] for r in rows)}
    targets = {}
    if not args.quick:
        for d in done:
            targets[f"d{d}_cells_growth_1k_to_16k_below_1.5"] = (
                summary[f"d{d} cells per-particle growth {small}->{large}"] < 1.5)
            targets[f"d{d}_cells_within_3x_ckdtree_at_16k"] = (
                summary[f"d{d} cells / ckdtree at {large}"] <= 3.0)
    return {"rows": rows, "summary": summary, "checks": checks, "targets": targets,
            "complete": len(done) == len(args.dims),
            "columns": ["d", "N", "method", "edges", "cpu ms", "cpu ms median", "wall ms",
                        "us/particle", "peak MiB"]}


Section = Callable[[argparse.Namespace, Callable[[dict[str, Any]], None]], dict[str, Any]]
SECTIONS: dict[str, Section] = {
    "neighbours": neighbours,
    # "ground_truth_step": ..., "hogn_evaluation": ...  (cost per particle; to be added)
}


# --- output ------------------------------------------------------------------------

def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Rows as a markdown table (floats to 4 significant digits)."""
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="particle counts")
    parser.add_argument("--dims", type=int, nargs="+", default=[3, 2])
    parser.add_argument("--dense-max", type=int, default=16384,
                        help="largest N for the dense cdist graph")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed calls per method (up to 20 for small N)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no timing targets")
    parser.add_argument("--memory", choices=("subprocess", "inprocess"), default=None,
                        help="peak memory per call in a fresh process (default) or in this "
                        "one (--quick's default: fast, but reads low after earlier calls)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument("--child", nargs=3, metavar=("METHODS", "N", "D"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        methods, n, d = args.child
        print(json.dumps({m: measure_peak(m, int(n), int(d)) for m in methods.split(",")}))
        return 0
    if args.sizes is None:
        args.sizes = QUICK_SIZES if args.quick else SIZES
    if args.quick:
        args.repeats = 2
    if args.memory is None:
        args.memory = "inprocess" if args.quick else "subprocess"
    load_start = load_average()
    report: dict[str, Any] = {"benchmark": "scaling", "config": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
        if k != "child"}, "sections": {}}
    machine_start = machine_info(load_start)

    def progress(name: str) -> Callable[[dict[str, Any]], None]:
        def save(partial: dict[str, Any]) -> None:  # the JSON so far, after every size
            report["sections"][name] = partial
            write_json(args.out, {**report, "complete": False, "machine": machine_start})
        return save

    for name in args.sections:
        print(f"{name}:", flush=True)
        result = SECTIONS[name](args, progress(name))
        report["sections"][name] = result
        print()
        print(markdown_table(result["rows"], result["columns"]))
        print()
        for key, value in result["summary"].items():
            print(f"{key}: {value:.3g}")
    checks = {f"{s}.{k}": v for s, r in report["sections"].items() for k, v in r["checks"].items()}
    targets = {f"{s}.{k}": v for s, r in report["sections"].items()
               for k, v in r["targets"].items()}
    for key, ok in {**checks, **targets}.items():
        print(f"{'PASS' if ok else 'FAIL'}: {key}")
    report.update(checks=checks, targets=targets, complete=True,
                  machine=machine_info(load_start), code=code_version(("hogn",)))
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
