"""The held-out split of a dataset's trajectories, shared by the builders of datasets
(:func:`systems.generate`, :func:`systems.arrays.from_arrays`,
:func:`systems.ase_data.from_ase`); torch only, so that every one of them can import it."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["random_test_mask"]


def random_test_mask(count: int, fraction: float, generator: torch.Generator) -> Tensor:
    """A held-out mask ``[count]`` (bool, CPU) with ``round(fraction · count)`` entries set,
    chosen by a random permutation from ``generator`` (how :func:`systems.generate` and
    :func:`systems.arrays.from_arrays` split their trajectories)."""
    mask = torch.zeros(count, dtype=torch.bool)
    mask[torch.randperm(count, generator=generator)[: round(fraction * count)]] = True
    return mask
