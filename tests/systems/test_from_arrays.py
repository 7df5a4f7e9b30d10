"""Datasets from a user's own arrays (``Dataset.from_arrays``, ``systems.arrays.load_npz``):
every layout lands in the ``[T, N, d]`` arrays a generated dataset has, estimated
derivatives converge at second order, a registered system's energy applies, and every
mistake names the array, its shape and the shape expected."""

import math

import numpy as np
import pytest
import torch

import systems
from systems.arrays import load_npz

RNG = np.random.default_rng(0)


def _oscillator(times, count, n=1, d=1):
    """Exact unit harmonic oscillators ``q = A cos(t + φ)``, ``p = -A sin(t + φ)``,
    ``[G, T, n, d]``, with their derivatives."""
    phase = RNG.uniform(0, 2 * math.pi, size=(count, 1, n, d))
    amp = RNG.uniform(0.5, 1.5, size=(count, 1, n, d))
    arg = times[None, :, None, None] + phase
    q, p = amp * np.cos(arg), -amp * np.sin(arg)
    return q, p, p.copy(), -q


def test_one_particle_states_become_one_point_trajectories_of_one_node():
    q, p = RNG.normal(size=(50, 2)), RNG.normal(size=(50, 2))
    data = systems.Dataset.from_arrays(q, p, dq=p, dp=-q)
    assert data.q.dtype == torch.float64 and data.q.shape == (1, 50, 2)
    assert torch.equal(data.q[0], torch.from_numpy(q)) and torch.equal(data.dp[0],
                                                                      -torch.from_numpy(q))
    assert len(data) == 50 and data.sizes.tolist() == [1] * 50
    assert data.c.shape == (50, 0) and data.edge_index.shape == (2, 0)
    assert data.dt is None and data.validate() is None
    assert int(data.test.sum()) == 10  # test_fraction 0.2 by default, as generate
    assert data.meta["derivatives"] == "given" and data.meta["source"] == "arrays"
    assert repr(data) == "Dataset(user, states=50, particles=1, dims=2, derivatives given)"
    again = systems.Dataset.from_arrays(q, p, dq=p, dp=-q)
    other = systems.Dataset.from_arrays(q, p, dq=p, dp=-q, seed=1)
    assert torch.equal(again.test, data.test) and not torch.equal(other.test, data.test)
    assert torch.equal(systems.from_arrays(q, p, dq=p, dp=-q).q, data.q)  # the same function
    assert len(data.train) + len(data.heldout) == 50


def test_every_public_path_builds_the_same_dataset():
    """``systems.from_arrays``, ``systems.arrays.from_arrays`` and ``Dataset.from_arrays``
    (built on the fields of ``systems.array_fields``, which knows no dataset class) give
    one dataset; a subclass gets its own class; the held-out draw has one home."""
    from dataclasses import fields

    import systems.arrays
    import systems.dataset
    import systems.splits

    q, p = RNG.normal(size=(6, 3, 2)), RNG.normal(size=(6, 3, 2))
    built = [systems.from_arrays(q, p, dq=p, dp=-q, c=[[1.0]] * 3, test_fraction=0.5),
             systems.arrays.from_arrays(q, p, dq=p, dp=-q, c=[[1.0]] * 3, test_fraction=0.5),
             systems.Dataset.from_arrays(q, p, dq=p, dp=-q, c=[[1.0]] * 3, test_fraction=0.5)]
    assert systems.from_arrays is systems.arrays.from_arrays
    for data in built:
        assert type(data) is systems.Dataset
        for f in fields(systems.Dataset):
            a, b = getattr(data, f.name), getattr(built[0], f.name)
            assert (torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b), f.name

    class Mine(systems.Dataset):
        pass

    assert type(Mine.from_arrays(q, p, dq=p, dp=-q)) is Mine
    assert systems.dataset.random_test_mask is systems.splits.random_test_mask
    with pytest.raises(ValueError, match="give both dq and dp"):
        systems.arrays.from_arrays(q, p, dq=p)


