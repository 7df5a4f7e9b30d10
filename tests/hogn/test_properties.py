"""Property-based hostility (hypothesis): command-line arguments, damaged files and
Python API inputs.

Every case must end, within a time bound, either in success whose result holds
exactly what was asked (no value silently replaced), or in the documented error: one
line on stderr and exit status 2 (CLI), ``ValueError`` (API); never a traceback, a
hang, or a damaged file. The default run is small (442 cases; under a minute of CPU on a
2-core machine); ``-m slow`` runs the same properties with ten times the cases.
Run with ``--hypothesis-show-statistics`` to see the number of cases.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import hogn  # noqa: E402
import systems  # noqa: E402
from hogn import checks  # noqa: E402
from hogn.cli import main  # noqa: E402

BOUND_S = 120  # no single case may run longer (a hang fails the test; loaded machines)
SMALL = {"HOGN_MAX_STEPS": "5000", "HOGN_MAX_MEMORY": "200M"}  # documented bounds, small


class Hang(BaseException):
    """A case ran past BOUND_S (no ``except Exception`` in the code catches it)."""


@contextlib.contextmanager
def time_bound(seconds: float = BOUND_S) -> Iterator[None]:
    def alarm(signum, frame):
        raise Hang(f"ran past {seconds} s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``hogn ARGV`` in-process: (status, stdout, stderr); --help exits are status 0."""
    out, err = io.StringIO(), io.StringIO()
    with time_bound(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exc:  # --help / --version only
            status = exc.code
    return status, out.getvalue(), err.getvalue()


def assert_documented(status: int, err: str, names: str | None = None) -> None:
    """Success, or one line on stderr with exit 2 (naming ``names`` when given)."""
    assert "Traceback" not in err, err
    assert status in (0, 2), (status, err)
    if status == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hogn"), err
        if names is not None:
            assert names in lines[0], (names, err)


def variants(fast: int, slow: int, **strategies: st.SearchStrategy) -> Callable:
    """The property as a default test (``fast`` cases) and a slow one (``slow``)."""
    def wrap(fn: Callable) -> tuple[Callable, Callable]:
        common = {"deadline": None, "derandomize": True, "database": None,
                  "suppress_health_check": list(HealthCheck),
                  "phases": [Phase.explicit, Phase.generate, Phase.shrink]}
        quick = settings(max_examples=fast, **common)(given(**strategies)(fn))
        thorough = pytest.mark.slow(settings(max_examples=slow, **common)(
            given(**strategies)(fn)))
        return quick, thorough
    return wrap


@pytest.fixture(scope="module")
def made(tmp_path_factory, cli_run):
    return cli_run(tmp_path_factory.mktemp("props"), particles="3",
                   trajectories=4, steps=6, epochs=1,
                   train=["--hidden", "8", "--batch-size", "16", "--max-samples", "16",
                          "--quiet"])


@pytest.fixture
def small_bounds(monkeypatch):
    for key, value in SMALL.items():
        monkeypatch.setenv(key, value)


# ------------------------------------------------------------ CLI: generate
HOSTILE = ["0", "-1", "-0", "nan", "inf", "-inf", "1e400", "1e-300", "abc", "", " ", "2.5",
           "true", "null", "0x10", "1_000", "1e9", "100000000", "-1e-9", "１"]


LONG = ("100000000", "1_000")  # valid counts that would make a case run for hours


def _flag(valid: list[str], long_ok: bool = True) -> st.SearchStrategy:
    hostile = HOSTILE if long_ok else [h for h in HOSTILE if h not in LONG]
    text = st.text(max_size=6)
    if not long_ok:
        text = text.filter(lambda t: not t.strip().isdigit() or len(t.strip()) < 2)
    return st.one_of(st.none(), st.sampled_from(valid), st.sampled_from(hostile), text)


GENERATE = {"--trajectories": ["1", "3"], "--steps": ["1", "4"], "--dt": ["0.01", "0.1"],
            "--noise": ["0", "0.01"], "--test-fraction": ["0", "0.5"],
            "--rtol": ["1e-8", "1e-10"], "--seed": ["0", "7"], "--device": ["cpu"],
            "--n-particles": ["2", "2..3"], "--embed-dim": ["2"]}


@variants(40, 400, system=st.sampled_from(["pendulum", "spring-nbody", "hnn-mass-spring",
                                           "nosuch"]),
          values=st.fixed_dictionaries({k: _flag(v) for k, v in GENERATE.items()}),
          param=st.one_of(st.none(), st.sampled_from(
              ["mass=1.5", "mass=true", "mass=nan", "mass=-1", "mass=[1,2]", "g=1e400",
               "graph=cycle", "graph=3", "=1", "mass", "dim=2.5", "nosuch=1"])))
def check_generate(small_bounds, system, values, param):
    folder = Path(tempfile.mkdtemp())
    try:
        out = folder / "d.pt"
        argv = ["generate", system, "--quiet", "-o", str(out)]
        for flag, value in values.items():
            if value is not None:
                argv += [f"{flag}={value}"]
        if param is not None:
            argv += ["--param", param]
        status, _, err = run_cli(argv)
        assert_documented(status, err)
        files = sorted(p.name for p in folder.iterdir())
        if status != 0:
            assert files == [], files  # nothing written, no temporary file left
            return
        assert files == ["d.pt"]
        data = systems.load(out)  # complete and valid
        # what was asked is what was written (no silent replacement)
        if values["--trajectories"] is not None:
            assert data.num_graphs == int(values["--trajectories"])
        if values["--steps"] is not None:
            assert data.t.numel() == int(values["--steps"]) + 1
        if values["--dt"] is not None:
            assert data.dt == float(values["--dt"])
        if values["--seed"] is not None:
            assert data.meta["seed"] == int(values["--seed"])
        if values["--rtol"] is not None:
            assert data.meta["rtol"] == float(values["--rtol"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


test_generate_arguments, test_generate_arguments_slow = check_generate


# ------------------------------------------------------------ CLI: train / evaluate
TRAIN = {"--epochs": ["1", "2"], "--batch-size": ["4", "16"], "--lr": ["1e-3", "0.01"],
         "--weight-decay": ["0", "1e-4"], "--val-fraction": ["0", "0.3"],
         "--max-samples": ["8", "16"], "--grad-clip": ["0", "1.5"], "--seed": ["0", "3"],
         "--checkpoint-every": ["0", "1"], "--checkpoint-seconds": ["0", "30"],
         "--hidden": ["4", "8"], "--device": ["cpu"]}


@variants(12, 120, values=st.fixed_dictionaries(
    {k: _flag(v, long_ok=k != "--epochs") for k, v in TRAIN.items()}))
def check_train(made, small_bounds, values):
    _, data, _ = made
    folder = Path(tempfile.mkdtemp())
    try:
        run = folder / "run"
        argv = ["train", "hogn", str(data), "--quiet", "-o", str(run)]
        defaults = {"--epochs": "1", "--max-samples": "8", "--hidden": "4"}  # keep it small
        for flag, value in {**defaults, **{k: v for k, v in values.items()
                                           if v is not None}}.items():
            argv += [f"{flag}={value}"]
        status, _, err = run_cli(argv)
        assert_documented(status, err)
        if status != 0:
            assert not run.exists() or "non-finite" in err, err
            return
        record = json.loads((run / "config.json").read_text())["train"]
        for flag, value in values.items():
            if value is None or flag in ("--hidden",):
                continue
            key = flag[2:].replace("-", "_")
            recorded = record[key]
            expected = type(recorded)(value) if not isinstance(recorded, str) else value
            assert recorded == expected, (flag, value, recorded)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


test_train_arguments, test_train_arguments_slow = check_train


@variants(15, 150, threshold=_flag(["0.1", "0.5"]), steps=_flag(["1", "3"]),
          substeps=_flag(["1", "2"]), split=st.sampled_from(["all", "train", "test", "x"]),
          integrator=st.sampled_from(["rk4", "leapfrog", "gauss4", "nosuch"]))
def check_evaluate(made, small_bounds, threshold, steps, substeps, split, integrator):
    _, data, run = made
    folder = Path(tempfile.mkdtemp())
    try:
        out = folder / "e.json"
        argv = ["evaluate", str(run), str(data), "--quiet", f"--split={split}",
                f"--integrator={integrator}", "--json", str(out)]
        for flag, value in (("--threshold", threshold), ("--steps", steps),
                            ("--substeps", substeps)):
            if value is not None:
                argv.append(f"{flag}={value}")
        status, _, err = run_cli(argv)
        assert_documented(status, err)
        if status == 0 and steps is not None:  # the steps asked for are those evaluated
            assert json.loads(out.read_text())["summary"]["steps"] == int(steps)
        if status != 0:
            assert not out.exists()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


test_evaluate_arguments, test_evaluate_arguments_slow = check_evaluate


# ------------------------------------------------------------ outputs
OUTPUT_NAMES = st.sampled_from(["a.out", "b.out", "data.pt", "dir", None])


@variants(20, 200, output=OUTPUT_NAMES, plot=OUTPUT_NAMES, xyz=OUTPUT_NAMES,
          animate=OUTPUT_NAMES, force=st.booleans())
def check_rollout_outputs(made, small_bounds, output, plot, xyz, animate, force):
    """``hogn rollout`` with outputs that exist (the user's dataset, a folder), that
    coincide, or are new: success writes each asked file; otherwise one line, and no
    existing file changes (a folder is never replaced, a file only with --force)."""
    _, data, run = made
    folder = Path(tempfile.mkdtemp())
    try:
        (folder / "dir").mkdir()
        (folder / "data.pt").write_bytes(data.read_bytes())
        before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        flags = {"-o": output, "--plot": plot, "--xyz": xyz, "--animate": animate}
        argv = ["rollout", str(run), "--steps", "3", "--quiet", *(["--force"] if force else [])]
        for flag, name in flags.items():
            if name is not None:
                argv += [flag, str(folder / name)]
        status, _, err = run_cli(argv)
        assert_documented(status, err)
        named = [n for n in flags.values() if n is not None]
        clash = len(set(named)) < len(named) or "dir" in named or (
            not force and "data.pt" in named)
        assert (status == 2) == clash, (argv, err)
        if status == 2:
            assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
        else:
            assert all((folder / n).is_file() for n in named)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


test_rollout_outputs, test_rollout_outputs_slow = check_rollout_outputs


@variants(20, 200, spec=st.one_of(
    st.sampled_from(["all", "0", "1,0", "0..1", "0..100000000000", "3", "-1", "1..0", "x",
                     "", "0,,1"]),
    st.lists(st.integers(0, 5), min_size=1, max_size=3).map(lambda v: ",".join(map(str, v)))),
          stride=st.sampled_from(["1", "2", "0", "-1", "x"]))
def check_export(made, spec, stride):
    """``hogn export --trajectory SPEC --stride N``: files for the asked trajectories, or
    one line before anything is written, at once for any range."""
    _, data, _ = made
    folder = Path(tempfile.mkdtemp())
    try:
        argv = ["export", str(data), "-o", str(folder / "t.xyz"), f"--trajectory={spec}",
                f"--stride={stride}"]
        status, _, err = run_cli(argv)
        assert_documented(status, err)
        written = sorted(p.name for p in folder.iterdir())
        if status == 2:
            assert written == []
        else:
            assert written and all(name.startswith("t") for name in written)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


test_export_arguments, test_export_arguments_slow = check_export


# ------------------------------------------------------------ damaged files
def _corrupt(path: Path, how: str, cut: float, flips: list[tuple[float, int]],
             other: Path) -> None:
    raw = path.read_bytes()
    if how == "truncate":
        path.write_bytes(raw[: int(cut * len(raw))])
    elif how == "flip":
        b = bytearray(raw)
        for where, mask in flips:
            b[min(int(where * len(b)), len(b) - 1)] ^= mask
        path.write_bytes(bytes(b))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "other-kind":
        path.write_bytes(other.read_bytes())
    elif how == "text":
        path.write_text("hello\n")
    elif how == "folder":
        path.unlink()
        path.mkdir()
    elif how == "missing":
        path.unlink()
    elif how == "version":  # a well-formed archive of another version / kind
        if path.suffix == ".pt":
            try:
                payload = torch.load(path, weights_only=True)
            except Exception:
                payload = {}
            if isinstance(payload, dict):
                payload["version"] = 99
            torch.save(payload, path)
        else:
            path.write_text(json.dumps({"version": 99}) + "\n")


@variants(50, 500,
          target=st.sampled_from(["data.pt", "best.pt", "checkpoint.pt", "config.json",
                                  "metrics.jsonl", "last.pt"]),
          how=st.sampled_from(["truncate", "flip", "empty", "other-kind", "text", "folder",
                               "missing", "version"]),
          cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1),
                                                        st.integers(1, 255)),
                                              min_size=1, max_size=8))
