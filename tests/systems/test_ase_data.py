"""ASE frames in: an argon (Lennard-Jones) and a copper (EMT) run of ASE's velocity
Verlet, written with ``ase.io.write`` as extended XYZ and ``.traj``, come back through
:func:`systems.from_ase` with their cell, masses, species, positions, momenta, forces
(as ``dp``), ``dq = p/m`` and times; what hogn cannot hold (mixed pbc, a skewed cell,
frames without time) is refused in one line, and ``hogn import`` / ``info`` /
``export`` take such files."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import systems
from hogn.cli import main

pytest.importorskip("ase")
import ase.io
import ase.units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.verlet import VelocityVerlet
from ase.neighborlist import neighbor_list

from systems.ase_data import NotInFrames, from_ase

DT = 5 * ase.units.fs
STEPS = 5


def _run(atoms, steps: int = STEPS, seed: int = 0) -> list:
    """Velocity Verlet frames of ``atoms`` (its calculator attached), each a copy with a
    ``SinglePointCalculator`` of its energy and forces and ``info["time"]``."""
    rng = np.random.default_rng(seed)
    atoms.set_momenta(rng.normal(scale=0.3, size=(len(atoms), 3)))
    md = VelocityVerlet(atoms, timestep=DT)
    frames = []

    def snapshot():
        frame = atoms.copy()
        frame.info["time"] = md.get_time()
        frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(),
                                           forces=atoms.get_forces())
        frames.append(frame)

    md.attach(snapshot, interval=1)
    md.run(steps)
    return frames


@pytest.fixture(scope="module")
def argon():
    """32 argon atoms, fcc, periodic cube of 10.52 Å, LJ cut at 5 Å: 6 frames 5 fs apart."""
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat((2, 2, 2))
    atoms.calc = LennardJones(sigma=3.4, epsilon=0.0104, rc=5.0, smooth=True)
    return _run(atoms)


@pytest.fixture(scope="module")
def copper():
    """32 copper atoms, fcc, periodic cube of 7.22 Å, EMT: 6 frames 5 fs apart."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    atoms.calc = EMT()
    return _run(atoms, seed=1)


@pytest.fixture(scope="module")
def files(argon, tmp_path_factory):
    root = tmp_path_factory.mktemp("ase")
    paths = {"xyz": root / "lj.xyz", "traj": root / "lj.traj"}
    for path in paths.values():
        ase.io.write(path, argon)
    return paths


def _stack(frames, get) -> torch.Tensor:
    return torch.tensor(np.array([get(a) for a in frames]), dtype=torch.float64)


@pytest.mark.parametrize(("kind", "atol"), [("traj", 0.0), ("xyz", 1e-8)])
def test_frames_come_back_from_a_file(argon, files, kind, atol):
    """``.traj`` keeps every bit; extended XYZ prints 8 decimals (the times exactly)."""
    data = systems.Dataset.from_ase(ase.io.read(files[kind], ":"), cutoff=5.0)
    assert data.t.numel() == STEPS + 1 and len(data) == 1 and data.dim == 3
    assert torch.equal(data.box, torch.full((1, 3), 10.52, dtype=torch.float64))

    def close(x, y):
        torch.testing.assert_close(x, y, rtol=0, atol=atol)

    q, p = _stack(argon, lambda a: a.positions), _stack(argon, lambda a: a.get_momenta())
    close(data.q, q)
    close(data.p, p)
    close(data.dp, _stack(argon, lambda a: a.get_forces()))
    torch.testing.assert_close(data.dq, data.p / 39.948, rtol=1e-15, atol=0)  # p / m
    close(data.dq, _stack(argon, lambda a: a.get_velocities()))
    assert torch.equal(data.c, torch.tensor([[39.948, 18.0]] * 32, dtype=torch.float64))
    assert data.meta["node_constants"] == ["mass", "atomic_number"]
    assert data.meta["species"] == ["Ar"] and data.meta["formulas"] == ["Ar32"]
    assert data.system_name == "Ar" and data.meta["source"] == "ase"
    assert torch.equal(data.t, torch.tensor([a.info["time"] for a in argon],
                                            dtype=torch.float64))
    assert data.dt == pytest.approx(DT, rel=1e-12) and data.meta["times"] == "frames"
    assert data.derivatives.startswith("given") and data.meta["units"]["length"] == "Å"
    assert data.meta["time_unit_fs"] == pytest.approx(10.1805, rel=1e-4)
    energies = data.meta["energies"]
    np.testing.assert_allclose(energies["potential"][0],
                               [a.get_potential_energy() for a in argon], rtol=1e-12)
    np.testing.assert_allclose(energies["kinetic"][0],
                               [a.get_kinetic_energy() for a in argon], rtol=1e-6)
    np.testing.assert_allclose(np.array(energies["total"][0]), np.array(
        energies["potential"][0]) + energies["kinetic"][0], rtol=1e-12)


