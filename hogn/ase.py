"""A trained potential as an ASE calculator: ASE's MD, optimisers and analysis on hogn.

ASE (the Atomic Simulation Environment) is an optional dependency
(``pip install hogn[ase]``); this module imports it, the rest of hogn never does.

>>> from hogn.ase import Calculator                         # doctest: +SKIP
>>> atoms.calc = Calculator(hogn.models.load("runs/argon/best.pt"))  # doctest: +SKIP
>>> atoms.get_potential_energy(), atoms.get_forces()        # doctest: +SKIP

The model must have a potential energy ``V(q)`` (``potential-hogn``, or
``separable-hogn``): ASE adds the kinetic energy itself, and its integrators need
forces ``−∂V/∂q`` that do not depend on the momenta. Units are the model's: a model
trained on data imported from ASE (``hogn import``, :func:`systems.from_ase`) works in
ASE's own (Å, eV, amu), so energies come out in eV and forces in eV/Å.

Node constants are built from the atoms as :func:`systems.from_ase` builds them:
``[mass, atomic_number]`` (a model with one node constant gets the masses alone); pass
``node_constants=`` for another layout. Edges: the pairs closer than the cut-off (the
model's own ``cutoff`` by default), minimum image in a periodic orthorhombic cell, kept
in a Verlet list (:class:`hogn.graph.NeighbourList`) from call to call; a model
without a cut-off on open boundaries gets every pair. A cell smaller than twice the
cut-off is computed as a supercell of itself
(:mod:`hogn.periodic`): exact for a periodic system, at the cost of the replicas.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator as _AseCalculator
from ase.calculators.calculator import all_changes

from hogn.graph import GraphBatch, NeighbourList, fully_connected, ptr_from_sizes
from hogn.models.base import DynamicsModel
from hogn.periodic import fitting_skin, replicas_for, supercell

__all__ = ["NODE_CONSTANTS", "Calculator", "node_constants_of"]

#: The node-constant columns of atoms, as :func:`systems.from_ase` writes them.
NODE_CONSTANTS: tuple[str, ...] = ("mass", "atomic_number")


def node_constants_of(atoms: Atoms, k: int = 2) -> np.ndarray:
    """``[N, k]`` node constants of ``atoms``: the first ``k`` of ``[mass,
    atomic_number]``.

    Raises:
        ValueError: for ``k`` outside 1–2.
    """
    if k not in (1, 2):
        raise ValueError(f"atoms give {len(NODE_CONSTANTS)} node constants {NODE_CONSTANTS}; "
                         f"a model with {k} needs node_constants= (a function of the atoms "
                         f"returning [N, {k}])")
    columns = [atoms.get_masses(), atoms.get_atomic_numbers().astype(np.float64)]
    return np.stack(columns[:k], axis=1)


def _periodic_box(atoms: Atoms) -> np.ndarray | None:
    """The orthorhombic box lengths ``[3]`` of a cell periodic in all directions, or
    ``None`` for open boundaries.

    Raises:
        ValueError: for mixed periodicity or a skewed cell.
    """
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if not pbc.any():
        return None
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    lengths = np.diag(cell)
    if not pbc.all() or not np.allclose(cell, np.diag(lengths), rtol=0,
                                        atol=1e-12 * max(1.0, float(np.abs(cell).max()))):
        raise ValueError(f"hogn.ase.Calculator handles open boundaries or an orthorhombic cell "
                         f"periodic in all three directions; got pbc={pbc.tolist()} and cell "
                         f"{np.round(cell, 6).tolist()}")
    return lengths


class Calculator(_AseCalculator):
    """ASE calculator of a hogn potential: ``energy`` (= ``free_energy``) and
    ``forces``.

    Args:
        model: A trained model with ``potential_energy(q, graph)`` (``potential-hogn``,
            ``separable-hogn``); its dtype and device are used.
        cutoff: Pairs closer than this are edges (default: the model's ``cutoff``;
            ``None`` with no model cut-off: every pair, open boundaries only).
        skin: Verlet-list margin (default ``0.1 · cutoff``, shrunk to fit a small box).
        node_constants: ``atoms -> [N, k]`` array (default :func:`node_constants_of`).
        **kwargs: Passed to :class:`ase.calculators.calculator.Calculator`.

    Raises:
        ValueError: for a model without a potential, a cut-off beyond the model's, or
            (on calculation) a skewed or partly periodic cell, or node constants that
            do not fit the model.
    """

    implemented_properties: ClassVar[list[str]] = ["energy", "free_energy", "forces"]

    def __init__(self, model: DynamicsModel, cutoff: float | None = None,
                 skin: float | None = None,
                 node_constants: Callable[[Atoms], Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not callable(getattr(model, "potential_energy", None)) or model.dim != 3:
            raise ValueError(f"hogn.ase.Calculator needs a 3-D model with a potential energy "
                             f"V(q) (potential-hogn or separable-hogn), got {model.name} with "
                             f"dim={model.dim}")
        own = model.config().get("cutoff")
        if cutoff is None:
            cutoff = own
        elif own is not None and cutoff < own:
            raise ValueError(f"cutoff={cutoff:g} is shorter than the model's own cut-off "
                             f"{own:g}: the model reads pairs up to {own:g}")
        if cutoff is not None and not (np.isfinite(cutoff) and cutoff > 0):
            raise ValueError(f"cutoff must be a positive finite length, got {cutoff!r}")
        if skin is not None and not (np.isfinite(skin) and skin >= 0):
            raise ValueError(f"skin must be a finite length >= 0, got {skin!r}")
        self.model = model.eval()
        self.cutoff = cutoff
        self.skin = skin
        self.node_constants = node_constants
        self._neighbours: NeighbourList | None = None
        self._box: np.ndarray | None = None
        self._reps: tuple[int, ...] = ()
        # MD's forces-only calls: (layout key, node constants, force function)
        self._force: tuple[Any, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]] | None = None

    # ---------------------------------------------------------------- graph
    def _constants(self, atoms: Atoms) -> np.ndarray:
        k = self.model.node_constants
        c = (node_constants_of(atoms, k) if self.node_constants is None
             else np.asarray(self.node_constants(atoms), dtype=np.float64))
        if c.shape != (len(atoms), k):
            raise ValueError(f"{self.model.name} expects {k} node constant(s) per atom "
                             f"([{len(atoms)}, {k}]), got {list(c.shape)}")
        return c

    def _layout(self, atoms: Atoms) -> tuple[np.ndarray | None, tuple[int, ...]]:
        """The periodic box (or ``None``) and the replicas per direction the atoms are
        computed in (all 1 unless the cell is smaller than twice the cut-off; a cell
        that is not, but smaller than ``2 · (cutoff + skin)``, gets a thinner skin);
        rebuilds the neighbour list when either changed."""
        box = _periodic_box(atoms)
        if self.cutoff is None:
            if box is not None:
                raise ValueError(f"a periodic cell needs a cut-off: {self.model.name} has none; "
                                 "pass Calculator(model, cutoff=...)")
            return None, ()
        skin = fitting_skin(None if box is None else box.tolist(), self.cutoff, self.skin)
        reps: tuple[int, ...] = ()
        if box is not None:
            if skin is not None:  # the minimum image holds (a thinner skin if need be)
                reps = (1,) * len(box)
            else:  # a pair meets several images: a supercell of the cell
                skin = 0.1 * self.cutoff if self.skin is None else self.skin
                reps = replicas_for(box.tolist(), 2 * (self.cutoff + skin))
        if (self._neighbours is None or (box is None) != (self._box is None)
                or (box is not None and not np.array_equal(box, self._box))
                or reps != self._reps):
            big = None if box is None else torch.tensor(box * np.asarray(reps))[None]
            self._neighbours = NeighbourList(self.cutoff, skin, box=big)
            self._box, self._reps = box, reps
        return box, reps

    def graph(self, atoms: Atoms) -> GraphBatch:
        """The model's graph of ``atoms`` (zero momenta; positions as held).

        A periodic cell smaller than twice the cut-off in some direction is repeated
        until it is at least ``2 · (cutoff + skin)`` (:func:`hogn.periodic.supercell`):
        the graph then holds ``K`` replicas of the atoms, the atoms themselves first.
        """
        dtype, device = self.model.param_dtype, self.model.param_device
        q = torch.as_tensor(atoms.get_positions(), dtype=dtype, device=device)
        c = torch.as_tensor(self._constants(atoms), dtype=dtype, device=device)
        box, reps = self._layout(atoms)
        if box is None and self.cutoff is None:
            ptr = ptr_from_sizes([len(atoms)], device=device)
            return GraphBatch(q, torch.zeros_like(q), c, fully_connected([len(atoms)]).to(device),
                              ptr)
        big = None
        if box is not None:
            lengths = torch.tensor(box, dtype=dtype, device=device)
            if any(r > 1 for r in reps):
                q, lengths, shifts = supercell(q, lengths, reps)
                c = c.repeat(shifts.shape[0], 1)
            big = lengths[None]
        ptr = ptr_from_sizes([q.shape[0]], device=device)
        assert self._neighbours is not None
        edges = self._neighbours.update(q, ptr)
        return GraphBatch(q, torch.zeros_like(q), c, edges, ptr, box=big)

    # ---------------------------------------------------------- calculation
    def calculate(self, atoms: Atoms | None = None,
                  properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = tuple(all_changes)) -> None:
        super().calculate(atoms, list(properties), list(system_changes))
        graph = self.graph(self.atoms)
        self.model.check_state(graph.q, graph.p, graph)
        both = getattr(self.model, "potential_and_forces", None)
        field = getattr(self.model, "force_field", None)
        if "energy" not in properties and "free_energy" not in properties and callable(field):
            # MD asks for forces alone: the written-out gradient, kept while the list is
            # a new layout makes a new neighbour list: the list and its builds are the key
            key = (id(self._neighbours), getattr(self._neighbours, "rebuilds", -1))
            if (self._force is None or self._force[0] != key
                    or not torch.equal(self._force[1], graph.c)):
                self._force = (key, graph.c, field(graph))
            forces = self._force[2](graph.q)
            self.results["forces"] = forces[:len(self.atoms)].to(torch.float64).cpu().numpy()
            return
        if callable(both):
            energy, forces = both(graph)
        else:
            q = graph.q.detach().requires_grad_(True)
            with torch.enable_grad():
                energy = self.model.potential_energy(q, graph)
                (grad,) = torch.autograd.grad(energy.sum(), q)
            energy, forces = energy.detach(), -grad
        n = len(self.atoms)
        replicas = graph.num_nodes // max(1, n)  # a small cell: its supercell's share
        value = float(energy.sum()) / replicas
        self.results["energy"] = value
        self.results["free_energy"] = value
        self.results["forces"] = forces[:n].to(torch.float64).cpu().numpy()
