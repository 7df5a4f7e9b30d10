"""Periodic images in small cells: hogn.periodic's pairs equal ASE's neighbor_list, and
a supercell's minimum-image graph holds exactly those pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hogn.graph import radius_graph
from hogn.periodic import fitting_skin, image_pairs, replicas_for, supercell

ase = pytest.importorskip("ase")
from ase.build import bulk  # noqa: E402
from ase.neighborlist import neighbor_list  # noqa: E402


def _cells():
    """Small orthorhombic cells: fcc copper (4 atoms, 3.61 Å), a stretched 2-atom cell,
    and argon (4 atoms, 5.26 Å), jittered and partly outside the cell."""
    rng = np.random.default_rng(0)
    copper = bulk("Cu", "fcc", a=3.61, cubic=True)
    stretched = ase.Atoms("Cu2", positions=[[0, 0, 0], [1.2, 1.5, 1.9]],
                          cell=[2.5, 3.1, 4.7], pbc=True)
    argon = bulk("Ar", "fcc", a=5.26, cubic=True)
    cells = []
    for atoms in (copper, stretched, argon):
        atoms = atoms.copy()
        atoms.positions += 0.2 * rng.standard_normal(atoms.positions.shape)
        atoms.positions[0] += atoms.cell[0]  # an unwrapped position
        cells.append(atoms)
    return cells


@pytest.mark.parametrize("cutoff", [2.6, 5.0, 7.3])
def test_image_pairs_equal_ase_neighbor_list(cutoff):
    found = 0
    for atoms in _cells():
        i, j, s = image_pairs(torch.tensor(atoms.positions), torch.tensor(np.diag(atoms.cell)),
                              cutoff)
        ai, aj, a_s = neighbor_list("ijS", atoms, cutoff)
        ours = sorted(zip(i.tolist(), j.tolist(), map(tuple, s.tolist()), strict=True))
        theirs = sorted(zip(ai.tolist(), aj.tolist(), map(tuple, a_s.tolist()), strict=True))
        assert ours == theirs
        found += len(ours)
    assert found > 0


def test_a_supercell_graph_holds_exactly_the_image_pairs():
    cutoff = 5.0
    for atoms in _cells():
        q, box = torch.tensor(atoms.positions), torch.tensor(np.diag(atoms.cell))
        n = q.shape[0]
        reps = replicas_for(box, 2 * cutoff)
        q_big, box_big, _ = supercell(q, box, reps)
        assert bool((box_big >= 2 * cutoff).all()) and torch.equal(q_big[:n], q)
        edges = radius_graph(q_big, torch.tensor([0, q_big.shape[0]]), cutoff, box=box_big)
        send, recv = edges
        mine = send < n  # pairs seen from the cell's own atoms
        a, b = send[mine], recv[mine]
        rel = q_big[b] - q_big[a]
        rel = rel - box_big * torch.round(rel / box_big)  # the minimum image in the supercell
        j = b % n
        s = torch.round((rel - (q[j] - q[a])) / box).long()
        ours = sorted(zip(a.tolist(), j.tolist(), map(tuple, s.tolist()), strict=True))
        i2, j2, s2 = image_pairs(q, box, cutoff)
        assert ours == sorted(zip(i2.tolist(), j2.tolist(), map(tuple, s2.tolist()),
                                  strict=True))


def test_bad_inputs_are_refused():
    q = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="box must hold 3 positive finite lengths"):
        image_pairs(q, [1.0, -1.0, 1.0], 1.0)
    with pytest.raises(ValueError, match="cutoff must be a finite length"):
        image_pairs(q, [1.0, 1.0, 1.0], float("nan"))
    with pytest.raises(ValueError, match="reps must be 3 positive ints"):
        supercell(q, [1.0, 1.0, 1.0], [1, 0, 1])
    assert replicas_for([2.0, 5.0, 11.0], 10.0) == (5, 2, 1)


def test_the_skin_fits_the_box_or_says_a_supercell_is_needed():
    assert fitting_skin(None, 5.0) == pytest.approx(0.5)  # a tenth of the radius
    assert fitting_skin([20.0, 30.0, 40.0], 5.0, 1.0) == 1.0  # room enough
    assert fitting_skin(torch.tensor([[10.6, 12.0, 12.0]]), 5.0) == pytest.approx(0.3)
    assert fitting_skin([10.0, 12.0, 12.0], 5.0) == 0.0  # exactly twice the radius
    assert fitting_skin([9.9, 12.0, 12.0], 5.0) is None
