"""Learned dynamics models behind one interface, in a registry.

>>> import hogn.models
>>> model = hogn.models.get("hogn", dim=2, node_constants=1, hidden=64)
>>> dq, dp = model.time_derivative(graph)            # doctest: +SKIP
>>> H = model.hamiltonian(graph)                      # [num_graphs]  # doctest: +SKIP
>>> model.save("model.pt"); model = hogn.models.load("model.pt")  # doctest: +SKIP

Registered models (:func:`names`): ``hogn``, ``separable-hogn`` (Hamiltonian graph
networks), ``ogn`` (derivatives directly), ``deltagn`` (a stepper over a fixed
``dt``), ``hnn`` (Hamiltonian MLP over a fixed-size state), ``dhnn`` (dissipative
Hamiltonian MLPs ``H`` and ``D``), ``dissipative-hogn`` (a HOGN's ``H`` plus a
graph-network dissipation ``D``), ``pixel-hnn`` (the HNN paper's pixel model: an
autoencoder whose 2-D latent follows a learned ``H``), ``symoden`` (SymODEN:
``H = ½ pᵀ M⁻¹(q) p + V(q)`` of ``(cos q, sin q)`` plus a control term ``g(q) u``),
``chnn`` (a constrained HNN: a Cartesian ``H`` whose field is projected onto holonomic
constraints read from the graph), ``ghnn`` (a generalized Hamiltonian network
``dx = (P + Q) ∇H``: ``P`` skew, ``Q`` negative semi-definite), ``hnn-basis`` and
``hogn-basis`` (``H = φ · w``: ``m`` learned basis functions and a linear head, which
few-shot adaptation can solve for in closed form), ``potential-hogn`` (molecular
dynamics: ``H = Σ|p|²/2m + V(q)`` with a known kinetic energy and a graph-network
potential; velocity Verlet calls it once a step) and ``mlp`` (baseline).
"""

from hogn.models.base import (
    DynamicsModel,
    HamiltonianModel,
    as_graph,
    for_data,
    get,
    load,
    names,
    register,
)
from hogn.models.basis import HNNBasis, HOGNBasis
from hogn.models.constrained import CHNN
from hogn.models.control import SymODEN
from hogn.models.dissipative import DHNN
from hogn.models.dissipative_graph import DissipativeHOGN
from hogn.models.generalized import GHNN
from hogn.models.graph_models import HOGN, OGN, DeltaGN, SeparableHOGN
from hogn.models.mlp_models import HNN, MLP
from hogn.models.pixel import PixelHNN
from hogn.models.potential import PotentialHOGN
from hogn.models.srnn import SRNN

__all__ = [
    "CHNN",
    "DHNN",
    "GHNN",
    "HNN",
    "HOGN",
    "MLP",
    "OGN",
    "SRNN",
    "DeltaGN",
    "DissipativeHOGN",
    "DynamicsModel",
    "HNNBasis",
    "HOGNBasis",
    "HamiltonianModel",
    "PixelHNN",
    "PotentialHOGN",
    "SeparableHOGN",
    "SymODEN",
    "as_graph",
    "for_data",
    "get",
    "load",
    "names",
    "register",
]
