"""What the experiment scripts share: their common command-line options.

Scripts run as ``python experiments/<name>.py``, so this folder is first on
``sys.path`` and ``from _shared import ...`` finds this module.
"""

from __future__ import annotations

import argparse
from pathlib import Path

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
