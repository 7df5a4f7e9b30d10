"""Meta-learning options a learn2learn / torchopt user expects: learned per-parameter inner
rates (Meta-SGD: returned, saved, reloaded on resume, used to adapt), a decoder-only inner
loop (ANIL), several inner steps, first-order MAML and Reptile; each through the library,
the leave-one-system-out protocol and ``hogn meta-train`` / ``hogn adapt``. Numerical
checks in float64 against hand-written loops."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import hogn
import meta
from hogn.cli import main
from hogn.io import load_checked
from hogn.models import HamiltonianModel
from meta import protocol
from meta.algorithms import (
    MetaConfig,
    decoder_names,
    inner_parameters,
    meta_gradient,
    parameters,
    task_loss,
)
from meta.evaluate import rollout_with
from meta.protocol import ProtocolConfig
from meta.tasks import TaskSampler, trajectory_points

F64 = torch.float64
TINY = dict(model_args={"hidden": 8}, trajectories=5, shots=8, meta_batch=2,
            checkpoint_every=1, dtype="float64")


def _training(six, holdout):
    return {s: d for s, d in six.items() if s != holdout}


def _tiny_hnn():
    """``H = W2 tanh(W1 [q, p, c] + b1) + b2`` of one particle (the library's HNN)."""
    torch.manual_seed(0)
    return hogn.models.get("hnn", n_particles=1, dim=2, node_constants=1, hidden=5,
                           layers=2).double()


def explicit_loss(theta, points):
    """The log-cosh task loss of :func:`_tiny_hnn` written out by hand."""
    w1, b1, w2, b2 = theta
    q = points.graph.q.detach().requires_grad_(True)
    p = points.graph.p.detach().requires_grad_(True)
    x = torch.cat([q, p, points.graph.c], -1)
    h = (torch.tanh(x @ w1.T + b1) @ w2.T + b2).sum()
    dh_dq, dh_dp = torch.autograd.grad(h, (q, p), create_graph=True)
    residual = torch.cat([dh_dp - points.dq, -dh_dq - points.dp], -1)
    return torch.log(torch.cosh(residual)).mean()


NAMES = ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]


# ----------------------------------------------------------------------- decoders
class _Unknown(HamiltonianModel):
    name = "unknown-model"

    def __init__(self):
        super().__init__({"dim": 2, "node_constants": 1})
        self.w = nn.Parameter(torch.ones(2))


def test_the_decoder_of_each_model_family():
    kw = {"dim": 2, "node_constants": 1, "hidden": 4}
    flat = {"n_particles": 1, "dim": 2, "node_constants": 1, "hidden": 4}
    assert decoder_names(hogn.models.get("hnn", **flat)) == ["net.4.weight", "net.4.bias"]
    assert decoder_names(hogn.models.get("mlp", **flat, layers=2)) == ["net.2.weight",
                                                                       "net.2.bias"]
    gn = [f"gn.node_decoder.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")]
    assert decoder_names(hogn.models.get("hogn", **kw, steps=1)) == gn
    assert decoder_names(hogn.models.get("ogn", **kw, steps=1)) == gn
    assert decoder_names(hogn.models.get("deltagn", dt=0.1, **kw, steps=1)) == gn
    edges = decoder_names(hogn.models.get("hogn", **kw, steps=1, edge_energies=True))
    assert edges == gn + [n.replace("node", "edge") for n in gn]
    sep = decoder_names(hogn.models.get("separable-hogn", **kw, steps=1))
    assert sep == ["kinetic.2.weight", "kinetic.2.bias"] + [
        n.replace("gn.", "potential.") for n in gn]
    pot = decoder_names(hogn.models.get("potential-hogn", **kw, steps=1))
    assert pot == [n.replace("gn.", "potential.") for n in gn]
    assert set(meta.DECODERS) >= set(hogn.models.names())
    with pytest.raises(ValueError, match="no decoder defined for model 'unknown-model'"):
        decoder_names(_Unknown())


