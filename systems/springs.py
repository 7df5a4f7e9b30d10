"""N masses joined by springs on a graph.

``H = Σ_i |p_i|²/2m_i + Σ_{(i,j) ∈ springs} ½ k_ij (|q_i − q_j| − L_ij)²``.
The springs form a networkx graph (``graph``: a generator name or a callable
``n -> nx.Graph``) or an explicit list of pairs (``edges``); each spring's
stiffness ``k`` and rest length ``L`` are edge constants ``edge_attr [E, 2]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import networkx as nx
import torch
from torch import Tensor

from hogn.graph import GraphBatch
from hogn.integrators import VectorField
from systems.base import System, constant_masses, node_sum, pair_sum, uniform

__all__ = ["SpringNBody"]

GRAPHS: dict[str, Callable[[int], nx.Graph]] = {
    "complete": nx.complete_graph,
    "cycle": nx.cycle_graph,
    "path": nx.path_graph,
    "star": lambda n: nx.star_graph(n - 1),
    "wheel": nx.wheel_graph,
}


class SpringNBody(System):
    """Masses coupled by springs on a graph, any ``N`` and ``dim``.

    Initial states: positions ``q ~ N(0, spread²)`` per coordinate, momenta
    ``p ~ N(0, momentum² m)``, total momentum removed; ``H > 0``. Masses,
    stiffnesses and rest lengths are numbers or ``(lo, hi)`` ranges drawn uniformly
    per particle / per spring.
    """

    name = "spring-nbody"
    separable = True
    native_dim = 2
    n_particles = None
    defaults: dict[str, Any] = {"graph": "complete", "edges": None, "mass": 1.0,
                                "stiffness": 1.0, "rest_length": 1.0, "dim": 2,
                                "spread": 1.0, "momentum": 0.5}
    max_step = 0.02
    description = "springs on a graph (complete by default), any N; k = L = m = 1"

    def _validate(self) -> None:
        super()._validate()
        self._positive_range("mass")
        self._positive_range("stiffness")
        self._positive_range("rest_length", allow_zero=True)
        graph, edges = self.params["graph"], self.params["edges"]
        if edges is None and not callable(graph) and graph not in GRAPHS:
            raise ValueError(f"{self.name}: unknown graph {graph!r}; expected one of "
                             f"{', '.join(sorted(GRAPHS))}, a callable n -> networkx.Graph, "
                             "or explicit edges=[(i, j), ...]")

    def _pairs(self, n: int) -> list[tuple[int, int]]:
        edges = self.params["edges"]
        if edges is not None:
            pairs = sorted({(min(i, j), max(i, j)) for i, j in edges if i != j})
            if pairs and not (0 <= pairs[0][0] and max(j for _, j in pairs) < n):
                raise ValueError(f"{self.name}: edges must join nodes 0..{n - 1}, got "
                                 f"{pairs[:4]}...")
            return pairs
        graph = self.params["graph"]
        g = graph(n) if callable(graph) else GRAPHS[graph](n)
        if g.number_of_nodes() != n:
            raise ValueError(f"{self.name}: graph for n={n} has {g.number_of_nodes()} nodes")
        g = nx.convert_node_labels_to_integers(g)
        return sorted((min(u, v), max(u, v)) for u, v in g.edges if u != v)

    def default_edges(self, sizes: list[int], generator: torch.Generator
                      ) -> tuple[Tensor, Tensor]:
        index, attr, offset = [], [], 0
        for n in sizes:
            pairs = torch.tensor(self._pairs(n), dtype=torch.long).reshape(-1, 2).T + offset
            k = uniform(generator, pairs.shape[1], *self._positive_range("stiffness"))
            rest = uniform(generator, pairs.shape[1],
                           *self._positive_range("rest_length", allow_zero=True))
            index.append(torch.cat([pairs, pairs.flip(0)], 1))
            attr.append(torch.stack([k, rest], -1).repeat(2, 1))
            offset += n
        return torch.cat(index, 1), torch.cat(attr)

    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        m = graph.c[:, 0]
        kinetic = node_sum((p**2).sum(-1) / (2 * m), graph)
        src, dst = graph.edge_index
        k, rest = graph.edge_attr[:, 0], graph.edge_attr[:, 1]
        length = ((q[..., src, :] - q[..., dst, :]) ** 2).sum(-1).sqrt()
        potential = pair_sum(0.5 * k * (length - rest) ** 2, graph)
        return kinetic + potential

    def _native_field(self, graph: GraphBatch) -> VectorField:
        """``dq = p / m``, ``dp_i = −Σ_{j ~ i} k_ij (r_ij − L_ij) (q_i − q_j) / r_ij``
        (each spring is stored in both directions: one term per direction and node).

        Batches of graphs of one size with springs between at least a quarter of the
        ordered pairs (the default complete graphs) and at least 2,048 edges in all
        take every ``n × n`` pair at once from dense spring matrices built here, once
        per graph: no index gathers or scatters per evaluation (2-10x faster from
        that size on). Others (sparse or small) sum over the edge list.
        """
        inv_m = 1.0 / graph.c[:, 0:1]
        unit = bool((inv_m == 1).all())  # unit masses: dq is p itself (one op fewer)
        n = graph.uniform_size
        edges = graph.edge_index.shape[1]
        if n is not None and edges >= _DENSE_MIN_EDGES and 4 * edges >= graph.num_graphs * n * n:
            return _dense_field(graph, n, inv_m, unit)
        src, dst = graph.edge_index
        k, rest = graph.edge_attr[:, 0:1], graph.edge_attr[:, 1:2]
        minus_k = -k
        ones_d = torch.ones(self.native_dim, 1, dtype=k.dtype, device=k.device)

        def field(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
            diff = q.index_select(-2, src) - q.index_select(-2, dst)
            r = torch.matmul(diff * diff, ones_d).sqrt_()  # a short sum() is far slower
            w = diff * (minus_k * (r - rest) / r)
            return (p if unit else p * inv_m), torch.zeros_like(q).index_add_(-2, src, w)

        return field

    def _sample(self, sizes: list[int], generator: torch.Generator
                ) -> tuple[Tensor, Tensor, Tensor]:
        d = self.native_dim
        c = constant_masses(sizes, self.params["mass"], generator)
        n_all = sum(sizes)
        q = self.params["spread"] * torch.randn(n_all, d, generator=generator,
                                                dtype=torch.float64)
        v = self.params["momentum"] * torch.randn(n_all, d, generator=generator,
                                                  dtype=torch.float64) / c.sqrt()
        parts, offset = [], 0
        for n in sizes:  # remove each graph's centre-of-mass motion
            sl = slice(offset, offset + n)
            m = c[sl]
            parts.append(v[sl] - (m * v[sl]).sum(0) / m.sum())
            offset += n
        return q, c * torch.cat(parts), c


_DENSE_MIN_EDGES = 2048  # smaller edge lists are summed faster edge by edge


def _dense_field(graph: GraphBatch, n: int, inv_m: Tensor, unit: bool) -> VectorField:
    """Field of graphs of one size ``n`` over every ``n × n`` pair, springs as dense
    matrices ``K [G, n, n]`` (summed stiffness of the springs joining ``i`` and ``j``)
    and ``KL`` (summed ``k · L``): the pull of ``j`` on ``i`` is
    ``−(K_ij − KL_ij / r_ij) (q_i − q_j)``, equal to the edge-list sum's (a pair
    without a spring has ``K = KL = 0``; its distance is offset by 1, and that of
    ``i = j`` made infinite, so that no ``0 / 0`` arises there)."""
    g = graph.num_graphs
    src, dst = graph.edge_index
    local = graph.ptr[graph.batch[src]].to(src.device)
    flat = (graph.batch[src].to(src.device) * n + (src - local)) * n + (dst - local)
    k, rest = graph.edge_attr[:, 0], graph.edge_attr[:, 1]
    stiff = k.new_zeros(g * n * n).index_add_(0, flat, k).view(g, n, n)
    pulled = k.new_zeros(g * n * n).index_add_(0, flat, k * rest).view(g, n, n)
    joined = torch.zeros(g * n * n, dtype=torch.bool, device=k.device)
    joined[flat] = True
    offset = (~joined).to(k.dtype).view(g, n, n)
    offset.diagonal(dim1=-2, dim2=-1).fill_(math.inf)
    ones_n = torch.ones(n, 1, dtype=k.dtype, device=k.device)

    def dense(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        x = q.reshape(-1, n, q.shape[-1])  # [B, n, d], B = leading axes x G
        r = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")  # [B, n, n]
        r = r.view(-1, g, n, n).add_(offset)
        w = torch.div(pulled, r).sub_(stiff).view(-1, n, n)  # −(K − KL / r)
        # Σ_j w_ij (q_i − q_j) = q_i Σ_j w_ij − (W q)_i
        force = torch.baddbmm(x * torch.matmul(w, ones_n), w, x, alpha=-1)
        return (p if unit else p * inv_m), force.view(q.shape)

    return dense
