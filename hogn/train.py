"""Training a dynamics model on trajectory data.

Targets:

- ``derivative``: match the true ``dq, dp`` at each observed state (as HNN);
- ``rollout``: integrate ``k`` steps with a registered integrator from an observed
  state and match the next ``k`` observed states, back-propagating through the
  integrator (as HOGN). Steppers (DeltaGN) always train on ``rollout``.

Data is any object with the arrays of a ``systems.Dataset`` (``t [T]``, ``q, p, dq,
dp [T, N, d]``, optional ``q_obs, p_obs``, ``c [N, k]``, ``edge_index``,
``edge_attr``, ``ptr [G + 1]``, ``test [G]``); training uses its training
trajectories, part of which are held out for validation. Batches of graphs of
different sizes are cut out of the dataset's arrays at once (:meth:`Samples.collate`:
the same batch as a PyG ``Batch`` of per-state ``Data``, without the per-state cost).

Length: ``epochs`` passes over the training samples, or exactly ``steps`` optimizer
steps (``steps > 0``): then epochs run until that many steps are taken, the last one
cut short (its first batches only), and a ``cosine`` schedule anneals over the steps.
Either way the history holds one row per epoch (``step`` counts the optimizer steps
taken by its end). Full batch: with ``batch_size`` at least the training samples (and
no ``max_samples`` or ``edge_budget`` below them), every epoch is one step over all of
them, in one batch, in a fixed order (:attr:`TrainResult.full_batch`); with
``steps=N`` that is N full-batch steps, as in the HNN paper's training.

Test split: when training ends, the dataset's test trajectories (``test [G]``; never
trained or validated on) are scored with the best weights, with the same target and
loss as the validation: :attr:`TrainResult.test_loss` (``None`` without a test split),
also stored as ``test_loss`` in the final epoch's row (the last line of
``metrics.jsonl``; ``null`` without a test split).

A run folder receives ``config.json``, ``metrics.jsonl`` (one line per epoch,
appended and flushed as each epoch ends), ``checkpoint.pt`` (everything a resume
needs) and ``best.pt``, ``last.pt`` (the model files that ``hogn evaluate`` and
``hogn rollout`` load). A folder that holds a different run is refused; the same run
(the epoch or step count may grow, but a run by epochs stays one by epochs and a run
by steps one by steps; the checkpoint frequency may change) resumes from its
checkpoint. A run by steps resumed with more steps goes on from the checkpointed
epoch: when that epoch was cut short, its untaken batches are not taken.

Checkpoints. ``checkpoint.pt`` is one atomic write (temporary file and
``os.replace``) of the state at the end of an epoch: model, optimizer, scheduler,
the batch-order generator and torch's global CPU (and CUDA) random state, the epoch,
the best-so-far loss, epoch and weights, the byte length of ``metrics.jsonl`` at
that epoch and, with ``refine_initial``, the start offsets. It is written every
``checkpoint_every`` epochs and/or every ``checkpoint_seconds`` (default: every 30 s),
after the final epoch, and when training stops on an exception (Ctrl-C, a non-finite
loss): then it holds the last epoch that ended up to ~1 s before (the state is copied
in memory at most once a second, so that the run folder costs the same per epoch
however many epochs there are).
``best.pt`` and ``last.pt`` are written from the checkpointed state right after it,
never ahead of it. A resume reads only the checkpoint: it cuts ``metrics.jsonl``
back to the recorded length and goes on, so a run killed at any instant (SIGKILL,
power loss) and resumed gives the same ``metrics.jsonl`` lines (but for the wall
time in ``seconds``) and bit-for-bit the same weights as a run never interrupted.
A killed run loses at most the epochs since its last checkpoint; hidden temporary
files it left behind (see :func:`hogn.io.remove_temp_files`) are removed by the
next run in the folder. Python's ``random`` and numpy's global generator are not
used by training and not saved.

Damage and concurrency. The checkpoint carries the SHA-256 of its bytes
(:func:`hogn.io.save_checked`), and the one it replaced is kept as
``checkpoint.prev.pt``: a damaged checkpoint is refused in one line naming it, and
deleting it resumes from the previous one (a run killed between keeping the previous
checkpoint and writing the new one resumes from it by itself). One process writes a
run folder: :func:`train` holds the folder's lock (:class:`hogn.io.RunLock`,
``FOLDER/.lock``) from start to end; a second ``train`` on the same folder raises
:class:`hogn.io.RunLockedError` at once, and the lock of a killed run is free.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import math
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data

from hogn import checks, distributed, integrators
from hogn import io as hio
from hogn.batching import EdgeBudgetBatches
from hogn.graph import GraphBatch, _ranges, ptr_from_sizes
from hogn.models.base import DynamicsModel

__all__ = ["Batch", "NonFiniteLossError", "Samples", "TrainConfig", "TrainResult", "log_cosh",
           "train"]

LOSSES = ("mse", "logcosh")
TARGETS = ("derivative", "rollout")
SCHEDULES = ("none", "cosine")
CHECKPOINT_VERSION = 2
_SNAPSHOT_SECONDS = 1.0  # the in-memory copy for an interrupted run is at most this old
# options that do not change what is computed: a resume may change them
_RESUMABLE_CHANGES = ("epochs", "steps", "checkpoint_every", "checkpoint_seconds")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite. With a run folder the message says which
    checkpoint is kept (or that no epoch ended, so there is none)."""


