"""Many tasks in one call: per-task weights over one batch of graphs.

Meta-learning evaluates one network at ``B`` different parameter vectors (one adapted
copy per task) on ``B`` small sets of points. Looping over the tasks makes ``B`` times
as many small kernel launches and autograd nodes; here the ``B`` tasks run together:

- :func:`stack_points` lays the tasks' points out as one :class:`hogn.graph.GraphBatch`
  in ``B`` consecutive blocks of *equal* node and edge counts. A task with fewer
  nodes or edges than the largest gets *padding*: extra nodes (zero state and
  constants, in graphs of their own) and self-loop edges on its first padding node.
  Padding never reaches a real particle (no edge joins it to one; it lies in its own
  graphs, so it adds nothing to a real graph's energy) and has zero loss weight.
- :func:`stack_params` gives every task its own copy of the parameters, stacked along
  a new first axis ``[B, ...]`` (a broadcast view: no copy). :class:`hogn.nn.Linear`
  applies weight ``b`` to block ``b`` of its input rows, so *any* model of
  :mod:`hogn.models` (all built from :class:`hogn.nn.MLP`) runs unchanged under
  :func:`torch.func.functional_call` at stacked parameters.
- :func:`task_losses` returns the ``B`` task losses ``[B]``; since task ``b``'s loss
  depends only on its own copy, one backward pass of their sum gives every task's
  gradient at once, ``[B, ...]``. :func:`inner_loop` and :func:`meta_gradient` build
  MAML, first-order MAML and Reptile on that, with the same results (to rounding) as
  the task-by-task :func:`meta.algorithms.meta_gradient`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor, nn

from hogn.graph import GraphBatch
from hogn.models.base import DynamicsModel
from hogn.nn import MLP
from meta.algorithms import (
    InnerLR,
    LossFn,
    MetaConfig,
    Params,
    _adapted_names,
    _meta_inputs,
    _sgd,
    decoder_names,
    get_loss,
    predict,
)
from meta.tasks import Points, Task

__all__ = ["BLOCK_OVERHEAD", "StackedPoints", "blocked_params", "choose_block", "inner_loop",
           "meta_gradient", "row_kinds", "stack_params", "stack_points", "supports", "task_losses"]


BLOCK_OVERHEAD = 16
"""Cost of one more block of rows, in rows: each block gets its own copy of the weights
(:func:`blocked_params`), so many tiny blocks cost more than a little padding."""


def row_kinds(model: nn.Module) -> dict[str, str]:
    """What the input rows of each trainable parameter's layer are (``nodes``,
    ``edges`` or ``graphs``), from :attr:`hogn.nn.MLP.rows`.

    Raises:
        ValueError: for a trainable parameter outside an :class:`hogn.nn.MLP` that says
            its rows (such a model can only be meta-trained task by task:
            ``MetaConfig(batched=False)``).
    """
    kinds: dict[str, str] = {}
    for prefix, module in model.named_modules():
        if isinstance(module, MLP) and module.rows is not None:
            for name, _ in module.named_parameters():
                kinds[f"{prefix}.{name}" if prefix else name] = module.rows
    missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in kinds]
    if missing:
        raise ValueError(f"{getattr(model, 'name', type(model).__name__)} cannot run tasks "
                         f"in one batch: parameter(s) {', '.join(missing[:3])} are not in an "
                         "hogn.nn.MLP with rows='nodes'|'edges'|'graphs'; use "
                         "MetaConfig(batched=False)")
    return kinds


def supports(model: nn.Module) -> bool:
    """Whether the model's tasks can run in one call (:func:`row_kinds` succeeds)."""
    try:
        row_kinds(model)
    except ValueError:
        return False
    return True


