"""``hogn meta-train`` and ``hogn adapt`` end to end (tiny sizes); every user mistake
is one line on stderr and exit status 2."""

from __future__ import annotations

import json

import pytest
import torch

from hogn.cli import main
from hogn.io import load_archive

TINY = ["--iterations", "2", "--trajectories", "3", "--shots", "8", "--meta-batch", "2",
        "--hidden", "8", "--checkpoint-every", "1", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("meta-cli") / "run"
    assert main(["meta-train", "--holdout", "pendulum", *TINY, "-o", str(folder)]) == 0
    return folder


def _error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert match in err, err
    return err


def test_meta_train_writes_the_run_and_resumes(run, capsys):
    for name in ("config.json", "init.pt", "meta.pt", "pretrained.pt", "checkpoint-meta.pt",
                 "checkpoint-pretrain.pt", "metrics.jsonl", "loss.png"):
        assert (run / name).is_file(), name
    record = json.loads((run / "config.json").read_text())
    assert record["protocol"]["holdout"] == "pendulum"
    assert record["protocol"]["model_args"] == {"hidden": 8}
    assert "pendulum" not in record["training_systems"] and len(record["training_systems"]) == 6
    # the same command with more iterations trains on from the checkpoints
    more = [*TINY]
    more[more.index("--iterations") + 1] = "3"
    assert main(["meta-train", "--holdout", "pendulum", *more, "-o", str(run)]) == 0
    assert "meta-trained for 3 outer steps" in capsys.readouterr().out
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows if r["phase"] == "meta"] == [1, 2, 3]
    _error(capsys, ["meta-train", "--holdout", "pendulum", *more, "--inner-lr", "0.5", "-o",
                    str(run)], "holds a different run: inner_lr=0.1 (asked 0.5)")