def check_files(made, target, how, cut, flips):
    _, data, run = made
    folder = Path(tempfile.mkdtemp())
    try:
        copy = folder / "run"
        shutil.copytree(run, copy)
        shutil.copy(data, folder / "data.pt")
        path = folder / "data.pt" if target == "data.pt" else copy / target
        other = copy / "best.pt" if target == "data.pt" else folder / "data.pt"
        _corrupt(path, how, cut, flips, other)
        untouched = {p: p.read_bytes() for p in [*copy.iterdir(), folder / "data.pt"]
                     if p.is_file() and p != path}
        if target in ("data.pt", "best.pt", "config.json"):
            commands = [["evaluate", str(copy), str(folder / "data.pt"), "--quiet",
                         "--split=all"]]
            if target == "data.pt":
                commands.append(["info", str(folder / "data.pt")])
        else:  # read on resume
            commands = [["train", "hogn", str(data), "--epochs", "2",  # the run's data
                         "--hidden", "8", "--batch-size", "16", "--max-samples", "16",
                         "--quiet", "-o", str(copy)]]
        for argv in commands:
            status, _, err = run_cli(argv)
            assert_documented(status, err, names=None)
            if status == 2 and how != "missing":
                assert target.split(".")[0] in err or "run folder" in err, err
        if commands[0][0] == "evaluate" or (status == 2 and target != "last.pt"):
            # reading never changes a file; a resume refused for a file it reads
            # changes nothing (last.pt is only written, after the epochs ran)
            for p, raw in untouched.items():
                assert p.read_bytes() == raw, p
    finally:
        shutil.rmtree(folder, ignore_errors=True)


