"""Symplectic ODE-Net (SymODEN): a structured Hamiltonian with an external control.

Zhong, Dey, Chakraborty, "Symplectic ODE-Net: Learning Hamiltonian Dynamics with
Control" (ICLR 2020). The state is angles ``q`` and their momenta ``p``; the networks
see the angles only through the embedding ``(cos q, sin q)``, so everything learned is
``2π``-periodic in every angle. With ``D = n·d`` coordinates per graph:

``H(q, p) = ½ pᵀ M⁻¹(q) p + V(q)``,
``dq = ∂H/∂p``, ``dp = −∂H/∂q + g(q) u``,

where ``M⁻¹(q) = L Lᵀ + ε I`` (``L [D, D]`` lower triangular, its diagonal through
softplus, ``ε =`` :data:`MIN_INVERSE_MASS`: positive definite), ``V(q)`` a scalar and
``g(q) [D, n·m]`` the input matrix are three MLPs of ``(cos q, sin q)`` and the node
constants that are not controls. The control ``u`` is read from the node constants:
the last ``controls = m`` columns of ``c`` (``c = [m, u]`` of ``forced-pendulum``:
``node_constants=2, controls=1``), held constant during a rollout; a known control
that changes in time is a sequence of rollouts with ``c`` changed between them
(:func:`rollout_with_control`).

With ``u = 0`` the field is Hamiltonian and conserves the learned ``H``; otherwise the
control does the work ``dH/dt = q̇ · g(q) u``. The field is not separable (``M⁻¹``
depends on ``q``) and the model is not a :class:`~hogn.models.HamiltonianModel` (its
field is not ``J∇H`` when ``u ≠ 0``). Graphs must have exactly ``n_particles`` nodes,
flattened as for :class:`~hogn.models.HNN`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor
from torch.nn import functional

from hogn import checks
from hogn.graph import GraphBatch
from hogn.models.base import DynamicsModel, GraphLike, as_graph, register, state_gradients
from hogn.models.mlp_models import _FlatState
from hogn.nn import MLP as _Net

__all__ = ["MIN_INVERSE_MASS", "SymODEN", "rollout_with_control"]

MIN_INVERSE_MASS = 1e-3
"""``ε`` in ``M⁻¹(q) = L Lᵀ + ε I``: the learned inverse mass is at least this."""


@register
class SymODEN(_FlatState, DynamicsModel):
    """SymODEN over a fixed-size flattened state of angles (see the module docstring).

    Args:
        n_particles: Particles per graph ``n`` (fixed).
        dim: Angles per particle ``d``.
        node_constants: Node constants per particle ``k``, the controls included.
        controls: How many of them, the last ``m`` columns of ``c``, are the control
            ``u`` (0: no control term, an unforced SymODEN).
        hidden: Hidden width of each of the three MLPs.
        layers: Linear layers of each MLP, output included (3 = two hidden layers).
        activation: Smooth activation name.

    Attributes:
        inverse_mass_net: ``(cos q, sin q, c') -> `` the ``D(D+1)/2`` entries of ``L``.
        potential_net: ``(cos q, sin q, c') -> V``.
        input_net: ``(cos q, sin q, c') -> g [D·n·m]`` (absent when ``controls=0``).
    """

    name: ClassVar[str] = "symoden"
    separable: ClassVar[bool] = False

    def __init__(self, n_particles: int = 1, dim: int = 1, node_constants: int = 2,
                 controls: int = 1, hidden: int = 64, layers: int = 3,
                 activation: str = "tanh") -> None:
        self._init_fixed(dict(n_particles=n_particles, dim=dim, node_constants=node_constants,
                              controls=controls, hidden=hidden, layers=layers,
                              activation=activation))
        if (not isinstance(controls, int) or isinstance(controls, bool)
                or not 0 <= controls <= node_constants):
            raise ValueError(f"{self.name}: controls must be an int in [0, node_constants="
                             f"{node_constants}] (the last columns of c), got {controls!r}")
        self.controls = controls
        size = n_particles * dim
        width = 2 * size + n_particles * (node_constants - controls)
        self.inverse_mass_net = _Net(width, hidden, size * (size + 1) // 2, layers, activation,
                                     rows="graphs")
        self.potential_net = _Net(width, hidden, 1, layers, activation, rows="graphs")
        self.input_net = (_Net(width, hidden, size * n_particles * controls, layers, activation,
                               rows="graphs") if controls else None)
        rows, cols = torch.tril_indices(size, size)
        self.register_buffer("_tril", torch.stack([rows, cols]), persistent=False)

    @property
    def in_features(self) -> int:
        """Width of the networks' input ``(cos q, sin q, c')`` per graph."""
        return self.n_particles * (2 * self.dim + self.node_constants - self.controls)

    # ------------------------------------------------------------ the pieces
    def angle_features(self, q: Tensor, graph: GraphBatch) -> Tensor:
        """``[cos q, sin q, c']`` per graph, ``[G, n·(2d + k − m)]`` (``c'``: the node
        constants that are not controls)."""
        g = graph.num_graphs
        constants = graph.c[:, : self.node_constants - self.controls]
        return torch.cat([torch.cos(q).reshape(g, -1), torch.sin(q).reshape(g, -1),
                          constants.reshape(g, -1)], -1)

    def control_input(self, graph: GraphBatch) -> Tensor:
        """The control ``u`` per graph, ``[G, n·m]`` (the last ``m`` columns of ``c``)."""
        k = self.node_constants
        return graph.c[:, k - self.controls:].reshape(graph.num_graphs, -1)

    def _inverse_mass(self, x: Tensor) -> Tensor:
        size = self.n_particles * self.dim
        entries = self.inverse_mass_net(x)
        rows, cols = self._tril
        diagonal = rows == cols
        entries = torch.where(diagonal, functional.softplus(entries), entries)
        lower = entries.new_zeros(x.shape[0], size, size)
        lower[:, rows, cols] = entries
        eye = torch.eye(size, dtype=x.dtype, device=x.device)
        return lower @ lower.transpose(-1, -2) + MIN_INVERSE_MASS * eye

    def _input_matrix(self, x: Tensor) -> Tensor:
        size = self.n_particles * self.dim
        if self.input_net is None:
            return x.new_zeros(x.shape[0], size, 0)
        return self.input_net(x).reshape(x.shape[0], size, -1)

    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """Learned ``H = ½ pᵀ M⁻¹(q) p + V(q)`` without input checks: ``q, p [N, d]`` ->
        ``[G]``."""
        x = self.angle_features(q, graph)
        flat_p = p.reshape(graph.num_graphs, -1)
        kinetic = 0.5 * torch.einsum("gi,gij,gj->g", flat_p, self._inverse_mass(x), flat_p)
        return kinetic + self.potential_net(x)[:, 0]

    def force(self, q: Tensor, graph: GraphBatch) -> Tensor:
        """The control term ``g(q) u`` of ``dp`` without input checks, ``[N, d]``."""
        x = self.angle_features(q, graph)
        u = self.control_input(graph)
        return (self._input_matrix(x) @ u[..., None]).reshape(q.shape)

    # ------------------------------------------------------- checked access
    def _checked(self, graph: GraphLike) -> GraphBatch:
        g = as_graph(graph)
        self.check_state(g.q, g.p, g)
        return g

    def hamiltonian(self, graph: GraphLike) -> Tensor:
        """Learned ``H`` of each graph at its state, ``[G]`` (conserved by the model's
        field only where the control is zero)."""
        g = self._checked(graph)
        return self.energy(g.q, g.p, g)

    def inverse_mass(self, graph: GraphLike) -> Tensor:
        """Learned ``M⁻¹(q)`` of each graph, ``[G, D, D]`` (symmetric positive definite)."""
        g = self._checked(graph)
        return self._inverse_mass(self.angle_features(g.q, g))

    def potential(self, graph: GraphLike) -> Tensor:
        """Learned ``V(q)`` of each graph, ``[G]``."""
        g = self._checked(graph)
        return self.potential_net(self.angle_features(g.q, g))[:, 0]

    def input_matrix(self, graph: GraphLike) -> Tensor:
        """Learned ``g(q)`` of each graph, ``[G, D, n·m]``."""
        g = self._checked(graph)
        return self._input_matrix(self.angle_features(g.q, g))

    def control_force(self, graph: GraphLike) -> Tensor:
        """The control term ``g(q) u`` of ``dp`` at the graph's state, ``[N, d]``."""
        g = self._checked(graph)
        return self.force(g.q, g)

    # ------------------------------------------------------------- dynamics
    def _derivative(self, q: Tensor, p: Tensor, graph: GraphBatch,
                    create_graph: bool | None) -> tuple[Tensor, Tensor]:
        ((dh_dq, dh_dp),) = state_gradients((self.energy,), q, p, graph,
                                            self._create_graph(q, p, create_graph))
        return dh_dp, self.force(q, graph) - dh_dq


def rollout_with_control(model: DynamicsModel, graph: GraphLike, controls: Tensor,
                         steps_per_segment: int, dt: float, integrator: str = "rk4",
                         substeps: int = 1, columns: int | None = None
                         ) -> tuple[Tensor, Tensor]:
    """Roll a model out under a known piecewise-constant control.

    The control is carried in the node constants (the last ``columns`` of ``c``):
    segment ``s`` runs :func:`hogn.rollout` for ``steps_per_segment`` steps with those
    columns set to ``controls[s]``, starting where segment ``s − 1`` ended.

    Args:
        model: Any derivative model whose node constants hold the control (a
            :class:`SymODEN`, or e.g. an HNN given ``c = [m, u]`` as input).
        graph: Initial states and static graph (its own control values are ignored).
        controls: ``[S]`` (one value per segment for every node and control column),
            ``[S, m]`` (per column) or ``[S, N, m]`` (per node and column); the dtype
            and device of the graph.
        steps_per_segment: Integrator steps per segment (>= 1).
        dt: Step size.
        integrator: Integrator name.
        substeps: Integrator steps per saved step.
        columns: How many trailing columns of ``c`` hold the control (default: the
            model's ``controls`` if it has one, else 1).

    Returns:
        ``q, p [S·steps_per_segment + 1, N, d]`` starting at the initial state.

    Raises:
        ValueError: for controls of another shape, no segments, or a bad count.
    """
    from hogn.rollout import rollout

    g = as_graph(graph)
    checks.positive_int(steps_per_segment, "steps_per_segment")
    m = getattr(model, "controls", 1) if columns is None else columns
    k = g.c.shape[1]
    if not isinstance(m, int) or isinstance(m, bool) or not 1 <= m <= k:
        raise ValueError(f"columns must be an int in [1, {k}] (the control columns of c), "
                         f"got {m!r}")
    if not isinstance(controls, Tensor) or controls.dim() not in (1, 2, 3) or \
            controls.shape[0] < 1:
        raise ValueError("controls must be a tensor [S], [S, m] or [S, N, m] with S >= 1 "
                         f"segments, got {getattr(controls, 'shape', type(controls).__name__)}")
    per_segment = controls.reshape(controls.shape[0], *(1,) * (3 - controls.dim()),
                                   *controls.shape[1:])
    if per_segment.shape[1] not in (1, g.num_nodes) or per_segment.shape[2] not in (1, m):
        raise ValueError(f"controls must be [S], [S, {m}] or [S, {g.num_nodes}, {m}], got "
                         f"{list(controls.shape)}")
    q, p = g.q, g.p
    qs, ps = [q[None]], [p[None]]
    for u in per_segment:
        c = g.c.clone()
        c[:, k - m:] = u.to(c)
        seg_q, seg_p = rollout(model, g.replace(q=q, p=p, c=c), steps_per_segment, dt,
                               integrator, substeps)
        qs.append(seg_q[1:])
        ps.append(seg_p[1:])
        q, p = seg_q[-1], seg_p[-1]
    return torch.cat(qs), torch.cat(ps)

