"""Analytic systems: Hamiltonians against independent formulas, gradients against finite
differences, symmetries, samplers' documented ranges, and the error for every bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import systems
from hogn.graph import GraphBatch, fully_connected, ptr_from_sizes
from systems.mirror import ESCAPE_ENERGY, inner_turning_radius

F64 = torch.float64
NAMES = ["mass-spring", "pendulum", "double-pendulum", "two-body", "three-body",
         "magnetic-mirror", "henon-heiles", "spring-nbody", "gravity-nbody"]
ANY_N = {"spring-nbody": (3, 5), "gravity-nbody": (3, 5)}
EMBEDDED = {"mass-spring": [0.0], "pendulum": [1.0], "double-pendulum": [1.0, 1.0]}

# (name, parameters, n_particles): every system, its embedded versions and a few
# non-default parameter sets, each sampled into a small batch
CASES = [
    *[(name, {}, ANY_N.get(name)) for name in NAMES],
    *[(name, {"embed_dim": 2}, None) for name in EMBEDDED],
    ("pendulum", {"embed_dim": 3, "l": 1.7, "g": 2.5, "mass": (0.5, 2.0),
                  "energy_range": (0.5, 4.0)}, None),
    ("double-pendulum", {"embed_dim": 3}, None),
    ("mass-spring", {"mass": (0.5, 2.0), "k": 3.0}, None),
    ("double-pendulum", {"mass": (0.5, 2.0), "l1": 0.7, "l2": 1.3, "g": 2.0,
                         "energy_range": (-3.0, 0.0)}, None),
    ("two-body", {"mass": (0.5, 2.0), "G": 2.0}, None),
    ("gravity-nbody", {"dim": 3, "mass": (0.5, 2.0), "softening": 0.05}, (2, 4)),
    ("spring-nbody", {"graph": "cycle", "dim": 3, "stiffness": (0.5, 2.0),
                      "rest_length": (0.0, 1.0), "mass": (0.5, 2.0)}, (3, 6)),
    ("magnetic-mirror", {"mass": 1.5}, None),
    ("henon-heiles", {"mass": (0.5, 2.0), "embed_dim": 3}, None),
]


def _case_id(case):
    name, params, _ = case
    return name + "".join(f"-{k}={v}" for k, v in params.items())


def one_nodes(graph, g):
    """Global indices of the nodes of graph ``g``."""
    return torch.arange(int(graph.ptr[g]), int(graph.ptr[g + 1]))


def _sample(case, n=3, seed=0):
    name, params, n_particles = case
    system = systems.get(name, **params)
    return system, system.sample(n, seed, n_particles=n_particles)


# ------------------------------------------------------------------------ registry
def test_registry():
    # dissipative: test_damped.py; periodic box, changing neighbours: test_lennard_jones.py
    # the survey's families: test_chain.py, test_forced.py
    assert systems.names() == [*NAMES, "damped-pendulum", "damped-mass-spring", "lennard-jones",
                               "pendulum-chain", "forced-pendulum"]
    for name in NAMES:
        system = systems.get(name)
        assert system.name == name
        assert system.chaotic == (name in {"double-pendulum", "three-body",
                                           "magnetic-mirror", "henon-heiles",
                                           "gravity-nbody"})
        rebuilt = systems.get(**system.config())
        assert rebuilt.params == system.params and rebuilt.embed_dim == system.embed_dim


# ------------------------------------------------- Hamiltonians: independent formulas
def _np(t):
    return t.detach().numpy().astype(np.float64)


def reference_energy(system, graph) -> np.ndarray:
    """Each system's H written out again from textbook formulas, one graph at a time."""
    prm, out = system.params, []
    q, p, c, ptr = _np(graph.q), _np(graph.p), _np(graph.c[:, 0]), graph.ptr.tolist()
    for g in range(graph.num_graphs):
        a, b = ptr[g], ptr[g + 1]
        x, v, m = q[a:b, : system.native_dim], p[a:b, : system.native_dim], c[a:b]
        if system.name == "mass-spring":
            h = v[0, 0] ** 2 / (2 * m[0]) + prm["k"] * x[0, 0] ** 2 / 2
        elif system.name == "pendulum":
            l, gr = prm["l"], prm["g"]
            h = v[0, 0] ** 2 / (2 * m[0] * l**2) + m[0] * gr * l * (1 - math.cos(x[0, 0]))
        elif system.name == "double-pendulum":
            # Cartesian kinetic energy of the bobs, velocities from p = M(θ) θ'
            l1, l2, gr = prm["l1"], prm["l2"], prm["g"]
            t1, t2 = x[:, 0]
            m1, m2 = m
            mass = np.array([[(m1 + m2) * l1**2, m2 * l1 * l2 * math.cos(t1 - t2)],
                             [m2 * l1 * l2 * math.cos(t1 - t2), m2 * l2**2]])
            w1, w2 = np.linalg.solve(mass, v[:, 0])
            v1 = l1 * w1 * np.array([math.cos(t1), math.sin(t1)])
            v2 = v1 + l2 * w2 * np.array([math.cos(t2), math.sin(t2)])
            y1 = -l1 * math.cos(t1)
            y2 = y1 - l2 * math.cos(t2)
            h = 0.5 * m1 * v1 @ v1 + 0.5 * m2 * v2 @ v2 + gr * (m1 * y1 + m2 * y2)
        elif system.name == "magnetic-mirror":
            rho, z = x[0]
            # the factorised form of the potential given in the module docstring
            h = v[0] @ v[0] / (2 * m[0]) + rho**2 * (rho**2 - 8 - 4 * z**2) ** 2 / 128
        elif system.name == "henon-heiles":
            r, theta = np.hypot(*x[0]), np.arctan2(x[0, 1], x[0, 0])
            # the polar form r²/2 + r³ sin(3θ)/3 of ½(x² + y²) + x²y − y³/3
            h = v[0] @ v[0] / (2 * m[0]) + r**2 / 2 + r**3 * math.sin(3 * theta) / 3
        elif system.name in ("two-body", "three-body", "gravity-nbody"):
            h = sum(v[i] @ v[i] / (2 * m[i]) for i in range(b - a))
            for i in range(b - a):
                for j in range(i + 1, b - a):
                    r2 = ((x[i] - x[j]) ** 2).sum() + prm["softening"] ** 2
                    h -= prm["G"] * m[i] * m[j] / math.sqrt(r2)
        elif system.name == "spring-nbody":
            h = sum(v[i] @ v[i] / (2 * m[i]) for i in range(b - a))
            springs = {}
            for (s, r), (k, rest) in zip(graph.edge_index.T.tolist(),
                                         graph.edge_attr.tolist(), strict=True):
                if a <= s < b:
                    springs[(min(s, r), max(s, r))] = (k, rest)
            for (i, j), (k, rest) in springs.items():
                h += 0.5 * k * (np.linalg.norm(q[i] - q[j]) - rest) ** 2
        out.append(h)
    return np.array(out)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_hamiltonian_matches_textbook_formula(case):
    system, graph = _sample(case, n=4)
    h = system.hamiltonian(graph.q, graph.p, graph)
    assert h.shape == (4,) and h.dtype == F64
    np.testing.assert_allclose(_np(h), reference_energy(system, graph), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_hamiltonian_of_a_trajectory_and_of_single_graphs(case):
    """Leading time axes and batching do not change any graph's energy."""
    system, graph = _sample(case, n=4)
    gen = torch.Generator().manual_seed(1)
    q = graph.q + 0.05 * torch.randn((3, *graph.q.shape), generator=gen, dtype=F64)
    p = graph.p + 0.05 * torch.randn((3, *graph.p.shape), generator=gen, dtype=F64)
    h = system.hamiltonian(q, p, graph)
    assert h.shape == (3, 4)
    for t in range(3):
        torch.testing.assert_close(h[t], system.hamiltonian(q[t], p[t], graph), rtol=1e-14,
                                   atol=1e-14)
    for g in range(4):
        one = graph.select([g])
        h_one = system.hamiltonian(q.index_select(-2, one_nodes(graph, g)),
                                   p.index_select(-2, one_nodes(graph, g)), one)
        torch.testing.assert_close(h_one[:, 0], h[:, g], rtol=1e-14, atol=1e-14)


def test_two_and_three_body_fast_path_equals_pair_sum():
    for name, n in (("two-body", 2), ("three-body", 3)):
        fixed = systems.get(name, mass=(0.5, 2.0))
        graph = fixed.sample(5, seed=3)
        generic = systems.get("gravity-nbody", softening=0.0)
        torch.testing.assert_close(fixed.hamiltonian(graph.q, graph.p, graph),
                                   generic.hamiltonian(graph.q, graph.p, graph),
                                   rtol=1e-13, atol=1e-13)
        assert graph.edge_index.shape[1] == 5 * n * (n - 1)


# ------------------------------------------------------------------- symmetries
def _rotation(dim, seed):
    gen = torch.Generator().manual_seed(seed)
    rot, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=F64))
    return rot


