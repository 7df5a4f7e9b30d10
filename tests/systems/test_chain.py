"""The pendulum chain: Cartesian particles held by Lagrange multipliers, checked against
the angle-coordinate pendulum and double pendulum of the library (N = 1, 2) and
against an angle-coordinate Hamiltonian integrated by scipy's DOP853 (N = 3..5);
its states keep the link lengths and their rates, its energy is conserved."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

import systems
from hogn.graph import GraphBatch, ptr_from_sizes
from systems.base import System
from systems.chain import (
    PendulumChain,
    angle_dataset,
    angle_hamiltonian,
    from_angles,
    to_angles,
)

F64 = torch.float64


def chain_graph(theta: Tensor, omega: Tensor, m: Tensor, lengths: Tensor) -> GraphBatch:
    """Chains from link angles and angular velocities, each ``[G, n]`` (``m``, ``lengths``
    too), in the system's encoding, built here independently of its sampler."""
    g, n = theta.shape
    step_q = lengths[..., None] * torch.stack([torch.sin(theta), -torch.cos(theta)], -1)
    step_v = (lengths * omega)[..., None] * torch.stack([torch.cos(theta), torch.sin(theta)], -1)
    q, v = step_q.cumsum(1), step_v.cumsum(1)
    pivot = torch.zeros_like(lengths)
    pivot[:, 0] = lengths[:, 0]
    c = torch.stack([m, pivot], -1).reshape(-1, 2)
    pairs = [[(k * n + i - 1, k * n + i) for i in range(1, n)] for k in range(g)]
    edge_index = torch.cat([torch.tensor(each + [(b, a) for a, b in each],
                                         dtype=torch.long).reshape(-1, 2).T for each in pairs], 1)
    edge_attr = lengths.reshape(-1)[edge_index.max(0).values][:, None]
    return GraphBatch(q.reshape(-1, 2), (m[..., None] * v).reshape(-1, 2), c, edge_index,
                      ptr_from_sizes([n] * g), edge_attr)



