"""Training by optimizer steps (``hogn.train(steps=N)``, ``hogn train --steps``), full
batches, and the test split scored at the end (``TrainResult.test_loss`` and the final
row of ``metrics.jsonl``).

The checks are against hand computations: the optimizer steps counted by a global
torch hook, a hand loop of Adam steps over the same full batch, the test loss computed
by hand from the returned weights (derivative MSE; the k-step rollout loss through
``rk4``), the cosine learning rates of every step against the formula, and a resumed
run against an uninterrupted one.
"""

from __future__ import annotations

import importlib
import itertools
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

import hogn
import systems
from hogn.cli import main
from hogn.graph import GraphBatch
from hogn.io import load_checked

training = importlib.import_module("hogn.train")  # the package (hogn.train is the function)
loop = importlib.import_module("hogn.train.loop")  # where the loop looks its helpers up

SPRINGS = systems.generate("spring-nbody", trajectories=10, steps=6, dt=0.05, n_particles=3,
                           seed=0, progress=False)  # 2 test, 8 training trajectories of 7 points


def _graph_model(name: str = "hogn") -> hogn.models.DynamicsModel:
    torch.manual_seed(0)
    return hogn.models.get(name, dim=2, node_constants=1, edge_features=2, hidden=8).double()


def _oscillator_states(m: int = 40, seed: int = 0) -> dict[str, torch.Tensor]:
    """States of unit harmonic oscillators, ``H = (q² + p²) / 2``: ``[M, 1, 1]`` arrays
    with their exact derivatives and a test mask (every 4th state)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(m, 1, 1, generator=gen, dtype=torch.float64)
    p = torch.randn(m, 1, 1, generator=gen, dtype=torch.float64)
    return {"q": q, "p": p, "dq": p.clone(), "dp": -q, "test": torch.arange(m) % 4 == 0}


def _states_dataset(arrays: dict[str, torch.Tensor]) -> systems.Dataset:
    """``arrays`` as a dataset of states (one-point trajectories) with their test mask."""
    return systems.Dataset.from_arrays(arrays["q"], arrays["p"], dq=arrays["dq"],
                                       dp=arrays["dp"], test=arrays["test"],
                                       system="oscillators")


def _hnn() -> hogn.models.DynamicsModel:
    torch.manual_seed(0)
    return hogn.models.get("hnn", n_particles=1, dim=1, node_constants=0, hidden=16).double()


def _flat_graph(arrays: dict[str, torch.Tensor], mask: torch.Tensor) -> GraphBatch:
    """The chosen states as one batch of one-particle graphs."""
    q, p = arrays["q"][mask].reshape(-1, 1), arrays["p"][mask].reshape(-1, 1)
    n = q.shape[0]
    return GraphBatch(q, p, torch.zeros(n, 0, dtype=q.dtype),
                      torch.zeros(2, 0, dtype=torch.long), torch.arange(n + 1))


def _derivative_mse(model: hogn.models.DynamicsModel, arrays: dict[str, torch.Tensor],
                    mask: torch.Tensor) -> torch.Tensor:
    dq, dp = model.time_derivative(_flat_graph(arrays, mask))
    target = torch.cat([arrays["dq"][mask].reshape(-1, 1), arrays["dp"][mask].reshape(-1, 1)], -1)
    return F.mse_loss(torch.cat([dq, dp], -1), target)


def _hand_adam(arrays: dict[str, torch.Tensor], steps: int, lr: float,
               weight_decay: float) -> hogn.models.DynamicsModel:
    """``steps`` Adam steps of an HNN on the derivative MSE over every training state."""
    model = _hnn()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        _derivative_mse(model, arrays, ~arrays["test"]).backward()
        optimizer.step()
    return model.eval()


def _assert_close_weights(a: torch.nn.Module, b: torch.nn.Module, atol: float) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(x, y, rtol=0, atol=atol), (name, float((x - y).abs().max()))


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


class _StepCount:
    """Counts every ``torch.optim`` optimizer step (a global post-hook) and records the
    learning rate each one used (a global pre-hook)."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.steps = 0

    def __enter__(self) -> _StepCount:
        def pre(optimizer, args, kwargs):
            self.lrs.append(optimizer.param_groups[0]["lr"])

        def post(optimizer, args, kwargs):
            self.steps += 1

        self.handles = [register_optimizer_step_pre_hook(pre),
                        register_optimizer_step_post_hook(post)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


# ------------------------------------------------------------------------ steps
def test_steps_are_counted_exactly_and_the_last_epoch_is_cut_short():
    """56 training states in batches of 16: 4 steps per epoch; 10 steps are epochs of
    4, 4 and 2 steps."""
    with _StepCount() as count:
        result = hogn.train(_graph_model(), SPRINGS, steps=10, batch_size=16, val_fraction=0,
                            lr=3e-3, progress=False)
    assert count.steps == 10 and result.steps == 10
    assert [(r["epoch"], r["step"]) for r in result.history] == [(1, 4), (2, 8), (3, 10)]
    assert not result.full_batch
    assert all(math.isfinite(r["train_loss"]) for r in result.history)


def test_full_batch_steps_equal_a_hand_loop_of_adam_steps(tmp_path):
    """``steps=N`` with a batch larger than the data and no validation split: N Adam
    steps (with weight decay) over all training states at once, as a hand loop; the
    test loss is the derivative MSE of the returned weights on the test states."""
    arrays = _oscillator_states()
    data = _states_dataset(arrays)
    steps, lr, decay = 25, 1e-2, 1e-3
    model = _hnn()
    with _StepCount() as count:
        result = hogn.train(model, data, tmp_path / "run", steps=steps, batch_size=10_000,
                            val_fraction=0, lr=lr, weight_decay=decay, progress=False)
    assert count.steps == steps and result.steps == steps and result.full_batch
    rows = result.history
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    # one batch of all training states: the loss measured before step e + 1 is the
    # validation loss (the same states) of the weights that ended epoch e
    for before, after in itertools.pairwise(rows):
        assert after["train_loss"] == pytest.approx(before["val_loss"], rel=1e-12)
    assert rows[-1]["val_loss"] < 0.5 * rows[0]["train_loss"]  # it learned
    hand = _hand_adam(arrays, steps, lr, decay)
    _assert_close_weights(hogn.models.load(tmp_path / "run" / "last.pt"), hand, atol=1e-6)
    # the test split, scored with the returned (best) weights
    assert result.best_epoch == steps  # the loss fell at every step: best = last
    by_hand = float(_derivative_mse(model, arrays, arrays["test"]))
    assert result.test_loss == pytest.approx(by_hand, rel=1e-9)
    assert rows[-1]["test_loss"] == result.test_loss == _rows(tmp_path / "run")[-1]["test_loss"]
    assert all("test_loss" not in r for r in rows[:-1])
    train_loss = float(_derivative_mse(model, arrays, ~arrays["test"]))
    assert result.test_loss != pytest.approx(train_loss, rel=1e-3)  # not the training states


def _springs_derivative_mse(model: hogn.models.DynamicsModel, data: systems.Dataset) -> float:
    """Derivative MSE over every state of ``data`` (one mean over all elements)."""
    preds, truth = [], []
    for t in range(data.t.numel()):
        preds.append(torch.cat(model.time_derivative(data.state(t)), -1))
        truth.append(torch.cat([data.dq[t], data.dp[t]], -1))
    return float(F.mse_loss(torch.stack(preds), torch.stack(truth)))


def test_the_test_loss_is_that_of_the_best_weights_not_the_last(tmp_path):
    """A learning rate high enough for the validation loss to rise again (best epoch 3
    of 8): the test loss is the derivative MSE of the best weights on the test split."""
    model = _graph_model()
    result = hogn.train(model, SPRINGS, tmp_path / "run", steps=8, batch_size=1000, lr=0.05,
                        progress=False)
    assert result.full_batch and result.best_epoch < 8  # the premise
    best = hogn.models.load(tmp_path / "run" / "best.pt")
    last = hogn.models.load(tmp_path / "run" / "last.pt")
    by_hand = _springs_derivative_mse(best, SPRINGS.heldout)
    assert result.test_loss == pytest.approx(by_hand, rel=1e-9)
    assert result.test_loss == pytest.approx(_springs_derivative_mse(model, SPRINGS.heldout),
                                             rel=1e-9)  # the returned model is the best
    assert _springs_derivative_mse(last, SPRINGS.heldout) != pytest.approx(by_hand, rel=1e-3)
    assert result.history[-1]["test_loss"] == result.test_loss


def test_hogn_train_steps_reproduces_a_full_batch_hnn_run_from_arrays(tmp_path, capsys):
    """The command line: an HNN trained on a dataset built from arrays with ``--steps``,
    a batch larger than the data, no validation split and weight decay is the hand loop
    of Adam steps; the test loss it prints and writes is the one computed by hand."""
    arrays = _oscillator_states(m=48, seed=1)
    data = tmp_path / "oscillators.pt"
    _states_dataset(arrays).save(data)
    steps, run = 30, tmp_path / "run"
    assert main(["train", "hnn", str(data), "--steps", str(steps), "--batch-size", "100000",
                 "--val-fraction", "0", "--weight-decay", "1e-3", "--lr", "1e-2",
                 "--hidden", "16", "--dtype", "float64", "--quiet", "-o", str(run)]) == 0
    out = capsys.readouterr().out
    assert "full batch" in out and f"{steps} optimizer step(s)" in out
    rows = _rows(run)
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    hand = _hand_adam(arrays, steps, 1e-2, 1e-3)
    _assert_close_weights(hogn.models.load(run / "last.pt"), hand, atol=1e-6)
    best = hogn.models.load(run / "best.pt")
    test_loss = rows[-1]["test_loss"]
    assert test_loss == pytest.approx(float(_derivative_mse(best, arrays, arrays["test"])),
                                      rel=1e-9)
    assert f"test loss {test_loss:.4g}" in out and "12 test trajectories" in out


def test_the_test_loss_of_the_rollout_target_is_the_k_step_loss():
    """target="rollout": the test loss is the MSE of ``k`` rk4 steps of the returned
    model from every test state that has ``k`` states after it."""
    k = 2
    model = _graph_model()
    result = hogn.train(model, SPRINGS, target="rollout", integrator="rk4", rollout_steps=k,
                        epochs=2, batch_size=1000, lr=3e-3, progress=False)
    test = SPRINGS.heldout
    step = hogn.integrators.get("rk4")
    preds, truth = [], []
    for start in range(test.t.numel() - k):  # every test state with k states after it
        graph = test.state(start)
        field = model.vector_field(graph)
        q, p = graph.q, graph.p
        for i in range(1, k + 1):
            q, p = step(field, q, p, SPRINGS.dt)
            preds.append(torch.cat([q, p], -1))
            truth.append(torch.cat([test.q[start + i], test.p[start + i]], -1))
    by_hand = F.mse_loss(torch.stack(preds), torch.stack(truth))
    assert result.test_loss == pytest.approx(float(by_hand), rel=1e-9)


def test_without_a_test_split_the_test_loss_is_none(tmp_path):
    data = SPRINGS.train  # no test trajectories
    result = hogn.train(_graph_model(), data, tmp_path / "run", steps=3, batch_size=16,
                        progress=False)
    assert result.test_loss is None
    assert _rows(tmp_path / "run")[-1]["test_loss"] is None


def test_cosine_anneals_over_the_steps_to_zero():
    """Step i of S uses lr (1 + cos(pi i / S)) / 2: the last one ~0 (lr pi² / (4 S²))."""
    steps, lr = 30, 1e-2
    with _StepCount() as count:
        result = hogn.train(_graph_model(), SPRINGS, steps=steps, batch_size=16, lr=lr,
                            schedule="cosine", progress=False)
    want = [lr * (1 + math.cos(math.pi * i / steps)) / 2 for i in range(steps)]
    assert count.lrs == pytest.approx(want, rel=1e-9, abs=1e-15)
    assert count.lrs[-1] < 3e-3 * lr
    # each row's lr is that of its epoch's first step
    firsts = [0] + [r["step"] for r in result.history[:-1]]
    assert [r["lr"] for r in result.history] == pytest.approx([want[i] for i in firsts])


@pytest.mark.parametrize("old_checkpoint", [False, True], ids=["checkpoint", "no-step-count"])
def test_a_run_by_steps_interrupted_midway_resumes_to_the_uninterrupted_run(
        tmp_path, monkeypatch, old_checkpoint):
    """11 steps in batches of 16 over 49 training states: epochs of 4, 4 and 3 steps,
    with a cosine schedule per step. Interrupted during epoch 3, the run keeps the
    checkpoint of epoch 2; the resume (from it, with or without its step count) takes
    the 3 steps left and ends bit for bit as the straight run."""
    settings = {"steps": 11, "batch_size": 16, "lr": 3e-3, "schedule": "cosine",
                "checkpoint_seconds": 0, "progress": False}
    straight = _graph_model()
    want = hogn.train(straight, SPRINGS, tmp_path / "straight", **settings)
    assert [r["step"] for r in want.history] == [4, 8, 11]

    real_epoch = loop._epoch

    def interrupted(model, loader, cfg, dt, optimizer, epoch, progress):
        if optimizer is not None and epoch == 3:
            raise KeyboardInterrupt
        return real_epoch(model, loader, cfg, dt, optimizer, epoch, progress)

    monkeypatch.setattr(loop, "_SNAPSHOT_SECONDS", 0.0)  # a copy after every epoch
    monkeypatch.setattr(loop, "_epoch", interrupted)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        hogn.train(_graph_model(), SPRINGS, run, **settings)
    monkeypatch.undo()
    checkpoint = load_checked(run / "checkpoint.pt")
    assert checkpoint["epoch"] == 2 and checkpoint["steps"] == 8
    if old_checkpoint:  # written before steps were counted: recounted from the epochs
        del checkpoint["steps"]
        torch.save(checkpoint, run / "checkpoint.pt")
    model = _graph_model()
    with _StepCount() as count:
        got = hogn.train(model, SPRINGS, run, **settings)
    assert count.steps == 3 and got.steps == 11 and got.resumed_epoch == 2
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in _rows(run)]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in want.history]
    _assert_close_weights(model, straight, atol=0)
    _assert_close_weights(hogn.models.load(run / "last.pt"),
                          hogn.models.load(tmp_path / "straight" / "last.pt"), atol=0)
    assert got.test_loss == want.test_loss
    again = hogn.train(_graph_model(), SPRINGS, run, **settings)  # nothing left to do: ...
    assert again.steps == 11 and len(again.history) == 3  # ... no step, no new row, and
    assert again.test_loss == want.test_loss  # the returned (best) weights scored again


