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

A run folder receives ``config.json``, ``metrics.jsonl`` (one line per epoch),
``best.pt`` and ``last.pt`` (models) and ``checkpoint.pt`` (optimizer state, to
resume). A folder that holds a different run is refused; the same run (the epoch count may
grow) resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data

from hogn import integrators
from hogn.graph import GraphBatch, _ranges, ptr_from_sizes
from hogn.io import atomic_write
from hogn.models.base import DynamicsModel

__all__ = ["Batch", "NonFiniteLossError", "Samples", "TrainConfig", "TrainResult", "log_cosh",
           "train"]

LOSSES = ("mse", "logcosh")
TARGETS = ("derivative", "rollout")
SCHEDULES = ("none", "cosine")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Training options (all JSON-serialisable; stored in the run's ``config.json``).

    Attributes:
        target: ``"derivative"`` or ``"rollout"`` (``None``: rollout for steppers,
            derivative otherwise).
        integrator: Integrator for the rollout target.
        rollout_steps: Steps ``k`` integrated and matched per sample (rollout target).
        loss: ``"mse"`` or ``"logcosh"``.
        epochs: Passes over the training samples.
        batch_size: Graphs (states) per batch.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        schedule: ``"none"`` or ``"cosine"`` (annealed to 0 over the epochs).
        val_fraction: Fraction of training trajectories held out for validation.
        max_samples: Cap on training samples per epoch (random subset; 0: all).
        grad_clip: Clip the gradient norm (0: off).
        seed: Seed of the split and the batch order.
        device: Torch device.
    """

    target: str | None = None
    integrator: str = "rk4"
    rollout_steps: int = 1
    loss: str = "mse"
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "none"
    val_fraction: float = 0.1
    max_samples: int = 0
    grad_clip: float = 0.0
    seed: int = 0
    device: str = "cpu"

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
        for key in ("epochs", "batch_size", "rollout_steps"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"{key} must be a positive int, got {getattr(self, key)!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction!r}")


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        history: One dict per epoch (epoch, train_loss, val_loss, lr, seconds).
        best_val: Lowest validation loss (train loss when there is no validation).
        best_epoch: Epoch of ``best_val``.
        run_dir: Run folder, if any.
    """

    history: list[dict[str, float]]
    best_val: float
    best_epoch: int
    run_dir: Path | None


def log_cosh(x: Tensor) -> Tensor:
    """``log(cosh(x))`` computed stably (``|x| + softplus(-2|x|) - log 2``)."""
    a = x.abs()
    return a + F.softplus(-2 * a) - math.log(2.0)


def _loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    return F.mse_loss(pred, target) if kind == "mse" else log_cosh(pred - target).mean()


@dataclass
class Batch:
    """A training batch: states of ``G`` graphs and their targets.

    Attributes:
        graph: The states ``q, p [N, d]`` with ``c``, edges and ``ptr``.
        y_q, y_p: Targets, ``[N, d]`` (derivative) or ``[N, k, d]`` (the next ``k``
            states, rollout).
    """

    graph: GraphBatch
    y_q: Tensor
    y_p: Tensor

    @property
    def num_graphs(self) -> int:
        return self.graph.num_graphs

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.graph.to(device), self.y_q.to(device), self.y_p.to(device))


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

    def __getitem__(self, i: int) -> Data:
        g, t = self.index[i].tolist()
        a, b = int(self.ptr[g]), int(self.ptr[g + 1])
        ea, eb = int(self.eptr[g]), int(self.eptr[g + 1])
        d = self.data
        item = Data(q=self.q[t, a:b], p=self.p[t, a:b], c=d.c[a:b],
                    edge_index=d.edge_index[:, ea:eb] - a, num_nodes=b - a)
        if d.edge_attr is not None:
            item.edge_attr = d.edge_attr[ea:eb]
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
                           None if d.edge_attr is None else d.edge_attr[edges_d])
        if self.target == "derivative":
            return Batch(graph, d.dq[t_d, nodes_d], d.dp[t_d, nodes_d])
        ahead = t_d[:, None] + torch.arange(1, self.k + 1, device=dev)  # [N, k]
        return Batch(graph, self.q[ahead, nodes_d[:, None]], self.p[ahead, nodes_d[:, None]])