test_damaged_files, test_damaged_files_slow = check_files


# ------------------------------------------------------------ foreign files in
def _mutate(raw: bytes, cut: float, flips: list[tuple[float, int]], lines: list[str]) -> bytes:
    """``raw`` cut at ``cut``, bytes flipped, lines replaced (for text files)."""
    b = bytearray(raw[: max(1, int(cut * len(raw)))])
    for where, mask in flips:
        b[min(int(where * len(b)), len(b) - 1)] ^= mask
    if lines:
        text = bytes(b).decode("utf-8", "replace").splitlines()
        for i, line in enumerate(lines):
            if text:
                text[(i * 7919) % len(text)] = line
        b = bytearray("\n".join(text).encode())
    return bytes(b)


XYZ_LINES = st.lists(st.sampled_from(["-3", "0", "2", "1e9", "nan", "X nan 0 0",
                                      'Lattice="-1 0 0 0 1 0 0 0 1" pbc="T T T"',
                                      'Lattice="1 2" Properties=species:S:1:pos:R:3',
                                      "Properties=pos:R:3:junk:Q:1", "", "X 1 2"]),
                     max_size=3)
FLIPS = st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=6)


@variants(60, 600, cut=st.floats(0.05, 1), flips=FLIPS, lines=XYZ_LINES)
def check_xyz_reader(made, cut, flips, lines):
    """``hogn.xyz.read_xyz`` on a damaged extended XYZ file: a trajectory or one
    ``ValueError``, within the time bound (a negative count looped forever)."""
    from hogn.xyz import read_xyz, write_xyz

    folder = Path(tempfile.mkdtemp())
    try:
        good = write_xyz(folder / "a.xyz", torch.randn(3, 4, 3, dtype=torch.float64),
                         torch.randn(3, 4, 3, dtype=torch.float64),
                         t=torch.arange(3.0, dtype=torch.float64),
                         box=torch.full((3,), 5.0, dtype=torch.float64))
        bad = folder / "b.xyz"
        bad.write_bytes(_mutate(good.read_bytes(), cut, flips, lines))
        with time_bound(30):
            try:
                out = read_xyz(bad)
            except ValueError as exc:
                assert str(exc).strip() and "\n" not in str(exc).strip(), exc
            else:
                assert bool(torch.isfinite(out.q).all())
                assert out.box is None or bool((out.box > 0).all())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


