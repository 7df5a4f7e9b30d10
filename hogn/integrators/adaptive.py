"""Adaptive ground-truth integration with a step size per graph (:func:`integrate_adaptive`):
Dormand–Prince 8(5,3) or Gragg–Bulirsch–Stoer, batched over graphs."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from hogn.integrators.extrapolation import gbs_table
from hogn.integrators.fields import VectorField, check_state

__all__ = ["integrate_adaptive"]


@functools.lru_cache(maxsize=8)
def _dop853_tableau(dtype: torch.dtype, device: torch.device
                    ) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
    """Dormand–Prince 8(5,3) coefficients, taken from scipy (which ships them) rather
    than retyped, laid out for one matrix product per stage.

    Returns:
        ``(rows, b, e)``: ``rows[s - 1] = A[s, :s]`` as ``[1, s]`` for the stages
        ``s = 1 … 11``, the weights ``B [1, 12]``, and the fifth- and third-order
        error weights stacked as ``e [2, 13]`` (the last column weighs the field at
        the new state).
    """
    try:
        from scipy.integrate._ivp import dop853_coefficients as dop
    except ImportError as exc:  # pragma: no cover - scipy is a dependency
        raise ImportError("the adaptive ground-truth integrator needs scipy's DOP853 "
                          "coefficients: pip install scipy") from exc
    n = dop.N_STAGES

    def as_tensor(x: Any) -> Tensor:
        return torch.as_tensor(x, dtype=dtype, device=device)

    a = as_tensor(dop.A[:n, :n])
    rows = tuple(a[s:s + 1, :s].contiguous() for s in range(1, n))
    return rows, as_tensor(dop.B)[None], torch.stack([as_tensor(dop.E5), as_tensor(dop.E3)])


class _Dop853:
    """Dormand–Prince 8(5,3) steps on a state ``x = [q, p] [2, N, d]`` with
    preallocated stage buffers and their views made once (per working-set size),
    so that a stage costs one matrix product, the field, and two scaled writes.

    The state is laid out as two contiguous blocks (positions, then momenta) rather
    than as ``[N, 2d]`` rows: every elementwise operation then runs over contiguous
    memory with operands of one shape, which for small ``d`` is about three times
    faster per operation than broadcasting a step size ``[N, 1]`` over rows of ``2d``.

    Attributes:
        hk: Stage increments ``h · k``, ``[13, 2, N, d]``.
        xs: The stage state ``[2, N, d]`` handed to the field (reused every stage).
    """

    def __init__(self, x: Tensor) -> None:
        self.rows, self.b, self.e = _dop853_tableau(x.dtype, x.device)
        self.hk = x.new_empty((13, *x.shape))
        self.flat = self.hk.view(13, -1)
        self.heads = [self.flat[:s] for s in range(1, 13)]
        self.hq = [self.hk[s, 0] for s in range(13)]
        self.hp = [self.hk[s, 1] for s in range(13)]
        self.xs = x.new_empty(x.shape)
        self.xs_flat, self.xs_q, self.xs_p = self.xs.view(1, -1), self.xs[0], self.xs[1]

    def step(self, f: VectorField, x: Tensor, k0: Tensor, hn: Tensor
             ) -> tuple[Tensor, Tensor, Tensor]:
        """One step of size ``hn [N, d]`` (one value per node, repeated over its
        coordinates) from ``x [2, N, d]`` with ``k0 = [dq, dp] [2, N, d]`` the field
        at ``x``.

        Returns:
            The new state ``[2, N, d]``, the field there ``[2, N, d]`` (first stage of
            the next step, first same as last) and the fifth- and third-order error
            estimates ``[2, 2, N, d]``, already times ``h``.
        """
        xf, rows, heads, xs_flat, xs_q, xs_p = (x.view(1, -1), self.rows, self.heads,
                                                self.xs_flat, self.xs_q, self.xs_p)
        torch.mul(k0, hn, out=self.hk[0])
        for s in range(1, 12):
            torch.addmm(xf, rows[s - 1], heads[s - 1], out=xs_flat)
            dq, dp = f(xs_q, xs_p)
            torch.mul(dq, hn, out=self.hq[s])
            torch.mul(dp, hn, out=self.hp[s])
        x_new = torch.addmm(xf, self.b, heads[11]).view(x.shape)
        k_new = torch.stack(f(x_new[0], x_new[1]))
        torch.mul(k_new, hn, out=self.hk[12])
        return x_new, k_new, torch.mm(self.e, self.flat).view(2, *x.shape)


StopFn = Callable[[Tensor, Tensor], Tensor]
Restrict = Callable[[Tensor], tuple[VectorField, "StopFn | None"]]


class _Graphs:
    """Per-graph reductions and per-node expansion over the working set of graphs.

    Graphs of one size ``n`` (the common case: every system but the any-``N`` ones
    drawn with a size range) reduce by a reshape to ``[G, n·k]``; others by scatter.

    Attributes:
        local: Working graph of each working node, ``[N]``.
        num: Working graphs ``G``.
        size: The common node count, or ``None``.
        sizes: Node count of each working graph, ``[G]``.
        width: Values per graph in the RMS error norm (``n · 2d``), ``[G]``, or
            ``None`` when all graphs share one (it is then folded into the scale).
    """

    def __init__(self, local: Tensor, num: int, size: int | None, sizes: Tensor,
                 width: Tensor | None) -> None:
        self.local, self.num, self.size, self.sizes, self.width = local, num, size, sizes, width

    @classmethod
    def of(cls, batch: Tensor, num_graphs: int, k: int, dtype: torch.dtype) -> _Graphs:
        """The graphs of ``batch [N]`` (graph index per node, grouped in order), with
        ``k`` values per node."""
        sizes = torch.bincount(batch, minlength=num_graphs)
        uniform = num_graphs > 0 and bool((sizes == sizes[0]).all()) and int(sizes[0]) > 0
        return cls(batch, num_graphs, int(sizes[0]) if uniform else None, sizes,
                   None if uniform else (sizes * k).to(dtype))

    def expand(self, v: Tensor) -> Tensor:
        """Per-graph ``v [G]`` to per-node ``[N]``."""
        return v if self.size == 1 else v.index_select(0, self.local)

    def sum(self, v: Tensor) -> Tensor:
        """Sum ``v [..., 2, N, d]`` over each graph's nodes, its positions and momenta
        and their components: ``[..., G]``."""
        if self.size is not None:  # a product with ones: faster than a short sum()
            v = v.view(*v.shape[:-2], self.num, -1)
            return torch.matmul(v, v.new_ones(v.shape[-1])).sum(-2)
        from hogn.graph import segment_sum

        return segment_sum(v.sum(-1).sum(-2), self.local, self.num, dim=-1)

    def amax(self, v: Tensor) -> Tensor:
        """Maximum of ``v [2, N, d]`` over each graph's nodes and components: ``[G]``."""
        if self.size is not None:
            return v.view(2, self.num, -1).amax(-1).amax(0)
        from hogn.graph import segment_max

        return segment_max(v.amax(-1).amax(0), self.local, self.num, dim=0)

    def select(self, keep: Tensor) -> tuple[_Graphs, Tensor]:
        """The working set restricted to the graphs ``keep [G]`` (bool), and the node
        mask ``[N]`` of their nodes."""
        node_keep = self.expand(keep)
        local = (torch.cumsum(keep, 0) - 1)[self.local[node_keep]]
        return _Graphs(local, int(keep.sum()), self.size, self.sizes[keep],
                       None if self.width is None else self.width[keep]), node_keep


