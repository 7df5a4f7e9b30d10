"""Benchmark: large N-body ground truth without complete graphs (gravity), and the
dense spring field.

1. ``gravity``: ``GravityNBody().sample(1, seed=0, n_particles=N)`` and one evaluation
   of its analytic field at ``N = 1,024, 4,096, 16,384`` (``--sizes``), two ways:

   - ``old``: the complete-graph way it replaced (copied below): the sampler's virial
     scaling from the energy over the complete graph's edge list (``2 N (N − 1)``
     indices, ``[E, d]`` differences), the sample carrying that edge list, and the
     field over all ``N × N`` pairs at once (its broadcast path). Run up to
     ``--old-max`` particles (4,096): beyond, it needs tens of GB.
   - ``new``: the library: every pair by blocks of rows (``O(N · rows)`` memory), no
     edge list (``edges="auto"`` carries none above 1,024 particles).

   Reported per size and way: CPU time (``time.process_time``: the machine is shared,
   and wall time counts other processes' work) and wall time of one call, and its
   peak memory: each case runs in a fresh interpreter that returns freed heap pages to
   the kernel (``malloc_trim``), resets the kernel's peak-RSS mark (``echo 5 >
   /proc/self/clear_refs``) and reads ``VmHWM − VmRSS`` after the call (where that
   reset is not allowed, the growth of ``ru_maxrss``; ``--quick`` measures in its own
   process instead, to stay fast: its memory column is indicative). Checks: the new sample is bit
   for bit the old one, and the fields agree to 1e-10 relative where both ran (the
   old broadcast path sums ``q_i Σ_j w_ij − Σ_j w_ij q_j`` and loses digits to
   cancellation as the disc grows: 2.2e-12 of the largest force at 4,096 particles
   against the edge-list sum, where the blocks, which take ``q_i − q_j`` first, are at
   6e-16).

2. ``springs``: spring-nbody's field on 4 complete graphs of 64 particles (the
   default springs), the edge-list field it was (copied below) against the dense one
   now used, per evaluation and over an adaptive ground-truth run of ``--spring-steps``
   saved steps of ``dt = 0.05`` (``rtol = atol = 1e-12``, as :func:`systems.generate`).

Prints markdown tables and writes JSON (atomically) to
``benchmarks/results/bench_nbody.json``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_nbody.py          # a few minutes
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_nbody.py --quick  # seconds
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from _common import code_version, load_average, machine_info
from bench_generate import write_json
from bench_scaling import _status_kib, _trim_heap

import systems
from hogn import integrators
from hogn.graph import GraphBatch, fully_connected, ptr_from_sizes
from systems import gravity

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_nbody.json"
SIZES = (1024, 4096, 16384)
QUICK_SIZES = (256, 512)
FIELD_RTOL = 1e-10  # old vs new field: the old broadcast path's cancellation error grows with N


# ------------------------------------------------------------------ the old gravity
def old_sample(n: int, seed: int = 0) -> GraphBatch:
    """``GravityNBody().sample(1, seed, n_particles=n)`` as it was: the virial scaling's
    ``V`` from ``energy`` over the complete graph's edge list (the library's edge-list
    path, kept for short lists, forced here), and the sample carrying that list."""
    system = gravity.GravityNBody(edges="complete")

    def edge_list_potential(q: torch.Tensor, m: torch.Tensor, g: float, eps2: float) -> float:
        graph = GraphBatch(q, torch.zeros_like(q), m[:, None], fully_connected([q.shape[0]]),
                           ptr_from_sizes([q.shape[0]]))
        return system.energy(q, graph.p, graph).item()

    with mock.patch.object(gravity, "_ordered_potential", edge_list_potential), \
            mock.patch.object(gravity, "_CHUNKED_MIN_EDGES", math.inf):
        return system.sample(1, seed=seed, n_particles=n)


def old_field(graph: GraphBatch) -> integrators.VectorField:
    """The field as it was for a complete graph: its completeness checked against a
    freshly built complete edge list, then all ``N × N`` pairs at once."""
    n = graph.uniform_size
    ei = graph.edge_index
    assert torch.equal(ei, fully_connected([n] * graph.num_graphs))
    m = graph.c[:, 0:1]
    prm = gravity.GravityNBody.defaults
    return gravity._dense_field(m, n, prm["G"], prm["softening"] ** 2, graph.q.shape[-1],
                                bool((m == 1).all()))


def new_sample(n: int, seed: int = 0) -> GraphBatch:
    """The library's sampler."""
    return gravity.GravityNBody().sample(1, seed=seed, n_particles=n)


def new_field(graph: GraphBatch) -> integrators.VectorField:
    """The library's field."""
    return gravity.GravityNBody().vector_field(graph)


WAYS: dict[str, tuple[Callable[[int, int], GraphBatch],
                      Callable[[GraphBatch], integrators.VectorField]]] = {
    "old": (old_sample, old_field), "new": (new_sample, new_field)}