@pytest.mark.parametrize("name, params, n_particles", [
    ("two-body", {}, None), ("three-body", {}, None), ("gravity-nbody", {}, (3, 6)),
    ("gravity-nbody", {"dim": 3}, (3, 6)), ("spring-nbody", {}, (3, 6)),
    ("spring-nbody", {"dim": 3, "graph": "star"}, (3, 6)),
])
def test_particle_systems_are_translation_rotation_and_permutation_invariant(
        name, params, n_particles):
    system = systems.get(name, **params)
    graph = system.sample(4, seed=2, n_particles=n_particles)
    h = system.hamiltonian(graph.q, graph.p, graph)
    d = graph.q.shape[-1]
    shift = torch.randn(d, generator=torch.Generator().manual_seed(5), dtype=F64)
    rot = _rotation(d, 7)
    torch.testing.assert_close(system.hamiltonian(graph.q @ rot.T + shift, graph.p @ rot.T,
                                                  graph), h, rtol=1e-12, atol=1e-12)
    # relabel the nodes (reversed within each graph), carrying edges and constants along
    perm = torch.cat([one_nodes(graph, g).flip(0) for g in range(graph.num_graphs)])
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel())
    relabelled = GraphBatch(graph.q[perm], graph.p[perm], graph.c[perm],
                            inverse[graph.edge_index], graph.ptr, graph.edge_attr)
    torch.testing.assert_close(system.hamiltonian(relabelled.q, relabelled.p, relabelled), h,
                               rtol=1e-12, atol=1e-12)
    if name != "spring-nbody":  # gravity needs no edges from the sampler
        assert torch.equal(graph.edge_index, fully_connected(graph.sizes))


