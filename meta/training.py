"""The meta-training loop: the outer optimizer, one meta-update and the loop.

:func:`meta_train_step` takes the meta-gradient of a meta-batch from
:func:`meta.batched.meta_gradient` (all tasks in one call) or
:func:`meta.algorithms.meta_gradient` (task by task) and applies it; in a group of
several processes each computes its share and one ``all_reduce`` sums them.
:func:`meta_train` draws meta-batches from a sampler and steps. The mathematics of
the inner and outer loops lives in :mod:`meta.algorithms`, which knows nothing of this
module or of :mod:`meta.batched`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hogn import distributed
from hogn.models.base import DynamicsModel
from meta import batched
from meta.algorithms import (
    InnerLR,
    MetaConfig,
    Params,
    _check_tasks,
    _meta_inputs,
    init_inner_lr,
    inner_parameters,
    meta_gradient,
    parameters,
)
from meta.tasks import Task

__all__ = ["MetaHistory", "make_optimizer", "meta_train", "meta_train_step"]


def make_optimizer(model: nn.Module, config: MetaConfig,
                   inner_lr: Mapping[str, Tensor] | None = None) -> torch.optim.Adam:
    """The outer Adam optimizer over the model's parameters and learned inner rates."""
    groups: list[Tensor] = list(parameters(model).values())
    if inner_lr is not None:
        groups += [v for v in inner_lr.values() if v.requires_grad]
    return torch.optim.Adam(groups, lr=config.outer_lr)


def meta_train_step(model: DynamicsModel, optimizer: torch.optim.Optimizer,
                    tasks: Sequence[Task], config: MetaConfig,
                    inner_lr: InnerLR | None = None) -> dict[str, float]:
    """One meta-update: the meta-gradient of ``tasks`` applied by ``optimizer``.

    The meta-gradient comes from :func:`meta.batched.meta_gradient` (all tasks in one
    call) or :func:`meta_gradient` (task by task), as ``config.batched`` says.

    The gradients are written to ``.grad`` of the model's parameters (and of learned
    rates) before ``optimizer.step()``; the optimizer must hold those tensors
    (:func:`make_optimizer`). Tasks are moved to the model's device (never cast).

    In a group of several processes (``torchrun``; :mod:`hogn.distributed`) every
    process passes the same meta-batch: each computes the meta-gradient of its share
    of the tasks (``tasks[rank::world]``), weighted by the share's size, and one
    ``all_reduce`` sums the shares' gradients and losses, so that every process
    applies the one-process meta-gradient of the whole meta-batch (to rounding).

    Returns:
        Mean losses of the meta-batch (``support_before``, ``query_after``) and
        ``grad_norm`` (before clipping).

    Raises:
        FloatingPointError: if the meta-gradient is not finite (nothing is updated).
    """
    device = next(model.parameters()).device
    params = parameters(model)
    together = batched.supports(model) if config.batched is None else config.batched
    gradient = batched.meta_gradient if together else meta_gradient
    if distributed.active():
        grads, lr_grads, stats = _shared_gradient(gradient, model, params, tasks, config,
                                                  inner_lr, device)
    else:
        tasks = [t.to(device) for t in tasks]
        grads, lr_grads, stats = gradient(model, params, tasks, config, inner_lr)
    everything = list(grads.values()) + list(lr_grads.values())
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g)
                                                 for g in everything]))
    if not torch.isfinite(norm):
        raise FloatingPointError(f"meta-gradient is not finite (norm {float(norm)}); "
                                 "lower inner_lr or outer_lr")
    if config.grad_clip > 0 and norm > config.grad_clip:
        scale = config.grad_clip / norm
        everything = [g * scale for g in everything]
    tensors = list(params.values())
    if isinstance(inner_lr, Mapping):
        tensors += [inner_lr[k] for k in lr_grads]
    optimizer.zero_grad(set_to_none=True)
    for t, g in zip(tensors, everything, strict=True):
        t.grad = g
    optimizer.step()
    return {**stats, "grad_norm": float(norm)}


