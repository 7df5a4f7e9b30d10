"""The training loop: :func:`train` checks the options and holds the run folder's lock;
its steps are the setup (:func:`~hogn.train.setup._set_up`), the resume from a run
folder (:func:`_resume`), the epochs with their checkpoints (:func:`_run_epochs`) and
the finish (:func:`_finish`: the best weights back in the model, the test loss)."""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hogn import distributed
from hogn.models.base import DynamicsModel
from hogn.train.batches import _Batches, _FirstBatches
from hogn.train.checkpoint import (
    _apply_checkpoint,
    _checkpoint_path,
    _clone,
    _load_offsets,
    _read_checkpoint,
    _rng_state,
)
from hogn.train.config import TrainConfig
from hogn.train.epochs import _epoch, _sharded_epoch
from hogn.train.result import NonFiniteLossError, TrainResult
from hogn.train.run_folder import _append_line, _open_metrics, _prepare_run, _run_lock, _RunFolder
from hogn.train.setup import _set_up, _Setup

__all__ = ["train"]

_SNAPSHOT_SECONDS = 1.0  # the in-memory copy for an interrupted run is at most this old


@dataclass
class _Progress:
    """Where a run stands: a new run's start or a checkpoint's state (:func:`_resume`),
    moved on by each epoch.

    Attributes:
        run: The run folder, if any.
        folder: Its writer (``None``: no run folder, or not rank 0).
        start_epoch: The first epoch this call trains (1: a new run).
        steps: Optimizer steps taken in all.
        best, best_epoch, best_state: The lowest validation loss so far, its epoch and
            weights (``None`` before any).
        history: One row per epoch.
        test_loss: The test loss of the best weights, once scored.
        scored: Whether ``test_loss`` is scored.
        last_checkpoint, last_snapshot: When the checkpoint was last written and the
            state last copied (``time.monotonic``).
    """

    run: Path | None
    folder: _RunFolder | None = None
    start_epoch: int = 1
    steps: int = 0
    best: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, Tensor] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    test_loss: float | None = None
    scored: bool = False
    last_checkpoint: float = 0.0
    last_snapshot: float = 0.0


def train(model: DynamicsModel, data: Any, run_dir: str | os.PathLike | None = None,
          config: TrainConfig | None = None, progress: bool = True, data_info: Any = None,
          **options: Any) -> TrainResult:
    """Train ``model`` in place.

    Args:
        model: Any registered model (its dtype decides the data dtype).
        data: A ``systems.Dataset`` (or an object with the same arrays).
        run_dir: Folder for config, metrics, checkpoints (``None``: keep nothing).
        config: Options; ``**options`` override single fields
            (``hogn.train(model, data, target="rollout", epochs=50)``).
        progress: Show tqdm bars (rank 0 only).
        data_info: JSON-able description of the data stored in ``config.json``.

    Several processes (``torchrun``, or a process group initialised by the caller;
    see :mod:`hogn.distributed`): every process calls ``train`` with the same
    arguments. Each global batch (``batch_size`` graphs, the batches one process would
    take, in the same order) is split among the processes as ``DistributedSampler``
    splits an epoch (rank ``r`` of ``P`` takes every ``P``-th sample from the
    ``r``-th); the model is wrapped in ``DistributedDataParallel``, whose average of
    the gradients, with each rank's loss weighted by its share of the batch's nodes,
    is the one-process gradient of the global batch. The result equals the
    one-process run's to rounding, whatever ``P``. Only rank 0 writes the run folder
    and shows progress; on a resume it reads the checkpoint and hands it to every
    rank. A device ``cuda`` means ``cuda:LOCAL_RANK`` in each process.

    Returns:
        The :class:`TrainResult` (on every rank); the model holds the *best* weights
        (lowest validation loss) when it returns, and ``test_loss`` is their loss on
        the dataset's test trajectories (``None`` without any). ``steps=N`` trains for
        exactly ``N`` optimizer steps (``hogn.train(model, data, steps=2000,
        batch_size=10**9, val_fraction=0)``: 2000 full-batch steps).

    Raises:
        ValueError: bad options, data that does not fit the model, or a run folder
            holding a different run.
        NonFiniteLossError: the loss became non-finite (naming epoch and step); the
            run folder keeps the checkpoint of a finished epoch (see the module's
            notes on checkpoints).
        hogn.distributed.DistributedConfigError: a launch environment that cannot
            work (a ``ValueError``).
    """
    cfg = TrainConfig(**{**asdict(config or TrainConfig()), **options})
    if cfg.target is None:
        cfg.target = "rollout" if model.is_stepper else "derivative"
    cfg.validate(model)
    with distributed.process_group(cfg.device), _run_lock(run_dir):
        return _train(model, data, run_dir, cfg, progress, data_info)


