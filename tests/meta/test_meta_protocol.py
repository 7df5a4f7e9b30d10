"""Leave-one-system-out protocol: options, run folders (files, resume equal to a straight
run, refusal of another run), the three starting points, adaptation scoring and the
nan-safe statistics."""

from __future__ import annotations

import json
import math

import pytest
import torch
from scipy import stats as st

import hogn
from meta import adapt_and_evaluate, protocol
from meta.algorithms import parameters
from meta.protocol import META_SYSTEMS, ProtocolConfig

TINY = dict(model_args={"hidden": 8}, trajectories=5, shots=8, meta_batch=2,
            checkpoint_every=2)


def _training(data, holdout):
    return {s: d for s, d in data.items() if s != holdout}


def _weights(path):
    return hogn.models.load(path).state_dict()


def test_the_seven_systems_in_the_paper_order_and_bad_options():
    # the paper's six in its order, then Hénon–Heiles (last: the others keep their seeds)
    assert META_SYSTEMS == ("mass-spring", "pendulum", "double-pendulum", "two-body",
                            "three-body", "magnetic-mirror", "henon-heiles")
    config = ProtocolConfig(holdout="pendulum")
    assert config.training_systems == ["mass-spring", "double-pendulum", "two-body",
                                       "three-body", "magnetic-mirror", "henon-heiles"]
    assert ProtocolConfig(holdout="henon-heiles").training_systems == list(META_SYSTEMS[:6])
    assert protocol._system_seed("magnetic-mirror", 1, 500) == 1505  # as with six systems
    assert config.layout == "padded" and ProtocolConfig("two-body", model="hogn").layout == \
        "graph"
    with pytest.raises(ValueError, match=r"unknown system 'spring'.*mass-spring, pendulum, "
                       "double-pendulum, two-body, three-body, magnetic-mirror, henon-heiles"):
        ProtocolConfig(holdout="spring")
    with pytest.raises(ValueError, match="unknown model 'ogn'; expected one of: hnn, mlp, hogn"):
        ProtocolConfig(holdout="pendulum", model="ogn")
    with pytest.raises(ValueError, match="unknown algorithm"):
        ProtocolConfig(holdout="pendulum", algorithm="sgd")
    for key, value in (("iterations", 0), ("trajectories", 1), ("inner_lr", -1.0),
                       ("meta_batch", 0), ("shots", 0)):
        with pytest.raises(ValueError, match=key):
            ProtocolConfig(holdout="pendulum", **{key: value})
    with pytest.raises(ValueError, match="unknown protocol option"):
        ProtocolConfig.from_dict({"holdout": "pendulum", "bogus": 1})
    assert ProtocolConfig.from_dict(config.to_dict()) == config


def test_hnn_sees_three_padded_particles_and_hogn_its_own_graph():
    hnn = protocol.make_model("hnn", seed=0)
    assert (hnn.n_particles, hnn.dim, hnn.config()["hidden"], hnn.config()["layers"]) == \
        (3, 2, 200, 3)
    again = protocol.make_model("hnn", seed=0)
    assert all(torch.equal(a, b) for a, b in zip(hnn.parameters(), again.parameters(),
                                                 strict=True))
    assert protocol.make_model("hogn", hidden=8).config()["absolute_positions"] is True
    with pytest.raises(ValueError, match="unknown model"):
        protocol.make_model("deltagn")