def angles_of(q: Tensor, p: Tensor, m: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Link angles and angular velocities ``[..., G, n]`` of Cartesian chains."""
    lead = q.shape[:-2]
    x = q.reshape(*lead, -1, n, 2)
    v = (p / m[:, None]).reshape(*lead, -1, n, 2)
    d = x - torch.nn.functional.pad(x, (0, 0, 1, 0))[..., :-1, :]
    u = v - torch.nn.functional.pad(v, (0, 0, 1, 0))[..., :-1, :]
    theta = torch.atan2(d[..., 0], -d[..., 1])
    omega = (d[..., 0] * u[..., 1] - d[..., 1] * u[..., 0]) / d.square().sum(-1)
    return theta, omega


def angle_mass_matrix(theta: np.ndarray, m: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``M(θ)_ij = (Σ_{k ≥ max(i, j)} m_k) l_i l_j cos(θ_i − θ_j)``."""
    below = np.cumsum(m[::-1])[::-1]
    n = len(m)
    idx = np.maximum.outer(np.arange(n), np.arange(n))
    return below[idx] * np.outer(lengths, lengths) * np.cos(np.subtract.outer(theta, theta))


def angle_rhs(m: np.ndarray, lengths: np.ndarray, g: float):
    """Hamilton's equations of ``H = ½ pᵀ M(θ)⁻¹ p − g Σ μ_i l_i cos θ_i`` (``μ_i`` the
    mass below link ``i``): ``θ' = M⁻¹ p``, ``p'_k = −Σ_j μ_kj l_k l_j sin(θ_k − θ_j)
    θ'_k θ'_j − g μ_k l_k sin θ_k``."""
    below = np.cumsum(m[::-1])[::-1]
    n = len(m)
    mu = below[np.maximum.outer(np.arange(n), np.arange(n))]

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        theta, p = y[:n], y[n:]
        w = np.linalg.solve(angle_mass_matrix(theta, m, lengths), p)
        s = mu * np.outer(lengths, lengths) * np.sin(np.subtract.outer(theta, theta))
        dp = -(s * np.outer(w, w)).sum(1) - g * below * lengths * np.sin(theta)
        return np.concatenate([w, dp])

    return rhs


# ----------------------------------------------------------------- the system
def test_registered_and_sampled_in_its_encoding():
    assert "pendulum-chain" in systems.names()
    chain = systems.get("pendulum-chain", mass=(0.5, 2.0), length=(0.5, 1.5))
    assert isinstance(chain, PendulumChain) and not chain.separable and chain.chaotic
    graph = chain.sample(5, seed=0, n_particles=(1, 5))
    assert graph.q.dtype == F64 and graph.c.shape == (graph.num_nodes, 2)
    sizes = graph.sizes
    first = torch.zeros(graph.num_nodes, dtype=torch.bool)
    first[graph.ptr[:-1]] = True
    assert (graph.c[first, 1] > 0).all() and (graph.c[~first, 1] == 0).all()
    assert graph.edge_index.shape[1] == 2 * int((sizes - 1).sum())
    src, dst = graph.edge_index
    assert ((src - dst).abs() == 1).all() and graph.edge_attr.shape == (len(src), 1)
    assert (graph.edge_batch.diff() >= 0).all()  # edges grouped by graph
    lengths = chain.link_lengths(graph)
    assert ((lengths >= 0.5) & (lengths <= 1.5)).all()
    # the drawn lengths are the distances of the sampled positions (to rounding)
    along, rate = chain.constraint_residuals(graph.q, graph.p, graph)
    assert along.abs().max() < 1e-14 and rate.abs().max() < 1e-14
    assert systems.get(**chain.config()).params == chain.params


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="embed_dim=2"):
        systems.get("pendulum-chain", embed_dim=3)
    with pytest.raises(ValueError, match="length"):
        systems.get("pendulum-chain", length=(1.0, 0.5))
    with pytest.raises(ValueError, match="max_angle"):
        systems.get("pendulum-chain", max_angle=4.0)
    for key, bad in (("max_angle", -0.1), ("max_rate", float("nan")), ("max_rate", "1")):
        with pytest.raises(ValueError, match=f"pendulum-chain: {key} must be a finite number "
                           ">= 0"):
            systems.get("pendulum-chain", **{key: bad})
    with pytest.raises(ValueError, match="max_rate must be a number, got True"):
        systems.get("pendulum-chain", max_rate=True)
    with pytest.raises(ValueError, match="needs n_particles"):
        systems.get("pendulum-chain").sample(2)


def test_hand_field_equals_autograd_field_and_stays_on_the_manifold():
    chain = systems.get("pendulum-chain", mass=(0.5, 2.0), length=(0.5, 1.5), g=1.7)
    graph = chain.sample(6, seed=1, n_particles=(1, 6))
    dq, dp = chain.analytic_vector_field(graph)(graph.q, graph.p)
    dq2, dp2 = chain.time_derivative(graph.q, graph.p, graph)
    torch.testing.assert_close(dq, dq2, rtol=0, atol=1e-13)
    torch.testing.assert_close(dp, dp2, rtol=0, atol=1e-13)
    m = graph.c[:, 0:1]

    def link_terms(dq: Tensor, dp: Tensor) -> tuple[Tensor, Tensor]:
        """``Φ̇_i = d·(q̇_i − q̇_{i−1})`` and ``Φ̈_i = |u|² + d·(a_i − a_{i−1})``."""
        first = torch.zeros(graph.num_nodes, dtype=torch.bool)
        first[graph.ptr[:-1]] = True

        def behind(x: Tensor) -> Tensor:
            return torch.where(first[:, None], 0.0, x.roll(1, 0))

        d, u, a = graph.q - behind(graph.q), dq - behind(dq), dp / m - behind(dp / m)
        return (d * u).sum(-1), u.square().sum(-1) + (d * a).sum(-1)

    rate, accel = link_terms(dq, dp)
    assert rate.abs().max() < 1e-13 and accel.abs().max() < 1e-12
    # the check can fail: free fall (no multipliers) pulls on the links
    _, free_dp = System.time_derivative(chain, graph.q, graph.p, graph)
    assert link_terms(dq, free_dp)[1].abs().max() > 0.1


