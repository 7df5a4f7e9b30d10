"""The training run folder: metrics appended, one atomic checkpoint per save, checkpoint
frequency, and a run killed at any instant (simulated between any two writes, and by
real SIGKILLs of a subprocess) resumes to bit-for-bit the same weights and metrics."""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

import hogn
import hogn.io
import systems
from hogn.io import load_checked

training = importlib.import_module("hogn.train")  # the package (hogn.train is the function)
loop = importlib.import_module("hogn.train.loop")  # where the loop looks its helpers up

# many batches per epoch (the batch order matters), the cosine schedule and the random
# subset of max_samples (the sampler's own draws): every state a resume must restore
SETTINGS = {"epochs": 5, "batch_size": 8, "lr": 3e-3, "schedule": "cosine",
            "max_samples": 40, "progress": False}
DATA = systems.generate("spring-nbody", trajectories=8, steps=8, dt=0.05,
                        n_particles=(3, 4), seed=0, progress=False)


def make_model() -> hogn.models.DynamicsModel:
    torch.manual_seed(0)
    return hogn.models.get("hogn", dim=2, node_constants=1, edge_features=2, hidden=8)


class Killed(BaseException):
    """A simulated SIGKILL: no ``except Exception`` catches it."""


def _rows(run: Path) -> list[dict]:
    """metrics.jsonl's rows without the wall time (the one field that may differ)."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return hogn.models.load(path).state_dict()


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _outcome(run: Path, model: torch.nn.Module) -> dict:
    """What a finished run leaves: its rows, the returned (best) weights, the files."""
    return {"rows": _rows(run), "returned": {k: v.clone() for k, v in model.state_dict().items()},
            "best.pt": _weights(run / "best.pt"), "last.pt": _weights(run / "last.pt")}


def _assert_same_outcome(got: dict, want: dict) -> None:
    assert got["rows"] == want["rows"]  # every float compared exactly (JSON round-trips)
    for key in ("returned", "best.pt", "last.pt"):
        _assert_same(got[key], want[key])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One uninterrupted run per setting (checkpoints every 2 epochs)."""
    cache = {}

    def get(**overrides):
        key = tuple(sorted(overrides.items()))
        if key not in cache:
            run = tmp_path_factory.mktemp("straight") / "run"
            model = make_model()
            result = hogn.train(model, DATA, run, **{**SETTINGS, **overrides})
            cache[key] = (_outcome(run, model), result)
        return cache[key][0]
    return get


class _Writes:
    """Counts the run folder's writes (atomic file writes and metrics lines); with
    ``kill_after``, a simulated kill once that many writes are done: the next write and
    every one after it raise :class:`Killed` before writing anything."""

    def __init__(self, monkeypatch, kill_after: int | None = None) -> None:
        self.done, self.kill_after, self.names = 0, kill_after, []
        real_write, real_append = hogn.io.atomic_write, loop._append_line

        def counted(real, name_of):
            def wrapper(*args, **kwargs):
                if self.kill_after is not None and self.done >= self.kill_after:
                    raise Killed(f"killed after {self.done} writes")
                out = real(*args, **kwargs)
                self.done += 1
                self.names.append(name_of(*args))
                return out
            return wrapper

        monkeypatch.setattr(hogn.io, "atomic_write", counted(real_write, lambda p, _: Path(p).name))
        monkeypatch.setattr(loop, "_append_line",
                            counted(real_append, lambda *_: "metrics.jsonl"))