def integrate_adaptive(
    f: VectorField,
    q0: Tensor,
    p0: Tensor,
    dt: float,
    steps: int,
    batch: Tensor,
    num_graphs: int,
    rtol: float = 1e-11,
    atol: float = 1e-11,
    h0: float | None = None,
    stop: StopFn | None = None,
    restrict: Restrict | None = None,
    method: str = "dop853",
    max_iterations: int = 1_000_000,
    progress: bool | str = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Integrate with an eighth-order adaptive method and a step size per graph.

    Every graph keeps its own clock and step size, controlled by its local error
    estimate so that it stays within ``atol + rtol * |x|`` (per component).
    All graphs advance together in one batched call per trial step, each clipping its
    step to land exactly on its own next saved time. A close encounter in one graph
    thus costs extra steps without shrinking the others'. When ``restrict`` is
    given, the batch is compacted to the graphs still running whenever fewer than
    half of them are, so a few slow graphs do not drag the finished ones along.

    The loop runs without autograd recording (``f`` may still use autograd inside,
    as :meth:`systems.System.time_derivative` does) on one flat state ``[q, p]`` with
    preallocated stage buffers, and reduces per graph by a reshape when all graphs
    have one size: for small systems its cost is the number of tensor operations per
    step, which this keeps low.

    Args:
        f: Vector field ``f(q, p) -> (dq, dp)`` on ``q, p [N, d]``.
        q0: Initial positions ``[N, d]``.
        p0: Initial momenta ``[N, d]``.
        dt: Time between saved states (> 0).
        steps: Number of saved steps ``T``.
        batch: Graph index of each node, ``[N]``, nodes grouped by graph in order.
        num_graphs: Number of graphs ``G``.
        rtol: Relative tolerance per step.
        atol: Absolute tolerance per step.
        h0: First trial step (default ``dt``).
        stop: Optional ``stop(q, p) -> bool [G]`` checked after every accepted step;
            a graph for which it holds is frozen and reported as stopped (its later
            saved states are NaN).
        restrict: Optional ``restrict(graph_ids) -> (f, stop)`` giving the vector
            field (and stop test) of the sub-batch of the given graphs (ascending ids,
            nodes in their original order), used to compact the batch.
        method: ``"dop853"`` (Dormand–Prince 8(5,3), 12 evaluations per step, error
            norm as scipy's: RMS over each graph's components) or ``"gbs8"`` (21
            evaluations, max-norm error of the order-8 and order-6 extrapolants).
        max_iterations: Give up (``RuntimeError``) after this many trial steps.
        progress: Show a tqdm bar over the saved steps of the slowest graph.

    Returns:
        ``(q, p, n_steps, stopped)``: states ``[T + 1, N, d]``, accepted steps per
        graph ``[G]`` and the stopped mask ``[G]``.
    """
    check_state(q0, p0)
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive finite number, got {dt!r}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if method not in ("dop853", "gbs8"):
        raise ValueError(f"unknown adaptive method {method!r}; expected dop853 or gbs8")
    if q0.dim() != 2 or batch.shape != q0.shape[:1]:
        raise ValueError(f"adaptive integration needs q [N, d] and batch [N], got "
                         f"{tuple(q0.shape)} and {tuple(batch.shape)}")
    with torch.no_grad():
        return _adaptive_loop(f, q0, p0, float(dt), steps, batch.to(q0.device), num_graphs,
                              rtol, atol, h0, stop, restrict, method, max_iterations,
                              progress)


def _adaptive_loop(f: VectorField, q0: Tensor, p0: Tensor, dt: float, steps: int,
                   batch: Tensor, num_graphs: int, rtol: float, atol: float,
                   h0: float | None, stop: StopFn | None, restrict: Restrict | None,
                   method: str, max_iterations: int, progress: bool | str
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The body of :func:`integrate_adaptive` (arguments checked, autograd off).

    Working-set conventions that save operations per step: a graph that no longer
    runs has ``remaining = 0`` (so its trial step is 0 and its state stays put), and
    every step writes every node's state to the output, at its saved index where
    the graph just reached a saved time and to a spare row (dropped) elsewhere.
    """
    dtype, device = q0.dtype, q0.device
    d = q0.shape[-1]
    x = torch.stack([q0, p0])  # [2, N, d]: positions, then momenta
    out = torch.full((steps + 2, x.shape[1], 2, d), float("nan"), dtype=dtype,
                     device=device)  # [T + 2, N, 2, d]
    out[0] = x.transpose(0, 1)
    slots = out.view(-1, 2 * d)  # row r, node n at r·N + n: one index per write
    n_steps = torch.zeros(num_graphs, dtype=torch.long, device=device)
    stopped = torch.zeros(num_graphs, dtype=torch.bool, device=device)
    graphs = _Graphs.of(batch, num_graphs, 2 * d, dtype)
    # with one size per graph the RMS norm's 1/sqrt(width) goes into the scale
    root = math.sqrt(2 * d * graphs.size) if graphs.width is None else 1.0
    atol_s, rtol_s = atol * root, rtol * root
    # working set: graphs still integrated (global ids), their nodes and state
    ids = torch.arange(num_graphs, device=device)
    nodes = torch.arange(x.shape[1], device=device)
    h = torch.full((num_graphs,), float(h0 or dt), dtype=dtype, device=device)
    saved = torch.zeros(num_graphs, dtype=torch.long, device=device)  # last saved index
    halted = torch.zeros(num_graphs, dtype=torch.bool, device=device)
    accepted = torch.zeros(num_graphs, dtype=torch.long, device=device)
    active = saved < steps
    remaining = torch.full((num_graphs,), dt, dtype=dtype, device=device) * active
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=progress if isinstance(progress, str) else method,
                   leave=False, disable=None)
    dop = method == "dop853"
    exponent = -1.0 / 7.0  # gbs8's step-size exponent (dop853's -1/8 is written out)
    stepper = _Dop853(x) if dop else None
    k0 = torch.stack(f(x[0], x[1])) if dop else None
    n_active = int(torch.count_nonzero(active))
    for _ in range(max_iterations):
        if n_active == 0:
            break
        if restrict is not None and n_active <= graphs.num // 2:
            n_steps[ids], stopped[ids] = accepted, halted
            keep = active
            graphs, node_keep = graphs.select(keep)
            ids, nodes, x = ids[keep], nodes[node_keep], x[:, node_keep]
            h, remaining, saved = h[keep], remaining[keep], saved[keep]
            halted, accepted, active = halted[keep], accepted[keep], active[keep]
            f, stop = restrict(ids)
            if dop:
                k0, stepper = k0[:, node_keep], _Dop853(x)
        h_try = torch.minimum(h, remaining)
        last = h >= remaining
        hn = graphs.expand(h_try).unsqueeze(1)  # [N, 1]
        if dop:
            # one step size per coordinate: products of one shape (see _Dop853)
            hd = hn if d == 1 else hn.expand(-1, d).contiguous()
            x_new, k_new, e = stepper.step(f, x, k0, hd)
            scale = torch.maximum(x.abs(), x_new.abs()).mul_(rtol_s).add_(atol_s)
            s5, s3 = graphs.sum(e.div_(scale).square_()).unbind(0)
            if graphs.width is not None:
                s5, s3 = s5 / graphs.width, s3 / graphs.width
            err = s5 / torch.add(s5, s3, alpha=0.01).sqrt_().clamp_min_(1e-300)
        else:
            q_hi, p_hi, q_lo, p_lo = gbs_table(f, x[0], x[1], hn)
            x_new, k_new = torch.stack([q_hi, p_hi]), None
            scale = torch.maximum(x.abs(), x_new.abs()).mul_(rtol).add_(atol)
            err = graphs.amax((x_new - torch.stack([q_lo, p_lo])).abs_().div_(scale))
        err = torch.nan_to_num_(err, nan=float("inf"))
        ok = err <= 1.0  # also true for graphs that no longer run (h = 0, x_new = x)
        accept = ok & active
        if bool(ok.all()):  # the common case: no step rejected
            x, k0 = x_new, k_new
        else:
            ok_node = graphs.expand(ok).unsqueeze(1)
            x = torch.where(ok_node, x_new, x)
            if dop:  # first same as last: the field at the new state
                k0 = torch.where(ok_node, k_new, k0)
        accepted += accept
        # 0.9 err^(-1/8) as three square roots of err / 0.9^8 (pow is much slower);
        # err = 0 gives inf, clamped to the largest growth
        growth = (err.mul_(0.9**-8).sqrt_().sqrt_().rsqrt_() if dop
                  else err.clamp_min_(1e-10).pow_(exponent).mul_(0.9))
        h_new = h_try * growth.clamp_(0.2, 4.0)
        reached = accept & last
        # a step clipped to land on the saved time says nothing against the old size
        h = torch.where(reached, torch.maximum(h, h_new), h_new)
        remaining = torch.where(reached, dt, remaining - h_try * accept)
        if stop is not None:
            halted |= accept & stop(x[0], x[1])
            reached &= ~halted
        saved += reached
        row = graphs.expand(torch.where(reached, saved, steps + 1))
        slots.index_copy_(0, (row * out.shape[1]).add_(nodes),
                          x.transpose(0, 1).reshape(-1, 2 * d))
        active = saved < steps
        if stop is not None:
            active &= ~halted
        remaining.mul_(active)
        n_active = int(torch.count_nonzero(active))
        if bar is not None:
            bar.update(max(int(saved.min()) - bar.n, 0))
    else:
        raise RuntimeError(f"adaptive integration exceeded {max_iterations} trial steps; "
                           "the system may be singular (a close encounter?)")
    n_steps[ids], stopped[ids] = accepted, halted
    if bar is not None:
        bar.close()
    out = out[: steps + 1]
    return out[:, :, 0].contiguous(), out[:, :, 1].contiguous(), n_steps, stopped
