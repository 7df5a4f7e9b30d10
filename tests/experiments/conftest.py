"""Running the experiment scripts from tests: as a subprocess (``run_script``) and as
a module (``load_script``), both from the repository root."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def run_script() -> Callable[..., subprocess.CompletedProcess]:
    """``run_script(name, *args)`` runs ``experiments/<name>.py`` on one thread and
    checks its exit status (the output tail is in the failure message)."""
    def run(name: str, *args: object, timeout: int = 600) -> subprocess.CompletedProcess:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, f"experiments/{name}.py", *map(str, args)],
                              cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        return proc
    return run


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """``load_script(name)`` imports ``experiments/<name>.py`` as a module (with the
    folder on ``sys.path``, as when the script runs, for its sibling imports; and in
    ``sys.modules`` under its name, as an import would put it: dataclasses look their
    module up there)."""
    if str(ROOT / "experiments") not in sys.path:
        sys.path.insert(0, str(ROOT / "experiments"))

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    return load