def test_one_link_is_the_pendulum():
    m, l, g = 1.3, 0.8, 1.7
    pend = systems.get("pendulum", mass=m, l=l, g=g)
    start = pend.sample(4, seed=2)
    theta, p_theta = start.q[:, 0], start.p[:, 0]
    omega = p_theta / (m * l**2)
    graph = chain_graph(theta[:, None], omega[:, None], torch.full((4, 1), m, dtype=F64),
                        torch.full((4, 1), l, dtype=F64))
    chain = systems.get("pendulum-chain", mass=m, length=l, g=g)
    # the same energy up to the pendulum's zero at the bottom
    torch.testing.assert_close(chain.hamiltonian(graph.q, graph.p, graph),
                               pend.hamiltonian(start.q, start.p, start) - m * g * l,
                               rtol=0, atol=1e-12)
    q_a, p_a, _ = pend.trajectory(start, 0.1, 80)
    q_c, p_c, _ = chain.trajectory(graph, 0.1, 80)
    th, om = angles_of(q_c, p_c, graph.c[:, 0], 1)
    torch.testing.assert_close(th[..., 0], q_a[..., 0], rtol=0, atol=1e-9)
    torch.testing.assert_close(om[..., 0] * m * l**2, p_a[..., 0], rtol=0, atol=1e-9)


def test_two_links_are_the_double_pendulum():
    params = {"l1": 0.7, "l2": 1.3, "g": 2.0}
    dbl = systems.get("double-pendulum", mass=(0.5, 2.0), **params)
    start = dbl.sample(4, seed=3)
    theta = start.q[:, 0].reshape(-1, 2)
    m = start.c[:, 0].reshape(-1, 2)
    omega = dbl.time_derivative(start.q, start.p, start)[0][:, 0].reshape(-1, 2)
    lengths = torch.tensor([params["l1"], params["l2"]], dtype=F64).expand(4, 2)
    graph = chain_graph(theta, omega, m, lengths)
    chain = systems.get("pendulum-chain", g=params["g"])
    torch.testing.assert_close(chain.hamiltonian(graph.q, graph.p, graph),
                               dbl.hamiltonian(start.q, start.p, start), rtol=0, atol=1e-12)
    q_a, _, _ = dbl.trajectory(start, 0.1, 50)
    q_c, p_c, _ = chain.trajectory(graph, 0.1, 50)
    th, _ = angles_of(q_c, p_c, graph.c[:, 0], 2)
    torch.testing.assert_close(th.reshape(51, -1), q_a[..., 0], rtol=0, atol=1e-8)


@pytest.mark.parametrize("n", [3, 4, 5])
def test_chains_follow_scipy_dop853_in_angle_coordinates(n):
    gen = torch.Generator().manual_seed(10 + n)
    g_const = 1.4
    m = 0.5 + 1.5 * torch.rand(1, n, generator=gen, dtype=F64)
    lengths = 0.5 + torch.rand(1, n, generator=gen, dtype=F64)
    theta = (torch.rand(1, n, generator=gen, dtype=F64) - 0.5) * 1.5
    omega = (torch.rand(1, n, generator=gen, dtype=F64) - 0.5)
    graph = chain_graph(theta, omega, m, lengths)
    chain = systems.get("pendulum-chain", g=g_const)
    dt, steps = 0.1, 30
    q, p, _ = chain.trajectory(graph, dt, steps)
    mn, ln = m[0].numpy(), lengths[0].numpy()
    p_theta = angle_mass_matrix(theta[0].numpy(), mn, ln) @ omega[0].numpy()
    ref = solve_ivp(angle_rhs(mn, ln, g_const), (0, dt * steps),
                    np.concatenate([theta[0].numpy(), p_theta]), method="DOP853",
                    t_eval=np.arange(steps + 1) * dt, rtol=1e-13, atol=1e-13)
    assert ref.success
    th, _ = angles_of(q, p, graph.c[:, 0], n)
    np.testing.assert_allclose(th[:, 0].numpy(), ref.y[:n].T, rtol=0, atol=1e-8)
    # and the energy agrees with the angle Hamiltonian's, H = ½ θ'ᵀ M θ' + V
    w = omega[0].numpy()
    below = np.cumsum(mn[::-1])[::-1]
    h = 0.5 * w @ angle_mass_matrix(theta[0].numpy(), mn, ln) @ w - g_const * (
        below * ln * np.cos(theta[0].numpy())).sum()
    assert math.isclose(float(chain.hamiltonian(graph.q, graph.p, graph)[0]), h,
                        rel_tol=0, abs_tol=1e-12)


