"""Self-describing files: tensors plus JSON metadata, written atomically, read with checks.

A file is a ``torch.save`` archive of one dict::

    {"format": KIND, "version": INT, "meta": JSON-able dict,
     "arrays": {name: Tensor}, "sha256": hex digest of meta and arrays}

It is written to a temporary file in the target folder and moved into place with
``os.replace``, so a crash never leaves a half-written file under the real name. A
process killed during a write (SIGKILL, power loss) can leave the hidden temporary
file (``.NAME.XXXXXXXX.tmp``) behind; :func:`remove_temp_files` deletes such files.
Loading uses ``weights_only=True`` (no code runs) and verifies kind, version and
checksum, so a truncated or edited file raises :class:`FileFormatError` naming it.

Checkpoints hold nested state (optimizer, random generators) rather than named
tensors: :func:`save_checked` stores ``torch.save``'s bytes of any such object with
their SHA-256 and keeps the file it replaces as ``NAME.prev.EXT``;
:func:`load_checked` verifies the bytes before it unpickles them (``weights_only``).

:class:`RunLock` makes one process the only writer of a run folder: an advisory
``flock`` on ``FOLDER/.lock``, which the operating system releases on any exit, a
SIGKILL included, so the lock of a crashed run is free for the next one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["FileFormatError", "RunLock", "RunLockedError", "atomic_write",
           "current_or_previous", "holds_run_or_nothing", "is_temp_file", "load_archive",
           "load_checked", "previous_file", "remove_temp_files", "resume_advice",
           "save_archive", "save_checked"]

CHECKED_FORMAT = "hogn-checked"
"""Format name of a :func:`save_checked` file."""
LOCK_NAME = ".lock"
"""Name of a run folder's lock file (:class:`RunLock`)."""

# atomic_write's temporary files: "." + target name + "." + mkstemp's 8 random
# characters (lower-case letters, digits, "_") + ".tmp"
_TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}" + re.escape(_TEMP_SUFFIX))


class FileFormatError(ValueError):
    """A file is missing, truncated, edited or of another kind than expected."""