def _loader(samples: Samples, batch_size: int, shuffle: bool = False,
            sampler: Any = None, generator: torch.Generator | None = None
            ) -> torch.utils.data.DataLoader:
    """Batches of sample indices collated by :meth:`Samples.collate`."""
    return torch.utils.data.DataLoader(range(len(samples)), batch_size=batch_size,
                                       shuffle=shuffle, sampler=sampler, generator=generator,
                                       collate_fn=samples.collate)


def _split(data: Any, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    train_ids = (~data.test.cpu()).nonzero().flatten()
    if train_ids.numel() == 0:
        raise ValueError("the dataset has no training trajectories")
    gen = torch.Generator().manual_seed(seed)
    perm = train_ids[torch.randperm(train_ids.numel(), generator=gen)]
    n_val = round(val_fraction * perm.numel()) if perm.numel() > 1 else 0
    return perm[n_val:], perm[:n_val]


def _batch_loss(model: DynamicsModel, batch: Batch, cfg: TrainConfig, dt: float) -> Tensor:
    graph = batch.graph
    if cfg.target == "derivative":
        dq, dp = model.time_derivative(graph)
        return _loss(torch.cat([dq, dp], -1), torch.cat([batch.y_q, batch.y_p], -1), cfg.loss)
    q, p = graph.q, graph.p
    preds_q, preds_p = [], []
    if model.is_stepper:
        for _ in range(cfg.rollout_steps):
            q, p = model.next_state(graph.replace(q=q, p=p))
            preds_q.append(q)
            preds_p.append(p)
    else:
        step = integrators.get(cfg.integrator)
        f = model.vector_field(graph)
        for _ in range(cfg.rollout_steps):
            q, p = step(f, q, p, dt)
            preds_q.append(q)
            preds_p.append(p)
    pred = torch.cat([torch.stack(preds_q, 1), torch.stack(preds_p, 1)], -1)
    return _loss(pred, torch.cat([batch.y_q, batch.y_p], -1), cfg.loss)


def _epoch(model: DynamicsModel, loader: torch.utils.data.DataLoader, cfg: TrainConfig, dt: float,
           optimizer: torch.optim.Optimizer | None, epoch: int, progress: bool) -> float:
    total, count = 0.0, 0
    batches: Iterator[Any] = iter(loader)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=len(loader), leave=False, disable=None,
                       desc=f"epoch {epoch}" + ("" if optimizer else " val"))
    for step, batch in enumerate(batches):
        batch = batch.to(cfg.device)
        if optimizer is None:
            loss = _batch_loss(model, batch, cfg, dt)
            loss = loss.detach()
        else:
            optimizer.zero_grad(set_to_none=True)
            loss = _batch_loss(model, batch, cfg, dt)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"non-finite training loss ({loss.item()}) at epoch "
                                         f"{epoch}, step {step}")
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
        total += float(loss.detach()) * batch.num_graphs
        count += batch.num_graphs
    return total / max(count, 1)


