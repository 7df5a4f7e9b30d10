"""Datasets: save/load, determinism, atomic writes, splits, selection, noise, derivatives,
and a clear error for every damaged or foreign file."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

import systems
from hogn.io import FileFormatError, save_archive
from systems.dataset import FORMAT, VERSION, Dataset

F64 = torch.float64
ARRAYS = ("t", "q", "p", "dq", "dp", "c", "edge_index", "ptr", "test", "edge_attr", "q_obs",
          "p_obs")


def _at(path):
    """A ``match=`` pattern for a message that names ``path``."""
    return re.escape(str(path))


def _springs(seed=0, trajectories=8, noise=0.0, test_fraction=0.25, **kw):
    """A small dataset of graphs of different sizes, with edge constants."""
    system = systems.get("spring-nbody", stiffness=(0.5, 2.0), mass=(0.5, 2.0))
    return systems.generate(system, trajectories=trajectories, steps=20, dt=0.05, seed=seed,
                            n_particles=(2, 5), noise=noise, test_fraction=test_fraction, **kw)


@pytest.fixture(scope="module")
def springs():
    return _springs(noise=0.05)


def _same(a: Dataset, b: Dataset):
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None and y is None) or (x.dtype == y.dtype and torch.equal(x, y)), name


# --------------------------------------------------------------------- files
def test_save_load_round_trip(springs, tmp_path):
    path = springs.save(tmp_path / "springs.pt")
    loaded = systems.load(path)
    _same(springs, loaded)
    assert loaded.meta == json.loads(json.dumps(springs.meta))  # tuples come back as lists
    assert loaded.q.dtype == F64
    torch.testing.assert_close(loaded.energy(), springs.energy(), rtol=0, atol=0)
    assert loaded.system().config() == json.loads(json.dumps(springs.system().config()))
    assert repr(loaded) == repr(springs)
    assert "spring-nbody" in repr(loaded) and "particles=2-5" in repr(loaded)
    again = Dataset.load(path, device="cpu")
    _same(springs, again)


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a = _springs(seed=3).save(tmp_path / "a.pt")
    b = _springs(seed=3).save(tmp_path / "b.pt")
    c = _springs(seed=4).save(tmp_path / "c.pt")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    qa, qc = systems.load(a).q, systems.load(c).q
    assert qa.shape != qc.shape or not torch.equal(qa, qc)
    assert systems.load(c).meta["seed"] == 4


def test_noisy_dataset_is_deterministic(tmp_path):
    a = _springs(seed=1, noise=0.1).save(tmp_path / "a.pt")
    b = _springs(seed=1, noise=0.1).save(tmp_path / "b.pt")
    assert a.read_bytes() == b.read_bytes()


def test_save_is_atomic_and_replaces(tmp_path):
    path = tmp_path / "data.pt"
    first = _springs(seed=0)
    first.save(path)
    second = _springs(seed=1)
    second.save(path)  # over an existing file
    assert [p.name for p in tmp_path.iterdir()] == ["data.pt"]  # no temporary left behind
    _same(systems.load(path), second)


def test_truncated_file(springs, tmp_path):
    path = springs.save(tmp_path / "cut.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match=f"{_at(path)}: not a readable {FORMAT} file"):
        systems.load(path)


@pytest.mark.parametrize("field, change", [
    ("q", lambda x: x.index_put_((torch.tensor(3), torch.tensor(1), torch.tensor(0)),
                                 x[3, 1, 0] + 1e-9)),
    ("test", lambda x: x.logical_not_()),
    ("c", lambda x: x.mul_(2.0)),
])
def test_edited_file_is_caught_by_its_checksum(springs, tmp_path, field, change):
    path = springs.save(tmp_path / "edited.pt")
    payload = torch.load(path, weights_only=True)
    change(payload["arrays"][field])
    torch.save(payload, path)  # the stored checksum is kept as it was
    with pytest.raises(FileFormatError, match=f"{_at(path)}: checksum mismatch"):
        systems.load(path)


def test_edited_metadata_is_caught(springs, tmp_path):
    path = springs.save(tmp_path / "edited.pt")
    payload = torch.load(path, weights_only=True)
    payload["meta"]["dt"] = 0.1
    torch.save(payload, path)
    with pytest.raises(FileFormatError, match=f"{_at(path)}: checksum mismatch"):
        systems.load(path)


def test_wrong_kind_of_file(tmp_path):
    other = save_archive(tmp_path / "model.pt", "hogn-model", 1, {}, {"w": torch.ones(2)})
    with pytest.raises(FileFormatError,
                       match=f"{_at(other)}: expected a {FORMAT} file, found 'hogn-model'"):
        systems.load(other)
    plain = tmp_path / "plain.pt"
    torch.save({"q": torch.ones(3)}, plain)
    with pytest.raises(FileFormatError, match=f"{_at(plain)}: expected a {FORMAT} file"):
        systems.load(plain)
    text = tmp_path / "data.csv"
    text.write_text("t,q,p\n0,1,0\n")
    with pytest.raises(FileFormatError, match=f"{_at(text)}: not a readable"):
        systems.load(text)
    future = save_archive(tmp_path / "future.pt", FORMAT, VERSION + 1, {}, {})
    with pytest.raises(FileFormatError, match=f"{_at(future)}: unsupported {FORMAT} version"):
        systems.load(future)


def test_missing_file(tmp_path):
    path = tmp_path / "absent.pt"
    with pytest.raises(FileFormatError, match=f"{_at(path)}: no such file"):
        systems.load(path)


def test_well_formed_but_inconsistent_files(springs, tmp_path):
    def resave(name, **changes):
        arrays = {k: getattr(springs, k) for k in ARRAYS if getattr(springs, k) is not None}
        arrays.update(changes)
        meta = changes.pop("meta", springs.meta)
        arrays = {k: v for k, v in arrays.items() if v is not None and k != "meta"}
        return save_archive(tmp_path / name, FORMAT, VERSION, meta, arrays)

    path = resave("no_dq.pt", dq=None)
    with pytest.raises(FileFormatError, match=rf"{_at(path)}: dataset lacks \['dq'\]"):
        systems.load(path)
    path = resave("no_meta.pt", meta={"dt": 0.1})
    with pytest.raises(FileFormatError, match=f"{_at(path)}: dataset lacks metadata"):
        systems.load(path)
    path = resave("extra.pt", weights=torch.ones(3))
    with pytest.raises(FileFormatError, match=rf"{_at(path)}: dataset holds unknown arrays "
                                              r"\['weights'\]"):
        systems.load(path)
    bad = {
        "short_p.pt": {"p": springs.p[:-1]},
        "edge_attr.pt": {"edge_attr": springs.edge_attr[:-2]},
        "float32_dq.pt": {"dq": springs.dq.float()},
        "t.pt": {"t": springs.t[:-1]},
        "ptr.pt": {"ptr": springs.ptr[:-1]},
        "c.pt": {"c": springs.c[:-1]},
        "edges.pt": {"edge_index": springs.edge_index + 100},
        "test.pt": {"test": springs.test.long()},
        "int_states.pt": {k: getattr(springs, k).long() for k in
                          ("q", "p", "dq", "dp", "q_obs", "p_obs")},
    }
    for name, changes in bad.items():
        path = resave(name, **changes)
        with pytest.raises(FileFormatError, match=f"{_at(path)}: inconsistent dataset"):
            systems.load(path)


# ------------------------------------------------------------------ contents
def test_metadata_and_time_grid(springs):
    meta = springs.meta
    assert meta["system"]["name"] == "spring-nbody" and meta["seed"] == 0
    assert meta["dt"] == 0.05 and meta["steps"] == 20 and meta["noise"] == 0.05
    assert meta["method"] == "adaptive"
    torch.testing.assert_close(springs.t, torch.arange(21, dtype=F64) * 0.05)
    assert springs.dt == 0.05 and springs.dim == 2 and len(springs) == 8
    assert set(springs.sizes.tolist()) <= {2, 3, 4, 5} and len(set(springs.sizes.tolist())) > 1
    summary = springs.summary()
    assert summary["trajectories"] == 8 and summary["points"] == 21 and summary["test"] == 2
    assert summary["max_rel_energy_drift"] < 1e-7
    lo, hi = int(springs.sizes.min()), int(springs.sizes.max())
    assert summary["particles"] == springs.particle_range == f"{lo}-{hi}"
    same = springs.select(springs.sizes == lo)
    assert same.particle_range == str(lo) and f"particles={lo}," in repr(same)


def test_train_and_heldout_partition_the_trajectories(springs):
    train, heldout = springs.train, springs.heldout
    assert len(heldout) == round(0.25 * len(springs)) == 2
    assert len(train) + len(heldout) == len(springs)
    assert not train.test.any() and heldout.test.all()
    # every trajectory lands in exactly one part, unchanged
    parts = {}
    for part in (train, heldout):
        for i in range(len(part)):
            parts.setdefault(round(part[i].q[0, 0, 0].item(), 12), []).append(part[i])
    assert len(parts) == len(springs)
    for i in range(len(springs)):
        (match,) = parts[round(springs[i].q[0, 0, 0].item(), 12)]
        _same(dataclasses.replace(match, test=springs[i].test), springs[i])
    for fraction, n_test in ((0.0, 0), (0.5, 5), (0.1, 1)):
        data = _springs(trajectories=10, test_fraction=fraction)
        assert int(data.test.sum()) == n_test
        assert len(data.train) == 10 - n_test


def test_select_and_index_keep_the_physics(springs):
    energy = springs.energy()  # [T, G]
    for i in range(len(springs)):
        one = springs[i]
        assert len(one) == 1 and one.sizes.tolist() == [springs.sizes[i].item()]
        torch.testing.assert_close(one.energy()[:, 0], energy[:, i], rtol=0, atol=0)
        dq, dp = one.system().time_derivative(one.q, one.p, one.graph)
        torch.testing.assert_close(dq, one.dq, rtol=0, atol=1e-14)
        torch.testing.assert_close(dp, one.dp, rtol=0, atol=1e-14)
    picked = springs.select([5, 1, 6])
    torch.testing.assert_close(picked.energy(), energy[:, [5, 1, 6]], rtol=0, atol=0)
    _same(springs[-1], springs[7])
    _same(springs[2:5], springs.select([2, 3, 4]))
    mask = torch.tensor([True, False] * 4)
    _same(springs.select(mask), springs.select([0, 2, 4, 6]))
    for bad in (8, -9):
        with pytest.raises(IndexError, match="out of range"):
            springs[bad]
    with pytest.raises(IndexError):
        springs.select([8])
    with pytest.raises(IndexError, match="all False selects none"):
        springs.select(torch.zeros(8, dtype=torch.bool))


def test_energy_drift_is_the_largest_relative_change():
    data = systems.generate("mass-spring", trajectories=3, steps=10, dt=0.1, seed=0)
    h0 = data.energy()[0]
    q = data.q.clone()
    q[7, 1] *= 1.01  # one state of trajectory 1 off its energy shell
    edited = dataclasses.replace(data, q=q)
    h = edited.energy()
    expected = (h[7, 1] - h0[1]).abs() / h0[1].abs()
    drift = edited.energy_drift()
    assert drift[1].item() == pytest.approx(expected.item(), rel=1e-9)
    assert expected > 1e-4
    assert drift[0] < 1e-12 and drift[2] < 1e-12
    assert edited.summary()["max_rel_energy_drift"] == pytest.approx(drift[1].item())


def test_state_at_a_time(springs):
    state = springs.state(10)
    assert torch.equal(state.q, springs.q[10]) and torch.equal(state.c, springs.c)
    observed = springs.state(10, observed=True)
    assert torch.equal(observed.q, springs.q_obs[10])
    h = springs.system().hamiltonian(state.q, state.p, state)
    torch.testing.assert_close(h, springs.energy()[10], rtol=0, atol=0)


def test_noise_is_added_to_observations_only(springs):
    noise = springs.meta["noise"]
    dq_noise = springs.q_obs - springs.q
    dp_noise = springs.p_obs - springs.p
    n = dq_noise.numel()
    for x in (dq_noise, dp_noise):
        assert x.std().item() == pytest.approx(noise, rel=0.1)
        assert abs(x.mean().item()) < 5 * noise / n**0.5
    corr = torch.corrcoef(torch.stack([dq_noise.flatten(), dp_noise.flatten()]))[0, 1]
    assert abs(corr.item()) < 0.1
    # dq, dp are the clean derivatives: at the clean states, not at the observations
    system = springs.system()
    dq, dp = system.time_derivative(springs.q, springs.p, springs.graph)
    torch.testing.assert_close(springs.dq, dq, rtol=0, atol=1e-14)
    torch.testing.assert_close(springs.dp, dp, rtol=0, atol=1e-14)
    _, dp_obs = system.time_derivative(springs.q_obs, springs.p_obs, springs.graph)
    assert (dp_obs - springs.dp).abs().max() > 10 * noise
    clean = _springs(noise=0.0)
    assert clean.q_obs is None and clean.p_obs is None
    assert torch.equal(clean.q, springs.q)  # noise draws come after the trajectories


@pytest.mark.parametrize("name, params, n_particles", [
    ("pendulum", {"embed_dim": 2}, None), ("double-pendulum", {}, None),
    ("two-body", {}, None), ("magnetic-mirror", {}, None), ("spring-nbody", {}, (3, 4)),
])
def test_saved_derivatives_describe_the_saved_motion(name, params, n_particles):
    """dq/dt and dp/dt by central differences of the saved states match dq, dp."""
    system = systems.get(name, **params)
    dt = 0.002
    data = systems.generate(system, trajectories=3, steps=10, dt=dt, seed=0,
                            n_particles=n_particles, test_fraction=0.0)
    fd_q = (data.q[2:] - data.q[:-2]) / (2 * dt)
    fd_p = (data.p[2:] - data.p[:-2]) / (2 * dt)
    torch.testing.assert_close(fd_q, data.dq[1:-1], atol=1e-5 * data.dq.abs().max(), rtol=0)
    torch.testing.assert_close(fd_p, data.dp[1:-1], atol=1e-5 * data.dp.abs().max(), rtol=0)


def test_simulate_matches_generate_physics():
    system = systems.get("pendulum", embed_dim=2)
    graph = system.sample(4, seed=0)
    data = system.simulate(graph, dt=0.1, steps=30)
    assert len(data) == 4 and not data.test.any() and data.meta["seed"] is None
    assert data.energy_drift().max() < 1e-7
    assert torch.equal(data.q[0], graph.q)
    fixed = system.simulate(graph, dt=0.1, steps=30, method="rk4", substeps=10)
    assert fixed.meta["method"] == "rk4"
    torch.testing.assert_close(fixed.q, data.q, atol=1e-6, rtol=0)


def test_to_changes_dtype(springs):
    small = springs.to(dtype=torch.float32)
    assert small.q.dtype == small.q_obs.dtype == small.c.dtype == torch.float32
    assert small.edge_index.dtype == torch.long and small.test.dtype == torch.bool
    assert springs.q.dtype == F64  # the original is untouched


def test_generate_accepts_a_name():
    data = systems.generate("mass-spring", trajectories=3, steps=5, dt=0.1, seed=0)
    assert data.meta["system"] == systems.get("mass-spring").config()


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, message", [
    ({"dt": 0.0}, "dt must be a finite number > 0"),
    ({"dt": -0.1}, "dt must be a finite number > 0"),
    ({"dt": float("inf")}, "dt must be a finite number > 0"),
    ({"trajectories": 0}, "trajectories must be an int >= 1"),
    ({"steps": 0}, "steps must be an int >= 1"),
    ({"noise": -0.1}, "noise must be a finite number >= 0"),
    ({"noise": float("nan")}, "noise must be a finite number >= 0"),
    ({"test_fraction": 1.0}, r"test_fraction must be a fraction in \[0, 1\)"),
    ({"method": "nope"}, "unknown method 'nope'"),
    ({"max_drift": 0.0, "max_rounds": 2}, "only 0 of 4 trajectories passed after 2 rounds"),
])
def test_generate_rejects_bad_arguments(kwargs, message):
    args = {"trajectories": 4, "steps": 5, "dt": 0.1, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=message):
        systems.generate(systems.get("pendulum"), **args)


def test_generate_rejects_bad_systems():
    with pytest.raises(ValueError, match="unknown system 'nope'"):
        systems.generate("nope", trajectories=2, steps=2, dt=0.1)
    with pytest.raises(ValueError, match="needs n_particles"):
        systems.generate("gravity-nbody", trajectories=2, steps=2, dt=0.1)
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        systems.from_preset("nope", trajectories=2)
    with pytest.raises(ValueError, match="trajectories must be an int >= 1, got 0"):
        systems.from_preset("hnn-pendulum", trajectories=0)  # not "the paper's 50"


def test_a_dataset_gives_its_true_energy_function_and_reference():
    """The true energy along predicted states is the dataset's own (library work, not the
    command line's): None where the system cannot be rebuilt; the true curve for a
    damped system."""
    spring = systems.generate(systems.get("mass-spring"), trajectories=3, steps=5, dt=0.1,
                              seed=0)
    energy = spring.energy_function()
    assert torch.equal(energy(spring.q, spring.p), spring.energy())
    assert spring.energy_reference() == "initial"
    damped = systems.generate(systems.get("damped-mass-spring"), trajectories=2, steps=5,
                              dt=0.1, seed=0)
    assert damped.energy_reference() == "truth"
    own = systems.from_arrays(spring.q.transpose(0, 1).unsqueeze(2),
                              spring.p.transpose(0, 1).unsqueeze(2), dt=0.1)  # [G, T, 1, d]
    assert own.energy_function() is None and own.energy_reference() == "initial"
