"""What every benchmark records beside its numbers: the machine, its load and the
code version. Imported by the scripts in this folder (run as ``python
benchmarks/<script>.py``, which puts this folder on the path)."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import torch

__all__ = ["code_version", "load_average", "machine_info"]


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``None`` where unsupported)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def code_version(paths: Sequence[str] = ("hogn", "systems")) -> dict[str, Any]:
    """Git commit of the benchmarked code and whether ``paths`` differ from it."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                 timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    status = git("status", "--porcelain", "--untracked-files=no", "--", *paths)
    return {"commit": git("rev-parse", "HEAD"),
            "library_modified": None if status is None else bool(status)}


def machine_info(load_start: list[float] | None = None) -> dict[str, Any]:
    """Versions, threads, platform and load of this run.

    Args:
        load_start: Load averages when the run began (other work on the machine slows
            the multi-threaded torch code far more than single-threaded references).
    """
    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "scipy": scipy.__version__,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "platform": platform.platform(), "processor": platform.processor() or None,
        "device": "cpu", "load_average_start": load_start, "load_average_end": load_average(),
    }
