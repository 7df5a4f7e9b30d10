"""``hogn generate`` and ``hogn info``: ground-truth datasets."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import systems
from hogn.cli.common import UserError, check_output, param, particles

__all__ = ["add_commands"]


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate a ground-truth dataset file."""
    out = Path(args.output)
    check_output(out, args.force)
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


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``generate`` and ``info``."""
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
    gen.add_argument("--n-particles", type=particles, metavar="N|MIN..MAX",
                     help="particles per graph for spring-nbody / gravity-nbody")
    gen.add_argument("--param", type=param, action="append", metavar="KEY=VALUE",
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
