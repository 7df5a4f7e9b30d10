"""The ``hogn`` command line: the application entry point wiring ``systems`` and ``hogn``.

Nothing in the library imports this module. User mistakes (unknown names, bad
values, unreadable files, an output that already exists) print one line on stderr
and exit with status 2; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import systems
from hogn.io import FileFormatError
from hogn.plot import TrajectoryPanel, trajectories_and_energy
from hogn.report import format_table, write_json

__all__ = ["main"]

SUMMARY_COLUMNS = ("system", "particles", "dims", "trajectories", "points", "energy_min",
                   "energy_max", "max_rel_energy_drift", "resampled")


class UserError(ValueError):
    """A mistake in the command line (reported without a traceback)."""


# ----------------------------------------------------------------- parsing helpers
def _particles(text: str) -> int | tuple[int, int]:
    """``"5"`` -> 5, ``"4..8"`` -> (4, 8)."""
    try:
        if ".." in text:
            lo, hi = (int(x) for x in text.split("..", 1))
            return (lo, hi)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an int or a range like 4..8, got {text!r}") from None


def _param(text: str) -> tuple[str, Any]:
    """``"g=9.81"`` -> ("g", 9.81); values parse as JSON (lists become tuples)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), tuple(value) if isinstance(value, list) else value


def _check_output(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise UserError(f"{path} already exists; pass --force to overwrite it")
    if path.exists() and path.is_dir():
        raise UserError(f"{path} is a directory; give a file name")


# ----------------------------------------------------------------------- commands
def cmd_generate(args: argparse.Namespace) -> int:
    """Generate a ground-truth dataset file."""
    out = Path(args.output)
    _check_output(out, args.force)
    params = dict(args.param or [])
    if args.embed_dim is not None:
        params["embed_dim"] = args.embed_dim
    options: dict[str, Any] = {"seed": args.seed, "progress": not args.quiet,
                               "device": args.device}
    for key in ("noise", "test_fraction", "rtol", "n_particles"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    start = time.perf_counter()
    if args.system in systems.preset_names():
        if args.steps is not None or args.dt is not None:
            raise UserError("a preset fixes --steps and --dt; generate from the system name "
                            "to choose them")
        data = systems.from_preset(args.system, args.trajectories, params=params, **options)
    else:
        if args.system not in systems.names():
            raise UserError(f"unknown system or preset {args.system!r}; systems: "
                            f"{', '.join(systems.names())}; presets: "
                            f"{', '.join(systems.preset_names())}")
        system = systems.get(args.system, **params)
        data = systems.generate(system, args.trajectories or 100, args.steps or 100,
                                args.dt or 0.1, **options)
    data.save(out)
    elapsed = time.perf_counter() - start
    s = data.summary()
    print(f"wrote {out}: {s['trajectories']} trajectories of {s['system']} "
          f"({s['particles']} particles x {s['dims']} dims, {s['points']} points), "
          f"max relative energy drift {s['max_rel_energy_drift']:.2e}, "
          f"resampled {s['resampled']}, {elapsed:.1f} s")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Describe a dataset file."""
    data = systems.load(args.file)
    s, m = data.summary(), data.meta
    rows = [
        ("file", args.file), ("system", s["system"]),
        ("parameters", json.dumps({k: v for k, v in m["system"].items() if k != "name"})),
        ("preset", m.get("preset")), ("particles", s["particles"]), ("dims", s["dims"]),
        ("trajectories", f"{s['trajectories']} ({s['test']} test)"),
        ("points", f"{s['points']} (dt={data.dt:g}, t in [0, {float(data.t[-1]):g}])"),
        ("noise", m.get("noise")), ("seed", m.get("seed")),
        ("integrator", f"{m.get('method')} (rtol {m.get('rtol')})"),
        ("energy range", f"[{s['energy_min']:.4g}, {s['energy_max']:.4g}]"),
        ("max relative energy drift", f"{s['max_rel_energy_drift']:.3e}"),
        ("resampled", json.dumps(m.get("resampled", {}))),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate a small dataset of every system, print a table, save plots."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, panels = [], []
    print(f"hogn demo: {args.trajectories} trajectories x {args.steps} steps (dt={args.dt}) of "
          f"every system, float64 ground truth\n")
    for name in systems.names():
        system = systems.get(name)
        n_particles = None if system.n_particles is not None else (4, 6)
        start = time.perf_counter()
        data = systems.generate(system, args.trajectories, args.steps, args.dt, seed=args.seed,
                                n_particles=n_particles, progress=not args.quiet)
        row = data.summary()
        row["seconds"] = round(time.perf_counter() - start, 2)
        rows.append(row)
        first = data[0]
        panels.append(TrajectoryPanel(f"{name} (N={int(first.sizes[0])})", first.t,
                                      first.q, first.energy()[:, 0]))
    print(format_table(rows, [*SUMMARY_COLUMNS, "seconds"]))
    write_json(out / "systems.json", rows)
    png = trajectories_and_energy(panels, out / "systems.png")
    print(f"\nwrote {out / 'systems.json'} and {png}")
    return 0


# ------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``hogn`` command."""
    parser = argparse.ArgumentParser(
        prog="hogn", description="Learn how particle systems move: ground truth, Hamiltonian "
        "graph networks and meta-learning. Run 'hogn COMMAND --help' for each command.")
    parser.add_argument("--version", action="version", version="hogn 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser(
        "generate", help="simulate a float64 ground-truth dataset",
        description="Simulate a ground-truth dataset of SYSTEM (a system or a paper preset) "
        "and save it atomically to -o FILE.",
        epilog=f"systems: {', '.join(systems.names())}\npresets: "
        f"{', '.join(systems.preset_names())}\n\nexamples:\n"
        "  hogn generate pendulum --trajectories 500 --steps 200 --dt 0.05 -o pend.pt\n"
        "  hogn generate spring-nbody --n-particles 4..8 --param graph=cycle -o spring.pt\n"
        "  hogn generate hnn-two-body -o two-body.pt",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("system", metavar="SYSTEM", help="system name or preset name")
    gen.add_argument("-o", "--output", required=True, metavar="FILE", help="dataset file")
    gen.add_argument("--trajectories", type=int, help="number of trajectories (default 100, "
                     "or the preset's)")
    gen.add_argument("--steps", type=int, help="saved steps per trajectory (default 100)")
    gen.add_argument("--dt", type=float, help="time between saved states (default 0.1)")
    gen.add_argument("--n-particles", type=_particles, metavar="N|MIN..MAX",
                     help="particles per graph for spring-nbody / gravity-nbody")
    gen.add_argument("--param", type=_param, action="append", metavar="KEY=VALUE",
                     help="system parameter, repeatable (e.g. --param g=9.81)")
    gen.add_argument("--embed-dim", type=int, help="embed 1-D systems in this many dims")
    gen.add_argument("--noise", type=float, help="observation noise std (default 0)")
    gen.add_argument("--test-fraction", type=float, help="held-out fraction (default 0.2)")
    gen.add_argument("--rtol", type=float, help="integrator tolerance (default 1e-12)")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    gen.add_argument("--device", default=None, help="torch device (default cpu)")
    gen.add_argument("--force", action="store_true", help="overwrite an existing FILE")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=cmd_generate)

    info = sub.add_parser("info", help="describe a dataset file",
                          description="Validate a dataset file and print what it holds.")
    info.add_argument("file", metavar="FILE")
    info.set_defaults(func=cmd_info)

    demo = sub.add_parser("demo", help="run the built-in demo",
                          description="Generate a small dataset of every system, print a "
                          "table (particles, dims, energy range, energy drift) and save a PNG "
                          "of trajectories and energy over time.")
    demo.add_argument("--out", default="demo-output", help="output folder (default "
                      "demo-output)")
    demo.add_argument("--trajectories", type=int, default=32)
    demo.add_argument("--steps", type=int, default=100)
    demo.add_argument("--dt", type=float, default=0.1)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)
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
    except KeyboardInterrupt:
        print("hogn: interrupted", file=sys.stderr)
        return 130
    except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - GPU only
        print(f"hogn {args.command}: error: out of device memory: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
