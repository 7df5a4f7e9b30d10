"""The ``hogn`` command line end to end (tiny sizes): generate, train, resume,
evaluate, rollout; every user mistake is one line on stderr and exit status 2."""

import json

import pytest

from hogn.cli import main

TRAIN = ["--hidden", "8", "--max-samples", "64", "--batch-size", "32", "--quiet"]


@pytest.fixture(scope="module")
def files(tmp_path_factory, cli_run):
    return cli_run(tmp_path_factory.mktemp("cli"), particles="3..4",
                   trajectories=8, steps=20, epochs=2, train=TRAIN)


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
    report = json.loads(out.read_text())
    summary, refs = report["summary"], report["references"]
    assert 0 < summary["rel_error"] < 1 and summary["steps"] == 20
    # the true field through gauss4 at the data's dt is far closer than standing still
    assert refs["true field, gauss4"]["rel_error"] < 0.01 * refs["standing still"]["rel_error"]
    assert summary["energy_drift"] > 0 and (tmp_path / "e.png").stat().st_size > 0


def test_rollout_runs_zero_shot_on_a_larger_system(files, capsys, tmp_path):
    _, _, run = files
    out = tmp_path / "roll.pt"
    assert main(["rollout", str(run), "--n-particles", "9", "--trajectories", "2", "--steps",
                 "10", "-o", str(out), "--plot", str(tmp_path / "r.png"), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "9" in text and "rk4" in text and out.stat().st_size > 0
    rows = {line.split("  ")[0].strip(): line for line in text.splitlines()}
    assert "standing still" in rows and "true field, rk4" in rows  # what the numbers mean
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


# ------------------------------------------------- no silent defaults, no hangs
def _refused_by_parser(capsys, argv, match):
    """The value is refused where it is parsed: one line naming the flag, exit 2."""
    err = _error(capsys, argv, match)
    assert "--help" in err
    return err


GEN = ["generate", "pendulum", "--quiet"]


@pytest.mark.parametrize("flag", ["--dt", "--steps", "--trajectories"])
def test_generate_refuses_zero_sizes_instead_of_using_defaults(capsys, tmp_path, flag):
    out = tmp_path / "d.pt"
    _refused_by_parser(capsys, [*GEN, flag, "0", "-o", str(out)], f"argument {flag}")
    assert not out.exists()


@pytest.mark.parametrize("rtol", ["-1", "0", "nan", "inf", "1e-300", "x"])
def test_generate_refuses_tolerances_it_could_never_meet(capsys, tmp_path, rtol):
    # 0, nan and 1e-300 used to run for minutes without a word
    out = tmp_path / "d.pt"
    err = _refused_by_parser(capsys, [*GEN, "--rtol", rtol, "-o", str(out)], "--rtol")
    assert "1e-14" in err or "a number" in err
    assert not out.exists()


@pytest.mark.parametrize("value", ["true", "false", "null", "\"heavy\"", "[1, 2, 3]"])
def test_generate_refuses_a_parameter_of_the_wrong_kind(capsys, tmp_path, value):
    out = tmp_path / "d.pt"
    _error(capsys, [*GEN, "--param", f"mass={value}", "-o", str(out)], "--param mass")
    assert not out.exists()


def test_generate_refuses_a_span_it_would_take_hours_to_simulate(capsys, tmp_path):
    # --dt 1e9 --steps 1 used to run for minutes without a word
    out = tmp_path / "d.pt"
    err = _error(capsys, [*GEN, "--dt", "1e9", "--steps", "1", "-o", str(out)],
                 "integrator steps")
    assert "HOGN_MAX_STEPS" in err and not out.exists()


@pytest.mark.parametrize("argv", [
    ["generate", "spring-nbody", "--n-particles", "10000000", "--trajectories", "1"],
    ["generate", "pendulum", "--trajectories", "100000000"],
    ["generate", "hnn-two-body", "--trajectories", "100000000"],
])
def test_generate_refuses_sizes_that_cannot_fit_up_front(capsys, tmp_path, argv):
    out = tmp_path / "d.pt"
    err = _error(capsys, [*argv, "--quiet", "-o", str(out)], "of memory, over the limit")
    assert "HOGN_MAX_MEMORY" in err and not out.exists()


def test_the_memory_limit_can_be_set(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HOGN_MAX_MEMORY", "1M")
    _error(capsys, [*GEN, "--trajectories", "1000", "-o", str(tmp_path / "d.pt")],
           "HOGN_MAX_MEMORY=1M")
    monkeypatch.setenv("HOGN_MAX_MEMORY", "lots")
    _error(capsys, [*GEN, "-o", str(tmp_path / "d.pt")], "must be a size like 8G")


@pytest.mark.parametrize("device", ["nosuch", "cuda:x", "cpu:1", ""])
def test_an_unknown_device_is_refused(capsys, tmp_path, device):
    _refused_by_parser(capsys, [*GEN, "--device", device, "-o", str(tmp_path / "d.pt")],
                       "--device")


def test_cuda_is_refused_where_there_is_none(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    err = _refused_by_parser(capsys, [*GEN, "--device", "cuda", "-o", str(tmp_path / "d.pt")],
                             "no CUDA device")
    assert "use cpu" in err


@pytest.mark.parametrize("flag, value", [
    ("--grad-clip", "-1"), ("--lr", "0"), ("--lr", "nan"), ("--weight-decay", "-1e-3"),
    ("--val-fraction", "1"), ("--val-fraction", "-0.1"), ("--epochs", "0"),
    ("--epochs", "2.5"), ("--batch-size", "0"), ("--max-samples", "-1"),
    ("--checkpoint-seconds", "inf"), ("--seed", "-1"), ("--hidden", "0"),
])
def test_train_refuses_bad_values(files, capsys, tmp_path, flag, value):
    _, data, _ = files
    out = tmp_path / "r"
    _refused_by_parser(capsys, ["train", "hogn", str(data), flag, value, "-o", str(out)], flag)
    assert not out.exists()


@pytest.mark.parametrize("threshold", ["nan", "-0.1", "0", "inf"])
def test_evaluate_refuses_a_bad_threshold(files, capsys, threshold):
    _, data, run = files
    _refused_by_parser(capsys, ["evaluate", str(run), str(data), "--threshold", threshold],
                       "--threshold")


def test_generate_a_periodic_3d_lennard_jones_dataset(tmp_path, capsys):
    """The memory pre-check samples a small system: at least the fewest particles a
    periodic box allows (88 in 3-D at the default density), not a fixed 16."""
    import systems

    out = tmp_path / "lj3.pt"
    assert main(["generate", "lennard-jones", "--param", "dim=3", "--n-particles", "88..90",
                 "--trajectories", "2", "--steps", "2", "-o", str(out)]) == 0
    data = systems.Dataset.load(out)
    assert data.box is not None and data.box.shape == (2, 3) and data.dim == 3


def test_evaluate_a_damped_system_scores_the_energy_against_its_true_curve(tmp_path, capsys):
    data, run = tmp_path / "damped.pt", tmp_path / "run"
    assert main(["generate", "damped-mass-spring", "--trajectories", "6", "--steps", "20",
                 "--dt", "0.1", "-o", str(data)]) == 0
    assert main(["train", "dhnn", str(data), "--epochs", "1", "--hidden", "8", "--quiet",
                 "-o", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), str(data), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "energy_error" in out and "energy_drift" not in out


def test_train_refines_initial_states_from_the_command_line(tmp_path, capsys):
    data, run = tmp_path / "hh.pt", tmp_path / "run"
    assert main(["generate", "henon-heiles", "--trajectories", "6", "--steps", "12",
                 "--dt", "0.1", "--noise", "0.05", "-o", str(data)]) == 0
    assert main(["train", "srnn", str(data), "--target", "rollout", "--integrator", "leapfrog",
                 "--rollout-steps", "3", "--hidden", "8", "--steps", "3", "--refine-initial",
                 "--refine-lr", "0.01", "--quiet", "-o", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    train_cfg = config.get("train", config)
    assert train_cfg["refine_initial"] is True and train_cfg["refine_lr"] == 0.01
    _error(capsys, ["train", "srnn", str(data), "--refine-initial", "--quiet",
                    "-o", str(tmp_path / "r2")], "refine_initial")