def test_metrics_are_appended_and_equal_an_unsaved_run(straight, tmp_path, monkeypatch):
    writes = _Writes(monkeypatch)
    model = make_model()
    result = hogn.train(model, DATA, tmp_path / "run", checkpoint_every=2,
                        checkpoint_seconds=0, **SETTINGS)
    # one line appended per epoch, never rewritten; checkpoints after epochs 2, 4, 5,
    # each followed by the model files written from the same state
    assert writes.names == ["config.json", "metrics.jsonl", "metrics.jsonl",
                            "checkpoint.pt", "last.pt", "best.pt", "metrics.jsonl",
                            "metrics.jsonl", "checkpoint.pt", "last.pt", "best.pt",
                            "metrics.jsonl", "checkpoint.pt", "last.pt", "best.pt"]
    bare = make_model()
    bare_result = hogn.train(bare, DATA, **SETTINGS)
    assert [r["epoch"] for r in _rows(tmp_path / "run")] == [1, 2, 3, 4, 5]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in bare_result.history]
    assert _rows(tmp_path / "run") == strip
    assert result.best_val == bare_result.best_val
    _assert_same(model.state_dict(), bare.state_dict())
    checkpoint = load_checked(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["epoch"] == 5
    assert checkpoint["metrics_length"] == (tmp_path / "run" / "metrics.jsonl").stat().st_size
    _assert_same(checkpoint["model"], _weights(tmp_path / "run" / "last.pt"))


def test_default_saves_do_not_grow_with_the_epoch_count(tmp_path, monkeypatch):
    """The default (by time, 30 s) checkpoints a short run once, at its end, so its
    file writes are one line per epoch plus a constant."""
    counts = {}
    for epochs in (2, 6):
        monkeypatch.undo()
        writes = _Writes(monkeypatch)
        hogn.train(make_model(), DATA, tmp_path / f"e{epochs}", **{**SETTINGS, "epochs": epochs})
        counts[epochs] = writes.names
    for epochs, names in counts.items():
        assert names.count("metrics.jsonl") == epochs
        assert [n for n in names if n != "metrics.jsonl"] == [
            "config.json", "checkpoint.pt", "last.pt", "best.pt"]
    # by time: a checkpoint whenever the interval has passed (here: after every epoch)
    monkeypatch.undo()
    writes = _Writes(monkeypatch)
    hogn.train(make_model(), DATA, tmp_path / "timed", checkpoint_seconds=1e-9, **SETTINGS)
    assert writes.names.count("checkpoint.pt") == SETTINGS["epochs"]


@pytest.mark.parametrize("overrides", [{}, {"max_samples": 0, "schedule": "none"}],
                         ids=["subset-cosine", "shuffled-all"])
def test_a_kill_between_any_two_writes_resumes_bit_for_bit(straight, tmp_path, monkeypatch,
                                                          overrides):
    """For every n: kill after the n-th write of the run folder (nothing written after
    it, as after a SIGKILL), resume, compare with the uninterrupted run."""
    settings = {**SETTINGS, **overrides, "checkpoint_every": 2, "checkpoint_seconds": 0}
    want = straight(**overrides, checkpoint_every=2, checkpoint_seconds=0)
    total = _Writes(monkeypatch)
    hogn.train(make_model(), DATA, tmp_path / "count", **settings)
    assert total.done == 15
    for n in range(total.done):
        run = tmp_path / f"kill{n}"
        _Writes(monkeypatch, kill_after=n)
        with pytest.raises(Killed):
            hogn.train(make_model(), DATA, run, **settings)
        monkeypatch.undo()
        model = make_model()  # fresh weights: the resume takes them from the folder
        hogn.train(model, DATA, run, **settings)
        try:
            _assert_same_outcome(_outcome(run, model), want)
        except AssertionError as exc:
            raise AssertionError(f"killed after write {n} of {total.names}: {exc}") from exc


def test_kills_during_resumes_resume_bit_for_bit(straight, tmp_path, monkeypatch):
    settings = {**SETTINGS, "checkpoint_every": 2, "checkpoint_seconds": 0}
    want = straight(checkpoint_every=2, checkpoint_seconds=0)
    run = tmp_path / "run"
    for kill_after in (7, 3, 1, 4):  # each run is killed after so many of its own writes
        _Writes(monkeypatch, kill_after=kill_after)
        try:
            hogn.train(make_model(), DATA, run, **settings)
        except Killed:
            pass
        monkeypatch.undo()
    model = make_model()
    hogn.train(model, DATA, run, **settings)
    _assert_same_outcome(_outcome(run, model), want)


def test_an_interrupted_run_saves_its_last_finished_epoch(straight, tmp_path, monkeypatch):
    """Ctrl-C (or any exception) during epoch 4 checkpoints epoch 3 although no
    checkpoint was due; the resume goes on from there and ends as the straight run."""
    settings = {**SETTINGS, "checkpoint_every": 0, "checkpoint_seconds": 0}
    want = straight(checkpoint_every=0, checkpoint_seconds=0)
    monkeypatch.setattr(loop, "_SNAPSHOT_SECONDS", 0.0)  # a copy after every epoch
    real_epoch, calls = loop._epoch, []

    def interrupted(model, loader, cfg, dt, optimizer, epoch, progress):
        if optimizer is not None and epoch == 4:
            raise KeyboardInterrupt
        calls.append(epoch)
        return real_epoch(model, loader, cfg, dt, optimizer, epoch, progress)

    monkeypatch.setattr(loop, "_epoch", interrupted)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        hogn.train(make_model(), DATA, run, **settings)
    monkeypatch.undo()
    assert load_checked(run / "checkpoint.pt")["epoch"] == 3
    assert [r["epoch"] for r in _rows(run)] == [1, 2, 3]
    model = make_model()
    hogn.train(model, DATA, run, **settings)
    _assert_same_outcome(_outcome(run, model), want)


def _child(run: Path, settings: dict, ready) -> None:
    ready.set()
    hogn.train(make_model(), DATA, run, **settings)


def _kill_chain(tmp_path: Path, instants: int, epochs: int, seed: int) -> None:
    """Start a training subprocess in one folder ``instants`` times, SIGKILL each at a
    random instant of its training, then finish the run here; compare with a straight
    run (checkpoint after every epoch: the kills land in every kind of window). The
    subprocesses are forked from this one (no second start-up of torch: ~7 s each on
    a busy machine), torch limited to one thread as in the whole test run."""
    settings = {**SETTINGS, "epochs": epochs, "checkpoint_every": 1, "checkpoint_seconds": 0}
    straight_run = tmp_path / "straight"
    started = time.perf_counter()
    model = make_model()
    hogn.train(model, DATA, straight_run, **settings)
    want = _outcome(straight_run, model)
    duration = time.perf_counter() - started
    rng = random.Random(seed)
    run = tmp_path / "killed"
    fork = multiprocessing.get_context("fork")
    delays, codes = [], []
    for _ in range(instants):
        ready = fork.Event()
        proc = fork.Process(target=_child, args=(run, settings, ready), daemon=True)
        proc.start()
        try:
            assert ready.wait(60), "the training subprocess did not start"
            delays.append(round(rng.uniform(0.0, 0.5 * duration), 3))
            time.sleep(delays[-1])
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.join(60)
            if proc.is_alive():
                proc.kill()
                proc.join()
        codes.append(proc.exitcode)
    assert -signal.SIGKILL in codes, codes  # at least one was killed, not finished
    model = make_model()
    hogn.train(model, DATA, run, **settings)
    try:
        _assert_same_outcome(_outcome(run, model), want)
    except AssertionError as exc:
        raise AssertionError(f"SIGKILLs {delays} s after the start (seed {seed}; exit "
                             f"codes {codes}): {exc}") from exc
    assert not [p.name for p in run.iterdir() if hogn.io.is_temp_file(p)]


def test_sigkilled_subprocesses_resume_bit_for_bit(tmp_path):
    _kill_chain(tmp_path, instants=5, epochs=20, seed=int(time.time()) % 10_000)


@pytest.mark.slow
def test_twenty_sigkills_resume_bit_for_bit(tmp_path):
    _kill_chain(tmp_path, instants=20, epochs=60, seed=int(time.time()) % 10_000)


def test_temp_files_of_killed_writes_are_removed(tmp_path):
    seen = []

    def peek(fh):  # atomic_write's own temporary name, while it writes
        seen.extend(p for p in tmp_path.iterdir() if p.name != "x.bin")
        fh.write(b"x")

    hogn.io.atomic_write(tmp_path / "x.bin", peek)
    assert len(seen) == 1 and hogn.io.is_temp_file(seen[0])
    # a folder holding only a killed config.json write is an empty folder
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / ".config.json.a1b2_c3d.tmp").write_text("{")
    hogn.train(make_model(), DATA, fresh, **{**SETTINGS, "epochs": 1})
    assert sorted(p.name for p in fresh.iterdir()) == [
        ".lock", "best.pt", "checkpoint.pt", "config.json", "last.pt", "metrics.jsonl"]
    # the same run again: its leftovers go, files of other names stay
    junk = [".checkpoint.pt.k2j4h5g6.tmp", ".best.pt.zzzzzzzz.tmp", ".metrics.jsonl.abc_1234.tmp"]
    kept = [".checkpoint.pt.ABCDEFGH.tmp", ".notes.tmp", "checkpoint.pt.k2j4h5g6.tmp",
            ".best.pt.k2j4h5g6.tmp.bak", ".last.pt.short.tmp"]
    for name in junk + kept:
        (fresh / name).write_bytes(b"partial")
    hogn.train(make_model(), DATA, fresh, **{**SETTINGS, "epochs": 2})
    names = {p.name for p in fresh.iterdir()}
    assert not names & set(junk) and set(kept) <= names
    # a folder holding another run is refused and left untouched
    with pytest.raises(ValueError, match="different run"):
        hogn.train(make_model(), DATA, fresh, **{**SETTINGS, "lr": 0.5})
    assert set(kept) <= {p.name for p in fresh.iterdir()}
    other = tmp_path / "other"
    other.mkdir()
    (other / ".data.pt.k2j4h5g6.tmp").write_text("x")
    (other / "mine.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        hogn.train(make_model(), DATA, other, **SETTINGS)
    assert len(list(other.iterdir())) == 2


@pytest.mark.parametrize("key, value, match", [
    ("checkpoint_every", -1, "checkpoint_every must be an int >= 0"),
    ("checkpoint_every", 2.0, "checkpoint_every must be an int >= 0"),
    ("checkpoint_every", True, "checkpoint_every must be an int >= 0"),
    ("checkpoint_seconds", -1.0, "checkpoint_seconds must be a finite number >= 0"),
    ("checkpoint_seconds", float("nan"), "checkpoint_seconds must be a finite number >= 0"),
    ("checkpoint_seconds", float("inf"), "checkpoint_seconds must be a finite number >= 0"),
    ("checkpoint_seconds", "30", "checkpoint_seconds must be a finite number >= 0"),
])
def test_bad_checkpoint_options_are_refused(key, value, match):
    with pytest.raises(ValueError, match=match):
        hogn.train(make_model(), DATA, **{**SETTINGS, key: value})


def test_checkpoint_options_may_change_on_resume(straight, tmp_path):
    """... and so may the epoch count (without a schedule: a cosine schedule anneals
    over the epoch count of the run's start)."""
    settings = {**SETTINGS, "schedule": "none"}
    run = tmp_path / "run"
    hogn.train(make_model(), DATA, run, **{**settings, "epochs": 2, "checkpoint_every": 1})
    model = make_model()
    hogn.train(model, DATA, run, **{**settings, "checkpoint_seconds": 5.0})
    got = _outcome(run, model)
    del got["rows"][1]["test_loss"]  # the first call's last row scored its best weights
    _assert_same_outcome(got, straight(schedule="none"))


def test_a_checkpoint_of_the_earlier_layout_resumes(straight, tmp_path):
    """Folders written before checkpoint version 2 (optimizer state only; the weights
    in last.pt) resume, with the same result."""
    settings = {**SETTINGS, "schedule": "none"}  # the epoch count grows from 3 to 5
    run = tmp_path / "run"
    hogn.train(make_model(), DATA, run, **{**settings, "epochs": 3})
    new = load_checked(run / "checkpoint.pt")
    old = {k: new[k] for k in ("optimizer", "epoch", "best", "best_epoch", "scheduler")}
    old["generator"] = new["rng"]["generator"]
    torch.save(old, run / "checkpoint.pt")
    with open(run / "metrics.jsonl", "a") as fh:  # a line the old code wrote before crashing
        fh.write('{"epoch": 4}\n')
    model = make_model()
    hogn.train(model, DATA, run, **settings)
    got = _outcome(run, model)
    del got["rows"][2]["test_loss"]  # the first call's last row scored its best weights
    _assert_same_outcome(got, straight(schedule="none"))


def test_a_shortened_metrics_file_is_refused(tmp_path):
    run = tmp_path / "run"
    hogn.train(make_model(), DATA, run, **{**SETTINGS, "epochs": 2})
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"metrics.jsonl holds 0 bytes but the checkpoint"):
        hogn.train(make_model(), DATA, run, **SETTINGS)


def test_hogn_train_takes_the_checkpoint_options(tmp_path, capsys):
    from hogn.cli import main

    data = DATA.save(tmp_path / "springs.pt")
    run = tmp_path / "run"
    argv = ["train", "hogn", str(data), "--hidden", "8", "--epochs", "3", "--quiet",
            "--checkpoint-every", "2", "--checkpoint-seconds", "0", "-o", str(run)]
    assert main(argv) == 0
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["checkpoint_every"], train["checkpoint_seconds"]) == (2, 0.0)
    assert load_checked(run / "checkpoint.pt")["epoch"] == 3
    assert main([*argv[:-4], "--checkpoint-every", "-2", "-o", str(tmp_path / "x")]) == 2
    assert "checkpoint_every must be an int >= 0" in capsys.readouterr().err