test_xyz_reader, test_xyz_reader_slow = check_xyz_reader


@variants(40, 400, cut=st.floats(0.05, 1), flips=FLIPS,
          layout=st.sampled_from(["stored", "deflated", "lzma"]),
          dt=st.sampled_from([0.1, 1e308, 5e-324, -1.0, float("nan"), 0.0]))
def check_import(made, small_bounds, cut, flips, layout, dt):
    """``hogn import`` of a damaged ``.npz`` archive (any compression, any dt): a
    dataset or one line with exit 2; the output is written only on success."""
    import zipfile

    folder = Path(tempfile.mkdtemp())
    try:
        src = folder / "a.npz"
        q = np.random.default_rng(0).normal(size=(2, 5, 3, 2))
        method = {"stored": zipfile.ZIP_STORED, "deflated": zipfile.ZIP_DEFLATED,
                  "lzma": zipfile.ZIP_LZMA}[layout]
        with zipfile.ZipFile(src, "w", method) as archive:
            for key, value in (("q", q), ("p", -q), ("dt", np.array(dt))):
                buffer = io.BytesIO()
                np.save(buffer, value)
                archive.writestr(f"{key}.npy", buffer.getvalue())
        src.write_bytes(_mutate(src.read_bytes(), cut, flips, []))
        out = folder / "d.pt"
        status, _, err = run_cli(["import", str(src), "-o", str(out)])
        assert_documented(status, err)
        assert out.exists() == (status == 0)
        if status == 0:
            data = systems.load(out)
            assert bool(torch.isfinite(data.t).all()) and bool(torch.isfinite(data.q).all())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


