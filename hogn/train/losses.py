"""Targets and losses: a batch's prediction and target (derivative or rollout), the
element-wise loss, the batch loss, and the summed loss that ``DistributedDataParallel``
wraps."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from hogn import integrators
from hogn.models.base import DynamicsModel
from hogn.train.config import TrainConfig
from hogn.train.samples import Batch
from hogn.train.start_offsets import _StartOffsets

__all__ = ["log_cosh"]


def log_cosh(x: Tensor) -> Tensor:
    """``log(cosh(x))`` computed stably (``|x| + softplus(-2|x|) - log 2``)."""
    a = x.abs()
    return a + F.softplus(-2 * a) - math.log(2.0)


def _loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    return F.mse_loss(pred, target) if kind == "mse" else log_cosh(pred - target).mean()


def _penalty(residual: Tensor, kind: str) -> Tensor:
    """The element-wise loss of ``residual`` (its mean is :func:`_loss`)."""
    return residual.square() if kind == "mse" else log_cosh(residual)


def _batch_loss(model: DynamicsModel, batch: Batch, cfg: TrainConfig, dt: float,
                offsets: _StartOffsets | None = None) -> Tensor:
    """The batch's mean loss plus the model's auxiliary loss. With start ``offsets``
    (``refine_initial``) the rollout starts from the refined states, and the mean runs
    over ``k + 1`` states: the refined start against its observation, then the ``k``
    rollout states against theirs (the start is observed with the same noise)."""
    if offsets is None:
        loss = _loss(*_prediction(model, batch, cfg, dt), cfg.loss)
    else:
        moved = offsets.shift(batch)
        pred, target = _prediction(model, moved, cfg, dt)
        start = torch.cat([moved.graph.q, moved.graph.p], -1)[:, None]
        observed = torch.cat([batch.graph.q, batch.graph.p], -1)[:, None]
        loss = _loss(torch.cat([start, pred], 1), torch.cat([observed, target], 1), cfg.loss)
    extra = model.auxiliary_loss(batch.graph, batch.y_q, batch.y_p)
    return loss if extra is None else loss + extra


def _has_auxiliary_loss(model: DynamicsModel) -> bool:
    return type(model).auxiliary_loss is not DynamicsModel.auxiliary_loss


def _prediction(model: DynamicsModel, batch: Batch, cfg: TrainConfig, dt: float
                ) -> tuple[Tensor, Tensor]:
    """The prediction and its target, ``[N, 2d]`` (derivative) or ``[N, k, 2d]``."""
    graph = batch.graph
    if cfg.target == "derivative":
        dq, dp = model.time_derivative(graph)
        return torch.cat([dq, dp], -1), torch.cat([batch.y_q, batch.y_p], -1)
    q, p = graph.q, graph.p
    preds_q, preds_p = [], []
    if model.is_stepper:
        for _ in range(cfg.rollout_steps):
            q, p = model.next_state(graph.replace(q=q, p=p))
            preds_q.append(q)
            preds_p.append(p)
    else:
        step = integrators.get(cfg.integrator)
        f = model.vector_field(graph)  # partial derivatives: see state_gradients
        for _ in range(cfg.rollout_steps):
            q, p = step(f, q, p, dt)
            preds_q.append(q)
            preds_p.append(p)
    pred = torch.cat([torch.stack(preds_q, 1), torch.stack(preds_p, 1)], -1)
    return pred, torch.cat([batch.y_q, batch.y_p], -1)


class _SummedLoss(torch.nn.Module):
    """The module that ``DistributedDataParallel`` wraps: ``forward`` returns the sum
    of the element-wise loss over a batch (the model's derivative, with its inner
    ``autograd.grad``, stays inside the forward, so that DDP's reducer sees the one
    backward of the loss)."""

    def __init__(self, model: DynamicsModel, cfg: TrainConfig, dt: float) -> None:
        super().__init__()
        self.model, self.cfg, self.dt = model, cfg, dt

    def forward(self, batch: Batch) -> Tensor:
        pred, target = _prediction(self.model, batch, self.cfg, self.dt)
        return _penalty(pred - target, self.cfg.loss).sum()