def test_many_particle_states_get_complete_graphs_and_shared_constants():
    m, n = 6, 3
    q = RNG.normal(size=(m, n, 2))
    data = systems.Dataset.from_arrays(q, q, dq=q, dp=q, c=[[1.0], [2.0], [3.0]],
                                       test=np.arange(m) < 2, system="my-springs")
    assert data.q.shape == (1, m * n, 2) and torch.equal(data.q[0, 3:6],
                                                         torch.from_numpy(q[1]))
    send, recv = data.edge_index
    graph_of = data.graph.batch
    assert data.edge_index.shape[1] == m * n * (n - 1)  # every ordered pair, no self loop
    assert bool((graph_of[send] == graph_of[recv]).all()) and bool((send != recv).all())
    assert len({(int(a), int(b)) for a, b in data.edge_index.T}) == m * n * (n - 1)
    assert data.c[:, 0].tolist() == [1.0, 2.0, 3.0] * m
    assert data.test.tolist() == [True, True] + [False] * (m - 2)
    assert data.meta["test_fraction"] is None and data.system_config == {"name": "my-springs"}
    per_state = RNG.uniform(1, 2, size=(m, n, 2))
    assert torch.equal(systems.Dataset.from_arrays(q, q, dq=q, dp=q, c=per_state).c,
                       torch.from_numpy(per_state.reshape(m * n, 2)))


def test_a_user_graph_is_shared_by_every_state():
    q = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(0))
    chain = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    k = torch.tensor([[1.0], [1.0], [2.0], [2.0]])
    data = systems.Dataset.from_arrays(q, q, dq=q, dp=q, edge_index=chain, edge_attr=k)
    assert data.edge_index[:, 4:8].tolist() == (chain + 3).tolist()  # graph 1: nodes 3..5
    assert data.edge_attr.shape == (16, 1) and data.edge_attr[12:, 0].tolist() == [1, 1, 2, 2]
    sub = data.select([2])
    assert sub.edge_index.tolist() == chain.tolist()  # cut out again: the user's graph


def test_trajectories_keep_their_order_and_times():
    t = np.arange(11) * 0.1
    q, p, dq, dp = _oscillator(t, 5, n=2, d=2)
    data = systems.Dataset.from_arrays(q, p, dq=dq, dp=dp, t=t + 3.0,
                                       test=[1, 0, 0, 0, 1])
    assert data.q.shape == (11, 10, 2) and data.dt == pytest.approx(0.1)
    for g, tt, i in ((0, 0, 0), (3, 7, 1), (4, 10, 1)):
        assert torch.equal(data.q[tt, 2 * g + i], torch.from_numpy(q[g, tt, i]))
    assert data.test.tolist() == [True, False, False, False, True]
    assert torch.allclose(data.t, torch.from_numpy(t + 3.0))
    by_dt = systems.Dataset.from_arrays(q, p, dq=dq, dp=dp, dt=0.1)
    assert torch.allclose(by_dt.t, torch.from_numpy(t)) and by_dt.dt == 0.1
    assert "trajectories=5, points=11" in repr(data) and "dt=0.1" in repr(data)


def test_estimated_derivatives_converge_at_second_order_and_say_so():
    errors = []
    for dt in (0.1, 0.05):
        t = np.arange(round(2 / dt) + 1) * dt
        q, p, dq, dp = _oscillator(t, 3)
        data = systems.Dataset.from_arrays(q, p, t=t)
        true = torch.from_numpy(np.concatenate([dq, dp], -1).transpose(1, 0, 2, 3)
                                .reshape(len(t), 3, 2))
        errors.append(float((torch.cat([data.dq, data.dp], -1) - true).abs().max()))
        assert data.meta["derivatives"].startswith("estimated: second-order")
        assert "derivatives estimated" in repr(data)
    assert errors[0] < 1e-2 and 3.5 < errors[0] / errors[1] < 4.5  # O(dt²)
    two = systems.Dataset.from_arrays(q[:, :2], p[:, :2], dt=0.05)
    assert two.meta["derivatives"].startswith("estimated: first-order")


