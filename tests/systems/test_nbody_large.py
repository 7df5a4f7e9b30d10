"""Large N-body systems: gravity's all-pairs sums by blocks of rows against the edge list
(energy, field, gradients, close passes; float64, any block size), its sampler against
the complete-graph computation it replaced, the memory bound (no tensor of ``N²``
elements is ever made: every torch operation's outputs are watched), a 4,096-particle
smoke run, and the springs' dense field against autograd of the edge-list ``H``."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import systems
from hogn.graph import GraphBatch, fully_connected, ptr_from_sizes
from systems import gravity
from systems.base import node_sum, pair_sum, uniform
from systems.gravity import AUTO_COMPLETE_MAX, GravityNBody, pair_forces, pair_potential

F64 = torch.float64


def _states(sizes, dim=2, seed=0, mass=(0.5, 2.0), spread=3.0):
    """Random positions ``[2, N, dim]`` (a leading time axis), masses ``[N]``, ``ptr``."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    q = spread * torch.randn(2, n, dim, generator=gen, dtype=F64)
    m = uniform(gen, n, *mass)
    return q, m, ptr_from_sizes(sizes)


def _edge_potential(q, m, ptr, g, eps):
    """``V [..., G]`` over the complete graphs' edge list, as ``energy`` sums it."""
    sizes = (ptr[1:] - ptr[:-1]).tolist()
    src, dst = fully_connected(sizes)
    r2 = ((q[..., src, :] - q[..., dst, :]) ** 2).sum(-1) + eps**2
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    out = q.new_zeros(*q.shape[:-2], len(sizes))
    return 0.5 * out.index_add(-1, batch[src], -g * m[src] * m[dst] / torch.sqrt(r2))


def _rel(a, b):
    """Largest difference relative to the largest value of the reference ``b``."""
    scale = b.abs().amax()
    return ((a - b).abs().amax() / scale).item() if scale > 0 else (a - b).abs().amax().item()


# ------------------------------------------------ blocks of rows against the edge list
SIZES = [[1], [2], [7], [33], [5, 1, 9, 2, 9], [64, 3]]


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("chunk", [None, 1, 3, 5, 64])
@pytest.mark.parametrize("dim, eps", [(2, 0.1), (3, 0.05), (2, 0.0)])
def test_blocks_of_rows_equal_the_edge_list(sizes, chunk, dim, eps):
    """Energy, force and the gradients of the energy (positions and masses) agree with
    the complete graphs' edge list to 1e-12 relative, for block sizes that divide the
    graph sizes and that do not, single particles and pairs included."""
    q, m, ptr = _states(sizes, dim)
    g = 1.7
    ref = _edge_potential(q, m, ptr, g, eps)
    v = pair_potential(q, m, ptr, G=g, softening=eps, chunk=chunk)
    assert v.shape == ref.shape == (2, len(sizes)) and v.dtype == F64
    assert _rel(v, ref) <= 1e-12
    # the force is −∂V/∂q of the edge list by autograd
    qr = q.clone().requires_grad_(True)
    (grad_ref,) = torch.autograd.grad(_edge_potential(qr, m, ptr, g, eps).sum(), qr)
    force = pair_forces(q, m, ptr, G=g, softening=eps, chunk=chunk)
    assert _rel(force, -grad_ref) <= 1e-12
    if max(sizes) == 1:
        assert not force.any() and not v.any()
    # the blocks' own backward pass: position and mass gradients, weighted per graph
    weights = torch.linspace(0.5, 2.0, 2 * len(sizes), dtype=F64).reshape(2, -1)
    qa, ma = q.clone().requires_grad_(True), m.clone().requires_grad_(True)
    qb, mb = q.clone().requires_grad_(True), m.clone().requires_grad_(True)
    ga = torch.autograd.grad((weights * pair_potential(qa, ma, ptr, g, eps, chunk)).sum(),
                             (qa, ma))
    gb = torch.autograd.grad((weights * _edge_potential(qb, mb, ptr, g, eps)).sum(), (qb, mb))
    for a, b in zip(ga, gb, strict=True):
        assert _rel(a, b) <= 1e-12


def test_blocks_have_second_derivatives():
    """The blocks' backward pass is itself differentiable (``create_graph``)."""
    q, m, ptr = _states([4, 3], dim=2, spread=1.0)
    q = q[0].clone().requires_grad_(True)
    torch.autograd.gradcheck(lambda x: pair_potential(x, m, ptr, 1.0, 0.1, 2), (q,))
    torch.autograd.gradgradcheck(lambda x: pair_potential(x, m, ptr, 1.0, 0.1, 2), (q,))


