"""Checksummed archives: round trip, atomic writes, and a clear error on every bad file."""

from __future__ import annotations

import os
import re

import pytest
import torch

from hogn.io import FileFormatError, atomic_write, load_archive, save_archive

KIND = "test-archive"


def _arrays():
    gen = torch.Generator().manual_seed(0)
    return {
        "x": torch.randn(5, 3, generator=gen, dtype=torch.float64),
        "f": torch.randn(4, generator=gen),
        "i": torch.arange(6).reshape(2, 3),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.empty(0, 2),
        "strided": torch.arange(12.0).reshape(3, 4).T,  # not contiguous
    }


META = {"name": "demo", "dt": 0.1, "sizes": (1, 2), "nested": {"a": [1.5, None]}}


def _at(path):
    """A ``match=`` pattern for a message that names ``path``."""
    return re.escape(str(path))


def _save(path, **kw):
    return save_archive(path, kw.pop("kind", KIND), kw.pop("version", 1),
                        kw.pop("meta", META), kw.pop("arrays", _arrays()))


def test_round_trip(tmp_path):
    path = _save(tmp_path / "sub" / "a.pt")  # missing folders are created
    meta, arrays, version = load_archive(path, KIND)
    assert version == 1
    assert meta == {"name": "demo", "dt": 0.1, "sizes": [1, 2], "nested": {"a": [1.5, None]}}
    expected = _arrays()
    assert set(arrays) == set(expected)
    for name, tensor in expected.items():
        assert arrays[name].dtype == tensor.dtype
        assert torch.equal(arrays[name], tensor), name


def test_non_json_metadata_fails_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"a\.pt: metadata is not JSON-serialisable"):
        _save(tmp_path / "a.pt", meta={"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_leaves_no_temporary_and_replaces(tmp_path):
    path = tmp_path / "a.pt"
    _save(path)
    arrays = _arrays()
    arrays["x"] = arrays["x"] + 1
    _save(path, arrays=arrays)
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]
    assert torch.equal(load_archive(path, KIND)[1]["x"], arrays["x"])


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.pt"
    _save(path)
    before = path.read_bytes()

    def crash(fh):
        fh.write(b"half a file")
        raise KeyboardInterrupt  # even a BaseException cleans up

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]


def test_missing_file(tmp_path):
    path = tmp_path / "nothing.pt"
    with pytest.raises(FileFormatError, match=f"{_at(path)}: no such file"):
        load_archive(path, KIND)
    with pytest.raises(FileFormatError, match="no such file"):
        load_archive(tmp_path, KIND)  # a folder is not a file


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.0])
def test_truncated_file(tmp_path, keep):
    path = _save(tmp_path / "a.pt")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(FileFormatError, match=rf"{_at(path)}: not a readable {KIND} file"):
        load_archive(path, KIND)


def test_garbage_and_foreign_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(FileFormatError, match=f"{_at(text)}: not a readable"):
        load_archive(text, KIND)
    foreign = tmp_path / "weights.pt"
    torch.save({"weight": torch.ones(2)}, foreign)
    with pytest.raises(FileFormatError,
                       match=f"{_at(foreign)}: expected a {KIND} file, found None"):
        load_archive(foreign, KIND)
    bare = tmp_path / "tensor.pt"
    torch.save(torch.ones(2), bare)
    with pytest.raises(FileFormatError, match="found 'Tensor'"):
        load_archive(bare, KIND)


def test_other_kind_and_version(tmp_path):
    path = _save(tmp_path / "a.pt", kind="something-else")
    with pytest.raises(FileFormatError, match=f"expected a {KIND} file, found 'something-else'"):
        load_archive(path, KIND)
    path = _save(tmp_path / "b.pt", version=7)
    with pytest.raises(FileFormatError, match=f"{_at(path)}: unsupported {KIND} version 7"):
        load_archive(path, KIND)
    assert load_archive(path, KIND, versions=(1, 7))[2] == 7


def _edit(path, change):
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)


@pytest.mark.parametrize("change", [
    lambda d: d["arrays"]["x"].__setitem__((2, 1), d["arrays"]["x"][2, 1] + 1e-12),
    lambda d: d["arrays"]["mask"].__setitem__(1, True),
    lambda d: d["arrays"].__setitem__("i", d["arrays"]["i"].to(torch.int32)),
    lambda d: d["arrays"].__setitem__("f", d["arrays"]["f"].reshape(2, 2)),
    lambda d: d["arrays"].pop("empty"),
    lambda d: d["meta"].__setitem__("dt", 0.2),
], ids=["value", "bool", "dtype", "shape", "dropped", "meta"])
def test_edited_file_fails_its_checksum(tmp_path, change):
    path = _save(tmp_path / "a.pt")
    _edit(path, change)
    with pytest.raises(FileFormatError, match=f"{_at(path)}: checksum mismatch"):
        load_archive(path, KIND)


def test_malformed_payload(tmp_path):
    path = _save(tmp_path / "a.pt")
    _edit(path, lambda d: d.__setitem__("arrays", [1, 2]))
    with pytest.raises(FileFormatError, match="malformed"):
        load_archive(path, KIND)


def test_file_error_is_a_value_error():
    assert issubclass(FileFormatError, ValueError)


def test_string_paths(tmp_path):
    path = os.fspath(tmp_path / "a.pt")
    _save(path)
    assert load_archive(path, KIND)[0]["name"] == "demo"