def test_pendulum_is_periodic_and_mirror_symmetric():
    for case in (("pendulum", {}, None), ("double-pendulum", {}, None)):
        system, graph = _sample(case, n=4)
        h = system.hamiltonian(graph.q, graph.p, graph)
        torch.testing.assert_close(system.hamiltonian(graph.q + 2 * math.pi, graph.p, graph),
                                   h, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(system.hamiltonian(-graph.q, -graph.p, graph), h,
                                   rtol=1e-12, atol=1e-12)
    mirror, graph = _sample(("magnetic-mirror", {}, None), n=4)
    flip = torch.tensor([1.0, -1.0], dtype=F64)  # z -> -z
    torch.testing.assert_close(mirror.hamiltonian(graph.q * flip, graph.p * flip, graph),
                               mirror.hamiltonian(graph.q, graph.p, graph))


def test_mirror_escape_energy_is_the_ridge_saddle():
    mirror = systems.get("magnetic-mirror")
    g = GraphBatch(torch.zeros(1, 2, dtype=F64), torch.zeros(1, 2, dtype=F64),
                   torch.ones(1, 1, dtype=F64), torch.empty(2, 0, dtype=torch.long),
                   ptr_from_sizes([1]))
    saddle = torch.tensor([[math.sqrt(8 / 3), 0.0]], dtype=F64)
    assert mirror.hamiltonian(saddle, g.p, g).item() == pytest.approx(ESCAPE_ENERGY, rel=1e-14)
    _, dp = mirror.time_derivative(saddle, g.p, g)
    assert dp.abs().max() < 1e-14  # an equilibrium
    assert mirror.hamiltonian(g.q, g.p, g).item() == 0.0


# ------------------------------------------------------ derivatives: gradcheck and FD
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_hamiltonian_gradcheck(case):
    system, graph = _sample(case, n=2)
    q = graph.q.clone().requires_grad_(True)
    p = graph.p.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q, p: system.hamiltonian(q, p, graph), (q, p))


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_time_derivative_is_twice_differentiable(case):
    """Training differentiates dq, dp again: check their Jacobian too."""
    system, graph = _sample(case, n=2)
    q = graph.q.clone().requires_grad_(True)
    p = graph.p.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda q, p: system.time_derivative(q, p, graph, create_graph=True), (q, p))


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_separability_is_declared_truthfully(case):
    """``separable`` decides whether leapfrog may step a system: a separable system's
    ``dq`` does not depend on ``q`` nor its ``dp`` on ``p`` (zero Jacobian blocks);
    a non-separable one's do, and its fixed-step trajectory refuses leapfrog."""
    system, graph = _sample(case, n=2)
    n = graph.q.numel()

    def field(x):
        dq, dp = system.time_derivative(x[:n].view_as(graph.q), x[n:].view_as(graph.p), graph,
                                        create_graph=True)
        return torch.cat([dq.reshape(-1), dp.reshape(-1)])

    x = torch.cat([graph.q.reshape(-1), graph.p.reshape(-1)])
    jac = torch.autograd.functional.jacobian(field, x)
    assert jac[:n, n:].abs().max() > 1e-3 and jac[n:, :n].abs().max() > 1e-3  # it can see
    coupling = max(jac[:n, :n].abs().max().item(), jac[n:, n:].abs().max().item())
    if system.separable:
        assert coupling == 0.0
        q, _, _ = system.trajectory(graph, 0.01, 2, method="leapfrog")
        assert torch.isfinite(q).all()
    else:
        assert coupling > 1e-3
        with pytest.raises(ValueError, match=r"leapfrog is a splitting method.*gauss4"):
            system.trajectory(graph, 0.01, 2, method="leapfrog")
        q, _, _ = system.trajectory(graph, 0.01, 2, method="gauss4")
        assert torch.isfinite(q).all()


