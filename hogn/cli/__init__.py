"""The ``hogn`` command line: the application entry point wiring ``systems`` and ``hogn``.

Nothing in the library imports this package. Each module registers its commands:
:mod:`~hogn.cli.data` (``generate``, ``info``), :mod:`~hogn.cli.learn` (``train``,
``rollout``, ``evaluate``), :mod:`~hogn.cli.meta` (``meta-train``, ``adapt``) and
:mod:`~hogn.cli.demo` (``demo``). User mistakes
(unknown names, bad values, unreadable files, an output that already exists) print
one line on stderr and exit with status 2; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from hogn import __version__
from hogn.cli import data, demo, learn, meta
from hogn.cli.common import UserError
from hogn.io import FileFormatError

__all__ = ["UserError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``hogn`` command."""
    parser = argparse.ArgumentParser(
        prog="hogn", description="Learn how particle systems move: ground truth, Hamiltonian "
        "graph networks and meta-learning. Run 'hogn COMMAND --help' for each command.")
    parser.add_argument("--version", action="version", version=f"hogn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (data, learn, demo, meta):
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hogn`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileFormatError, OSError) as exc:
        print(f"hogn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:  # hogn.train.NonFiniteLossError
        where = f"; the last good checkpoint is kept in {args.output}" if getattr(
            args, "output", None) else ""
        print(f"hogn {args.command}: error: {exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hogn: interrupted", file=sys.stderr)
        return 130
    except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - GPU only
        print(f"hogn {args.command}: error: out of device memory: {exc}", file=sys.stderr)
        return 2
