"""The run folder: its record (``config.json``) checked or created, ``metrics.jsonl``
opened and appended, checkpoints and model files written (:class:`_RunFolder`), and
the folder's writer lock."""

from __future__ import annotations

import contextlib
import copy
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hogn import distributed
from hogn import io as hio
from hogn.models.base import DynamicsModel
from hogn.train.checkpoint import CHECKPOINT_VERSION, _checkpoint_path, _clone
from hogn.train.config import TrainConfig

# options that do not change what is computed: a resume may change them
_RESUMABLE_CHANGES = ("epochs", "steps", "checkpoint_every", "checkpoint_seconds")



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


def _run_lock(run_dir: str | os.PathLike | None) -> contextlib.AbstractContextManager:
    """The run folder's writer lock (:class:`hogn.io.RunLock`), held by rank 0, which
    alone writes the folder; nothing to lock without a folder (or where the name is a
    file, which :func:`_prepare_run` refuses)."""
    if run_dir is None or not distributed.is_main():
        return contextlib.nullcontext()
    if not hio.holds_run_or_nothing(run_dir):  # refused by _prepare_run: left as it is
        return contextlib.nullcontext()
    return hio.RunLock(run_dir)