# ------------------------------------------------------------------ peak memory
def measured(call: Callable[[], Any]) -> tuple[Any, dict[str, float | str]]:
    """Run ``call`` once: its result, CPU and wall seconds and peak extra memory (MiB)."""
    _trim_heap()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before, how = _status_kib("VmRSS"), "VmHWM - VmRSS after clear_refs"
    except OSError:
        before, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss growth"
    cpu, wall = time.process_time(), time.perf_counter()
    out = call()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    peak = (_status_kib("VmHWM") if how.startswith("VmHWM")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) - before
    return out, {"cpu_s": cpu, "wall_s": wall, "peak_mib": peak / 1024, "memory_how": how}


def run_case(way: str, n: int, field: bool, save: Path | None) -> dict[str, Any]:
    """Sample ``n`` particles and evaluate the field once, the ``way`` given (in this
    process: the parent runs each case in a fresh one)."""
    sample, make_field = WAYS[way]
    warm = sample(64, 1)  # one-time costs (lazy kernels, caches) not counted
    make_field(warm)(warm.q, warm.p)
    graph, sampled = measured(lambda: sample(n))
    row: dict[str, Any] = {"way": way, "N": n, "edges": graph.edge_index.shape[1],
                           "sample": sampled}
    dp = None
    if field:
        f, built = measured(lambda: make_field(graph))
        (_, dp), evaluated = measured(lambda: f(graph.q, graph.p))
        row.update(field_build=built, field=evaluated)
    if save is not None:
        torch.save({"q": graph.q, "p": graph.p, "dp": dp}, save)
    return row


def case_in_subprocess(way: str, n: int, field: bool, save: Path, threads: int
                       ) -> dict[str, Any]:
    """:func:`run_case` in a fresh interpreter (``--child``), so that no earlier case's
    heap sits in its memory reading."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", way, str(n), str(int(field)), str(save),
         "--threads", str(threads)], capture_output=True, text=True, timeout=3600,
        check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{way} at N = {n} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_gravity(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Section 1: the rows, and the equality checks where both ways ran."""
    rows, checks, field_diffs = [], {}, {}
    for n in args.sizes:
        saved = {}
        for way in ("old", "new"):
            if way == "old" and n > args.old_max:
                rows.append({"way": way, "N": n, "skipped": f"N > --old-max {args.old_max}"})
                continue
            field = n <= args.field_max
            saved[way] = tmp / f"{way}-{n}.pt"
            print(f"gravity {way} N = {n} ...", flush=True)
            rows.append(case_in_subprocess(way, n, field, saved[way], args.threads)
                        if args.memory == "subprocess" else run_case(way, n, field, saved[way]))
        if len(saved) == 2:
            old, new = (torch.load(saved[w]) for w in ("old", "new"))
            checks[f"sample_identical_{n}"] = bool(torch.equal(old["q"], new["q"])
                                                   and torch.equal(old["p"], new["p"]))
            if old["dp"] is not None and new["dp"] is not None:
                rel = ((old["dp"] - new["dp"]).abs().max() / old["dp"].abs().max()).item()
                field_diffs[n] = rel
                checks[f"field_close_{n}"] = rel <= FIELD_RTOL
    return {"rows": rows, "checks": checks, "field_max_rel_diff": field_diffs}