@pytest.mark.parametrize("name", ["hnn", "mlp", "hogn", "ogn"])
def test_anil_moves_only_the_decoder_in_the_inner_loop(tasks, name):
    torch.manual_seed(0)
    if name in ("hnn", "mlp"):
        model = hogn.models.get(name, n_particles=1, dim=2, node_constants=1, hidden=8)
    else:
        model = hogn.models.get(name, dim=2, node_constants=1, hidden=8, steps=1,
                                absolute_positions=True)
    model = model.double()
    params = parameters(model)
    head = set(decoder_names(model))
    assert head and head < set(params)
    config = MetaConfig(anil=True, inner_steps=2, inner_lr=0.1)
    assert set(inner_parameters(model, config)) == head
    support = tasks[0].support
    for lr in (0.1, meta.init_inner_lr({k: params[k] for k in head}, 0.1)):
        adapted = meta.inner_update(model, params, support, steps=2, lr=lr,
                                    only=decoder_names(model))
        for k, v in adapted.items():
            if k in head:
                moved = not torch.equal(v.detach(), params[k].detach())
                # every decoder parameter moves, but for the constant energy of H's last bias
                constant = name in ("hnn", "hogn") and k.endswith("bias") and v.numel() == 1
                assert moved != constant, k
            else:
                assert v is params[k], k  # the very tensor: not moved, still θ
        # a full inner loop moves the body too
        full = meta.inner_update(model, params, support, steps=2, lr=0.1)
        assert any(not torch.equal(full[k].detach(), params[k].detach())
                   for k in params if k not in head)


