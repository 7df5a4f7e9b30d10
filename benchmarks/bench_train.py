"""Benchmark: a HOGN training step against a straightforward PyTorch Geometric HOGN.

The reference (:class:`ReferenceHOGN`, kept here) is what one writes first with PyG:
a ``MessagePassing`` block whose edge MLP reads ``torch.cat([x_i, x_j, e, g])``,
``torch.nn.Linear`` and ``torch.nn.Softplus``, and ``H`` summed per graph, with
``dq = ∂H/∂p``, ``dp = −∂H/∂q`` from ``torch.autograd.grad(create_graph=True)``. Its
parameters are named as :class:`hogn.models.HOGN`'s, so both run from the same
weights, and the script checks that they give the same loss and parameter gradients
before timing anything.

A training step is the library's derivative-target step: zero the gradients, the
time derivative of a batch of 256 spring graphs of 4–6 particles (complete graphs,
2-D, mass and spring constants as inputs), the MSE against the true derivative,
``backward`` and an Adam step. The two are timed alternately on the same batch (one
torch thread), for float32 and float64 at hidden 64 and 128. Reported: median
milliseconds per step, the speed-up over the reference (target: at least 2), and
the share of the measured single-thread matrix-multiply peak that each reaches
(FLOPs counted by :class:`torch.utils.flop_counter.FlopCounterMode` over one step,
divided by the step time and by the peak of a large square ``torch.mm`` at that
dtype; target: at least 70%).

Prints a markdown table and writes JSON (atomically) to
``benchmarks/results/bench_train.json``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_train.py          # ~3 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_train.py --quick  # seconds
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import code_version, load_average, machine_info
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

import hogn
import systems
from hogn.graph import GraphBatch
from hogn.report import format_table, write_json

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_train.json"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Softplus(), nn.Linear(hidden, n_out))


class ReferenceBlock(MessagePassing):
    """``e' = e + φ_e([x_i, x_j, e, g])``, ``x' = x + φ_x([x, Σ_j e'])``, written plainly."""

    def __init__(self, hidden: int, geometry: int) -> None:
        super().__init__(aggr="sum")
        self.edge_mlp = _mlp(3 * hidden + geometry, hidden, hidden)
        self.node_mlp = _mlp(2 * hidden, hidden, hidden)

    def forward(self, x: Tensor, e: Tensor, g: Tensor, edge_index: Tensor
                ) -> tuple[Tensor, Tensor]:
        src, dst = edge_index
        e = e + self.edge_mlp(torch.cat([x[dst], x[src], e, g], -1))
        agg = self.propagate(edge_index, e=e, size=(x.shape[0], x.shape[0]))
        return x + self.node_mlp(torch.cat([x, agg], -1)), e

    def message(self, e: Tensor) -> Tensor:
        return e


class ReferenceGN(nn.Module):
    """Encode (nodes ``[p, c]``, edges ``[q_i − q_j, |q_i − q_j|, a]``), two blocks, decode."""

    def __init__(self, dim: int, node_constants: int, edge_features: int, hidden: int,
                 steps: int = 2) -> None:
        super().__init__()
        geometry = dim + 1 + edge_features
        self.node_encoder = _mlp(dim + node_constants, hidden, hidden)
        self.edge_encoder = _mlp(geometry, hidden, hidden)
        self.blocks = nn.ModuleList(ReferenceBlock(hidden, geometry) for _ in range(steps))
        self.node_decoder = _mlp(hidden, hidden, 1)


class ReferenceHOGN(nn.Module):
    """The straightforward PyG HOGN (parameter names as :class:`hogn.models.HOGN`'s)."""

    def __init__(self, dim: int, node_constants: int, edge_features: int, hidden: int,
                 eps: float = 1e-8) -> None:
        super().__init__()
        self.gn, self.eps = ReferenceGN(dim, node_constants, edge_features, hidden), eps

    def hamiltonian(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        src, dst = graph.edge_index
        rel = q[dst] - q[src]
        g = torch.cat([rel, (rel.square().sum(-1, keepdim=True) + self.eps).sqrt()], -1)
        if graph.edge_attr is not None:
            g = torch.cat([g, graph.edge_attr], -1)
        x = self.gn.node_encoder(torch.cat([p, graph.c], -1))
        e = self.gn.edge_encoder(g)
        for block in self.gn.blocks:
            x, e = block(x, e, g, graph.edge_index)
        energy = self.gn.node_decoder(x)[:, 0]
        return scatter(energy, graph.batch, 0, dim_size=graph.num_graphs, reduce="sum")

    def time_derivative(self, graph: GraphBatch) -> tuple[Tensor, Tensor]:
        q = graph.q.detach().requires_grad_(True)
        p = graph.p.detach().requires_grad_(True)
        h = self.hamiltonian(q, p, graph)
        dh_dq, dh_dp = torch.autograd.grad(h.sum(), (q, p), create_graph=True)
        return dh_dp, -dh_dq


def make_batch(graphs: int, seed: int) -> tuple[GraphBatch, Tensor, Tensor, Any]:
    """``graphs`` spring graphs of 4–6 particles (float64) and their true derivatives."""
    data = systems.generate("spring-nbody", trajectories=graphs, steps=1, dt=0.1,
                            n_particles=(4, 6), seed=seed, test_fraction=0.0)
    return data.state(0), data.dq[0], data.dp[0], data


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, graph: GraphBatch,
               target: Tensor) -> Tensor:
    """One derivative-target step; returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    dq, dp = model.time_derivative(graph)
    loss = torch.nn.functional.mse_loss(torch.cat([dq, dp], -1), target)
    loss.backward()
    optimizer.step()
    return loss.detach()


def matmul_peak(dtype: torch.dtype, size: int = 1024, repeats: int = 5) -> float:
    """Single-thread ``torch.mm`` FLOP/s on ``[size, size]`` matrices (best of repeats)."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


class _FlopCount(TorchDispatchMode):
    """Counts the FLOPs of every op PyTorch's flop counter knows (matrix products),
    first and higher derivatives included (``FlopCounterMode``'s module tracking
    cannot run under ``torch.autograd.grad``)."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        packet = func._overloadpacket
        if packet in flop_registry:
            self.flops += flop_registry[packet](*args, **(kwargs or {}), out_val=out)
        return out


def step_flops(step: Callable[[], Any]) -> int:
    """FLOPs of the matrix products of one call of ``step``."""
    with _FlopCount() as counter:
        step()
    return int(counter.flops)


def _pair(hidden: int, dtype: torch.dtype, data: Any) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    ours = hogn.models.for_data("hogn", data, hidden=hidden).to(dtype)
    ref = ReferenceHOGN(int(data.q.shape[-1]), int(data.c.shape[-1]),
                        0 if data.edge_attr is None else int(data.edge_attr.shape[-1]),
                        hidden).to(dtype)
    missing = ref.load_state_dict(ours.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    return ours, ref


def agreement(ours: nn.Module, ref: nn.Module, graph: GraphBatch, target: Tensor
              ) -> dict[str, float]:
    """Largest relative difference of loss and parameter gradients (same weights)."""
    out = {}
    grads = []
    for model in (ours, ref):
        model.zero_grad(set_to_none=True)
        dq, dp = model.time_derivative(graph)
        loss = torch.nn.functional.mse_loss(torch.cat([dq, dp], -1), target)
        loss.backward()
        grads.append({n: torch.zeros_like(p) if p.grad is None else p.grad.clone()
                      for n, p in model.named_parameters()})  # H's constant: no grad
        out.setdefault("loss", []).append(loss.item())
        model.zero_grad(set_to_none=True)
    loss_a, loss_b = out["loss"]
    grad_rel = max(float((grads[0][n] - grads[1][n]).abs().max()
                         / grads[1][n].abs().max().clamp_min(1e-30)) for n in grads[1])
    return {"loss_rel_diff": abs(loss_a - loss_b) / abs(loss_b), "grad_rel_diff": grad_rel}


def run_case(hidden: int, dtype_name: str, batch: tuple[GraphBatch, Tensor, Tensor, Any],
             repeats: int, peak: float) -> dict[str, Any]:
    """Time ours and the reference alternately on one batch at one width and dtype."""
    dtype = DTYPES[dtype_name]
    graph64, dq, dp, data = batch
    graph = graph64.to(dtype=dtype)
    target = torch.cat([dq, dp], -1).to(dtype)
    ours, ref = _pair(hidden, dtype, data)
    check = agreement(ours, ref, graph, target)
    steps = {}
    for label, model in (("ours", ours), ("reference", ref)):
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        steps[label] = (lambda m=model, o=opt: train_step(m, o, graph, target))
    flops = {label: step_flops(step) for label, step in steps.items()}
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(2):  # warm-up
        for step in steps.values():
            step()
    for _ in range(repeats):
        for label, step in steps.items():
            start = time.perf_counter()
            step()
            times[label].append(time.perf_counter() - start)
    med = {label: statistics.median(t) for label, t in times.items()}
    return {
        "hidden": hidden, "dtype": dtype_name, "graphs": graph.num_graphs,
        "nodes": graph.num_nodes, "edges": int(graph.edge_index.shape[1]),
        "ours_ms": 1e3 * med["ours"], "reference_ms": 1e3 * med["reference"],
        "speedup": med["reference"] / med["ours"],
        "ours_gflop": flops["ours"] / 1e9, "reference_gflop": flops["reference"] / 1e9,
        "ours_peak_fraction": flops["ours"] / med["ours"] / peak,
        "reference_peak_fraction": flops["reference"] / med["reference"] / peak,
        "peak_gflops": peak / 1e9, **check,
        "ours_ms_all": [1e3 * t for t in times["ours"]],
        "reference_ms_all": [1e3 * t for t in times["reference"]],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (tiny, seconds)")
    parser.add_argument("--graphs", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES),
                        default=list(DTYPES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.graphs, args.repeats, args.hidden = 16, 2, [16]
    torch.set_num_threads(args.threads)
    load_start = load_average()
    batch = make_batch(args.graphs, seed=0)
    peaks = {name: matmul_peak(DTYPES[name], 256 if args.quick else 1024)
             for name in args.dtypes}
    rows = [run_case(h, name, batch, args.repeats, peaks[name])
            for name in args.dtypes for h in args.hidden]
    table = format_table([
        {"dtype": r["dtype"], "hidden": r["hidden"], "ours ms": f"{r['ours_ms']:.1f}",
         "reference ms": f"{r['reference_ms']:.1f}", "speed-up": f"{r['speedup']:.2f}",
         "ours % peak": f"{100 * r['ours_peak_fraction']:.0f}",
         "ref % peak": f"{100 * r['reference_peak_fraction']:.0f}",
         "grad rel diff": f"{r['grad_rel_diff']:.1e}"} for r in rows])
    print(table)
    result = {
        "benchmark": "bench_train", "quick": args.quick,
        "targets": {"speedup": 2.0, "peak_fraction": 0.7},
        "settings": {"graphs": args.graphs, "repeats": args.repeats,
                     "threads": args.threads, "particles": [4, 6],
                     "system": "spring-nbody"},
        "machine": machine_info(load_start), "code": code_version(),
        "peak_gflops": {k: v / 1e9 for k, v in peaks.items()},
        "cases": rows,
        "targets_met": {
            "speedup": all(r["speedup"] >= 2.0 for r in rows),
            "peak_fraction": all(r["ours_peak_fraction"] >= 0.7 for r in rows)},
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