def test_generated_data_keep_energy_and_constraints():
    data = systems.generate("pendulum-chain", trajectories=6, steps=100, dt=0.1,
                            n_particles=3, seed=0)
    assert data.energy_drift().max() < 1e-9
    chain = systems.get("pendulum-chain")
    graph = data.state(0)
    along, rate = chain.constraint_residuals(data.q, data.p, graph)
    assert along.abs().max() < 1e-9 and rate.abs().max() < 1e-9
    # the stored derivatives are the constrained field's
    dq, dp = chain.time_derivative(data.q[7], data.p[7], graph)
    torch.testing.assert_close(data.dq[7], dq, rtol=0, atol=1e-13)
    torch.testing.assert_close(data.dp[7], dp, rtol=0, atol=1e-13)


# ------------------------------------------------------------------ angle coordinates
def test_angle_conversions_round_trip():
    """Cartesian -> angles -> Cartesian and back again, to rounding (float64), for
    chains of different masses and lengths; the angle energy is the Cartesian one."""
    chain = systems.get("pendulum-chain", mass=(0.5, 2.0), length=(0.5, 1.5), g=1.3,
                        max_angle=3.0, max_rate=2.0)
    for n in (1, 2, 4):
        state = chain.sample(6, seed=n, n_particles=n)
        theta, p_theta = to_angles(state.q, state.p, state)
        assert theta.shape == p_theta.shape == (6, n)
        q, p = from_angles(theta, p_theta, state)
        torch.testing.assert_close(q, state.q, rtol=0, atol=1e-12)
        torch.testing.assert_close(p, state.p, rtol=0, atol=1e-12)
        back = to_angles(q, p, state)
        torch.testing.assert_close(back[0], theta, rtol=0, atol=1e-12)
        torch.testing.assert_close(back[1], p_theta, rtol=0, atol=1e-12)
        torch.testing.assert_close(angle_hamiltonian(theta, p_theta, state, 1.3),
                                   chain.hamiltonian(state.q, state.p, state),
                                   rtol=0, atol=1e-12)
    # a leading time axis: each time converted alone gives the same
    data = systems.generate(chain, trajectories=3, steps=5, dt=0.1, n_particles=3, seed=0)
    graph = data.state(0)
    theta, p_theta = to_angles(data.q, data.p, graph)
    assert theta.shape == (6, 3, 3)
    one = to_angles(data.q[4], data.p[4], graph)
    torch.testing.assert_close(theta[4], one[0], rtol=0, atol=1e-14)
    torch.testing.assert_close(p_theta[4], one[1], rtol=0, atol=1e-14)
    # p_θ is M(θ) θ̇: the kinetic energy ½ θ̇ᵀ M θ̇ equals Σ |p|²/2m
    mass = systems.chain.angle_mass_matrix(theta, graph.c[:, 0].reshape(3, 3),
                                           chain.link_lengths(graph).reshape(3, 3))
    omega = torch.linalg.solve(mass, p_theta[..., None])[..., 0]
    kinetic = (data.p.square().sum(-1) / (2 * data.c[:, 0])).reshape(6, 3, 3).sum(-1)
    torch.testing.assert_close(0.5 * (omega * p_theta).sum(-1), kinetic, rtol=1e-12, atol=1e-12)