def test_run_writes_its_files_and_resuming_equals_a_straight_run(meta_systems, tmp_path):
    data = _training(meta_systems, "pendulum")
    straight = tmp_path / "straight"
    config = ProtocolConfig(holdout="pendulum", iterations=4, **TINY)
    record = protocol.meta_train_run(straight, config, progress=False, data=data)
    for name in ("config.json", "init.pt", "meta.pt", "pretrained.pt", "checkpoint-meta.pt",
                 "checkpoint-pretrain.pt", "metrics.jsonl", "loss.png"):
        assert (straight / name).is_file(), name
    saved = json.loads((straight / "config.json").read_text())
    assert saved["protocol"] == config.to_dict()
    assert saved["training_systems"] == config.training_systems
    rows = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["iteration"]) for r in rows] == \
        [("meta", i) for i in range(1, 5)] + [("pretrain", i) for i in range(1, 5)]
    assert all(math.isfinite(r["query_after"]) for r in record["history"]["meta"])

    # two steps, then two more from the checkpoints: the same weights as four at once
    resumed = tmp_path / "resumed"
    protocol.meta_train_run(resumed, ProtocolConfig(holdout="pendulum", iterations=2, **TINY),
                            progress=False, data=data)
    again = protocol.meta_train_run(resumed, config, progress=False, data=data)
    assert again["history"] == record["history"]
    for name in ("init.pt", "meta.pt", "pretrained.pt"):
        a, b = _weights(straight / name), _weights(resumed / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    # the same command once more: nothing left to do, nothing changes
    assert protocol.meta_train_run(resumed, config, progress=False, data=data)["history"] == \
        record["history"]
    with pytest.raises(ValueError, match="past the 2 iterations"):
        protocol.meta_train_run(resumed, ProtocolConfig(holdout="pendulum", iterations=2,
                                                        **TINY), progress=False, data=data)


def test_a_folder_holding_another_run_is_refused(meta_systems, tmp_path):
    data = _training(meta_systems, "two-body")
    run = tmp_path / "run"
    protocol.meta_train_run(run, ProtocolConfig(holdout="two-body", iterations=1, **TINY),
                            progress=False, data=data)
    other = ProtocolConfig(holdout="two-body", iterations=1, **{**TINY, "shots": 6})
    with pytest.raises(ValueError, match=r"holds a different run: shots=8 \(asked 6\)"):
        protocol.meta_train_run(run, other, progress=False, data=data)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a meta-learning run folder"):
        protocol.meta_train_run(stranger, other, progress=False, data=data)
    with pytest.raises(ValueError, match="exactly the training systems"):
        protocol.meta_train_run(tmp_path / "new", other, progress=False, data=meta_systems)


def test_three_starting_points_and_their_training(meta_systems, tmp_path):
    run = tmp_path / "run"
    config = ProtocolConfig(holdout="magnetic-mirror", iterations=3, **TINY)
    protocol.meta_train_run(run, config, progress=False,
                            data=_training(meta_systems, "magnetic-mirror"))
    loaded = protocol.load_run(run)
    assert list(loaded.params) == ["meta", "random", "pretrained"]
    init = protocol.make_model("hnn", seed=config.seed, hidden=8)
    # random init = the seeded initial weights = meta-training's and pretraining's start
    for k, v in parameters(init).items():
        assert torch.equal(loaded.params["random"][k], v.detach())
        if v.ndim == 2:  # every weight matrix trained (H's constant bias has no gradient)
            assert not torch.equal(loaded.params["meta"][k], v.detach())
            assert not torch.equal(loaded.params["pretrained"][k], loaded.params["meta"][k])
    with pytest.raises(ValueError, match="not a meta-learning run folder"):
        protocol.load_run(tmp_path)
    (run / "pretrained.pt").unlink()
    with pytest.raises(ValueError, match=r"no pretrained\.pt yet"):
        protocol.load_run(run)


def test_adaptation_scores_every_method_on_the_same_points(meta_systems):
    model = protocol.make_model("hnn", dtype=torch.float64, seed=0, hidden=8)
    params = parameters(model)
    twin = {k: v.detach().clone() for k, v in params.items()}
    data = meta_systems["pendulum"][:3]
    result = protocol.evaluate_adaptation(model, {"a": params, "b": twin}, data, shots=8,
                                          steps=6, inner_lr=0.1, eval_steps=[0, 3, 6],
                                          keep=(3,))
    assert result["steps"] == [0, 3, 6]
    assert result["mse"]["a"].shape == (3, 3)
    assert result["support_loss"]["a"].shape == (3, 7)
    # the same start, the same points and steps: identical scores
    assert torch.equal(result["mse"]["a"], result["mse"]["b"])
    # the normalised errors, stacked like the MSE: those of adapt_and_evaluate
    for key in ("derivative_nmse", "short_rollout_nmse"):
        values = result[key]["a"]
        assert values.shape == (3, 3) and values.dtype == torch.float64
        assert torch.equal(values, result[key]["b"]) and bool(torch.isfinite(values).all())
    single = adapt_and_evaluate(model, params, data[1], shots=8, steps=6, inner_lr=0.1,
                                eval_steps=[0, 3, 6], seed=1)
    # (batched over trajectories and methods: equal to rounding)
    for key in ("derivative_nmse", "short_rollout_nmse", "mse"):
        torch.testing.assert_close(result[key]["a"][1], getattr(single, key), rtol=1e-10,
                                   atol=0)
    looped = protocol.evaluate_adaptation(model, {"a": params}, data, shots=8, steps=6,
                                          inner_lr=0.1, eval_steps=[0, 3, 6], batch=1)
    for key in ("derivative_nmse", "short_rollout_nmse", "mse", "support_loss"):
        torch.testing.assert_close(result[key]["a"], looped[key]["a"], rtol=1e-10, atol=0)
    assert bool(torch.isfinite(result["mse"]["a"]).all())
    # SGD on the support points lowers their loss
    assert bool((result["support_loss"]["a"][:, -1] < result["support_loss"]["a"][:, 0]).all())
    q, _ = result["rollouts"]["a"][3]
    assert q.shape == (len(data.t), 1, 2)  # real particle only
    assert [r["step"] for r in result["summary"]["a"]] == [0, 3, 6]
    # a second call draws the same points: the same numbers
    again = protocol.evaluate_adaptation(model, {"a": params}, data, shots=8, steps=6,
                                         inner_lr=0.1, eval_steps=[0, 3, 6])
    assert torch.equal(again["mse"]["a"], result["mse"]["a"])


def test_summary_is_nan_safe_with_a_t_interval():
    mse = torch.tensor([[1.0, 2.0], [3.0, math.inf], [5.0, math.nan], [7.0, 4.0]])
    rows = protocol.summarize(mse, [0, 10])
    first, second = rows
    assert first["step"] == 0 and first["finite"] == 4 and first["diverged"] == 0
    assert first["mean"] == pytest.approx(4.0) and first["median"] == pytest.approx(4.0)
    half = st.t.ppf(0.975, 3) * torch.tensor([1.0, 3, 5, 7]).std().item() / 2
    assert first["ci_high"] - first["mean"] == pytest.approx(half)
    assert first["mean"] - first["ci_low"] == pytest.approx(half)
    assert second["finite"] == 2 and second["diverged"] == 2
    assert second["mean"] == pytest.approx(3.0)
    lonely = protocol.summarize(torch.tensor([[2.0], [math.inf]]), [5])[0]
    assert lonely["mean"] == 2.0 and math.isnan(lonely["ci_low"])
    dead = protocol.summarize(torch.tensor([[math.nan]]), [5])[0]
    assert math.isnan(dead["mean"]) and dead["diverged"] == 1


def test_compare_counts_a_majority_of_steps():
    def rows(means):
        return [{"step": s, "mean": m, "ci_low": m - 0.1, "ci_high": m + 0.1}
                for s, m in zip((0, 1, 5, 15, 100), means, strict=True)]

    summary = {"meta": rows([1.0, 1.0, 0.5, 0.2, 0.1]),
               "random": rows([1.0, 0.9, 0.8, 0.7, 0.05])}
    c = protocol.compare(summary, "meta", "random")
    assert c["wins"] == [5, 15] and not c["ahead"]  # 2 of 4 is no majority
    assert c["clear_wins"] == [5, 15]
    summary["random"][2]["mean"] = math.nan  # a diverged baseline loses
    summary["meta"][4]["mean"] = 0.01
    c = protocol.compare(summary, "meta", "random")
    assert c["wins"] == [5, 15, 100] and c["ahead"]


def test_hogn_runs_the_protocol_on_graphs(meta_systems, tmp_path):
    run = tmp_path / "hogn"
    config = ProtocolConfig(holdout="three-body", model="hogn", iterations=1,
                            **{**TINY, "model_args": {"hidden": 8, "steps": 1}})
    protocol.meta_train_run(run, config, progress=False,
                            data=_training(meta_systems, "three-body"))
    loaded = protocol.load_run(run)
    result = protocol.evaluate_adaptation(loaded.model, loaded.params,
                                          meta_systems["three-body"][:1], shots=8, steps=2,
                                          inner_lr=0.01, eval_steps=[0, 2])
    assert all(bool(torch.isfinite(v).all()) for v in result["mse"].values())


def test_a_damaged_checkpoint_is_refused_and_the_previous_one_goes_on(meta_systems, tmp_path):
    """Flipped bytes in a meta-train checkpoint fail its checksum: the resume is refused
    naming it; deleting it goes on from the previous one, to the same weights."""
    from hogn.io import FileFormatError, previous_file

    data = _training(meta_systems, "pendulum")
    straight, run = tmp_path / "straight", tmp_path / "run"
    final = ProtocolConfig(holdout="pendulum", iterations=6, **{**TINY, "checkpoint_every": 2})
    protocol.meta_train_run(straight, final, progress=False, data=data)
    first = ProtocolConfig(holdout="pendulum", iterations=4, **{**TINY, "checkpoint_every": 2})
    protocol.meta_train_run(run, first, progress=False, data=data)
    ckpt = run / "checkpoint-meta.pt"
    assert previous_file(ckpt).is_file()
    raw = bytearray(ckpt.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match=r"checkpoint-meta\.pt.*checkpoint-meta\.prev\.pt"):
        protocol.meta_train_run(run, final, progress=False, data=data)
    ckpt.unlink()
    protocol.meta_train_run(run, final, progress=False, data=data)
    for name in ("meta.pt", "pretrained.pt"):
        a, b = _weights(straight / name), _weights(run / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_one_process_writes_a_meta_run_folder(meta_systems, tmp_path):
    import subprocess
    import sys

    from hogn.io import RunLockedError

    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from hogn import io; "
         "lock = io.RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)",
         str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=r"in use by another process \(pid"):
            protocol.meta_train_run(run, ProtocolConfig(holdout="two-body", iterations=1,
                                                        **TINY),
                                    progress=False, data=_training(meta_systems, "two-body"))
        assert not (run / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