def test_a_registered_system_label_brings_its_true_energy():
    t = np.linspace(0, 5, 51)
    q, p, _, _ = _oscillator(t, 4)
    data = systems.Dataset.from_arrays(q, p, t=t, c=[[1.0]], system="mass-spring")
    assert data.energy_problem() is None
    assert data.energy_drift().max() < 1e-12  # exact orbits: H = (p² + q²) / 2 is constant
    massless = systems.Dataset.from_arrays(q, p, t=t, system="mass-spring")
    assert "does not apply" in massless.energy_problem()
    user = systems.Dataset.from_arrays(q, p, t=t)
    assert "not a registered system" in user.energy_problem()
    assert math.isnan(user.summary()["energy_min"]) and user.summary()["trajectories"] == 4


def test_torch_float32_and_observations_are_stored_in_float64(tmp_path):
    q = torch.randn(2, 5, 1, 1)
    data = systems.Dataset.from_arrays(q, q, dq=q, dp=q, dt=0.5, q_obs=q + 0.1,
                                       p_obs=q - 0.1, test_fraction=0.5)
    assert data.q.dtype == data.q_obs.dtype == torch.float64
    assert torch.allclose(data.q_obs - data.q, torch.full_like(data.q, 0.1))
    data.save(tmp_path / "own.pt")
    loaded = systems.load(tmp_path / "own.pt")
    assert repr(loaded) == repr(data) and torch.equal(loaded.p_obs, data.p_obs)
    assert loaded.meta["derivatives"] == "given" and int(loaded.test.sum()) == 1


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"q": np.zeros(3)}, r"q must be states \[M, d\] or \[M, n, d\].*got shape \(3,\)"),
    ({"p": np.zeros((4, 1))}, r"p must have the shape of q \(5, 2\), got \(4, 1\)"),
    ({"dq": None, "dp": None}, "dq and dp are required for states"),
    ({"dp": None}, "give both dq and dp"),
    ({"t": np.arange(5.0)}, "have no time axis"),
    ({"c": np.ones((4, 1))}, r"c must be \[n, k\] = \[1, k\].*got shape \(4, 1\)"),
    ({"test": np.ones(4, bool)}, r"test must be a mask over the 5 states \[M\] = \[5\]"),
    ({"test": np.ones(5, bool), "test_fraction": 0.1}, "not both"),
    ({"test": np.full(5, 2)}, "mask of booleans"),
    ({"test_fraction": 1.0}, r"test_fraction must be a fraction in \[0, 1\)"),
    ({"q": np.full((5, 2), np.nan)}, "q holds 10 NaN or infinite"),
    ({"q": np.zeros((5, 2), bool)}, "q must hold real numbers, got dtype bool"),
    ({"edge_index": [[0], [1]]}, r"edge_index must number the particles.*0 \.\. 0"),
    ({"edge_index": np.zeros((3, 2), int)}, r"edge_index must be \[2, E\]"),
    ({"edge_index": [[0, 1], [1]]}, "edge_index must be an array of numbers"),
    ({"test": [[True], [False, True]]}, "test must be an array of numbers"),
    ({"system": ""}, "non-empty text label"),
])
def test_states_mistakes_name_the_array_and_the_shape_expected(kwargs, match):
    args = {"q": np.zeros((5, 2)), "p": np.zeros((5, 2)), "dq": np.zeros((5, 2)),
            "dp": np.zeros((5, 2)), **kwargs}
    with pytest.raises(ValueError, match=match):
        systems.Dataset.from_arrays(args.pop("q"), args.pop("p"), **args)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({}, r"need their times: pass t \[T\]"),
    ({"t": [0, 1, 3]}, "evenly spaced"),
    ({"t": [0, -1, -2]}, "increase strictly"),
    ({"t": [0, 1]}, r"t must be \[T\] = \[3\]"),
    ({"dt": 0.1, "t": [0, 1, 2]}, "not both"),
    ({"dt": -1.0}, "dt must be a finite number > 0"),
    ({"dt": 5e-324}, "dt must be at least 2.23e-308"),
    ({"dt": 1e308}, "makes the times infinite over 3 points"),
    ({"t": [0.0, 1e308, 2e308]}, "t holds 1 NaN or infinite value"),  # 2e308 is inf
    ({"dt": 1.0, "c": np.ones((3, 2, 1))}, r"\[G, n, k\] = \[2, 2, k\]"),
    ({"dt": 1.0, "edge_attr": np.ones((3, 1))}, r"edge_attr must be \[E, a\] = \[2, a\]"),
])
def test_trajectory_mistakes_are_named(kwargs, match):
    q = np.zeros((2, 3, 2, 1))
    with pytest.raises(ValueError, match=match):
        systems.Dataset.from_arrays(q, q, **kwargs)