def _train(model: DynamicsModel, data: Any, run_dir: str | os.PathLike | None,
           cfg: TrainConfig, progress: bool, data_info: Any) -> TrainResult:
    """:func:`train` with checked options, in one process or a process group."""
    setup = _set_up(model, data, cfg, progress)
    state = _resume(setup, Path(run_dir) if run_dir is not None else None, data_info)
    setup.wrap_for_ranks()  # after a resume: DDP starts every rank from rank 0's weights
    _run_epochs(setup, state)
    return _finish(setup, state)


def _resume(s: _Setup, run: Path | None, data_info: Any) -> _Progress:
    """A new run's progress; with a run folder, the folder prepared (or checked to hold
    this run) and, when it holds a checkpoint, its state loaded into the model,
    optimizer, scheduler, random states and start offsets."""
    state = _Progress(run)
    if run is None:
        return state
    model, cfg = s.model, s.cfg
    record = {"model": model.name, "model_config": model.config(), "train": asdict(cfg),
              "data": data_info}
    opened: list[Any] = []

    def prepare() -> tuple[dict[str, Any] | None, list[dict[str, float]]]:
        snapshot = None
        if _prepare_run(run, record):
            snapshot = _read_checkpoint(_checkpoint_path(run), run, model, s.optimizer,
                                        s.scheduler, s.gen, s.device)
        metrics, rows = _open_metrics(
            run / "metrics.jsonl", snapshot["metrics_length"] if snapshot else 0)
        opened.append(metrics)
        return snapshot, rows

    # rank 0 prepares the folder and reads the checkpoint; every rank gets its state
    snapshot, state.history = distributed.from_main(prepare)
    if snapshot is not None:
        if not distributed.is_main():
            _apply_checkpoint(snapshot, model, s.optimizer, s.scheduler, s.gen, s.device)
        if s.offsets is not None:
            _load_offsets(snapshot, s.offsets, run / "checkpoint.pt")
        state.start_epoch = snapshot["epoch"] + 1
        state.best, state.best_epoch = snapshot["best"], snapshot["best_epoch"]
        state.best_state = snapshot["best_model"]
        state.steps = snapshot.get("steps", -1)
        if state.steps < 0:  # a checkpoint written before steps were counted
            state.steps = 0
            for epoch in range(1, state.start_epoch):
                taken = s.batches_in(epoch)
                state.steps += min(taken, cfg.steps - state.steps) if cfg.steps else taken
    if opened:
        state.folder = _RunFolder(run, model, opened[0], snapshot)
    return state


def _run_epochs(s: _Setup, state: _Progress) -> None:
    """Train the epochs left, each recorded in ``metrics.jsonl`` and checkpointed as
    due; on any exception, checkpoint the last epoch that ended (up to ~1 s before)."""
    folder = state.folder
    try:
        state.last_checkpoint = state.last_snapshot = time.monotonic()
        for epoch in itertools.count(state.start_epoch):
            if s.finished(epoch, state.steps):
                break
            row, improved, final = _train_epoch(s, state, epoch)
            length = _append_line(folder.metrics, json.dumps(row) + "\n") if folder else 0
            if folder is not None:
                _save_epoch(s, state, folder, epoch, length, improved, final)
        if folder is not None:
            folder.commit()  # after a resume that had nothing left to do: the model files
    except BaseException as error:
        if folder is not None:  # keep the last epoch that ended (up to ~1 s before)
            try:
                folder.commit()
            except Exception as exc:  # the first error is the one to see
                warnings.warn(f"could not save the checkpoint of {state.run}: {exc}",
                              stacklevel=3)
            if isinstance(error, NonFiniteLossError) and error.args:
                kept = (f"the checkpoint of epoch {folder.saved_epoch} is kept in {state.run}"
                        if folder.saved_epoch > 0 else
                        f"{state.run} holds no checkpoint (no finished epoch was saved)")
                error.args = (f"{error.args[0]}; {kept}", *error.args[1:])
        raise
    finally:
        if folder is not None:
            folder.metrics.close()


