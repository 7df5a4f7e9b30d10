"""Neighbour lists: a radius graph rebuilt only when particles have moved far enough."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from hogn.graph.minimum_image import _closer_than
from hogn.graph.radius import (
    RADIUS_BACKENDS,
    _check_box_values,
    _check_length,
    _check_radius_inputs,
    radius_graph,
)
from hogn.graph.segments import batch_vector


class NeighbourList:
    """Radius graph rebuilt only when particles have moved far enough (a Verlet list).

    :meth:`update` returns the graph of cut-off ``radius + skin``, built anew only
    when some particle has moved more than ``skin / 2`` since the last build (or the
    batch layout, dtype or device changed). Two particles then have approached by
    at most ``skin``, so every pair now closer than ``radius`` is among the edges.
    The listed edges also hold pairs up to ``radius + skin`` apart: callers cut or
    weight them by the true distance (e.g. a smooth cut-off reaching zero at
    ``radius``), or pass ``trim=True`` to get exactly the pairs closer than
    ``radius`` at a cost of one distance per listed edge per update (``O(E)``, no
    search). Checking for the rebuild costs one displacement per particle (``O(N)``
    and one device synchronisation).

    Args:
        radius: Interaction radius, finite and ``>= 0``.
        skin: Extra margin, finite and ``>= 0`` (0: a rebuild whenever anything moved).
        box: Periodic box lengths ``[d]`` or ``[G, d]`` (each at least
            ``2 · (radius + skin)``), or ``None``.
        backend: Search backend of :func:`radius_graph`.
        trim: Return only the pairs closer than ``radius``.

    Attributes:
        rebuilds: Number of searches so far.
        updates: Number of :meth:`update` calls so far.
        edge_index: The last listed graph (cut-off ``radius + skin``), ``[2, E]``.
    """

    def __init__(self, radius: float, skin: float, box: Tensor | Sequence[float] | None = None,
                 *, backend: str = "auto", trim: bool = False) -> None:
        self.radius = _check_length(radius, "radius")
        self.skin = _check_length(skin, "skin")
        if backend not in RADIUS_BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {RADIUS_BACKENDS}")
        self.box = None if box is None else torch.as_tensor(box, dtype=torch.float64)
        if self.box is not None:
            _check_box_values(self.box, self.radius + self.skin, "radius + skin")
        self.backend, self.trim = backend, trim
        self.rebuilds = 0
        self.updates = 0
        self.edge_index: Tensor | None = None
        self._ref: Tensor | None = None
        self._ptr: Tensor | None = None

    def reset(self) -> None:
        """Forget the last build: the next :meth:`update` searches anew."""
        self.edge_index, self._ref, self._ptr = None, None, None

    def needs_rebuild(self, q: Tensor, ptr: Tensor) -> bool:
        """Whether :meth:`update` would search anew for positions ``q [N, d]``."""
        ref = self._ref
        if (ref is None or ref.shape != q.shape or ref.dtype != q.dtype
                or ref.device != q.device or self._ptr is None
                or self._ptr.shape != ptr.shape or not torch.equal(self._ptr, ptr.to(q.device))):
            return True
        if q.shape[0] == 0:
            return False
        disp = q.detach() - ref
        if self.box is not None:
            lengths = self.box.to(q)
            if lengths.dim() == 2 and lengths.shape[0] > 1:
                lengths = lengths[batch_vector(self._ptr)]
            disp = disp - lengths * torch.round(disp / lengths)
        return bool(disp.square().sum(-1).max() > (self.skin / 2) ** 2)

    def update(self, q: Tensor, ptr: Tensor) -> Tensor:
        """The neighbour graph for positions ``q [N, d]`` of graphs ``ptr [G + 1]``.

        Returns:
            ``edge_index [2, E]``, ordered as :func:`radius_graph`'s: all pairs
            closer than ``radius + skin`` at the last build (or, with ``trim``, the
            pairs closer than ``radius`` now).
        """
        self.updates += 1
        if self.needs_rebuild(q, ptr):
            self.edge_index = radius_graph(q, ptr, self.radius + self.skin,
                                           box=self.box, backend=self.backend)
            self._ref = q.detach().clone()
            self._ptr = torch.as_tensor(ptr, device=q.device).clone()
            self.rebuilds += 1
        assert self.edge_index is not None
        if not self.trim or self.edge_index.shape[1] == 0:
            return self.edge_index
        _, ptr_c, r, box = _check_radius_inputs(q, self._ptr, self.radius, self.box, "radius")
        i, j = self.edge_index
        close = _closer_than(q.detach().T.contiguous(), i, j, r, box, batch_vector(ptr_c))
        return self.edge_index[:, close]
