"""Lennard-Jones in a periodic box: forces against a brute-force all-pairs minimum-image
sum and against autograd of H, conservation laws, the neighbour list's rebuilds, the
sampler's temperature and density, batched against one at a time, datasets and errors."""

from __future__ import annotations

import math

import pytest
import torch

import systems
from hogn import integrators
from hogn.graph import GraphBatch, radius_graph
from systems.dataset import Dataset
from systems.lennard_jones import LennardJones, LennardJonesField

F64 = torch.float64
DIMS = {2: 64, 3: 100}  # particles per graph: boxes above 2 (r_c + skin) at rho = 0.5


def _system(dim: int = 2, **params) -> LennardJones:
    return systems.get("lennard-jones", dim=dim, **params)


def _random_state(system, sizes, seed=0, shake=0.25):
    """Sampled states moved off the lattice, some particles shifted by whole boxes (the
    minimum image must not care) and random momenta."""
    gen = torch.Generator().manual_seed(seed)
    g = system.sample(len(sizes), seed=seed, n_particles=sizes[0]) if len(set(sizes)) == 1 \
        else GraphBatch.cat([system.sample(1, seed=seed + k, n_particles=n)
                             for k, n in enumerate(sizes)])
    box = g.box[g.batch]
    q = g.q + shake * torch.randn(g.q.shape, generator=gen, dtype=F64)
    q = q + box * torch.randint(-2, 3, q.shape, generator=gen).to(F64)
    return g.replace(q=q, p=torch.randn(g.p.shape, generator=gen, dtype=F64))


def _brute_force(system, graph):
    """H and −∂H/∂q by every pair of each graph (O(N²)), the minimum image written out
    per pair, the shifted-force potential from the textbook formulas."""
    eps, sigma = system.params["epsilon"], system.params["sigma"]
    rc = system.params["cutoff"] * sigma

    def v(r):
        return 4 * eps * ((sigma / r) ** 12 - (sigma / r) ** 6)

    def dv(r):
        return 4 * eps * (-12 * sigma**12 / r**13 + 6 * sigma**6 / r**7)

    energy = torch.zeros(graph.num_graphs, dtype=F64)
    force = torch.zeros_like(graph.q)
    for g in range(graph.num_graphs):
        a, b = int(graph.ptr[g]), int(graph.ptr[g + 1])
        box = graph.box[g]
        for i in range(a, b):
            rel = graph.q[i + 1:b] - graph.q[i]  # q_j − q_i, j > i
            rel = rel - box * torch.round(rel / box)
            r = rel.norm(dim=-1)
            inside = r < rc
            r, rel = r[inside], rel[inside]
            j = torch.arange(i + 1, b)[inside]
            energy[g] += (v(r) - v(rc) - (r - rc) * dv(rc)).sum()
            f_on_j = -(dv(r) - dv(rc))[:, None] * rel / r[:, None]
            force[j] += f_on_j
            force[i] -= f_on_j.sum(0)
        energy[g] += (graph.p[a:b] ** 2).sum() / (2 * graph.c[a, 0])
    return energy, force


# ------------------------------------------------------------------------- forces
@pytest.mark.parametrize("dim", [2, 3])
def test_energy_and_forces_equal_the_brute_force_minimum_image_sum(dim):
    system = _system(dim, epsilon=1.3, sigma=0.9, mass=2.0, cutoff=2.2)
    n = DIMS[dim]
    graph = _random_state(system, [n, n + 7], seed=dim)
    energy, force = _brute_force(system, graph)
    h = system.hamiltonian(graph.q, graph.p, graph)
    torch.testing.assert_close(h, energy, rtol=1e-10, atol=1e-10 * energy.abs().max().item())
    field = system.vector_field(graph)
    dq, dp = field(graph.q, graph.p)
    scale = force.abs().max().item()
    assert scale > 1.0  # real forces, not zeros
    assert (dp - force).abs().max().item() <= 1e-10 * scale
    torch.testing.assert_close(dq, graph.p / 2.0, rtol=0, atol=0)
    # the analytic field equals Hamilton's equations by autograd of H
    adq, adp = system.time_derivative(graph.q, graph.p, graph)
    assert (adp - dp).abs().max().item() <= 1e-10 * scale
    torch.testing.assert_close(adq, dq, rtol=1e-14, atol=0)