def test_npz_files_with_documented_keys_or_the_hnn_layout(tmp_path):
    q, p = RNG.normal(size=(30, 1)), RNG.normal(size=(30, 1))
    np.savez(tmp_path / "own.npz", q=q, p=p, dq=p, dp=-q, test=np.arange(30) >= 20,
             system=np.array("spring"))
    data = load_npz(tmp_path / "own.npz")
    assert data.system_config["name"] == "spring" and int(data.test.sum()) == 10
    assert load_npz(tmp_path / "own.npz", system="renamed").system_config["name"] == "renamed"
    x, dx = np.concatenate([q, p], 1), np.concatenate([p, -q], 1)
    np.savez(tmp_path / "hnn.npz", x=x[:20], dx=dx[:20], test_x=x[20:], test_dx=dx[20:])
    hnn = load_npz(tmp_path / "hnn.npz")
    assert torch.equal(hnn.q, data.q) and torch.equal(hnn.dp, data.dp)
    assert torch.equal(hnn.test, data.test)  # the test states come last
    np.savez(tmp_path / "bad.npz", q=q, p=p, dq=p, dp=-q, mass=np.ones(30))
    with pytest.raises(ValueError, match=r"bad.npz: unknown key\(s\) mass; expected q, p"):
        load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "mixed.npz", x=x, dx=dx, q=q)
    with pytest.raises(ValueError, match="both the HNN layout"):
        load_npz(tmp_path / "mixed.npz")
    np.savez(tmp_path / "noq.npz", p=p)
    with pytest.raises(ValueError, match="the key 'q' is missing"):
        load_npz(tmp_path / "noq.npz")
    np.savez(tmp_path / "odd.npz", x=x[:, :1], dx=dx[:, :1])
    with pytest.raises(ValueError, match=r"x must be \[M, 2d\]"):
        load_npz(tmp_path / "odd.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match=r"text\.npz: not a readable \.npz file"):
        load_npz(tmp_path / "text.npz")
    with pytest.raises(ValueError, match=r"missing\.npz: no such file"):
        load_npz(tmp_path / "missing.npz")


def test_a_hand_built_dataset_prints_and_says_what_its_meta_lacks():
    """The issue's hand-filled dataset: ``repr`` raised ``KeyError: 'dt'``."""
    q = torch.zeros(1, 3, 1, dtype=torch.float64)
    data = systems.Dataset(t=torch.zeros(1, dtype=torch.float64), q=q, p=q, dq=q, dp=q,
                           c=torch.zeros(3, 0, dtype=torch.float64),
                           edge_index=torch.zeros(2, 0, dtype=torch.long),
                           ptr=torch.arange(4), test=torch.zeros(3, dtype=torch.bool))
    assert repr(data) == "Dataset(None, states=3, particles=1, dims=1)"
    with pytest.raises(ValueError, match=r"names no system.*Dataset\.from_arrays"):
        data.system()
    assert "names no system" in data.energy_problem()
    summary = data.summary()  # facts without a system: no name, energy numbers nan
    assert summary["system"] is None and summary["trajectories"] == 3
    assert math.isnan(summary["energy_min"]) and math.isnan(summary["max_rel_energy_drift"])


def test_npz_files_numpy_cannot_give_as_named_arrays_are_refused(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"one\.npy: holds one array, not named arrays"):
        load_npz(tmp_path / "one.npy")
    np.savez(tmp_path / "objects.npz", q=np.array([{"a": 1}], dtype=object), p=np.zeros(1))
    with pytest.raises(ValueError, match=r"objects\.npz: not a readable \.npz file"):
        load_npz(tmp_path / "objects.npz")
    np.savez(tmp_path / "label.npz", q=np.zeros((2, 1)), p=np.zeros((2, 1)),
             dq=np.zeros((2, 1)), dp=np.zeros((2, 1)), system=np.arange(2))
    with pytest.raises(ValueError, match="system must be one text label"):
        load_npz(tmp_path / "label.npz")


def _npz_bytes(members, compression=None):
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression or zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return bytearray(buffer.getvalue())


def _npy(array):
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_damaged_or_unusual_npz_members_are_one_clear_error(tmp_path, monkeypatch):
    """Members that are not .npy, encrypted, of an unknown compression, with damaged
    deflate or lzma data, or unpacking past the memory limit: refused by name (they
    ended in tracebacks, or unpacked gigabytes first)."""
    import zipfile

    q = _npy(np.zeros((4, 1)))
    cases = {}
    cases["not npy"] = (_npz_bytes({"q.npy": q, "p.npy": q, "notes.txt": b"hi"}),
                        "member 'notes.txt' is not a .npy array")
    raw = _npz_bytes({"q.npy": q, "p.npy": q})
    method = bytearray(raw)
    for header, at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        start = 0
        while (start := method.find(header, start)) >= 0:
            method[start + at:start + at + 2] = (99).to_bytes(2, "little")
            start += 4
    cases["method"] = (method, "compression method 99")
    flagged = bytearray(raw)
    for header, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (start := flagged.find(header, start)) >= 0:
            flagged[start + at] |= 0x1
            start += 4
    cases["encrypted"] = (flagged, "is encrypted")
    for label, kind in (("deflate", zipfile.ZIP_DEFLATED), ("lzma", zipfile.ZIP_LZMA)):
        big = _npy(np.arange(4000.0).reshape(4000, 1))
        damaged = _npz_bytes({"q.npy": big, "p.npy": big}, kind)
        middle = damaged.find(b"PK\x03\x04") + 200
        damaged[middle:middle + 16] = bytes(16)
        cases[label] = (damaged, "not a readable .npz file")
    for name, (data, match) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.npz"
        path.write_bytes(bytes(data))
        with pytest.raises(ValueError, match=match):
            load_npz(path)
    # a small archive unpacking to more than the memory limit: refused before unpacking
    zeros = _npy(np.zeros((3_000_000, 1)))  # 24 MB of zeros, deflated to ~24 kB
    bomb = tmp_path / "bomb.npz"
    bomb.write_bytes(bytes(_npz_bytes({"q.npy": zeros, "p.npy": zeros},
                                      zipfile.ZIP_DEFLATED)))
    assert bomb.stat().st_size < 200_000
    monkeypatch.setenv("HOGN_MAX_MEMORY", "50M")
    with pytest.raises(ValueError, match=r"unpacked.*over the limit"):
        load_npz(bomb)
    # an lzma-compressed archive of good arrays is read
    good = tmp_path / "lzma.npz"
    good.write_bytes(bytes(_npz_bytes({"q.npy": q, "p.npy": q, "dq.npy": q, "dp.npy": q},
                                      zipfile.ZIP_LZMA)))
    assert load_npz(good).q.shape == (1, 4, 1)


def test_a_complete_graph_over_the_memory_bound_is_refused_before_it_is_built(monkeypatch,
                                                                             tmp_path, capsys):
    """2 states of 2,000 particles (64 KB of positions) ask for 8 M edges without a
    cut-off: refused by the memory bound, naming the complete graph and the way out, in
    Python and through ``hogn import`` (one line, no output); with a cut-off it builds."""
    from hogn.cli import main

    monkeypatch.setenv("HOGN_MAX_MEMORY", "64M")
    rng = np.random.default_rng(0)
    q = rng.uniform(0, 20, (2, 2000, 2))
    p = rng.normal(size=(2, 2000, 2))
    with pytest.raises(ValueError, match="complete graph on each of 2 graph"):
        systems.Dataset.from_arrays(q, p, dq=p, dp=-q)
    path = tmp_path / "big.npz"
    np.savez(path, q=q, p=p, dq=p, dp=-q)
    out = tmp_path / "big.pt"
    assert main(["import", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "complete graph" in err and "\n" not in err and not out.exists(), err
    data = systems.Dataset.from_arrays(q, p, dq=p, dp=-q, box=[20.0, 20.0], cutoff=1.0)
    assert data.graph.edge_index.shape[1] < 100_000