def _prepare_run(run_dir: Path, record: dict[str, Any]) -> bool:
    """Create the run folder or check it holds this run; returns whether to resume."""
    config_path = run_dir / "config.json"
    if config_path.exists():
        old = json.loads(config_path.read_text())
        new = json.loads(json.dumps(record))
        for rec in (old, new):  # more epochs extend the same run
            rec.get("train", {}).pop("epochs", None)
        if old != new:
            raise ValueError(f"{run_dir} already holds a different run (see {config_path}); "
                             "choose another folder or remove it")
        return (run_dir / "checkpoint.pt").exists()
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(f"{run_dir} is not empty and holds no hogn run; choose another folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(config_path, lambda fh: fh.write(text.encode()))
    return False


def _save_checkpoint(run_dir: Path, optimizer: torch.optim.Optimizer,
                     scheduler: Any, epoch: int, best: float, best_epoch: int,
                     generator: torch.Generator) -> None:
    state = {"optimizer": optimizer.state_dict(), "epoch": epoch, "best": best,
             "best_epoch": best_epoch, "generator": generator.get_state(),
             "scheduler": None if scheduler is None else scheduler.state_dict()}
    atomic_write(run_dir / "checkpoint.pt", lambda fh: torch.save(state, fh))


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
        progress: Show tqdm bars.
        data_info: JSON-able description of the data stored in ``config.json``.

    Returns:
        The :class:`TrainResult`; the model holds the *best* weights (lowest
        validation loss) when it returns.

    Raises:
        ValueError: bad options, data that does not fit the model, or a run folder
            holding a different run.
        NonFiniteLossError: the loss became non-finite (naming epoch and step); the
            last good checkpoint is kept in ``run_dir``.
    """
    cfg = TrainConfig(**{**asdict(config or TrainConfig()), **options})
    if cfg.target is None:
        cfg.target = "rollout" if model.is_stepper else "derivative"
    cfg.validate(model)
    device = torch.device(cfg.device)
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
    train_loader = _loader(train_set, cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                           generator=gen if sampler is None else None)
    val_loader = (_loader(Samples(data, val_ids, k, cfg.target), cfg.batch_size)
                  if val_ids.numel() else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs)
                 if cfg.schedule == "cosine" else None)

    run = Path(run_dir) if run_dir is not None else None
    start_epoch, best, best_epoch = 1, math.inf, 0
    history: list[dict[str, float]] = []
    if run is not None:
        record = {"model": model.name, "model_config": model.config(), "train": asdict(cfg),
                  "data": data_info}
        if _prepare_run(run, record):
            state = torch.load(run / "checkpoint.pt", map_location=device, weights_only=True)
            last = type(model).load(run / "last.pt", device=device)
            model.load_state_dict(last.state_dict())
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state["scheduler"] is not None:
                scheduler.load_state_dict(state["scheduler"])
            start_epoch, best, best_epoch = state["epoch"] + 1, state["best"], state["best_epoch"]
            metrics_path = run / "metrics.jsonl"
            if metrics_path.exists():
                history = [json.loads(line) for line in metrics_path.read_text().splitlines()
                           if line.strip()]
            gen.set_state(state["generator"])  # the batch order continues as before

    best_state: dict[str, Tensor] | None = None
    for epoch in range(start_epoch, cfg.epochs + 1):
        started = time.perf_counter()
        model.train()
        train_loss = _epoch(model, train_loader, cfg, dt, optimizer, epoch, progress)
        model.eval()
        val_loss = (_epoch(model, val_loader, cfg, dt, None, epoch, progress)
                    if val_loader is not None else train_loss)
        if not math.isfinite(val_loss):
            raise NonFiniteLossError(f"non-finite validation loss at epoch {epoch}")
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
               "lr": optimizer.param_groups[0]["lr"],
               "seconds": round(time.perf_counter() - started, 3)}
        history.append(row)
        if scheduler is not None:
            scheduler.step()
        if run is not None:
            if val_loss < best:
                model.save(run / "best.pt")
            model.save(run / "last.pt")
            lines = "".join(json.dumps(r) + "\n" for r in history)
            atomic_write(run / "metrics.jsonl", lambda fh, s=lines: fh.write(s.encode()))
        if val_loss < best:
            best, best_epoch = val_loss, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if run is not None:
            _save_checkpoint(run, optimizer, scheduler, epoch, best, best_epoch, gen)
    if best_state is not None:
        model.load_state_dict(best_state)
    elif run is not None and (run / "best.pt").exists():
        model.load_state_dict(type(model).load(run / "best.pt", device=device).state_dict())
    model.eval()
    return TrainResult(history, best, best_epoch, run)