def test_bad_chunk_is_refused():
    q, m, ptr = _states([3])
    for bad in (0, -1, 2.5, "4"):
        with pytest.raises(ValueError, match="chunk must be a positive int"):
            pair_potential(q, m, ptr, chunk=bad)
        with pytest.raises(ValueError, match="chunk must be a positive int"):
            pair_forces(q, m, ptr, chunk=bad)


# ----------------------------------------------------------- the system, every path
def _with_complete_edges(graph):
    return graph.replace(edge_index=fully_connected(graph.sizes))


@pytest.mark.parametrize("n_particles, chunk", [(6, None), ((2, 9), 4), (300, 7), (300, None)])
@pytest.mark.parametrize("params", [{}, {"dim": 3, "mass": (0.5, 2.0), "G": 2.0}])
def test_system_paths_agree(n_particles, chunk, params):
    """``edges="none"``, an empty edge list, and a long complete edge list (all summed by
    blocks of rows) give the edge list's energy, and a field equal to autograd of it."""
    reference = GravityNBody(edges="complete", **params)
    graph = reference.sample(3, seed=2, n_particles=n_particles)
    gen = torch.Generator().manual_seed(3)
    q = torch.stack([graph.q, graph.q + 0.2 * torch.randn(graph.q.shape, generator=gen,
                                                          dtype=F64)])
    p = torch.stack([graph.p, graph.p])
    src, dst = graph.edge_index  # the edge-list energy, written out
    r2 = ((q[..., src, :] - q[..., dst, :]) ** 2).sum(-1) + reference.params["softening"] ** 2
    pair = -reference.params["G"] * graph.c[src, 0] * graph.c[dst, 0] / r2.sqrt()
    kinetic = torch.zeros(2, graph.num_graphs, dtype=F64).index_add(
        -1, graph.batch, (p**2).sum(-1) / (2 * graph.c[:, 0]))
    h_ref = kinetic + 0.5 * torch.zeros_like(kinetic).index_add(-1, graph.edge_batch, pair)
    qr = q.clone().requires_grad_(True)
    r2r = ((qr[..., src, :] - qr[..., dst, :]) ** 2).sum(-1) + reference.params["softening"] ** 2
    v_ref = (-reference.params["G"] * graph.c[src, 0] * graph.c[dst, 0] / r2r.sqrt()).sum()
    (grad_ref,) = torch.autograd.grad(0.5 * v_ref, qr)  # ∂V/∂q of the edge list
    none = GravityNBody(edges="none", **params)
    empty = graph.replace(edge_index=torch.empty(2, 0, dtype=torch.long))
    for system, g in ((none, graph), (reference, empty), (reference, graph)):
        system.chunk = chunk
        assert _rel(system.hamiltonian(q, p, g), h_ref) <= 1e-12
        dq, dp = system.time_derivative(q, p, g)  # autograd of the path's own H
        assert _rel(dp, -grad_ref) <= 1e-12
        fq, fp = system.analytic_field(q, p, g)
        assert _rel(fp, -grad_ref) <= 1e-12 and _rel(fq, dq) <= 1e-15


def test_long_complete_edge_lists_are_summed_by_blocks(monkeypatch):
    """A complete edge list of at least 2^16 edges is recognised (by blocks of edges)
    and summed by blocks of rows; a shuffled or incomplete one is read edge by edge."""
    system = GravityNBody()
    graph = system.sample(1, seed=0, n_particles=260)  # 67,340 edges
    assert graph.edge_index.shape[1] >= gravity._CHUNKED_MIN_EDGES
    calls = []
    original = gravity._row_sums
    monkeypatch.setattr(gravity, "_row_sums", lambda *a: calls.append(1) or original(*a))
    h = system.hamiltonian(graph.q, graph.p, graph)
    assert calls
    calls.clear()
    order = torch.randperm(graph.edge_index.shape[1], generator=torch.Generator().manual_seed(0))
    shuffled = graph.replace(edge_index=graph.edge_index[:, order])
    torch.testing.assert_close(system.hamiltonian(graph.q, graph.p, shuffled), h,
                               rtol=1e-12, atol=0)
    assert not calls
    assert gravity._complete_graphs(graph) and not gravity._complete_graphs(shuffled)
    assert not gravity._complete_graphs(graph.replace(edge_index=graph.edge_index[:, 1:]))
    loops = graph.edge_index.clone()
    loops[1, 0] = loops[0, 0]  # a self loop in place of an edge
    assert not gravity._complete_graphs(graph.replace(edge_index=loops))


