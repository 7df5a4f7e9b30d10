"""What the command-line tests of ``tests/hogn`` share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hogn.cli import main


@pytest.fixture(scope="session")
def cli_run() -> Callable[..., tuple[Path, Path, Path]]:
    """:func:`generate_and_train`, for the module fixtures of the command-line tests."""
    return generate_and_train


def generate_and_train(root: Path, *, particles: str, trajectories: int, steps: int,
                       epochs: int, train: list[str]) -> tuple[Path, Path, Path]:
    """A spring-nbody dataset (``dt`` 0.05) and a HOGN run trained on it through the
    command line, under ``root``: returns ``(root, data, run)``."""
    data, run = root / "data.pt", root / "run"
    assert main(["generate", "spring-nbody", "--n-particles", particles, "--trajectories",
                 str(trajectories), "--steps", str(steps), "--dt", "0.05", "--quiet",
                 "-o", str(data)]) == 0
    assert main(["train", "hogn", str(data), "--epochs", str(epochs), *train,
                 "-o", str(run)]) == 0
    return root, data, run
