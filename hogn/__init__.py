"""hogn: Hamiltonian graph networks that learn how particle systems move.

The library knows nothing of particular physical systems (see the ``systems``
package for ground truth and ``meta`` for meta-learning).
"""

from hogn import graph, integrators, io, metrics, models, nn
from hogn.evaluation import Evaluation, evaluate
from hogn.graph import GraphBatch
from hogn.integrators import integrate
from hogn.rollout import rollout
from hogn.train import TrainConfig, train

__all__ = [
    "Evaluation",
    "GraphBatch",
    "TrainConfig",
    "evaluate",
    "graph",
    "integrate",
    "integrators",
    "io",
    "metrics",
    "models",
    "nn",
    "rollout",
    "train",
]
__version__ = "0.1.0"