def test_field_on_a_trajectory_axis_and_with_a_stale_list_equals_autograd():
    """Leading time axes (searched afresh) and a neighbour list built for other
    positions (pairs within r_c + skin, cut by distance) give autograd's field."""
    system = _system(2)
    graph = _random_state(system, [64, 64, 80], seed=5)
    gen = torch.Generator().manual_seed(1)
    q = torch.stack([graph.q, graph.q + 0.1 * torch.randn(graph.q.shape, generator=gen,
                                                          dtype=F64)])
    p = torch.stack([graph.p, -graph.p])
    adq, adp = system.time_derivative(q, p, graph)
    dq, dp = system.analytic_field(q, p, graph)
    scale = adp.abs().max().item()
    assert (dp - adp).abs().max().item() <= 1e-10 * scale
    torch.testing.assert_close(dq, adq, rtol=0, atol=0)
    field = LennardJonesField(system, graph)
    field(q[0], p[0])
    _, moved = field(q[1], p[1])  # each particle moved ~0.1 < skin / 2 on average
    assert field.neighbours.rebuilds <= 2
    assert (moved - adp[1]).abs().max().item() <= 1e-10 * scale


def test_edges_are_not_read_by_the_physics():
    system = _system(2)
    graph = _random_state(system, [64], seed=2)
    none = graph.replace(edge_index=torch.empty(2, 0, dtype=torch.long))
    torch.testing.assert_close(system.hamiltonian(graph.q, graph.p, none),
                               system.hamiltonian(graph.q, graph.p, graph), rtol=0, atol=0)
    torch.testing.assert_close(system.vector_field(none)(graph.q, graph.p)[1],
                               system.vector_field(graph)(graph.q, graph.p)[1],
                               rtol=0, atol=0)


def test_shifted_force_pair_potential_is_continuous_at_the_cutoff():
    system = _system(2)
    rc = system.cutoff
    r = torch.tensor([rc * (1 - 1e-7), rc, rc * (1 + 1e-7), 1.0, 2 ** (1 / 6)], dtype=F64)
    v = system.pair_energy(r**2)
    w = system.pair_force_weight(r**2)
    assert v[0].abs() < 1e-12 and v[1] == 0 and v[2] == 0  # H continuous at r_c
    assert w[0].abs() < 1e-7 and w[1] == 0 and w[2] == 0  # force continuous at r_c
    s6 = rc**-6
    dv_c = -24 * (2 * s6 * s6 - s6) / rc  # V'(r_c)
    assert abs(v[3].item() - (0.0 - 4 * (s6 * s6 - s6) - (1 - rc) * dv_c)) < 1e-12  # V(1) = 0
    # the plain force vanishes at the minimum 2^(1/6); the shifted one is V'(r_c)/r there
    assert abs(w[4].item() - dv_c / 2 ** (1 / 6)) < 1e-12


# ---------------------------------------------------------------- conservation
def test_momentum_is_conserved_and_positions_are_not_wrapped():
    system = _system(2)
    graph = system.sample(3, seed=4, n_particles=(64, 90))
    q, p, stopped = system.trajectory(graph, 0.01, 100)
    assert not stopped.any() and q.shape == (101, *graph.q.shape)
    total = torch.stack([p[:, graph.batch == g].sum(1) for g in range(3)], 1)
    assert total.abs().max().item() < 1e-11
    assert torch.equal(q[0], graph.q)
    box = graph.box[graph.batch]
    assert ((q[-1] < 0) | (q[-1] >= box)).any()  # some left the box: kept unwrapped


def _drift(system, graph, field, dt=0.005, steps=300):
    q, p = integrators.integrate(field, graph.q, graph.p, dt, steps, method="leapfrog",
                                 separable=True)
    return system.energy_drift_per_particle(q, p, graph)


def test_energy_drift_bound_and_a_frozen_neighbour_list_drifts():
    """2-D, N = 64, rho = 0.5, T = 1, dt = 0.005, 1,000 steps: max_t |H(t) − H(0)| / N
    measured 0.7e-3 to 1.1e-3 (4 graphs; |H(T) − H(0)| / N at most 7e-4); bound 4e-3.
    A list that is never rebuilt misses the pairs that come within r_c: particles
    overlap and the energy explodes within 300 steps (measured |ΔH| / N of 6e3 to 1e13)."""
    system = _system(2)
    graph = system.sample(4, seed=0, n_particles=64)
    q, p, _ = system.trajectory(graph, 0.005, 1000)
    drift = system.energy_drift_per_particle(q, p, graph)
    assert drift.max().item() < 4e-3, drift
    frozen = LennardJonesField(system, graph)
    frozen.neighbours.needs_rebuild = lambda q, ptr: frozen.neighbours.edge_index is None
    missed = _drift(system, graph, frozen)
    assert frozen.neighbours.rebuilds == 1
    assert missed.min().item() > 10 * drift.max().item(), (missed, drift)


