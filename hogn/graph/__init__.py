"""Building particle graphs: edge sets for batches of graphs of different sizes.

Node indices are global over a batch: graph ``g`` owns nodes
``ptr[g] .. ptr[g + 1] - 1``, as in a PyG ``Batch``. Edges are directed
``[2, E]`` (sender row 0, receiver row 1); an undirected pair appears twice.

The package, one concept a module (each imports only those listed before it):
:mod:`~hogn.graph.segments` (node offsets :func:`ptr_from_sizes`, :func:`batch_vector`,
the per-bucket :func:`segment_sum` and :func:`segment_max`),
:mod:`~hogn.graph.complete` (fixed edge sets: :func:`fully_connected`,
:func:`from_networkx`, :func:`select_indices`),
:mod:`~hogn.graph.minimum_image` (:func:`edge_vectors` and the one distance criterion
of the radius search), :mod:`~hogn.graph.cells` (the cell-list search and the sizes of
its blocks), :mod:`~hogn.graph.radius` (:func:`radius_graph`, :data:`RADIUS_BACKENDS`,
the checks of its inputs and the choice of backend),
:mod:`~hogn.graph.neighbours` (:class:`NeighbourList`) and :mod:`~hogn.graph.batch`
(:class:`GraphBatch`). This module only hands their public names on; private ones
are imported, or patched in a test, in the module that holds them
(``hogn.graph.cells._BLOCK_SLOTS``, ``hogn.graph.radius._resolve_backend``).
"""

from __future__ import annotations

from hogn.graph.batch import GraphBatch
from hogn.graph.complete import from_networkx, fully_connected, select_indices
from hogn.graph.minimum_image import edge_vectors
from hogn.graph.neighbours import NeighbourList
from hogn.graph.radius import RADIUS_BACKENDS, radius_graph
from hogn.graph.segments import batch_vector, ptr_from_sizes, segment_max, segment_sum

__all__ = [
    "RADIUS_BACKENDS",
    "GraphBatch",
    "NeighbourList",
    "batch_vector",
    "edge_vectors",
    "from_networkx",
    "fully_connected",
    "ptr_from_sizes",
    "radius_graph",
    "segment_max",
    "segment_sum",
    "select_indices",
]