def test_separable_systems_are_the_documented_ones():
    separable = {name for name in systems.names() if systems.get(name).separable}
    assert separable == {"mass-spring", "pendulum", "two-body", "three-body",
                         "magnetic-mirror", "henon-heiles", "spring-nbody", "gravity-nbody",
                         "lennard-jones", "forced-pendulum"}


def finite_difference_field(system, graph, eps=1e-5):
    """(∂H/∂p, −∂H/∂q) by central differences of the summed H, all coordinates at once."""
    q, p = graph.q, graph.p
    k = q.numel()
    basis = (eps * torch.eye(k, dtype=F64)).reshape(k, *q.shape)

    def h(qq, pp):
        return system.hamiltonian(qq, pp, graph).sum(-1)

    dh_dq = (h(q + basis, p.expand_as(basis)) - h(q - basis, p.expand_as(basis))) / (2 * eps)
    dh_dp = (h(q.expand_as(basis), p + basis) - h(q.expand_as(basis), p - basis)) / (2 * eps)
    return dh_dp.reshape(q.shape), -dh_dq.reshape(q.shape)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_time_derivative_agrees_with_finite_differences(case):
    system, graph = _sample(case, n=3)
    dq, dp = system.time_derivative(graph.q, graph.p, graph)
    fd_dq, fd_dp = finite_difference_field(system, graph)
    scale = max(1.0, dq.abs().max().item(), dp.abs().max().item())
    torch.testing.assert_close(dq, fd_dq, atol=1e-6 * scale, rtol=0)
    torch.testing.assert_close(dp, fd_dp, atol=1e-6 * scale, rtol=0)
    assert dq.abs().max() > 1e-3 and dp.abs().max() > 1e-3  # nothing trivially zero
    # the state is not modified and needs no gradient
    assert not graph.q.requires_grad and not dq.requires_grad
    if system.embed_dim > system.native_dim:  # the surplus coordinate never moves
        assert torch.equal(dq[:, system.native_dim:], torch.zeros_like(dq[:, system.native_dim:]))
        assert torch.equal(dp[:, system.native_dim:], torch.zeros_like(dp[:, system.native_dim:]))


def test_time_derivative_of_analytic_cases():
    """Hamilton's equations with the right signs: spring force −kq, pendulum −mgl sin q."""
    spring = systems.get("mass-spring", k=3.0, mass=2.0)
    g = spring.sample(2, seed=0)
    dq, dp = spring.time_derivative(g.q, g.p, g)
    torch.testing.assert_close(dq, g.p / 2.0)
    torch.testing.assert_close(dp, -3.0 * g.q)
    pend = systems.get("pendulum", g=2.0, l=0.5, mass=3.0, embed_dim=2)
    g = pend.sample(2, seed=0)
    dq, dp = pend.time_derivative(g.q, g.p, g)
    torch.testing.assert_close(dq[:, 0], g.p[:, 0] / (3.0 * 0.25))
    torch.testing.assert_close(dp[:, 0], -3.0 * 2.0 * 0.5 * torch.sin(g.q[:, 0]))


# ------------------------------------------------------------------------ samplers
def _energies(system, graph):
    return system.hamiltonian(graph.q, graph.p, graph)


def _per_graph(x, graph):
    return torch.zeros(graph.num_graphs, x.shape[-1], dtype=x.dtype).index_add_(
        0, graph.batch, x)


@pytest.mark.parametrize("name, params, lo, hi", [
    ("mass-spring", {}, 0.2, 1.0),
    ("mass-spring", {"mass": (0.5, 2.0), "k": 3.0, "energy_range": (0.5, 0.7)}, 0.5, 0.7),
    ("pendulum", {}, 0.2, 1.5),
    ("pendulum", {"g": 3.0, "energy_range": (1.3, 2.3)}, 1.3, 2.3),
    ("double-pendulum", {}, -2.5, -0.5),
    ("magnetic-mirror", {}, 0.1, 0.5),
    ("magnetic-mirror", {"energy_range": (0.3, 0.59)}, 0.3, 0.59),
])
def test_sampled_energies_fill_the_documented_range(name, params, lo, hi):
    system = systems.get(name, **params)
    h = _energies(system, system.sample(2000, seed=0))
    assert h.min() >= lo - 1e-12 and h.max() <= hi + 1e-12
    width = hi - lo  # and the range is covered, not just respected
    assert h.min() < lo + 0.02 * width and h.max() > hi - 0.02 * width
    if name == "magnetic-mirror":
        assert h.max() < ESCAPE_ENERGY


