"""An N-link pendulum chain in Cartesian coordinates, held by Lagrange multipliers.

``N`` point masses in the plane hang from a fixed pivot at the origin: particle 0 is
tied to the pivot by a rigid massless link of length ``l_0``, particle ``i`` to
particle ``i − 1`` by one of length ``l_i``. ``N = 1`` is the pendulum, ``N = 2``
the double pendulum (the same physics as :class:`~systems.oscillators.Pendulum` and
:class:`~systems.oscillators.DoublePendulum`, in angles), any ``N`` a chain.

State: positions ``q [N, 2]`` (``y`` up, gravity ``−g ŷ``) and Cartesian momenta
``p [N, 2] = m v``. The Hamiltonian is that of free particles,
``H = Σ |p_i|²/2m_i + g Σ m_i y_i`` (the energy, conserved; it equals the double
pendulum's ``H`` and is the pendulum's minus ``m g l``), and the links are holonomic
constraints ``Φ_i(q) = (|q_i − q_{i−1}|² − l_i²)/2 = 0`` (``q_{−1} = 0``), with their
time derivatives ``Φ̇_i = (q_i − q_{i−1})·(v_i − v_{i−1}) = 0``. The motion is

``dq = ∂H/∂p = p/m``, ``dp = −∂H/∂q − DΦᵀ λ``,

with the multipliers ``λ [N]`` (the link tensions divided by their lengths) chosen so
that ``Φ̈ = 0``: ``K λ = |u|² + DΦ M⁻¹ f``, where ``f = −∂H/∂q``, ``d_i = q_i − q_{i−1}``,
``u_i = v_i − v_{i−1}`` and ``K = DΦ M⁻¹ DΦᵀ`` is tridiagonal,
``K_ii = |d_i|² (1/m_i + 1/m_{i−1})`` (no second term for ``i = 0``),
``K_{i,i+1} = −d_i·d_{i+1}/m_i``. Each graph's ``K`` is solved with
``torch.linalg.solve`` (graphs padded to the largest). On the constraint manifold
this is the same field as the projected Hamiltonian field ``P(z) J ∇H`` of a
constrained Hamiltonian network (:class:`hogn.models.CHNN`), computed another way.

Graph encoding (what a model needs to know the constraints):

- node constants ``c [N, 2]``: mass, and the length of the node's link to the fixed
  pivot (``l_0`` on the first node of each chain, ``0`` on every other node: no link);
- edges: the links between consecutive particles, each in both directions
  (``i − 1 ↔ i``), with ``edge_attr [E, 1]`` the link's length ``l_i``.

So every constraint is ``|q_s − q_r| = L`` for an edge, or ``|q_n| = c[n, 1]`` for a
node whose pivot constant is positive. The system's own field reads the chain
order from ``ptr`` (nodes of a graph in order from the pivot), its link lengths
from the state (they hold on the manifold).

Initial states: per link an angle from the downward vertical ``θ_i ~
U[−max_angle, max_angle]`` and an angular velocity ``ω_i ~ U[−max_rate,
max_rate]``; masses and lengths are numbers or ``(lo, hi)`` ranges drawn per
particle. Positions ``q_i = Σ_{k≤i} l_k (sin θ_k, −cos θ_k)`` and velocities
``v_i = Σ_{k≤i} l_k ω_k (cos θ_k, sin θ_k)`` satisfy the constraints and their
time derivatives to rounding.

Angle coordinates (:func:`to_angles`, :func:`from_angles`, :func:`angle_hamiltonian`,
:func:`angle_dataset`): link ``i``'s angle ``θ_i`` from the downward vertical,
``d_i = l_i (sin θ_i, −cos θ_i)``, and its canonical momentum ``p_θ = M(θ) θ̇`` with
``M(θ)_ij = μ_max(i,j) l_i l_j cos(θ_i − θ_j)``, ``μ_i = Σ_{k ≥ i} m_k`` (the mass
hanging from link ``i``); the chain's energy is then
``H(θ, p_θ) = ½ p_θᵀ M(θ)⁻¹ p_θ − g Σ_i μ_i l_i cos θ_i``, the same number as the
Cartesian ``H``. These need chains of one size (``[..., G, n]`` arrays).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from hogn import checks
from hogn.graph import GraphBatch, batch_vector, ptr_from_sizes
from hogn.integrators import VectorField
from systems.base import System, node_sum, uniform

if TYPE_CHECKING:
    from systems.dataset import Dataset

__all__ = ["PendulumChain", "angle_dataset", "angle_hamiltonian", "angle_mass_matrix",
           "chain_edges", "from_angles", "to_angles"]


class _Chain:
    """The chain order of a batch: each node's parent (the node before it), whether it
    hangs from the pivot, and its slot ``(graph, local index)`` in padded matrices."""

    def __init__(self, graph: GraphBatch) -> None:
        n = graph.num_nodes
        batch = graph.batch
        index = torch.arange(n, device=batch.device)
        self.local = index - graph.ptr[:-1][batch]
        self.first = self.local == 0
        self.parent = (index - 1).clamp(min=0)
        self.child = index[~self.first]          # nodes with a parent
        self.of_child = self.child - 1           # their parents
        self.batch = batch
        self.num_graphs = graph.num_graphs
        self.width = int(graph.sizes.max()) if n else 0

    def behind(self, x: Tensor) -> Tensor:
        """``x`` of each node's parent, zero for the first node: ``[..., N, k]``."""
        return torch.where(self.first[:, None], torch.zeros_like(x), x[..., self.parent, :])

    def solve(self, diag: Tensor, off: Tensor, rhs: Tensor) -> Tensor:
        """Solve each graph's tridiagonal ``K λ = rhs`` (``diag, rhs [..., N]``; ``off
        [..., N]``: ``K`` between a node and its parent, ignored on first nodes)."""
        lead = rhs.shape[:-1]
        g, w = self.num_graphs, self.width
        k = rhs.new_zeros((*lead, g, w, w))
        eye = torch.arange(w, device=rhs.device)
        k[..., eye, eye] = 1.0  # padding slots: λ = 0
        b, loc = self.batch, self.local
        k[..., b, loc, loc] = diag
        cb, cl = b[self.child], loc[self.child]
        k[..., cb, cl, cl - 1] = off[..., self.child]
        k[..., cb, cl - 1, cl] = off[..., self.child]
        dense = rhs.new_zeros((*lead, g, w))
        dense[..., b, loc] = rhs
        return torch.linalg.solve(k, dense)[..., b, loc]


