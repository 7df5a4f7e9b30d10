"""hogn: Hamiltonian graph networks that learn how particle systems move.

The library knows nothing of particular physical systems (see the ``systems``
package for ground truth and ``meta`` for meta-learning).
"""

from hogn import graph, integrators, io, metrics, models, nn
from hogn.graph import GraphBatch
from hogn.integrators import integrate

__all__ = [
    "GraphBatch",
    "graph",
    "integrate",
    "integrators",
    "io",
    "metrics",
    "models",
    "nn",
]
__version__ = "0.1.0"
