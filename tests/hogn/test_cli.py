"""The ``hogn`` command line end to end (tiny sizes): generate, train, resume,
evaluate, rollout; every user mistake is one line on stderr and exit status 2."""

import json

import pytest

from hogn.cli import main

TRAIN = ["--hidden", "8", "--max-samples", "64", "--batch-size", "32", "--quiet"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = root / "spring.pt"
    assert main(["generate", "spring-nbody", "--n-particles", "3..4", "--trajectories", "8",
                 "--steps", "20", "--dt", "0.05", "--quiet", "-o", str(data)]) == 0
    run = root / "run"
    assert main(["train", "hogn", str(data), "--epochs", "2", *TRAIN, "-o", str(run)]) == 0
    return root, data, run


def _error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert match in err, err
    return err


def test_train_writes_a_run_and_resumes_with_more_epochs(files, capsys):
    root, data, run = files
    for name in ("config.json", "metrics.jsonl", "best.pt", "last.pt", "checkpoint.pt",
                 "loss.png"):
        assert (run / name).is_file(), name
    record = json.loads((run / "config.json").read_text())
    assert record["data"]["system"]["name"] == "spring-nbody"
    assert record["model_config"]["edge_features"] == 2  # inferred from the data
    resumed = root / "resumed"
    assert main(["train", "hogn", str(data), "--epochs", "1", *TRAIN, "-o", str(resumed)]) == 0
    assert main(["train", "hogn", str(data), "--epochs", "2", *TRAIN, "-o", str(resumed)]) == 0
    rows = [json.loads(x) for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    straight = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["val_loss"] == pytest.approx(straight[-1]["val_loss"], rel=1e-6)
    _error(capsys, ["train", "hogn", str(data), "--epochs", "2", "--hidden", "16", "--quiet",
                    "-o", str(run)], "already holds a different run")


def test_evaluate_prints_the_table_and_writes_json(files, capsys, tmp_path):
    _, data, run = files
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(run), str(data), "--integrator", "gauss4", "--json",
                 str(out), "--plot", str(tmp_path / "e.png"), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "rel_error" in text and "gauss4" in text
    summary = json.loads(out.read_text())["summary"]
    assert 0 < summary["rel_error"] < 1 and summary["steps"] == 20
    assert summary["energy_drift"] > 0 and (tmp_path / "e.png").stat().st_size > 0


def test_rollout_runs_zero_shot_on_a_larger_system(files, capsys, tmp_path):
    _, _, run = files
    out = tmp_path / "roll.pt"
    assert main(["rollout", str(run), "--n-particles", "9", "--trajectories", "2", "--steps",
                 "10", "-o", str(out), "--plot", str(tmp_path / "r.png"), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "9" in text and "rk4" in text and out.stat().st_size > 0
    _error(capsys, ["rollout", str(run), "--steps", "5", "-o", str(out), "--quiet"],
           "already exists")


def test_user_mistakes_are_one_line(files, capsys, tmp_path):
    root, data, run = files
    _error(capsys, ["train", "nope", str(data), "-o", str(tmp_path / "r")], "unknown model")
    _error(capsys, ["train", "mlp", str(data), "--quiet", "-o", str(tmp_path / "r")],
           "needs graphs of one size")
    _error(capsys, ["evaluate", str(tmp_path), str(data)], "not a hogn run folder")
    _error(capsys, ["evaluate", str(run), str(tmp_path / "missing.pt")], "missing.pt")
    pend = root / "pendulum.pt"
    assert main(["generate", "pendulum", "--trajectories", "4", "--steps", "5", "--quiet",
                 "-o", str(pend)]) == 0
    _error(capsys, ["evaluate", str(run), str(pend), "--quiet"], "expects d=2")
    _error(capsys, ["rollout", str(run), "--data", str(data), "--n-particles", "5"],
           "--data gives the states")


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4", "symplectic_euler"])
def test_a_splitting_method_is_refused_on_a_learned_h(files, capsys, tmp_path, method):
    _, data, run = files
    for argv in (["evaluate", str(run), str(data), "--integrator", method],
                 ["rollout", str(run), "--steps", "3", "--integrator", method,
                  "-o", str(tmp_path / "r.pt")],
                 ["train", "ogn", str(data), "--target", "rollout", "--integrator", method,
                  "-o", str(tmp_path / "t")]):
        err = _error(capsys, argv, f"{method} is a splitting method")
        assert "not separable" in err and "gauss4" in err and "implicit_midpoint" in err
    assert not (tmp_path / "r.pt").exists() and not (tmp_path / "t").exists()
    # a separable learned H may use it
    assert main(["train", "separable-hogn", str(data), "--epochs", "1", "--target", "rollout",
                 "--integrator", method, *TRAIN, "-o", str(tmp_path / "s")]) == 0


def test_a_stepper_refuses_an_integrator(files, capsys, tmp_path):
    _, data, _ = files
    run = tmp_path / "delta"
    assert main(["train", "deltagn", str(data), "--epochs", "1", *TRAIN, "-o", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["target"] == "rollout"
    _error(capsys, ["evaluate", str(run), str(data), "--integrator", "rk4"],
           "stepper with its own dt")
    assert main(["evaluate", str(run), str(data), "--quiet"]) == 0


def test_non_finite_loss_is_reported_and_the_checkpoint_kept(files, capsys, tmp_path):
    _, data, _ = files
    run = tmp_path / "blowup"
    err = _error(capsys, ["train", "ogn", str(data), "--epochs", "5", "--lr", "1e30",
                          *TRAIN, "-o", str(run)], "non-finite")
    assert "epoch" in err and "step" in err


def test_every_command_has_help(capsys):
    for command in ("generate", "info", "train", "rollout", "evaluate", "demo"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "example" in capsys.readouterr().out or command in ("info", "demo")