class PendulumChain(System):
    """``N`` masses on rigid links hanging from the origin, in Cartesian coordinates
    (see the module docstring for the physics, the multipliers and the graph).

    Parameters: ``mass`` and ``length`` (numbers or ``(lo, hi)`` ranges per particle),
    ``g``, ``max_angle`` (largest initial angle from the vertical, rad) and
    ``max_rate`` (largest initial angular velocity of a link, rad per time unit).
    """

    name = "pendulum-chain"
    native_dim = 2
    n_particles: ClassVar[int | None] = None
    defaults: ClassVar[dict[str, Any]] = {"mass": 1.0, "length": 1.0, "g": 1.0,
                                          "max_angle": math.pi / 4, "max_rate": 0.5}
    chaotic = True
    separable = False  # the tensions depend on the velocities
    max_step = 0.02
    description = ("N-link pendulum chain in Cartesian coordinates, links held by Lagrange "
                   "multipliers; |θ| ≤ π/4, |ω| ≤ 0.5 per link (chaotic for N ≥ 2)")

    def _validate(self) -> None:
        super()._validate()
        if self.embed_dim != self.native_dim:
            raise ValueError(f"{self.name}: the chain is planar and stored as it is "
                             f"(embed_dim=2), got embed_dim={self.embed_dim!r}")
        self._positive_range("length")
        for key in ("max_angle", "max_rate"):
            checks.nonnegative_float(self.params[key], f"{self.name}: {key}")
        if self.params["max_angle"] > math.pi:
            raise ValueError(f"{self.name}: max_angle must be at most π, got "
                             f"{self.params['max_angle']!r}")

    # ------------------------------------------------------------------- physics
    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """``H = Σ |p|²/2m + g Σ m y`` per graph, ``[..., G]``."""
        m = graph.c[:, 0]
        e = p.square().sum(-1) / (2 * m) + float(self.params["g"]) * m * q[..., 1]
        return node_sum(e, graph)

    def _constrained(self, graph: GraphBatch, force: Any) -> VectorField:
        """The field ``dq = p/m``, ``dp = f − DΦᵀ λ`` for the unconstrained force
        ``force(q, p) -> f [..., N, 2]``."""
        chain = _Chain(graph)
        inv_m = 1.0 / graph.c[:, 0:1]
        inv_m_parent = torch.where(chain.first[:, None], torch.zeros_like(inv_m),
                                   inv_m[chain.parent])

        def field(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
            v = p * inv_m
            f = force(q, p)
            d = q - chain.behind(q)                     # link vectors [..., N, 2]
            u = v - chain.behind(v)                     # their rates
            a = f * inv_m
            rhs = u.square().sum(-1) + (d * (a - chain.behind(a))).sum(-1)
            diag = d.square().sum(-1) * (inv_m + inv_m_parent)[:, 0]
            # K between node i and its parent j: −d_j·d_i / m_j
            off = -(d * chain.behind(d)).sum(-1) * inv_m_parent[:, 0]
            lam = chain.solve(diag, off, rhs)
            pull = lam[..., None] * d                  # λ_i d_i, on node i and −on its parent
            reaction = torch.zeros_like(pull)
            reaction = reaction.index_add(-2, chain.of_child, pull[..., chain.child, :])
            return v, f - pull + reaction

        return field

    def _native_field(self, graph: GraphBatch) -> VectorField:
        """The constrained field with gravity ``f = −m g ŷ`` written out."""
        gravity = torch.zeros_like(graph.c[:, :2])
        gravity[:, 1] = -float(self.params["g"]) * graph.c[:, 0]
        return self._constrained(graph, lambda q, p: gravity.expand_as(q))

    def time_derivative(self, q: Tensor, p: Tensor, graph: GraphBatch,
                        create_graph: bool = False) -> tuple[Tensor, Tensor]:
        """The constrained equations of motion with ``f = −∂H/∂q`` and ``dq = ∂H/∂p``
        by autograd of :meth:`hamiltonian` (the definition; the hand-derived
        :meth:`analytic_vector_field` writes gravity out)."""
        def force(x: Tensor, y: Tensor) -> Tensor:
            return System.time_derivative(self, x, y, graph, create_graph=create_graph)[1]

        return self._constrained(graph, force)(q, p)

    # --------------------------------------------------------------- constraints
    @staticmethod
    def link_lengths(graph: GraphBatch) -> Tensor:
        """Each node's link length to its parent (or the pivot), ``[N]``, read from the
        graph: ``c[:, 1]`` on first nodes, ``edge_attr`` of the edge from the parent."""
        lengths = graph.c[:, 1].clone()
        src, dst = graph.edge_index
        down = dst == src + 1  # parent -> child edges
        lengths[dst[down]] = graph.edge_attr[down, 0]
        if bool((lengths <= 0).any()):
            raise ValueError("pendulum-chain: every node needs a positive link length "
                             "(pivot constant c[:, 1] on first nodes, edge_attr on links)")
        return lengths

    def constraint_residuals(self, q: Tensor, p: Tensor, graph: GraphBatch
                             ) -> tuple[Tensor, Tensor]:
        """How far states are off the constraint manifold.

        Args:
            q: Positions ``[..., N, d]``.
            p: Momenta ``[..., N, d]``.
            graph: Static graph.

        Returns:
            ``(|q_i − q_{i−1}| − l_i, (q_i − q_{i−1})·(v_i − v_{i−1}) / l_i)``, each
            ``[..., N]``: the length error of every link and its rate of change.
        """
        chain = _Chain(graph)
        lengths = self.link_lengths(graph)
        v = p / graph.c[:, 0:1]
        d, u = q - chain.behind(q), v - chain.behind(v)
        return d.norm(dim=-1) - lengths, (d * u).sum(-1) / lengths

    # ---------------------------------------------------------------- sampling
    def default_edges(self, sizes: list[int], generator: torch.Generator
                      ) -> tuple[Tensor, Tensor | None]:
        """Links ``i − 1 ↔ i`` in both directions, graph after graph (each graph's
        parent -> child edges, then child -> parent); their lengths are drawn with the
        states, so :meth:`_sample_graph` sets ``edge_attr``."""
        return chain_edges(sizes), None

    def _sample_graph(self, sizes: list[int], generator: torch.Generator
                      ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``q, p [N, 2]``, ``c [N, 2]`` (mass, pivot-link length or 0), the links
        ``edge_index [2, E]`` and ``edge_attr [E, 1]`` (the length of each link, drawn
        with the states), float64."""
        n = sum(sizes)
        m = uniform(generator, n, *self._positive_range("mass"))
        lengths = uniform(generator, n, *self._positive_range("length"))
        a, b = float(self.params["max_angle"]), float(self.params["max_rate"])
        theta = uniform(generator, n, -a, a)
        omega = uniform(generator, n, -b, b)
        step_q = lengths[:, None] * torch.stack([torch.sin(theta), -torch.cos(theta)], -1)
        step_v = (lengths * omega)[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)],
                                                          -1)
        ptr = ptr_from_sizes(sizes)
        batch = batch_vector(ptr)
        q, v = (_segment_cumsum(x, ptr, batch) for x in (step_q, step_v))
        first = torch.zeros(n, dtype=torch.bool)
        first[ptr[:-1]] = True
        pivot = torch.where(first, lengths, torch.zeros_like(lengths))
        edge_index, _ = self.default_edges(sizes, generator)
        child = edge_index.max(0).values
        return (q, m[:, None] * v, torch.stack([m, pivot], -1), edge_index,
                lengths[child][:, None])


def chain_edges(sizes: list[int]) -> Tensor:
    """``edge_index [2, E]`` of chains of ``sizes`` nodes: ``i − 1 → i`` then ``i → i − 1``
    within each graph, the graphs in order (edges grouped by graph, as batches need)."""
    parts = []
    start = 0
    for n in sizes:
        fwd = torch.stack([torch.arange(start, start + n - 1), torch.arange(start + 1, start + n)])
        parts += [fwd, fwd.flip(0)]
        start += n
    return torch.cat(parts, 1) if parts else torch.empty(2, 0, dtype=torch.long)


def _segment_cumsum(x: Tensor, ptr: Tensor, batch: Tensor) -> Tensor:
    """Cumulative sums of ``x [N, k]`` restarting at every graph's first node."""
    total = x.cumsum(0)
    before = torch.cat([x.new_zeros(1, x.shape[1]), total])[ptr[:-1]]
    return total - before[batch]


# --------------------------------------------------------------- angle coordinates
def _link_constants(graph: GraphBatch) -> tuple[Tensor, Tensor]:
    """Masses and link lengths ``[G, n]`` of chains of one size ``n``.

    Raises:
        ValueError: when the graphs have different sizes.
    """
    sizes = graph.sizes
    if graph.num_graphs == 0 or bool((sizes != sizes[0]).any()):
        raise ValueError(f"angle coordinates need chains of one size (arrays [..., G, n]), "
                         f"got graph sizes {sorted(set(sizes.tolist()))}")
    shape = (graph.num_graphs, int(sizes[0]))
    return graph.c[:, 0].reshape(shape), PendulumChain.link_lengths(graph).reshape(shape)


def _behind(x: Tensor) -> Tensor:
    """``x [..., n, k]`` of each link's parent node, zero (the pivot) for the first."""
    return torch.cat([torch.zeros_like(x[..., :1, :]), x[..., :-1, :]], -2)


def _hanging_masses(masses: Tensor) -> Tensor:
    """``μ_i = Σ_{k ≥ i} m_k``, the mass hanging from each link, ``[G, n]``."""
    return masses.flip(-1).cumsum(-1).flip(-1)


def angle_mass_matrix(theta: Tensor, masses: Tensor, lengths: Tensor) -> Tensor:
    """The chain's mass matrix in link angles, ``M(θ)_ij = μ_max(i,j) l_i l_j cos(θ_i − θ_j)``.

    Args:
        theta: Link angles ``[..., G, n]``.
        masses: Particle masses ``[G, n]``.
        lengths: Link lengths ``[G, n]``.

    Returns:
        ``M [..., G, n, n]`` (symmetric positive definite): the kinetic energy is
        ``½ θ̇ᵀ M θ̇``.
    """
    n = theta.shape[-1]
    index = torch.arange(n, device=theta.device)
    mu = _hanging_masses(masses)[..., torch.maximum(index[:, None], index[None, :])]
    ll = lengths[..., :, None] * lengths[..., None, :]
    return mu * ll * torch.cos(theta[..., :, None] - theta[..., None, :])


def to_angles(q: Tensor, p: Tensor, graph: GraphBatch) -> tuple[Tensor, Tensor]:
    """Cartesian chain states to link angles and their canonical momenta.

    Link ``i`` joins particle ``i − 1`` (the pivot for ``i = 0``) to particle ``i``;
    its angle from the downward vertical is ``θ_i = atan2(d_x, −d_y)`` of the link
    vector ``d_i = q_i − q_{i−1}`` (in ``(−π, π]``), its angular velocity
    ``θ̇_i = (d_i × u_i) / |d_i|²`` with ``u_i = v_i − v_{i−1}``, ``v = p/m``, and
    ``p_θ = M(θ) θ̇`` (:func:`angle_mass_matrix`, lengths from the graph).

    Args:
        q: Positions ``[..., N, 2]`` (any leading axes, e.g. time).
        p: Momenta ``m v``, ``[..., N, 2]``.
        graph: The chains' graph (:class:`PendulumChain`'s encoding: masses in
            ``c[:, 0]``, lengths as :meth:`PendulumChain.link_lengths` reads them), all
            of one size ``n``, ``G`` graphs, ``N = G n``.

    Returns:
        ``(θ, p_θ)``, each ``[..., G, n]``.

    Raises:
        ValueError: for chains of different sizes.
    """
    masses, lengths = _link_constants(graph)
    g, n = masses.shape
    lead = q.shape[:-2]
    x = q.reshape(*lead, g, n, 2)
    v = (p / graph.c[:, 0:1]).reshape(*lead, g, n, 2)
    d, u = x - _behind(x), v - _behind(v)
    theta = torch.atan2(d[..., 0], -d[..., 1])
    omega = (d[..., 0] * u[..., 1] - d[..., 1] * u[..., 0]) / d.square().sum(-1)
    p_theta = (angle_mass_matrix(theta, masses, lengths) @ omega[..., None])[..., 0]
    return theta, p_theta


def from_angles(theta: Tensor, p_theta: Tensor, graph: GraphBatch) -> tuple[Tensor, Tensor]:
    """Link angles and canonical momenta to Cartesian positions and momenta.

    The inverse of :func:`to_angles`: ``θ̇ = M(θ)⁻¹ p_θ`` (``torch.linalg.solve``),
    ``q_i = Σ_{k ≤ i} l_k (sin θ_k, −cos θ_k)``,
    ``v_i = Σ_{k ≤ i} l_k θ̇_k (cos θ_k, sin θ_k)``, ``p_i = m_i v_i``: on the
    constraint manifold by construction (links of length ``l_i``, ``Φ̇ = 0``).

    Args:
        theta: Link angles ``[..., G, n]``.
        p_theta: Their canonical momenta ``[..., G, n]``.
        graph: The chains' graph (masses and lengths, as in :func:`to_angles`).

    Returns:
        ``(q, p)``, each ``[..., N, 2]`` with ``N = G n``, in the graph's node order.
    """
    masses, lengths = _link_constants(graph)
    if theta.shape[-2:] != masses.shape or p_theta.shape != theta.shape:
        raise ValueError(f"theta and p_theta must be [..., G, n] = [..., "
                         f"{masses.shape[0]}, {masses.shape[1]}], got {tuple(theta.shape)} "
                         f"and {tuple(p_theta.shape)}")
    omega = torch.linalg.solve(angle_mass_matrix(theta, masses, lengths),
                               p_theta[..., None])[..., 0]
    sin, cos = torch.sin(theta), torch.cos(theta)
    q = (lengths[..., None] * torch.stack([sin, -cos], -1)).cumsum(-2)
    v = ((lengths * omega)[..., None] * torch.stack([cos, sin], -1)).cumsum(-2)
    lead = theta.shape[:-2]
    return q.reshape(*lead, -1, 2), (masses[..., None] * v).reshape(*lead, -1, 2)


def angle_hamiltonian(theta: Tensor, p_theta: Tensor, graph: GraphBatch, g: float
                      ) -> Tensor:
    """The chain's energy in angle coordinates,
    ``H = ½ p_θᵀ M(θ)⁻¹ p_θ − g Σ_i μ_i l_i cos θ_i``.

    Args:
        theta: Link angles ``[..., G, n]``.
        p_theta: Canonical momenta ``[..., G, n]``.
        graph: The chains' graph (masses and lengths).
        g: Gravitational acceleration.

    Returns:
        ``H [..., G]`` (equal to :meth:`PendulumChain.hamiltonian` of the same states).
    """
    masses, lengths = _link_constants(graph)
    below = _hanging_masses(masses)
    omega = torch.linalg.solve(angle_mass_matrix(theta, masses, lengths),
                               p_theta[..., None])[..., 0]
    return 0.5 * (omega * p_theta).sum(-1) - g * (below * lengths * torch.cos(theta)).sum(-1)


def _angle_field(theta: Tensor, p_theta: Tensor, graph: GraphBatch, g: float
                 ) -> tuple[Tensor, Tensor]:
    """Hamilton's equations of :func:`angle_hamiltonian` by autograd:
    ``(∂H/∂p_θ, −∂H/∂θ)``, each ``[..., G, n]``."""
    with torch.enable_grad():
        th = theta.detach().requires_grad_(True)
        pt = p_theta.detach().requires_grad_(True)
        h = angle_hamiltonian(th, pt, graph, g)
        dh_dth, dh_dp = torch.autograd.grad(h.sum(), (th, pt))
    return dh_dp, -dh_dth


def angle_dataset(data: Dataset) -> Dataset:
    """A ``pendulum-chain`` dataset in angle coordinates, for models of generalized
    coordinates (the angle-coordinate HNN).

    Each trajectory stays one graph of ``n`` nodes, one per link, with ``d = 1``
    (what the fixed-size ``hnn`` and ``mlp`` take directly, and the layout of the
    ``pendulum`` and ``double-pendulum`` systems): ``q = θ``, ``p = p_θ``
    ``[T, G n, 1]`` (:func:`to_angles`; each angle unwrapped along time with
    ``numpy.unwrap``, so a link going over the top does not jump by 2π), and the exact
    derivatives ``dq = ∂H/∂p_θ``, ``dp = −∂H/∂θ`` of :func:`angle_hamiltonian` by
    autograd. Node constants ``c [N, 2]``: the particle's mass and its link's length;
    no edges (the chain order is the node order). ``t``, ``ptr`` and the test split
    are kept; noisy observations, if any, are converted too. ``meta["system"]`` is the
    label ``{"name": "pendulum-chain (angles)"}`` (no registered system has this
    energy), ``meta["of_system"]`` the chain's config and ``meta["coordinates"]`` says
    what ``q, p`` are.

    Args:
        data: A dataset of the ``pendulum-chain`` system (``systems.generate``),
            chains of one size.

    Returns:
        The angle-coordinate :class:`~systems.dataset.Dataset`, in ``data``'s dtype.

    Raises:
        ValueError: for data of another system or chains of different sizes.
    """
    from systems.dataset import Dataset

    if data.system_name != PendulumChain.name:
        raise ValueError(f"angle_dataset needs {PendulumChain.name!r} data, got data of "
                         f"{data.system_name!r}")
    system = data.system()
    g = float(system.params["g"])
    graph = data.state(0)
    masses, lengths = _link_constants(graph)
    steps = data.t.numel()

    def angles(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        theta, p_theta = to_angles(q, p, graph)
        unwrapped = np.unwrap(theta.detach().cpu().numpy(), axis=0)
        return torch.from_numpy(unwrapped).to(theta.device, theta.dtype), p_theta

    theta, p_theta = angles(data.q, data.p)
    dtheta, dp_theta = _angle_field(theta, p_theta, graph, g)

    def nodes(x: Tensor) -> Tensor:  # [T, G, n] -> [T, G n, 1]
        return x.reshape(steps, -1, 1)

    observed = (angles(data.q_obs, data.p_obs) if data.q_obs is not None
                and data.p_obs is not None else (None, None))
    out = Dataset(
        t=data.t, q=nodes(theta), p=nodes(p_theta), dq=nodes(dtheta), dp=nodes(dp_theta),
        c=torch.stack([masses, lengths], -1).reshape(-1, 2),
        edge_index=torch.empty(2, 0, dtype=torch.long, device=data.edge_index.device),
        ptr=data.ptr, test=data.test,
        meta={**data.meta, "system": {"name": f"{PendulumChain.name} (angles)"},
              "of_system": data.system_config,
              "coordinates": "q: link angles from the downward vertical, p: their canonical "
                             "momenta M(θ) θ̇ (systems.chain.to_angles); c: mass, link length"},
        q_obs=None if observed[0] is None else nodes(observed[0]),
        p_obs=None if observed[1] is None else nodes(observed[1]))
    problem = out.validate()
    if problem:
        raise ValueError(f"angle_dataset built an inconsistent dataset: {problem}")
    return out
