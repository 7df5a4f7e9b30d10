"""Several processes, on one machine or many: ``torch.distributed`` under ``torchrun``.

The same ``hogn train`` / ``hogn meta-train`` command (and :func:`hogn.train`) runs in
one process or, launched by ``torchrun --nproc-per-node P ...``, in ``P`` processes
that share the work; this module holds the plumbing they share:

- :func:`launched` tells whether the environment of a launcher is present
  (``torch.distributed.is_torchelastic_launched()``, or ``WORLD_SIZE`` set by hand);
  :func:`world_from_env` reads and checks ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
  ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``.
- :func:`process_group` (a context manager) initialises the default process group
  (``env://``) when launched and nobody did yet; the group then serves every later
  call of the process and is destroyed when the process exits (initialising the
  default group a second time in one launch can meet the first one's keys in the
  launcher's store). The backend is ``gloo`` for CPU and ``nccl`` for CUDA (or the environment
  variable ``HOGN_DIST_BACKEND``); each process of a CUDA run takes
  ``cuda:LOCAL_RANK`` (:func:`resolve_device`). A world of one process initialises
  nothing: it is the single-process code path, bit for bit.
- :func:`rank`, :func:`world_size`, :func:`local_rank`, :func:`is_main` (rank 0:
  the one process that writes files and prints), :func:`active` (a group of more
  than one process), :func:`barrier`.
- :func:`from_main`: run a function on rank 0 only (reading or preparing a run
  folder) and hand its result, or its exception, to every rank.
- :func:`shard`: ``DistributedSampler``'s rule, rank ``r`` of ``P`` takes items
  ``r, r + P, r + 2P, ...``; :func:`all_reduce_sum`: one flat ``all_reduce`` of a
  list of tensors.

A world that cannot work (``WORLD_SIZE > 1`` without ``MASTER_ADDR`` /
``MASTER_PORT``, ``RANK >= WORLD_SIZE``, ``nccl`` without CUDA or with fewer GPUs
than local processes, a CUDA device with ``gloo``, ...) raises
:class:`DistributedConfigError` (a ``ValueError``: one line and exit status 2 from
the ``hogn`` command) naming the variable, its value and what was expected.
"""

from __future__ import annotations

import atexit
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = ["BACKENDS", "DistributedConfigError", "World", "active", "all_reduce_sum",
           "backend_for", "barrier", "from_main", "is_main", "launched", "local_rank",
           "process_group", "rank", "resolve_device", "shard", "world_from_env",
           "world_size"]

BACKENDS = ("gloo", "nccl")
BACKEND_VARIABLE = "HOGN_DIST_BACKEND"
T = TypeVar("T")


class DistributedConfigError(ValueError):
    """The launch environment or the options describe a world that cannot run."""


@dataclass(frozen=True)
class World:
    """This process's place among the launched ones (from the environment).

    Attributes:
        size: Processes in all (``WORLD_SIZE``).
        rank: This process's rank ``0 .. size - 1`` (``RANK``).
        local_rank: Its rank on this machine (``LOCAL_RANK``).
        local_size: Processes on this machine (``LOCAL_WORLD_SIZE``; ``size`` when
            not set).
    """

    size: int
    rank: int
    local_rank: int
    local_size: int