def test_the_list_is_rebuilt_rarely_and_own_verlet_equals_the_leapfrog_integrator():
    system = _system(2)
    graph = system.sample(2, seed=3, n_particles=64)
    field = LennardJonesField(system, graph)
    q, p = integrators.integrate(field, graph.q, graph.p, 0.005, 400, method="leapfrog",
                                 separable=True)
    evaluations = field.neighbours.updates
    assert evaluations == 801  # one force and one drift evaluation per step, plus the first
    assert field.neighbours.rebuilds <= evaluations // 10, field.neighbours.rebuilds
    own_q, own_p, _ = system.trajectory(graph, 0.005, 400)
    torch.testing.assert_close(own_q, q, rtol=0, atol=1e-9)
    torch.testing.assert_close(own_p, p, rtol=0, atol=1e-9)
    # no skin: a search at every new position (the drift's evaluation has the last
    # kick's positions: no search there)
    bare = LennardJonesField(_system(2, skin=0.0), graph)
    integrators.integrate(bare, graph.q, graph.p, 0.005, 20, method="leapfrog",
                          separable=True)
    assert bare.neighbours.updates == 41 and bare.neighbours.rebuilds == 21


def test_saved_steps_are_taken_in_steps_of_at_most_max_step():
    system = _system(2)
    graph = system.sample(1, seed=6, n_particles=64)
    coarse, _, _ = system.trajectory(graph, 0.02, 5)  # 4 Verlet steps per saved step
    fine, _, _ = system.trajectory(graph, 0.005, 20)
    torch.testing.assert_close(coarse, fine[::4], rtol=0, atol=1e-12)
    # another method (through hogn.integrators, the same field): the same motion to
    # velocity Verlet's error
    q4, _, _ = system.trajectory(graph, 0.02, 5, method="yoshida4", substeps=4)
    assert (q4 - coarse).abs().max().item() < 1e-3


# ---------------------------------------------------------------- sampling
@pytest.mark.parametrize("dim, density, temperature", [(2, 0.5, 1.0), (2, 0.3, 0.7),
                                                       (3, 0.5, 1.5)])
def test_sampler_hits_temperature_density_and_places_no_overlaps(dim, density, temperature):
    system = _system(dim, density=density, temperature=temperature)
    lo = system.min_particles()
    graph = system.sample(3, seed=1, n_particles=(lo, lo + 30))
    sizes = graph.sizes.to(F64)
    torch.testing.assert_close(graph.box.prod(1), sizes / density, rtol=1e-12, atol=0)
    assert (graph.box == graph.box[:, :1]).all()  # squares / cubes
    torch.testing.assert_close(system.kinetic_temperature(graph.p, graph),
                               torch.full((3,), temperature, dtype=F64), rtol=1e-12, atol=0)
    for g in range(3):
        rows = graph.batch == g
        assert graph.p[rows].sum(0).abs().max() < 1e-12
        assert ((graph.q[rows] >= 0) & (graph.q[rows] < graph.box[g])).all()
    # the edges are the pairs closer than r_c now (minimum image)
    assert torch.equal(graph.edge_index, radius_graph(graph.q, graph.ptr, system.cutoff,
                                                      box=graph.box))
    assert (graph.edge_vectors().norm(dim=-1) < system.cutoff).all()
    # without equilibration: lattice sites plus jitter, no pair closer than (1 − j) a
    raw = _system(dim, density=density, temperature=temperature, equilibrate=0)
    lattice = raw.sample(1, seed=2, n_particles=lo + 5)
    n = lo + 5
    k = math.ceil(n ** (1 / dim) - 1e-9)
    spacing = lattice.box[0, 0].item() / k
    gap = lattice.edge_vectors().norm(dim=-1).min().item()
    assert gap >= (1 - raw.params["jitter"]) * spacing - 1e-12
    torch.testing.assert_close(raw.kinetic_temperature(lattice.p, lattice),
                               torch.tensor([temperature], dtype=F64), rtol=1e-12, atol=0)


def test_sampling_is_seeded_and_dtype_device_follow_the_request():
    system = _system(2)
    a = system.sample(2, seed=7, n_particles=20)
    b = system.sample(2, seed=7, n_particles=20)
    assert torch.equal(a.q, b.q) and torch.equal(a.p, b.p) and torch.equal(a.box, b.box)
    assert not torch.equal(a.q, system.sample(2, seed=8, n_particles=20).q)
    f32 = system.sample(2, seed=7, n_particles=20, dtype=torch.float32)
    assert f32.q.dtype == f32.box.dtype == torch.float32