def _shared_gradient(gradient: Callable[..., tuple[Params, Params, dict[str, float]]],
                     model: DynamicsModel, params: Params, tasks: Sequence[Task],
                     config: MetaConfig, inner_lr: InnerLR | None, device: torch.device
                     ) -> tuple[Params, Params, dict[str, float]]:
    """``gradient`` of the whole meta-batch, computed by the processes together: this
    rank's share (:func:`hogn.distributed.shard`) weighted by ``len(share) / B``, then
    summed over the ranks by one ``all_reduce``. A rank without a task (``B`` below the
    world size) adds zeros."""
    _check_tasks(tasks)
    share = [t.to(device) for t in distributed.shard(tasks)]
    weight = len(share) / len(tasks)
    if share:
        grads, lr_grads, stats = gradient(model, params, share, config, inner_lr)
    else:
        _, learned = _meta_inputs(config, tasks, inner_lr)
        grads = {k: torch.zeros_like(v) for k, v in params.items()}
        lr_grads = {k: torch.zeros_like(v) for k, v in learned.items()}
        stats = {"support_before": 0.0, "query_after": 0.0}
    keys = sorted(stats)
    values = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=device)
    local = [g * weight for g in (*grads.values(), *lr_grads.values())]
    summed = distributed.all_reduce_sum([*local, values * weight])
    n = len(grads)
    return (dict(zip(grads, summed[:n], strict=True)),
            dict(zip(lr_grads, summed[n:-1], strict=True)),
            dict(zip(keys, summed[-1].tolist(), strict=True)))


class MetaHistory(list):  # type: ignore[type-arg]
    """What :func:`meta_train` returns: one stats dict per iteration (a plain list of
    them), and the inner rates it used in :attr:`inner_lr`.

    Attributes:
        inner_lr: The float rate, or the ``name → tensor`` rates: with
            ``learn_inner_lr`` the learned Meta-SGD rates (the live tensors the outer
            optimizer updated; pass them to :func:`meta.adapt_and_evaluate` as its
            ``inner_lr``, or back to :func:`meta_train` to train on).
    """

    inner_lr: InnerLR

    def __init__(self, rows: Iterable[dict[str, float]] = (), inner_lr: InnerLR = 0.0
                 ) -> None:
        super().__init__(rows)
        self.inner_lr = inner_lr


def meta_train(model: DynamicsModel, sampler: Any, config: MetaConfig, iterations: int,
               inner_lr: InnerLR | None = None, optimizer: torch.optim.Optimizer | None = None,
               callback: Callable[[int, dict[str, float]], None] | None = None,
               progress: bool = False) -> MetaHistory:
    """Meta-train for ``iterations`` meta-batches drawn from ``sampler``.

    Args:
        model: The model (updated in place).
        sampler: A :class:`meta.tasks.TaskSampler` (its ``shots``/``query`` must
            match the config's).
        config: Options.
        iterations: Meta-updates.
        inner_lr: Inner rates; default: learned per-element rates from
            ``config.inner_lr`` when ``config.learn_inner_lr`` (for the parameters the
            inner loop adapts, :func:`inner_parameters`), else the float.
        optimizer: Outer optimizer (default :func:`make_optimizer`).
        callback: Called as ``callback(iteration, stats)`` after each update.
        progress: Show a tqdm bar.

    Returns:
        A :class:`MetaHistory`: one stats dict per iteration (see
        :func:`meta_train_step`), with ``iteration``; its ``inner_lr`` holds the rates
        used (the learned ones with ``config.learn_inner_lr``).
    """
    config.validate()
    if getattr(sampler, "shots", config.shots) != config.shots or getattr(
            sampler, "query", config.query) != config.query:
        raise ValueError(f"sampler draws shots={sampler.shots}, query={sampler.query}; the "
                         f"config says shots={config.shots}, query={config.query}")
    if inner_lr is None and config.learn_inner_lr:
        inner_lr = init_inner_lr(inner_parameters(model, config), config.inner_lr)
    if optimizer is None:
        optimizer = make_optimizer(model, config, inner_lr if isinstance(inner_lr, Mapping)
                                   else None)
    steps: Iterable[int] = range(iterations)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"meta-train {config.algorithm}", disable=None)
    history = MetaHistory(inner_lr=config.inner_lr if inner_lr is None else inner_lr)
    for it in steps:
        stats = meta_train_step(model, optimizer, sampler.sample(config.meta_batch), config,
                                inner_lr)
        stats = {"iteration": it, **stats}
        history.append(stats)
        if callback is not None:
            callback(it, stats)
    return history
