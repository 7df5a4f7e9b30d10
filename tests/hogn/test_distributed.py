"""Training in several processes with torch.distributed under torchrun (gloo, CPU).

- ``hogn train`` in 2 processes ends with the weights (and losses) of 1 process over
  the same global batches;
- a 2-process run SIGKILLed midway resumes under torchrun from its checkpoint and ends
  as the uninterrupted run;
- a meta-step (MAML task by task and batched, Reptile, Meta-SGD; uneven and empty
  shares) and a pretraining step in 2 processes equal 1 process over the same task
  batch; so does ``hogn.train`` called under torchrun's variables (it makes its own
  process group);
- a misconfigured world is refused with one clear line (exit status 2).
"""

from __future__ import annotations

import os
import runpy
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import hogn
import systems
from hogn import distributed
from hogn.cli import main
from hogn.io import load_checked

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="torch.distributed with the gloo backend is not available in this torch build")

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
               "MASTER_PORT", "TORCHELASTIC_RUN_ID", "GROUP_RANK", "HOGN_DIST_BACKEND")
EPOCHS = 8
# float64 HOGN (its derivative is an autograd.grad inside the forward; its H offset gets
# no gradient); 25 training states of 3-5 particles in global batches of 7: uneven node
# counts per rank, and a last batch of 4 split 2 / 2
TRAIN = ["hogn", "--hidden", "8", "--dtype", "float64", "--batch-size", "7", "--lr", "3e-3",
         "--weight-decay", "1e-3", "--grad-clip", "1.0", "--quiet"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *args]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return hogn.models.load(run / "last.pt").state_dict()


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _rows(run: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddp") / "springs.pt"
    systems.generate("spring-nbody", trajectories=6, steps=4, dt=0.05, n_particles=(3, 5),
                     seed=0, progress=False).save(path)
    return path


def _single(data_file: Path, run: Path, epochs: int) -> Path:
    """A one-process run (in this process) that the distributed ones must reproduce."""
    assert main(["train", *TRAIN, str(data_file), "--epochs", str(epochs), "-o", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def single(data_file, tmp_path_factory) -> Path:
    return _single(data_file, tmp_path_factory.mktemp("ddp") / "single", EPOCHS)


def test_two_processes_train_as_one(data_file, single, tmp_path):
    run = tmp_path / "two"
    proc = subprocess.run(_torchrun("-m", "hogn", "train", *TRAIN, str(data_file), "--epochs",
                                    str(EPOCHS), "-o", str(run)),
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count("trained hogn") == 1  # rank 0 alone prints ...
    assert "in 2 processes" in proc.stdout
    rows, want = _rows(run), _rows(single)
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))  # ... and writes
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in single.iterdir())
    for got, ref in zip(rows, want, strict=True):
        assert got["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-9)
        assert got["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-9)
    diff = _max_diff(_weights(run), _weights(single))
    assert diff < 1e-6, diff


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


@pytest.mark.slow  # two launches of torchrun: ~40 s on 2 loaded cores
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find "
                    "torchrun's workers")
def test_killed_two_process_run_resumes_under_torchrun(data_file, tmp_path):
    epochs = 30  # enough to be caught midway on a fast machine
    single = _single(data_file, tmp_path / "single", epochs)
    run = tmp_path / "killed"
    args = ["-m", "hogn", "train", *TRAIN, str(data_file), "--epochs", str(epochs),
            "--checkpoint-every", "1", "-o", str(run)]
    proc = subprocess.Popen(_torchrun(*args), cwd=tmp_path, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt, epoch = run / "checkpoint.pt", 0
    try:
        deadline = time.monotonic() + 300
        while epoch < 2:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint of epoch 2 within 300 s"
            if ckpt.exists():
                epoch = load_checked(ckpt)["epoch"]
            time.sleep(0.02)
    finally:  # SIGKILL the workers (torchrun starts them in sessions of their own), then it
        for pid in _children(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
    snapshot = load_checked(ckpt)
    killed_at = snapshot["epoch"]
    assert 2 <= killed_at < epochs
    kept = (run / "metrics.jsonl").read_bytes()[:snapshot["metrics_length"]]
    assert kept.count(b"\n") == killed_at

    proc = subprocess.run(_torchrun(*args), cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    # every rank went on from the checkpoint (rank 0 says so; the kept lines are untouched:
    # a fresh start would have rewritten them with new wall times) ...
    assert f"resumed {run} from its checkpoint of epoch {killed_at}" in proc.stdout
    assert (run / "metrics.jsonl").read_bytes().startswith(kept)
    assert [r["epoch"] for r in _rows(run)] == list(range(1, epochs + 1))
    assert load_checked(ckpt)["epoch"] == epochs
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temp files left
    # ... and ended as the uninterrupted run
    diff = _max_diff(_weights(run), _weights(single))
    assert diff < 1e-6, diff


META_SCRIPT = '''
import sys

import torch

import hogn
import systems
from hogn import distributed
from meta.algorithms import MetaConfig, init_inner_lr
from meta.training import make_optimizer, meta_train_step
from meta.protocol import _pretrain_step, make_model
from meta.tasks import TaskSampler

CASES = {"maml": dict(algorithm="maml"),
         "fomaml-meta-sgd-one-by-one": dict(algorithm="fomaml", learn_inner_lr=True,
                                            batched=False),
         "reptile": dict(algorithm="reptile"), "maml-one-task": dict(meta_batch=1)}


def run():
    data = {"mass-spring": systems.generate(systems.get("mass-spring", embed_dim=2),
                                            trajectories=3, steps=12, dt=0.25, seed=0),
            "pendulum": systems.generate(systems.get("pendulum", embed_dim=2),
                                         trajectories=3, steps=12, dt=0.25, seed=1)}
    out = {}
    # hogn.train under torchrun's variables: it makes the process group itself (which
    # then serves the rest of the process)
    springs = systems.generate("spring-nbody", trajectories=4, steps=3, dt=0.05,
                               n_particles=(3, 4), seed=0, progress=False)
    torch.manual_seed(0)
    model = hogn.models.get("hogn", dim=2, node_constants=1, edge_features=2, hidden=8).double()
    result = hogn.train(model, springs, epochs=2, batch_size=5, lr=3e-3, progress=False)
    assert torch.distributed.is_initialized() == (distributed.world_size() > 1)
    out["hogn.train"] = (model.state_dict(), result.history, None)
    with distributed.process_group("cpu"):
        for name, options in CASES.items():
            config = MetaConfig(**{"meta_batch": 3, "shots": 5, "inner_lr": 0.05,
                                   "outer_lr": 1e-2, **options})
            model = make_model("hnn", torch.float64, seed=0, hidden=16)
            rates = (init_inner_lr(dict(model.named_parameters()), 0.05)
                     if config.learn_inner_lr else None)
            optimizer = make_optimizer(model, config, rates)
            sampler = TaskSampler(data, shots=5, layout="padded", n_particles=3, seed=2,
                                  dtype=torch.float64)
            stats = [meta_train_step(model, optimizer, sampler.sample(config.meta_batch),
                                     config, rates) for _ in range(2)]
            out[name] = ({k: v.detach().clone() for k, v in model.state_dict().items()},
                         stats, None if rates is None else {k: v.detach().clone()
                                                            for k, v in rates.items()})
        model = make_model("hnn", torch.float64, seed=0, hidden=16)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        sampler = TaskSampler(data, shots=5, layout="padded", n_particles=3, seed=2,
                              dtype=torch.float64)
        stats = [_pretrain_step(model, optimizer, sampler.sample(3), "logcosh")
                 for _ in range(2)]
        out["pretrain"] = (model.state_dict(), stats, None)
        world = distributed.world_size()
        main = distributed.is_main()
    return out, world, main


if __name__ == "__main__":
    result, world, main = run()
    if main:
        torch.save((result, world), sys.argv[1])
'''


def test_meta_step_and_the_train_api_in_two_processes_equal_one(tmp_path):
    script = tmp_path / "meta_step.py"
    script.write_text(META_SCRIPT)
    out = tmp_path / "two.pt"
    proc = subprocess.run(_torchrun(str(script), str(out)), cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    two, world = torch.load(out, weights_only=False)
    assert world == 2
    one, world, _ = runpy.run_path(str(script))["run"]()
    assert world == 1 and one.keys() == two.keys()
    for name, (weights, stats, rates) in one.items():
        got_weights, got_stats, got_rates = two[name]
        assert _max_diff(got_weights, weights) < 1e-9, name
        if name != "hogn.train":  # the meta-steps moved the weights
            assert _max_diff(weights, make_initial()) > 1e-4, name
        for got, want in zip(got_stats, stats, strict=True):
            assert got.keys() == want.keys()
            for key in set(want) - {"seconds"}:
                assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), (name, key)
        if rates is not None:
            assert _max_diff(got_rates, rates) < 1e-9, name


def make_initial() -> dict[str, torch.Tensor]:
    from meta.protocol import make_model

    return make_model("hnn", torch.float64, seed=0, hidden=16).state_dict()


# --------------------------------------------------------------- misconfigured worlds
@pytest.mark.parametrize(("env", "words"), [
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"},
     "MASTER_ADDR and MASTER_PORT are not set"),
    ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "x", "MASTER_PORT": "1"},
     "RANK=2 but WORLD_SIZE=2"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE must be an integer"),
    ({"WORLD_SIZE": "2", "MASTER_ADDR": "x", "MASTER_PORT": "1"}, "RANK is not set"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "2",
      "MASTER_ADDR": "x", "MASTER_PORT": "1"}, "LOCAL_RANK=3 but LOCAL_WORLD_SIZE=2"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "x", "MASTER_PORT": "99999"},
     "MASTER_PORT must be a port number"),
])
def test_world_from_env_names_what_is_wrong(monkeypatch, env, words):
    for key in LAUNCH_VARS:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert distributed.launched()
    with pytest.raises(distributed.DistributedConfigError, match=words):
        with distributed.process_group("cpu"):
            pass
    assert not dist.is_initialized()


def test_backends_that_cannot_serve_the_device_are_refused(monkeypatch):
    monkeypatch.delenv("HOGN_DIST_BACKEND", raising=False)
    assert distributed.backend_for("cpu") == "gloo"
    with pytest.raises(distributed.DistributedConfigError, match="unknown; expected one of"):
        distributed.backend_for("cpu", "mpi")
    with pytest.raises(distributed.DistributedConfigError, match="nccl needs a CUDA device"):
        distributed.backend_for("cpu", "nccl")
    monkeypatch.setenv("HOGN_DIST_BACKEND", "nccl")
    with pytest.raises(distributed.DistributedConfigError, match="HOGN_DIST_BACKEND nccl"):
        distributed.backend_for("cpu")
    if torch.cuda.is_available():
        monkeypatch.setenv("HOGN_DIST_BACKEND", "gloo")
        with pytest.raises(distributed.DistributedConfigError, match="use nccl"):
            distributed.backend_for("cuda")
        with pytest.raises(distributed.DistributedConfigError, match="one GPU per process"):
            distributed.backend_for("cuda", "nccl", torch.cuda.device_count() + 1)


def test_one_process_is_not_distributed(monkeypatch):
    for key in LAUNCH_VARS:
        monkeypatch.delenv(key, raising=False)
    assert not distributed.launched() and not distributed.active()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    assert distributed.from_main(lambda: 7) == 7
    with distributed.process_group("cpu") as made:
        assert made is False
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc-per-node 1: the same path
    with distributed.process_group("cpu") as made:
        assert made is False and not dist.is_initialized()


def test_hogn_train_in_a_misconfigured_world_says_so(data_file, tmp_path):
    """A subprocess with bad launch variables: one line naming them, exit status 2,
    before any work (no run folder)."""
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "hogn", "train", *TRAIN, str(data_file),
                           "-o", str(run)], cwd=tmp_path, capture_output=True, text=True,
                          env=_env(WORLD_SIZE="2", RANK="0", LOCAL_RANK="0"), timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hogn train: error: WORLD_SIZE=2 but "
                                                   "MASTER_ADDR and MASTER_PORT are not set")
    assert not run.exists()