def test_oscillator_samplers_shapes_of_phase_space():
    pend = systems.get("pendulum")
    g = pend.sample(2000, seed=1)
    h = _energies(pend, g)
    q_max = torch.arccos(1 - h)  # the turning angle of each libration
    assert (g.q[:, 0].abs() <= q_max + 1e-12).all()
    assert (g.p[:, 0] > 0).float().mean().item() == pytest.approx(0.5, abs=0.05)
    double = systems.get("double-pendulum", max_angle=1.0, max_momentum=0.5,
                         energy_range=(-3.0, -1.0))
    g = double.sample(500, seed=1)
    assert g.q.abs().max() <= 1.0 and g.p.abs().max() <= 0.5
    spring = systems.get("mass-spring")
    g = spring.sample(2000, seed=1)
    angle = torch.atan2(g.p[:, 0], g.q[:, 0])  # the phase is uniform
    hist = torch.histc(angle, bins=4, min=-math.pi, max=math.pi)
    assert (hist > 400).all()


def test_mirror_sampler_starts_inside_the_bottle():
    mirror = systems.get("magnetic-mirror")
    g = mirror.sample(1000, seed=0)
    h = _energies(mirror, g)
    rho, z = g.q[:, 0], g.q[:, 1]
    assert (z.abs() <= 0.5).all()
    turning = inner_turning_radius(h, z)
    assert (rho >= 0.2 * turning - 1e-9).all() and (rho <= 0.9 * turning + 1e-9).all()
    assert (rho**2 < 8 * (1 + z**2 / 2) / 3).all()  # inside the ridge


@pytest.mark.parametrize("name, params, n_particles", [
    ("two-body", {}, None), ("two-body", {"mass": (0.5, 2.0)}, None),
    ("three-body", {}, None), ("three-body", {"mass": (0.5, 2.0)}, None),
    ("gravity-nbody", {}, (2, 8)), ("gravity-nbody", {"dim": 3, "mass": (0.5, 2.0)}, (2, 8)),
    ("spring-nbody", {}, (1, 8)), ("spring-nbody", {"mass": (0.5, 2.0)}, (1, 8)),
])
def test_total_momentum_is_zero(name, params, n_particles):
    system = systems.get(name, **params)
    g = system.sample(200, seed=4, n_particles=n_particles)
    total = _per_graph(g.p, g)
    assert total.abs().max() < 1e-12
    assert g.p.abs().max() > 0.1
    if name in ("two-body", "three-body"):  # and the centre of mass sits at the origin
        assert _per_graph(g.c * g.q, g).abs().max() < 1e-12


def test_gravity_samplers_are_bound():
    two = systems.get("two-body")
    g = two.sample(1000, seed=0)
    assert (_energies(two, g) < 0).all()
    separation = (g.q[0::2] - g.q[1::2]).norm(dim=-1)
    assert separation.min() >= 0.5 and separation.max() <= 1.5
    nbody = systems.get("gravity-nbody")
    g = nbody.sample(300, seed=0, n_particles=(2, 10))
    h = _energies(nbody, g)
    assert (h < 0).all()
    potential = nbody.hamiltonian(g.q, torch.zeros_like(g.p), g)
    kinetic = h - potential
    torch.testing.assert_close(kinetic / potential.abs(), torch.full_like(h, 0.5))  # virial


def test_three_body_starts_from_perturbed_lagrange_triangles():
    three = systems.get("three-body", orbit_noise=0.0)
    g = three.sample(200, seed=0)
    q = g.q.reshape(-1, 3, 2)
    sides = torch.stack([(q[:, i] - q[:, (i + 1) % 3]).norm(dim=-1) for i in range(3)], -1)
    torch.testing.assert_close(sides, sides[:, :1].expand_as(sides))  # equilateral
    radius = sides[:, 0] / math.sqrt(3)
    assert radius.min() >= 0.9 - 1e-12 and radius.max() <= 1.2 + 1e-12


