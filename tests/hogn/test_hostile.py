"""A hostile user: damaged, foreign and missing files, full disks, signals at any time,
data without node constants, the best weights without validation data.

Every case ends in the documented way: exit 0, or one line on stderr with exit 2
(130/143 after SIGINT/SIGTERM), never a traceback, and the files on disk intact.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import hogn
import systems
from hogn import io as hio
from hogn.cli import main
from hogn.io import load_checked

training = importlib.import_module("hogn.train")  # the package (hogn.train is the function)
loop = importlib.import_module("hogn.train.loop")  # where the loop looks _epoch up
train_epochs = importlib.import_module("hogn.train.epochs")  # where _epoch looks _batch_loss up
TRAIN = ["--hidden", "8", "--max-samples", "32", "--batch-size", "16", "--quiet"]


@pytest.fixture(scope="module")
def files(tmp_path_factory, cli_run):
    return cli_run(tmp_path_factory.mktemp("hostile"), particles="3",
                   trajectories=6, steps=8, epochs=1, train=TRAIN)


def _error(capsys, argv, match, status=2):
    assert main(argv) == status
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert match in err, err
    return err


def _copy_run(run: Path, to: Path) -> Path:
    to.mkdir()
    for f in run.iterdir():
        (to / f.name).write_bytes(f.read_bytes())
    return to


# ------------------------------------------------------------------ damaged files
def test_a_folder_given_as_a_file_is_named_as_such(files, capsys):
    root, _, run = files
    _error(capsys, ["info", str(root)], "is a folder, not a hogn-dataset file")
    _error(capsys, ["evaluate", str(run), str(root)], "is a folder")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "list", "no-keys", "version"])
def test_a_damaged_checkpoint_is_named_on_resume(files, capsys, tmp_path, damage):
    _, data, run = files
    copy = _copy_run(run, tmp_path / "run")
    ckpt = copy / "checkpoint.pt"
    raw = ckpt.read_bytes()
    if damage == "truncate":
        ckpt.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        ckpt.write_bytes(bytes(b ^ 0x5A for b in raw[:4096]) + raw[4096:])
    elif damage == "list":
        torch.save([1, 2, 3], ckpt)
    elif damage == "no-keys":
        torch.save({"version": 2, "epoch": 1}, ckpt)
    else:
        torch.save({"version": 99}, ckpt)
    before = {f.name: f.read_bytes() for f in copy.iterdir()}
    err = _error(capsys, ["train", "hogn", str(data), "--epochs", "2", *TRAIN, "-o",
                          str(copy)], "checkpoint.pt")
    assert ("train into a new run folder" in err or "version" in err
            or "go on from the previous checkpoint checkpoint.prev.pt" in err)
    assert {f.name: f.read_bytes() for f in copy.iterdir()} == before  # nothing changed


def test_flipped_bytes_in_a_checkpoint_are_refused_and_the_previous_one_goes_on(
        files, capsys, tmp_path):
    """Eight flipped bytes in the middle of checkpoint.pt: its checksum fails, the
    resume is refused in one line naming it; deleting it resumes from the previous
    checkpoint, which every checkpoint write keeps."""
    _, data, _ = files
    run = tmp_path / "run"
    assert main(["train", "hogn", str(data), "--epochs", "2", "--checkpoint-every", "1",
                 *TRAIN, "-o", str(run)]) == 0
    ckpt, previous = run / "checkpoint.pt", run / "checkpoint.prev.pt"
    assert previous.is_file()
    raw = bytearray(ckpt.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 8] = bytes(b ^ 0xFF for b in raw[middle:middle + 8])
    ckpt.write_bytes(bytes(raw))
    before = {f.name: f.read_bytes() for f in run.iterdir()}
    err = _error(capsys, ["train", "hogn", str(data), "--epochs", "3", *TRAIN, "-o",
                          str(run)], "checkpoint.pt")
    assert "checkpoint.prev.pt" in err and ("checksum" in err or "damaged" in err), err
    assert {f.name: f.read_bytes() for f in run.iterdir()} == before
    ckpt.unlink()
    assert main(["train", "hogn", str(data), "--epochs", "3", *TRAIN, "-o", str(run)]) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert hio.load_checked(run / "checkpoint.pt")["epoch"] == 3


def test_a_checked_file_refuses_any_flipped_byte(tmp_path):
    path = tmp_path / "state.pt"
    state = {"w": torch.arange(64.0), "step": 3, "rng": torch.ByteTensor(16).random_()}
    hio.save_checked(path, state)
    hio.save_checked(path, {**state, "step": 4})
    assert hio.load_checked(hio.previous_file(path))["step"] == 3  # the one replaced
    assert hio.load_checked(path)["step"] == 4
    raw = path.read_bytes()
    refused = 0
    for where in range(0, len(raw), max(1, len(raw) // 40)):
        damaged = bytearray(raw)
        damaged[where] ^= 0x01
        path.write_bytes(bytes(damaged))
        try:
            loaded = hio.load_checked(path)
        except hio.FileFormatError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc)
            refused += 1
            continue
        # a flip the zip container does not read (padding, a name) changes nothing
        assert loaded["step"] == 4 and torch.equal(loaded["w"], state["w"])
    assert refused > 0


LOCK_HOLDER = """
import sys, time
from hogn import io as hio
lock = hio.RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_two_trainings_on_one_folder_one_runs_and_a_killed_one_frees_it(files, capsys,
                                                                          tmp_path):
    """Two ``hogn train`` on one run folder: while the first runs, the second exits 2 in
    one line naming the lock; SIGKILLed, the first leaves the folder to the next run,
    which resumes it and finishes with one metrics line per epoch."""
    _, data, _ = files
    run = tmp_path / "run"
    argv = ["train", "hogn", str(data), "--epochs", "300", *TRAIN, "-o", str(run)]
    first = subprocess.Popen([sys.executable, "-m", "hogn", *argv],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (run / "metrics.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first training ended before the second started"
        err = _error(capsys, argv, "in use by another process")
        assert str(run / ".lock") in err and f"pid {first.pid}" in err
    finally:
        first.kill()
        first.wait()
    assert main(argv) == 0
    epochs = [json.loads(line)["epoch"] for line in
              (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 301))


def test_one_writer_per_run_folder_and_a_killed_holder_frees_it(files, capsys, tmp_path):
    """Two writers on one run folder: the second stops at once in one line naming the
    lock; once the holder is SIGKILLed the next run takes the folder."""
    _, data, _ = files
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(run)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        err = _error(capsys, ["train", "hogn", str(data), "--epochs", "1", *TRAIN, "-o",
                              str(run)], "in use by another process")
        assert str(run / ".lock") in err and f"pid {holder.pid}" in err
        with pytest.raises(hio.RunLockedError, match="in use"):
            hogn.train(hogn.models.get("hogn", dim=2, node_constants=1, hidden=8),
                       systems.Dataset.load(data), run, epochs=1, progress=False)
        assert not (run / "config.json").exists()  # the refused runs wrote nothing
    finally:
        holder.kill()
        holder.wait()
    assert main(["train", "hogn", str(data), "--epochs", "1", *TRAIN, "-o", str(run)]) == 0
    assert (run / "checkpoint.pt").is_file()


def test_a_damaged_config_or_metrics_file_is_named(files, capsys, tmp_path):
    _, data, run = files
    copy = _copy_run(run, tmp_path / "a")
    (copy / "config.json").write_text('{"model": "hogn", ')
    _error(capsys, ["train", "hogn", str(data), "--epochs", "2", *TRAIN, "-o", str(copy)],
           "config.json: not valid JSON")
    _error(capsys, ["evaluate", str(copy), str(data)], "config.json")
    (copy / "config.json").write_text("[1, 2]")
    _error(capsys, ["train", "hogn", str(data), "--epochs", "2", *TRAIN, "-o", str(copy)],
           "config.json: not a hogn run record")
    copy = _copy_run(run, tmp_path / "b")
    metrics = copy / "metrics.jsonl"
    metrics.write_bytes(b"{not json" + metrics.read_bytes()[9:])
    _error(capsys, ["train", "hogn", str(data), "--epochs", "2", *TRAIN, "-o", str(copy)],
           "metrics.jsonl: line 1 is not valid JSON")


def test_no_output_option_replaces_a_file_without_force(files, capsys, tmp_path):
    """One output rule for every command: --plot, --json, -o, --xyz and --animate
    refuse an existing file (here the user's dataset) without --force, before any
    work, and two of them may not name one file."""
    _, data, run = files
    before = data.read_bytes()
    for argv in (["rollout", str(run), "--steps", "5", "--plot", str(data)],
                 ["rollout", str(run), "--steps", "5", "-o", str(data)],
                 ["rollout", str(run), "--steps", "5", "--xyz", str(data)],
                 ["evaluate", str(run), str(data), "--split", "all", "--json", str(data)],
                 ["evaluate", str(run), str(data), "--split", "all", "--plot", str(data)]):
        err = _error(capsys, argv, f"{data} already exists; pass --force")
        assert argv[-2] in err  # the flag is named
    assert data.read_bytes() == before
    out = tmp_path / "r.pt"
    _error(capsys, ["rollout", str(run), "--steps", "5", "-o", str(out), "--xyz", str(out)],
           "-o and --xyz name the same file")
    _error(capsys, ["rollout", str(run), "--steps", "5", "--plot", str(out), "--animate",
                    str(tmp_path / "." / "r.pt")], "--plot and --animate name the same file")
    assert not out.exists()
    report = tmp_path / "e.json"
    report.write_text("old")
    assert main(["evaluate", str(run), str(data), "--split", "all", "--json", str(report),
                 "--force", "--quiet"]) == 0
    assert json.loads(report.read_text())["split"] == "all"


def test_a_file_given_as_the_run_folder_is_named(files, capsys):
    _, data, _ = files
    _error(capsys, ["train", "hogn", str(data), "--epochs", "1", *TRAIN, "-o", str(data)],
           "is a file, not a run folder")


def test_resuming_with_another_spelling_of_the_data_path(files, tmp_path, monkeypatch):
    _, data, _ = files
    monkeypatch.chdir(data.parent)
    run = tmp_path / "r"
    assert main(["train", "hogn", "data.pt", "--epochs", "1", *TRAIN, "-o", str(run)]) == 0
    assert main(["train", "hogn", "./data.pt", "--epochs", "2", *TRAIN, "-o", str(run)]) == 0
    assert main(["train", "hogn", str(data), "--epochs", "3", *TRAIN, "-o", str(run)]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


# ------------------------------------------------------------------ full disk
def _fill_disk_after(monkeypatch, limit: int, files: int = 0) -> None:
    """Every file atomic_write opens (after the first ``files``) fails with ENOSPC
    after ``limit`` bytes."""
    real = os.fdopen
    opened = []

    class Full:
        def __init__(self, fh):
            self.fh, self.written = fh, 0
            opened.append(fh)

        def write(self, b):
            self.written += len(b)
            if len(opened) > files and self.written > limit:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(b)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(hio.os, "fdopen", lambda fd, mode: Full(real(fd, mode)))


@pytest.mark.parametrize("limit", [0, 100, 1000])
def test_a_save_into_a_full_disk_keeps_the_previous_file(files, capsys, tmp_path, monkeypatch,
                                                         limit):
    _, data, _ = files
    target = tmp_path / "d.pt"
    target.write_bytes(data.read_bytes())
    _fill_disk_after(monkeypatch, limit)
    err = _error(capsys, ["generate", "pendulum", "--trajectories", "4", "--steps", "5",
                          "--quiet", "--force", "-o", str(target)], "No space left on device")
    assert str(target) in err and "previous file is kept unchanged" in err
    assert target.read_bytes() == data.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.pt"]  # no temporary file left
    # the API says the same
    with pytest.raises(OSError, match="previous file is kept unchanged") as info:
        hio.save_archive(target, "k", 1, {}, {"a": torch.zeros(10_000)})
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(OSError, match="no file was written"):
        hio.save_archive(tmp_path / "new.pt", "k", 1, {}, {"a": torch.zeros(10_000)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.pt"]


# ------------------------------------------------------------------ signals
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_generate_writes(files, capsys, tmp_path, monkeypatch, signum, status):
    _, data, _ = files
    target = tmp_path / "d.pt"
    target.write_bytes(data.read_bytes())
    real = torch.save

    def save(obj, fh, *args, **kwargs):
        fh.write(b"partial")
        os.kill(os.getpid(), signum)
        time.sleep(1)  # the handler raises here
        return real(obj, fh, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert main(["generate", "pendulum", "--trajectories", "4", "--steps", "5", "--quiet",
                 "--force", "-o", str(target)]) == status
    assert capsys.readouterr().err.strip() == "hogn: interrupted"
    assert target.read_bytes() == data.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.pt"]
    # the handlers are restored (to what they were: a background job starts with SIGINT
    # ignored)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_sigint_during_training_keeps_a_checkpoint(files, capsys, tmp_path, monkeypatch):
    _, data, _ = files
    real = loop._epoch
    calls = []

    def epoch(model, loader, cfg, dt, optimizer, number, progress):
        calls.append(number)
        if number == 3 and optimizer is not None:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        return real(model, loader, cfg, dt, optimizer, number, progress)

    monkeypatch.setattr(loop, "_epoch", epoch)
    run = tmp_path / "r"
    assert main(["train", "hogn", str(data), "--epochs", "5", *TRAIN,
                 "--checkpoint-every", "1", "-o", str(run)]) == 130
    assert capsys.readouterr().err.strip() == "hogn: interrupted"
    saved = load_checked(run / "checkpoint.pt")
    assert saved["epoch"] == 2 and len((run / "metrics.jsonl").read_text().splitlines()) == 2
    monkeypatch.setattr(loop, "_epoch", real)
    assert main(["train", "hogn", str(data), "--epochs", "5", *TRAIN,
                 "--checkpoint-every", "1", "-o", str(run)]) == 0


def test_ctrl_c_at_start_up_is_one_line(tmp_path):
    """SIGINT while the command imports torch (seconds): 'hogn: interrupted', exit 130."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "hogn", "generate", "pendulum", "-o",
                             str(tmp_path / "d.pt")], stderr=subprocess.PIPE, env=env)
    time.sleep(0.7)  # past the interpreter's own start-up, inside the imports
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.decode().strip() == "hogn: interrupted"
    assert not (tmp_path / "d.pt").exists()


# ------------------------------------------------------------------ messages
def test_a_diverged_run_says_whether_a_checkpoint_exists(files, capsys, tmp_path,
                                                         monkeypatch):
    _, data, _ = files
    err = _error(capsys, ["train", "ogn", str(data), "--epochs", "3", "--lr", "1e30",
                          *TRAIN, "-o", str(tmp_path / "a")], "non-finite")
    assert "holds no checkpoint" in err and "is kept" not in err
    real = train_epochs._batch_loss
    calls = []

    def loss(*args, **kwargs):
        calls.append(1)
        value = real(*args, **kwargs)
        return value * math.nan if len(calls) > 4 else value  # epoch 1: 2 + 2 batches

    monkeypatch.setattr(train_epochs, "_batch_loss", loss)
    err = _error(capsys, ["train", "hogn", str(data), "--epochs", "3", *TRAIN,
                          "--checkpoint-every", "1", "-o", str(tmp_path / "b")],
                 "non-finite")
    assert f"the checkpoint of epoch 1 is kept in {tmp_path / 'b'}" in err


# ------------------------------------------------------------------ data and best
def test_data_without_node_constants(files, capsys, tmp_path):
    _, data, _ = files
    plain = tmp_path / "plain.pt"
    d = systems.load(data)
    dataclasses.replace(d, c=d.c[:, :0]).save(plain)
    assert main(["info", str(plain)]) == 0
    out = capsys.readouterr().out
    assert "not available" in out and "node constants  0" in out.replace("   ", "  ")
    run = tmp_path / "run"
    assert main(["train", "hogn", str(plain), "--epochs", "1", *TRAIN, "-o", str(run)]) == 0
    assert main(["evaluate", str(run), str(plain), "--quiet", "--json",
                 str(tmp_path / "e.json")]) == 0
    summary = json.loads((tmp_path / "e.json").read_text())["summary"]
    assert summary["energy_drift"] is None or math.isnan(summary["energy_drift"])
    assert 0 <= summary["rel_error"] < 1


def test_without_validation_best_weights_are_ranked_by_their_own_loss():
    data = systems.generate("spring-nbody", trajectories=6, steps=6, dt=0.05, n_particles=3,
                            seed=1, test_fraction=0.0, progress=False)
    torch.manual_seed(0)
    model = hogn.models.get("hogn", dim=2, node_constants=1, edge_features=2,
                            hidden=8).double()
    result = hogn.train(model, data, epochs=4, batch_size=64, lr=3e-3, val_fraction=0.0,
                        progress=False)
    # the returned (best) weights' loss on all training samples is the recorded best
    cfg = training.TrainConfig(target="derivative")
    samples = training.Samples(data, torch.arange(data.num_graphs), 1, "derivative")
    loss = training._epoch(model, training._loader(samples, 1000), cfg, data.dt, None, 0,
                           False)
    assert loss == pytest.approx(result.best_val, rel=1e-9)
    # and no epoch's final weights did better than the best
    assert result.best_val == min(r["val_loss"] for r in result.history)


def test_a_reader_that_goes_away_ends_the_command_quietly(files, tmp_path):
    """`hogn info DATA | head -1`: the pipe closes before hogn has written everything;
    hogn stops at once without a word on stderr (it printed 'Broken pipe')."""
    _, data, _ = files
    script = ("import sys; from hogn.cli import main\n"
              "class Closed:\n"
              "    def write(self, text): raise BrokenPipeError(32, 'Broken pipe')\n"
              "    def flush(self): raise BrokenPipeError(32, 'Broken pipe')\n"
              "    def fileno(self): return sys.__stdout__.fileno()\n"
              "sys.stdout = Closed()\n"
              f"sys.exit(main(['info', {str(data)!r}]))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 141 and run.stderr == "", run.stderr
    with subprocess.Popen([sys.executable, "-m", "hogn", "info", str(data)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        proc.stdout.read(1)  # one byte, then the reader is gone
        proc.stdout.close()
        err = proc.stderr.read().decode()
        proc.wait(timeout=120)
    assert "Broken pipe" not in err and "Traceback" not in err, err


def test_an_error_is_one_line_even_where_a_library_warned_first(capsys, tmp_path):
    """torch warns when it reads a raw (pre-zip) pickle; the command's error must still
    be the only line on stderr. A command that succeeds reports warnings in one line
    each at its end."""
    import pickle

    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"format": "not ours"}, protocol=4))  # torch warns on it
    _error(capsys, ["info", str(raw)], str(raw))

    import warnings

    from hogn.cli import _report_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("first line\n  second line", UserWarning, stacklevel=1)
        warnings.warn("first line\n  second line", UserWarning, stacklevel=1)
    _report_warnings("hogn x", caught)
    assert capsys.readouterr().err == "hogn x: warning: first line second line\n"


def test_a_disk_that_fills_during_a_multi_file_export_says_what_was_written(
        files, capsys, tmp_path, monkeypatch):
    """Two files written, the third hits a full disk: the error says which were written
    and which not (it said 'no file was written')."""
    _, data, _ = files
    _fill_disk_after(monkeypatch, 0, files=2)
    out = tmp_path / "t.xyz"
    err = _error(capsys, ["export", str(data), "-o", str(out), "--trajectory", "0..4"],
                 "No space left on device")
    assert "the 2 file(s) before it were written" in err and "the 3 from" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t-0.xyz", "t-1.xyz"]


def test_progress_bars_stay_out_of_logs():
    """With stdout and stderr not a terminal (CI, nohup, a pipe), the progress bars of
    generation, training, rollouts and meta-training write nothing: no carriage-return
    chunks piling up in a log."""
    script = """
import torch, hogn, systems
from meta import protocol
data = systems.generate(systems.get("spring-nbody"), 3, 20, 0.05, n_particles=3,
                        progress=True)
model = hogn.models.get("hogn", dim=2, node_constants=1, edge_features=2, hidden=8).double()
hogn.train(model, data, epochs=2, batch_size=8, max_samples=16, progress=True)
hogn.rollout(model, data, steps=20, dt=0.05, progress=True)
protocol.evaluate_adaptation(protocol.make_model("hnn", hidden=8, seed=0),
                             {"m": dict(protocol.make_model("hnn", hidden=8, seed=0)
                                        .named_parameters())},
                             protocol.eval_data("pendulum", 2), shots=5, steps=2,
                             progress=True)
print("done")
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "done" and "\r" not in run.stdout + run.stderr, run.stderr
    assert "it/s" not in run.stderr and "%|" not in run.stderr, run.stderr


@pytest.mark.parametrize("flag", ["--lr", "--refine-lr"])
def test_a_learning_rate_that_overflows_the_parameters_dtype_is_refused(files, capsys,
                                                                        tmp_path, flag):
    """Adam's first step divides by 1 - β₁ (0.1): a rate above float32's largest / 100
    overflowed into a traceback; it is refused in one line naming the bound."""
    _, data, _ = files
    extra = ["--refine-initial", "--target", "rollout"] if flag == "--refine-lr" else []
    argv = ["train", "hogn", str(data), "--epochs", "1", *TRAIN, *extra, flag, "1e300",
            "-o", str(tmp_path / "run")]
    _error(capsys, argv, "must be at most 3.4e+36")
    assert not any((tmp_path / "run").glob("*.pt"))


def test_a_run_refused_before_it_writes_leaves_no_folder_behind(files, capsys, tmp_path):
    """A training refused at set-up (here: a learning rate past float32) after it took
    the run folder's lock removes the folder it made; a folder the user made, or one a
    run wrote into, stays."""
    _, data, _ = files
    made = tmp_path / "made-by-the-run"
    _error(capsys, ["train", "hnn", str(data), "--lr", "1e300", *TRAIN, "-o",
                    str(made)], "lr must be at most")
    assert not made.exists()
    given = tmp_path / "made-by-the-user"
    given.mkdir()
    _error(capsys, ["train", "hnn", str(data), "--lr", "1e300", *TRAIN, "-o",
                    str(given)], "lr must be at most")
    assert given.is_dir()
    with hio.RunLock(tmp_path / "written") as lock:
        (lock.path.parent / "config.json").write_text("{}")
    assert (tmp_path / "written" / "config.json").is_file()