def _digest(meta: Mapping[str, Any], arrays: Mapping[str, Tensor]) -> str:
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(arrays):
        t = arrays[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def atomic_write(path: str | os.PathLike, write: Any) -> Path:
    """Write a file through a temporary sibling and ``os.replace``.

    Args:
        path: Destination.
        write: Callable taking an open binary file object.

    Returns:
        The destination path.

    Raises:
        OSError: when the write fails (e.g. ``ENOSPC``, a full disk): the message
            names the file and says that the previous file is kept unchanged (or
            that none was written); the temporary file is removed.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{path} is a folder; give a file name")
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX,
                                   dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # a full disk, a quota, a lost mount, ...
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        cause = _os_error(exc)  # torch.save reports its writer's OSError as a RuntimeError
        if cause is None:
            raise
        kept = ("the previous file is kept unchanged" if path.exists()
                else "no file was written")
        raise OSError(cause.errno, f"could not write {path}: "
                      f"{cause.strerror or cause.__class__.__name__}; {kept}") from exc
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _os_error(exc: BaseException | None) -> OSError | None:
    """The ``OSError`` that ``exc`` is or was raised while handling, if any."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def is_temp_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like a temporary file of :func:`atomic_write`
    (``.NAME.XXXXXXXX.tmp`` beside the target ``NAME``)."""
    return _TEMP_NAME.fullmatch(Path(path).name) is not None


def remove_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` left in ``folder`` (not below it).

    A write interrupted by SIGKILL or a power loss leaves its hidden temporary file
    beside the target; an interrupted *Python* write removes its own. Only regular
    files named like :func:`is_temp_file` are removed. Call it only when no other
    process is writing into ``folder``: a live write's temporary file looks the same.

    Args:
        folder: The folder to clean (a missing folder holds nothing to remove).

    Returns:
        The files removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        if is_temp_file(entry) and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return sorted(removed)


def save_archive(path: str | os.PathLike, kind: str, version: int, meta: Mapping[str, Any],
                 arrays: Mapping[str, Tensor]) -> Path:
    """Save tensors and metadata atomically with a checksum.

    Args:
        path: Destination file.
        kind: Format name stored in the file (e.g. ``"hogn-dataset"``).
        version: Format version.
        meta: JSON-serialisable metadata.
        arrays: Named tensors (moved to CPU).

    Returns:
        The destination path.
    """
    try:  # fail early on non-JSON values; normalise tuples to lists
        meta = json.loads(json.dumps(meta))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot save {path}: metadata is not JSON-serialisable ({exc}); "
                         "pass plain numbers, strings, lists and dicts") from None
    arrays = {k: v.detach().cpu().contiguous() for k, v in arrays.items()}
    payload = {"format": kind, "version": version, "meta": meta, "arrays": arrays,
               "sha256": _digest(meta, arrays)}
    return atomic_write(path, lambda fh: torch.save(payload, fh))


def load_archive(path: str | os.PathLike, kind: str, versions: tuple[int, ...] = (1,)
                 ) -> tuple[dict[str, Any], dict[str, Tensor], int]:
    """Load and verify a file written by :func:`save_archive`.

    Args:
        path: File to read.
        kind: Expected format name.
        versions: Supported format versions.

    Returns:
        ``(meta, arrays, version)``.

    Raises:
        FileFormatError: if the file is missing, unreadable, of another kind or
            version, or fails its checksum.
    """
    path = Path(path)
    if path.is_dir():
        raise FileFormatError(f"{path}: is a folder, not a {kind} file (no such file)")
    if not path.exists():
        raise FileFormatError(f"{path}: no such file")
    if not path.is_file():
        raise FileFormatError(f"{path}: not a regular file (expected a {kind} file)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, garbage bytes, foreign pickle, ...
        raise FileFormatError(f"{path}: not a readable {kind} file "
                              f"(truncated or corrupted?): {exc.__class__.__name__}") from exc
    if not isinstance(payload, dict) or payload.get("format") != kind:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise FileFormatError(f"{path}: expected a {kind} file, found {found!r}")
    version = payload.get("version")
    if version not in versions:
        raise FileFormatError(f"{path}: unsupported {kind} version {version!r}; "
                              f"this hogn reads {list(versions)}")
    meta, arrays = payload.get("meta"), payload.get("arrays")
    if not isinstance(meta, dict) or not isinstance(arrays, dict) or not all(
            isinstance(v, Tensor) for v in arrays.values()):
        raise FileFormatError(f"{path}: malformed {kind} file (meta/arrays missing)")
    if payload.get("sha256") != _digest(meta, arrays):
        raise FileFormatError(f"{path}: checksum mismatch, the file was modified or damaged")
    return meta, arrays, version


# ------------------------------------------------------------ checked objects
def previous_file(path: str | os.PathLike) -> Path:
    """Where :func:`save_checked` keeps the file it replaced: ``NAME.prev.EXT``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def current_or_previous(path: str | os.PathLike) -> Path | None:
    """The file a resume reads: ``path``, else its :func:`previous_file` (a process killed
    between keeping the previous file and writing the new one), else ``None``."""
    for candidate in (Path(path), previous_file(path)):
        if candidate.exists():
            return candidate
    return None


def resume_advice(path: str | os.PathLike, read: Path, otherwise: str) -> str:
    """What to do about a damaged ``read`` (the file or the previous one of ``path``):
    delete it to go on from the intact previous file where there is one, else
    ``otherwise``."""
    previous = previous_file(path)
    if read != previous and previous.is_file():
        return f"delete it to go on from the previous checkpoint {previous.name}"
    return otherwise


def save_checked(path: str | os.PathLike, obj: Any, keep_previous: bool = True) -> Path:
    """Save any ``torch.save``-able object with the SHA-256 of its bytes, atomically.

    Args:
        path: Destination file.
        obj: The object (tensors, dicts, lists, numbers, strings, bytes).
        keep_previous: Keep the file ``path`` replaces as :func:`previous_file` (the
            last good state, should the new one be damaged later).

    Returns:
        The destination path.
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    payload = {"format": CHECKED_FORMAT, "version": 1,
               "sha256": hashlib.sha256(data).hexdigest(), "data": data}
    if keep_previous and path.is_file():
        os.replace(path, previous_file(path))
    return atomic_write(path, lambda fh: torch.save(payload, fh))


def load_checked(path: str | os.PathLike, what: str = "file") -> Any:
    """Load a file written by :func:`save_checked`, verifying its checksum first.

    A file written by ``torch.save`` alone (by an older hogn) is returned as loaded.

    Args:
        path: File to read.
        what: What the file is, for messages (e.g. ``"checkpoint"``).

    Raises:
        FileFormatError: if the file is unreadable, or its bytes fail their checksum
            (the message names the file and says so).
    """
    path = Path(path)
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, garbage bytes, foreign pickle, ...
        raise FileFormatError(f"{path}: not a readable {what} (truncated or damaged?): "
                              f"{exc.__class__.__name__}") from None
    wrapper = {"format", "version", "sha256", "data"}
    if not isinstance(outer, dict) or not ("sha256" in outer or "data" in outer
                                           or outer.get("format") == CHECKED_FORMAT):
        return outer  # written by torch.save alone (an older hogn)
    data = outer.get("data")
    if set(outer) != wrapper or outer["format"] != CHECKED_FORMAT \
            or outer["version"] != 1 or not isinstance(data, bytes) \
            or outer["sha256"] != hashlib.sha256(data).hexdigest():
        raise FileFormatError(f"{path}: checksum mismatch, the {what} was modified or damaged")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FileFormatError(f"{path}: not a readable {what}: "
                              f"{exc.__class__.__name__}") from None


# ------------------------------------------------------------ run folder lock
def holds_run_or_nothing(folder: str | os.PathLike, record: str = "config.json") -> bool:
    """Whether ``folder`` is missing, empty (but for temporary files and a lock), or
    holds a run (its ``record`` file): a folder a run may lock and write. Anything else
    (a file, someone's folder) is refused by the run and must be left as it is."""
    folder = Path(folder)
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    return (folder / record).exists() or not any(
        not is_temp_file(e) and e.name != LOCK_NAME for e in folder.iterdir())



class RunLockedError(OSError):
    """Another process holds a run folder's lock (an ``OSError``: the folder is busy)."""


class RunLock:
    """One writer per run folder: an advisory lock on ``FOLDER/.lock``.

    ``with RunLock(folder): ...`` takes the lock or raises :class:`RunLockedError`
    naming the lock file and its holder (process id and host, written into the file).
    The lock is an ``fcntl.flock`` on an open file: the operating system releases it
    when the holder exits in any way (a SIGKILL or a crash included), so a stale lock
    file is simply taken over. Where ``fcntl`` does not exist (Windows) nothing is
    locked.

    A folder the lock created and that holds nothing but the lock file when it is
    released (a run refused before it wrote anything) is removed again.

    Args:
        folder: The run folder (created if missing).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fh: Any = None
        self._created = False

    def acquire(self) -> RunLock:
        """Take the lock (``RunLockedError`` if another process holds it)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        self._created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise RunLockedError(f"{self.path.parent} is in use by another process "
                                 f"({holder}; lock {self.path}): wait for it to finish, "
                                 "or use another folder") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        """Give the lock back (the lock file stays; it holds no state), removing the
        folder where this lock made it and nothing else was written there."""
        if self._fh is None:
            return
        folder = self.path.parent
        if self._created and [e.name for e in folder.iterdir()] == [LOCK_NAME]:
            with contextlib.suppress(OSError):  # unlinked while still held: no one
                self.path.unlink()  # else can take a lock on this file meanwhile
        self._fh.close()  # closing the file releases the flock
        self._fh = None
        if self._created:
            with contextlib.suppress(OSError):  # not empty (another writer came): kept
                folder.rmdir()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
