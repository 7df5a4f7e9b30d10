"""Helpers shared by the ``hogn`` commands: argument types, errors, runs, energies."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

import systems
from hogn.models import DynamicsModel
from hogn.models import load as load_model

__all__ = ["DTYPES", "UserError", "check_output", "energy_of", "load_run", "param",
           "particles", "run_record"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class UserError(ValueError):
    """A mistake in the command line (reported in one line, without a traceback)."""


def particles(text: str) -> int | tuple[int, int]:
    """``"5"`` -> 5, ``"4..8"`` -> (4, 8)."""
    try:
        if ".." in text:
            lo, hi = (int(x) for x in text.split("..", 1))
            return (lo, hi)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an int or a range like 4..8, got {text!r}") from None


def param(text: str) -> tuple[str, Any]:
    """``"g=9.81"`` -> ("g", 9.81); values parse as JSON (lists become tuples)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), tuple(value) if isinstance(value, list) else value


def check_output(path: Path, force: bool) -> None:
    """Refuse to overwrite an existing file unless ``force``; never a directory."""
    if path.exists() and path.is_dir():
        raise UserError(f"{path} is a directory; give a file name")
    if path.exists() and not force:
        raise UserError(f"{path} already exists; pass --force to overwrite it")


def run_record(run: Path) -> dict[str, Any]:
    """The ``config.json`` of a run folder written by ``hogn train``."""
    path = run / "config.json"
    if not path.is_file():
        raise UserError(f"{run} is not a hogn run folder (no config.json); train one with "
                        "'hogn train MODEL DATA -o RUN'")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None


def load_run(run: str | Path, which: str = "best", device: str | None = None
             ) -> tuple[DynamicsModel, dict[str, Any]]:
    """Load a run's ``best`` or ``last`` model and its record.

    Raises:
        UserError: if the folder holds no run or no model file yet.
    """
    run = Path(run)
    record = run_record(run)
    path = run / f"{which}.pt"
    if not path.is_file():
        raise UserError(f"{run} has no {which}.pt yet (has training finished an epoch?)")
    return load_model(path, device=device), record


def energy_of(data: systems.Dataset) -> Any:
    """The true Hamiltonian on ``data``'s graphs: ``energy(q, p) -> [T, G]``."""
    system, graph = data.system(), data.graph
    return lambda q, p: system.hamiltonian(q, p, graph)