def test_steps_and_epochs_together_are_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="steps and epochs are exclusive"):
        hogn.train(_graph_model(), SPRINGS, steps=5, epochs=3, progress=False)
    with pytest.raises(ValueError, match="steps must be"):
        hogn.train(_graph_model(), SPRINGS, steps=-1, progress=False)
    run = tmp_path / "run"  # a run by epochs does not go on by steps (nor the reverse)
    hogn.train(_graph_model(), SPRINGS, run, epochs=1, batch_size=64, progress=False)
    with pytest.raises(ValueError, match="trained by epochs; it cannot go on by steps"):
        hogn.train(_graph_model(), SPRINGS, run, steps=3, batch_size=64, progress=False)
    data = tmp_path / "springs.pt"
    SPRINGS.save(data)
    assert main(["train", "hogn", str(data), "--steps", "3", "--epochs", "2", "--quiet",
                 "-o", str(tmp_path / "cli")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--epochs: not allowed with argument --steps" in err
    assert not (tmp_path / "cli").exists()


# ------------------------------------------------------------ several processes
@pytest.mark.parametrize("world", [2, 3])
def test_a_full_batch_split_among_ranks_is_the_whole_batch(monkeypatch, world):
    """Each rank's share of a full batch (``_ShardCollate``) and its loss weight: the
    shares together are every sample once, and the weighted sums of the element-wise
    losses add up to the one-process mean loss of the full batch."""
    from hogn import distributed

    model = _graph_model()
    cfg = training.TrainConfig(target="derivative")
    samples = training.Samples(SPRINGS, (~SPRINGS.test).nonzero().flatten(), 1, "derivative")
    full = list(range(len(samples)))
    whole = training._batch_loss(model, samples.collate(full), cfg, float("nan")).detach()
    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    taken, total = [], torch.zeros((), dtype=torch.float64)
    for rank in range(world):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        share = training._ShardCollate(samples)(full)
        assert share.graphs == len(full) and not share.empty
        assert share.nodes == int(samples.collate(full).graph.ptr[-1])
        taken += full[rank::world]
        assert share.batch.num_graphs == len(full[rank::world])
        elements = share.nodes * (share.batch.y_q[0].numel() + share.batch.y_p[0].numel())
        summed = training._SummedLoss(model, cfg, float("nan"))(share.batch)
        total = total + summed.detach() * world / elements
    assert sorted(taken) == full
    assert float(total / world) == pytest.approx(float(whole), rel=1e-12)


@pytest.mark.slow  # a torchrun launch: ~70 s on 2 loaded cores
@pytest.mark.skipif(not torch.distributed.is_available()
                    or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with the gloo backend is not available")
def test_full_batch_steps_in_two_processes_equal_one(tmp_path):
    """``hogn train --steps`` with a full batch under torchrun (2 processes, gloo): the
    same weights, rows and test loss as in one process (25 training states of 3-5
    particles split 13 / 12 among the ranks at every step)."""
    data = tmp_path / "springs.pt"
    systems.generate("spring-nbody", trajectories=6, steps=4, dt=0.05, n_particles=(3, 5),
                     seed=0, progress=False).save(data)
    args = ["hogn", "--hidden", "8", "--dtype", "float64", "--steps", "4", "--batch-size",
            "1000", "--val-fraction", "0", "--weight-decay", "1e-3", "--quiet", str(data)]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", *args, "-o", str(one)]) == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch = {"WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
              "MASTER_PORT", "TORCHELASTIC_RUN_ID", "GROUP_RANK", "HOGN_DIST_BACKEND"}
    env = {**{k: v for k, v in os.environ.items() if k not in launch}, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                           "2", "--master-addr", "127.0.0.1", "--master-port", str(port),
                           "-m", "hogn", "train", *args, "-o", str(two)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "in 2 processes" in proc.stdout and "full batch" in proc.stdout
    got, want = _rows(two), _rows(one)
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for a, b in zip(got, want, strict=True):
        for key in ("train_loss", "val_loss", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-9), key
    assert got[-1]["test_loss"] == pytest.approx(want[-1]["test_loss"], rel=1e-9)
    _assert_close_weights(hogn.models.load(two / "last.pt"), hogn.models.load(one / "last.pt"),
                          atol=1e-9)
