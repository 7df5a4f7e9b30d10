"""Argument validators shared by the command line and the Python API.

One rule per kind of value, so ``hogn train --lr -1`` and ``hogn.train(..., lr=-1)``
are refused with the same words. Each validator takes the value (a number, or the
text of a command-line argument) and a name for the message, and returns the value
converted (``"3"`` -> 3) or raises :class:`CheckError` (a ``ValueError``) naming what
was wrong and what was expected. No value is ever replaced by a default.

For ``argparse``, :func:`arg` turns a validator into a ``type=`` callable whose
errors argparse reports as one line (``argparse.ArgumentTypeError``)::

    parser.add_argument("--lr", type=arg(positive_float))

Validators: :func:`positive_float`, :func:`nonnegative_float`, :func:`finite_float`,
:func:`positive_int`, :func:`nonnegative_int`, :func:`any_int`, :func:`fraction`,
:func:`tolerance`, :func:`device`; and :func:`memory_limit` /
:func:`check_memory` for bounding work before it starts.
"""

from __future__ import annotations

import argparse
import functools
import math
import numbers
import os
import re
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "MEMORY_ENV",
    "STEPS_ENV",
    "CheckError",
    "any_int",
    "arg",
    "check_memory",
    "check_steps",
    "device",
    "finite_float",
    "format_bytes",
    "fraction",
    "learning_rate_fits",
    "memory_limit",
    "nonnegative_float",
    "nonnegative_int",
    "parse_text",
    "positive_float",
    "positive_int",
    "tolerance",
]

MEMORY_ENV = "HOGN_MAX_MEMORY"
STEPS_ENV = "HOGN_MAX_STEPS"
DEFAULT_MAX_STEPS = 10_000_000
"""Integrator steps one command may plan (``$HOGN_MAX_STEPS`` overrides): about an
hour of simulation at the least; more is refused up front rather than run silently."""
"""Environment variable overriding the memory limit of :func:`memory_limit`
(bytes, or a number with a unit: ``"8G"``, ``"500M"``)."""

TOLERANCE_RANGE = (1e-14, 0.1)
"""Relative tolerances an adaptive float64 integrator can meet: below ~1e-14 the
round-off of float64 makes every step fail (it would never finish)."""


class CheckError(ValueError):
    """A value outside what its argument accepts."""


def _number(value: Any, name: str, integer: bool = False, expected: str | None = None
            ) -> float | int:
    """``value`` as a float (or int); no bools, no text (see :func:`arg` for text).
    The error says ``name must be {expected}``."""
    expected = expected or ("an int" if integer else "a number")
    if not isinstance(value, bool | str):
        if integer and isinstance(value, numbers.Integral):
            return int(value)
        if not integer and isinstance(value, numbers.Real):
            return float(value)
    raise CheckError(f"{name} must be {expected}, got {value!r}")


def finite_float(value: Any, name: str = "value") -> float:
    """A finite real number (not NaN or ±inf)."""
    x = _number(value, name, expected="a finite number")
    if not math.isfinite(x):
        raise CheckError(f"{name} must be a finite number, got {value!r}")
    return float(x)


def positive_float(value: Any, name: str = "value") -> float:
    """A finite number > 0."""
    x = _number(value, name, expected="a finite number > 0")
    if not (math.isfinite(x) and x > 0):
        raise CheckError(f"{name} must be a finite number > 0, got {value!r}")
    return float(x)


def nonnegative_float(value: Any, name: str = "value") -> float:
    """A finite number >= 0."""
    x = _number(value, name, expected="a finite number >= 0")
    if not (math.isfinite(x) and x >= 0):
        raise CheckError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(x)


