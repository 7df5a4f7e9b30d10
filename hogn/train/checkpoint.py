"""A run's checkpoint: what it holds (model, optimizer, scheduler, random states,
start offsets), reading it back (older versions included) and applying it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hogn import io as hio
from hogn.models.base import DynamicsModel
from hogn.train.start_offsets import _StartOffsets

CHECKPOINT_VERSION = 2



def _checkpoint_path(run: Path) -> Path | None:
    """The checkpoint a resume reads: ``checkpoint.pt``, else (a run killed between
    keeping the previous checkpoint and writing the new one) ``checkpoint.prev.pt``."""
    return hio.current_or_previous(run / "checkpoint.pt")


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
