"""Command-line help and argument errors never import torch (DESIGN.md): ``hogn --help``,
every ``hogn COMMAND --help`` and a refused command line parse without torch or PyTorch
Geometric; the parsers' static lists of names (:mod:`hogn.cli.choices`) equal the
registries they copy; a command imports only what it runs on."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from hogn.cli import build_parser, choices

# Runs the command line in a fresh interpreter and reports the exit status and which of
# the heavy packages the run imported.
PROBE = """
import json, sys
from hogn.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exc:
    status = exc.code
heavy = ("torch", "torch_geometric", "hogn.models", "numpy", "scipy", "matplotlib")
print(json.dumps({"status": status, "imported": [m for m in heavy if m in sys.modules]}),
      file=sys.stderr)
"""


def _probe(argv: list[str], cwd=None) -> tuple[int, list[str], str, list[str]]:
    """``(exit status, heavy modules imported, stdout, stderr lines)`` of ``hogn ARGV``."""
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                         timeout=600, cwd=cwd)
    *err, last = out.stderr.strip().splitlines()
    report = json.loads(last)
    return report["status"], report["imported"], out.stdout, err


def _commands() -> list[str]:
    sub = next(a for a in build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def test_every_command_is_probed():
    assert set(_commands()) == {"generate", "import", "info", "train", "rollout", "evaluate",
                                "demo", "meta-train", "adapt", "export"}


@pytest.mark.parametrize("command", [None, *_commands()])
def test_help_imports_no_torch(command):
    argv = ["--help"] if command is None else [command, "--help"]
    status, imported, out, _ = _probe(argv)
    assert status == 0
    assert out.startswith("usage: hogn"), out[:200]
    assert imported == [], f"hogn {' '.join(argv)} imported {imported}"


@pytest.mark.parametrize("argv, words", [
    (["generate", "--bogus"], "the following arguments are required"),
    (["generate", "pendulum", "-o", "x.pt", "--bogus"], "unrecognized arguments: --bogus"),
    (["generate", "pendulum", "-o", "x.pt", "--steps", "-1"], "--steps: must be an int >= 1"),
    (["train", "hogn", "d.pt", "-o", "run", "--integrator", "nope"], "invalid choice: 'nope'"),
    (["train", "hogn", "d.pt", "-o", "run", "--dtype", "float16"], "invalid choice"),
    (["meta-train", "--holdout", "pendulum", "-o", "run", "--algorithm", "nope"],
     "invalid choice"),
    (["adapt", "run", "--baselines", "nope"], "invalid choice"),
    (["demo", "--integrator", "leapfrog"], "invalid choice"),
    (["export", "d.pt", "-o", "x.xyz", "--digits", "40"], "expected an int in [1, 17]"),
    (["no-such-command"], "invalid choice"),
    (["train", "hogn", "d.pt", "-o", "run", "--device", "bogus"], "must be cpu, cuda"),
    (["rollout", "run", "--device", "cuda:x"], "must be a device name like cpu"),
])
def test_argument_errors_import_no_torch(argv, words, tmp_path):
    status, imported, _, err = _probe(argv, cwd=tmp_path)
    assert status == 2
    assert len(err) == 1 and words in err[0], err
    assert imported == [], f"hogn {' '.join(argv)} imported {imported}"
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_python_m_hogn_help_imports_no_torch():
    """The whole start-up of ``python -m hogn --help`` (the console script's path:
    ``hogn.cli:main``), module by module."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "hogn", "--help"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    modules = {line.rsplit("|", 1)[1].strip() for line in out.stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    assert "hogn.cli" in modules  # the report was read
    heavy = sorted(m for m in modules if m.split(".")[0] in ("torch", "torch_geometric"))
    assert heavy == []


def test_a_command_that_needs_no_model_imports_no_model(tmp_path):
    """``hogn generate`` runs on the systems: it does not import the models."""
    status, imported, _, _ = _probe(["generate", "pendulum", "--trajectories", "2", "--steps",
                                  "3", "--quiet", "-o", str(tmp_path / "p.pt")])
    assert status == 0 and (tmp_path / "p.pt").is_file()
    assert "torch" in imported and "hogn.models" not in imported


# ------------------------------------------ the static names equal their registries
def test_the_static_names_equal_the_registries():
    import systems
    from hogn import integrators, models
    from hogn.cli.common import DTYPES
    from hogn.train import LOSSES, SCHEDULES, TARGETS
    from meta import algorithms, fewshot, protocol

    assert choices.SYSTEMS == tuple(systems.names())
    assert choices.PRESETS == tuple(systems.preset_names())
    assert choices.MODELS == tuple(models.names())
    assert choices.INTEGRATORS == tuple(integrators.names())
    assert choices.SPLITTING == tuple(n for n in integrators.names()
                                      if integrators.get(n).needs_separable)
    assert choices.IMPLICIT == tuple(n for n in integrators.names()
                                     if integrators.get(n).implicit)
    assert choices.NON_SEPARABLE_INTEGRATORS == tuple(integrators.compatible(False))
    assert choices.DTYPES == tuple(DTYPES)
    assert (choices.TARGETS, choices.LOSSES, choices.SCHEDULES) == (
        tuple(TARGETS), tuple(LOSSES), tuple(SCHEDULES))
    assert choices.META_SYSTEMS == tuple(protocol.META_SYSTEMS)
    assert choices.META_MODELS == tuple(protocol.MODEL_LAYOUTS)
    assert choices.META_ALGORITHMS == tuple(algorithms.ALGORITHMS)
    assert choices.META_CLOSED_FORM == protocol.CLOSED_FORM
    assert choices.META_LOSSES == tuple(algorithms.LOSSES)
    assert choices.META_BASELINES == tuple(fewshot.names())


def test_the_npz_keys_are_those_load_npz_reads():
    from systems import array_keys, arrays

    assert arrays.NPZ_KEYS is array_keys.NPZ_KEYS and arrays.HNN_KEYS is array_keys.HNN_KEYS


def test_file_format_errors_are_user_errors():
    """:func:`hogn.cli.main` reports a damaged file in one line by catching ``ValueError``
    (it does not import :mod:`hogn.io`, which imports torch)."""
    from hogn.io import FileFormatError

    assert issubclass(FileFormatError, ValueError)


def test_ctrl_c_while_numpy_is_imported_stops_the_command(tmp_path):
    """torch imports numpy from C and drops the exceptions of that import, a Ctrl-C
    included; the command line imports numpy itself first, so that a Ctrl-C there is
    'hogn: interrupted' (exit 130) rather than a command that runs on."""
    code = ("import os, signal, sys\n"
            "class CtrlC:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'numpy':\n"
            "            sys.meta_path.remove(self)\n"
            "            os.kill(os.getpid(), signal.SIGINT)\n"
            "sys.meta_path.insert(0, CtrlC())\n"
            "from hogn.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    out = subprocess.run([sys.executable, "-c", code, "generate", "pendulum", "--trajectories",
                          "2", "--steps", "3", "--quiet", "-o", str(tmp_path / "p.pt")],
                         capture_output=True, text=True, timeout=600)
    assert (out.returncode, out.stderr.strip()) == (130, "hogn: interrupted")
    assert not (tmp_path / "p.pt").exists()