# ------------------------------------------------------------------------ springs
def edge_list_spring_field(graph: GraphBatch) -> integrators.VectorField:
    """spring-nbody's field as it was: over the edge list (gathers and a scatter)."""
    inv_m = 1.0 / graph.c[:, 0:1]
    src, dst = graph.edge_index
    k, rest = graph.edge_attr[:, 0:1], graph.edge_attr[:, 1:2]
    ones_d = torch.ones(graph.q.shape[-1], 1, dtype=k.dtype)

    def field(q: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        diff = q.index_select(-2, src) - q.index_select(-2, dst)
        r = torch.matmul(diff * diff, ones_d).sqrt_()
        w = diff * (-k * (r - rest) / r)
        return p * inv_m, torch.zeros_like(q).index_add_(-2, src, w)

    return field


def bench_springs(args: argparse.Namespace) -> dict[str, Any]:
    """Section 2: field evaluation and an adaptive ground-truth run, edge list vs dense."""
    n, graphs = (32, 4) if args.quick else (64, 4)  # >= 2,048 edges: the dense path
    system = systems.get("spring-nbody")
    graph = system.sample(graphs, seed=0, n_particles=n)
    fields = {"edge list (old)": edge_list_spring_field(graph),
              "dense (new)": system.vector_field(graph)}
    rows, results = [], {}
    for name, f in fields.items():
        integrators.integrate_adaptive(f, graph.q, graph.p, 0.05, 1, graph.batch,
                                       graph.num_graphs, rtol=1e-12, atol=1e-12)  # warm up
        repeats = 50 if args.quick else 500
        cpu = time.process_time()
        for _ in range(repeats):
            f(graph.q, graph.p)
        per_call = (time.process_time() - cpu) / repeats
        cpu, wall = time.process_time(), time.perf_counter()
        q, _, steps, _ = integrators.integrate_adaptive(
            f, graph.q, graph.p, 0.05, args.spring_steps, graph.batch, graph.num_graphs,
            rtol=1e-12, atol=1e-12, h0=min(0.05, system.max_step))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        results[name] = q
        rows.append({"field": name, "N": n, "graphs": graphs, "edges": graph.edge_index.shape[1],
                     "eval_ms": 1e3 * per_call, "saved_steps": args.spring_steps,
                     "accepted_steps": int(steps.max()), "run_cpu_s": cpu, "run_wall_s": wall})
    old, new = results.values()
    diff = ((old - new).abs().max() / old.abs().max()).item()
    return {"rows": rows, "checks": {"same_trajectories": diff <= 1e-9},
            "trajectory_max_rel_diff": diff,
            "speedup_eval": rows[0]["eval_ms"] / rows[1]["eval_ms"],
            "speedup_run_cpu": rows[0]["run_cpu_s"] / rows[1]["run_cpu_s"]}


# ------------------------------------------------------------------------- output
def gravity_table(rows: list[dict[str, Any]]) -> str:
    """The gravity rows as a markdown table."""
    lines = ["| N | way | edges | sample cpu s | sample wall s | sample peak MiB | "
             "field cpu s | field wall s | field peak MiB |", "|" + "---|" * 9]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['N']} | {r['way']} | skipped: {r['skipped']} |" + " |" * 6)
            continue
        s, f = r["sample"], r.get("field")
        fcells = (f"{f['cpu_s']:.3g} | {f['wall_s']:.3g} | {f['peak_mib']:.1f}" if f
                  else "– | – | –")
        lines.append(f"| {r['N']} | {r['way']} | {r['edges']} | {s['cpu_s']:.3g} | "
                     f"{s['wall_s']:.3g} | {s['peak_mib']:.1f} | {fcells} |")
    return "\n".join(lines)


def springs_table(rows: list[dict[str, Any]]) -> str:
    """The springs rows as a markdown table."""
    lines = ["| field | graphs x N | edges | eval ms | saved steps | accepted steps | "
             "run cpu s | run wall s |", "|" + "---|" * 8]
    lines += [f"| {r['field']} | {r['graphs']} x {r['N']} | {r['edges']} | {r['eval_ms']:.3g} | "
              f"{r['saved_steps']} | {r['accepted_steps']} | {r['run_cpu_s']:.3g} | "
              f"{r['run_wall_s']:.3g} |" for r in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: N = 256, 512 and 32-particle springs (no claims)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="gravity particle counts (default 1024 4096 16384)")
    parser.add_argument("--old-max", type=int, default=4096,
                        help="largest N run the old (complete-graph) way")
    parser.add_argument("--field-max", type=int, default=16384,
                        help="largest N whose field is evaluated (larger: sample only)")
    parser.add_argument("--spring-steps", type=int, default=None,
                        help="saved steps of the springs' ground-truth run (default 20, 2 "
                             "with --quick)")
    parser.add_argument("--memory", choices=("subprocess", "inprocess"), default=None,
                        help="each gravity case in a fresh process (default) or in this one "
                        "(--quick's default: fast, but its peaks read low after earlier cases)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument("--child", nargs=4, metavar=("WAY", "N", "FIELD", "SAVE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = list(QUICK_SIZES if args.quick else SIZES)
    if args.spring_steps is None:
        args.spring_steps = 2 if args.quick else 20
    if args.memory is None:
        args.memory = "inprocess" if args.quick else "subprocess"
    if min(args.sizes) < 1 or args.spring_steps < 1 or args.threads < 1:
        parser.error("--sizes, --spring-steps and --threads must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables and write the JSON.

    Returns:
        The exit status: 1 when a check fails (samples not identical, fields or
        trajectories not equal), else 0.
    """
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        way, n, field, save = args.child
        print(json.dumps(run_case(way, int(n), bool(int(field)), Path(save))))
        return 0
    load_start = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        grav = bench_gravity(args, Path(tmp))
    print()
    print(gravity_table(grav["rows"]))
    print("\nsprings ...", flush=True)
    springs = bench_springs(args)
    print()
    print(springs_table(springs["rows"]))
    print(f"\nsprings: dense field {springs['speedup_eval']:.2f}x per evaluation, "
          f"{springs['speedup_run_cpu']:.2f}x per ground-truth run (CPU time); "
          f"trajectories differ by {springs['trajectory_max_rel_diff']:.1e} relative")
    checks = {**{f"gravity.{k}": v for k, v in grav["checks"].items()},
              **{f"springs.{k}": v for k, v in springs["checks"].items()}}
    for key, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {key}")
    payload = {
        "benchmark": "bench_nbody", "quick": args.quick,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                   if k != "child"},
        "gravity": grav, "springs": springs, "checks": checks,
        "pass": all(checks.values()), "machine": machine_info(load_start),
        "code": code_version(("hogn", "systems")),
    }
    write_json(payload, args.out)
    print(f"\nwrote {args.out}")
    return 0 if payload["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
