"""What the experiment scripts share: their common command-line options.

Scripts run as ``python experiments/<name>.py``, so this folder is first on
``sys.path`` and ``from _shared import ...`` finds this module.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from hogn.io import atomic_write

RESULTS = Path(__file__).resolve().parent / "results"


def experiment_parser(doc: str, quick_help: str, render_help: str) -> argparse.ArgumentParser:
    """A parser with ``--quick``, ``--out``, ``--threads`` and ``--render``.

    Args:
        doc: The script's module docstring (its first paragraph is the description).
        quick_help: What ``--quick`` runs.
        render_help: What ``--render`` redraws.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", default=str(RESULTS),
                        help="output folder (default experiments/results)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--render", action="store_true", help=render_help)
    return parser


def begin(parser: argparse.ArgumentParser, argv: Sequence[str] | None
          ) -> tuple[argparse.Namespace, Path]:
    """Parse the options, set the torch threads, create ``--out``; returns both."""
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return args, out


def write_text(path: Path, text: str) -> Path:
    """Write a text file atomically (never half-written)."""
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def mean_std(values: Iterable[float]) -> list[float]:
    """``[mean, std]`` of per-seed values (std with ``ddof=1``; 0 for one value), the
    ``mean ± std over seeds`` of the results JSONs."""
    x = np.asarray(list(values), dtype=float)
    return [float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0]
