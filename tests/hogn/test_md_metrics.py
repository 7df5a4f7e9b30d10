"""Molecular-dynamics metrics against ASE, numpy and the physics of known structures."""

import math

import numpy as np
import pytest
import torch

from hogn import metrics


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- forces
def test_force_metrics_equal_a_numpy_computation():
    gen = _gen(0)
    true = torch.randn(4, 7, 3, generator=gen, dtype=torch.float64)
    pred = true + 0.1 * torch.randn(4, 7, 3, generator=gen, dtype=torch.float64)
    a, b = pred.numpy(), true.numpy()
    rmse = np.sqrt(np.mean((a - b) ** 2))
    rel = np.sqrt(np.sum((a - b) ** 2)) / np.sqrt(np.sum(b**2))
    assert metrics.force_rmse(pred, true).item() == pytest.approx(rmse, rel=1e-12)
    assert metrics.force_relative_error(pred, true).item() == pytest.approx(rel, rel=1e-12)
    # relative RMSE: the RMSE over the reference's RMS
    assert rel == pytest.approx(rmse / np.sqrt(np.mean(b**2)), rel=1e-12)
    # limits: exact -> 0; predicting zero -> 1; a single frame [N, 3] works alike
    assert metrics.force_rmse(true, true).item() == 0
    assert metrics.force_relative_error(torch.zeros_like(true), true).item() == pytest.approx(1)
    assert metrics.force_rmse(pred[0], true[0]).item() == pytest.approx(
        np.sqrt(np.mean((a[0] - b[0]) ** 2)), rel=1e-12)