@dataclass
class TrainConfig:
    """Training options (all JSON-serialisable; stored in the run's ``config.json``).

    Attributes:
        target: ``"derivative"`` or ``"rollout"`` (``None``: rollout for steppers,
            derivative otherwise).
        integrator: Integrator for the rollout target.
        rollout_steps: Steps ``k`` integrated and matched per sample (rollout target).
        loss: ``"mse"`` or ``"logcosh"``.
        epochs: Passes over the training samples (with ``steps``: leave at its default,
            20; it is then not used).
        steps: Train for exactly this many optimizer steps instead of ``epochs``
            (0: by epochs). Epochs run until the steps are taken, the last one cut
            short; ``cosine`` anneals over the steps.
        batch_size: Graphs (states) per batch; at least the training samples of an
            epoch: full batch (one step per epoch over all of them, unshuffled).
        edge_budget: Cut training batches by size instead: each holds graphs, in a
            shuffled order, until the next would pass this many edges plus nodes
            (0: off, ``batch_size`` graphs per batch). For graphs of very different
            sizes, where memory and time follow the edges; a graph above the budget
            gets a batch of its own (:class:`hogn.batching.EdgeBudgetBatches`).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        schedule: ``"none"`` or ``"cosine"`` (annealed to 0 over the epochs, or over
            the optimizer steps with ``steps``: the learning rate of step ``i`` of
            ``S`` is ``lr (1 + cos(pi i / S)) / 2``).
        val_fraction: Fraction of training trajectories held out for validation.
        max_samples: Cap on training samples per epoch (random subset; 0: all).
        grad_clip: Clip the gradient norm (0: off).
        seed: Seed of the split and the batch order.
        device: Torch device.
        checkpoint_every: Write the run folder's checkpoint every this many epochs
            (0: not by epoch count). Only with a run folder.
        checkpoint_seconds: Write the checkpoint when this many seconds have passed
            since the last one (0: not by time). The checkpoint is also written after
            the final epoch and when training stops on an exception, whatever these
            two say; with both 0, only then. The default (every 30 s) keeps the
            run folder's cost per epoch small and independent of the epoch count; a
            killed run loses at most the epochs since its last checkpoint.
        refine_initial: Rollout target only: the start state ``(q, p)`` of every
            training sample gets a learnable offset, initialised at zero (the start is
            the observation) and optimised with the network by the same Adam
            optimizer, without weight decay (the initial-state refinement of
            Chen et al., "Symplectic Recurrent Neural Networks", for noisy
            observations). The training loss is then the mean over ``k + 1`` states:
            the refined start against its observation, then the rollout against the
            next ``k`` observed states (which are not refined). Validation and test
            samples start from the plain observation (their loss: over ``k`` states).
            The refined starts are :attr:`TrainResult.refined_starts`. ``grad_clip``
            clips the network's gradient only. With mini-batches, Adam's momentum
            keeps moving an offset for some steps after its sample's batch (dense
            Adam, as for embeddings). One process only.
        refine_lr: Adam learning rate of the start offsets (0: ``lr``).
    """

    target: str | None = None
    integrator: str = "rk4"
    rollout_steps: int = 1
    loss: str = "mse"
    epochs: int = 20
    steps: int = 0
    batch_size: int = 64
    edge_budget: int = 0
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "none"
    val_fraction: float = 0.1
    max_samples: int = 0
    grad_clip: float = 0.0
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 0
    checkpoint_seconds: float = 30.0
    refine_initial: bool = False
    refine_lr: float = 0.0

    def validate(self, model: DynamicsModel) -> None:
        """Check the options against each other and the model. Raises ``ValueError``."""
        for key, value, choices in (("target", self.target, TARGETS),
                                    ("loss", self.loss, LOSSES),
                                    ("schedule", self.schedule, SCHEDULES)):
            if value not in choices:
                raise ValueError(f"unknown {key} {value!r}; expected one of: "
                                 f"{', '.join(choices)}")
        if model.is_stepper:
            if self.target != "rollout":
                raise ValueError(f"{model.name} is a stepper: it trains on target 'rollout', "
                                 f"not {self.target!r}")
        elif self.target == "rollout":
            model.check_integrator(self.integrator)
        for key, check in (("epochs", checks.positive_int),
                           ("steps", checks.nonnegative_int),
                           ("batch_size", checks.positive_int),
                           ("edge_budget", checks.nonnegative_int),
                           ("rollout_steps", checks.positive_int),
                           ("lr", checks.positive_float),
                           ("weight_decay", checks.nonnegative_float),
                           ("max_samples", checks.nonnegative_int),
                           ("grad_clip", checks.nonnegative_float),
                           ("seed", checks.nonnegative_int),
                           ("checkpoint_every", checks.nonnegative_int),
                           ("checkpoint_seconds", checks.nonnegative_float),
                           ("refine_lr", checks.nonnegative_float)):
            check(getattr(self, key), key)
        if not isinstance(self.refine_initial, bool):
            raise ValueError(f"refine_initial must be True or False, got "
                             f"{self.refine_initial!r}")
        if self.refine_initial and self.target != "rollout":
            raise ValueError(f"refine_initial needs target 'rollout' (the start state is "
                             f"refined through the rollout from it), got target "
                             f"{self.target!r}")
        if self.refine_lr and not self.refine_initial:
            raise ValueError(f"refine_lr={self.refine_lr} is set but refine_initial is off; "
                             "set refine_initial=True or leave refine_lr at 0")
        checks.fraction(self.val_fraction, "val_fraction", upper_open=True)
        checks.device(self.device, "device")
        default_epochs = TrainConfig.epochs
        if self.steps and self.epochs != default_epochs:
            raise ValueError(f"steps and epochs are exclusive: got steps={self.steps} and "
                             f"epochs={self.epochs}; give one (steps counts optimizer steps, "
                             f"epochs passes over the data; leave epochs at {default_epochs} "
                             "with steps)")
        if self.edge_budget and self.max_samples:
            raise ValueError("edge_budget and max_samples cannot be combined: an edge budget "
                             "cuts every training sample of an epoch into batches; set one")


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        history: One dict per epoch (epoch, step, train_loss, val_loss, lr, seconds;
            the final epoch's also test_loss). ``step`` is the number of optimizer
            steps taken by the end of the epoch; ``lr`` the learning rate of its first
            step; ``train_loss`` the mean of the losses measured before each step;
            ``val_loss`` the loss of the weights at the end of the epoch on the
            validation trajectories or, with ``val_fraction=0``, on a fixed subset of
            the training samples (as many as an epoch uses), so that the best epoch
            is ranked by the weights it saves. A run folder written before ``step``
            and ``test_loss`` existed keeps its old rows without them.
        best_val: Lowest ``val_loss``.
        best_epoch: Epoch of ``best_val``.
        run_dir: Run folder, if any.
        resumed_epoch: The checkpointed epoch this call went on from (0: a new run).
        test_loss: Loss of the returned (best) weights on the dataset's test
            trajectories, with the training target and loss (mean as ``val_loss``:
            of the per-batch means, weighted by graphs; one batch when
            ``batch_size`` covers the split); ``None`` when the dataset has none.
        steps: Optimizer steps the run has taken in all (before a resume included).
        full_batch: Whether every epoch was one step over all training samples.
        refined_starts: With ``refine_initial``: the observed states plus their
            learned offsets as the last epoch left them (whichever epoch's weights the
            model holds: the validation loss, from plain observations, does not rank
            the offsets), ``(q, p)`` each ``[T, N, d]`` in the model's dtype (equal to
            the observations where no training sample starts: validation and test
            trajectories, the last ``k`` times); ``None`` otherwise.
    """

    history: list[dict[str, float]]
    best_val: float
    best_epoch: int
    run_dir: Path | None
    resumed_epoch: int = 0
    test_loss: float | None = None
    steps: int = 0
    full_batch: bool = False
    refined_starts: tuple[Tensor, Tensor] | None = None


def log_cosh(x: Tensor) -> Tensor:
    """``log(cosh(x))`` computed stably (``|x| + softplus(-2|x|) - log 2``)."""
    a = x.abs()
    return a + F.softplus(-2 * a) - math.log(2.0)


def _loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    return F.mse_loss(pred, target) if kind == "mse" else log_cosh(pred - target).mean()


def _penalty(residual: Tensor, kind: str) -> Tensor:
    """The element-wise loss of ``residual`` (its mean is :func:`_loss`)."""
    return residual.square() if kind == "mse" else log_cosh(residual)


@dataclass
class Batch:
    """A training batch: states of ``G`` graphs and their targets.

    Attributes:
        graph: The states ``q, p [N, d]`` with ``c``, edges and ``ptr``.
        y_q, y_p: Targets, ``[N, d]`` (derivative) or ``[N, k, d]`` (the next ``k``
            states, rollout).
        start: Where each node's state lies in the dataset's ``[T, N_all, d]`` arrays,
            as the flat index ``t · N_all + node`` ``[N]`` (``None``: not known).
    """

    graph: GraphBatch
    y_q: Tensor
    y_p: Tensor
    start: Tensor | None = None

    @property
    def num_graphs(self) -> int:
        return self.graph.num_graphs

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.graph.to(device), self.y_q.to(device), self.y_p.to(device),
                     None if self.start is None else self.start.to(device))


class Samples(torch.utils.data.Dataset):
    """States of chosen trajectories at chosen times.

    ``samples[i]`` is one state as a PyG ``Data`` (with targets ``y_q, y_p``);
    :meth:`collate` cuts a whole batch out of the dataset's arrays at once, giving
    the same nodes, edges and targets as a PyG ``Batch`` of those ``Data`` but
    without building an object per state (vectorised gathers: ~100x less overhead).
    """

    def __init__(self, data: Any, graphs: Tensor, k: int, target: str) -> None:
        self.data, self.k, self.target = data, k, target
        self.q = data.q_obs if getattr(data, "q_obs", None) is not None else data.q
        self.p = data.p_obs if getattr(data, "p_obs", None) is not None else data.p
        times = data.t.numel() - (k if target == "rollout" else 0)
        if times < 1:
            raise ValueError(f"trajectories of {data.t.numel()} points are too short for "
                             f"{k} rollout step(s)")
        grid = torch.cartesian_prod(graphs, torch.arange(times))
        self.index = grid.reshape(-1, 2)
        ptr = data.ptr.cpu()
        counts = torch.bincount(
            torch.repeat_interleave(torch.arange(ptr.numel() - 1), ptr.diff())[
                data.edge_index[0].cpu()], minlength=ptr.numel() - 1)
        self.ptr, self.eptr = ptr, torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    def __len__(self) -> int:
        return self.index.shape[0]

    def costs(self) -> Tensor:
        """Edges plus nodes of every sample's graph, ``[len(self)]`` (the size that
        :class:`hogn.batching.EdgeBudgetBatches` budgets)."""
        g = self.index[:, 0]
        return (self.eptr[g + 1] - self.eptr[g]) + (self.ptr[g + 1] - self.ptr[g])

    def __getitem__(self, i: int) -> Data:
        g, t = self.index[i].tolist()
        a, b = int(self.ptr[g]), int(self.ptr[g + 1])
        ea, eb = int(self.eptr[g]), int(self.eptr[g + 1])
        d = self.data
        item = Data(q=self.q[t, a:b], p=self.p[t, a:b], c=d.c[a:b],
                    edge_index=d.edge_index[:, ea:eb] - a, num_nodes=b - a)
        if d.edge_attr is not None:
            item.edge_attr = d.edge_attr[ea:eb]
        if getattr(d, "box", None) is not None:
            item.box = d.box[g:g + 1]
        if self.target == "derivative":
            item.y_q, item.y_p = d.dq[t, a:b], d.dp[t, a:b]
        else:  # node-major so PyG concatenates along nodes: [n, k, d]
            item.y_q = self.q[t + 1: t + 1 + self.k, a:b].transpose(0, 1)
            item.y_p = self.p[t + 1: t + 1 + self.k, a:b].transpose(0, 1)
        return item

    def collate(self, indices: list[int] | Tensor) -> Batch:
        """The samples ``indices`` as one :class:`Batch` (nodes graph after graph)."""
        d = self.data
        g, t = self.index[torch.as_tensor(indices, dtype=torch.long)].unbind(1)
        n_sizes = self.ptr[g + 1] - self.ptr[g]
        e_sizes = self.eptr[g + 1] - self.eptr[g]
        nodes = _ranges(self.ptr[g], self.ptr[g + 1])
        edges = _ranges(self.eptr[g], self.eptr[g + 1])
        ptr = ptr_from_sizes(n_sizes)
        shift = torch.repeat_interleave(ptr[:-1] - self.ptr[g], e_sizes)
        t_node = torch.repeat_interleave(t, n_sizes)
        dev = self.q.device
        nodes_d, edges_d, t_d = nodes.to(dev), edges.to(dev), t_node.to(dev)
        edge_index = d.edge_index[:, edges_d] + shift.to(dev)
        graph = GraphBatch(self.q[t_d, nodes_d], self.p[t_d, nodes_d], d.c[nodes_d],
                           edge_index, ptr.to(dev),
                           None if d.edge_attr is None else d.edge_attr[edges_d],
                           None if getattr(d, "box", None) is None else d.box[g.to(dev)])
        start = t_d * self.q.shape[1] + nodes_d
        if self.target == "derivative":
            return Batch(graph, d.dq[t_d, nodes_d], d.dp[t_d, nodes_d], start)
        ahead = t_d[:, None] + torch.arange(1, self.k + 1, device=dev)  # [N, k]
        return Batch(graph, self.q[ahead, nodes_d[:, None]], self.p[ahead, nodes_d[:, None]],
                     start)


class _StartOffsets(torch.nn.Module):
    """Learnable offsets of the training samples' start states (``refine_initial``):
    ``q, p [T, N_all, d]``, zero at first, one per state of the dataset (only those
    where a training sample starts ever receive a gradient, so Adam leaves the rest
    at zero)."""

    def __init__(self, like: Tensor) -> None:
        super().__init__()
        self.q = torch.nn.Parameter(torch.zeros_like(like))
        self.p = torch.nn.Parameter(torch.zeros_like(like))

    def shift(self, batch: Batch) -> Batch:
        """The batch with its start states moved by their offsets (differentiably)."""
        if batch.start is None:
            raise ValueError("refine_initial needs batches that know where their states "
                             "lie in the dataset (Batch.start)")
        d = self.q.shape[-1]
        graph = batch.graph
        graph = graph.replace(q=graph.q + self.q.view(-1, d)[batch.start],
                              p=graph.p + self.p.view(-1, d)[batch.start])
        return Batch(graph, batch.y_q, batch.y_p, batch.start)

    def starts(self, q_obs: Tensor, p_obs: Tensor) -> tuple[Tensor, Tensor]:
        """The observations ``[T, N_all, d]`` plus the offsets (detached)."""
        return (q_obs + self.q).detach(), (p_obs + self.p).detach()


def _loader(samples: Samples, batch_size: int, shuffle: bool = False,
            sampler: Any = None, generator: torch.Generator | None = None,
            shards: int = 1, batch_sampler: Any = None) -> torch.utils.data.DataLoader:
    """Batches of sample indices collated by :meth:`Samples.collate`; with ``shards``
    processes, each global batch collated as this rank's :class:`_Share` of it (the
    batches and the random draws are those of one process). A ``batch_sampler``
    (:class:`hogn.batching.EdgeBudgetBatches`) replaces the other batching options."""
    collate = samples.collate if shards == 1 else _ShardCollate(samples)
    if batch_sampler is not None:
        return torch.utils.data.DataLoader(range(len(samples)), batch_sampler=batch_sampler,
                                           collate_fn=collate)
    return torch.utils.data.DataLoader(range(len(samples)), batch_size=batch_size,
                                       shuffle=shuffle, sampler=sampler, generator=generator,
                                       collate_fn=collate)


class _FirstBatches:
    """The first ``count`` batches of a loader: the last epoch of a run by steps, cut
    short (iterated and sized as the loader is by :func:`_batches`)."""

    def __init__(self, loader: torch.utils.data.DataLoader, count: int) -> None:
        self.loader, self.count = loader, count

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.loader), self.count)

    def __len__(self) -> int:
        return self.count


_Batches = torch.utils.data.DataLoader | _FirstBatches


@dataclass
class _Share:
    """One rank's part of a global batch (training in several processes).

    Attributes:
        batch: The rank's samples of the global batch; when it has none (a global
            batch smaller than the world), a stand-in (the batch's first sample) that
            enters the loss with weight 0, so that every rank takes part in each step.
        graphs: Graphs of the global batch.
        nodes: Nodes of the global batch.
        empty: Whether ``batch`` is the stand-in.
    """

    batch: Batch
    graphs: int
    nodes: int
    empty: bool


class _ShardCollate:
    """Collates a global batch of sample indices as this rank's :class:`_Share`: rank
    ``r`` of ``P`` takes positions ``r, r + P, ...`` of it (``DistributedSampler``'s
    rule, applied to each global batch of the one-process order, so that the union of
    the shares is the batch one process would take, and an epoch's shares are the
    epoch's order split as ``DistributedSampler`` splits it, without its padding)."""

    def __init__(self, samples: Samples) -> None:
        self.samples = samples

    def __call__(self, indices: list[int]) -> _Share:
        s = self.samples
        index = torch.as_tensor(indices, dtype=torch.long)
        g = s.index[index, 0]
        nodes = int((s.ptr[g + 1] - s.ptr[g]).sum())
        mine = torch.as_tensor(distributed.shard(index))
        empty = mine.numel() == 0
        return _Share(s.collate(index[:1] if empty else mine), index.numel(), nodes, empty)


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


def _split(data: Any, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    train_ids = (~data.test.cpu()).nonzero().flatten()
    if train_ids.numel() == 0:
        raise ValueError("the dataset has no training trajectories")
    gen = torch.Generator().manual_seed(seed)
    perm = train_ids[torch.randperm(train_ids.numel(), generator=gen)]
    n_val = round(val_fraction * perm.numel()) if perm.numel() > 1 else 0
    return perm[n_val:], perm[:n_val]


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


def _batches(loader: _Batches, epoch: int, training: bool,
             progress: bool) -> Iterator[Any]:
    """The loader's batches, behind a tqdm bar when ``progress``."""
    batches: Iterator[Any] = iter(loader)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=len(loader), leave=False, disable=None,
                       desc=f"epoch {epoch}" + ("" if training else " val"))
    return batches


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


def _prepare_run(run_dir: Path, record: dict[str, Any]) -> bool:
    """Create the run folder or check it holds this run; returns whether to resume.

    Temporary files of writes that a kill interrupted are removed from a folder that
    holds this run (or nothing else); a folder holding anything else is left alone.
    """
    config_path = run_dir / "config.json"
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"{run_dir} is a file, not a run folder; give a folder name")
    if config_path.exists():
        try:
            old = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise hio.FileFormatError(f"{config_path}: not valid JSON ({exc}); restore it, "
                                      "or train into a new run folder") from None
        if not isinstance(old, dict) or not isinstance(old.get("train"), dict):
            raise hio.FileFormatError(f"{config_path}: not a hogn run record (no 'train' "
                                      "options); restore it, or train into a new run folder")
        new = json.loads(json.dumps(record))
        defaults = asdict(TrainConfig())  # options added since the folder was written
        old["train"] = {**defaults, **old["train"]}
        new["train"] = {**defaults, **new.get("train", {})}
        if bool(old["train"]["steps"]) != bool(new["train"]["steps"]):
            was, now = (("by steps", "by epochs") if old["train"]["steps"] else
                        ("by epochs", "by steps"))
            raise ValueError(f"{run_dir} holds a run trained {was}; it cannot go on {now} "
                             f"(see {config_path}); resume it {was}, or choose another folder")
        for rec in (old, new):  # more epochs (or steps) extend the same run
            for key in _RESUMABLE_CHANGES:
                rec.get("train", {}).pop(key, None)
        _same_data_file(old, new)
        if old != new:
            raise ValueError(f"{run_dir} already holds a different run (see {config_path}); "
                             "choose another folder or remove it")
        hio.remove_temp_files(run_dir)
        return _checkpoint_path(run_dir) is not None
    if run_dir.exists() and any(not hio.is_temp_file(e) and e.name != hio.LOCK_NAME
                                for e in run_dir.iterdir()):
        raise ValueError(f"{run_dir} is not empty and holds no hogn run; choose another folder")
    hio.remove_temp_files(run_dir)  # a run killed while writing its config.json
    run_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2) + "\n"
    hio.atomic_write(config_path, lambda fh: fh.write(text.encode()))
    return False


