"""What the tests of ``tests/hogn`` share: the command-line tests' generate-and-train
runs, the fixed-size models' random graphs, and the spring graphs of the model tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import systems
from hogn.cli import main
from hogn.graph import GraphBatch


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


@pytest.fixture(scope="session")
def flat_graphs() -> Callable[..., GraphBatch]:
    """:func:`random_flat_graphs`, for the tests of the fixed-size (flattened-state)
    models."""
    return random_flat_graphs


def random_flat_graphs(n_graphs: int, n: int, d: int, k: int, seed: int,
                       dtype: torch.dtype = torch.float64) -> GraphBatch:
    """``n_graphs`` edgeless graphs of ``n`` nodes from ``seed``: ``q, p [n_graphs·n,
    d]`` standard normal, ``c [n_graphs·n, k]`` uniform in ``[0.5, 1.5)`` (positive, as
    masses are)."""
    gen = torch.Generator().manual_seed(seed)
    nodes = n_graphs * n
    return GraphBatch(torch.randn(nodes, d, generator=gen, dtype=dtype),
                      torch.randn(nodes, d, generator=gen, dtype=dtype),
                      torch.rand(nodes, k, generator=gen, dtype=dtype) + 0.5,
                      torch.empty(2, 0, dtype=torch.long),
                      torch.arange(0, nodes + 1, n))


@pytest.fixture(scope="module")
def springs() -> GraphBatch:
    """Four float64 spring graphs of 3 to 6 particles (edge constants k, L)."""
    return systems.get("spring-nbody").sample(4, seed=0, n_particles=(3, 6))


@pytest.fixture(scope="module")
def triples() -> GraphBatch:
    """Three float64 spring graphs of exactly 3 particles (for the fixed-size models)."""
    return systems.get("spring-nbody").sample(3, seed=1, n_particles=3)
