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

2. ``groundtruth``: the 2-D Lennard-Jones fluid (``systems.get("lennard-jones")``,
   ρ = 0.5, T = 1, ``r_c = 2.5``, skin 0.3; one equilibrated state of ``N = 1,024 …
   65,536`` particles, seed 0, float64). Per size:

   - ``step``: one velocity-Verlet ground-truth step, the CPU time of
     ``trajectory(graph, 0.005, --lj-steps)`` (100 steps of ``max_step``) divided by
     the steps: the force evaluations, the Verlet-list checks and the rebuilds that
     happen in those steps (``rebuilds``: counted by replaying the list on the
     trajectory, the first build included), amortised;
   - ``force``: one force evaluation on an already built list (the per-step part);
     ``list build``: one search of the list (cut-off ``r_c + skin``);
   - references: ``autograd force``, ``−∂V/∂q`` by autograd of the system's
     potential (its pairs searched afresh at ``r_c`` each call; what the force costs
     without the hand-derived field and the list), at every size; ``dense force``,
     every particle's force summed over all ``N − 1`` others with minimum images
     (:func:`dense_lj_force`, blocks of 256 receivers: ``O(N²)`` work without any
     search, ``O(N)`` memory), up to ``--lj-dense-max`` particles (8,192).

   Checks: the listed force equals the all-pairs and the autograd forces (relative
   ``1e-10``), and the energy changes by less than ``1e-3`` per particle over the
   timed steps. Peak memory of one ``trajectory`` step (list build included) and of
   one autograd force, measured as in section 1. Targets (full run): the step's
   per-particle cost grows by less than 1.5× from 1,024 to 16,384 particles; the
   step runs at 65,536.

3. ``hogn``: a HOGN with a smooth cutoff (``hogn.models.get("hogn", dim=2,
   node_constants=1, hidden=64, cutoff=2.5)``, seed 0, untrained, eval mode, float32)
   on the same states, its edges those a Verlet list holds (``radius_graph`` at
   ``r_c + skin = 2.8``, minimum image). Per size:

   - ``time_derivative``: ``model.time_derivative(graph)``, ``∂H`` by autograd
     (first order: eval mode builds no double-backward graph);
   - ``rollout_field``: one call of ``model.rollout_field(graph)``'s field, the
     written-out gradient that rollouts use (no autograd);
   - ``rollout step``: ``hogn.rollout(model, graph, 1, dt=0.005, integrator="rk4",
     neighbours=NeighbourList(2.5, 0.3, box))``: 4 field evaluations plus one list
     build (a fresh list each call: the step that rebuilds, the dearest one);
   - reference: ``truth force``, the ground-truth force on its built list (float64),
     the field the network stands in for.

   Checks: ``rollout_field`` equals ``time_derivative`` (relative ``1e-4``,
   float32); the field on the listed graph (2.8) equals the field on the graph of
   pairs closer than the cutoff (2.5: the cutoff is smooth, extra edges carry
   nothing); the rollout is finite. Peak memory of one ``time_derivative`` and of
   one rollout step (up to ``--hogn-memory-max``), as in section 1. Targets (full
   run): the per-particle cost of ``time_derivative`` and of ``rollout_field`` grows
   by less than 1.5× from 1,024 to 16,384; a rollout step at 16,384 particles peaks
   at most 2 GiB; the rollout runs at 65,536 (above 16,384 each is timed once).

   *Page faults.* The CPU time includes the kernel's: ``time_derivative sys share``
   is its system part. Each evaluation allocates edge-sized temporaries (``E × 64``
   floats, 47 MB at 16,384 particles); glibc serves those above its mmap threshold
   (at most 32 MiB) by fresh ``mmap`` and gives them back on free, and trims the
   heap's top, so every call faults its pages in (and the kernel zeroes them) anew:
   a cost per byte that the smaller sizes, whose blocks stay in the heap, do not
   pay. The columns ``…, heap kept`` time the same calls (:func:`hogn_times`) in a
   fresh process with ``GLIBC_TUNABLES=`` :data:`KEEP_HEAP` (no mmap, no trim: freed
   memory is reused), up to 16,384 particles, to show the cost without them.