def _checkpoint_path(run: Path) -> Path | None:
    """The checkpoint a resume reads: ``checkpoint.pt``, else (a run killed between
    keeping the previous checkpoint and writing the new one) ``checkpoint.prev.pt``."""
    return hio.current_or_previous(run / "checkpoint.pt")


def _same_data_file(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Let two spellings of the same data file (``./data.pt``, ``data.pt``, an
    absolute path) count as the same run: ``new``'s takes ``old``'s spelling."""
    a = (old.get("data") or {}) if isinstance(old.get("data"), dict) else {}
    b = (new.get("data") or {}) if isinstance(new.get("data"), dict) else {}
    x, y = a.get("file"), b.get("file")
    if not (isinstance(x, str) and isinstance(y, str)) or x == y:
        return
    same = os.path.normpath(x) == os.path.normpath(y)
    if not same:
        try:
            same = os.path.samefile(x, y)
        except OSError:
            same = False
    if same:
        b["file"] = x


def _clone(obj: Any) -> Any:
    """A copy of nested dicts, lists and tuples whose tensors are copied too."""
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_clone(v) for v in obj)
    return obj


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """Every random state training draws from: the batch order and torch's globals
    (the data loaders draw a base seed from the global generator every epoch)."""
    state: dict[str, Any] = {"generator": generator.get_state(),
                             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator,
                   device: torch.device) -> None:
    generator.set_state(state["generator"])
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _append_line(fh: Any, text: str) -> int:
    """Append ``text`` to the open ``metrics.jsonl`` and flush it; returns its new length."""
    fh.write(text.encode())
    fh.flush()
    return fh.tell()


def _open_metrics(path: Path, length: int) -> tuple[Any, list[dict[str, float]]]:
    """Open ``metrics.jsonl`` for appending after its first ``length`` bytes (the lines
    of checkpointed epochs: later ones, written after the checkpoint, are cut off).

    Returns:
        The open file and the rows kept.
    """
    if length == 0:
        return open(path, "wb"), []  # closed by train
    size = path.stat().st_size if path.exists() else 0
    if size < length:
        raise ValueError(f"{path} holds {size} bytes but the checkpoint recorded "
                         f"{length}: the file was truncated or replaced; restore it or "
                         "start a new run folder")
    fh = open(path, "r+b")  # closed by train
    try:
        head = fh.read(length)
        rows = []
        for number, line in enumerate(head.decode(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise hio.FileFormatError(
                    f"{path}: line {number} is not valid JSON ({exc.msg}); the file is "
                    "damaged: restore it or train into a new run folder") from None
            if not isinstance(row, dict):
                raise hio.FileFormatError(f"{path}: line {number} is not a metrics row")
            rows.append(row)
        fh.truncate(length)
        fh.seek(length)
    except BaseException:
        fh.close()
        raise
    return fh, rows


def _legacy_checkpoint(run: Path, state: dict[str, Any], model: DynamicsModel
                       ) -> dict[str, Any]:
    """A checkpoint of hogn before version 2 (optimizer state only, the weights in
    ``last.pt``, ``metrics.jsonl`` rewritten whole) in the current layout. As exact as
    that layout allows: a run killed between its ``last.pt`` and its checkpoint left
    weights one epoch ahead of the optimizer state, and torch's global random state
    was not saved (training does not depend on it)."""
    epoch = int(state["epoch"])
    last = type(model).load(run / "last.pt", device="cpu").state_dict()
    best = (type(model).load(run / "best.pt", device="cpu").state_dict()
            if (run / "best.pt").exists() else None)
    length = 0
    metrics = run / "metrics.jsonl"
    if metrics.exists():  # the bytes of the first `epoch` lines
        lines = metrics.read_bytes().splitlines(keepends=True)
        length = sum(len(x) for x in lines[:epoch])
    return {"version": CHECKPOINT_VERSION, "epoch": epoch, "model": last,
            "optimizer": state["optimizer"], "scheduler": state.get("scheduler"),
            "best": state["best"], "best_epoch": state["best_epoch"], "best_model": best,
            "metrics_length": length, "rng": {"generator": state["generator"]}}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0] if text else ''}"[:300]


def _read_checkpoint(path: Path, run: Path, model: DynamicsModel,
                     optimizer: torch.optim.Optimizer, scheduler: Any,
                     gen: torch.Generator, device: torch.device) -> dict[str, Any]:
    """Load ``checkpoint.pt`` into the model, optimizer, scheduler and random states.

    Raises:
        FileFormatError: naming the file, when it is unreadable, of another version,
            or does not fit this run (nothing is changed on disk).
    """
    advice = hio.resume_advice(run / "checkpoint.pt", path,
                               "restore it, or train into a new run folder")
    if not path.is_file():
        raise hio.FileFormatError(f"{path}: not a file; {advice}")
    try:
        snapshot = hio.load_checked(path, "checkpoint")
    except hio.FileFormatError as exc:  # truncated, damaged, a foreign pickle, ...
        raise hio.FileFormatError(f"{exc}; {advice}") from None
    if not isinstance(snapshot, dict):
        raise hio.FileFormatError(f"{path}: not a hogn checkpoint (holds a "
                                  f"{type(snapshot).__name__}); {advice}")
    version = snapshot.get("version")
    if version is not None and version != CHECKPOINT_VERSION:
        raise hio.FileFormatError(f"{path}: checkpoint version {version!r}; this hogn "
                                  f"reads versions 1 and {CHECKPOINT_VERSION}")
    try:
        if version is None:
            snapshot = _legacy_checkpoint(run, snapshot, model)
        missing = [key for key in ("epoch", "model", "optimizer", "scheduler", "best",
                                   "best_epoch", "best_model", "metrics_length", "rng")
                   if key not in snapshot]
        if missing:
            raise KeyError(f"no {', '.join(missing)}")
        epoch = snapshot["epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"epoch {epoch!r}")
        steps = snapshot.get("steps", 0)  # absent before steps were counted
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps {steps!r}")
        _apply_checkpoint(snapshot, model, optimizer, scheduler, gen, device)
    except hio.FileFormatError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        raise hio.FileFormatError(f"{path}: damaged or foreign checkpoint "
                                  f"({_first_line(exc)}); {advice}") from None
    return snapshot


def _apply_checkpoint(snapshot: dict[str, Any], model: DynamicsModel,
                      optimizer: torch.optim.Optimizer, scheduler: Any,
                      gen: torch.Generator, device: torch.device) -> None:
    """Load a checkpoint's state into the model, optimizer, scheduler and random states."""
    model.load_state_dict(snapshot["model"])
    optimizer.load_state_dict(snapshot["optimizer"])
    if scheduler is not None and snapshot["scheduler"] is not None:
        scheduler.load_state_dict(snapshot["scheduler"])
    _set_rng_state(snapshot["rng"], gen, device)  # batch order continues as before


class _RunFolder:
    """Writes of a run folder: metrics lines, checkpoints and the model files.

    ``snapshot`` is the state at the end of an epoch (copied in memory); ``commit``
    makes the newest snapshot durable: ``metrics.jsonl`` fsynced up to its length,
    then ``checkpoint.pt`` in one atomic write, then ``last.pt`` and ``best.pt``
    from that same state.
    """

    def __init__(self, run: Path, model: DynamicsModel, metrics: Any,
                 snapshot: dict[str, Any] | None) -> None:
        self.run, self.model, self.metrics = run, model, metrics
        self.snapshot = snapshot
        self.saved_epoch = snapshot["epoch"] if snapshot is not None else 0
        self.files_epoch = -1  # best.pt / last.pt unknown until written by this run
        self._shadow: DynamicsModel | None = None

    def take_snapshot(self, epoch: int, weights: dict[str, Tensor] | None,
                      optimizer: torch.optim.Optimizer, scheduler: Any,
                      extra: dict[str, Any]) -> None:
        """Copy the state at the end of ``epoch`` (``weights``: the model's, if copied
        already) with ``extra`` (best-so-far, metrics length, random states)."""
        self.snapshot = {
            "version": CHECKPOINT_VERSION, "epoch": epoch,
            "model": weights if weights is not None else _clone(self.model.state_dict()),
            "optimizer": _clone(optimizer.state_dict()),
            "scheduler": None if scheduler is None else _clone(scheduler.state_dict()),
            **extra}

    def commit(self) -> None:
        """Write the newest snapshot as the checkpoint and the model files (each only
        if it is not on disk yet)."""
        snap = self.snapshot
        if snap is None:
            return
        if snap["epoch"] > self.saved_epoch:
            self.metrics.flush()
            os.fsync(self.metrics.fileno())  # the checkpoint never counts bytes not on disk
            hio.save_checked(self.run / "checkpoint.pt", snap)  # keeps checkpoint.prev.pt
            self.saved_epoch = snap["epoch"]
        if self.files_epoch != snap["epoch"]:
            self._save_weights(self.run / "last.pt", snap["model"])
            if snap["best_model"] is not None:
                self._save_weights(self.run / "best.pt", snap["best_model"])
            self.files_epoch = snap["epoch"]

    def _save_weights(self, path: Path, state: dict[str, Tensor]) -> None:
        if self._shadow is None:  # a copy of the model, to save weights other than its own
            self._shadow = copy.deepcopy(self.model)
        self._shadow.load_state_dict(state)
        self._shadow.save(path)


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


def _run_lock(run_dir: str | os.PathLike | None) -> contextlib.AbstractContextManager:
    """The run folder's writer lock (:class:`hogn.io.RunLock`), held by rank 0, which
    alone writes the folder; nothing to lock without a folder (or where the name is a
    file, which :func:`_prepare_run` refuses)."""
    if run_dir is None or not distributed.is_main():
        return contextlib.nullcontext()
    if not hio.holds_run_or_nothing(run_dir):  # refused by _prepare_run: left as it is
        return contextlib.nullcontext()
    return hio.RunLock(run_dir)


def _train(model: DynamicsModel, data: Any, run_dir: str | os.PathLike | None,
           cfg: TrainConfig, progress: bool, data_info: Any) -> TrainResult:
    """:func:`train` with checked options, in one process or a process group."""
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
    dt = float(data.t[1] - data.t[0]) if data.t.numel() > 1 else float("nan")  # before casting
    data = data.to(device=device, dtype=dtype)
    if model.is_stepper and abs(dt - float(model.config()["dt"])) > 1e-9 * max(dt, 1.0):
        raise ValueError(f"{model.name} steps dt={model.config()['dt']} but the data is "
                         f"sampled every {dt:g}")
    train_ids, val_ids = _split(data, cfg.val_fraction, cfg.seed)
    k = cfg.rollout_steps
    train_set = Samples(data, train_ids, k, cfg.target)
    first = train_set.collate([0]).graph
    model.check_state(first.q, first.p, first)  # data that does not fit fails before work
    gen = torch.Generator().manual_seed(cfg.seed)
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
    offsets = _StartOffsets(train_set.q) if cfg.refine_initial else None
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

    def batches_in(epoch: int) -> int:
        """Batches (optimizer steps) of a whole ``epoch``."""
        if budget is not None:
            budget.set_epoch(epoch)
        return len(train_loader)

    def finished(epoch: int, steps: int) -> bool:
        """Whether the run is complete before ``epoch``, with ``steps`` steps taken."""
        return steps >= cfg.steps if cfg.steps else epoch > cfg.epochs

    run = Path(run_dir) if run_dir is not None else None
    start_epoch, best, best_epoch, steps_done = 1, math.inf, 0, 0
    best_state: dict[str, Tensor] | None = None
    history: list[dict[str, float]] = []
    folder: _RunFolder | None = None
    if run is not None:
        record = {"model": model.name, "model_config": model.config(), "train": asdict(cfg),
                  "data": data_info}
        opened: list[Any] = []

        def prepare() -> tuple[dict[str, Any] | None, list[dict[str, float]]]:
            snapshot = None
            if _prepare_run(run, record):
                snapshot = _read_checkpoint(_checkpoint_path(run), run, model, optimizer,
                                            scheduler, gen, device)
            metrics, rows = _open_metrics(
                run / "metrics.jsonl", snapshot["metrics_length"] if snapshot else 0)
            opened.append(metrics)
            return snapshot, rows

        # rank 0 prepares the folder and reads the checkpoint; every rank gets its state
        snapshot, history = distributed.from_main(prepare)
        if snapshot is not None:
            if not distributed.is_main():
                _apply_checkpoint(snapshot, model, optimizer, scheduler, gen, device)
            if offsets is not None:
                _load_offsets(snapshot, offsets, run / "checkpoint.pt")
            start_epoch = snapshot["epoch"] + 1
            best, best_epoch = snapshot["best"], snapshot["best_epoch"]
            best_state = snapshot["best_model"]
            steps_done = snapshot.get("steps", -1)
            if steps_done < 0:  # a checkpoint written before steps were counted
                steps_done = 0
                for epoch in range(1, start_epoch):
                    taken = batches_in(epoch)
                    steps_done += min(taken, cfg.steps - steps_done) if cfg.steps else taken
        if opened:
            folder = _RunFolder(run, model, opened[0], snapshot)
    resumed = start_epoch - 1
    ddp = None
    if shards > 1:  # after a resume: DDP starts every rank from rank 0's weights
        ddp = torch.nn.parallel.DistributedDataParallel(
            _SummedLoss(model, cfg, dt), find_unused_parameters=_has_unused(model, train_set,
                                                                           cfg, dt, device))

    def run_epoch(loader: _Batches, opt: torch.optim.Optimizer | None, epoch: int,
                  net: DynamicsModel = model, bar: bool = progress) -> float:
        if shards == 1:
            if offsets is not None and opt is not None:  # they move training samples only
                return _epoch(net, loader, cfg, dt, opt, epoch, bar, offsets=offsets)
            return _epoch(net, loader, cfg, dt, opt, epoch, bar)
        return _sharded_epoch(ddp, net, loader, cfg, dt, opt, epoch, bar)

    def score_test(weights: dict[str, Tensor] | None, epoch: int) -> float | None:
        """The test split's loss of ``weights`` (``None``: the model's own)."""
        if test_loader is None:
            return None
        net = model
        if weights is not None:
            net = copy.deepcopy(model)
            net.load_state_dict(weights)
        net.eval()
        return run_epoch(test_loader, None, epoch, net, False)

    test_loss: float | None = None
    scored = False
    try:
        last_checkpoint = last_snapshot = time.monotonic()
        for epoch in itertools.count(start_epoch):
            if finished(epoch, steps_done):
                break
            started = time.perf_counter()
            batches = batches_in(epoch)  # (sets the edge budget's epoch)
            loader: _Batches = train_loader
            if cfg.steps and steps_done + batches >= cfg.steps:  # the last epoch
                batches = cfg.steps - steps_done
                loader = _FirstBatches(train_loader, batches)
            final = finished(epoch + 1, steps_done + batches)
            lr = optimizer.param_groups[0]["lr"]
            model.train()
            train_loss = run_epoch(loader, optimizer, epoch)
            steps_done += batches
            model.eval()
            val_loss = run_epoch(val_loader, None, epoch)
            if not math.isfinite(val_loss):
                raise NonFiniteLossError(f"non-finite validation loss at epoch {epoch}")
            if scheduler is not None and not cfg.steps:
                scheduler.step()
            improved = val_loss < best
            if improved:
                best, best_epoch = val_loss, epoch
                best_state = _clone(model.state_dict())
            row: dict[str, Any] = {"epoch": epoch, "step": steps_done,
                                   "train_loss": train_loss, "val_loss": val_loss, "lr": lr}
            if final:  # the best weights on the test split (the model's own if best now)
                test_loss, scored = score_test(None if improved else best_state, epoch), True
                row["test_loss"] = test_loss
            row["seconds"] = round(time.perf_counter() - started, 3)
            history.append(row)
            length = _append_line(folder.metrics, json.dumps(row) + "\n") if folder else 0
            if folder is None:
                continue
            now = time.monotonic()
            due = (final
                   or (cfg.checkpoint_every > 0 and epoch % cfg.checkpoint_every == 0)
                   or (cfg.checkpoint_seconds > 0
                       and now - last_checkpoint >= cfg.checkpoint_seconds))
            if due or now - last_snapshot >= _SNAPSHOT_SECONDS:
                extra: dict[str, Any] = {
                    "best": best, "best_epoch": best_epoch, "best_model": best_state,
                    "metrics_length": length, "rng": _rng_state(gen, device),
                    "steps": steps_done}
                if offsets is not None:
                    extra["start_offsets"] = _clone(offsets.state_dict())
                folder.take_snapshot(
                    epoch, best_state if improved else None, optimizer, scheduler, extra)
                last_snapshot = now
            if due:
                folder.commit()
                last_checkpoint = time.monotonic()
        if folder is not None:
            folder.commit()  # after a resume that had nothing left to do: the model files
    except BaseException as error:
        if folder is not None:  # keep the last epoch that ended (up to ~1 s before)
            try:
                folder.commit()
            except Exception as exc:  # the first error is the one to see
                warnings.warn(f"could not save the checkpoint of {run}: {exc}", stacklevel=2)
            if isinstance(error, NonFiniteLossError) and error.args:
                kept = (f"the checkpoint of epoch {folder.saved_epoch} is kept in {run}"
                        if folder.saved_epoch > 0 else
                        f"{run} holds no checkpoint (no finished epoch was saved)")
                error.args = (f"{error.args[0]}; {kept}", *error.args[1:])
        raise
    finally:
        if folder is not None:
            folder.metrics.close()
    distributed.barrier()  # every rank returns once rank 0 has written the run folder
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if not scored:  # a resume with nothing left to do: score the returned weights now
        test_loss = score_test(None, start_epoch - 1)
    refined = None if offsets is None else offsets.starts(train_set.q, train_set.p)
    return TrainResult(history, best, best_epoch, run, resumed, test_loss, steps_done,
                       full_batch, refined)


def _load_offsets(snapshot: dict[str, Any], offsets: _StartOffsets, path: Path) -> None:
    """Load a checkpoint's start offsets (``refine_initial``) into ``offsets``.

    Raises:
        FileFormatError: when the checkpoint holds none, or none that fit the data.
    """
    try:
        offsets.load_state_dict(snapshot["start_offsets"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise hio.FileFormatError(
            f"{path}: no start offsets that fit this data ({_first_line(exc)}); a run with "
            "refine_initial resumes only from its own checkpoint on the same data: restore "
            "it, or train into a new run folder") from None


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
