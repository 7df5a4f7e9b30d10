"""hogn.ase.Calculator: ASE's energy and forces from a hogn potential, its MD equal to
hogn's own velocity Verlet, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

ase = pytest.importorskip("ase")
from ase.build import bulk  # noqa: E402
from ase.calculators.fd import calculate_numerical_forces  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402

import hogn  # noqa: E402
import hogn.models as models  # noqa: E402
from hogn.ase import Calculator, node_constants_of  # noqa: E402

CUTOFF = 4.5


def _argon(repeat: int = 2, seed: int = 0) -> ase.Atoms:
    """A jittered fcc argon cell (a = 5.26 Å), periodic, with thermal momenta."""
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(repeat)
    rng = np.random.default_rng(seed)
    atoms.positions += 0.1 * rng.standard_normal(atoms.positions.shape)
    atoms.set_momenta(0.3 * rng.standard_normal((len(atoms), 3)))
    return atoms


def _model(cutoff: float | None = CUTOFF, seed: int = 0) -> models.PotentialHOGN:
    torch.manual_seed(seed)
    return models.get("potential-hogn", dim=3, node_constants=2, hidden=16,
                      edge_energies=True, cutoff=cutoff).double()


def test_energy_and_forces_are_the_models_and_match_finite_differences():
    atoms, model = _argon(), _model()
    atoms.calc = Calculator(model)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    graph = atoms.calc.graph(atoms)
    assert graph.box is not None and graph.edge_index.shape[1] > 0
    expected = float(model.potential_energy(graph.q, graph).sum().detach())
    assert energy == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(forces, model.forces(graph).numpy(), rtol=1e-10, atol=1e-12)
    numeric = calculate_numerical_forces(atoms, eps=1e-5)
    np.testing.assert_allclose(forces, numeric, rtol=1e-5, atol=1e-8)
    assert np.abs(forces).max() > 1e-4  # the check compares something
    # forces alone (as MD asks for them) take the written-out field: the same forces
    atoms.calc.reset()
    atoms.calc.calculate(atoms, ["forces"])
    assert "energy" not in atoms.calc.results
    np.testing.assert_allclose(atoms.calc.results["forces"], forces, rtol=1e-10, atol=1e-12)
    other = atoms.copy()
    other.numbers[:] = 36  # krypton: other node constants, the same positions
    other.set_masses(atoms.get_masses())
    atoms.calc.calculate(other, ["forces"])
    reference = Calculator(model)
    reference.calculate(other, ["energy", "forces"])
    np.testing.assert_allclose(atoms.calc.results["forces"], reference.results["forces"],
                               rtol=1e-10, atol=1e-12)


def test_a_model_without_own_fast_path_is_differentiated_by_autograd():
    """separable-hogn has a potential but no potential_and_forces: autograd gives the
    forces, still equal to finite differences (open boundaries, every pair)."""
    torch.manual_seed(0)
    model = models.get("separable-hogn", dim=3, node_constants=2, hidden=16).double()
    atoms = _argon(repeat=1)
    atoms.pbc = False
    atoms.calc = Calculator(model)
    forces = atoms.get_forces()
    assert atoms.calc.graph(atoms).edge_index.shape[1] == len(atoms) * (len(atoms) - 1)
    numeric = calculate_numerical_forces(atoms, eps=1e-5)
    np.testing.assert_allclose(forces, numeric, rtol=1e-5, atol=1e-8)


def test_ase_velocity_verlet_equals_hogn_rollout_and_keeps_the_energy():
    atoms, model = _argon(), _model()
    atoms.calc = Calculator(model)
    dt, steps = 0.05, 40  # ASE time units, as the model's data would be
    graph = atoms.calc.graph(atoms).replace(
        p=torch.as_tensor(atoms.get_momenta(), dtype=torch.float64))
    q_ref, p_ref = hogn.rollout(model, graph, steps=steps, dt=dt, integrator="leapfrog")
    energies = []
    md = VelocityVerlet(atoms, timestep=dt)
    for _ in range(steps):
        md.run(1)
        energies.append(atoms.get_total_energy())
    np.testing.assert_allclose(atoms.get_positions(), q_ref[-1].numpy(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(atoms.get_momenta(), p_ref[-1].numpy(), rtol=0, atol=1e-9)
    excursion = np.ptp(energies) / len(atoms)
    kinetic = atoms.get_kinetic_energy() / len(atoms)
    assert excursion < 1e-3 * kinetic


def test_node_constants_follow_the_import_layout():
    from hogn.ase import NODE_CONSTANTS as OURS
    from systems.ase_data import NODE_CONSTANTS

    assert tuple(NODE_CONSTANTS) == OURS
    atoms = _argon(repeat=1)
    c = node_constants_of(atoms)
    np.testing.assert_allclose(c[:, 0], atoms.get_masses())
    assert (c[:, 1] == 18).all()
    with pytest.raises(ValueError, match="needs node_constants="):
        node_constants_of(atoms, 3)


def test_refusals_name_what_is_wrong():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="potential energy"):
        Calculator(models.get("hogn", dim=3, node_constants=2, hidden=8).double())
    with pytest.raises(ValueError, match="shorter than the model's own cut-off"):
        Calculator(_model(), cutoff=CUTOFF / 2)
    skewed = _argon()
    skewed.set_cell(skewed.cell[:] + np.array([[0, 0, 0], [1.0, 0, 0], [0, 0, 0]]))
    skewed.calc = Calculator(_model())
    with pytest.raises(ValueError, match="orthorhombic cell"):
        skewed.get_forces()
    periodic = _argon()
    periodic.calc = Calculator(_model(cutoff=None))
    with pytest.raises(ValueError, match="needs a cut-off"):
        periodic.get_forces()
    wrong = _argon()
    wrong.calc = Calculator(_model(), node_constants=lambda a: a.get_masses()[:, None])
    with pytest.raises(ValueError, match=r"expects 2 node constant\(s\)"):
        wrong.get_forces()


def test_a_cell_smaller_than_twice_the_cutoff_is_its_own_supercell():
    """4 atoms in a 5.26 Å cell with a 4.5 Å cut-off: every atom meets several images of
    each neighbour. The calculator's energy and forces equal those of the same crystal
    built 2 × 2 × 2 larger by ASE (per cell), and finite differences."""
    small, model = _argon(repeat=1), _model()
    small.calc = Calculator(model)
    energy, forces = small.get_potential_energy(), small.get_forces()
    large = small.repeat(2)
    large.calc = Calculator(model)
    assert energy == pytest.approx(large.get_potential_energy() / 8, rel=1e-10)
    np.testing.assert_allclose(forces, large.get_forces()[:4], rtol=1e-9, atol=1e-11)
    numeric = calculate_numerical_forces(small, eps=1e-5)
    np.testing.assert_allclose(forces, numeric, rtol=1e-5, atol=1e-8)
    assert small.calc.graph(small).num_nodes == 4 * 8  # 5.26 × 2 ≥ 2 × (4.5 + 0.45)
    # a cell of at least twice the cut-off is never repeated (a thinner skin instead)
    fits = _argon(repeat=2)  # 10.52 Å ≥ 2 × 4.5 Å, < 2 × (4.5 + 0.45) Å
    fits.calc = Calculator(model)
    assert fits.calc.graph(fits).num_nodes == len(fits) == 32