def test_angle_conversions_refuse_mixed_sizes():
    chain = systems.get("pendulum-chain")
    state = chain.sample(4, seed=0, n_particles=(2, 4))
    assert len(set(state.sizes.tolist())) > 1
    with pytest.raises(ValueError, match="chains of one size"):
        to_angles(state.q, state.p, state)
    with pytest.raises(ValueError, match="pendulum-chain"):
        angle_dataset(systems.generate("pendulum", trajectories=2, steps=3, dt=0.1))


def test_angle_dataset_derivatives_are_the_chain_dynamics():
    """The angle dataset's ``dθ, dp_θ`` (autograd of the angle Hamiltonian) equal the
    Cartesian Lagrange-multiplier field mapped through the Jacobian of ``to_angles``
    (1e-10), and second-order central differences of its own trajectories at a fine
    step (their error ``dt² x'''/6``: below 2e-5 here)."""
    chain = systems.get("pendulum-chain", mass=(0.5, 2.0), length=(0.5, 1.5), g=1.3)
    dt = 0.002
    data = systems.generate(chain, trajectories=5, steps=30, dt=dt, n_particles=3, seed=2)
    angles = angle_dataset(data)
    assert angles.q.shape == (31, 15, 1) and angles.c.shape == (15, 2)
    assert torch.equal(angles.test, data.test) and torch.equal(angles.ptr, data.ptr)
    assert angles.edge_index.shape == (2, 0) and angles.dq.dtype == F64
    graph = data.state(0)
    dq, dp = chain.time_derivative(data.q, data.p, graph)
    _, (d_theta, d_p_theta) = torch.func.jvp(lambda q, p: to_angles(q, p, graph),
                                             (data.q, data.p), (dq, dp))
    torch.testing.assert_close(angles.dq, d_theta.reshape(31, 15, 1), rtol=0, atol=1e-10)
    torch.testing.assert_close(angles.dp, d_p_theta.reshape(31, 15, 1), rtol=0, atol=1e-10)
    fd_q, fd_p = (torch.from_numpy(np.gradient(x.numpy(), dt, axis=0))
                  for x in (angles.q, angles.p))
    torch.testing.assert_close(fd_q[1:-1], angles.dq[1:-1], rtol=0, atol=2e-5)
    torch.testing.assert_close(fd_p[1:-1], angles.dp[1:-1], rtol=0, atol=2e-5)
    assert angles.dp.abs().max() > 0.1  # a real test: the derivatives are not tiny
    # and the angle trajectories mapped back are the Cartesian ones
    q, p = from_angles(angles.q.reshape(31, 5, 3), angles.p.reshape(31, 5, 3), graph)
    torch.testing.assert_close(q, data.q, rtol=0, atol=1e-12)
    torch.testing.assert_close(p, data.p, rtol=0, atol=1e-12)


def test_two_link_angle_data_follow_the_double_pendulum():
    """For N = 2 the angle dataset is the library's ``double-pendulum`` (its own
    hand-derived field, same masses, lengths and g) to 1e-10."""
    chain = systems.get("pendulum-chain", mass=(0.5, 2.0), length=0.8, g=2.0)
    data = systems.generate(chain, trajectories=4, steps=20, dt=0.1, n_particles=2, seed=1)
    angles = angle_dataset(data)
    dbl = systems.get("double-pendulum", l1=0.8, l2=0.8, g=2.0)
    graph = angles.graph
    dq, dp = dbl.time_derivative(angles.q, angles.p, graph)
    torch.testing.assert_close(angles.dq, dq, rtol=0, atol=1e-10)
    torch.testing.assert_close(angles.dp, dp, rtol=0, atol=1e-10)
    torch.testing.assert_close(dbl.hamiltonian(angles.q, angles.p, graph),
                               chain.hamiltonian(data.q, data.p, data.graph),
                               rtol=0, atol=1e-12)
