"""Few-shot adaptation in closed form: a meta-learned basis of Hamiltonians and a ridge head.

The model is a *basis model* (:class:`hogn.models.HNNBasis`, :class:`hogn.models.HOGNBasis`):
``m`` learned basis functions ``φ(q, p) [G, m]`` (parameters ``θ``) and a head
``w [m]``, ``H = φ · w``. Hamilton's equations are linear in ``w``::

    (dq, dp) = Σ_i w_i X_i,    X_i = (∂φ_i/∂p, −∂φ_i/∂q)   (the field of feature i)

so adapting the head to a task's ``K`` support points is a linear least-squares
problem, solved exactly instead of by gradient steps (as R2D2, Bertinetto et al. 2019,
and MetaOptNet, Lee et al. 2019, do for classifiers). Stack the fields of the
features at the support's real particles into ``Φ [R·2d, m]`` (row ``(r, c)``: particle
``r``, component ``c`` of ``(dq, dp)``; padding particles of the padded layout left out)
and the observed derivatives into ``y [R·2d]``; then, with ``w0`` the model's own head
(the prior)::

    w = w0 + argmin_δ ‖Φ δ − (y − Φ w0)‖² + λ' ‖δ‖²
      = w0 + (ΦᵀΦ + λ' I)⁻¹ Φᵀ (y − Φ w0),         λ' = ridge · tr(ΦᵀΦ) / m

(:func:`ridge_solve`). ``λ'`` is scale-free: ``ridge`` is the shrinkage relative to the
mean eigenvalue of ``ΦᵀΦ``, whatever the units of the data and the size of ``K``; it also
bounds the condition number of the solve by ``1 + m / ridge``.

Meta-training (:func:`closed_form_meta_loss`, :func:`closed_form_meta_train_step`)
learns ``θ`` and the prior ``w0`` end to end: the query loss of each task at its solved
head is differentiated through the solve, through ``Φ`` (the feature Jacobians are
built with ``create_graph=True``) and through ``w0``.

Cost, for a meta-batch of ``B`` tasks of ``K`` support and ``Q`` query points (all
tasks share ``θ``, so each step is one call over all tasks' points):

- features: one forward over the ``B·K`` support graphs, then the ``m`` feature
  Jacobians (``m`` backward passes' arithmetic; :data:`METHODS` says how);
- the solve: ``ΦᵀΦ`` in ``O(R·2d·m²)`` per task and a batched Cholesky, ``O(B·m³)``;
- the query: one forward over the ``B·Q`` query graphs and *one* backward of
  ``Σ_g φ_g · w_task(g)`` (the field of each task's ``H``), not ``m``;
- the meta-gradient: one backward through all of it (second order in the network).

The feature Jacobians (:data:`METHODS`): ``"loop"`` (the default) takes ``m`` backward
passes of the one forward; ``"vmap"`` one batched backward
(``torch.autograd.grad(is_grads_batched=True)``), falling back to the loop where ``vmap``
cannot run a model; ``"tile"`` one forward and one backward over ``m`` copies of the
graphs. The same ``Φ`` to rounding. Measured on CPU (torch 2.13, one thread, float32,
meta-batch 8 over mass-spring, pendulum and three-body, ``K = 50``, 50 query points,
``m = 32``; a shared 2-core machine), milliseconds per :func:`closed_form_meta_train_step`
(best of 7); ``vmap`` runs the batched backward's ``tanh``, ``scatter`` and ``gather``
steps slice by slice, so it saves nothing there:

==========================  ======  ======  ======  =======================
model                        loop    vmap    tile    MAML, 1 inner step
==========================  ======  ======  ======  =======================
hnn-basis, hidden 200         73     128     189     21 (``hnn``)
hogn-basis, hidden 64        232     276     471     66 (``hogn``)
==========================  ======  ======  ======  =======================

Public functions: :func:`feature_fields` (``Φ`` of some points), :func:`observed`
(``y``), :func:`ridge_solve` (the linear algebra), :func:`solve_heads` (the heads of
several tasks in one call), :func:`solve_head` (adapted parameters of one task),
:func:`closed_form_meta_loss` and :func:`closed_form_meta_train_step`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils.rnn import pad_sequence

from hogn import checks
from hogn.graph import GraphBatch
from hogn.models.base import DynamicsModel
from meta.algorithms import LossFn, Params, get_loss, parameters
from meta.tasks import Points, Task

__all__ = [
    "HEAD",
    "METHODS",
    "closed_form_meta_loss",
    "closed_form_meta_train_step",
    "feature_fields",
    "head_fields",
    "observed",
    "ridge_solve",
    "solve_head",
    "solve_heads",
]

HEAD = "head"
"""Name of the head parameter ``w [m]`` of a basis model (the prior ``w0``)."""

METHODS = ("loop", "vmap", "tile")
"""How the ``m`` feature Jacobians are taken: ``"loop"`` (``m`` backward passes of one
forward; the fastest measured, the default), ``"vmap"`` (one batched backward, vectorised
with ``vmap``; where that fails for a model class it warns once and takes the loop from
then on), ``"tile"`` (one forward and one backward over ``m`` copies of the graphs, copy
``i`` reading out feature ``i``: large kernels, twice the arithmetic of the loop)."""

_NO_VMAP: set[type] = set()  # model classes whose batched backward failed


class _Features(nn.Module):
    """``forward`` = ``model.features_of``, so ``functional_call`` can reach it."""

    def __init__(self, model: DynamicsModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        return self.model.features_of(q, p, graph)  # type: ignore[operator]


# ------------------------------------------------------------------ checks
def _check_model(model: DynamicsModel) -> int:
    """The number of features ``m`` of a basis model; ``ValueError`` for any other."""
    head = getattr(model, HEAD, None)
    if not callable(getattr(model, "features_of", None)) or not isinstance(head, Tensor) \
            or head.dim() != 1:
        raise ValueError(f"closed-form adaptation needs a basis model with features_of(q, p, "
                         f"graph) -> [G, m] and a head [m] (hnn-basis, hogn-basis), got "
                         f"{getattr(model, 'name', None) or type(model).__name__}")
    return head.shape[0]


def _check_ridge(ridge: float) -> float:
    """The relative ridge (the shrinkage relative to ``tr(ΦᵀΦ)/m``): a finite number > 0."""
    return checks.positive_float(ridge, "ridge")


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of: {', '.join(METHODS)}")
    return method


def _prior(model: DynamicsModel, params: Mapping[str, Tensor]) -> Tensor:
    """``w0``: the head in ``params`` (else the model's own), ``[m]``."""
    head = params.get(HEAD)
    return getattr(model, HEAD) if head is None else head


# ------------------------------------------------------------------ features
def _features(model: DynamicsModel, params: Mapping[str, Tensor], q: Tensor, p: Tensor,
              graph: GraphBatch) -> Tensor:
    """``φ [G, m]`` with the model's parameters replaced by ``params``."""
    named = {f"model.{k}": v for k, v in params.items()}
    return functional_call(_Features(model), named, (q, p, graph))


def _jacobians(model: DynamicsModel, params: Mapping[str, Tensor], graph: GraphBatch,
               create_graph: bool, method: str) -> Tensor:
    """The fields of the ``m`` features at every node, ``[m, N, 2d]`` (``(dq, dp)``)."""
    m = _check_model(model)
    _check_method(method)
    model.check_state(graph.q, graph.p, graph)
    with torch.enable_grad():
        if method == "tile":
            return _tiled_jacobians(model, params, graph, m, create_graph)
        q = graph.q.detach().requires_grad_(True)
        p = graph.p.detach().requires_grad_(True)
        total = _features(model, params, q, p, graph).sum(0)  # [m]: graphs are independent
        if method == "vmap" and type(model) not in _NO_VMAP:
            eye = torch.eye(m, dtype=total.dtype, device=total.device)
            try:
                gq, gp = torch.autograd.grad(total, (q, p), eye, retain_graph=True,
                                             create_graph=create_graph, is_grads_batched=True,
                                             materialize_grads=True)
                return torch.cat([gp, -gq], -1)
            except (RuntimeError, NotImplementedError) as exc:
                _NO_VMAP.add(type(model))
                warnings.warn(f"{getattr(model, 'name', type(model).__name__)}: the batched "
                              f"feature Jacobian failed under vmap ({exc}); taking the "
                              f"{m} gradients one by one from now on", RuntimeWarning,
                              stacklevel=3)
        fields = []
        for i in range(m):
            gq, gp = torch.autograd.grad(total[i], (q, p), retain_graph=create_graph or i < m - 1,
                                         create_graph=create_graph, materialize_grads=True)
            fields.append(torch.cat([gp, -gq], -1))
        return torch.stack(fields)


def _tiled_jacobians(model: DynamicsModel, params: Mapping[str, Tensor], graph: GraphBatch,
                     m: int, create_graph: bool) -> Tensor:
    """The ``m`` feature fields by one forward and one backward over ``m`` copies of the
    graphs (copy ``i`` reads out feature ``i``), ``[m, N, 2d]``."""
    tiled = GraphBatch.cat([graph] * m)
    q = graph.q.detach().repeat(m, 1).requires_grad_(True)
    p = graph.p.detach().repeat(m, 1).requires_grad_(True)
    phi = _features(model, params, q, p, tiled).view(m, graph.num_graphs, m)
    total = phi.diagonal(0, 0, 2).sum()  # Σ_i Σ_g φ_gi of copy i
    gq, gp = torch.autograd.grad(total, (q, p), create_graph=create_graph,
                                 materialize_grads=True)
    return torch.cat([gp, -gq], -1).view(m, graph.num_nodes, -1)


def _real_rows(jac: Tensor, mask: Tensor | None) -> Tensor:
    """``[m, N, 2d]`` to the rows of real particles, ``[R·2d, m]``."""
    rows = jac.permute(1, 2, 0)  # [N, 2d, m]
    if mask is not None:
        rows = rows[mask]
    return rows.reshape(-1, jac.shape[0])


def feature_fields(model: DynamicsModel, params: Mapping[str, Tensor], points: Points,
                   create_graph: bool = False, method: str = "loop") -> Tensor:
    """The Hamiltonian field of every feature at the real particles of ``points``: ``Φ``.

    Column ``i`` is ``X_i = (∂φ_i/∂p, −∂φ_i/∂q)``; the rows run over the real particles
    (``points.mask``; every particle when it is ``None``) and, within a particle, over
    the ``2d`` components of ``(dq, dp)``, the order of :func:`observed`. ``Φ w`` is the
    field of ``H = φ · w``.

    Args:
        model: A basis model (``hnn-basis``, ``hogn-basis``).
        params: Parameters by name (missing ones: the model's own); the head is not used.
        points: ``M`` points of ``n`` particles, ``R`` of them real.
        create_graph: Keep the graph, so that ``Φ`` is differentiable w.r.t. ``params``.
        method: ``"loop"``, ``"vmap"`` or ``"tile"`` (see :data:`METHODS`).

    Returns:
        ``Φ [R·2d, m]``.

    Raises:
        ValueError: for a model without features, or points that do not fit it.
    """
    return _real_rows(_jacobians(model, params, points.graph, create_graph, method),
                      points.mask)


def observed(points: Points) -> Tensor:
    """The observed ``(dq, dp)`` at the real particles of ``points``, ``y [R·2d]``
    (rows as in :func:`feature_fields`)."""
    y = torch.cat([points.dq, points.dp], -1)  # [N, 2d]
    if points.mask is not None:
        y = y[points.mask]
    return y.reshape(-1)


# ------------------------------------------------------------------ the solve
def ridge_solve(phi: Tensor, y: Tensor, w0: Tensor, ridge: float) -> Tensor:
    """``w = w0 + (ΦᵀΦ + λ' I)⁻¹ Φᵀ(y − Φ w0)``, ``λ' = ridge · tr(ΦᵀΦ)/m``, by Cholesky.

    The minimiser of ``‖Φ w − y‖² + λ' ‖w − w0‖²``. Batched over leading axes; rows of
    zeros in ``Φ`` (padding) change nothing. Differentiable in ``phi``, ``y`` and ``w0``;
    computed in float64 (a float32 Cholesky fails at small ridges) and returned in
    ``phi``'s dtype.

    Args:
        phi: ``Φ [..., R, m]``.
        y: ``[..., R]``.
        w0: Prior ``[..., m]`` (or ``[m]``, shared).
        ridge: Relative ridge ``> 0``.

    Returns:
        ``w [..., m]``.

    Raises:
        ValueError: for a ridge that is not a positive finite number.
        FloatingPointError: if ``ΦᵀΦ + λ' I`` is not numerically positive definite (all
            features without a field on the support, or non-finite values).
    """
    _check_ridge(ridge)
    dtype = phi.dtype
    if dtype != torch.float64:  # float32's Cholesky fails for small ridges: solve in float64
        phi, y, w0 = phi.double(), y.double(), w0.double()
    m = phi.shape[-1]
    gram = phi.transpose(-1, -2) @ phi  # [..., m, m]
    lam = ridge * gram.diagonal(0, -2, -1).sum(-1) / m  # [...]
    eye = torch.eye(m, dtype=phi.dtype, device=phi.device)
    rhs = (phi.transpose(-1, -2) @ (y - (phi @ w0[..., None])[..., 0])[..., None])
    factor, info = torch.linalg.cholesky_ex(gram + lam[..., None, None] * eye)
    if bool((info != 0).any()):
        raise FloatingPointError("ΦᵀΦ + λ'I is not positive definite (no feature has a field "
                                 "on the support points, or Φ is not finite); raise ridge or "
                                 "check the data")
    return (w0 + torch.cholesky_solve(rhs, factor)[..., 0]).to(dtype)


def _support_system(model: DynamicsModel, params: Mapping[str, Tensor],
                    supports: Sequence[Points], create_graph: bool, method: str
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """``Φ [B, R_max, m]``, ``y [B, R_max]`` (zero rows after a task's own ``R_b·2d``) and
    the row counts ``[B]`` of ``B`` tasks' support points, from one forward and one
    batched backward over all of them."""
    if len(supports) == 0:
        raise ValueError("need at least one task's support points")
    graph = GraphBatch.cat([s.graph for s in supports])
    jac = _jacobians(model, params, graph, create_graph, method)  # [m, N, 2d]
    masks = [torch.ones(s.graph.num_nodes, dtype=torch.bool, device=jac.device)
             if s.mask is None else s.mask for s in supports]
    width = 2 * graph.q.shape[-1]
    counts = [int(k.sum()) * width for k in masks]
    phi = _real_rows(jac, torch.cat(masks)).split(counts)
    ys = [observed(s) for s in supports]
    return (pad_sequence(list(phi), batch_first=True), pad_sequence(ys, batch_first=True),
            torch.tensor(counts, device=jac.device))


def solve_heads(model: DynamicsModel, params: Mapping[str, Tensor],
                supports: Sequence[Points], ridge: float, create_graph: bool = False,
                method: str = "loop") -> Tensor:
    """The ridge-solved heads of several tasks (shared features, one head each).

    The support points of all tasks go through the network together (one forward, one
    batched backward: the features ``θ`` are shared, only ``w`` differs), then one
    batched Cholesky solve (:func:`ridge_solve`) per task.

    Args:
        model: A basis model.
        params: Parameters by name (missing ones: the model's own); ``params["head"]``
            (else the model's head) is the prior ``w0``.
        supports: ``B`` tasks' support points.
        ridge: Relative ridge ``> 0`` (see the module docstring).
        create_graph: Differentiable w.r.t. ``params`` (meta-training).
        method: Feature Jacobians: ``"loop"``, ``"vmap"`` or ``"tile"``.

    Returns:
        ``W [B, m]``.
    """
    _check_ridge(ridge)
    phi, y, _ = _support_system(model, params, supports, create_graph, method)
    w0 = _prior(model, params)
    if not create_graph:
        w0 = w0.detach()
    return ridge_solve(phi, y, w0, ridge)


def head_fields(model: DynamicsModel, params: Mapping[str, Tensor], heads: Tensor,
                graph: GraphBatch, q: Tensor, p: Tensor, owner: Tensor
                ) -> tuple[Tensor, Tensor]:
    """The fields of several heads at once: graph ``g`` follows ``H_g = φ_g · heads[owner_g]``.

    One forward of the shared features over every graph and one backward of
    ``Σ_g φ_g · w_owner(g)`` (graphs are independent, so each gets its own head's field):
    e.g. the rollouts of ``B`` trajectories, each with its own solved head, in one call.

    Args:
        model: A basis model.
        params: Its parameters (the features' weights; the head's entry is not used).
        heads: ``[B, m]``.
        graph: ``G`` graphs.
        q: Positions ``[N, d]``.
        p: Momenta ``[N, d]``.
        owner: Head of each graph, ``[G]`` (long, in ``0 … B − 1``).

    Returns:
        ``(dq, dp) [N, d]``, detached.
    """
    with torch.enable_grad():
        q = q.detach().requires_grad_(True)
        p = p.detach().requires_grad_(True)
        fixed = {k: v.detach() for k, v in params.items()}
        energy = (_features(model, fixed, q, p, graph) * heads.detach()[owner]).sum()
        dh_dq, dh_dp = torch.autograd.grad(energy, (q, p), materialize_grads=True)
    return dh_dp.detach(), -dh_dq.detach()


def solve_head(model: DynamicsModel, params: Mapping[str, Tensor], support: Points,
               ridge: float, create_graph: bool = False, method: str = "loop") -> Params:
    """Adapt a basis model to one task: the parameters with the head solved in closed form.

    Args:
        model: A basis model.
        params: Parameters by name; their head (else the model's) is the prior ``w0``.
        support: The task's support points (``K`` points, padding masked out).
        ridge: Relative ridge ``> 0``.
        create_graph: Differentiable w.r.t. ``params``.
        method: Feature Jacobians: ``"loop"``, ``"vmap"`` or ``"tile"``.

    Returns:
        ``params`` with ``"head"`` replaced by ``w [m]`` (every other entry the same
        tensor), ready for :func:`meta.algorithms.predict` or ``task_loss``.
    """
    return {**params, HEAD: solve_heads(model, params, [support], ridge, create_graph,
                                        method)[0]}


# ------------------------------------------------------------------ meta-training
def _per_task_mean(penalty: Tensor, task: Tensor, weight: Tensor, tasks: int) -> Tensor:
    """``Σ_rows weight·penalty / Σ_rows weight·2d`` per task, ``[B]``, from ``penalty
    [N, 2d]``, the task of each row ``[N]`` and row weights ``[N]``."""
    sums = penalty.new_zeros(tasks).index_add(0, task, (penalty * weight[:, None]).sum(-1))
    counts = penalty.new_zeros(tasks).index_add(0, task, weight) * penalty.shape[1]
    return sums / counts


def closed_form_meta_loss(model: DynamicsModel, params: Mapping[str, Tensor],
                          tasks: Sequence[Task], ridge: float, loss: str | LossFn = "mse",
                          method: str = "loop") -> tuple[Tensor, dict[str, float]]:
    """Mean query loss of the tasks at their closed-form heads, ``(1/B) Σ_b L_q,b(θ, w_b)``.

    Each task's head ``w_b`` is ridge-solved on its support points (all tasks in one
    call, :func:`solve_heads`, with ``create_graph=True``); its query field is that of
    ``H_g = φ_g · w_b`` for the query graphs ``g`` of task ``b``, all tasks in one forward
    and one backward. Differentiable w.r.t. ``params``: the features ``θ`` (through ``Φ``
    and the query features) and the prior head ``w0``.

    Args:
        model: A basis model.
        params: Meta-parameters ``θ`` and ``w0`` by name (e.g. :func:`meta.parameters`).
        tasks: Meta-batch of ``B`` tasks (on the model's device, in its dtype).
        ridge: Relative ridge ``> 0``.
        loss: ``"mse"`` (the default: the squared error the solve minimises) or
            ``"logcosh"`` of the query residuals, or an element-wise penalty.
        method: Feature Jacobians: ``"loop"``, ``"vmap"`` or ``"tile"``.

    Returns:
        ``(loss, stats)``: the scalar meta-loss, and mean over the tasks of
        ``support_before`` (support loss at the prior ``w0``), ``support_after`` (at the
        solved heads) and ``query_after`` (the meta-loss).

    Raises:
        ValueError: for no tasks, a model without features, an invalid ridge, loss or
            method.
    """
    fn = get_loss(loss)
    _check_ridge(ridge)
    if len(tasks) == 0:
        raise ValueError("a meta-batch needs at least one task")
    b = len(tasks)
    phi, y, counts = _support_system(model, params, [t.support for t in tasks], True, method)
    w0 = _prior(model, params)
    heads = ridge_solve(phi, y, w0, ridge)  # [B, m]
    with torch.no_grad():
        rows = torch.arange(phi.shape[1], device=phi.device)[None, :] < counts[:, None]
        stats = {}
        for key, w in (("support_before", w0.expand_as(heads)), ("support_after", heads)):
            pen = fn((phi @ w[..., None])[..., 0] - y) * rows
            stats[key] = float((pen.sum(1) / counts).mean())

    graph = GraphBatch.cat([t.query.graph for t in tasks])
    model.check_state(graph.q, graph.p, graph)
    with torch.enable_grad():
        q = graph.q.detach().requires_grad_(True)
        p = graph.p.detach().requires_grad_(True)
        points = torch.tensor([t.query.num_points for t in tasks], device=q.device)
        task_of_graph = torch.repeat_interleave(torch.arange(b, device=q.device), points)
        energy = (_features(model, params, q, p, graph) * heads[task_of_graph]).sum()
        dh_dq, dh_dp = torch.autograd.grad(energy, (q, p), create_graph=True,
                                           materialize_grads=True)
    truth = torch.cat([torch.cat([t.query.dq, t.query.dp], -1) for t in tasks])
    penalty = fn(torch.cat([dh_dp, -dh_dq], -1) - truth)  # [N, 2d]
    weight = torch.cat([torch.ones(t.query.graph.num_nodes, dtype=q.dtype, device=q.device)
                        if t.query.mask is None else t.query.mask.to(q.dtype) for t in tasks])
    value = _per_task_mean(penalty, task_of_graph[graph.batch], weight, b).mean()
    stats["query_after"] = float(value.detach())
    return value, stats


def closed_form_meta_train_step(model: DynamicsModel, optimizer: torch.optim.Optimizer,
                                tasks: Sequence[Task], ridge: float,
                                loss: str | LossFn = "mse", grad_clip: float = 0.0,
                                method: str = "loop") -> dict[str, float]:
    """One meta-update of a basis model: the gradient of :func:`closed_form_meta_loss`.

    The features ``θ`` and the prior head ``w0`` are learned end to end through the
    ridge solve. Tasks are moved to the model's device (never cast). The gradients are
    written to ``.grad`` of the model's trainable parameters before ``optimizer.step()``
    (the optimizer must hold them, e.g. ``torch.optim.Adam(model.parameters())``).
    One process: no sharing of the meta-batch across ``torchrun`` processes.

    Args:
        model: A basis model (updated in place).
        optimizer: The outer optimizer.
        tasks: Meta-batch of ``B`` tasks.
        ridge: Relative ridge ``> 0``.
        loss: Query loss, ``"mse"`` or ``"logcosh"`` (or an element-wise penalty).
        grad_clip: Clip the meta-gradient norm to this (0: off).
        method: Feature Jacobians: ``"loop"``, ``"vmap"`` or ``"tile"``.

    Returns:
        ``support_before``, ``support_after``, ``query_after`` (means over the tasks, see
        :func:`closed_form_meta_loss`) and ``grad_norm`` (before clipping).

    Raises:
        ValueError: for an invalid option (see :func:`closed_form_meta_loss`) or
            ``grad_clip``.
        FloatingPointError: if the meta-gradient is not finite (nothing is updated).
    """
    if not (isinstance(grad_clip, (int, float)) and math.isfinite(grad_clip)
            and grad_clip >= 0):
        raise ValueError(f"grad_clip must be a finite number >= 0, got {grad_clip!r}")
    device = model.param_device
    params = parameters(model)
    value, stats = closed_form_meta_loss(model, params, [t.to(device) for t in tasks], ridge,
                                         loss, method)
    grads = torch.autograd.grad(value, list(params.values()), allow_unused=True,
                                materialize_grads=True)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    if not torch.isfinite(norm):
        raise FloatingPointError(f"closed-form meta-gradient is not finite (norm "
                                 f"{float(norm)}); raise ridge or lower the learning rate")
    if grad_clip > 0 and norm > grad_clip:
        grads = tuple(g * (grad_clip / norm) for g in grads)
    optimizer.zero_grad(set_to_none=True)
    for t, g in zip(params.values(), grads, strict=True):
        t.grad = g
    optimizer.step()
    return {**stats, "grad_norm": float(norm)}