def choose_block(counts: Sequence[int], overhead: int = BLOCK_OVERHEAD) -> int:
    """Rows per block for tasks of ``counts`` rows: the ``R`` minimising padded rows plus
    ``overhead`` per block, ``Σ_i ⌈c_i/R⌉ (R + overhead)`` (ties: the larger ``R``)."""
    c = np.asarray([x for x in counts if x > 0], dtype=np.int64)
    if c.size == 0:
        return 1
    sizes = np.arange(1, int(c.max()) + 1)
    blocks = -(-c[None, :] // sizes[:, None])  # [R, B] ceil
    cost = (blocks * (sizes[:, None] + overhead)).sum(1)
    best = np.flatnonzero(cost == cost.min())
    return int(sizes[best[-1]])


@dataclass
class StackedPoints:
    """The points of ``B`` tasks as one graph batch, task after task, in blocks.

    For each row kind a model uses (:func:`row_kinds`), every task's rows of that kind
    (its nodes, edges or graphs) fill whole blocks of ``R_kind`` rows, padded where
    needed; block ``j`` of a kind belongs to task ``blocks[kind][j]``.

    Attributes:
        graph: The tasks' graphs (and padding) ``q, p [N, d]``, ``c [N, k]``,
            ``edge_index [2, E]``, ``edge_attr``, task after task.
        dq: True ``dq/dt`` ``[N, d]`` (zero at padding).
        dp: True ``dp/dt`` ``[N, d]`` (zero at padding).
        weight: ``[N]``: 1 at the tasks' real particles, 0 at padding.
        node_task: Task of each node ``[N]`` (long).
        real: Real particles per task ``[B]``.
        blocks: Row kind → task of each block ``[blocks]`` (long).
        offsets: First node of each task ``[B + 1]`` (list of ints).
    """

    graph: GraphBatch
    dq: Tensor
    dp: Tensor
    weight: Tensor
    node_task: Tensor
    real: Tensor
    blocks: dict[str, Tensor]
    offsets: list[int]

    @property
    def tasks(self) -> int:
        """Number of tasks ``B``."""
        return len(self.offsets) - 1

    @cached_property
    def one_per_task(self) -> frozenset[str]:
        """Row kinds whose block ``b`` is task ``b``'s only block (no weight copies
        needed); computed once per layout, not at every forward pass."""
        return frozenset(kind for kind, index in self.blocks.items()
                         if index.numel() == self.tasks and bool(
                             (index == torch.arange(self.tasks, device=index.device)).all()))

    def per_task(self, x: Tensor) -> Tensor:
        """Sum per-node values ``[N]`` over each task's nodes, ``[B]``."""
        return x.new_zeros(self.tasks).index_add(0, self.node_task, x)


def _padded(count: int, block: int) -> int:
    return -(-count // block) * block


def stack_points(points: Sequence[Points], kinds: Collection[str], edges: bool = True
                 ) -> StackedPoints:
    """Lay out the points of ``B`` tasks as one graph batch in blocks of rows.

    Args:
        points: The tasks' points (same ``d``, ``k``, edge constants and dtype).
        kinds: Row kinds of the model (``set(row_kinds(model).values())``).
        edges: Keep the edges (``False`` for models that do not read them, such as
            HNN and MLP).

    Returns:
        A :class:`StackedPoints`. Block sizes come from :func:`choose_block`. Padding:
        ``graphs`` rows are padded with whole graphs of the (uniform) graph size, node
        rows with one graph of zero nodes, edge rows with self-loops on a padding node
        (a node block is added for them when the task has none). Padding never reaches
        a real particle and has zero loss weight.

    Raises:
        ValueError: for no points, points of different layouts, graph rows with graphs
            of different sizes, or graph rows mixed with node or edge rows.
    """
    if not points:
        raise ValueError("stack_points needs at least one task")
    kinds = set(kinds)
    if "graphs" in kinds and kinds - {"graphs"}:
        raise ValueError(f"cannot lay out graph rows together with {sorted(kinds)}")
    first = points[0].graph
    for pts in points:
        g = pts.graph
        if (g.q.shape[-1], g.c.shape[-1]) != (first.q.shape[-1], first.c.shape[-1]) or (
                g.edge_attr is None) != (first.edge_attr is None) or g.q.dtype != first.q.dtype:
            raise ValueError("tasks to stack must share d, k, edge constants and dtype")
    nodes = [pts.graph.num_nodes for pts in points]
    nedges = [pts.graph.edge_index.shape[1] if edges else 0 for pts in points]
    target_nodes, target_edges = list(nodes), list(nedges)
    unit = 0  # size of a padding graph (0: one graph of all padding nodes)
    blocks: dict[str, Tensor] = {}
    device = first.ptr.device

    def task_of_blocks(rows: list[int], block: int) -> Tensor:
        return torch.repeat_interleave(torch.arange(len(rows), device=device),
                                       torch.tensor([r // block for r in rows], device=device))

    if "graphs" in kinds:
        sizes = torch.cat([pts.graph.sizes for pts in points])
        if not bool((sizes == sizes[0]).all()):
            raise ValueError("graph rows need graphs of one size, got sizes "
                             f"{sorted(set(sizes.tolist()))}")
        unit = int(sizes[0])
        graphs = [pts.num_points for pts in points]
        rg = choose_block(graphs)
        target_graphs = [_padded(m, rg) for m in graphs]
        target_nodes = [m * unit for m in target_graphs]
        blocks["graphs"] = task_of_blocks(target_graphs, rg)
    if "edges" in kinds:
        re_ = choose_block(nedges)
        target_edges = [_padded(e, re_) for e in nedges]
        blocks["edges"] = task_of_blocks(target_edges, re_)
    if "nodes" in kinds:
        rn = choose_block(nodes)
        target_nodes = [_padded(n, rn) + (rn if t > e and _padded(n, rn) == n else 0)
                        for n, e, t in zip(nodes, nedges, target_edges, strict=True)]
        blocks["nodes"] = task_of_blocks(target_nodes, rn)
    else:  # still need a padding node to hang padding edges on
        target_nodes = [t + (1 if te > e and t == n else 0) for t, n, e, te in
                        zip(target_nodes, nodes, nedges, target_edges, strict=True)]
    q, p, c, dq, dp, weight, index, ptr, attr = ([] for _ in range(9))
    offset = 0
    offsets = [0]
    for i, pts in enumerate(points):
        g = pts.graph
        n, e = nodes[i], nedges[i]
        extra, extra_edges = target_nodes[i] - n, target_edges[i] - e
        zeros = g.q.new_zeros(extra, g.q.shape[-1])
        q.append(torch.cat([g.q, zeros]))
        p.append(torch.cat([g.p, zeros]))
        dq.append(torch.cat([pts.dq, zeros]))
        dp.append(torch.cat([pts.dp, zeros]))
        c.append(torch.cat([g.c, g.c.new_zeros(extra, g.c.shape[-1])]))
        real = g.q.new_ones(n) if pts.mask is None else pts.mask.to(g.q.dtype)
        weight.append(torch.cat([real, g.q.new_zeros(extra)]))
        bounds = g.ptr[:-1]
        if extra:
            bounds = torch.cat([bounds, torch.arange(n, n + extra, unit or extra,
                                                     device=device)])
        ptr.append(bounds + offset)
        if edges:
            loops = torch.full((2, extra_edges), n, dtype=g.edge_index.dtype, device=device)
            index.append(torch.cat([g.edge_index, loops], 1) + offset)
            if g.edge_attr is not None:
                attr.append(torch.cat([g.edge_attr, g.edge_attr.new_zeros(
                    extra_edges, g.edge_attr.shape[-1])]))
        offset += n + extra
        offsets.append(offset)
    ptr.append(first.ptr.new_tensor([offset]))
    edge_index = torch.cat(index, 1) if edges else first.edge_index.new_zeros(2, 0)
    edge_attr = None
    if first.edge_attr is not None:
        edge_attr = (torch.cat(attr) if edges
                     else first.edge_attr.new_zeros(0, first.edge_attr.shape[-1]))
    graph = GraphBatch(torch.cat(q), torch.cat(p), torch.cat(c), edge_index, torch.cat(ptr),
                       edge_attr)
    counts = torch.tensor(np.diff(offsets).tolist(), device=device)
    node_task = torch.repeat_interleave(torch.arange(len(points), device=device), counts)
    w = torch.cat(weight)
    real = w.new_zeros(len(points)).index_add(0, node_task, w)
    return StackedPoints(graph, torch.cat(dq), torch.cat(dp), w, node_task, real, blocks,
                         offsets)


def stack_params(params: Mapping[str, Tensor], tasks: int,
                 names: Collection[str] | None = None) -> Params:
    """One copy of the parameters per task, ``[B, ...]`` (broadcast views, no copy).

    Args:
        params: Parameters by name (``[...]`` each).
        tasks: ``B``.
        names: Stack only these (default all); the others are returned as given
            and shared by every task.
    """
    return {k: v.expand(tasks, *v.shape) if names is None or k in names else v
            for k, v in params.items()}


def blocked_params(model: nn.Module, params: Mapping[str, Tensor], stacked: StackedPoints,
                   kinds: Mapping[str, str]) -> Params:
    """Per-task parameters ``[B, ...]`` as per-block ones ``[blocks, ...]``.

    Shared parameters (the model's own shape) pass through unchanged.
    """
    out = {}
    for k, v in params.items():
        kind = kinds.get(k)
        if v.dim() == model.get_parameter(k).dim() + 1 and kind not in stacked.one_per_task:
            v = v.index_select(0, stacked.blocks[kind])  # type: ignore[index]
        out[k] = v
    return out


def task_losses(model: DynamicsModel, params: Mapping[str, Tensor], stacked: StackedPoints,
                loss: str | LossFn = "logcosh", kinds: Mapping[str, str] | None = None
                ) -> Tensor:
    """Each task's mean penalty of predicted vs true ``(dq, dp)``, ``[B]``.

    Task ``b``'s value is :func:`meta.algorithms.task_loss` of its points at its copy
    ``params[k][b]`` (stacked parameters) or at the shared ``params[k]``.

    Args:
        model: The model.
        params: Parameters by name, stacked ``[B, ...]`` (:func:`stack_params`) or
            shared.
        stacked: The tasks' points.
        loss: Loss name or element-wise penalty.
        kinds: :func:`row_kinds` of the model (computed when not given).

    Returns:
        ``[B]`` losses, each averaged over its task's real particles and ``2d``
        components.
    """
    fn = get_loss(loss)
    kinds = row_kinds(model) if kinds is None else kinds
    dq, dp = predict(model, blocked_params(model, params, stacked, kinds), stacked.graph)
    penalty = fn(torch.cat([dq - stacked.dq, dp - stacked.dp], -1))  # [N, 2d]
    return stacked.per_task(penalty.sum(-1) * stacked.weight) / (
        stacked.real * penalty.shape[-1])


def inner_loop(model: DynamicsModel, params: Mapping[str, Tensor], stacked: StackedPoints,
               loss: str | LossFn, steps: int, lr: InnerLR, create_graph: bool,
               only: Collection[str] | None = None, kinds: Mapping[str, str] | None = None
               ) -> tuple[Params, list[Tensor]]:
    """``steps`` SGD steps of every task at once, each on its own support points.

    The batched form of :func:`meta.algorithms.inner_update`: the adapted parameters
    (``only``, default all or those with a rate) come back stacked ``[B, ...]``, the
    others as given. A rate may be a float, a tensor broadcastable to the parameter
    (Meta-SGD), or ``[B, ...]`` (one rule per task).

    Args:
        model: The model.
        params: Starting parameters, shared (``[...]``) or already stacked.
        stacked: The tasks' support points.
        loss: Loss name or element-wise penalty.
        steps: SGD steps.
        lr: Rates (see above).
        create_graph: Keep the graph of the inner gradients (second-order MAML).
        only: Names of the parameters to adapt.
        kinds: :func:`row_kinds` of the model (computed when not given).

    Returns:
        ``(params', losses)``: adapted parameters and the ``[B]`` support losses
        before each step.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"inner steps must be an int >= 0, got {steps!r}")
    fn = get_loss(loss)
    kinds = row_kinds(model) if kinds is None else kinds
    names = _adapted_names(params, lr, only)
    shared = [k for k in names if params[k].dim() == model.get_parameter(k).dim()]
    current = stack_params(params, stacked.tasks, shared)
    for k in names:
        if not current[k].requires_grad:
            current[k] = current[k].detach().clone().requires_grad_(True)
    return _sgd(lambda p: task_losses(model, p, stacked, fn, kinds), current, names, lr,
                steps, create_graph)


def meta_gradient(model: DynamicsModel, params: Mapping[str, Tensor], tasks: Sequence[Task],
                  config: MetaConfig, inner_lr: InnerLR | None = None
                  ) -> tuple[Params, Params, dict[str, float]]:
    """:func:`meta.algorithms.meta_gradient` with the meta-batch in one call.

    Same arguments, results and errors; the ``B`` tasks' support (and query) points
    are stacked (:func:`stack_points`) and every task adapts its own copy of the
    parameters (:func:`stack_params`) in one forward and backward pass per inner step.
    """
    lr, learned = _meta_inputs(config, tasks, inner_lr)
    names = list(params)
    b = len(tasks)
    kinds = row_kinds(model)
    used = set(kinds.values())
    support = stack_points([t.support for t in tasks], used, model.uses_edges)
    query = stack_points([t.query for t in tasks], used, model.uses_edges)
    if config.algorithm == "reptile":
        if isinstance(lr, Mapping):
            raise ValueError("reptile takes a float inner learning rate (its meta-gradient "
                             "is (θ − θ') / α)")
        base = {k: v.detach() for k, v in params.items()}
        adapted, losses = inner_loop(model, base, support, config.loss, config.inner_steps,
                                     lr, create_graph=False, kinds=kinds)
        grads = {k: (base[k] - adapted[k].detach()).sum(0) / (lr * b) for k in names}
        with torch.no_grad():
            after = task_losses(model, {k: v.detach() for k, v in adapted.items()}, query,
                                config.loss, kinds)
        return grads, {}, {"support_before": float(losses[0].mean()),
                           "query_after": float(after.mean())}
    first = config.algorithm == "fomaml"
    only = decoder_names(model) if config.anil else None
    adapted, losses = inner_loop(model, params, support, config.loss, config.inner_steps, lr,
                                 create_graph=not first, only=only, kinds=kinds)
    per_task = task_losses(model, adapted, query, config.loss, kinds)
    targets = [params[k] for k in names] + list(learned.values())
    out = torch.autograd.grad(per_task.sum() / b, targets, allow_unused=True,
                              materialize_grads=True)
    grads = dict(zip(names, out[:len(names)], strict=True))
    lr_grads = dict(zip(learned, out[len(names):], strict=True))
    before = losses[0] if losses else per_task.detach()
    return grads, lr_grads, {"support_before": float(before.mean()),
                             "query_after": float(per_task.detach().mean())}
