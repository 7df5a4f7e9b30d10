"""Argument types of the ``hogn`` parsers and the one-line user error; torch-free, so
that building the parsers (``--help``, argument errors) never imports torch."""

from __future__ import annotations

import argparse
import json
from typing import Any

from hogn import checks

__all__ = ["DEVICE", "FRACTION_BELOW_1", "NONNEG_FLOAT", "NONNEG_INT", "POS_FLOAT", "POS_INT",
           "TOLERANCE", "UserError", "param", "particles"]

# argparse types: the rules of hogn.checks, shared with the Python API
POS_INT = checks.arg(checks.positive_int)
NONNEG_INT = checks.arg(checks.nonnegative_int)
POS_FLOAT = checks.arg(checks.positive_float)
NONNEG_FLOAT = checks.arg(checks.nonnegative_float)
FRACTION_BELOW_1 = checks.arg(checks.fraction, upper_open=True)
TOLERANCE = checks.arg(checks.tolerance)
DEVICE = checks.arg(checks.device)


class UserError(ValueError):
    """A mistake in the command line (reported in one line, without a traceback)."""


def particles(text: str) -> int | tuple[int, int]:
    """``"5"`` -> 5, ``"4..8"`` -> (4, 8) (counts >= 1, ``MIN <= MAX``)."""
    try:
        if ".." in text:
            lo, hi = (checks.parse_text(checks.positive_int, x, "particle count")
                      for x in text.split("..", 1))
            if lo > hi:
                raise checks.CheckError(f"the range must run from low to high, got {text!r}")
            return (lo, hi)
        return checks.parse_text(checks.positive_int, text, "particle count")
    except checks.CheckError as exc:
        raise argparse.ArgumentTypeError(
            f"expected a particle count >= 1 or a range like 4..8: {exc}") from None


def param(text: str) -> tuple[str, Any]:
    """``"g=9.81"`` -> ("g", 9.81); values parse as JSON (lists become tuples)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with a KEY, got {text!r}")
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except json.JSONDecodeError:
        value = raw
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{key.strip()}: {exc}") from None
    return key.strip(), tuple(value) if isinstance(value, list) else value


def _no_constant(name: str) -> Any:
    raise ValueError(f"expected a finite number, got {name}")