def test_adapt_prints_the_table_and_writes_plots_and_json(run, capsys, tmp_path):
    out = tmp_path / "a.json"
    rollouts = tmp_path / "r.pt"
    assert main(["adapt", str(run), "--steps", "3", "--trajectories", "2", "--json", str(out),
                 "--plot", "--plot-dir", str(tmp_path), "-o", str(rollouts), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "meta-trained" in text and "random init" in text and "pretrained" in text
    assert "2 pendulum trajectories" in text  # default: the held-out system
    saved = json.loads(out.read_text())
    assert saved["eval_steps"] == [0, 1, 2, 3] and saved["shots"] == 8
    assert set(saved["summary"]) == {"meta", "random", "pretrained"}
    assert all(len(v) == 2 and len(v[0]) == 4 for v in saved["mse"].values())
    # the normalised errors and the paired verdicts, printed and saved
    assert "held-out derivative error / zero field" in text
    assert "paired per trajectory" in text and "derivative_nmse: meta-trained vs random" in text
    for key in ("derivative_nmse", "short_rollout_nmse"):
        assert all(len(v) == 2 and len(v[0]) == 4 for v in saved[key].values())
        assert all(x >= 0 for v in saved[key].values() for row in v for x in row)
    assert set(saved["paired"]) == {"paper_mse", "derivative_nmse", "short_rollout_nmse"}
    assert set(saved["paired"]["derivative_nmse"]) == {"meta_vs_random", "meta_vs_pretrained"}
    for name in ("adapt-pendulum-curves.png", "adapt-pendulum-trajectories.png"):
        assert (tmp_path / name).stat().st_size > 0
    meta, arrays, _ = load_archive(rollouts, "hogn-adapt-rollouts")
    assert meta["step"] == 3 and meta["methods"] == ["meta", "random", "pretrained"]
    assert arrays["q_meta"].shape == arrays["q_true"].shape == (100, 1, 2)
    # the rollout starts at the trajectory's first state
    assert torch.equal(arrays["q_random"][0], arrays["q_true"][0].float())
    _error(capsys, ["adapt", str(run), "--steps", "1", "-o", str(rollouts)], "already exists")
    assert main(["adapt", str(run), "--system", "two-body", "--steps", "1", "--trajectories",
                 "1", "--eval-steps", "1", "--quiet"]) == 0
    assert "was one of the meta-training systems" in capsys.readouterr().out


def test_user_mistakes_are_one_line(run, capsys, tmp_path):
    _error(capsys, ["meta-train", "--holdout", "spring", "-o", str(tmp_path / "x")],
           "unknown system 'spring'; expected one of: mass-spring, pendulum, double-pendulum, "
           "two-body, three-body, magnetic-mirror")
    _error(capsys, ["meta-train", "--holdout", "pendulum", "--iterations", "0", "-o",
                    str(tmp_path / "x")], "iterations must be a positive int")
    _error(capsys, ["adapt", str(tmp_path), "--steps", "1"], "not a meta-learning run folder")
    _error(capsys, ["adapt", str(run), "--system", "spring"], "unknown system 'spring'")
    _error(capsys, ["adapt", str(run), "--shots", "500", "--trajectories", "1"],
           "--shots 500 exceeds the 100 points")
    _error(capsys, ["adapt", str(run), "--steps", "-1"], "--steps must be at least 0")
    _error(capsys, ["adapt", str(run), "--steps", "3", "--eval-steps", "4"],
           "--eval-steps must lie in 0..3")


def test_closed_form_run_and_baselines_on_the_same_noisy_points(capsys, tmp_path):
    folder = tmp_path / "basis"
    argv = ["meta-train", "--holdout", "pendulum", "--model", "hnn-basis", "--features", "4",
            *TINY, "-o", str(folder)]
    assert main(argv) == 0
    record = json.loads((folder / "config.json").read_text())
    assert record["protocol"]["algorithm"] == "closed-form"
    assert record["protocol"]["pretrain"] is False
    capsys.readouterr()
    out = tmp_path / "a.json"
    assert main(["adapt", str(folder), "--steps", "2", "--trajectories", "4", "--shots", "12",
                 "--noise", "0.05", "--baselines", "zero", "affine", "--quiet",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "noise 5% of each coordinate's spread" in text
    assert "closed-form" in text and "random-features" in text and "affine" in text
    assert "ahead of every other method" in text
    saved = json.loads(out.read_text())
    assert saved["noise"] == 0.05
    deriv = saved["derivative_nmse"]
    assert set(deriv) == {"meta", "random", "closed-form", "random-features", "zero", "affine"}
    # predicting nothing scores 1; a fitted method has one value at every step
    assert all(abs(v - 1.0) < 1e-9 for row in deriv["zero"] for v in row)
    assert all(len(set(row)) == 1 for row in deriv["closed-form"])
    assert set(saved["versus_baselines"]["derivative_nmse"]) == {"meta", "closed-form"}


def test_closed_form_mistakes_are_one_line(run, capsys, tmp_path):
    _error(capsys, ["meta-train", "--holdout", "pendulum", "--algorithm", "closed-form",
                    "--model", "hnn", "-o", str(tmp_path / "x")], "needs a basis model")
    _error(capsys, ["meta-train", "--holdout", "pendulum", "--features", "4", "-o",
                    str(tmp_path / "x")], "--features needs a basis model")
    _error(capsys, ["adapt", str(run), "--ridge", "0.1"], "--ridge applies to a closed-form run")
    _error(capsys, ["adapt", str(run), "--noise", "2"], "--noise must be a fraction")


def test_adapt_never_replaces_a_file_without_force(run, capsys, tmp_path):
    """The output rule: an existing --json (or -o, or a plot) is refused before any
    work, the file kept as it was; two outputs may not name one file."""
    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"the user's own file")
    for flag in ("--json", "-o"):
        _error(capsys, ["adapt", str(run), "--steps", "1", "--trajectories", "1", flag,
                        str(mine)], f"{flag} {mine} already exists; pass --force")
    _error(capsys, ["adapt", str(run), "--steps", "1", "--trajectories", "1", "--json",
                    str(tmp_path / "a"), "-o", str(tmp_path / "a")], "name the same file")
    (tmp_path / "adapt-pendulum-curves.png").write_bytes(b"an earlier figure")
    _error(capsys, ["adapt", str(run), "--steps", "1", "--trajectories", "1", "--plot",
                    "--plot-dir", str(tmp_path)], "adapt-pendulum-curves.png already exists")
    assert mine.read_bytes() == b"the user's own file"
    assert (tmp_path / "adapt-pendulum-curves.png").read_bytes() == b"an earlier figure"
    assert main(["adapt", str(run), "--steps", "1", "--trajectories", "1", "--json",
                 str(mine), "--force"]) == 0
    assert mine.read_bytes().startswith(b"{")


def test_a_damaged_run_record_is_one_line(run, capsys, tmp_path):
    """A config.json that lacks a key, holds a list, or a wrong value: one line naming it
    (it ended in a traceback)."""
    import json
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    record = json.loads((run / "config.json").read_text())
    damaged = {"list": [1, 2],
               "no protocol": {k: v for k, v in record.items() if k != "protocol"},
               "protocol list": {**record, "protocol": [1]},
               "missing option": {**record, "protocol": {
                   k: v for k, v in record["protocol"].items() if k != "holdout"}},
               "wrong value": {**record, "protocol": {**record["protocol"],
                                                      "iterations": "many"}}}
    for name, value in damaged.items():
        (copy / "config.json").write_text(json.dumps(value))
        err = _error(capsys, ["adapt", str(copy), "--steps", "1"], "config.json")
        assert "not a meta-learning run record" in err or "holds a" in err, (name, err)


def test_meta_train_bounds_its_data_before_any_work(capsys, tmp_path):
    """--trajectories 100000000 died in std::bad_alloc; now one line naming the memory
    it would need, and no folder is made."""
    out = tmp_path / "huge"
    err = _error(capsys, ["meta-train", "--holdout", "pendulum", "--trajectories",
                          "100000000", "-o", str(out)], "of memory, over the limit")
    assert "--trajectories" in err and "TiB" in err
    assert not out.exists()


def test_adapt_bounds_its_work_before_starting(run, capsys):
    err = _error(capsys, ["adapt", str(run), "--steps", "1000000000"],
                 "adaptation steps, over the limit")
    assert "lower --steps or --trajectories" in err
