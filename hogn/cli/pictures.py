"""``hogn rollout --animate OUT.gif --xyz OUT.xyz``: pictures of the first rolled-out
trajectory, for the commands that roll a model out against the truth."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import systems
    from hogn.evaluation import Evaluation

__all__ = ["add_picture_args", "picture_outputs", "write_pictures"]


def add_picture_args(cmd: argparse.ArgumentParser) -> None:
    """Add ``--animate OUT.gif`` and ``--xyz OUT.xyz`` to a rollout command."""
    cmd.add_argument("--animate", metavar="OUT.gif",
                     help="save an animated GIF of the first trajectory: prediction beside "
                     "truth (at most 150 frames; see docs/pictures.md)")
    cmd.add_argument("--xyz", metavar="OUT.xyz",
                     help="save the first trajectory's prediction as extended XYZ for ASE "
                     "and OVITO (positions, momenta, masses, time, box)")


def picture_outputs(args: argparse.Namespace) -> dict[str, str | None]:
    """The picture outputs asked for, by flag (for :func:`hogn.cli.common.check_outputs`)."""
    return {"--animate": args.animate, "--xyz": args.xyz}


def write_pictures(args: argparse.Namespace, truth: systems.Dataset, result: Evaluation,
                   model_name: str) -> list[Path]:
    """Write the pictures asked for of the first trajectory.

    Args:
        args: Parsed arguments with ``animate`` and ``xyz`` (paths or ``None``).
        truth: The true trajectories the rollout started from.
        result: The rollout (``result.q, result.p [T + 1, N, d]``, ``result.t``).
        model_name: Name shown in the GIF's title and the XYZ comment line.

    Returns:
        The written paths.
    """
    written: list[Path] = []
    if not (args.animate or args.xyz):
        return written
    from hogn.plot import animate_rollout
    from hogn.xyz import write_xyz

    a, b = int(truth.ptr[0]), int(truth.ptr[1])
    points = result.t.numel()
    box = None if truth.box is None else truth.box[0]
    system = truth.system_name or "data"
    if args.animate:
        written.append(animate_rollout(
            truth.q[:points, a:b], result.q[:, a:b], args.animate, t=result.t, box=box,
            title=f"{model_name} on {system}, {b - a} particles",
            labels=("truth", f"{model_name} prediction")))
    if args.xyz:
        written.append(write_xyz(
            args.xyz, result.q[:, a:b], result.p[:, a:b], t=result.t, c=truth.c[a:b],
            box=box, info={"system": system, "model": model_name, "trajectory": 0,
                           "kind": "prediction"}))
    return written
