"""Helpers shared by the ``hogn`` commands once they run: runs, outputs, system
parameters (the argument types and :class:`UserError` live in the torch-free
:mod:`hogn.cli.args`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import systems
from hogn.cli.args import UserError

if TYPE_CHECKING:
    from hogn.models import DynamicsModel

__all__ = ["DTYPES", "check_output", "check_outputs", "load_run", "run_record",
           "system_params"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}
"""``--dtype`` name -> torch dtype (the names, torch-free: :data:`hogn.cli.choices.DTYPES`)."""


def _kind_of(default: Any) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an int"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, str):
        return "a text"
    if isinstance(default, tuple | list):
        return "a list of numbers like [0.5,1.5]"
    return "any value"


def _fits(default: Any, value: Any) -> bool:
    """Whether ``value`` has the kind of the parameter's ``default``."""
    def real(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool)
    if default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):  # a number, or a (low, high) range where allowed
        return real(value) or (isinstance(value, tuple | list) and len(value) == 2
                               and all(real(v) for v in value))
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, tuple | list):
        return isinstance(value, tuple | list) and all(real(v) for v in value)
    return True


def system_params(name: str, params: dict[str, Any], flag: str = "--param"
                  ) -> dict[str, Any]:
    """Check ``--param`` values against the kinds of the system's defaults.

    A value of another kind than the default (``mass=true``, ``dim=2.5``,
    ``graph=3``) is refused rather than passed on; unknown names are left to
    :func:`systems.get`, which lists the valid ones.

    Raises:
        UserError: naming the parameter, the value and the kind expected.
    """
    if name not in systems.names():
        return params
    cls = systems._registry()[name]
    defaults = {**cls.defaults, "embed_dim": 1}
    for key, value in params.items():
        if key in defaults and not _fits(defaults[key], value):
            raise UserError(f"{flag} {key}: {name} expects {_kind_of(defaults[key])} "
                            f"(default {defaults[key]!r}), got {value!r}")
    return params


def check_output(path: Path, force: bool, flag: str | None = None) -> None:
    """Refuse to overwrite an existing file unless ``force``; never a directory, nor a
    path through a file (where no folder can be made)."""
    named = f"{flag} {path}" if flag else str(path)
    if path.exists() and path.is_dir():
        raise UserError(f"{named} is a directory; give a file name")
    blocked = next((a for a in Path(path).parents if a.exists() and not a.is_dir()), None)
    if blocked is not None:
        raise UserError(f"{named}: {blocked} is a file, not a folder; give another folder")
    if path.exists() and not force:
        raise UserError(f"{named} already exists; pass --force to overwrite it")


def check_outputs(outputs: Mapping[str, str | Path | None], force: bool) -> None:
    """The one rule for the files a command writes, checked before any work: an
    existing file is refused without ``--force`` (a folder always), and two outputs
    may not name one file (one would replace the other).

    Args:
        outputs: Flag (e.g. ``"-o"``, ``"--json"``) → path, or ``None`` when not asked.
        force: ``--force`` was given.

    Raises:
        UserError: naming the flag and the file.
    """
    seen: dict[Path, str] = {}
    for flag, path in outputs.items():
        if path is None:
            continue
        path = Path(path)
        check_output(path, force, flag)
        key = path.resolve()
        if key in seen:
            raise UserError(f"{seen[key]} and {flag} name the same file {path}; give two")
        seen[key] = flag


def run_record(run: Path) -> dict[str, Any]:
    """The ``config.json`` of a run folder written by ``hogn train``."""
    path = run / "config.json"
    if not path.is_file():
        raise UserError(f"{run} is not a hogn run folder (no config.json); train one with "
                        "'hogn train MODEL DATA -o RUN'")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); the run folder is damaged") \
            from None
    if not isinstance(record, dict) or not isinstance(record.get("train", {}), dict):
        raise UserError(f"{path} is not a hogn run record (expected a JSON object with "
                        "'model' and 'train')")
    return record


def load_run(run: str | Path, which: str = "best", device: str | None = None
             ) -> tuple[DynamicsModel, dict[str, Any]]:
    """Load a run's ``best`` or ``last`` model and its record.

    Raises:
        UserError: if the folder holds no run or no model file yet.
    """
    from hogn.models import load as load_model  # PyG: only the commands that load a model

    run = Path(run)
    record = run_record(run)
    path = run / f"{which}.pt"
    if not path.is_file():
        raise UserError(f"{run} has no {which}.pt yet (has training finished an epoch?)")
    return load_model(path, device=device), record
