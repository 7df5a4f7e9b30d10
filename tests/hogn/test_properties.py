"""Property-based hostility (hypothesis): command-line arguments, damaged files and
Python API inputs.

Every case must end, within a time bound, either in success whose result holds
exactly what was asked (no value silently replaced), or in the documented error: one
line on stderr and exit status 2 (CLI), ``ValueError`` (API); never a traceback, a
hang, or a damaged file. The default run is small (682 cases; the 100 of ``hogn
meta-train`` and ``hogn adapt`` take about 40 s of CPU on a 2-core machine, their tiny
run and its data included); ``-m slow`` runs the same properties with ten times the
cases. Run with ``--hypothesis-show-statistics`` to see the number of cases.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, example, given, settings  # noqa: E402
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


def variants(fast: int, slow: int, examples: Sequence[dict[str, Any]] = (),
             **strategies: st.SearchStrategy) -> Callable:
    """The property as a default test (``fast`` cases) and a slow one (``slow``), each
    first run on the explicit ``examples`` (cases that once failed: every argument of
    the property, by name)."""
    def wrap(fn: Callable) -> tuple[Callable, Callable]:
        common = {"deadline": None, "derandomize": True, "database": None,
                  "suppress_health_check": list(HealthCheck),
                  "phases": [Phase.explicit, Phase.generate, Phase.shrink]}

        def build(cases: int) -> Callable:
            test = given(**strategies)(fn)
            for case in examples:
                test = example(**case)(test)
            return settings(max_examples=cases, **common)(test)
        return build(fast), pytest.mark.slow(build(slow))
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


DAMAGES = {"how": st.sampled_from(["truncate", "flip", "empty", "other-kind", "text",
                                   "folder", "missing", "version"]),
           "cut": st.floats(0, 1),
           "flips": st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1,
                             max_size=8)}
"""How a file is damaged (see :func:`_corrupt`)."""


@variants(50, 500,
          target=st.sampled_from(["data.pt", "best.pt", "checkpoint.pt", "config.json",
                                  "metrics.jsonl", "last.pt"]),
          **DAMAGES)
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


# ------------------------------------------------------------ meta-learning
META_TINY = {"--iterations": "1", "--trajectories": "2", "--shots": "4", "--meta-batch": "1",
             "--hidden": "2"}  # the smallest run the command takes: ~1 s a case
META_KEYS = {"--iterations": "iterations", "--trajectories": "trajectories",
             "--shots": "shots", "--inner-steps": "inner_steps", "--inner-lr": "inner_lr",
             "--outer-lr": "outer_lr", "--meta-batch": "meta_batch", "--loss": "loss",
             "--grad-clip": "grad_clip", "--checkpoint-every": "checkpoint_every",
             "--seed": "seed", "--ridge": "ridge", "--dtype": "dtype", "--model": "model",
             "--algorithm": "algorithm"}


@pytest.fixture(scope="module")
def meta_data():
    """The training data of the meta-learning properties, generated once per (systems,
    trajectories) and reused whatever the seed: the properties are about the commands'
    arguments and files, and ground truth of six systems takes seconds a time."""
    from meta import protocol

    real, cache = protocol.load_systems, {}

    def load_systems(names, trajectories, seed=0, **options):
        key = (tuple(names), trajectories)
        if key not in cache:
            cache[key] = real(names, trajectories, 0, **options)
        return cache[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(protocol, "load_systems", load_systems)
        yield


@pytest.fixture(scope="module")
def meta_run(tmp_path_factory, meta_data):
    """A tiny finished meta-learning run (pendulum held out) and its folder."""
    run = tmp_path_factory.mktemp("meta-props") / "run"
    argv = ["meta-train", "--holdout", "pendulum", "--quiet", "-o", str(run)]
    for flag, value in META_TINY.items():
        argv += [flag, value]
    status, _, err = run_cli(argv)
    assert status == 0, err
    return run


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name → bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


BIG = "100000000"  # a size that must be refused before any work (memory, time)
META_TRAIN = {"--iterations": (["1", "2"], False), "--trajectories": (["2", BIG], False),
              "--shots": (["1", "8", "99", BIG], True), "--inner-steps": (["1", "2", BIG], True),
              "--inner-lr": (["0.1", "1e300"], True), "--outer-lr": (["1e-3", "1e300"], True),
              "--meta-batch": (["1", "2", BIG], True), "--grad-clip": (["0", "1"], True),
              "--checkpoint-every": (["1", "100"], True), "--seed": (["0", "1"], True),
              "--hidden": (["2", "4", BIG], True), "--layers": (["1", "2", BIG], False),
              "--features": (["2", "4", BIG], True), "--ridge": (["1e-3", "0.1"], True)}


def _some(flags: dict[str, tuple[list[str], bool]], most: int = 3) -> st.SearchStrategy:
    """Up to ``most`` of ``flags`` (flag → (valid values, long_ok)), each with a value of
    :func:`_flag`: few enough that a case is often accepted, and its work then done."""
    names = st.lists(st.sampled_from(sorted(flags)), unique=True, max_size=most)
    return names.flatmap(lambda chosen: st.fixed_dictionaries(
        {k: _flag(flags[k][0], long_ok=flags[k][1]) for k in chosen}))


def _meta_case(before: str = "new", model: str | None = None, algorithm: str | None = None,
               switches: frozenset[str] = frozenset(), **values: str) -> dict[str, Any]:
    """An explicit case of :func:`check_meta_train` (flags as keywords: ``hidden=BIG``)."""
    return {"values": {f"--{k.replace('_', '-')}": v for k, v in values.items()},
            "holdout": "pendulum", "model": model, "algorithm": algorithm, "loss": None,
            "dtype": None, "switches": set(switches), "before": before}


META_TRAIN_FOUND = [  # each one a traceback, a hang, or a half-made folder (now refused)
    _meta_case(hidden=BIG), _meta_case(layers=BIG), _meta_case(meta_batch=BIG),
    _meta_case(inner_steps=BIG), _meta_case(shots=BIG), _meta_case(shots="100"),
    _meta_case(model="hnn-basis", features=BIG),
    _meta_case(algorithm="fomaml", outer_lr="1e300"),
    _meta_case(model="mlp", switches=frozenset({"--meta-sgd"}), inner_lr="1e300"),
    _meta_case(before="file"), _meta_case(before="run")]


@variants(25, 250, examples=META_TRAIN_FOUND, values=_some(META_TRAIN),
          holdout=st.sampled_from(["pendulum", "pendulum", "spring", ""]),
          model=st.sampled_from([None, "hnn", "mlp", "hogn", "hnn-basis", "hogn-basis", "x"]),
          algorithm=st.sampled_from([None, "maml", "fomaml", "reptile", "closed-form", "x"]),
          loss=st.sampled_from([None, "logcosh", "mse", "x"]),
          dtype=st.sampled_from([None, "float32", "float64", "float16"]),
          switches=st.sets(st.sampled_from(["--meta-sgd", "--anil", "--no-pretrain"])),
          before=st.sampled_from(["new", "new", "empty", "file", "folder", "run"]))
def check_meta_train(meta_run, small_bounds, values, holdout, model, algorithm, loss, dtype,
                     switches, before):
    """``hogn meta-train`` with hostile numbers and choices, into a new folder, an empty
    one, a file, someone's folder or a finished run: success leaves a run folder that
    ``hogn adapt`` reads, holding the options asked; otherwise one line with exit 2 and
    the output as it was (nothing made), but for a loss that is not finite, which keeps
    the run's last checkpoint to resume from."""
    from meta import protocol

    folder = Path(tempfile.mkdtemp())
    try:
        run = folder / "run"
        if before == "empty":
            run.mkdir()
        elif before == "file":
            run.write_bytes(b"the user's own file")
        elif before == "folder":
            run.mkdir()
            (run / "notes.txt").write_text("the user's own notes\n")
        elif before == "run":
            shutil.copytree(meta_run, run)
        was = _files(folder)
        argv = ["meta-train", f"--holdout={holdout}", "--quiet", "-o", str(run), *switches]
        for flag, value in (("--model", model), ("--algorithm", algorithm), ("--loss", loss),
                            ("--dtype", dtype)):
            if value is not None:
                argv.append(f"{flag}={value}")
        asked = {k: v for k, v in values.items() if v is not None}
        for flag, value in {**META_TINY, **asked}.items():
            argv.append(f"{flag}={value}")
        status, _, err = run_cli(argv)
        assert_documented(status, err)
        if status != 0:
            if "not finite" in err or "positive definite" in err:  # found while training
                assert (run / "config.json").is_file(), err  # a run to resume (or mend)
            else:
                assert _files(folder) == was, err  # nothing made, nothing changed
                assert before != "new" or not run.exists(), err
            return
        assert before in ("new", "empty", "run"), (before, argv)
        loaded = protocol.load_run(run)  # what hogn adapt reads
        recorded = {**vars(loaded.config), **loaded.config.model_args}
        for flag, value in {**asked, "--model": model, "--loss": loss, "--dtype": dtype,
                            "--algorithm": algorithm}.items():
            key = META_KEYS.get(flag, flag[2:])
            if value is None or key not in recorded:
                continue
            expected = value if isinstance(recorded[key], str) else type(recorded[key])(value)
            assert recorded[key] == expected, (flag, value, recorded[key])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