def test_sizes_of_any_n_systems():
    spring = systems.get("spring-nbody")
    g = spring.sample(400, seed=0, n_particles=(3, 6))
    assert set(g.sizes.tolist()) == {3, 4, 5, 6}
    assert spring.sample(5, seed=0, n_particles=4).sizes.tolist() == [4] * 5
    cycle = systems.get("spring-nbody", graph="cycle")
    g = cycle.sample(10, seed=0, n_particles=(3, 6))
    assert g.edge_index.shape[1] == 2 * int(g.sizes.sum())  # a ring has n springs
    explicit = systems.get("spring-nbody", edges=[(0, 1), (1, 2), (2, 1)])
    g = explicit.sample(2, seed=0, n_particles=3)
    assert sorted(map(tuple, g.edge_index.T.tolist())) == [(0, 1), (1, 0), (1, 2), (2, 1),
                                                          (3, 4), (4, 3), (4, 5), (5, 4)]
    ranged = systems.get("spring-nbody", stiffness=(1.0, 2.0), rest_length=(0.5, 0.6))
    g = ranged.sample(10, seed=0, n_particles=4)
    k, rest = g.edge_attr[:, 0], g.edge_attr[:, 1]
    assert k.min() >= 1.0 and k.max() <= 2.0 and rest.min() >= 0.5 and rest.max() <= 0.6
    # each spring has one stiffness, whichever direction it is read in
    pairs = {}
    for (s, r), x in zip(g.edge_index.T.tolist(), g.edge_attr.tolist(), strict=True):
        assert pairs.setdefault((min(s, r), max(s, r)), x) == x


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_same_seed_same_sample(case):
    name, params, n_particles = case
    system = systems.get(name, **params)
    a = system.sample(6, seed=11, n_particles=n_particles)
    b = system.sample(6, seed=11, n_particles=n_particles)
    c = system.sample(6, seed=12, n_particles=n_particles)
    gen = torch.Generator().manual_seed(11)
    d = system.sample(6, seed=gen, n_particles=n_particles)
    for other in (b, d):
        for field in ("q", "p", "c", "edge_index", "ptr", "edge_attr"):
            x, y = getattr(a, field), getattr(other, field)
            assert (x is None and y is None) or torch.equal(x, y), field
    assert not (a.q.shape == c.q.shape and torch.equal(a.q[:, :1], c.q[:, :1]))


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_samples_are_valid_states_of_their_system(case):
    system, graph = _sample(case, n=3)
    assert graph.q.shape == (graph.num_nodes, system.dim) and graph.q.dtype == F64
    system.check_graph(graph)  # what trajectory() checks first: raises if not
    assert torch.isfinite(system.hamiltonian(graph.q, graph.p, graph)).all()


@pytest.mark.parametrize("name", list(EMBEDDED))
def test_embedded_samples_hold_the_surplus_constant(name):
    params = {"l": 1.5} if name == "pendulum" else {}
    native = systems.get(name, **params)
    embedded = systems.get(name, embed_dim=2, **params)
    g_native, g_embedded = native.sample(5, seed=0), embedded.sample(5, seed=0)
    torch.testing.assert_close(g_embedded.q[:, :1], g_native.q)
    torch.testing.assert_close(g_embedded.p[:, :1], g_native.p)
    surplus = torch.tensor(EMBEDDED[name] * 5, dtype=F64) * (1.5 if name == "pendulum" else 1)
    assert torch.equal(g_embedded.q[:, 1], surplus)
    assert torch.equal(g_embedded.p[:, 1], torch.zeros(g_embedded.num_nodes, dtype=F64))
    wider = systems.get(name, embed_dim=3, **params).sample(5, seed=0)  # (θ, r = l, 0)
    assert torch.equal(wider.q[:, :2], g_embedded.q)
    assert torch.equal(wider.q[:, 2], torch.zeros(wider.num_nodes, dtype=F64))


def test_sample_dtype_and_device():
    g = systems.get("spring-nbody").sample(2, seed=0, n_particles=3, dtype=torch.float32)
    assert g.q.dtype == g.p.dtype == g.c.dtype == g.edge_attr.dtype == torch.float32
    g64 = systems.get("spring-nbody").sample(2, seed=0, n_particles=3)
    torch.testing.assert_close(g.q, g64.q.float())  # same draw, only rounded


# ------------------------------------------------------------------- bad input
def test_unknown_names():
    with pytest.raises(ValueError, match=r"unknown system 'nope'; expected one of: "
                                         r"mass-spring, pendulum, .*gravity-nbody"):
        systems.get("nope")
    with pytest.raises(ValueError, match=r"unknown preset 'nope'; expected one of: .*"
                                         r"hnn-mass-spring"):
        systems.get_preset("nope")
    with pytest.raises(ValueError, match=r"pendulum: unknown parameter\(s\) \['length'\]"):
        systems.get("pendulum", length=2.0)
    with pytest.raises(ValueError, match="unknown graph 'lattice'"):
        systems.get("spring-nbody", graph="lattice")