def test_batched_equals_one_at_a_time():
    system = _system(2)
    graphs = [system.sample(1, seed=s, n_particles=n) for s, n in ((0, 64), (1, 40), (2, 90))]
    batch = GraphBatch.cat(graphs)
    q, p, _ = system.trajectory(batch, 0.01, 30)
    h = system.hamiltonian(q, p, batch)
    for g, one in enumerate(graphs):
        q1, p1, _ = system.trajectory(one, 0.01, 30)
        rows = batch.batch == g
        torch.testing.assert_close(q[:, rows], q1, rtol=0, atol=1e-9)
        torch.testing.assert_close(p[:, rows], p1, rtol=0, atol=1e-9)
        torch.testing.assert_close(h[:, g], system.hamiltonian(q1, p1, one)[:, 0],
                                   rtol=0, atol=1e-9)


# ---------------------------------------------------------------- datasets
def test_generate_save_load_and_the_preset(tmp_path):
    data = systems.generate("lennard-jones", 3, 10, 0.01, seed=1, n_particles=(16, 40),
                            test_fraction=0.0)
    assert data.meta["method"] == "leapfrog" and data.box.shape == (3, 2)
    data.save(tmp_path / "lj.pt")
    back = Dataset.load(tmp_path / "lj.pt")
    assert torch.equal(back.box, data.box) and torch.equal(back.q, data.q)
    torch.testing.assert_close(back.energy(), data.energy(), rtol=0, atol=0)
    # the saved derivatives are the field of every saved state, however far it moved
    field = systems.get("lennard-jones")
    _, adp = field.time_derivative(back.q, back.p, back.graph)
    assert (adp - back.dp).abs().max() <= 1e-10 * adp.abs().max()
    # edges of a state are rebuilt from its positions
    last = back.state(-1).with_radius_edges(field.cutoff)
    assert (last.edge_vectors().norm(dim=-1) < field.cutoff).all()
    sim = field.simulate(field.sample(2, seed=0, n_particles=20), 0.01, 5)
    assert sim.meta["method"] == "leapfrog" and sim.box.shape == (2, 2)
    preset = systems.get_preset("lj-2d")
    assert preset.system == "lennard-jones" and preset.n_particles == (16, 64)
    small = systems.from_preset("lj-2d", trajectories=2, seed=0)
    assert small.q.shape[0] == preset.points and small.box.shape == (2, 2)
    assert small.meta["preset"] == "lj-2d"


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("params, message", [
    ({"dim": 4}, "dim must be 2 or 3, got 4"),
    ({"dim": 1}, "dim must be 2 or 3, got 1"),
    ({"epsilon": -1.0}, "epsilon must be a positive finite number, got -1.0"),
    ({"sigma": 0}, "sigma must be a positive finite number, got 0"),
    ({"cutoff": float("inf")}, "cutoff must be a positive finite number"),
    ({"density": "dense"}, "density must be a positive finite number, got 'dense'"),
    ({"temperature": 0.0}, "temperature must be a positive finite number"),
    ({"mass": (1.0, 2.0)}, "mass must be a positive finite number"),
    ({"skin": -0.1}, "skin must be a finite number >= 0, got -0.1"),
    ({"jitter": 1.0}, r"jitter must be a number in \[0, 1\)"),
    ({"equilibrate": 1.5}, "equilibrate must be an int >= 0"),
    ({"equilibrate": -1}, "equilibrate must be an int >= 0"),
    ({"embed_dim": 3}, "embed_dim must equal dim = 2"),
    ({"boxes": 1}, r"unknown parameter\(s\) \['boxes'\]"),
])
def test_invalid_parameters_are_named(params, message):
    with pytest.raises(ValueError, match=message):
        systems.get("lennard-jones", **params)


def test_too_small_boxes_and_missing_boxes_are_named():
    system = _system(2)
    assert system.min_particles() == 16  # 0.5 x (2 x 2.8)^2 = 15.7
    with pytest.raises(ValueError, match=r"10 particles at density 0.5 fill a box of side "
                                         r"4.472 < 2 \(r_c \+ skin\) = 5.6.*at least 16"):
        system.sample(2, n_particles=10)
    assert _system(3).min_particles() == 88
    graph = system.sample(1, n_particles=20)
    with pytest.raises(ValueError, match=r"has no periodic box; give GraphBatch\.box"):
        system.hamiltonian(graph.q, graph.p, graph.replace(box=None))
    with pytest.raises(ValueError, match="has no periodic box"):
        system.trajectory(graph.replace(box=None), 0.01, 2)
    with pytest.raises(ValueError, match=r"box sides must be at least 2 \(r_c \+ skin\)"):
        system.trajectory(graph.replace(box=graph.box / 2), 0.01, 2)
    with pytest.raises(ValueError, match="the adaptive method is not offered"):
        system.trajectory(graph, 0.01, 2, method="adaptive")
    with pytest.raises(ValueError, match="dt must be a finite number > 0"):
        system.trajectory(graph, 0.0, 2)
    with pytest.raises(ValueError, match="substeps must be an int >= 1"):
        system.trajectory(graph, 0.01, 2, substeps=0)