In sections 2 and 3, sizes above 16,384 are timed once (after an untimed warm-up
call), smaller ones ``max(2, min(--repeats, 8192 // N + 1))`` times; the minimum CPU
time counts (see section 1 for why CPU time). To add a section: a
function ``(args, progress) -> dict`` with the keys ``rows``, ``summary``,
``checks``, ``targets``, ``complete`` and ``columns`` (``progress(partial)`` after
each size writes the JSON so far), registered in :data:`SECTIONS`; :func:`main`
prints and records every section it runs. ``--reuse FILE…`` takes the complete
sections of earlier JSON files of the same settings instead of running them again
(each marked ``reused_from``, with that run's machine record).

Prints markdown tables and writes JSON (atomically) to
``benchmarks/results/bench_scaling.json``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scaling.py          # ~30 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scaling.py --quick  # ~1 min
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import json
import math
import os
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
from torch import Tensor

import hogn
import systems
from hogn.graph import GraphBatch, NeighbourList, batch_vector, radius_graph
from hogn.models import HOGN
from hogn.report import write_json
from systems.lennard_jones import LennardJones, LennardJonesField

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
    if method in LJ_METHODS:
        lj_call(method, 64)()  # one-time costs (lazy kernels, imports) not counted
        call = lj_call(method, n)
    else:
        make_call(method, positions(64, d))()
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


# --- sections 2 and 3: Lennard-Jones ground truth and HOGN on neighbour graphs --------

LJ_DT = 0.005  # the system's max_step: one velocity-Verlet step per saved step
LJ_CUTOFF, LJ_SKIN = 2.5, 0.3


@functools.lru_cache(maxsize=2)
def lj_state(n: int) -> GraphBatch:
    """One equilibrated 2-D Lennard-Jones state of ``n`` particles (seed 0, float64)."""
    return systems.get("lennard-jones").sample(1, 0, n_particles=n)


def dense_lj_force(system: LennardJones, q: Tensor, box: Tensor, block: int = 256) -> Tensor:
    """The force on every particle summed over all ``N − 1`` others (minimum image,
    shifted-force pair term, zero beyond ``r_c``), ``block`` receivers at a time:
    ``O(N²)`` work without any neighbour search, ``O(block · N)`` memory."""
    n = q.shape[0]
    lengths = box.reshape(-1).to(q)
    out = torch.empty_like(q)
    far = 4 * system.cutoff**2  # stands in for each particle's distance to itself
    for a in range(0, n, block):
        rel = q[a:a + block, None, :] - q[None, :, :]  # receiver − sender
        rel = rel - lengths * torch.round(rel / lengths)
        r2 = (rel * rel).sum(-1)
        rows = torch.arange(rel.shape[0])
        r2[rows, rows + a] = far
        out[a:a + block] = (rel * system.pair_force_weight(r2)[..., None]).sum(1)
    return out


def autograd_lj_force(system: LennardJones, graph: GraphBatch) -> Tensor:
    """``−∂V/∂q`` by autograd of the system's potential (its pairs searched afresh at
    ``r_c``, no list kept)."""
    q = graph.q.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(system.potential(q, graph).sum(), q)
    return -grad


def lj_model() -> HOGN:
    """The benchmarked HOGN: hidden 64, smooth cutoff ``r_c``, float32, seed 0, eval
    mode (first-order autograd of ``H``; weights untrained, which does not change the
    cost)."""
    torch.manual_seed(0)
    return hogn.models.get("hogn", dim=2, node_constants=1, hidden=64,
                           cutoff=LJ_CUTOFF).eval()


def lj_call(method: str, n: int) -> Callable[[], int]:
    """One call of a Lennard-Jones or HOGN ``method`` at ``n`` particles (the state
    built beforehand), returning the edges it used."""
    system = systems.get("lennard-jones")
    graph = lj_state(n)
    if method == "lj step":
        def step() -> int:
            system.trajectory(graph, LJ_DT, 1)
            return graph.edge_index.shape[1]
        return step
    if method == "lj autograd force":
        def autograd_force() -> int:
            autograd_lj_force(system, graph)
            return graph.edge_index.shape[1]
        return autograd_force
    model = lj_model()
    g32 = graph.to(dtype=torch.float32)
    if method == "hogn time_derivative":
        listed = g32.with_radius_edges(LJ_CUTOFF + LJ_SKIN)
        def evaluate() -> int:
            model.time_derivative(listed)
            return listed.edge_index.shape[1]
        return evaluate
    if method == "hogn rollout step":
        def roll() -> int:
            nl = NeighbourList(LJ_CUTOFF, LJ_SKIN, box=g32.box)
            hogn.rollout(model, g32, 1, dt=LJ_DT, integrator="rk4", neighbours=nl)
            return nl.edge_index.shape[1]
        return roll
    raise ValueError(f"unknown method {method!r}; choose one of {LJ_METHODS}")


LJ_METHODS = ("lj step", "lj autograd force", "hogn time_derivative", "hogn rollout step")


def cpu_times(call: Callable[[], Any], repeats: int) -> list[float]:
    """CPU seconds of ``repeats`` calls (after one untimed warm-up call)."""
    call()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        call()
        times.append(time.process_time() - start)
    return times


def _lj_repeats(args: argparse.Namespace, n: int) -> int:
    if args.quick:
        return 1
    return 1 if n > 16384 else max(2, min(args.repeats, 8192 // n + 1))


def _peaks(args: argparse.Namespace, columns: dict[str, str], n: int) -> dict[str, Any]:
    """Peak memory of each method (a key of ``columns``) at ``n`` particles, as row
    entries ``"<column> peak MiB"`` and ``"memory how"``."""
    methods = list(columns)
    peaks = ({m: measure_peak(m, n, 2) for m in methods} if args.memory == "inprocess"
             else peaks_in_subprocess(methods, n, 2, args.threads))
    return {**{f"{columns[m]} peak MiB": peaks[m]["peak_mib"] for m in methods},
            "memory how": peaks[methods[0]]["how"]}


# glibc malloc told to keep what is freed (never mmap, never trim the heap): the cost
# of an evaluation without the page faults of fresh allocations (see ``hogn``)
KEEP_HEAP = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"


def hogn_times(n: int, repeats: int) -> dict[str, float]:
    """Minimum CPU µs per particle of ``time_derivative`` and of the rollout field at
    ``n`` particles, with the user and system (kernel) parts of the former."""
    model = lj_model()
    listed = lj_state(n).to(dtype=torch.float32).with_radius_edges(LJ_CUTOFF + LJ_SKIN)
    field = model.rollout_field(listed)
    out = {"rollout_field": 1e6 * min(cpu_times(lambda: field(listed.q, listed.p),
                                                repeats)) / n}
    model.time_derivative(listed)
    best = (math.inf, 0.0)
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_SELF)
        model.time_derivative(listed)
        after = resource.getrusage(resource.RUSAGE_SELF)
        split = (after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime)
        best = min(best, split, key=sum)
    out.update({"time_derivative": 1e6 * sum(best) / n, "time_derivative user": 1e6 * best[0] / n,
                "time_derivative sys": 1e6 * best[1] / n})
    return out


def hogn_times_keeping_heap(n: int, repeats: int, threads: int) -> dict[str, float]:
    """:func:`hogn_times` in a fresh interpreter run with ``GLIBC_TUNABLES=KEEP_HEAP``."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child-times", str(n), str(repeats), "--threads",
         str(threads)], capture_output=True, text=True, timeout=3600, check=False,
        env={**os.environ, "GLIBC_TUNABLES": KEEP_HEAP})
    if proc.returncode != 0:
        raise RuntimeError(f"heap-keeping run at N = {n} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _relative_error(a: Tensor, b: Tensor) -> float:
    """``max |a − b| / max |b|``."""
    return float((a - b).abs().max() / b.abs().max())


def groundtruth(args: argparse.Namespace, progress: Callable[[dict[str, Any]], None]
                ) -> dict[str, Any]:
    """Cost per particle of the Lennard-Jones ground truth (velocity Verlet on a Verlet
    list) per size, beside the all-pairs force and the autograd force."""
    system = systems.get("lennard-jones")
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        graph = lj_state(n)
        steps, repeats = args.lj_steps, _lj_repeats(args, n)
        step = cpu_times(lambda: system.trajectory(graph, LJ_DT, steps), repeats)  # noqa: B023
        q, p, _ = system.trajectory(graph, LJ_DT, steps)
        replay = NeighbourList(system.cutoff, system.skin, box=graph.box)
        for x in q:  # the list of the timed run (a force per state), by the same rule
            replay.update(x, graph.ptr)
        energy = system.hamiltonian(q[[0, -1]], p[[0, -1]], graph)[:, 0]
        field = LennardJonesField(system, graph)
        force = field.force(graph.q)  # builds the list
        built = cpu_times(lambda: field.force(graph.q), repeats)  # noqa: B023
        build = cpu_times(lambda: NeighbourList(
            system.cutoff, system.skin, box=graph.box).update(graph.q, graph.ptr),  # noqa: B023
            repeats)
        auto = cpu_times(lambda: autograd_lj_force(system, graph), repeats)  # noqa: B023
        row: dict[str, Any] = {
            "N": n, "listed edges": field.neighbours.edge_index.shape[1],
            "steps": steps, "rebuilds": replay.rebuilds, "repeats": repeats,
            "step us/particle": 1e6 * min(step) / steps / n,
            "step cpu ms": 1e3 * min(step) / steps,
            "force us/particle": 1e6 * min(built) / n,
            "list build us/particle": 1e6 * min(build) / n,
            "autograd force us/particle": 1e6 * min(auto) / n,
            "autograd force error": _relative_error(autograd_lj_force(system, graph), force),
            "energy change per particle": abs(float(energy[1] - energy[0])) / n}
        if n <= args.lj_dense_max:
            dense = cpu_times(lambda: dense_lj_force(system, graph.q, graph.box),  # noqa: B023
                              1 if n > 4096 else repeats)
            row["dense force us/particle"] = 1e6 * min(dense) / n
            row["dense force error"] = _relative_error(
                force, dense_lj_force(system, graph.q, graph.box))
        row.update(_peaks(args, {"lj step": "step", "lj autograd force": "autograd force"}, n))
        rows.append(row)
        print(f"  N = {n}: step {row['step us/particle']:.2f} us/particle "
              f"({row['rebuilds']} rebuilds in {steps} steps), force "
              f"{row['force us/particle']:.2f}, autograd {row['autograd force us/particle']:.2f}"
              + (f", dense {row['dense force us/particle']:.1f}"
                 if "dense force us/particle" in row else "")
              + f" us/particle; step peak {row['step peak MiB']:.1f} MiB", flush=True)
        progress(_groundtruth_result(args, rows))
    return _groundtruth_result(args, rows)


def _growth(rows: list[dict[str, Any]], key: str, small: int, large: int) -> float | None:
    """``key`` at ``large`` particles over ``key`` at ``small`` (``None`` if not both run)."""
    by_n = {r["N"]: r for r in rows}
    if small not in by_n or large not in by_n or key not in by_n[large]:
        return None
    return by_n[large][key] / by_n[small][key]


def _scaling_sizes(args: argparse.Namespace) -> tuple[int, int]:
    """The sizes whose per-particle costs give the growth: 1,024 and 16,384 if both
    run, else the smallest and the largest."""
    if {1024, 16384} <= set(args.sizes):
        return 1024, 16384
    return min(args.sizes), max(args.sizes)


def _groundtruth_result(args: argparse.Namespace, rows: list[dict[str, Any]]
                        ) -> dict[str, Any]:
    small, large = _scaling_sizes(args)
    summary = {f"{key} growth {small}->{large}": value for key in (
        "step us/particle", "force us/particle", "list build us/particle",
        "autograd force us/particle")
        if (value := _growth(rows, key, small, large)) is not None}
    by_n = {r["N"]: r for r in rows}
    if large in by_n:
        summary[f"autograd force / listed force at {large}"] = (
            by_n[large]["autograd force us/particle"] / by_n[large]["force us/particle"])
    dense = [r for r in rows if "dense force us/particle" in r]
    if dense:
        top = dense[-1]
        summary[f"dense force / listed force at {top['N']}"] = (
            top["dense force us/particle"] / top["force us/particle"])
    checks = {
        "listed_force_equals_dense_all_pairs": all(r["dense force error"] < 1e-10
                                                   for r in dense),
        "listed_force_equals_autograd_force": all(r["autograd force error"] < 1e-10
                                                  for r in rows),
        "energy_change_per_particle_below_1e-3": all(r["energy change per particle"] < 1e-3
                                                     for r in rows)}
    targets = {}
    growth = summary.get(f"step us/particle growth {small}->{large}")
    if not args.quick and growth is not None and (small, large) == (1024, 16384):
        targets["step_growth_1k_to_16k_below_1.5"] = growth < 1.5
    if not args.quick and 65536 in args.sizes:
        targets["step_runs_at_65536"] = 65536 in by_n
    return {"rows": rows, "summary": summary, "checks": checks, "targets": targets,
            "complete": {r["N"] for r in rows} == set(args.sizes),
            "columns": ["N", "listed edges", "rebuilds", "step us/particle",
                        "force us/particle", "list build us/particle",
                        "autograd force us/particle", "dense force us/particle",
                        "step peak MiB", "autograd force peak MiB"]}


def hogn_section(args: argparse.Namespace, progress: Callable[[dict[str, Any]], None]
                 ) -> dict[str, Any]:
    """Cost per particle of a HOGN on Lennard-Jones neighbour graphs per size, beside
    the same model's written-out rollout field and the ground-truth force."""
    system = systems.get("lennard-jones")
    model = lj_model()
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        graph = lj_state(n)
        g32 = graph.to(dtype=torch.float32)
        listed = g32.with_radius_edges(LJ_CUTOFF + LJ_SKIN)  # what the Verlet list holds
        exact = g32.with_radius_edges(LJ_CUTOFF)
        field = model.rollout_field(listed)
        truth = LennardJonesField(system, graph)
        truth.force(graph.q)  # builds its list
        repeats = _lj_repeats(args, n)
        derivative = cpu_times(lambda: model.time_derivative(listed), repeats)  # noqa: B023
        written = cpu_times(lambda: field(listed.q, listed.p), repeats)  # noqa: B023
        roll = cpu_times(lj_call("hogn rollout step", n), repeats)
        force = cpu_times(lambda: truth.force(graph.q), repeats)  # noqa: B023
        dq, dp = model.time_derivative(listed)
        fq, fp = field(listed.q, listed.p)
        eq, ep = model.time_derivative(exact)
        nl = NeighbourList(LJ_CUTOFF, LJ_SKIN, box=g32.box)
        qs, ps = hogn.rollout(model, g32, 1, dt=LJ_DT, integrator="rk4", neighbours=nl)
        row: dict[str, Any] = {
            "N": n, "listed edges": listed.edge_index.shape[1], "repeats": repeats,
            "time_derivative us/particle": 1e6 * min(derivative) / n,
            "rollout_field us/particle": 1e6 * min(written) / n,
            "rollout step us/particle": 1e6 * min(roll) / n,
            "truth force us/particle": 1e6 * min(force) / n,
            "field vs time_derivative error": max(_relative_error(fq, dq),
                                                  _relative_error(fp, dp)),
            "listed vs cutoff graph error": max(_relative_error(dq, eq),
                                                _relative_error(dp, ep)),
            "rollout finite": bool(torch.isfinite(qs).all() and torch.isfinite(ps).all())}
        split = hogn_times(n, repeats)  # this process: user and kernel parts
        row["time_derivative sys share"] = (split["time_derivative sys"]
                                            / split["time_derivative"])
        if n <= 16384:
            kept = hogn_times_keeping_heap(n, repeats, args.threads)
            row["time_derivative us/particle, heap kept"] = kept["time_derivative"]
            row["rollout_field us/particle, heap kept"] = kept["rollout_field"]
            row["time_derivative sys share, heap kept"] = (kept["time_derivative sys"]
                                                          / kept["time_derivative"])
        if n <= args.hogn_memory_max:
            row.update(_peaks(args, {"hogn time_derivative": "time_derivative",
                                     "hogn rollout step": "rollout step"}, n))
        rows.append(row)
        print(f"  N = {n}: time_derivative {row['time_derivative us/particle']:.1f}, "
              f"rollout_field {row['rollout_field us/particle']:.1f}, rk4 rollout step "
              f"{row['rollout step us/particle']:.1f}, truth force "
              f"{row['truth force us/particle']:.2f} us/particle; rollout step peak "
              f"{row.get('rollout step peak MiB', float('nan')):.1f} MiB", flush=True)
        progress(_hogn_result(args, rows))
    return _hogn_result(args, rows)


def _hogn_result(args: argparse.Namespace, rows: list[dict[str, Any]]) -> dict[str, Any]:
    small, large = _scaling_sizes(args)
    summary = {f"{key} growth {small}->{large}": value for key in (
        "time_derivative us/particle", "rollout_field us/particle",
        "rollout step us/particle", "truth force us/particle",
        "time_derivative us/particle, heap kept", "rollout_field us/particle, heap kept")
        if (value := _growth(rows, key, small, large)) is not None}
    by_n = {r["N"]: r for r in rows}
    if large in by_n:
        r = by_n[large]
        summary[f"time_derivative / rollout_field at {large}"] = (
            r["time_derivative us/particle"] / r["rollout_field us/particle"])
        summary[f"rollout_field / truth force at {large}"] = (
            r["rollout_field us/particle"] / r["truth force us/particle"])
        if "rollout step peak MiB" in r:
            summary[f"rollout step peak MiB at {large}"] = r["rollout step peak MiB"]
    checks = {
        "rollout_field_equals_time_derivative": all(
            r["field vs time_derivative error"] < 1e-4 for r in rows),
        "listed_graph_equals_cutoff_graph": all(
            r["listed vs cutoff graph error"] < 1e-4 for r in rows),
        "rollout_finite": all(r["rollout finite"] for r in rows)}
    targets = {}
    if not args.quick and (small, large) == (1024, 16384):
        for key in ("time_derivative", "rollout_field"):
            growth = summary.get(f"{key} us/particle growth {small}->{large}")
            if growth is not None:
                targets[f"{key}_growth_1k_to_16k_below_1.5"] = growth < 1.5
        peak = summary.get(f"rollout step peak MiB at {large}")
        if peak is not None:
            targets["rollout_step_at_16k_within_2_GiB"] = peak <= 2048
    if not args.quick and 65536 in args.sizes:
        targets["runs_at_65536"] = by_n.get(65536, {}).get("rollout finite", False)
    return {"rows": rows, "summary": summary, "checks": checks, "targets": targets,
            "complete": set(by_n) == set(args.sizes),
            "columns": ["N", "listed edges", "time_derivative us/particle",
                        "rollout_field us/particle", "rollout step us/particle",
                        "truth force us/particle", "time_derivative sys share",
                        "time_derivative us/particle, heap kept",
                        "rollout_field us/particle, heap kept", "time_derivative peak MiB",
                        "rollout step peak MiB"]}


Section = Callable[[argparse.Namespace, Callable[[dict[str, Any]], None]], dict[str, Any]]
SECTIONS: dict[str, Section] = {
    "neighbours": neighbours,
    "groundtruth": groundtruth,
    "hogn": hogn_section,
}


# --- output ------------------------------------------------------------------------

def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Rows as a markdown table (floats to 4 significant digits)."""
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def reused(args: argparse.Namespace, config: dict[str, Any], name: str
           ) -> dict[str, Any] | None:
    """Section ``name`` from the first ``--reuse`` JSON where it is complete and was run
    with the same settings (those both runs record, but the sections and paths), else
    ``None``."""
    for path in args.reuse:
        old = json.loads(path.read_text()) if path.exists() else {}
        section = old.get("sections", {}).get(name)
        same = all(old["config"][k] == v for k, v in config.items()
                   if k in old.get("config", {}) and k not in ("sections", "out"))
        if old.get("benchmark") == "scaling" and same and section and section["complete"]:
            print(f"  (taken from {path}, measured at load average "
                  f"{old.get('machine', {}).get('load_average_start')})", flush=True)
            return {**section, "reused_from": {"path": str(path), "machine": old.get("machine"),
                                               "code": old.get("code")}}
    return None


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
    parser.add_argument("--lj-steps", type=int, default=None,
                        help="velocity-Verlet steps per timed ground-truth run (100; quick 20)")
    parser.add_argument("--lj-dense-max", type=int, default=8192,
                        help="largest N for the all-pairs Lennard-Jones force")
    parser.add_argument("--hogn-memory-max", type=int, default=65536,
                        help="largest N whose HOGN peak memory is measured")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--reuse", type=Path, nargs="+", default=[],
                        help="JSON files of this script: their complete sections of the same "
                        "settings are taken from them, not run again (resuming a long run)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument("--child", nargs=3, metavar=("METHODS", "N", "D"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--child-times", nargs=2, type=int, metavar=("N", "REPEATS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child_times:
        print(json.dumps(hogn_times(*args.child_times)))
        return 0
    if args.child:
        methods, n, d = args.child
        print(json.dumps({m: measure_peak(m, int(n), int(d)) for m in methods.split(",")}))
        return 0
    if args.sizes is None:
        args.sizes = QUICK_SIZES if args.quick else SIZES
    if args.quick:
        args.repeats = 2
    if args.lj_steps is None:
        args.lj_steps = 20 if args.quick else 100
    if args.memory is None:
        args.memory = "inprocess" if args.quick else "subprocess"
    load_start = load_average()
    report: dict[str, Any] = {"benchmark": "scaling", "config": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
        if k not in ("child", "child_times", "reuse")}, "sections": {}}
    machine_start = machine_info(load_start)

    def progress(name: str) -> Callable[[dict[str, Any]], None]:
        def save(partial: dict[str, Any]) -> None:  # the JSON so far, after every size
            report["sections"][name] = partial
            write_json(args.out, {**report, "complete": False, "machine": machine_start})
        return save

    for name in args.sections:
        print(f"{name}:", flush=True)
        result = reused(args, report["config"], name)
        if result is None:
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