@pytest.mark.parametrize("name, params, message", [
    ("pendulum", {"mass": -1}, "mass must be a positive"),
    ("pendulum", {"mass": 0.0}, "mass must be a positive"),
    ("pendulum", {"mass": float("nan")}, "mass must be a positive"),
    ("pendulum", {"l": -1.0}, "parameter l must be a positive"),
    ("pendulum", {"g": 0}, "parameter g must be a positive"),
    ("mass-spring", {"k": -2.0}, "parameter k must be a positive"),
    ("mass-spring", {"mass": "heavy"}, "mass must be a positive"),
    ("two-body", {"G": -1.0}, "parameter G must be a positive"),
    ("gravity-nbody", {"mass": (-1.0, 1.0)}, "mass must be a number or"),
    ("gravity-nbody", {"mass": (2.0, 1.0)}, "mass must be a number or"),
    ("spring-nbody", {"mass": -1}, "mass must be a"),
    ("spring-nbody", {"stiffness": (0.0, 1.0)}, "stiffness must be a number or"),
    ("spring-nbody", {"rest_length": -0.5}, "rest_length must be a number or"),
    ("gravity-nbody", {"softening": -0.1}, "softening must be a number >= 0"),
    ("gravity-nbody", {"dim": 0}, "dim must be a positive int"),
    ("two-body", {"dim": 3}, "planar"),
    ("magnetic-mirror", {"energy_range": (0.1, 0.6)}, "below the escape energy 16/27"),
    ("magnetic-mirror", {"energy_range": (0.1, 16 / 27)}, "below the escape energy"),
    ("magnetic-mirror", {"rho_fraction": (0.5, 1.5)}, "rho_fraction must lie in"),
    ("mass-spring", {"energy_range": (1.0, 0.2)}, "lo < hi"),
    ("mass-spring", {"energy_range": (-0.1, 0.5)}, "energy_range must be positive"),
    ("pendulum", {"energy_range": (0.0, 1.0)}, "energy_range must be positive"),
    ("magnetic-mirror", {"embed_dim": 1}, "embed_dim must be an int >= 2"),
    ("pendulum", {"embed_dim": 1.5}, "embed_dim must be an int"),
])
def test_bad_parameters(name, params, message):
    with pytest.raises(ValueError, match=message):
        systems.get(name, **params)


def test_bad_sample_requests():
    spring, pend = systems.get("spring-nbody"), systems.get("pendulum")
    with pytest.raises(ValueError, match="spring-nbody needs n_particles"):
        spring.sample(2, seed=0)
    with pytest.raises(ValueError, match="n_particles must be a positive int or"):
        spring.sample(2, seed=0, n_particles=(5, 3))
    with pytest.raises(ValueError, match="n_particles must be a positive int or"):
        spring.sample(2, seed=0, n_particles=0)
    with pytest.raises(ValueError, match="pendulum has exactly 1 particle"):
        pend.sample(2, seed=0, n_particles=3)
    assert pend.sample(2, seed=0, n_particles=1).num_nodes == 2
    with pytest.raises(ValueError, match="number of samples must be a positive int"):
        pend.sample(0)
    with pytest.raises(ValueError, match="number of samples must be a positive int"):
        pend.sample(True)  # a bool is not a count
    with pytest.raises(ValueError, match="dtype must be floating point"):
        pend.sample(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="could not sample energies"):
        systems.get("double-pendulum", energy_range=(5.0, 6.0)).sample(2)
    with pytest.raises(ValueError, match=r"edges must join nodes 0\.\.2"):
        systems.get("spring-nbody", edges=[(0, 5)]).sample(1, n_particles=3)


def _graph(name="pendulum", **params):
    system = systems.get(name, **params)
    return system, system.sample(3, seed=0, n_particles=ANY_N.get(name))


def _with(graph, **fields):
    """A copy with fields replaced *without* the batch's own checks (to reach the
    system's)."""
    out = graph.replace()
    for key, value in fields.items():
        setattr(out, key, value)
    return out


