"""Plain-text tables and JSON results, for the CLI, demos, benchmarks and experiments."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hogn.io import atomic_write

__all__ = ["format_table", "format_value", "write_json"]


def format_value(value: Any) -> str:
    """Short human form: floats in 4 significant digits (scientific when tiny/huge)."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
                 ) -> str:
    """Align rows of dicts into a text table with a header line.

    Args:
        rows: One mapping per row.
        columns: Keys to show, in order (default: keys of the first row).

    Returns:
        The table as one string (no trailing newline).
    """
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    cells = [[format_value(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in
                      enumerate(zip(row, widths, strict=True))) for row in cells]
    return "\n".join([line, rule, *body])


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"
    return atomic_write(path, lambda fh: fh.write(text.encode()))