test_meta_train_arguments, test_meta_train_arguments_slow = check_meta_train


ADAPT = {"--steps": (["0", "1", "3", BIG], False), "--trajectories": (["1", "2", BIG], False),
         "--shots": (["1", "8", BIG], True), "--inner-lr": (["0.1", "1e300"], True),
         "--noise": (["0", "0.05"], True), "--ridge": (["1e-3"], True),
         "--seed": (["0", "1"], True), "--eval-steps": (["0", "1"], False)}


ADAPT_FOUND = [  # a hang (no bound on the trajectories to roll out), a value replaced
    {"values": {"--steps": "0", "--trajectories": BIG}, "system": None, "baselines": None},
    {"values": {}, "system": "", "baselines": None}]


@variants(25, 250, examples=ADAPT_FOUND, values=_some(ADAPT),
          system=st.sampled_from([None, "pendulum", "mass-spring", "spring", ""]),
          baselines=st.sampled_from([None, "zero", "affine", "x"]))
def check_adapt(meta_run, small_bounds, values, system, baselines):
    """``hogn adapt`` with hostile numbers and choices: success writes the --json asked,
    holding the values asked; otherwise one line with exit 2, and the run as it was."""
    folder = Path(tempfile.mkdtemp())
    try:
        out = folder / "a.json"
        was = _files(meta_run)
        argv = ["adapt", str(meta_run), "--quiet", "--json", str(out)]
        if system is not None:
            argv.append(f"--system={system}")
        if baselines is not None:
            argv += ["--baselines", baselines]
        asked = {k: v for k, v in values.items() if v is not None}
        for flag, value in {"--steps": "1", "--trajectories": "1", **asked}.items():
            argv.append(f"{flag}={value}")
        status, _, err = run_cli(argv)
        assert_documented(status, err)
        assert _files(meta_run) == was  # reading a run never changes it
        assert out.exists() == (status == 0), err
        if status == 0:
            saved = json.loads(out.read_text())
            for flag in ("--steps", "--trajectories", "--shots", "--seed", "--inner-lr",
                         "--noise"):
                if flag in asked:
                    key = flag[2:].replace("-", "_")
                    assert saved[key] == type(saved[key])(asked[flag]), (flag, saved[key])
            if "--eval-steps" in asked:
                assert saved["eval_steps"] == [int(asked["--eval-steps"])]
            if baselines is not None:
                assert baselines in saved["summary"]
            assert saved["system"] == (system if system is not None else "pendulum")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