@pytest.mark.parametrize("chunk", [None, 3])
def test_close_passes_by_blocks_equal_the_edge_list(chunk):
    system = GravityNBody(min_distance=0.4, edges="none")
    system.chunk = chunk
    edge_system = GravityNBody(min_distance=0.4, edges="complete")
    graph = edge_system.sample(40, seed=1, n_particles=(1, 6))
    q = torch.stack([graph.q, 1.5 * graph.q, 0.2 * graph.q])
    expected = edge_system.stop_condition(q, graph.p, graph)
    assert expected.any() and not expected.all()
    torch.testing.assert_close(system.stop_condition(q, graph.p, graph), expected)
    empty = graph.replace(edge_index=torch.empty(2, 0, dtype=torch.long))
    torch.testing.assert_close(edge_system.stop_condition(q, graph.p, empty), expected)


# ----------------------------------------------------------------------- sampler
def _edge_list_potential(q, m, g, eps2):
    """The sampler's ``V`` as it was: ``energy`` on the complete graph's edge list."""
    n = q.shape[0]
    graph = GraphBatch(q, torch.zeros_like(q), m[:, None], fully_connected([n]),
                       ptr_from_sizes([n]))
    src, dst = graph.edge_index
    r2 = ((q[..., src, :] - q[..., dst, :]) ** 2).sum(-1) + eps2
    energy = node_sum((graph.p**2).sum(-1) / (2 * m), graph) + pair_sum(
        -g * m[src] * m[dst] / torch.sqrt(r2), graph)
    return energy.item()


@pytest.mark.parametrize("params, n_particles", [
    ({}, 1), ({}, 2), ({}, 50), ({}, (2, 12)), ({"dim": 3, "mass": (0.5, 2.0)}, (3, 40)),
    ({"softening": 0.0, "G": 2.5, "virial": 0.3}, 17), ({}, 700),
])
def test_sampler_equals_the_complete_graph_computation(params, n_particles, monkeypatch):
    """Bit for bit the states drawn when the virial scaling's ``V`` came from the
    complete graph's edge list (same seed)."""
    system = GravityNBody(**params)
    new = system.sample(3, seed=11, n_particles=n_particles)
    seen, ordered = [], gravity._ordered_potential

    def old(q, m, g, eps2):
        v = _edge_list_potential(q, m, g, eps2)
        seen.append(ordered(q, m, g, eps2) == v)  # the new V, bit for bit
        return v

    monkeypatch.setattr(gravity, "_ordered_potential", old)
    before = system.sample(3, seed=11, n_particles=n_particles)
    assert len(seen) == 3 and all(seen)
    assert torch.equal(new.q, before.q) and torch.equal(new.p, before.p)
    assert torch.equal(new.c, before.c)
    assert torch.equal(new.edge_index, fully_connected(new.sizes))


def test_edges_parameter():
    small, big = AUTO_COMPLETE_MAX, AUTO_COMPLETE_MAX + 1
    auto = GravityNBody()
    assert auto.params["edges"] == "auto"
    assert auto.sample(1, n_particles=small).edge_index.shape[1] == small * (small - 1)
    assert auto.sample(2, n_particles=(1, 3)).edge_index.shape[1] > 0
    assert auto.sample(1, n_particles=big).edge_index.shape == (2, 0)
    assert GravityNBody(edges="none").sample(4, n_particles=5).edge_index.shape == (2, 0)
    assert GravityNBody(edges="complete").sample(1, n_particles=5).edge_index.shape[1] == 20
    # the same states whatever the edges
    a = GravityNBody(edges="none").sample(2, seed=5, n_particles=9)
    b = GravityNBody(edges="complete").sample(2, seed=5, n_particles=9)
    assert torch.equal(a.q, b.q) and torch.equal(a.p, b.p)
    assert systems.get(**GravityNBody(edges="none").config()).params["edges"] == "none"
    with pytest.raises(ValueError, match="edges must be one of auto, complete, none"):
        GravityNBody(edges="radius")