def fraction(value: Any, name: str = "value", *, upper_open: bool = False) -> float:
    """A number in ``[0, 1]`` (``[0, 1)`` with ``upper_open``)."""
    interval = f"[0, {'1)' if upper_open else '1]'}"
    x = _number(value, name, expected=f"a fraction in {interval}")
    ok = math.isfinite(x) and 0 <= x and (x < 1 if upper_open else x <= 1)
    if not ok:
        raise CheckError(f"{name} must be a fraction in [0, {'1)' if upper_open else '1]'}, "
                         f"got {value!r}")
    return float(x)


def tolerance(value: Any, name: str = "rtol") -> float:
    """A relative tolerance an adaptive float64 integrator can meet, in
    :data:`TOLERANCE_RANGE` (0, NaN or 1e-300 would never finish)."""
    lo, hi = TOLERANCE_RANGE
    x = _number(value, name, expected=f"a number in [{lo:g}, {hi:g}]")
    if not (math.isfinite(x) and lo <= x <= hi):
        raise CheckError(f"{name} must be a number in [{lo:g}, {hi:g}] (float64 cannot "
                         f"meet a tighter tolerance), got {value!r}")
    return float(x)


def learning_rate_fits(value: float, dtype: Any, name: str = "lr") -> None:
    """Refuse a learning rate whose first Adam step overflows parameters of ``dtype``:
    Adam divides by ``1 - β₁ᵗ >= 0.1``, so a rate above the dtype's largest / 100 turns
    the weights infinite (torch raises an overflow error, not ours).

    Raises:
        ValueError: naming ``name``, the bound and the dtype.
    """
    import torch

    largest = torch.finfo(dtype).max / 100
    if value > largest:
        raise ValueError(f"{name} must be at most {largest:.3g} ({dtype} parameters), "
                         f"got {value!r}")


def any_int(value: Any, name: str = "value") -> int:
    """An int (``3``; not ``3.0``, ``True`` or ``"3.5"``)."""
    return int(_number(value, name, integer=True))


def positive_int(value: Any, name: str = "value") -> int:
    """An int >= 1."""
    n = int(_number(value, name, integer=True, expected="an int >= 1"))
    if n < 1:
        raise CheckError(f"{name} must be an int >= 1, got {value!r}")
    return n


def nonnegative_int(value: Any, name: str = "value") -> int:
    """An int >= 0."""
    n = int(_number(value, name, integer=True, expected="an int >= 0"))
    if n < 0:
        raise CheckError(f"{name} must be an int >= 0, got {value!r}")
    return n


_DEVICE = re.compile(r"(?P<type>[a-z]+)(:(?P<index>\d+))?")


def device(value: Any, name: str = "device") -> str:
    """A torch device that exists on this machine: ``cpu``, ``cuda``, ``cuda:N``
    (N below the GPU count) or ``mps``; returned as given. A malformed name and ``cpu``
    are answered without importing torch (command-line errors stay instant)."""
    loaded = sys.modules.get("torch")
    is_device = loaded is not None and isinstance(value, loaded.device)
    text = str(value).strip() if isinstance(value, str) or is_device else None
    m = _DEVICE.fullmatch(text) if text is not None else None
    if m is None:
        raise CheckError(f"{name} must be a device name like cpu, cuda or cuda:0, "
                         f"got {value!r}")
    kind, index = m["type"], m["index"]
    if kind == "cpu":
        if index not in (None, "0"):
            raise CheckError(f"{name}: there is only one cpu device, got {value!r}")
        return text
    if kind == "cuda":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise CheckError(f"{name} {value!r}: this machine has no CUDA device "
                             "(torch sees none); use cpu")
        if index is not None and int(index) >= count:
            raise CheckError(f"{name} {value!r}: this machine has {count} CUDA "
                             f"device(s), cuda:0..cuda:{count - 1}")
        return text
    if kind == "mps":
        import torch

        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise CheckError(f"{name} {value!r}: MPS is not available here; use cpu")
        return text
    raise CheckError(f"{name} must be cpu, cuda, cuda:N or mps, got {value!r}")


_INT_CHECKS = ("any_int", "positive_int", "nonnegative_int")
_FLOAT_CHECKS = ("finite_float", "positive_float", "nonnegative_float", "fraction",
                 "tolerance")