test_adapt_arguments, test_adapt_arguments_slow = check_adapt


CURVES = "adapt-pendulum-curves.png"


@variants(25, 250, examples=[  # the plots into a file, after -o and --json were written
    {"output": "a.out", "json_out": "b.out", "plot": True, "plot_dir": "data.pt",
     "old_plot": False, "force": True}],
          output=st.sampled_from(["a.out", "b.out", "data.pt", "dir", CURVES, None]),
          json_out=st.sampled_from(["a.out", "b.out", "data.pt", "dir", CURVES, None]),
          plot=st.booleans(), plot_dir=st.sampled_from([None, ".", "dir", "new", "data.pt"]),
          old_plot=st.booleans(), force=st.booleans())
def check_adapt_outputs(meta_run, small_bounds, output, json_out, plot, plot_dir, old_plot,
                        force):
    """``hogn adapt`` -o, --json and --plot (into the run, a folder, a new folder or a
    file) naming new files, existing ones (with and without --force), a folder, or each
    other: success writes each file asked and no other; otherwise one line with exit 2,
    before any work, and every file as it was."""
    folder = Path(tempfile.mkdtemp())
    try:
        shutil.copytree(meta_run, folder / "run")
        (folder / "dir").mkdir()
        (folder / "data.pt").write_bytes(b"the user's own file")
        if old_plot:
            (folder / CURVES).write_bytes(b"an earlier figure")
        was = _files(folder)
        argv = ["adapt", str(folder / "run"), "--steps", "1", "--trajectories", "1", "--quiet",
                *(["--force"] if force else [])]
        for flag, name in (("-o", output), ("--json", json_out)):
            if name is not None:
                argv += [flag, str(folder / name)]
        if plot:
            argv.append("--plot")
        if plot_dir is not None:
            argv += ["--plot-dir", str(folder / plot_dir)]
        status, _, err = run_cli(argv)
        assert_documented(status, err)
        named = [n for n in (output, json_out) if n is not None]
        where = "run" if plot_dir is None else plot_dir
        pictures = [str(Path(where) / f"adapt-pendulum-{kind}.png")
                    for kind in ("curves", "trajectories")] if plot else []
        every = [str(Path(n)) for n in [*named, *pictures]]
        clash = (len(set(every)) < len(every) or "dir" in named
                 or (plot and plot_dir == "data.pt")
                 or (not force and any(n in was for n in every)))
        assert (status == 2) == clash, (argv, err)
        now = _files(folder)
        if status == 2:
            assert now == was, err
        else:
            assert set(now) == set(was) | set(every), (sorted(now), every)
            assert all(now[n] == raw for n, raw in was.items() if n not in every)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


