"""One pass over a loader's batches: a training pass (optimizer steps) or a
validation pass, in one process (:func:`_epoch`) or one of several
(:func:`_sharded_epoch`)."""

from __future__ import annotations

import torch
from torch import Tensor

from hogn import distributed
from hogn.models.base import DynamicsModel
from hogn.train.batches import _Batches, _batches
from hogn.train.config import TrainConfig
from hogn.train.losses import _batch_loss, _penalty, _prediction
from hogn.train.result import NonFiniteLossError
from hogn.train.start_offsets import _StartOffsets


def _epoch(model: DynamicsModel, loader: _Batches, cfg: TrainConfig, dt: float,
           optimizer: torch.optim.Optimizer | None, epoch: int, progress: bool,
           offsets: _StartOffsets | None = None) -> float:
    """One pass over ``loader`` (a training pass with ``optimizer``); the batches' start
    states moved by ``offsets`` when given (``refine_initial``). Returns the mean loss."""
    total, count = 0.0, 0
    for step, batch in enumerate(_batches(loader, epoch, optimizer is not None, progress)):
        batch = batch.to(cfg.device)
        if optimizer is None:
            loss = _batch_loss(model, batch, cfg, dt, offsets)
            loss = loss.detach()
        else:
            optimizer.zero_grad(set_to_none=True)
            loss = _batch_loss(model, batch, cfg, dt, offsets)
            _step(loss, loss, model, optimizer, cfg, epoch, step)
        total += float(loss.detach()) * batch.num_graphs
        count += batch.num_graphs
    return total / max(count, 1)


def _step(loss: Tensor, value: Tensor, model: DynamicsModel,
          optimizer: torch.optim.Optimizer, cfg: TrainConfig, epoch: int, step: int) -> None:
    """Stop on a non-finite batch loss ``value``, else back-propagate ``loss`` (clipping
    the gradient norm as configured) and take the optimizer step."""
    if not torch.isfinite(value):
        raise NonFiniteLossError(f"non-finite training loss ({value.item()}) at epoch "
                                 f"{epoch}, step {step}")
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()


def _sharded_epoch(ddp: torch.nn.parallel.DistributedDataParallel | None,
                   model: DynamicsModel, loader: _Batches,
                   cfg: TrainConfig, dt: float, optimizer: torch.optim.Optimizer | None,
                   epoch: int, progress: bool) -> float:
    """:func:`_epoch` in one of several processes (``ddp`` wraps the model to train).

    Each rank's loss is the sum of the element-wise loss over its share of the global
    batch, times ``P / n`` (``n``: elements of the global batch, known to every rank),
    so that DDP's average of the gradients is the gradient of the global batch's mean,
    as in one process, however the graphs' sizes split. The loss value is summed over
    the ranks before the backward (one small ``all_reduce``), so every rank sees the
    same value and stops on the same non-finite one. Validation sums each rank's part
    once at the end of the pass. Returns the same mean as :func:`_epoch`.
    """
    world = distributed.world_size()
    total, count = 0.0, 0
    device = _device_of(model)
    part = torch.zeros((), dtype=torch.float64, device=device)  # validation: this rank's sum
    shares = _batches(loader, epoch, optimizer is not None, progress and distributed.is_main())
    for step, share in enumerate(shares):
        batch = share.batch.to(device)
        elements = share.nodes * (batch.y_q[0].numel() + batch.y_p[0].numel())
        if optimizer is None:
            if not share.empty:
                value = _penalty(torch.sub(*_prediction(model, batch, cfg, dt)), cfg.loss)
                part += value.sum().detach().double() * (share.graphs / elements)
        else:
            assert ddp is not None
            optimizer.zero_grad(set_to_none=True)
            loss = ddp(batch) * ((0.0 if share.empty else world) / elements)
            (mean,) = distributed.all_reduce_sum([loss.detach() / world])
            _step(loss, mean, model, optimizer, cfg, epoch, step)
            total += float(mean) * share.graphs
        count += share.graphs
    if optimizer is None:
        total = float(distributed.all_reduce_sum([part])[0])
    return total / max(count, 1)


def _device_of(model: DynamicsModel) -> torch.device:
    return next(model.parameters()).device