def test_a_periodic_dataset_gets_the_neighbours_of_its_first_state(argon):
    """The edges are ASE's own neighbour list of frame 0 (minimum image), not a
    complete graph."""
    data = from_ase(argon, cutoff=4.0)
    i, j = neighbor_list("ij", argon[0], 4.0)
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == sorted(
        map(tuple, data.edge_index.T.tolist()))
    assert 0 < data.edge_index.shape[1] < 32 * 31 and data.meta["cutoff"] == 4.0
    with pytest.raises(NotInFrames, match=r"periodic \(box \[10.52, 10.52, 10.52\] Å\): "
                                          r"pass cutoff="):
        from_ase(argon)
    big = from_ase(argon, cutoff=6.0)  # 10.52 Å < 2 · 6: the 2 x 2 x 2 supercell
    assert big.meta["supercell"] == {"reps": [2, 2, 2], "cell_atoms": 32}
    assert data.meta["supercell"] is None and big.q.shape[1] == 8 * 32


@pytest.fixture(scope="module")
def copper_cell():
    """The 4-atom conventional copper cell (3.61 Å cube), EMT: 6 frames 5 fs apart."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.calc = EMT()
    return _run(atoms, seed=2)


def test_a_cell_smaller_than_twice_the_cutoff_comes_in_as_its_supercell(copper_cell, tmp_path,
                                                                       capsys):
    """4 copper atoms in a 3.61 Å cube, cut-off 5 Å (each atom meets 42 neighbours, most
    of them images of the same 3 atoms and of itself): the dataset holds the 3 x 3 x 3
    supercell, whose graph gives each atom of the cell exactly the neighbours, with
    their displacement vectors, of ASE's ``neighbor_list`` with images; every replica
    keeps its atom's forces and momenta, the energies scale by 27; ``hogn import`` and
    ``hogn train`` take it."""
    data = from_ase(copper_cell, cutoff=5.0)
    assert data.meta["supercell"] == {"reps": [3, 3, 3], "cell_atoms": 4}
    assert data.q.shape[1] == 108 and torch.allclose(data.box, torch.full((1, 3), 3 * 3.61,
                                                                          dtype=torch.float64))
    from hogn.graph import edge_vectors

    graph = data.state(0)
    vectors = edge_vectors(graph.q, graph.edge_index, box=graph.box)  # receiver - sender
    ours = sorted((i, j % 4, *np.round(v, 8).tolist())
                  for (i, j), v in zip(graph.edge_index.T.tolist(), vectors.tolist(),
                                       strict=True) if i < 4)
    i, j, dvec = neighbor_list("ijD", copper_cell[0], 5.0)
    theirs = sorted((a, b, *np.round(v, 8).tolist())
                    for a, b, v in zip(i.tolist(), j.tolist(), dvec, strict=True))
    assert len(ours) == len(theirs) == 4 * 42 and ours == theirs
    forces = _stack(copper_cell, lambda a: a.get_forces())  # [T, 4, 3]
    torch.testing.assert_close(data.dp, forces.repeat(1, 27, 1), rtol=0, atol=0)
    torch.testing.assert_close(data.p[:, 4:8], data.p[:, :4], rtol=0, atol=0)
    energy = [a.get_potential_energy() for a in copper_cell]
    assert np.allclose(data.meta["energies"]["potential"][0], 27 * np.array(energy),
                       rtol=1e-12)
    path = tmp_path / "cu.xyz"
    ase.io.write(path, copper_cell)
    assert main(["import", str(path), "--cutoff", "5", "-o", str(tmp_path / "cu.pt")]) == 0
    assert "3 x 3 x 3" in capsys.readouterr().out
    assert main(["train", "potential-hogn", str(tmp_path / "cu.pt"), "--hidden", "4",
                 "--mp-steps", "1", "--epochs", "1", "--batch-size", "2", "--quiet", "-o",
                 str(tmp_path / "run")]) == 0


def test_several_trajectories_of_two_elements(argon, copper):
    data = from_ase([argon, copper], cutoff=3.0, test_fraction=0.5)
    assert len(data) == 2 and data.sizes.tolist() == [32, 32]
    assert data.box.tolist() == [[10.52] * 3, [7.22] * 3]
    assert data.c[:32, 1].eq(18).all() and data.c[32:, 1].eq(29).all()
    torch.testing.assert_close(data.c[32:, 0], torch.full((32,), 63.546, dtype=torch.float64))
    assert data.meta["species"] == ["Ar", "Cu"] and data.meta["formulas"] == ["Ar32", "Cu32"]
    torch.testing.assert_close(data.dp[:, 32:], _stack(copper, lambda a: a.get_forces()),
                               rtol=0, atol=0)
    assert int(data.test.sum()) == 1
    per_graph = torch.bincount(data.edge_index[0] // 32, minlength=2).tolist()
    assert per_graph == [0, 32 * 12]  # Ar's neighbours are at 3.72 Å, Cu's 12 at 2.55 Å


def test_missing_forces_and_momenta_are_estimated_and_said(argon):
    """Without calculator results dp is estimated from p; without momenta, p from the
    positions, wrapped into the box or not (the steps are minimum images)."""
    forces = _stack(argon, lambda a: a.get_forces())
    momenta = _stack(argon, lambda a: a.get_momenta())
    bare = [a.copy() for a in argon]  # copies lose the calculator
    data = from_ase(bare, cutoff=5.0)
    assert data.derivatives.startswith("estimated: dp by second-order") and "dq = p/m" in \
        data.derivatives
    assert (data.dp - forces).abs().max() < 0.02 * forces.abs().max()
    assert (data.dp - forces).abs().max() > 0  # estimated, not copied
    for frame in bare:
        del frame.arrays["momenta"]
        frame.wrap()
    assert (_stack(bare, lambda a: a.positions) - data.q).abs().max() > 5  # some wrapped
    guessed = from_ase(bare, cutoff=5.0)
    assert guessed.derivatives.startswith("estimated: dq, p = m dq and dp")
    assert (guessed.p - momenta).abs().max() < 0.01 * momenta.abs().max()


def test_one_frame_is_a_state_and_needs_forces(argon):
    state = from_ase(argon[2], cutoff=5.0)
    assert state.dt is None and state.t.numel() == 1
    assert torch.equal(state.dp[0], torch.tensor(argon[2].get_forces()))
    configurations = from_ase([[a] for a in argon], cutoff=5.0, test_fraction=0.0)
    assert len(configurations) == STEPS + 1 and configurations.dt is None
    with pytest.raises(ValueError, match=r"a single frame is a state .* forces are missing"):
        from_ase(argon[2].copy(), cutoff=5.0)


def _mixed(atoms):
    atoms.pbc = [True, True, False]


def _skewed(atoms):
    atoms.cell[0, 1] = 1.0


@pytest.mark.parametrize(("change", "match"), [
    (_mixed, r"mixed periodic boundaries pbc=\[True, True, False\] are not supported"),
    (_skewed, r"the cell .* is not orthorhombic"),
])
def test_cells_hogn_cannot_hold_are_refused(argon, change, match):
    frames = [a.copy() for a in argon]
    for frame in frames:
        change(frame)
    with pytest.raises(ValueError, match=match):
        from_ase(frames, dt=DT, cutoff=5.0)


def test_time_comes_from_the_frames_or_dt(argon):
    untimed = [a.copy() for a in argon]
    for frame in untimed:
        del frame.info["time"]
    with pytest.raises(NotInFrames, match=r"the 6 frames carry no time .*: pass dt="):
        from_ase(untimed, cutoff=5.0)
    data = from_ase(untimed, dt=DT, cutoff=5.0)
    assert data.dt == DT and data.meta["times"] == "dt"
    assert torch.equal(data.t, torch.arange(STEPS + 1, dtype=torch.float64) * DT)
    with pytest.raises(ValueError, match=r"the frames' times step by .* but dt ="):
        from_ase(argon, dt=2 * DT, cutoff=5.0)
    uneven = [argon[i] for i in (0, 1, 3)]
    with pytest.raises(ValueError, match="must increase evenly"):
        from_ase(uneven, cutoff=5.0)
    other = argon[1].copy()
    other.numbers[0] = 10
    with pytest.raises(ValueError, match="frame 1 holds other atoms"):
        from_ase([argon[0], other], cutoff=5.0)
    with pytest.raises(ValueError, match=r"images must be ase\.Atoms frames"):
        from_ase("lj.xyz")


# ------------------------------------------------------------------ command line
def _error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and match in err, err
    return err


def test_import_info_and_export_of_ase_frames(files, argon, tmp_path, capsys):
    out = tmp_path / "argon.pt"
    assert main(["import", str(files["xyz"]), "--cutoff", "5", "-o", str(out)]) == 0
    assert "periodic box" in capsys.readouterr().out
    data = systems.load(out)
    assert data.box.tolist() == [[10.52] * 3] and data.meta["file"] == str(files["xyz"])
    assert main(["info", str(out)]) == 0
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1)
                for line in capsys.readouterr().out.splitlines())
    assert rows["box"] == "periodic, lengths 10.52, 10.52, 10.52"
    assert rows["source"].startswith("ASE frames of") and "Ar;" in rows["source"]
    assert "pairs closer than 5" in rows["edges"] and rows["units"].startswith("length Å")
    assert rows["energy from the frames"].startswith("total [")

    xyz = tmp_path / "back.xyz"
    assert main(["export", str(out), "-o", str(xyz), "--digits", "17"]) == 0
    assert xyz.read_text().splitlines()[2].split()[0] == "Ar"
    back = ase.io.read(xyz, ":")
    assert back[0].get_chemical_symbols() == ["Ar"] * 32 and back[0].pbc.all()
    np.testing.assert_array_equal(back[-1].get_masses(), argon[-1].get_masses())
    np.testing.assert_array_equal(back[-1].positions, data.q[-1].numpy())
    again = systems.from_ase(back, cutoff=5.0)  # and around once more
    assert torch.equal(again.q, data.q) and torch.equal(again.t, data.t)


def test_import_refusals_are_one_line(argon, tmp_path, capsys):
    untimed = [a.copy() for a in argon]
    for frame in untimed:
        del frame.info["time"]
    path = tmp_path / "untimed.extxyz"
    ase.io.write(path, untimed)
    out = str(tmp_path / "x.pt")
    _error(capsys, ["import", str(path), "--cutoff", "5", "-o", out],
           "carry no time (atoms.info['time']): give the time between frames with --dt-fs")
    _error(capsys, ["import", str(path), "--dt-fs", "5", "-o", out], "with --cutoff R")
    good = tmp_path / "good.pt"
    assert main(["import", str(path), "--dt-fs", "5", "--cutoff", "5", "-o", str(good)]) == 0
    assert systems.load(good).dt == pytest.approx(DT, rel=1e-15)
    for change, match in ((_mixed, "mixed periodic boundaries"), (_skewed, "not orthorhombic")):
        frame = argon[0].copy()
        change(frame)
        bad = tmp_path / f"{change.__name__}.xyz"
        ase.io.write(bad, [frame])
        _error(capsys, ["import", str(bad), "--cutoff", "3", "-o", out], match)
    (tmp_path / "notes.foo").write_text("not frames")
    _error(capsys, ["import", str(tmp_path / "notes.foo"), "-o", out], "ASE cannot read it")
    np.savez(tmp_path / "a.npz", q=np.zeros((3, 1)), p=np.zeros((3, 1)))
    _error(capsys, ["import", str(tmp_path / "a.npz"), "--dt-fs", "5", "-o", out],
           "--dt-fs applies to files of ASE frames")


def test_import_bounds_the_dataset_of_the_frames_before_building_it(files, tmp_path, capsys,
                                                                   monkeypatch):
    """A small file can make gigabytes: 2000 atoms in open boundaries (a 170 KB file) are
    a complete graph of 4 million edges. ``hogn import`` counts the frames and atoms as it
    reads them and refuses, in one line naming the estimate and $HOGN_MAX_MEMORY, before
    the dataset is built (it built it); nothing is written."""
    from ase import Atoms

    rng = np.random.default_rng(0)
    cloud = []
    for i in range(2):
        frame = Atoms("Ar2000", positions=rng.uniform(0.0, 60.0, (2000, 3)))
        frame.info["time"] = i * DT
        cloud.append(frame)
    path = tmp_path / "cloud.xyz"
    ase.io.write(path, cloud)
    assert path.stat().st_size < 400_000
    out = tmp_path / "x.pt"
    monkeypatch.setenv("HOGN_MAX_MEMORY", "64M")
    err = _error(capsys, ["import", str(path), "-o", str(out)],
                 "over the limit of 64.0 MiB ($HOGN_MAX_MEMORY=64M)")
    assert "of 2000 atoms, about 4e+06 edges" in err
    assert not out.exists()
    # many frames of a few atoms: refused before every frame is read
    monkeypatch.setenv("HOGN_MAX_MEMORY", "40K")
    err = _error(capsys, ["import", str(files["traj"]), "--cutoff", "5", "-o", str(out)],
                 "over the limit of 40.0 KiB ($HOGN_MAX_MEMORY=40K)")
    assert "its frames (at least 3, of 32 atoms" in err  # of 6
    assert not out.exists()
    monkeypatch.setenv("HOGN_MAX_MEMORY", "1M")  # room for them: imported
    assert main(["import", str(files["traj"]), "--cutoff", "5", "-o", str(out)]) == 0
    assert systems.load(out).t.numel() == 6


def test_without_ase_the_error_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    from systems.ase_data import require_ase

    for name in ("ase", "ase.io"):
        monkeypatch.setitem(sys.modules, name, None)  # import ase -> ImportError
    with pytest.raises(ImportError, match=r"pip install hogn\[ase\]"):
        require_ase()
    (tmp_path / "lj.xyz").write_text("1\n\nAr 0 0 0\n")
    _error(capsys, ["import", str(tmp_path / "lj.xyz"), "-o", str(tmp_path / "x.pt")],
           "not a .npz file; reading other files needs ASE")


def test_every_public_path_builds_the_same_dataset(argon):
    """``systems.from_ase``, ``systems.ase_data.from_ase`` and ``Dataset.from_ase`` (built on
    the fields of ``systems.ase_fields``, which knows no dataset class) give one dataset;
    the names ``systems.ase_data`` hands on are those of ``systems.ase_fields``."""
    import systems.ase_fields

    built = [systems.from_ase(argon, cutoff=5.0), from_ase(argon, cutoff=5.0),
             systems.Dataset.from_ase(argon, cutoff=5.0)]
    for data in built:
        assert type(data) is systems.Dataset and data.meta["source"] == "ase"
        assert torch.equal(data.q, built[0].q) and torch.equal(data.dp, built[0].dp)
        assert torch.equal(data.edge_index, built[0].edge_index)
        assert data.meta["dt"] == built[0].meta["dt"] and data.meta["file"] is None
    for name in ("ASE_MISSING", "NODE_CONSTANTS", "TIME_KEYS", "UNITS", "NotInFrames",
                 "ase_time_per_fs", "require_ase"):
        assert getattr(systems.ase_data, name) is getattr(systems.ase_fields, name), name
    with pytest.raises(NotInFrames, match="pass cutoff="):
        systems.Dataset.from_ase(argon)


def test_ase_is_imported_only_inside_functions():
    """``import systems`` (and ``systems.from_ase``, ``hogn import``) never import ASE at
    module level: it is optional."""
    root = Path(systems.__file__).parents[1]
    for module in ("systems/ase_data.py", "systems/ase_fields.py", "systems/arrays.py",
                   "systems/array_fields.py", "systems/dataset.py", "systems/__init__.py",
                   "hogn/cli/data.py", "hogn/cli/export.py", "hogn/xyz.py"):
        tree = ast.parse((root / module).read_text())
        top = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names] + [
            n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
        assert not [x for x in names if x.split(".")[0] == "ase"], (module, names)
    assert "ase" in {n.module.split(".")[0] for n in ast.walk(ast.parse(
        (root / "systems/ase_fields.py").read_text())) if isinstance(n, ast.ImportFrom)
        and n.module}  # imported where it is used


def test_train_on_imported_frames_gives_each_state_its_own_edges(files, argon, tmp_path,
                                                                  capsys):
    """``hogn train`` on a periodic import: every frame a graph with the pairs within the
    imported cut-off of its own positions (ASE's neighbour list the reference), the
    model given that cut-off; a model without one, or the rollout target, refused."""
    data_path = tmp_path / "argon.pt"
    assert main(["import", str(files["xyz"]), "--cutoff", "5", "-o", str(data_path)]) == 0
    run = tmp_path / "run"
    assert main(["train", "potential-hogn", str(data_path), "--hidden", "4", "--mp-steps", "1",
                 "--epochs", "1", "--batch-size", "2", "--quiet", "-o", str(run)]) == 0
    out = capsys.readouterr().out
    assert "each of its 6 saved states is a graph of its own" in out
    assert "the cut-off 5 it was imported with" in out
    from hogn.models import load

    model = load(run / "best.pt")
    assert model.config()["cutoff"] == 5.0 and model.name == "potential-hogn"
    states = systems.load(data_path).snapshots(radius=5.0)
    for k, frame in enumerate(argon):  # each frame's own pairs, as ASE finds them
        i, j = neighbor_list("ij", frame, 5.0)
        edges = states.select([k]).edge_index
        assert {tuple(e) for e in edges.T.tolist()} == set(zip(j.tolist(), i.tolist(),
                                                                strict=True))
    # evaluate rolls out on a neighbour list of the model's cut-off (the box is periodic)
    assert main(["evaluate", str(run), str(data_path), "--split", "all", "--integrator",
                 "leapfrog", "--steps", "4", "--quiet"]) == 0
    assert "potential-hogn" in capsys.readouterr().out
    import hogn
    from hogn.evaluation import evaluate
    from hogn.graph import NeighbourList

    data = systems.load(data_path).to(dtype=torch.float32)
    nl = NeighbourList(5.0, 0.25, box=data.box)
    result = evaluate(model, data, integrator="leapfrog", steps=4, neighbours=nl)
    q, _ = hogn.rollout(model, data.state(0), 4, dt=float(data.t[1] - data.t[0]),
                        integrator="leapfrog", neighbours=NeighbourList(5.0, 0.25, box=data.box))
    assert nl.updates == 4 and torch.equal(result.q, q)
    _error(capsys, ["evaluate", str(run), str(data_path), "--split", "all", "--cutoff", "6",
                    "--quiet"], "smaller than twice the neighbour radius 6")
    _error(capsys, ["train", "hnn", str(data_path), "--quiet", "-o", str(tmp_path / "r2")],
           "need a graph model that reads edges up to it")
    _error(capsys, ["train", "hogn", str(data_path), "--target", "rollout", "--quiet", "-o",
                    str(tmp_path / "r3")], "train on the derivative target")
    _error(capsys, ["train", "potential-hogn", str(data_path), "--cutoff", "0", "--quiet", "-o",
                    str(tmp_path / "r4")], "--cutoff")
