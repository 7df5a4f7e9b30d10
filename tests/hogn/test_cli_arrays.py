"""A user's own arrays through the command line, without ``hogn generate``: ``hogn
import`` of states ``[M, d]`` (with derivatives), states ``[M, n, d]`` and trajectories
``[G, T, n, d]`` (derivatives estimated), then ``info``, ``train`` (a flat model and a
graph model), ``evaluate`` and ``rollout``; and the derivative scores that states
without time order get from :func:`hogn.evaluate`."""

import json
import math
import re
from typing import ClassVar

import numpy as np
import pytest
import torch

import hogn
import systems
from hogn.cli import main
from hogn.models.base import DynamicsModel

TRAIN = ["--hidden", "8", "--epochs", "2", "--batch-size", "32", "--quiet"]
RNG = np.random.default_rng(7)


def _states_1d(m: int = 120) -> dict[str, np.ndarray]:
    """The issue's data: noisy (q, p) of a 1-D unit spring with their derivatives, the
    second half marked as the test set."""
    q, p = RNG.normal(size=(m, 1)), RNG.normal(size=(m, 1))
    noisy = {"q": q + 0.05 * RNG.normal(size=q.shape), "p": p + 0.05 * RNG.normal(size=p.shape)}
    return {**noisy, "dq": p, "dp": -q, "test": np.arange(m) >= m // 2}


def _states_nd(m: int = 40, n: int = 3) -> dict[str, np.ndarray]:
    """States of ``n`` masses in harmonic wells: ``dq = p / m``, ``dp = -q``."""
    q, p = RNG.normal(size=(m, n, 2)), RNG.normal(size=(m, n, 2))
    mass = RNG.uniform(0.5, 2.0, size=(m, n, 1))
    return {"q": q, "p": p, "dq": p / mass, "dp": -q, "c": mass,
            "test": RNG.permutation(np.arange(m) < 10)}


def _trajectories(g: int = 8, points: int = 21, n: int = 2) -> dict[str, np.ndarray]:
    """Exact unit oscillators, no derivatives given; every fourth trajectory is test."""
    t = np.arange(points) * 0.1
    phase = RNG.uniform(0, 2 * math.pi, size=(g, 1, n, 2))
    arg = t[None, :, None, None] + phase
    return {"q": np.cos(arg), "p": -np.sin(arg), "t": t, "test": np.arange(g) % 4 == 0}


LAYOUTS = {
    "states-1d": (_states_1d, ["hnn", "hogn"], "states", "given"),
    "states-nd": (_states_nd, ["hnn", "hogn"], "states", "given"),
    "trajectories": (_trajectories, ["hnn", "hogn"], "trajectories",
                     "estimated: second-order central differences"),
}


@pytest.fixture(scope="module", params=list(LAYOUTS))
def imported(request, tmp_path_factory):
    """One layout saved as ``.npz``, imported and trained on by two models:
    ``(layout, arrays, data file, {model: run folder})``."""
    name = request.param
    make, models, _, _ = LAYOUTS[name]
    root = tmp_path_factory.mktemp(name)
    arrays = make()
    np.savez(root / f"{name}.npz", **arrays)
    data = root / f"{name}.pt"
    assert main(["import", str(root / f"{name}.npz"), "-o", str(data)]) == 0
    runs = {}
    for model in models:
        runs[model] = root / f"{name}-{model}"
        assert main(["train", model, str(data), *TRAIN, "-o", str(runs[model])]) == 0
    return name, arrays, data, runs


def test_info_describes_the_imported_arrays(imported, capsys):
    layout, arrays, data, _ = imported
    assert main(["info", str(data)]) == 0
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1)
                for line in capsys.readouterr().out.splitlines())
    _, _, kind, derivatives = LAYOUTS[layout]
    assert rows[kind] == f"{len(arrays['test'])} ({int(arrays['test'].sum())} test)"
    assert rows["derivatives"].startswith(derivatives)
    assert rows["source"].startswith("your arrays, " + kind)
    assert rows["node constants"] == str(0 if "c" not in arrays else arrays["c"].shape[-1])
    assert rows["energy"].startswith("not available")  # no registered system: said, no crash
    loaded = systems.load(data)
    assert torch.equal(loaded.test, torch.from_numpy(arrays["test"]))