def test_force_metrics_bad_input():
    f = torch.ones(5, 3)
    with pytest.raises(ValueError, match="same shape"):
        metrics.force_rmse(f, torch.ones(4, 3))
    with pytest.raises(ValueError, match=r"pred must be floating-point forces \[\.\.\., N, d\]"):
        metrics.force_rmse(torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match="true must be floating-point"):
        metrics.force_relative_error(f, torch.ones(5, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        metrics.force_rmse(torch.ones(0, 3), torch.ones(0, 3))
    with pytest.raises(ValueError, match="all zero"):
        metrics.force_relative_error(f, torch.zeros(5, 3))


# ---------------------------------------------------------------- positions
def test_minimum_image_rmsd_ignores_box_vectors_and_equals_plain_rmsd_nearby():
    gen = _gen(1)
    box = torch.tensor([5.0, 6.0, 7.0], dtype=torch.float64)
    q = torch.rand(3, 20, 3, generator=gen, dtype=torch.float64) * box
    # shifted by box vectors (different ones per atom and frame): not displaced
    shifts = torch.randint(-2, 3, (3, 20, 3), generator=gen).to(q) * box
    assert torch.allclose(metrics.minimum_image_rmsd(q + shifts, q, box),
                          torch.zeros(3, dtype=torch.float64), atol=1e-12)
    # without the box the shift is seen in full
    assert bool((metrics.minimum_image_rmsd(q + shifts, q) > 1).all())
    # small displacements: the plain RMSD, with or without the box, per frame
    dq = 0.1 * torch.randn(3, 20, 3, generator=gen, dtype=torch.float64)
    plain = np.sqrt(((dq.numpy()) ** 2).sum(-1).mean(-1))
    got = metrics.minimum_image_rmsd(q + dq, q, box)
    assert got.shape == (3,)
    assert np.allclose(got.numpy(), plain, rtol=1e-12)
    assert np.allclose(metrics.minimum_image_rmsd(q + dq + shifts, q, box).numpy(), plain,
                       rtol=1e-10)
    # one box per frame [T, d]: the third frame's box makes its shift a box vector
    boxes = torch.stack([box, box, 2 * box])
    shifted = q.clone()
    shifted[2] += 2 * box
    assert torch.allclose(metrics.minimum_image_rmsd(shifted, q, boxes),
                          torch.zeros(3, dtype=torch.float64), atol=1e-12)
    # a displacement of 0.6 L wraps to 0.4 L
    one = torch.zeros(1, 3, dtype=torch.float64)
    moved = one + torch.tensor([[3.0, 0.0, 0.0]], dtype=torch.float64)
    assert metrics.minimum_image_rmsd(moved, one, box).item() == pytest.approx(2.0)


def test_minimum_image_rmsd_bad_input():
    q = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match="same shape"):
        metrics.minimum_image_rmsd(q, torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="q_pred must be floating-point positions"):
        metrics.minimum_image_rmsd(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"box must be orthorhombic lengths \[d\] = \[3\]"):
        metrics.minimum_image_rmsd(q, q, torch.ones(2))
    with pytest.raises(ValueError, match="broadcastable to the leading dims"):
        metrics.minimum_image_rmsd(q, q, torch.ones(5, 3))
    with pytest.raises(ValueError, match="finite and > 0"):
        metrics.minimum_image_rmsd(q, q, torch.tensor([1.0, 0.0, 1.0]))


# ---------------------------------------------------------------- temperature
def test_temperature_equals_ase():
    ase = pytest.importorskip("ase")
    from ase import units

    rng = np.random.default_rng(2)
    n = 17
    masses = rng.uniform(1.0, 200.0, n)
    momenta = rng.normal(0.0, 3.0, (n, 3))
    atoms = ase.Atoms("H" * n, positions=rng.uniform(0, 5, (n, 3)), momenta=momenta,
                      masses=masses)
    expected = atoms.get_temperature()
    p, m = torch.as_tensor(momenta), torch.as_tensor(masses)
    got = metrics.temperature(p, m, boltzmann=units.kB)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # the default k_B (CODATA 2018) differs from ASE's (CODATA 2014) by 3.4e-7
    assert metrics.temperature(p, m).item() == pytest.approx(expected, rel=1e-6)
    # frames [T, N, 3]: one temperature each; dof rescales it
    frames = torch.stack([p, 2 * p])
    both = metrics.temperature(frames, m, boltzmann=units.kB)
    assert torch.allclose(both, torch.tensor([expected, 4 * expected], dtype=torch.float64),
                          rtol=1e-12)
    fewer = metrics.temperature(p, m, dof=3 * (n - 1), boltzmann=units.kB)
    assert fewer.item() == pytest.approx(expected * n / (n - 1), rel=1e-12)


def test_temperature_of_a_maxwell_boltzmann_sample():
    # momenta drawn at 300 K: the estimate is 300 K within its sampling noise
    gen = _gen(3)
    n, target, kb = 20000, 300.0, metrics.BOLTZMANN_EV_PER_K
    masses = torch.rand(n, generator=gen, dtype=torch.float64) * 50 + 1
    sd = (masses * kb * target).sqrt()[:, None]  # p ~ N(0, m k_B T) per component
    p = torch.randn(n, 3, generator=gen, dtype=torch.float64) * sd
    t = metrics.temperature(p, masses).item()
    assert abs(t - target) < 5 * target * math.sqrt(2 / (3 * n))


def test_temperature_bad_input():
    p = torch.ones(4, 3)
    with pytest.raises(ValueError, match=r"p must be floating-point momenta"):
        metrics.temperature(torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match=r"masses must be \[N\] = \[4\]"):
        metrics.temperature(p, torch.ones(3))
    with pytest.raises(ValueError, match="masses must be finite and > 0"):
        metrics.temperature(p, torch.tensor([1.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="dof must be a positive finite number"):
        metrics.temperature(p, torch.ones(4), dof=0)
    with pytest.raises(ValueError, match="boltzmann must be a positive finite number"):
        metrics.temperature(p, torch.ones(4), boltzmann=-1.0)


# ---------------------------------------------------------------- g(r)
def test_radial_distribution_of_uniform_points_is_one():
    gen = _gen(4)
    box = torch.tensor([10.0, 11.0, 12.0], dtype=torch.float64)
    q = torch.rand(4, 400, 3, generator=gen, dtype=torch.float64) * box
    r, g = metrics.radial_distribution(q, None, box, 5.0, bins=20)
    assert r.shape == g.shape == (20,)
    assert torch.allclose(r, torch.linspace(0.125, 4.875, 20, dtype=torch.float64))
    # counting noise: shell k holds ~4 * 400 * 399 * shell / V pairs / 2 (unordered)
    ideal_pairs = 4 * 400 * 399 / box.prod() * 4 * math.pi / 3 * (
        torch.linspace(0.25, 5.0, 20) ** 3 - torch.linspace(0.0, 4.75, 20) ** 3).double()
    sigma = (2 / ideal_pairs).sqrt()
    assert bool(((g - 1).abs() < 5 * sigma + 1e-3)[3:].all())
    assert (g[8:] - 1).abs().max() < 0.05


def _fcc():
    ase = pytest.importorskip("ase")
    from ase.build import bulk

    del ase
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(3)
    return atoms, torch.as_tensor(atoms.positions), torch.as_tensor(atoms.cell.lengths())


def test_radial_distribution_of_fcc_copper_peaks_at_a_over_root_2_with_12_neighbours():
    atoms, q, box = _fcc()
    a, n = 3.6, len(atoms)
    r, g = metrics.radial_distribution(q, None, box, 5.0, bins=40)  # shells of 0.125
    dr = 0.125
    peak = float(r[g.argmax()])
    assert abs(peak - a / math.sqrt(2)) <= dr / 2
    assert g[r < 2.4].abs().max() == 0  # nothing closer than the nearest neighbours
    # integrate 4 pi r^2 rho g(r) dr up to the first minimum after the peak
    first = int(g.argmax())
    minimum = first + int(torch.nonzero(g[first:] == g[first:].min())[0])
    rho = (n - 1) / float(box.prod())  # the density g is normalised by
    coordination = float((4 * math.pi * r**2 * rho * g * dr)[: minimum + 1].sum())
    assert coordination == pytest.approx(12, abs=0.02)
    # the second shell: 6 neighbours at a
    second = minimum + int(torch.nonzero(g[minimum:] > 0)[0])
    assert abs(float(r[second]) - a) <= dr / 2
    shell2 = float((4 * math.pi * r**2 * rho * g * dr)[second: second + 2].sum())
    assert shell2 == pytest.approx(6, abs=0.02)


def test_radial_distribution_equals_ase_get_rdf():
    pytest.importorskip("ase")
    from ase.geometry.rdf import get_rdf

    atoms, q, box = _fcc()
    gen = _gen(5)
    frames = q + 0.15 * torch.randn(3, *q.shape, generator=gen, dtype=torch.float64)
    images = []
    for x in frames:
        image = atoms.copy()
        image.positions = x.numpy()
        images.append(image)
    n = len(atoms)
    g_ase, r_ase = get_rdf(images, 5.0, 40)
    r, g = metrics.radial_distribution(frames, None, box, 5.0, bins=40)
    assert np.allclose(r.numpy(), r_ase, rtol=1e-12)
    # ASE divides by n^2 / V, not n (n - 1) / V
    assert np.allclose(g.numpy() * (n - 1) / n, g_ase, rtol=1e-10, atol=1e-12)


def test_radial_distribution_chunks_frames_for_thousands_of_atoms():
    # 4000 atoms: an N x N distance matrix per frame would be 128 MB in float64
    gen = _gen(6)
    box = torch.full((3,), 30.0, dtype=torch.float64)
    q = torch.rand(2, 4000, 3, generator=gen, dtype=torch.float64) * box
    _, g = metrics.radial_distribution(q, None, box, 4.0, bins=8)
    assert (g[2:] - 1).abs().max() < 0.05


def test_radial_distribution_bad_input():
    q, box = torch.zeros(5, 3), torch.full((3,), 6.0)
    too_far = r"r_max = 3.6 exceeds half the smallest box length \(3.5\)"
    with pytest.raises(ValueError, match=too_far):
        metrics.radial_distribution(q, None, torch.tensor([8.0, 7.0, 9.0]), 3.6)
    with pytest.raises(ValueError, match="exceeds half the smallest box length"):
        metrics.radial_distribution(q, None, box, 3.01)
    with pytest.raises(ValueError, match=r"box must hold orthorhombic lengths \[d\] = \[3\]"):
        metrics.radial_distribution(q, None, torch.ones(2), 0.4)
    with pytest.raises(ValueError, match="box lengths must be finite and > 0"):
        metrics.radial_distribution(q, None, torch.tensor([6.0, -1.0, 6.0]), 1.0)
    with pytest.raises(ValueError, match=r"positions \[N, d\] or \[T, N, d\]"):
        metrics.radial_distribution(torch.zeros(2, 2, 5, 3), None, box, 1.0)
    with pytest.raises(ValueError, match="d = 2 or 3"):
        metrics.radial_distribution(torch.zeros(5, 4), None, torch.ones(4), 0.4)
    with pytest.raises(ValueError, match="r_max must be a positive finite number"):
        metrics.radial_distribution(q, None, box, 0.0)
    with pytest.raises(ValueError, match="bins must be a positive int"):
        metrics.radial_distribution(q, None, box, 1.0, bins=2.5)


# ---------------------------------------------------------------- energy
def test_energy_excursion_per_atom_of_known_series():
    e = torch.tensor([1.0, 1.5, 0.2, 1.1], dtype=torch.float64)
    assert metrics.energy_excursion_per_atom(e, 4).item() == pytest.approx(0.8 / 4)
    # [T, G] (time first, as energy(q, p)): one value per system, its own atom count
    series = torch.stack([e, -2 * e, torch.full_like(e, 3.0)], -1)
    got = metrics.energy_excursion_per_atom(series, torch.tensor([4, 2, 7]))
    assert torch.allclose(got, torch.tensor([0.2, 0.8, 0.0], dtype=torch.float64))
    assert torch.allclose(metrics.energy_excursion_per_atom(series, 2),
                          torch.tensor([0.4, 0.8, 0.0], dtype=torch.float64))


def test_energy_excursion_bad_input():
    e = torch.zeros(5, 3)
    with pytest.raises(ValueError, match=r"energies must be a floating-point series \[T\]"):
        metrics.energy_excursion_per_atom(torch.zeros(2, 2, 2), 3)
    with pytest.raises(ValueError, match="T >= 1"):
        metrics.energy_excursion_per_atom(torch.zeros(0), 3)
    with pytest.raises(ValueError, match=r"n_atoms must be a number or \[G\] = \[3\]"):
        metrics.energy_excursion_per_atom(e, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="n_atoms must be > 0"):
        metrics.energy_excursion_per_atom(e, 0)
    with pytest.raises(ValueError, match="n_atoms must be an int > 0 or a tensor"):
        metrics.energy_excursion_per_atom(e, "8")