def _available() -> bool:
    return torch.distributed.is_available()


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or with ``WORLD_SIZE`` set)."""
    if not _available():
        return "WORLD_SIZE" in os.environ
    return torch.distributed.is_torchelastic_launched() or "WORLD_SIZE" in os.environ


def _env_int(name: str, default: int | None, low: int) -> int:
    text = os.environ.get(name)
    if text is None or not text.strip():
        if default is None:
            raise DistributedConfigError(f"{name} is not set but WORLD_SIZE is; launch with "
                                         "torchrun, or set WORLD_SIZE, RANK, LOCAL_RANK, "
                                         "MASTER_ADDR and MASTER_PORT together")
        return default
    try:
        value = int(text)
    except ValueError:
        raise DistributedConfigError(f"{name} must be an integer >= {low}, got "
                                     f"{text!r}") from None
    if value < low:
        raise DistributedConfigError(f"{name} must be an integer >= {low}, got {value}")
    return value


def world_from_env() -> World:
    """Read and check the launcher's variables.

    Raises:
        DistributedConfigError: naming the variable, its value and what was expected.
    """
    size = _env_int("WORLD_SIZE", None, 1)
    if size == 1:
        rank = _env_int("RANK", 0, 0)
        local = _env_int("LOCAL_RANK", 0, 0)
        local_size = _env_int("LOCAL_WORLD_SIZE", 1, 1)
    else:
        rank = _env_int("RANK", None, 0)
        local = _env_int("LOCAL_RANK", rank, 0)
        local_size = _env_int("LOCAL_WORLD_SIZE", size, 1)
    if rank >= size:
        raise DistributedConfigError(f"RANK={rank} but WORLD_SIZE={size}: ranks run from 0 "
                                     f"to {size - 1}")
    if local_size > size:
        raise DistributedConfigError(f"LOCAL_WORLD_SIZE={local_size} exceeds "
                                     f"WORLD_SIZE={size}")
    if local >= local_size:
        raise DistributedConfigError(f"LOCAL_RANK={local} but LOCAL_WORLD_SIZE={local_size}: "
                                     f"local ranks run from 0 to {local_size - 1}")
    if size > 1:
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k, "").strip()]
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            raise DistributedConfigError(
                f"WORLD_SIZE={size} but {' and '.join(missing)} {verb} not set: the "
                "processes cannot find each other; launch with torchrun "
                "(--master-addr/--master-port or --rdzv-endpoint), or set them")
        port = os.environ["MASTER_PORT"].strip()
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise DistributedConfigError(f"MASTER_PORT must be a port number 1..65535, got "
                                         f"{port!r}")
    return World(size, rank, local, local_size)


def backend_for(device: str | torch.device, backend: str | None = None,
                local_size: int = 1) -> str:
    """The backend for ``device``: ``backend``, else ``$HOGN_DIST_BACKEND``, else
    ``nccl`` for CUDA devices and ``gloo`` for the CPU.

    Raises:
        DistributedConfigError: for an unknown backend, ``nccl`` without a CUDA device
            (or with fewer GPUs than ``local_size`` processes on this machine), or a
            CUDA device with ``gloo``.
    """
    kind = torch.device(device).type
    source = "backend"
    if backend is None and os.environ.get(BACKEND_VARIABLE, "").strip():
        backend, source = os.environ[BACKEND_VARIABLE].strip(), BACKEND_VARIABLE
    if backend is None:
        backend = "nccl" if kind == "cuda" else "gloo"
    if backend not in BACKENDS:
        raise DistributedConfigError(f"{source} {backend!r} is unknown; expected one of: "
                                     f"{', '.join(BACKENDS)}")
    if backend == "nccl":
        if kind != "cuda":
            raise DistributedConfigError(f"{source} nccl needs a CUDA device, but the device "
                                         f"is {str(device)!r}; use gloo for the CPU")
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus == 0:
            raise DistributedConfigError(f"{source} nccl needs CUDA, and torch sees no GPU "
                                         "here; use gloo with device cpu")
        if gpus < local_size:
            raise DistributedConfigError(f"{local_size} processes on this machine but "
                                         f"{gpus} GPU(s): nccl needs one GPU per process; "
                                         f"use --nproc-per-node {gpus} or fewer")
    elif kind == "cuda":
        raise DistributedConfigError(f"device {str(device)!r} with gloo: gloo averages "
                                     "gradients on the CPU; use nccl for CUDA devices "
                                     f"(unset {BACKEND_VARIABLE}) or device cpu")
    return backend


def active() -> bool:
    """Whether a process group of more than one process is initialised."""
    return (_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def rank() -> int:
    """This process's rank in the initialised group (0 without one)."""
    if _available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def world_size() -> int:
    """Processes in the initialised group (1 without one)."""
    if _available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``; 0 when not launched)."""
    text = os.environ.get("LOCAL_RANK", "").strip()
    return int(text) if text.isdigit() else 0


def is_main() -> bool:
    """Whether this process is rank 0: the one that writes files and prints."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process of the group (nothing without one)."""
    if active():
        torch.distributed.barrier()


