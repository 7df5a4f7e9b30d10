"""The ``hogn`` command line: the application entry point wiring ``systems`` and ``hogn``.

Nothing in the library imports this package. Each module registers its commands:
:mod:`~hogn.cli.data` (``generate``, ``import``, ``info``), :mod:`~hogn.cli.learn` (``train``,
``rollout``, ``evaluate``), :mod:`~hogn.cli.meta` (``meta-train``, ``adapt``),
:mod:`~hogn.cli.demo` (``demo``) and :mod:`~hogn.cli.export` (``export``).

Exits: 0 on success; 2 for a user mistake (an unknown name, a bad value, an
unreadable, damaged or foreign file, an output that already exists, work that cannot
fit), reported in one line on stderr without a traceback; 130 after Ctrl-C (SIGINT)
and 143 after SIGTERM, with the one line ``hogn: interrupted``. Files are written
atomically, so an interrupted command leaves each output either as it was or
complete. Bugs keep their traceback.

Importing this package is cheap (the commands' modules load inside :func:`main`),
so that the signal handlers are in place before the long imports of start-up. Building
the parser imports no torch either (DESIGN.md: command-line help and argument errors
never import torch): the parsers take their argument types from :mod:`hogn.cli.args`
and their lists of names from :mod:`hogn.cli.choices`, and each command imports what it
runs on (torch, PyTorch Geometric, the models) once its arguments are parsed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import Any

from hogn import __version__

__all__ = ["Interrupted", "UserError", "build_parser", "main"]


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which (exit status 128 + signum)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class UsageError(ValueError):
    """A command line argparse refuses (reported in one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise :class:`UsageError` (one line, exit 2)
    instead of printing the usage and exiting; ``--help`` and ``--version`` exit as
    usual."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


def __getattr__(name: str) -> Any:  # UserError lives with the argument types
    if name == "UserError":
        from hogn.cli.args import UserError

        return UserError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``hogn`` command."""
    from hogn.cli import data, demo, export, learn, meta

    parser = _Parser(
        prog="hogn", description="Learn how particle systems move: ground truth, Hamiltonian "
        "graph networks and meta-learning. Run 'hogn COMMAND --help' for each command.")
    parser.add_argument("--version", action="version", version=f"hogn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    for module in (data, learn, demo, meta, export):
        module.add_commands(sub)
    return parser


def _install_handlers() -> dict[int, Any] | None:
    """Turn SIGINT and SIGTERM into :class:`Interrupted` (the first one; later ones
    are ignored while the command unwinds and cleans up). Returns the previous
    handlers, or ``None`` outside the main thread (where signals cannot be caught)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {}
    for s in (signal.SIGINT, signal.SIGTERM):
        previous[s] = signal.getsignal(s)
        signal.signal(s, handler)
    return previous


def _restore_handlers(previous: dict[int, Any] | None) -> None:
    if previous is None:
        return
    for s, h in previous.items():
        signal.signal(s, h if h is not None else signal.SIG_DFL)


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
        or type(exc).__name__ == "OutOfMemoryError")


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else exc.__class__.__name__


def _silence_stdout() -> None:
    """Point stdout at the null device, so that the interpreter's final flush of a
    closed pipe prints nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real stdout (e.g. in tests)
        pass
    sys.stdout = open(os.devnull, "w")


def _report_warnings(command: str, caught: Sequence[warnings.WarningMessage]) -> None:
    """The warnings a command raised, one line each, once it has finished (a command
    that fails reports only its error, in one line)."""
    seen = set()
    for w in caught:
        text = " ".join(str(w.message).split())
        if text not in seen:
            seen.add(text)
            print(f"{command}: warning: {text}", file=sys.stderr)


def _import_numpy() -> None:
    """Import numpy from Python, before a command imports torch: torch imports it from C
    and drops any exception of that import, a Ctrl-C (:class:`Interrupted`) included,
    after which the command would run on, on a half-imported numpy. Imported here, an
    interrupt stops the command as anywhere else."""
    import numpy  # noqa: F401


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hogn`` command; returns the exit status (see the module notes)."""
    previous = _install_handlers()
    command = "hogn"
    try:
        try:
            args = build_parser().parse_args(argv)
            command = f"hogn {args.command}"
            _import_numpy()
            with warnings.catch_warnings(record=True) as caught:
                status = args.func(args)
            _report_warnings(command, caught)  # after success only: an error is one line
            return status
        except BrokenPipeError:  # the reader went away (e.g. `hogn info X | head -2`)
            _silence_stdout()
            return 141  # 128 + SIGPIPE, as a program killed by the broken pipe
        except UsageError as exc:
            print(_one_line(exc), file=sys.stderr)
            return 2
        except Interrupted as exc:
            print("hogn: interrupted", file=sys.stderr)
            return 128 + exc.signum
        except KeyboardInterrupt:
            print("hogn: interrupted", file=sys.stderr)
            return 130
        except (ValueError, OSError, FloatingPointError) as exc:
            # ValueError: hogn.io.FileFormatError too (imported by the commands, not here);
            # FloatingPointError: hogn.train.NonFiniteLossError, which says what is kept
            print(f"{command}: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        except (MemoryError, RuntimeError) as exc:
            if not _is_out_of_memory(exc):
                raise
            print(f"{command}: error: out of memory ({_one_line(exc)[:200]}); use smaller "
                  "sizes (see HOGN_MAX_MEMORY)", file=sys.stderr)
            return 2
    except Interrupted as exc:  # a signal while reporting another error
        print("hogn: interrupted", file=sys.stderr)
        return 128 + exc.signum
    finally:
        _restore_handlers(previous)