test_adapt_outputs, test_adapt_outputs_slow = check_adapt_outputs


@variants(25, 250,
          target=st.sampled_from(["config.json", "init.pt", "meta.pt", "pretrained.pt",
                                  "checkpoint-meta.pt", "metrics.jsonl"]),
          **DAMAGES)
def check_adapt_damaged(meta_run, small_bounds, target, how, cut, flips):
    """``hogn adapt`` of a run folder with a damaged record or weights file: one line
    with exit 2 naming it (or the run folder), or success where the damage missed
    anything read; no file of the run changes."""
    folder = Path(tempfile.mkdtemp())
    try:
        run = folder / "run"
        shutil.copytree(meta_run, run)
        path = run / target
        other = run / ("config.json" if target.endswith(".pt") else "meta.pt")
        _corrupt(path, how, cut, flips, other)
        was = _files(run)
        status, _, err = run_cli(["adapt", str(run), "--steps", "1", "--trajectories", "1",
                                  "--quiet"])
        assert_documented(status, err)
        if status == 2 and how != "missing":
            assert target in err or "run folder" in err, err
        assert _files(run) == was
    finally:
        shutil.rmtree(folder, ignore_errors=True)


test_adapt_damaged, test_adapt_damaged_slow = check_adapt_damaged


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