def _train_epoch(s: _Setup, state: _Progress, epoch: int
                 ) -> tuple[dict[str, Any], bool, bool]:
    """Train and validate ``epoch`` (cut short at the last step of a run by steps) and
    add its row to the history; on the final epoch, score the best weights on the test
    split. Returns the row, whether the epoch improved on the best, and whether it is
    the final one."""
    cfg, model, optimizer = s.cfg, s.model, s.optimizer
    started = time.perf_counter()
    batches = s.batches_in(epoch)  # (sets the edge budget's epoch)
    loader: _Batches = s.train_loader
    if cfg.steps and state.steps + batches >= cfg.steps:  # the last epoch
        batches = cfg.steps - state.steps
        loader = _FirstBatches(s.train_loader, batches)
    final = s.finished(epoch + 1, state.steps + batches)
    lr = optimizer.param_groups[0]["lr"]
    model.train()
    train_loss = _run_epoch(s, loader, optimizer, epoch, model, s.progress)
    state.steps += batches
    model.eval()
    val_loss = _run_epoch(s, s.val_loader, None, epoch, model, s.progress)
    if not math.isfinite(val_loss):
        raise NonFiniteLossError(f"non-finite validation loss at epoch {epoch}")
    if s.scheduler is not None and not cfg.steps:
        s.scheduler.step()
    improved = val_loss < state.best
    if improved:
        state.best, state.best_epoch = val_loss, epoch
        state.best_state = _clone(model.state_dict())
    row: dict[str, Any] = {"epoch": epoch, "step": state.steps,
                           "train_loss": train_loss, "val_loss": val_loss, "lr": lr}
    if final:  # the best weights on the test split (the model's own if best now)
        state.test_loss = _score_test(s, None if improved else state.best_state, epoch)
        state.scored = True
        row["test_loss"] = state.test_loss
    row["seconds"] = round(time.perf_counter() - started, 3)
    state.history.append(row)
    return row, improved, final


def _save_epoch(s: _Setup, state: _Progress, folder: _RunFolder, epoch: int, length: int,
                improved: bool, final: bool) -> None:
    """Copy the state at the end of ``epoch`` (at most once per ``_SNAPSHOT_SECONDS``,
    or when a checkpoint is due) and write the checkpoint when it is due: after the
    final epoch, every ``checkpoint_every`` epochs, every ``checkpoint_seconds``."""
    cfg = s.cfg
    now = time.monotonic()
    due = (final
           or (cfg.checkpoint_every > 0 and epoch % cfg.checkpoint_every == 0)
           or (cfg.checkpoint_seconds > 0
               and now - state.last_checkpoint >= cfg.checkpoint_seconds))
    if due or now - state.last_snapshot >= _SNAPSHOT_SECONDS:
        extra: dict[str, Any] = {
            "best": state.best, "best_epoch": state.best_epoch,
            "best_model": state.best_state, "metrics_length": length,
            "rng": _rng_state(s.gen, s.device), "steps": state.steps}
        if s.offsets is not None:
            extra["start_offsets"] = _clone(s.offsets.state_dict())
        folder.take_snapshot(epoch, state.best_state if improved else None, s.optimizer,
                             s.scheduler, extra)
        state.last_snapshot = now
    if due:
        folder.commit()
        state.last_checkpoint = time.monotonic()


def _run_epoch(s: _Setup, loader: _Batches, opt: torch.optim.Optimizer | None, epoch: int,
               net: DynamicsModel, bar: bool) -> float:
    """One pass of ``net`` over ``loader`` (training with ``opt``), in this process or
    as its rank's share; the start offsets move training samples only."""
    if s.shards == 1:
        if s.offsets is not None and opt is not None:
            return _epoch(net, loader, s.cfg, s.dt, opt, epoch, bar, offsets=s.offsets)
        return _epoch(net, loader, s.cfg, s.dt, opt, epoch, bar)
    return _sharded_epoch(s.ddp, net, loader, s.cfg, s.dt, opt, epoch, bar)


def _score_test(s: _Setup, weights: dict[str, Tensor] | None, epoch: int) -> float | None:
    """The test split's loss of ``weights`` (``None``: the model's own)."""
    if s.test_loader is None:
        return None
    net = s.model
    if weights is not None:
        net = copy.deepcopy(s.model)
        net.load_state_dict(weights)
    net.eval()
    return _run_epoch(s, s.test_loader, None, epoch, net, False)


def _finish(s: _Setup, state: _Progress) -> TrainResult:
    """Once every rank is done: the best weights back in the model, their test loss
    (scored now after a resume with nothing left to do) and the result."""
    distributed.barrier()  # every rank returns once rank 0 has written the run folder
    if state.best_state is not None:
        s.model.load_state_dict(state.best_state)
    s.model.eval()
    if not state.scored:  # a resume with nothing left to do: score the returned weights now
        state.test_loss = _score_test(s, None, state.start_epoch - 1)
    refined = None if s.offsets is None else s.offsets.starts(s.train_set.q, s.train_set.p)
    return TrainResult(state.history, state.best, state.best_epoch, state.run,
                       state.start_epoch - 1, state.test_loss, state.steps, s.full_batch,
                       refined)
