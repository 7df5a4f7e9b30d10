"""Dissipative Hamiltonian neural network (DHNN) over a fixed-size flattened state.

Sosanya & Greydanus, "Dissipative Hamiltonian Neural Networks: Learning Dissipative
and Conservative Dynamics Separately" (2022): two MLPs, a Hamiltonian ``H(q, p)`` and
a dissipation function ``D(q, p)``, whose vector fields add up to the dynamics (the
Helmholtz split of a field into a divergence-free, rotational part and a curl-free,
gradient part):

``dq = ∂H/∂p + ∂D/∂q``, ``dp = −∂H/∂q + ∂D/∂p``.

The ``H`` part conserves ``H``; the ``D`` part is a gradient flow (ascent of ``D``).
With this sign convention linear friction ``dp = … − γ p`` is ``D = −γ |p|²/2``
(``D ≤ 0``, the negative of Rayleigh's dissipation function ``γ |p|²/2``; see
:meth:`systems.damped.DampedMassSpring.dissipation`), and along the flow
``dH/dt = ∇H · ∇D``, which is ``−γ |p|²/m`` for that ``D`` and ``H = p²/2m + V(q)``.
A conservative system is ``D`` constant: zero gradients.

Identifiability: the data fix only the sum of the two fields. Its divergence is
``ΔD`` (the ``H`` part is divergence-free), so the Laplacian of ``D`` is determined
— for linear friction ``ΔD = −γ`` times the number of momentum components, the
phase-space contraction rate — but a harmonic function ``φ`` (``Δφ = 0``) can move
between the parts: ``D + φ`` and ``H − ψ`` with ``J∇ψ = ∇φ`` give the same field
(e.g. ``φ = a (q² − p²)/2``, ``ψ = a q p``). So with ``D(q, p)`` (``dissipation_inputs=
"state"``, the paper's choice) the learned ``∂D/∂p`` need not be ``−γ p`` even where
the field is learned exactly; estimate ``γ`` from ``ΔD`` instead. With ``D(p)``
(``"momenta"``: Rayleigh's dissipation is a function of the velocities) only
``D + a·p``, ``H + a·q`` remain free, so ``∂D/∂p`` is the friction up to a constant,
and ``∂D/∂q = 0``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from hogn.graph import GraphBatch
from hogn.models.base import DynamicsModel, GraphLike, as_graph, register, state_gradients
from hogn.models.mlp_models import _FlatState
from hogn.nn import MLP as _Net

__all__ = ["DHNN", "DISSIPATION_INPUTS", "DissipativeModel", "check_dissipation_inputs"]

DISSIPATION_INPUTS = ("state", "momenta")
"""What the dissipation function ``D`` may read: ``(q, p)`` or ``p`` alone."""

Pair = tuple[Tensor, Tensor]


class _SplitField(DynamicsModel):
    """A learned ``H`` whose field is the sum of a conservative and a dissipative part
    (the shared frame of :class:`DissipativeModel` and :class:`~hogn.models.GHNN`; a
    subclass defines ``energy``, ``(q, p, graph) -> [G]`` without input checks, and
    ``_parts``, the two parts without input checks).

    Not a Hamiltonian model: its ``H`` is not conserved along its own field (unless
    the dissipative part vanishes), its field is not separable and it is not a stepper.
    """

    separable: ClassVar[bool] = False

    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """Learned ``H`` without input checks, ``[G]``."""
        raise NotImplementedError

    def hamiltonian(self, graph: GraphLike) -> Tensor:
        """Learned ``H`` of each graph at its state, ``[G]`` (not conserved by the
        model's dynamics unless the dissipative part vanishes)."""
        g = as_graph(graph)
        self.check_state(g.q, g.p, g)
        return self.energy(g.q, g.p, g)

    def field_parts(self, graph: GraphLike, create_graph: bool | None = None
                    ) -> tuple[Pair, Pair]:
        """The two parts of the field at the graph's state, checked.

        Args:
            graph: State and static graph.
            create_graph: As for :meth:`derivative` (without it the parts carry no
                autograd graph).

        Returns:
            ``((dq, dp), (dq, dp))``, each ``[N, d]``: the conservative and the
            dissipative part; :meth:`time_derivative` is their sum.
        """
        g = as_graph(graph)
        self.check_state(g.q, g.p, g)
        return self._parts(g.q, g.p, g, create_graph)

    def _parts(self, q: Tensor, p: Tensor, graph: GraphBatch, create_graph: bool | None
               ) -> tuple[Pair, Pair]:
        raise NotImplementedError

    def _derivative(self, q: Tensor, p: Tensor, graph: GraphBatch,
                    create_graph: bool | None) -> tuple[Tensor, Tensor]:
        (dq_c, dp_c), (dq_d, dp_d) = self._parts(q, p, graph, create_graph)
        return dq_c + dq_d, dp_c + dp_d


class DissipativeModel(_SplitField):
    """A learned ``H`` and a learned dissipation function ``D`` with the field
    ``dq = ∂H/∂p + ∂D/∂q``, ``dp = −∂H/∂q + ∂D/∂p`` by autograd (the shared part of
    :class:`DHNN` and :class:`~hogn.models.DissipativeHOGN`; a subclass defines
    ``energy`` and ``rayleigh``, both ``(q, p, graph) -> [G]`` without input checks).
    :meth:`field_parts` gives ``((∂H/∂p, −∂H/∂q), (∂D/∂q, ∂D/∂p))``.

    Not a Hamiltonian model: its ``H`` is not conserved along its own field (unless
    ``D`` is constant), its field is not separable and it is not a stepper.
    """

    def rayleigh(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """Learned ``D`` without input checks, ``[G]``."""
        raise NotImplementedError

    def dissipation(self, graph: GraphLike) -> Tensor:
        """Learned dissipation function ``D`` of each graph at its state, ``[G]``."""
        g = as_graph(graph)
        self.check_state(g.q, g.p, g)
        return self.rayleigh(g.q, g.p, g)

    def linear_friction(self, graph: GraphLike) -> tuple[float, Tensor]:
        """The linear friction the learned ``D`` stands for at the graph's states.

        Least-squares fit ``∂D/∂p ≈ −γ p + a`` over every node and momentum
        component of ``graph`` (a batch of states spread over the region of
        interest), with one intercept per component (``a``: the gauge ``D + a·p``
        that the data cannot fix, see the module docstring). For friction ``−γ p``
        and ``D`` of the momenta (``dissipation_inputs="momenta"``) this recovers
        ``γ``; a conservative system gives ``γ ≈ 0``. With ``D(q, p)`` a harmonic
        part may move between ``H`` and ``D``, so the fit need not be ``γ`` there.

        Args:
            graph: States to fit over (their count sets the fit's quality).

        Returns:
            ``(γ, a [d])``, computed in float64.
        """
        _, (_, d_p) = self.field_parts(graph, create_graph=False)
        p = as_graph(graph).p.detach().double()
        n, d = p.shape
        design = torch.cat([-p.reshape(-1, 1),
                            torch.eye(d, dtype=torch.float64, device=p.device).repeat(n, 1)], 1)
        fit = torch.linalg.lstsq(design, d_p.detach().double().reshape(-1, 1)).solution[:, 0]
        return float(fit[0]), fit[1:]

    # ----------------------------------------------------------------- dynamics
    def _parts(self, q: Tensor, p: Tensor, graph: GraphBatch, create_graph: bool | None
               ) -> tuple[Pair, Pair]:
        (dh_dq, dh_dp), (dd_dq, dd_dp) = state_gradients(
            (self.energy, self.rayleigh), q, p, graph, self._create_graph(q, p, create_graph))
        return (dh_dp, -dh_dq), (dd_dq, dd_dp)


def check_dissipation_inputs(model: str, value: str) -> None:
    """Raise ``ValueError`` unless ``value`` is one of :data:`DISSIPATION_INPUTS`."""
    if value not in DISSIPATION_INPUTS:
        raise ValueError(f"{model}: dissipation_inputs must be one of "
                         f"{', '.join(map(repr, DISSIPATION_INPUTS))}, got {value!r}")


@register
class DHNN(_FlatState, DissipativeModel):
    """Dissipative Hamiltonian network: MLPs ``H`` (``net``) and ``D``
    (``dissipation_net``) of the flattened state ``[q, p, c]``, and the field
    ``dq = ∂H/∂p + ∂D/∂q``, ``dp = −∂H/∂q + ∂D/∂p`` by autograd (Sosanya & Greydanus
    2022; see the module docstring for the sign of ``D``: friction ``−γ p`` is
    ``D = −γ|p|²/2``).

    It is not a Hamiltonian model: its ``H`` is not conserved along its own field
    (unless ``D`` is constant), it is not a :class:`~hogn.models.HamiltonianModel`
    (so :mod:`hogn.models.inference` never writes out its gradient), its field is
    not separable (the splitting integrators are refused; ``rk4`` and the implicit
    methods fit) and it is not a stepper. Graphs must have exactly ``n_particles``
    nodes, as for :class:`~hogn.models.HNN`.

    Args:
        n_particles: Particles per graph ``n`` (fixed).
        dim: Coordinates per particle ``d``.
        node_constants: Node constants per particle ``k`` (inputs of both MLPs).
        hidden: Hidden width of each MLP.
        layers: Linear layers of each MLP, output included (3 = two hidden layers).
        activation: Smooth activation name.
        dissipation_inputs: What ``D`` reads besides the node constants: ``"state"``
            (``q`` and ``p``, as in the paper) or ``"momenta"`` (``p`` only, so the
            friction it learns is identifiable; see the module docstring).
    """

    name: ClassVar[str] = "dhnn"

    def __init__(self, n_particles: int = 1, dim: int = 1, node_constants: int = 1,
                 hidden: int = 200, layers: int = 3, activation: str = "tanh",
                 dissipation_inputs: str = "state") -> None:
        check_dissipation_inputs(self.name, dissipation_inputs)
        self._init_flat(False, n_particles, dim, node_constants, hidden, layers, activation)
        self._config["dissipation_inputs"] = dissipation_inputs
        self.dissipation_inputs = dissipation_inputs
        width = self.in_features
        if dissipation_inputs == "momenta":
            width -= n_particles * dim
        self.dissipation_net = _Net(width, hidden, 1, layers, activation, rows="graphs")

    # ------------------------------------------------------------ the two scalars
    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """Learned ``H`` without input checks: ``q, p [N, d]`` -> ``[G]``."""
        return self.net(self.flatten(q, p, graph))[:, 0]

    def rayleigh(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """Learned dissipation function ``D`` without input checks: ``q, p [N, d]`` ->
        ``[G]``."""
        x = (self.flatten_with_constants(p, graph) if self.dissipation_inputs == "momenta"
             else self.flatten(q, p, graph))
        return self.dissipation_net(x)[:, 0]