# ------------------------------------------------------------------------- memory
class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor a torch operation makes."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_no_tensor_of_n_squared_elements():
    """Sampling, the energy, its gradient, the field and the close-pass test of 2,048
    particles never make a tensor of more than ``N² / 8`` elements (every pair at once
    would be ``N²``, the edge list ``2 N (N − 1)``): they work by blocks of rows."""
    n = 2048
    system = GravityNBody(min_distance=0.01)
    with _LargestTensor() as watch:
        graph = system.sample(1, seed=0, n_particles=n)
    assert graph.edge_index.numel() == 0 and 0 < watch.largest <= n * n // 8
    q = graph.q.clone().requires_grad_(True)
    with _LargestTensor() as watch:
        h = system.hamiltonian(q, graph.p, graph)
        (grad,) = torch.autograd.grad(h.sum(), q)
        _, dp = system.vector_field(graph)(graph.q, graph.p)
        system.stop_condition(graph.q, graph.p, graph)
    assert 0 < watch.largest <= n * n // 8
    assert torch.isfinite(grad).all() and _rel(dp, -grad) <= 1e-12


# -------------------------------------------------------------------------- smoke
def test_large_n_smoke():
    """4,096 particles: sampled without an edge list, virialised, momentum zero, field
    finite (a few seconds in all)."""
    system = GravityNBody()
    graph = system.sample(1, seed=0, n_particles=4096)
    assert graph.q.shape == (4096, 2) and graph.edge_index.shape == (2, 0)
    assert graph.p.sum(0).abs().max() < 1e-9
    kinetic = ((graph.p**2).sum(-1) / (2 * graph.c[:, 0])).sum()
    potential = pair_potential(graph.q, graph.c[:, 0], graph.ptr, softening=0.1)
    assert abs(kinetic / potential.abs() - 0.5).item() < 1e-12
    _, dp = system.vector_field(graph)(graph.q, graph.p)
    assert torch.isfinite(dp).all() and dp.abs().max() > 0
    assert dp.sum(0).abs().max() < 1e-9 * dp.abs().sum()  # Newton's third law


# ------------------------------------------------------------------------ springs
@pytest.mark.parametrize("params, n_particles", [
    ({}, 40), ({"stiffness": (0.5, 2.0), "rest_length": (0.0, 1.5), "mass": (0.5, 2.0)}, 33),
    ({"dim": 3}, 48),
])
def test_spring_dense_field_equals_autograd(params, n_particles):
    """The dense path (one size, dense springs, >= 2,048 edges) equals Hamilton's
    equations by autograd of the edge-list ``H``, with a leading time axis."""
    system = systems.get("spring-nbody", **params)
    graph = system.sample(4, seed=1, n_particles=n_particles)
    assert graph.edge_index.shape[1] >= 2048
    gen = torch.Generator().manual_seed(2)
    q = torch.stack([graph.q, graph.q + 0.3 * torch.randn(graph.q.shape, generator=gen,
                                                          dtype=F64)])
    p = torch.stack([graph.p, torch.randn(graph.p.shape, generator=gen, dtype=F64)])
    fq, fp = system.analytic_field(q, p, graph)
    dq, dp = system.time_derivative(q, p, graph)
    assert _rel(fp, dp) <= 1e-12 and _rel(fq, dq) <= 1e-15


def test_spring_dense_field_missing_springs_and_coincident_particles():
    """Pairs without a spring cost nothing even where two particles coincide, and
    doubled springs add up, as on the edge list."""
    n = 48
    edges = [(i, j) for i in range(n) for j in range(i + 1, n) if (i + j) % 5]
    system = systems.get("spring-nbody", edges=edges, stiffness=(0.5, 2.0))
    graph = system.sample(2, seed=0, n_particles=n)
    assert graph.edge_index.shape[1] >= 2048
    q = graph.q.clone()
    q[1] = q[4]  # 1 + 4 = 5: no spring between them
    _, fp = system.analytic_field(q, graph.p, graph)
    _, dp = system.time_derivative(q, graph.p, graph)
    assert torch.isfinite(fp).all() and _rel(fp, dp) <= 1e-12
    extra = graph.edge_index[:, :10]  # ten springs doubled, in both directions
    doubled = graph.replace(
        edge_index=torch.cat([graph.edge_index, extra, extra.flip(0)], 1),
        edge_attr=torch.cat([graph.edge_attr, graph.edge_attr[:10], graph.edge_attr[:10]]))
    _, fp = system.analytic_field(graph.q, graph.p, doubled)
    _, dp = system.time_derivative(graph.q, graph.p, doubled)
    assert _rel(fp, dp) <= 1e-12
