"""What a run is built from before its first epoch (:class:`_Setup`): the data on the
model's device and dtype, the split into training, validation and test samples, their
loaders, the start offsets of ``refine_initial``, the optimizer and its schedule, and
(in several processes) the ``DistributedDataParallel`` wrapper."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from hogn import checks, distributed
from hogn.batching import EdgeBudgetBatches
from hogn.models.base import DynamicsModel
from hogn.train.batches import _loader
from hogn.train.config import TrainConfig
from hogn.train.losses import _batch_loss, _has_auxiliary_loss, _SummedLoss
from hogn.train.samples import Samples, _split
from hogn.train.start_offsets import _StartOffsets


@dataclass
class _Setup:
    """Everything the epochs of a run use, built by :func:`_set_up`.

    Attributes:
        model: The model to train (on ``device``).
        cfg: The checked options.
        progress: Show progress bars.
        shards: Processes training together (1: one process).
        device: The device of this process.
        dt: The data's time step (``nan`` for a single time).
        train_set: The training samples.
        gen: The generator of the batch order (and of ``max_samples``' subsets).
        budget: The edge budget's batches (``edge_budget``), else ``None``.
        full_batch: Whether every epoch is one step over all training samples.
        train_loader, val_loader, test_loader: The loaders (``test_loader``: ``None``
            without a test split).
        offsets: The start offsets (``refine_initial``), else ``None``.
        optimizer, scheduler: Adam and the learning-rate schedule (``None``: none).
        ddp: The ``DistributedDataParallel`` wrapper (several processes, once
            :meth:`wrap_for_ranks` has run), else ``None``.
    """

    model: DynamicsModel
    cfg: TrainConfig
    progress: bool
    shards: int
    device: torch.device
    dt: float
    train_set: Samples
    gen: torch.Generator
    budget: EdgeBudgetBatches | None
    full_batch: bool
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    test_loader: torch.utils.data.DataLoader | None
    offsets: _StartOffsets | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ddp: torch.nn.parallel.DistributedDataParallel | None = None

    def batches_in(self, epoch: int) -> int:
        """Batches (optimizer steps) of a whole ``epoch``."""
        if self.budget is not None:
            self.budget.set_epoch(epoch)
        return len(self.train_loader)

    def finished(self, epoch: int, steps: int) -> bool:
        """Whether the run is complete before ``epoch``, with ``steps`` steps taken."""
        return steps >= self.cfg.steps if self.cfg.steps else epoch > self.cfg.epochs

    def wrap_for_ranks(self) -> None:
        """In several processes, wrap the model's summed loss in
        ``DistributedDataParallel`` (after a resume: DDP starts every rank from rank 0's
        weights)."""
        if self.shards > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                _SummedLoss(self.model, self.cfg, self.dt),
                find_unused_parameters=_has_unused(self.model, self.train_set, self.cfg,
                                                   self.dt, self.device))


def _set_up(model: DynamicsModel, data: Any, cfg: TrainConfig, progress: bool) -> _Setup:
    """Check the model against the data and the process group, and build the run."""
    shards = distributed.world_size() if distributed.active() else 1
    if shards > 1 and _has_auxiliary_loss(model):
        raise ValueError(f"{model.name} adds an auxiliary loss, which training in several "
                         f"processes does not support yet; run it in one process (got "
                         f"{shards})")
    if shards > 1 and cfg.refine_initial:
        raise ValueError(f"refine_initial trains one offset per start state, which training "
                         f"in several processes does not support; run it in one process "
                         f"(got {shards})")
    device = torch.device(distributed.resolve_device(cfg.device))
    model.to(device)
    dtype = model.param_dtype
    for key in ("lr", "refine_lr"):
        checks.learning_rate_fits(getattr(cfg, key), dtype, key)
    dt = float(data.t[1] - data.t[0]) if data.t.numel() > 1 else float("nan")  # before casting
    data = data.to(device=device, dtype=dtype)
    if model.is_stepper and abs(dt - float(model.config()["dt"])) > 1e-9 * max(dt, 1.0):
        raise ValueError(f"{model.name} steps dt={model.config()['dt']} but the data is "
                         f"sampled every {dt:g}")
    train_ids, val_ids = _split(data, cfg.val_fraction, cfg.seed)
    train_set = Samples(data, train_ids, cfg.rollout_steps, cfg.target)
    first = train_set.collate([0]).graph
    model.check_state(first.q, first.p, first)  # data that does not fit fails before work
    gen = torch.Generator().manual_seed(cfg.seed)
    budget, full_batch, loaders = _loaders(data, train_set, val_ids, cfg, gen, shards)
    offsets = _StartOffsets(train_set.q) if cfg.refine_initial else None
    optimizer, scheduler = _optimizer(model, offsets, cfg)
    return _Setup(model, cfg, progress, shards, device, dt, train_set, gen, budget,
                  full_batch, *loaders, offsets, optimizer, scheduler)


def _loaders(data: Any, train_set: Samples, val_ids: torch.Tensor, cfg: TrainConfig,
             gen: torch.Generator, shards: int
             ) -> tuple[EdgeBudgetBatches | None, bool,
                        tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader,
                              torch.utils.data.DataLoader | None]]:
    """The edge budget's batches (or ``None``), whether training is full batch, and the
    training, validation and test loaders (the last ``None`` without a test split)."""
    k = cfg.rollout_steps
    sampler = None
    if cfg.max_samples and cfg.max_samples < len(train_set):
        sampler = torch.utils.data.RandomSampler(train_set, num_samples=cfg.max_samples,
                                                 generator=gen)
    budget = None
    if cfg.edge_budget:  # every rank cuts the same global batches (seeded per epoch)
        costs = train_set.costs()
        budget = EdgeBudgetBatches(costs, cfg.edge_budget, seed=cfg.seed)
        full_batch = int(costs.sum()) <= cfg.edge_budget
    else:
        full_batch = sampler is None and cfg.batch_size >= len(train_set)
    # a full batch is taken in the stored order: shuffling it would only reorder the sum
    shuffle = sampler is None and not full_batch
    train_loader = _loader(train_set, cfg.batch_size, shuffle=shuffle, sampler=sampler,
                           generator=gen if shuffle else None, shards=shards,
                           batch_sampler=budget)
    if val_ids.numel():
        val_loader = _loader(Samples(data, val_ids, k, cfg.target), cfg.batch_size,
                             shards=shards)
    else:  # no held-out trajectories: rank by the training loss *after* each epoch's steps,
        # on a fixed subset of the training samples as large as an epoch (its own generator:
        # the batch order, and so an exact resume, do not depend on it)
        size = min(len(train_set), cfg.max_samples or len(train_set))
        fixed = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(
            cfg.seed + 1))[:size].sort().values
        val_loader = _loader(train_set, cfg.batch_size, sampler=fixed.tolist(), shards=shards)
    test_ids = data.test.cpu().nonzero().flatten()
    test_loader = (_loader(Samples(data, test_ids, k, cfg.target), cfg.batch_size,
                           shards=shards) if test_ids.numel() else None)
    return budget, full_batch, (train_loader, val_loader, test_loader)


def _optimizer(model: DynamicsModel, offsets: _StartOffsets | None, cfg: TrainConfig
               ) -> tuple[torch.optim.Optimizer, Any]:
    """Adam over the model's parameters (and the start offsets, without weight decay),
    and its learning-rate schedule (``None``: none)."""
    groups: list[dict[str, Any]] = [{"params": list(model.parameters())}]
    if offsets is not None:  # no decay: the offsets are not pulled back to the observation
        groups.append({"params": list(offsets.parameters()), "weight_decay": 0.0,
                       "lr": cfg.refine_lr or cfg.lr})
    optimizer = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = None
    if cfg.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer,
                                                               cfg.steps or cfg.epochs)
        if cfg.steps:  # annealed per optimizer step, whichever loop takes it
            optimizer.register_step_post_hook(_step_scheduler(scheduler))
    return optimizer, scheduler


def _step_scheduler(scheduler: Any) -> Any:
    """An optimizer step post-hook that steps ``scheduler`` (a schedule per step)."""
    def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        scheduler.step()
    return hook


def _has_unused(model: DynamicsModel, samples: Samples, cfg: TrainConfig, dt: float,
                device: torch.device) -> bool:
    """Whether some trainable parameter gets no gradient from the loss (e.g. the
    constant offset of a learned ``H``, absent from its derivatives): DDP must then
    look for unused parameters at each step. Decided on one sample, by every rank
    alike."""
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    loss = _batch_loss(model, samples.collate([0]).to(device), cfg, dt)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return any(g is None for g in grads)