def test_train_evaluate_and_rollout_on_every_layout(imported, capsys, tmp_path):
    layout, arrays, data, runs = imported
    test = int(arrays["test"].sum())
    for model, run in runs.items():
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and all(math.isfinite(r["val_loss"]) for r in rows)
        out = tmp_path / f"{model}.json"
        assert main(["evaluate", str(run), str(data), "--json", str(out), "--quiet"]) == 0
        printed = capsys.readouterr().out
        summary = json.loads(out.read_text())["summary"]
        # the printed table holds the scores that apply: derivative errors for states
        column = "rel_error" if layout == "trajectories" else "derivative_rel_error"
        header, _, values = printed.splitlines()[:3]
        assert math.isfinite(float(values.split()[header.split().index(column)])), printed
        assert summary["trajectories"] == test  # the split the mask said
        if layout == "trajectories":
            assert summary["steps"] == 20 and 0 < summary["rel_error"] < 1
            assert math.isfinite(summary["state_mse"]) and math.isnan(summary["energy_drift"])
        else:  # states: the derivatives are scored, nothing is rolled out
            assert summary["steps"] == 0 and math.isnan(summary["rel_error"])
            assert 0 < summary["derivative_rel_error"] < 1
            assert 0 < summary["derivative_mse"] < 100
        steps = ["--steps", "5"] if layout == "trajectories" else []
        saved = tmp_path / f"{model}-rollout.pt"
        assert main(["rollout", str(run), "--data", str(data), *steps, "-o", str(saved),
                     "--quiet"]) == 0
        assert model in capsys.readouterr().out and saved.stat().st_size > 0


@pytest.mark.parametrize("imported", ["states-1d"], indirect=True)
def test_import_and_own_data_mistakes_are_one_line(imported, capsys, tmp_path):
    _, _, states, runs = imported

    def error(argv, match):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err and match in err, err

    npz = str(states.with_suffix(".npz"))
    error(["import", npz, "-o", str(states)], "already exists")
    assert main(["import", npz, "-o", str(states), "--force", "--system", "spring"]) == 0
    assert systems.load(states).system_config == {"name": "spring"}
    np.savez(tmp_path / "extra.npz", q=np.zeros((3, 1)), p=np.zeros((3, 1)), m=np.ones(3))
    error(["import", str(tmp_path / "extra.npz"), "-o", str(tmp_path / "x.pt")],
          "unknown key(s) m; expected q, p, dq, dp")
    np.savez(tmp_path / "nodq.npz", q=np.zeros((3, 1)), p=np.zeros((3, 1)))
    error(["import", str(tmp_path / "nodq.npz"), "-o", str(tmp_path / "x.pt")],
          "dq and dp are required for states [M, d]")
    error(["import", npz, "-o", str(tmp_path / "x.pt"), "--param", "k=2"], "needs --system")
    error(["import", npz, "-o", str(tmp_path / "x.pt"), "--test-fraction", "0.5"],
          "not both")
    error(["evaluate", str(runs["hnn"]), str(states), "--steps", "3", "--quiet"],
          "nothing to roll out")
    error(["train", "deltagn", str(states), "--quiet", "-o", str(tmp_path / "d")],
          "one time point")
    error(["rollout", str(runs["hnn"]), "--quiet"], "'user'")  # a label, no system


class HarmonicField(DynamicsModel):
    """``dq = s·p``, ``dp = -s·q`` (a test double: ``s = 1`` is the unit spring)."""

    name: ClassVar[str] = "harmonic-field"

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__({"dim": 1, "node_constants": 0, "edge_features": 0})
        self.scale = scale
        self.dummy = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def _derivative(self, q, p, graph, create_graph):
        return self.scale * p, -self.scale * q


def test_states_are_scored_by_their_derivatives():
    arrays = _states_1d(200)
    clean = systems.Dataset.from_arrays(-arrays["dp"], arrays["dq"], dq=arrays["dq"],
                                        dp=arrays["dp"])
    exact = hogn.evaluate(HarmonicField(), clean).summary()
    assert exact["derivative_rel_error"] < 1e-12 and exact["derivative_mse"] < 1e-24
    assert exact["steps"] == 0 and exact["trajectories"] == 200
    wrong = hogn.evaluate(HarmonicField(1.5), clean)
    # f̂ = 1.5 f on every state: ‖f̂ − f‖ / (‖f̂‖ + ‖f‖) = 0.5 / 2.5 exactly
    assert torch.allclose(wrong.derivative_rel_error, torch.full((200,), 0.2,
                                                                 dtype=torch.float64))
    f2 = torch.cat([clean.dq[0], clean.dp[0]], -1).square().mean(-1)  # [M], one node each
    assert torch.allclose(wrong.derivative_mse, 0.25 * f2)
    assert wrong.summary()["derivative_mse"] == pytest.approx(0.25 * f2.mean().item())
    noisy = systems.Dataset.from_arrays(arrays["q"], arrays["p"], dq=arrays["dq"],
                                        dp=arrays["dp"])
    assert 0 < hogn.evaluate(HarmonicField(), noisy).summary()["derivative_rel_error"] < 0.1