def parse_text(check: Callable[..., Any], text: str, name: str = "value") -> Any:
    """Command-line ``text`` through ``check``: read as an int or a float first for the
    numeric validators (``"1e-3"``, ``"7"``), as given for the others."""
    value: Any = text
    kind = check.__name__
    try:
        if kind in _INT_CHECKS:
            value = int(text.strip())
        elif kind in _FLOAT_CHECKS:
            value = float(text.strip())
    except ValueError:
        raise CheckError(f"{name} must be {'an int' if kind in _INT_CHECKS else 'a number'}"
                         f", got {text!r}") from None
    return check(value, name)


def arg(check: Callable[..., Any], label: str | None = None, **kwargs: Any
        ) -> Callable[[str], Any]:
    """An ``argparse`` ``type=`` callable running ``check`` (its message becomes the
    one-line argparse error, naming ``label`` when given: the API's name of the
    option, so that both say the same)."""
    bound = functools.partial(check, **kwargs) if kwargs else check

    def convert(text: str) -> Any:
        try:
            return parse_text(_named(bound, check.__name__), text, label or "value")
        except CheckError as exc:
            message = str(exc) if label else str(exc).removeprefix("value ")
            raise argparse.ArgumentTypeError(message) from None
    convert.__name__ = check.__name__  # argparse names the type in some messages
    return convert


def _named(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    def call(value: Any, label: str = "value") -> Any:
        return fn(value, label)
    call.__name__ = name
    return call


# ----------------------------------------------------------------- work bounds
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def _available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (``None`` where unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_limit() -> tuple[int, str]:
    """The memory a command may plan to use, and where that number comes from.

    ``$HOGN_MAX_MEMORY`` (``"8G"``, ``"500M"``, bytes) when set, else 80% of the
    memory available now (``MemAvailable``), else 8 GiB.

    Raises:
        CheckError: for a malformed ``$HOGN_MAX_MEMORY``.
    """
    text = os.environ.get(MEMORY_ENV)
    if text:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
        if m is None or float(m[1]) <= 0:
            raise CheckError(f"${MEMORY_ENV} must be a size like 8G, 500M or 1000000 "
                             f"(bytes), got {text!r}")
        return int(float(m[1]) * _UNITS[m[2].upper()]), f"${MEMORY_ENV}={text}"
    available = _available_memory()
    if available is not None:
        return int(0.8 * available), "80% of the memory available now"
    return 8 * 2**30, "the default of 8 GiB (available memory unknown)"


def check_memory(need: float, what: str) -> None:
    """Refuse work whose estimated memory ``need`` (bytes) exceeds :func:`memory_limit`.

    Raises:
        CheckError: naming the estimate, the limit, its source and how to change it.
    """
    limit, source = memory_limit()
    if need > limit:
        raise CheckError(f"{what} needs about {format_bytes(need)} of memory, over the "
                         f"limit of {format_bytes(limit)} ({source}); make it smaller, or "
                         f"set {MEMORY_ENV} (e.g. {MEMORY_ENV}=64G) to allow more")


def check_steps(need: float, what: str, advice: str, unit: str = "integrator steps") -> None:
    """Refuse work needing more than ``$HOGN_MAX_STEPS`` (default 10 million)
    integrator steps.

    Raises:
        CheckError: naming the estimate, the limit, ``advice`` and how to change it.
    """
    text = os.environ.get(STEPS_ENV)
    limit = DEFAULT_MAX_STEPS if not text else parse_text(positive_int, text, f"${STEPS_ENV}")
    if need > limit:
        source = f"${STEPS_ENV}={text}" if text else f"the default; set {STEPS_ENV}"
        raise CheckError(f"{what}: about {need:.3g} {unit}, over the limit of "
                         f"{limit:.3g} ({source}); {advice}, or set {STEPS_ENV} to "
                         "allow more")