test_import, test_import_slow = check_import


# ------------------------------------------------------------ Python API
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5),
                    st.booleans(), st.none(), st.text(max_size=3),
                    st.sampled_from([1e-3, 0.5, 1, 2, 0.0, -0.0]))
CHECKS = [checks.positive_float, checks.nonnegative_float, checks.finite_float,
          checks.fraction, checks.tolerance, checks.positive_int, checks.nonnegative_int]


@variants(300, 3000, check=st.sampled_from(CHECKS), value=NUMBERS)
def check_validators(check, value):
    try:
        result = check(value, "x")
    except checks.CheckError as exc:
        assert str(exc).startswith("x must be") or str(exc).startswith("x "), exc
        return
    assert result == value and not isinstance(value, bool | str)  # returned as given
    assert math.isfinite(result)


test_validators, test_validators_slow = check_validators


class _Tiny:
    data = systems.generate("pendulum", trajectories=4, steps=4, dt=0.1, seed=0,
                            test_fraction=0.0, progress=False)


@variants(25, 250, key=st.sampled_from(["lr", "grad_clip", "val_fraction", "epochs",
                                        "batch_size", "max_samples", "weight_decay",
                                        "seed", "checkpoint_seconds", "device"]),
          value=st.one_of(NUMBERS, st.sampled_from(["cpu", "cuda:7", "nosuch"])))
def check_train_api(key, value):
    torch.manual_seed(0)
    model = hogn.models.for_data("hnn", _Tiny.data, hidden=4)
    options = {"epochs": 1, "batch_size": 8, "max_samples": 8, key: value}
    try:
        with time_bound():
            hogn.train(model, _Tiny.data, progress=False, **options)
    except ValueError:  # hogn.train.NonFiniteLossError is a FloatingPointError
        return
    except FloatingPointError:
        assert key in ("lr", "weight_decay"), (key, value)
        return
    # accepted: the value is one the rule accepts
    assert not isinstance(value, bool | str) or key == "device", (key, value)


test_train_api, test_train_api_slow = check_train_api
