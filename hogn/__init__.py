"""hogn: Hamiltonian graph networks that learn how particle systems move.

The library knows nothing of particular physical systems (see the ``systems``
package for ground truth and ``meta`` for meta-learning).

Importing the package loads no submodule: each public name is imported on first use
(``hogn.models``, ``hogn.rollout``, ...; see :mod:`hogn._lazy`), so ``import hogn``
costs next to nothing and PyTorch Geometric is imported with the first graph or
model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hogn._lazy import attach

__all__ = [
    "Evaluation",
    "GraphBatch",
    "TrainConfig",
    "batching",
    "distributed",
    "evaluate",
    "graph",
    "integrate",
    "integrators",
    "io",
    "metrics",
    "models",
    "nn",
    "refine_start",
    "rollout",
    "train",
    "xyz",
]
__version__ = "0.1.0"

__getattr__, __dir__ = attach(__name__, {
    "Evaluation": "evaluation", "evaluate": "evaluation", "GraphBatch": "graph",
    "integrate": "integrators", "refine_start": "refine", "rollout": "rollout",
    "TrainConfig": "train", "train": "train"},
    submodules=("batching", "distributed", "graph", "integrators", "io", "metrics", "models",
                "nn", "xyz"))

if TYPE_CHECKING:  # what the lazy attributes are, for type checkers
    from hogn import batching, distributed, graph, integrators, io, metrics, models, nn, xyz
    from hogn.evaluation import Evaluation, evaluate
    from hogn.graph import GraphBatch
    from hogn.integrators import integrate
    from hogn.refine import refine_start
    from hogn.rollout import rollout
    from hogn.train import TrainConfig, train