def resolve_device(device: str | torch.device) -> str:
    """The device this process computes on: ``cuda`` becomes ``cuda:LOCAL_RANK`` in a
    group of several processes (one GPU each); other devices are returned as given.

    Raises:
        DistributedConfigError: for one fixed GPU (``cuda:N``) shared by several
            processes of this machine.
    """
    text = str(device)
    if not active() or torch.device(text).type != "cuda":
        return text
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    if torch.device(text).index is None:
        return f"cuda:{local_rank()}"
    if local_size > 1:
        raise DistributedConfigError(f"device {text!r} for all {local_size} processes of "
                                     "this machine: give the device as 'cuda' and each "
                                     "process takes cuda:LOCAL_RANK")
    return text


def _check_group(device: str | torch.device) -> None:
    """Refuse a device that the already initialised group's backend cannot serve."""
    if not active():
        return
    backend = str(torch.distributed.get_backend())
    kind = torch.device(device).type
    if kind == "cuda" and "nccl" not in backend and "cuda" not in backend:
        raise DistributedConfigError(f"device {str(device)!r} with the process group's "
                                     f"backend {backend!r}: use nccl for CUDA devices, or "
                                     "device cpu")
    if kind == "cpu" and backend == "nccl":
        raise DistributedConfigError("device 'cpu' with the process group's backend nccl: "
                                     "initialise the group with gloo, or use device cuda")


@contextmanager
def process_group(device: str | torch.device = "cpu", backend: str | None = None
                  ) -> Iterator[bool]:
    """The default process group for the duration of the block.

    Initialises it (``init_method="env://"``) when this process was launched
    (:func:`launched`) into a world of several processes and no group exists yet; it
    stays for the rest of the process (later blocks use it) and is destroyed at exit.
    An existing group is checked against ``device``; without a launcher nothing
    happens (one process).

    Args:
        device: The device training runs on (``cpu``, ``cuda``, ``cuda:N``).
        backend: ``gloo`` or ``nccl`` (default: see :func:`backend_for`).

    Yields:
        Whether this call initialised the group.

    Raises:
        DistributedConfigError: for a misconfigured world (see the module notes).
    """
    made = False
    if _available() and torch.distributed.is_initialized():
        _check_group(device)
    elif launched():
        if not _available():
            raise DistributedConfigError("WORLD_SIZE is set but this torch has no "
                                         "torch.distributed; run one process")
        world = world_from_env()
        chosen = backend_for(device, backend, world.local_size)
        if world.size > 1:
            if chosen == "nccl":
                torch.cuda.set_device(world.local_rank)
            torch.distributed.init_process_group(chosen, init_method="env://",
                                                 rank=world.rank, world_size=world.size)
            made = True
            resolve_device(device)  # one cuda:N for several local processes is refused
            atexit.register(_destroy)
    yield made


def _destroy() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def shard(items: Sequence[T]) -> Sequence[T]:
    """This rank's share of ``items``: ``items[rank::world_size]`` (the rule of
    ``torch.utils.data.DistributedSampler``); all of them in one process."""
    return items[rank()::world_size()] if active() else items


def all_reduce_sum(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Sum each tensor over the processes (one flat ``all_reduce`` per dtype); new
    tensors.

    Every rank must pass tensors of the same shapes, dtypes and order; without a group
    of several processes the tensors are returned as they are.
    """
    tensors = list(tensors)
    if not active() or not tensors:
        return tensors
    groups: dict[tuple[torch.dtype, torch.device], list[int]] = {}
    for i, t in enumerate(tensors):  # one flat buffer per dtype and device
        groups.setdefault((t.dtype, t.device), []).append(i)
    out: list[Tensor] = list(tensors)
    for members in groups.values():
        flat = torch.cat([tensors[i].detach().reshape(-1) for i in members])
        torch.distributed.all_reduce(flat)
        start = 0
        for i in members:
            out[i] = flat[start:start + tensors[i].numel()].view_as(tensors[i])
            start += tensors[i].numel()
    return out


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a ``RuntimeError`` with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{exc.__class__.__name__}: {exc}")


def from_main(fn: Callable[[], T]) -> T:
    """``fn()`` computed on rank 0 and handed to every rank (by
    ``broadcast_object_list``); an ``Exception`` it raises is raised on every rank.
    In one process, simply ``fn()``.

    The result must pickle (tensors are sent as they are, best on the CPU).
    """
    if not active():
        return fn()
    box: list[Any] = [None]
    if is_main():
        try:
            box[0] = (True, fn())
        except Exception as exc:
            box[0] = (False, _portable(exc))
    torch.distributed.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value