# --------------------------------------------------------------- ANIL meta-gradient
@pytest.mark.parametrize("inner_steps", [1, 2])
@pytest.mark.parametrize("algorithm", ["maml", "fomaml"])
def test_anil_meta_gradient_equals_explicit_differentiation(tasks, algorithm, inner_steps):
    model, alpha = _tiny_hnn(), 0.3
    assert decoder_names(model) == NAMES[2:]
    theta = [parameters(model)[k] for k in NAMES]
    total = 0
    for task in tasks:  # inner loop on (W2, b2) only, by hand
        body, head = theta[:2], theta[2:]
        for _ in range(inner_steps):
            g = torch.autograd.grad(explicit_loss(body + head, task.support), head,
                                    create_graph=algorithm == "maml", allow_unused=True,
                                    materialize_grads=True)  # b2 (a constant in H): 0
            if algorithm == "fomaml":
                g = [gi.detach() for gi in g]
            head = [h - alpha * gi for h, gi in zip(head, g, strict=True)]
        total = total + explicit_loss(body + head, task.query)
    expected = torch.autograd.grad(total / len(tasks), theta, allow_unused=True,
                                   materialize_grads=True)

    config = MetaConfig(algorithm=algorithm, inner_steps=inner_steps, inner_lr=alpha,
                        anil=True)
    grads, _, stats = meta_gradient(model, parameters(model), tasks, config)
    assert stats["query_after"] == pytest.approx(float(total.detach()) / len(tasks), rel=1e-12)
    for k, want in zip(NAMES, expected, strict=True):
        torch.testing.assert_close(grads[k], want, rtol=0, atol=1e-10)
    assert grads["net.0.weight"].abs().max() > 0  # the outer loop trains the body too
    if algorithm == "maml":
        loss = meta.meta_loss(model, parameters(model), tasks, config)
        for got, want in zip(torch.autograd.grad(loss, theta, allow_unused=True,
                                                 materialize_grads=True), expected,
                             strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    # a full inner loop gives another meta-gradient: the restriction is in effect
    full, _, _ = meta_gradient(model, parameters(model), tasks,
                               MetaConfig(algorithm=algorithm, inner_steps=inner_steps,
                                          inner_lr=alpha))
    assert not torch.allclose(full["net.0.weight"], grads["net.0.weight"], atol=1e-6)


# ----------------------------------------------------------- several inner steps
def test_several_inner_steps_equal_a_hand_unrolled_loop(tasks):
    model, steps = _tiny_hnn(), 3
    theta = [parameters(model)[k] for k in NAMES]
    g = torch.Generator().manual_seed(7)
    rates = {k: (0.05 + 0.3 * torch.rand(v.shape, generator=g, dtype=F64)).requires_grad_(True)
             for k, v in parameters(model).items()}
    support, query = tasks[1].support, tasks[1].query
    for lr, only in ((0.2, None), (rates, None), (0.2, NAMES[2:])):
        def alpha(k, lr=lr):
            return lr[k] if isinstance(lr, dict) else lr
        th = list(theta)
        moving = [NAMES.index(k) for k in (only or NAMES)]
        for _ in range(steps):  # θ_{j+1} = θ_j − α ⊙ ∇L_s(θ_j), unrolled by hand
            grad = torch.autograd.grad(explicit_loss(th, support), [th[i] for i in moving],
                                       create_graph=True, allow_unused=True,
                                       materialize_grads=True)
            for i, gi in zip(moving, grad, strict=True):
                th[i] = th[i] - alpha(NAMES[i]) * gi
        got = meta.inner_update(model, parameters(model), support, steps=steps, lr=lr,
                                only=only)
        for i, k in enumerate(NAMES):
            torch.testing.assert_close(got[k], th[i], rtol=0, atol=1e-12)
        # and the second-order meta-gradient through the three steps, rates included
        targets = theta + ([rates[k] for k in NAMES] if lr is rates else [])
        want = torch.autograd.grad(explicit_loss(th, query), targets, allow_unused=True,
                                   materialize_grads=True)
        config = MetaConfig(inner_steps=steps, inner_lr=0.2, anil=only is not None)
        grads, lr_grads, _ = meta_gradient(model, parameters(model), [tasks[1]], config,
                                           lr if lr is rates else None)
        for i, k in enumerate(NAMES):
            torch.testing.assert_close(grads[k], want[i], rtol=0, atol=1e-10)
            if lr is rates:
                torch.testing.assert_close(lr_grads[k], want[4 + i], rtol=0, atol=1e-10)
    # the steps count: one step is not three
    one, three = (meta.inner_update(model, parameters(model), support, steps=n, lr=0.2)
                  for n in (1, 3))
    assert not torch.allclose(one["net.0.weight"], three["net.0.weight"])


# ----------------------------------------------------------------------- Meta-SGD
def test_meta_train_returns_the_learned_rates(mass_spring, pendulum):
    sampler = TaskSampler({"a": mass_spring, "b": pendulum}, shots=5, query=5, seed=4)
    model = _tiny_hnn()
    config = MetaConfig(learn_inner_lr=True, anil=True, inner_lr=0.1, outer_lr=0.01,
                        meta_batch=2, shots=5, query=5)
    history = meta.meta_train(model, sampler, config, iterations=3)
    assert isinstance(history, list) and len(history) == 3
    assert list(history.inner_lr) == NAMES[2:]  # ANIL: rates of the decoder only
    assert all(v.requires_grad and not torch.equal(v.detach(), torch.full_like(v, 0.1))
               for k, v in history.inner_lr.items() if k != "net.2.bias")
    plain = meta.meta_train(_tiny_hnn(), TaskSampler({"a": mass_spring}, shots=5, query=5),
                            MetaConfig(meta_batch=2, shots=5, query=5), iterations=1)
    assert plain.inner_lr == 0.01


def test_learned_rates_change_adaptation_to_a_hand_computed_step(six_systems):
    model = protocol.make_model("hnn", F64, seed=0, hidden=8)
    params = {k: v.detach() for k, v in parameters(model).items()}
    g = torch.Generator().manual_seed(3)
    rates = {k: 0.02 + 0.2 * torch.rand(v.shape, generator=g, dtype=F64)
             for k, v in params.items()}
    traj = six_systems["pendulum"][0]
    t = len(traj.t)
    # shots = every point: the support does not depend on the draw
    support = trajectory_points(traj.q, traj.p, traj.dq, traj.dp, traj.c, traj.edge_index,
                                torch.arange(t), n_particles=3)
    theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    grads = torch.autograd.grad(task_loss(model, theta, support), list(theta.values()),
                                allow_unused=True, materialize_grads=True)
    stepped = {k: (v - rates[k] * gk).detach() for (k, v), gk in zip(theta.items(), grads,
                                                                      strict=True)}
    learned = meta.adapt_and_evaluate(model, params, traj, shots=t, steps=1, inner_lr=rates,
                                      eval_steps=[0, 1], keep=(1,))
    scalar = meta.adapt_and_evaluate(model, params, traj, shots=t, steps=1, inner_lr=0.1,
                                     eval_steps=[0, 1], keep=(1,))
    assert float(learned.support_loss[1]) == pytest.approx(
        float(task_loss(model, stepped, support).detach()), rel=1e-13)
    start = trajectory_points(traj.q, traj.p, traj.dq, traj.dp, traj.c, traj.edge_index,
                              torch.tensor([0]), n_particles=3)
    q, p = rollout_with(model, stepped, start, traj.dt, t - 1)
    torch.testing.assert_close(learned.rollouts[1][0], q[:, start.mask], rtol=0, atol=1e-12)
    torch.testing.assert_close(learned.rollouts[1][1], p[:, start.mask], rtol=0, atol=1e-12)
    assert learned.mse[0] == scalar.mse[0]  # the same start ...
    assert learned.mse[1] != scalar.mse[1]  # ... and another step
    assert learned.support_loss[1] != scalar.support_loss[1]


def test_meta_sgd_rates_are_saved_reloaded_on_resume_and_used_to_adapt(six_systems,
                                                                       tmp_path):
    data = _training(six_systems, "pendulum")
    config = ProtocolConfig(holdout="pendulum", iterations=3, learn_inner_lr=True, **TINY)
    record = protocol.meta_train_run(tmp_path / "straight", config, progress=False,
                                     data=data)
    rates = record["inner_lr"]
    run = protocol.load_run(tmp_path / "straight")
    assert set(rates) == set(run.params["meta"]) and record["files"]["inner_lr"] == "inner_lr.pt"
    assert any(not torch.equal(v, torch.full_like(v, config.inner_lr)) for v in rates.values())
    for k, v in rates.items():  # bit-identical after the round trip through the file
        assert run.inner_lr[k].dtype == F64 and torch.equal(run.inner_lr[k], v), k
    ckpt = load_checked(tmp_path / "straight" / "checkpoint-meta.pt")
    assert all(torch.equal(ckpt["inner_lr"][k], v) for k, v in rates.items())

    # one step, then two more from the checkpoint (rates and their Adam state reloaded)
    protocol.meta_train_run(tmp_path / "resumed", ProtocolConfig(
        holdout="pendulum", iterations=1, learn_inner_lr=True, **TINY), progress=False,
        data=data)
    again = protocol.meta_train_run(tmp_path / "resumed", config, progress=False, data=data)
    assert again["history"] == record["history"]
    resumed = protocol.load_run(tmp_path / "resumed")
    for k, v in rates.items():
        assert torch.equal(resumed.inner_lr[k], v), k
        assert torch.equal(resumed.params["meta"][k], run.params["meta"][k]), k

    # adaptation of the meta-trained weights uses them; the baselines the scalar rate
    assert run.adaptation_lr() is run.inner_lr
    assert run.method_lr(0.05) == {"meta": run.inner_lr, "random": 0.05, "pretrained": 0.05}
    traj = six_systems["pendulum"][:1]
    kw = dict(shots=8, steps=2, inner_lr=config.inner_lr, eval_steps=[0, 2])
    plain = protocol.evaluate_adaptation(run.model, run.params, traj, **kw)
    with_rates = protocol.evaluate_adaptation(run.model, run.params, traj, **kw,
                                              method_lr=run.method_lr())
    direct = meta.adapt_and_evaluate(run.model, run.params["meta"], traj[0], shots=8,
                                     steps=2, inner_lr=run.inner_lr, eval_steps=[0, 2])
    assert torch.equal(with_rates["mse"]["meta"][0], direct.mse)
    assert not torch.equal(with_rates["mse"]["meta"], plain["mse"]["meta"])
    for method in ("random", "pretrained"):
        assert torch.equal(with_rates["mse"][method], plain["mse"][method])
    with pytest.raises(ValueError, match="unknown method"):
        protocol.evaluate_adaptation(run.model, run.params, traj, **kw, method_lr={"x": 0.1})

    # a damaged rates file is refused on loading
    (tmp_path / "straight" / "inner_lr.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"inner_lr\.pt"):
        protocol.load_run(tmp_path / "straight")


# -------------------------------------------------------------------- the protocol
OPTIONS = [
    {},
    {"learn_inner_lr": True},
    {"anil": True},
    {"algorithm": "fomaml", "inner_steps": 3, "anil": True, "learn_inner_lr": True},
    {"algorithm": "reptile", "inner_steps": 2},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(
    f"{k}={v}" for k, v in o.items()) or "defaults")
def test_the_protocol_trains_as_meta_train_with_the_same_options(six_systems, tmp_path,
                                                                 options):
    data = _training(six_systems, "two-body")
    config = ProtocolConfig(holdout="two-body", iterations=2, pretrain=False, **TINY,
                            **options)
    for key, value in options.items():
        assert getattr(config.meta_config(), key) == value
    record = protocol.meta_train_run(tmp_path / "run", config, progress=False, data=data)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["protocol"]
    assert ProtocolConfig.from_dict(saved) == config
    # options added later are written only when set: a default record reads as before
    assert ("learn_inner_lr" in saved, "anil" in saved) == (
        "learn_inner_lr" in options, "anil" in options)
    # by hand: the same model, tasks and options through meta.meta_train
    model = protocol.make_model("hnn", F64, config.seed, hidden=8)
    sampler = TaskSampler(data, shots=config.shots, layout="padded", n_particles=3,
                          split="train", seed=config.seed, dtype=F64)
    history = meta.meta_train(model, sampler, config.meta_config(), iterations=2)
    assert [r["query_after"] for r in record["history"]["meta"]] == \
        [r["query_after"] for r in history]
    run = protocol.load_run(tmp_path / "run")
    for k, v in parameters(model).items():
        assert torch.equal(run.params["meta"][k], v.detach()), k
    if config.learn_inner_lr:
        assert list(run.inner_lr) == list(history.inner_lr)
        assert all(torch.equal(run.inner_lr[k], v.detach())
                   for k, v in history.inner_lr.items())
        if config.anil:
            assert list(run.inner_lr) == decoder_names(model)
    else:
        assert run.inner_lr is None and not (tmp_path / "run" / "inner_lr.pt").exists()
    rule = run.adaptation_lr(0.05)
    if config.anil and not config.learn_inner_lr:  # the decoder only, at the scalar rate
        assert list(rule) == decoder_names(model)
        assert all(float(v) == 0.05 and v.dtype == F64 for v in rule.values())
    elif not config.learn_inner_lr:
        assert rule == 0.05


def test_meaningless_combinations_are_refused():
    with pytest.raises(ValueError, match="anil needs maml or fomaml"):
        MetaConfig(algorithm="reptile", anil=True)
    with pytest.raises(ValueError, match=r"learn_inner_lr \(Meta-SGD\).*reptile has none"):
        ProtocolConfig(holdout="pendulum", algorithm="reptile", learn_inner_lr=True)
    with pytest.raises(ValueError, match="anil must be True or False"):
        ProtocolConfig(holdout="pendulum", anil="yes")
    with pytest.raises(ValueError, match="inner_steps must be a positive int"):
        ProtocolConfig(holdout="pendulum", inner_steps=0)
    model = _tiny_hnn()
    with pytest.raises(ValueError, match=r"unknown parameter.*'net\.9\.weight'"):
        meta.inner_update(model, parameters(model), None, only=["net.9.weight"])
    with pytest.raises(ValueError, match=r"no inner learning rate for parameter 'net\.0\.bias'"):
        meta.inner_update(model, parameters(model), None, only=["net.0.bias"],
                          lr={"net.0.weight": torch.tensor(0.1)})
    # an old record without the later options reads as the defaults
    old = ProtocolConfig(holdout="pendulum").to_dict()
    assert "anil" not in old and "learn_inner_lr" not in old
    assert ProtocolConfig.from_dict(old) == ProtocolConfig(holdout="pendulum")
    assert ProtocolConfig(holdout="pendulum", anil=True).to_dict()["anil"] is True


# ------------------------------------------------------------------------- the CLI
CLI = ["--iterations", "1", "--trajectories", "3", "--shots", "8", "--meta-batch", "2",
       "--hidden", "8", "--checkpoint-every", "1", "--no-pretrain", "--quiet"]


def _error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert match in err, err


def test_cli_options_round_trip_and_a_resume_with_other_options_is_refused(
        tmp_path, capsys, monkeypatch, six_systems):
    # the training data: the shared small datasets (tests/meta/test_meta_cli.py generates)
    monkeypatch.setattr(protocol, "load_systems", lambda names, *a, **k: {
        n: six_systems[n] for n in names})
    run = tmp_path / "run"
    options = ["--algorithm", "fomaml", "--inner-steps", "2", "--meta-sgd", "--anil"]
    assert main(["meta-train", "--holdout", "pendulum", *CLI, *options, "-o", str(run)]) == 0
    out = capsys.readouterr().out
    assert "inner_lr.pt" in out
    record = json.loads((run / "config.json").read_text())
    saved = ProtocolConfig.from_dict(record["protocol"])
    assert (saved.algorithm, saved.inner_steps, saved.learn_inner_lr, saved.anil) == \
        ("fomaml", 2, True, True)
    loaded = protocol.load_run(run)
    assert list(loaded.inner_lr) == decoder_names(loaded.model) == ["net.4.weight",
                                                                    "net.4.bias"]
    # the same command resumes (nothing left to do); any other option is refused
    assert main(["meta-train", "--holdout", "pendulum", *CLI, *options, "-o", str(run)]) == 0
    capsys.readouterr()
    for argv, match in (
            (["--algorithm", "maml", "--inner-steps", "2", "--meta-sgd", "--anil"],
             "holds a different run: algorithm='fomaml' (asked 'maml')"),
            (["--algorithm", "fomaml", "--inner-steps", "3", "--meta-sgd", "--anil"],
             "inner_steps=2 (asked 3)"),
            (["--algorithm", "fomaml", "--inner-steps", "2", "--anil"],
             "learn_inner_lr=True (asked False)"),
            (["--algorithm", "fomaml", "--inner-steps", "2", "--meta-sgd"],
             "anil=True (asked False)")):
        _error(capsys, ["meta-train", "--holdout", "pendulum", *CLI, *argv, "-o", str(run)],
               match)
    for argv, match in ((["--algorithm", "reptile", "--meta-sgd"],
                         "--meta-sgd needs --algorithm maml or fomaml"),
                        (["--algorithm", "reptile", "--anil"],
                         "--anil needs --algorithm maml or fomaml"),
                        (["--inner-steps", "0"], "--inner-steps: must be an int >= 1, got 0")):
        _error(capsys, ["meta-train", "--holdout", "pendulum", *CLI, *argv, "-o",
                        str(tmp_path / "other")], match)
    assert not (tmp_path / "other").exists()

    # hogn adapt uses the learned rates for the meta-trained weights
    out_json = tmp_path / "a.json"
    assert main(["adapt", str(run), "--steps", "1", "--trajectories", "1", "--eval-steps",
                 "1", "--json", str(out_json), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "learned per-parameter rates (Meta-SGD) on the decoder's parameters" in text
    saved = json.loads(out_json.read_text())
    assert saved["meta_adaptation"].startswith("learned per-parameter rates")
    data = protocol.eval_data("pendulum", 1, 0)
    want = protocol.evaluate_adaptation(loaded.model, loaded.params, data, shots=8, steps=1,
                                        inner_lr=0.1, eval_steps=[1],
                                        method_lr=loaded.method_lr())
    for method in ("meta", "random"):
        assert saved["mse"][method] == want["mse"][method].tolist(), method
