"""Extended XYZ: what hogn.xyz writes reads back (with its own reader, and with ASE
when it is installed), to the printed precision; ``hogn export`` picks trajectories,
strides and refuses mistakes in one line."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hogn.cli import main
from hogn.io import is_temp_file
from hogn.xyz import read_xyz, write_xyz


def _trajectory(frames: int = 4, n: int = 3, d: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(frames, n, d, dtype=torch.float64, generator=g) * 3
    p = torch.randn(frames, n, d, dtype=torch.float64, generator=g)
    c = torch.rand(n, 2, dtype=torch.float64, generator=g) + 0.5
    t = torch.arange(frames, dtype=torch.float64) * 0.1
    return q, p, c, t


def _rounded(x: torch.Tensor, digits: int) -> torch.Tensor:
    """What ``%.{digits}g`` prints, as numbers."""
    return torch.tensor([float(f"{v:.{digits}g}") for v in x.reshape(-1).tolist()],
                        dtype=torch.float64).reshape(x.shape)


def test_round_trip_is_exact_with_17_digits(tmp_path):
    q, p, c, t = _trajectory()
    path = write_xyz(tmp_path / "a.xyz", q, p, t=t, c=c, box=[7.5, 6.0], digits=17,
                     info={"system": "spring-nbody", "note": "two words"})
    back = read_xyz(path)
    assert torch.equal(back.q, q) and torch.equal(back.p, p) and torch.equal(back.c, c)
    assert torch.equal(back.t, t) and back.box.tolist() == [7.5, 6.0]
    assert back.constant_names == ["masses", "c1"] and back.species == ["X"] * 3
    assert back.info == {"system": "spring-nbody", "note": "two words"}


@pytest.mark.parametrize("digits", [3, 6, 10])
def test_read_back_equals_the_printed_numbers(tmp_path, digits):
    q, p, c, t = _trajectory(seed=digits)
    back = read_xyz(write_xyz(tmp_path / "a.xyz", q, p, t=t + 1 / 3, c=c, digits=digits))
    assert torch.equal(back.q, _rounded(q, digits))
    assert torch.equal(back.p, _rounded(p, digits))
    assert torch.equal(back.c, _rounded(c, digits))
    assert torch.equal(back.t, _rounded(t + 1 / 3, digits))
    if digits < 10:  # the rounding was real: fewer digits lose information
        assert not torch.equal(back.q, q)


def test_layout_of_a_two_dimensional_frame(tmp_path):
    q, p, c, t = _trajectory(frames=2, n=3)
    text = write_xyz(tmp_path / "a.xyz", q, p, t=t, c=c[:, :1], box=[4.0, 3.0]).read_text()
    lines = text.splitlines()
    assert len(lines) == 2 * (3 + 2) and lines[0] == "3" and lines[5] == "3"
    comment = lines[1].split(" ")
    assert comment[:3] == ['Lattice="4', "0", "0"]
    assert lines[1].startswith('Lattice="4 0 0 0 3 0 0 0 1" ')  # z: unit length, not periodic
    assert "Properties=species:S:1:pos:R:3:momenta:R:3:masses:R:1" in comment
    assert 'pbc="T T F"' in lines[1] and "dim=2" in comment and "Time=0.0" in comment
    assert "Time=0.1" in lines[6].split(" ")  # times are real numbers, never "Time=0"
    row = lines[2].split()
    assert row[0] == "X" and len(row) == 1 + 3 + 3 + 1
    assert float(row[3]) == 0.0 and float(row[6]) == 0.0  # padded z of pos and momenta
    assert math.isclose(float(row[1]), float(q[0, 0, 0]), rel_tol=1e-9)
    assert math.isclose(float(row[7]), float(c[0, 0]), rel_tol=1e-9)


@pytest.mark.parametrize("d", [1, 3])
def test_one_and_three_dimensions(tmp_path, d):
    q, p, _, _ = _trajectory(d=d)
    box = [5.0] * d
    path = write_xyz(tmp_path / "a.xyz", q, p, box=box, species=["A", "B", "C"], digits=17)
    lattice = path.read_text().splitlines()[1]
    expected = {1: 'Lattice="5 0 0 0 1 0 0 0 1"', 3: 'Lattice="5 0 0 0 5 0 0 0 5"'}[d]
    assert lattice.startswith(expected)
    assert f'pbc="{" ".join(["T"] * d + ["F"] * (3 - d))}"' in lattice
    back = read_xyz(path)
    assert back.q.shape == q.shape and torch.equal(back.q, q) and torch.equal(back.p, p)
    assert back.species == ["A", "B", "C"] and back.t is None and back.c.shape == (3, 0)


def test_open_boundaries_positions_only_and_one_frame(tmp_path):
    q = torch.tensor([[0.5, -1.0], [2.0, 3.0]], dtype=torch.float64)
    path = write_xyz(tmp_path / "a.xyz", q)
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and "Lattice" not in lines[1] and 'pbc="F F F"' in lines[1]
    assert "Properties=species:S:1:pos:R:3 " in lines[1] + " "
    back = read_xyz(path)
    assert back.box is None and back.p is None and torch.equal(back.q, q[None])


def test_float32_input_is_written_as_its_own_values(tmp_path):
    q = torch.tensor([[[0.1, 0.2]]], dtype=torch.float32)
    back = read_xyz(write_xyz(tmp_path / "a.xyz", q, digits=17))
    assert torch.equal(back.q, q.double())


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"q": torch.zeros(2, 3, 4)}, "d = 1, 2 or 3"),
    ({"q": torch.zeros(0, 3, 2)}, "no frames"),
    ({"q": torch.tensor([[[float("nan"), 0.0]]])}, "non-finite"),
    ({"p": torch.zeros(2, 3, 3)}, "p must have q's shape"),
    ({"t": [0.0]}, "one time per frame"),
    ({"c": torch.ones(2, 1)}, "c must be [n, k]"),
    ({"box": [1.0]}, "box must hold 2 lengths > 0"),
    ({"box": [1.0, -2.0]}, "box must hold 2 lengths > 0"),
    ({"species": "A B"}, "species"),
    ({"species": ["A", "B"]}, "species"),
    ({"c": torch.ones(3, 1), "constant_names": ["pos"]}, "constant_names"),
    ({"c": torch.ones(3, 1), "constant_names": ["a b"]}, "not a valid extended XYZ name"),
    ({"info": {"Time": 1}}, "written by write_xyz itself"),
    ({"info": {"note": 'say "hi"'}}, "must not contain"),
    ({"digits": 18}, "digits must be an int in [1, 17]"),
])
def test_bad_arguments_are_named_and_nothing_is_written(tmp_path, kwargs, match):
    path = tmp_path / "a.xyz"
    path.write_text("old")
    args = {"q": torch.zeros(2, 3, 2, dtype=torch.float64), **kwargs}
    with pytest.raises(ValueError, match=match.replace("[", r"\[").replace("]", r"\]")):
        write_xyz(path, **args)
    assert path.read_text() == "old"
    assert not [f for f in tmp_path.iterdir() if is_temp_file(f)]


def test_reader_names_what_is_wrong(tmp_path):
    q, p, _, _ = _trajectory()
    good = write_xyz(tmp_path / "a.xyz", q, p).read_text().splitlines()
    cases = {
        "truncated": ("\n".join(good[:-1]), "file ends"),
        "count": ("three\n" + "\n".join(good[1:]), "expected the particle count"),
        "columns": ("\n".join([*good[:2], good[2] + " 9", *good[3:]]), "columns"),
        "number": ("\n".join([*good[:2], good[2].replace("X ", "X a", 1), *good[3:]]),
                   "not a number"),
        "frames": ("\n".join([*good, "1", good[1], good[2]]), "first frame's particles"),
    }
    for name, (text, match) in cases.items():
        bad = tmp_path / f"{name}.xyz"
        bad.write_text(text + "\n")
        with pytest.raises(ValueError, match=match):
            read_xyz(bad)
    with pytest.raises(ValueError, match="no such file"):
        read_xyz(tmp_path / "missing.xyz")


def test_ase_reads_the_file(tmp_path):
    ase_io = pytest.importorskip("ase.io")
    q, p, c, t = _trajectory(frames=3, n=4)
    path = write_xyz(tmp_path / "a.xyz", q, p, t=t, c=c[:, :1], box=[9.0, 8.0], digits=17)
    frames = ase_io.read(path, index=":", format="extxyz")
    assert len(frames) == 3
    atoms = frames[2]
    assert atoms.pbc.tolist() == [True, True, False]
    np.testing.assert_array_equal(np.diag(atoms.cell.array), [9.0, 8.0, 1.0])
    np.testing.assert_array_equal(atoms.positions[:, :2], q[2].numpy())
    np.testing.assert_array_equal(atoms.get_momenta()[:, :2], p[2].numpy())
    np.testing.assert_array_equal(atoms.get_masses(), c[:, 0].numpy())
    assert atoms.info["Time"] == pytest.approx(float(t[2]))


# ----------------------------------------------------------------- hogn export
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    import systems

    data = systems.generate("spring-nbody", trajectories=3, steps=12, dt=0.05,
                            n_particles=(3, 4), seed=0, progress=False)
    path = tmp_path_factory.mktemp("export") / "data.pt"
    data.save(path)
    return path, data


def _error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and match in err, err
    return err


def test_export_one_trajectory_with_a_stride(dataset, tmp_path, capsys):
    path, data = dataset
    out = tmp_path / "one.xyz"
    assert main(["export", str(path), "-o", str(out), "--trajectory", "1", "--stride", "5",
                 "--digits", "17"]) == 0
    assert str(out) in capsys.readouterr().out
    back = read_xyz(out)
    a, b = int(data.ptr[1]), int(data.ptr[2])
    keep = torch.arange(0, data.t.numel(), 5)  # 13 points: 0, 5, 10
    assert torch.equal(back.q, data.q[keep, a:b]) and torch.equal(back.p, data.p[keep, a:b])
    assert torch.equal(back.t, data.t[keep]) and torch.equal(back.c, data.c[a:b])
    assert back.info["system"] == "spring-nbody" and back.info["trajectory"] == "1"


def test_export_several_trajectories_one_file_each(dataset, tmp_path, capsys):
    path, data = dataset
    out = tmp_path / "many.xyz"
    assert main(["export", str(path), "-o", str(out), "--trajectory", "all"]) == 0
    files = sorted(tmp_path.glob("many-*.xyz"))
    assert [f.name for f in files] == ["many-0.xyz", "many-1.xyz", "many-2.xyz"]
    assert not out.exists()
    sizes = [read_xyz(f).q.shape[1] for f in files]
    assert sizes == data.sizes.tolist()
    assert main(["export", str(path), "-o", str(tmp_path / "r.xyz"), "--trajectory",
                 "0..1"]) == 0
    assert sorted(f.name for f in tmp_path.glob("r-*.xyz")) == ["r-0.xyz", "r-1.xyz"]


def test_export_mistakes_are_one_line(dataset, tmp_path, capsys):
    path, _ = dataset
    out = tmp_path / "x.xyz"
    _error(capsys, ["export", str(tmp_path / "none.pt"), "-o", str(out)], "no such file")
    _error(capsys, ["export", str(path), "-o", str(out), "--trajectory", "3"],
           "trajectory 3 is out of range")
    _error(capsys, ["export", str(path), "-o", str(out), "--trajectory", "x"],
           "--trajectory")
    import time

    start = time.perf_counter()  # a range past the data is refused before it is expanded
    _error(capsys, ["export", str(path), "-o", str(out), "--trajectory", "0..100000000000"],
           "trajectory 100000000000 is out of range")
    assert time.perf_counter() - start < 5
    _error(capsys, ["export", str(path), "-o", str(out), "--stride", "0"], "--stride")
    out.write_text("keep")
    _error(capsys, ["export", str(path), "-o", str(out)], "already exists")
    assert out.read_text() == "keep"
    (tmp_path / "y-1.xyz").write_text("keep")
    _error(capsys, ["export", str(path), "-o", str(tmp_path / "y.xyz"), "--trajectory", "all"],
           "y-1.xyz already exists")
    assert not (tmp_path / "y-0.xyz").exists()  # checked before anything was written
    assert main(["export", str(path), "-o", str(out), "--force"]) == 0
    assert read_xyz(out).q.shape[0] == 13


def test_export_keeps_the_periodic_box(tmp_path):
    import systems

    data = systems.generate("lennard-jones", trajectories=2, steps=3, dt=0.01, n_particles=20,
                            seed=0, progress=False)
    path = tmp_path / "lj.pt"
    data.save(path)
    assert main(["export", str(path), "-o", str(tmp_path / "lj.xyz"), "--trajectory", "1",
                 "--digits", "17"]) == 0
    text = (tmp_path / "lj.xyz").read_text().splitlines()[1]
    assert 'pbc="T T F"' in text and "system=lennard-jones" in text
    back = read_xyz(tmp_path / "lj.xyz")
    assert torch.equal(back.box, data.box[1].double())
    assert torch.equal(back.q, data.q[:, 20:40])  # not wrapped: the data's own positions


def test_reader_refuses_counts_values_and_boxes_that_cannot_be(tmp_path):
    """A frame announcing a negative (or no) particle count used to loop forever; NaN
    positions and a box of negative or skewed lengths were accepted."""
    q, p, _, _ = _trajectory()
    good = write_xyz(tmp_path / "a.xyz", q, p).read_text().splitlines()
    n = int(good[0])
    frame = good[: n + 2]
    row = frame[2].split()

    def with_value(value: str, column: int) -> str:
        return " ".join([*row[:column], value, *row[column + 1:]])

    lattice = 'Lattice="4 0 0 0 4 0 0 0 4" Properties=species:S:1:pos:R:3 pbc="T T T"'
    cases = {
        "negative": ("\n".join(["-3", *good[1:]]), "at least one particle, got -3"),
        "zero": ("\n".join(["0", *good[1:]]), "at least one particle, got 0"),
        "nan": ("\n".join([frame[0], frame[1], with_value("nan", 1), *frame[3:]]),
                "column pos holds a value that is not finite"),
        "inf": ("\n".join([frame[0], frame[1], with_value("-inf", 5), *frame[3:]]),
                "column momenta holds a value that is not finite"),
        "negative box": ("1\n" + lattice.replace('"4 0 0', '"-4 0 0') + "\nX 0 0 0",
                         "finite lengths > 0"),
        "skewed box": ("1\n" + lattice.replace('0 4 0', '1 4 0') + "\nX 0 0 0",
                       "orthorhombic"),
    }
    for name, (text, match) in cases.items():
        bad = tmp_path / f"{name}.xyz"
        bad.write_text(text + "\n")
        with pytest.raises(ValueError, match=match):
            read_xyz(bad)
    fine = tmp_path / "fine.xyz"
    fine.write_text("1\n" + lattice + "\nX 0.5 1 2\n")
    assert read_xyz(fine).box.tolist() == [4.0, 4.0, 4.0]