@pytest.mark.parametrize("method", ["adaptive", "rk4"])
def test_trajectory_rejects_bad_states(method):
    system, g = _graph("two-body")

    def run(graph, dt=0.1):
        return system.trajectory(graph, dt, 2, method=method)

    with pytest.raises(ValueError, match="same shape"):
        run(_with(g, p=g.p[:, :1]))
    with pytest.raises(ValueError, match=r"two-body: q and p must be \[N, 2\]"):
        run(GraphBatch(g.q[:, :1], g.p[:, :1], g.c, g.edge_index, g.ptr))
    with pytest.raises(ValueError, match=r"q and p must be \[N, 2\]"):
        run(g.replace(q=g.q.expand(2, -1, -1), p=g.p.expand(2, -1, -1)))
    with pytest.raises(ValueError, match="one floating dtype"):
        run(g.replace(q=g.q.round().long(), p=g.p.round().long()))
    with pytest.raises(ValueError, match="one floating dtype"):
        run(g.replace(q=g.q.float()))
    with pytest.raises(ValueError, match="node constants c must be finite and of dtype"):
        run(g.replace(c=g.c.float()))
    with pytest.raises(ValueError, match="node constants c must be finite"):
        run(g.replace(c=torch.full_like(g.c, float("inf"))))
    for field in ("q", "p"):
        for bad in (float("nan"), float("inf")):
            x = getattr(g, field).clone()
            x[1, 0] = bad
            with pytest.raises(ValueError, match="non-finite"):
                run(g.replace(**{field: x}))
    c = g.c.clone()
    c[2, 0] = -1.0
    with pytest.raises(ValueError, match=r"masses \(c\[:, 0\]\) must be positive, got min -1"):
        run(g.replace(c=c))
    with pytest.raises(ValueError, match="masses"):
        run(g.replace(c=torch.zeros_like(g.c)))
    for dt in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="dt must be a finite number > 0"):
            run(g, dt)
    three = systems.get("three-body")
    with pytest.raises(ValueError, match="every graph must have 3 particle"):
        three.trajectory(g, 0.1, 2, method=method)


def test_trajectory_rejects_other_mistakes():
    system, g = _graph("pendulum", embed_dim=2)
    with pytest.raises(ValueError, match=r"pendulum: q and p must be \[N, 1\]"):
        systems.get("pendulum").trajectory(g, 0.1, 2)
    with pytest.raises(ValueError, match="unknown method 'nope'; expected 'adaptive' or one"):
        system.trajectory(g, 0.1, 2, method="nope")
    with pytest.raises(ValueError, match="steps must be an int >= 0"):
        system.trajectory(g, 0.1, -1)
    with pytest.raises(ValueError, match="substeps must be an int >= 1"):
        system.trajectory(g, 0.1, 2, method="rk4", substeps=0)


_BOXED = ("lennard-jones",)  # N >= 16 in a periodic box: its field in test_lennard_jones.py
FIELD_CASES = [(name, {}) for name in systems.names() if name not in _BOXED] + [
    (name, {"embed_dim": 3}) for name in systems.names()
    if name not in ("spring-nbody", "gravity-nbody", "pendulum-chain", *_BOXED)] + [  # chain:
    # planar, stored as it is (test_chain.py checks that embed_dim=3 is refused)
    ("mass-spring", {"mass": (0.5, 2.0), "k": 3.0}),
    ("pendulum", {"mass": (0.5, 2.0), "g": 2.0, "l": 1.5}),
    ("double-pendulum", {"mass": (0.5, 2.0), "g": 2.0, "l1": 0.7, "l2": 1.3}),
    ("damped-pendulum", {"gamma": 0.3, "l": 0.8}),
    ("spring-nbody", {"stiffness": (0.5, 2.0), "rest_length": (0.5, 1.5), "graph": "cycle"}),
    ("gravity-nbody", {"mass": (0.5, 2.0), "G": 2.0}),
    ("three-body", {"mass": (0.5, 2.0)}),
]


@pytest.mark.parametrize("name, params", FIELD_CASES,
                         ids=[f"{n}{''.join(f'-{k}' for k in p)}" for n, p in FIELD_CASES])
def test_analytic_field_equals_autograd_of_h(name, params):
    """Every system's hand-derived field (the simulation's fast path) equals Hamilton's
    equations by autograd of H to round-off, on sampled and on random states (nonzero
    surplus momenta of an embedding too), batched, with a leading time axis, and for
    graphs of different sizes."""
    system = systems.get(name, **params)
    n_particles = (3, 6) if system.n_particles is None else None
    graph = system.sample(12, seed=5, n_particles=n_particles)
    gen = torch.Generator().manual_seed(7)
    q = torch.stack([graph.q, graph.q + 0.3 * torch.randn(graph.q.shape, generator=gen,
                                                          dtype=F64)])
    p = torch.stack([graph.p, torch.randn(graph.p.shape, generator=gen, dtype=F64)])
    field = system.analytic_field(q, p, graph)
    assert field is not None, f"{name} has no analytic field"
    dq, dp = system.time_derivative(q, p, graph)
    for analytic, auto in zip(field, (dq, dp), strict=True):
        assert analytic.shape == auto.shape
        scale = auto.abs().amax()
        assert scale > 0.1  # the comparison is not of zeros
        assert ((analytic - auto).abs().amax() / scale).item() <= 1e-12
    # the integrators get the same field
    f = system.vector_field(graph)
    torch.testing.assert_close(f(graph.q, graph.p)[1], dp[0], rtol=1e-12, atol=1e-13)
