"""``hogn generate``, ``hogn import`` and ``hogn info``: datasets, simulated or your own."""

from __future__ import annotations

import argparse
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import systems
from hogn import checks
from hogn.cli import choices
from hogn.cli.args import (
    DEVICE,
    FRACTION_BELOW_1,
    NONNEG_FLOAT,
    NONNEG_INT,
    POS_FLOAT,
    POS_INT,
    TOLERANCE,
    UserError,
    param,
    particles,
)

__all__ = ["add_commands", "check_simulation_work"]

DEFAULT_TRAJECTORIES, DEFAULT_STEPS, DEFAULT_DT = 100, 100, 0.1


def check_simulation_work(system: Any, trajectories: int, steps: int, dt: float,
                          n_particles: int | tuple[int, int] | None = None,
                          noise: float = 0.0, what: str = "this dataset") -> None:
    """Refuse a ground-truth simulation that cannot fit, before any work.

    Two bounds: memory (the saved states, true derivatives, observations and edges,
    with the copies generation makes; see :func:`hogn.checks.check_memory`) and
    time (the adaptive integrator needs about ``steps * dt / max_step`` steps, the
    system's step scale; see :func:`hogn.checks.check_steps`).

    Raises:
        UserError: naming the estimate, the limit and how to change it.
    """
    try:
        span = steps * dt
        checks.check_steps(max(steps, span / system.max_step),
                           f"{what} spans t = {steps} x {dt:g} = {span:.3g} "
                           f"({system.name}'s step scale {system.max_step:g})",
                           "lower --dt or --steps")
        hi = n_particles[1] if isinstance(n_particles, tuple) else n_particles
        d, points = system.dim, steps + 1
        series = 4 + (2 if noise > 0 else 0)  # q, p, dq, dp (and the observations)
        n_hint = hi or system.n_particles or 1

        def node_bytes(n: int) -> float:  # x2: the copies made on the way
            return 8.0 * points * trajectories * n * d * series * 2

        label = f"{what} ({trajectories} trajectories x {points} points x {{n}} particles " \
                f"x {d} dims{{edges}})"
        checks.check_memory(node_bytes(n_hint), label.format(n=n_hint, edges=""))
        # the edges of the largest graph, from one small sample (cheap at any size)
        small = max(min(hi, 16), getattr(system, "min_particles", lambda: 1)()) if hi else None
        one = system.sample(1, 0, n_particles=small)
        m, e = one.q.shape[0], one.edge_index.shape[1]
        n = m if hi is None else hi
        edges = n * (n - 1) if m > 1 and e >= m * (m - 1) else e * n / max(m, 1)
        edge_bytes = trajectories * edges * (16 + 8 * d * 8)  # indices, per-edge work
        checks.check_memory(node_bytes(n) + edge_bytes,
                            label.format(n=n, edges=f", {edges:.3g} edges per graph"))
    except checks.CheckError as exc:
        raise UserError(str(exc)) from None


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate a ground-truth dataset file."""
    from hogn.cli.common import check_output, system_params

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
        preset = systems.get_preset(args.system)
        params = system_params(preset.system, params)
        system = systems.get(preset.system, **{**preset.params, **params})
        count = preset.trajectories if args.trajectories is None else args.trajectories
        check_simulation_work(system, count, preset.points - 1, preset.dt,
                              options.get("n_particles", preset.n_particles),
                              options.get("noise", preset.noise), f"preset {args.system}")
        data = systems.from_preset(args.system, args.trajectories, params=params, **options)
    else:
        if args.system not in systems.names():
            raise UserError(f"unknown system or preset {args.system!r}; systems: "
                            f"{', '.join(systems.names())}; presets: "
                            f"{', '.join(systems.preset_names())}")
        system = systems.get(args.system, **system_params(args.system, params))
        trajectories = DEFAULT_TRAJECTORIES if args.trajectories is None else args.trajectories
        steps = DEFAULT_STEPS if args.steps is None else args.steps
        dt = DEFAULT_DT if args.dt is None else args.dt
        check_simulation_work(system, trajectories, steps, dt, options.get("n_particles"),
                              options.get("noise", 0.0))
        data = systems.generate(system, trajectories, steps, dt, **options)
    data.save(out)
    elapsed = time.perf_counter() - start
    s = data.summary()
    print(f"wrote {out}: {s['trajectories']} trajectories of {s['system']} "
          f"({s['particles']} particles x {s['dims']} dims, {s['points']} points), "
          f"max relative energy drift {s['max_rel_energy_drift']:.2e}, "
          f"resampled {s['resampled']}, {elapsed:.1f} s")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Turn a ``.npz`` file of your own arrays, or a file of ASE frames, into a dataset
    file."""
    from hogn.cli.common import check_output, system_params

    out = Path(args.output)
    check_output(out, args.force)
    params = dict(args.param or [])
    if params and args.system is None:
        raise UserError("--param needs --system (the registered system the parameters "
                        "belong to)")
    if args.system is not None:
        params = system_params(args.system, params)
    if Path(args.file).suffix.lower() == ".npz":
        from systems.arrays import load_npz

        if args.dt_fs is not None:
            raise UserError("--dt-fs applies to files of ASE frames; a .npz file gives its "
                            "times with the keys t or dt")
        data = load_npz(args.file, test_fraction=args.test_fraction, seed=args.seed,
                        system=args.system, params=params or None, cutoff=args.cutoff)
    else:
        if params:
            raise UserError("--param applies to .npz files of a registered --system; ASE "
                            "frames are labelled, not a registered system")
        data = _load_ase(args)
    data.save(out)
    states = data.dt is None
    what = (f"{data.num_graphs} states" if states else
            f"{data.num_graphs} trajectories of {data.t.numel()} points (dt={data.dt:g})")
    cutoff = data.meta.get("cutoff")
    box = ("" if data.box is None else ", periodic box" if cutoff is None else
           f", periodic box, radius edges {cutoff:g}") + _supercell_text(data.meta)
    print(f"wrote {out}: {what} of {data.system_config['name']} "
          f"({data.particle_range} particle(s) x {data.dim} dims, {data.c.shape[1]} node "
          f"constants, {data.edge_index.shape[1] // data.num_graphs} edges per graph{box}), "
          f"{int(data.test.sum())} test; derivatives {data.derivatives}")
    return 0


def _load_ase(args: argparse.Namespace) -> systems.Dataset:
    """``hogn import`` of a file of ASE frames: ``--dt-fs`` and ``--cutoff`` in the
    command line's words when the file lacks them."""
    try:
        from systems.ase_data import NotInFrames, ase_time_per_fs, load_ase

        dt = None if args.dt_fs is None else args.dt_fs * ase_time_per_fs()
        return load_ase(args.file, dt=dt, cutoff=args.cutoff, test_fraction=args.test_fraction,
                        seed=args.seed, system=args.system)
    except ImportError:
        from systems.ase_data import ASE_MISSING

        raise UserError(f"{args.file}: not a .npz file; reading other files {ASE_MISSING}"
                        ) from None
    except NotInFrames as exc:
        advice = {"dt": "give the time between frames with --dt-fs FS (femtoseconds)",
                  "cutoff": "give the radius of the edges with --cutoff R (Å)"}
        raise UserError(f"{exc.what}: {advice[exc.argument]}") from None


def cmd_info(args: argparse.Namespace) -> int:
    """Describe a dataset file."""
    data = systems.load(args.file)
    m = data.meta
    problem = data.energy_problem()
    if problem is None:
        s = data.summary()
        energy_rows = [("energy range", f"[{s['energy_min']:.4g}, {s['energy_max']:.4g}]"),
                       ("max relative energy drift", f"{s['max_rel_energy_drift']:.3e}")]
    else:
        energy_rows = [("energy", f"not available: {problem}")]
    system = m["system"] if isinstance(m.get("system"), dict) else {"name": m.get("system")}
    own = m.get("source") in ("arrays", "ase")
    test = int(data.test.sum())
    if data.dt is None:
        count = ("states", f"{data.num_graphs} ({test} test)")
        points = ("points", f"{data.t.numel()} per state (no time order, no dt)")
    else:
        count = ("trajectories", f"{data.num_graphs} ({test} test)")
        points = ("points", f"{data.t.numel()} (dt={data.dt:g}, t in "
                  f"[{float(data.t[0]):g}, {float(data.t[-1]):g}])")
    origin = ([("source", _source(m))] if own else
              [("preset", m.get("preset"))])
    split = (("test split", "given mask" if m.get("test_fraction") is None else
              f"fraction {m.get('test_fraction')} drawn with seed {m.get('seed')}")
             if own else ("seed", m.get("seed")))
    made = [] if own else [("noise", m.get("noise")),
                           ("integrator", f"{m.get('method')} (rtol {m.get('rtol')})")]
    rows = [
        ("file", args.file), ("system", system.get("name")),
        ("parameters", json.dumps({k: v for k, v in system.items() if k != "name"})),
        *origin, ("particles", data.particle_range), ("dims", data.dim),
        ("node constants", data.c.shape[1] if data.c.dim() == 2 else tuple(data.c.shape)),
        ("edges", f"{data.edge_index.shape[1]} ({data.edge_index.shape[1] / len(data):g} "
                  "per graph" + (f"; pairs closer than {m['cutoff']:g} in each trajectory's "
                                 "first state" if m.get("cutoff") is not None else "") + ")"),
        ("box", _box_text(data)),
        *([("units", ", ".join(f"{k} {v}" for k, v in m["units"].items()))]
          if isinstance(m.get("units"), dict) else []),
        count, points, ("derivatives", data.derivatives if own else
                        f"{data.derivatives} (the system's H)"),
        ("observations", "q_obs, p_obs" if data.q_obs is not None else "none"),
        split, *made, *energy_rows, *_file_energy_rows(m),
        *([] if own else [("resampled", json.dumps(m.get("resampled", {})))]),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    return 0


def _source(meta: dict[str, Any]) -> str:
    """Where a user's dataset came from, for ``hogn info``."""
    if meta.get("source") == "ase":
        columns = ", ".join(meta.get("node_constants") or [])
        species = ", ".join(meta.get("species") or [])
        return (f"ASE frames{' of ' + str(meta['file']) if meta.get('file') else ''} "
                f"({species}; node constants {columns}; times from {meta.get('times')})")
    return f"your arrays, {meta.get('layout')}"


def _box_text(data: systems.Dataset) -> str:
    """The periodic box of a dataset, for ``hogn info``."""
    if data.box is None:
        return "none (open boundaries)"
    rows = {tuple(row) for row in data.box.tolist()}
    if len(rows) == 1:
        text = f"periodic, lengths {', '.join(f'{x:g}' for x in rows.pop())}"
    else:
        text = (f"periodic, one per trajectory, lengths {float(data.box.min()):g} to "
                f"{float(data.box.max()):g}")
    return text + _supercell_text(data.meta)


def _supercell_text(meta: dict[str, Any]) -> str:
    """How a small periodic cell was repeated on import (``meta["supercell"]``)."""
    cell = meta.get("supercell")
    if not isinstance(cell, dict):
        return ""
    reps = " x ".join(str(r) for r in cell.get("reps", []))
    return (f" (the file's cell of {cell.get('cell_atoms')} atoms, smaller than twice the "
            f"cut-off, repeated {reps})")


def _file_energy_rows(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """The energies a file of ASE frames carried (``meta["energies"]``), for ``hogn info``."""
    energies = meta.get("energies")
    if not isinstance(energies, dict) or energies.get("total") is None:
        return []
    import torch

    from hogn.metrics import relative_drift

    total = torch.tensor(energies["total"], dtype=torch.float64).T  # [T, G]
    return [("energy from the frames", f"total [{float(total.min()):.6g}, "
             f"{float(total.max()):.6g}], max relative drift "
             f"{float(relative_drift(total).max()):.3e}")]


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``generate`` and ``info``."""
    gen = sub.add_parser(
        "generate", help="simulate a float64 ground-truth dataset",
        description="Simulate a ground-truth dataset of SYSTEM (a system or a paper preset) "
        "and save it atomically to -o FILE.",
        epilog=f"systems: {', '.join(choices.SYSTEMS)}\npresets: "
        f"{', '.join(choices.PRESETS)}\n\nexamples:\n"
        "  hogn generate pendulum --trajectories 500 --steps 200 --dt 0.05 -o pend.pt\n"
        "  hogn generate spring-nbody --n-particles 4..8 --param graph=cycle -o spring.pt\n"
        "  hogn generate hnn-two-body -o two-body.pt",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("system", metavar="SYSTEM", help="system name or preset name")
    gen.add_argument("-o", "--output", required=True, metavar="FILE", help="dataset file")
    gen.add_argument("--trajectories", type=POS_INT,
                     help="number of trajectories (default 100, or the preset's)")
    gen.add_argument("--steps", type=POS_INT,
                     help="saved steps per trajectory (default 100)")
    gen.add_argument("--dt", type=POS_FLOAT,
                     help="time between saved states (default 0.1)")
    gen.add_argument("--n-particles", type=particles, metavar="N|MIN..MAX",
                     help="particles per graph for spring-nbody / gravity-nbody")
    gen.add_argument("--param", type=param, action="append", metavar="KEY=VALUE",
                     help="system parameter, repeatable (e.g. --param g=9.81)")
    gen.add_argument("--embed-dim", type=POS_INT,
                     help="embed 1-D systems in this many dims")
    gen.add_argument("--noise", type=NONNEG_FLOAT,
                     help="observation noise std (default 0)")
    gen.add_argument("--test-fraction", type=FRACTION_BELOW_1,
                     help="held-out fraction in [0, 1) (default 0.2)")
    gen.add_argument("--rtol", type=TOLERANCE, help="integrator tolerance in "
                     f"[{checks.TOLERANCE_RANGE[0]:g}, {checks.TOLERANCE_RANGE[1]:g}] "
                     "(default 1e-12)")
    gen.add_argument("--seed", type=NONNEG_INT, default=0,
                     help="random seed (default 0)")
    gen.add_argument("--device", type=DEVICE, default=None,
                     help="torch device (default cpu)")
    gen.add_argument("--force", action="store_true", help="overwrite an existing FILE")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=cmd_generate)

    imp = sub.add_parser(
        "import", help="turn your own arrays (.npz) or ASE frames (.xyz, .traj) into a "
        "dataset file", description=_IMPORT_DESCRIPTION, epilog=_import_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("file", metavar="FILE", help="arrays saved with numpy.savez (.npz), or "
                     "frames ase.io.read reads (.xyz, .extxyz, .traj, ...)")
    imp.add_argument("-o", "--output", required=True, metavar="DATA", help="dataset file")
    imp.add_argument("--system", metavar="LABEL", help="label of the data (default: the "
                     "file's 'system' key, else 'user'); the name of a registered system "
                     "makes its true energy available where c holds its constants")
    imp.add_argument("--param", type=param, action="append", metavar="KEY=VALUE",
                     help="parameter of the registered --system, repeatable")
    imp.add_argument("--test-fraction", type=FRACTION_BELOW_1,
                     help="held-out fraction in [0, 1), drawn with --seed, when the file "
                     "has no 'test' mask (default 0.2)")
    imp.add_argument("--seed", type=NONNEG_INT, default=0,
                     help="seed of the --test-fraction draw (default 0)")
    imp.add_argument("--dt-fs", type=POS_FLOAT, metavar="FS",
                     help="ASE frames: time between frames in femtoseconds, when the frames "
                     "carry no info 'time' (the dataset keeps ASE time units, 1 = 10.18 fs)")
    imp.add_argument("--cutoff", type=POS_FLOAT, metavar="R",
                     help="radius of the edges (Å for ASE frames): each graph gets the pairs "
                     "of its first state closer than R; required for a periodic box")
    imp.add_argument("--force", action="store_true", help="overwrite an existing DATA")
    imp.set_defaults(func=cmd_import)

    info = sub.add_parser("info", help="describe a dataset file",
                          description="Validate a dataset file and print what it holds.")
    info.add_argument("file", metavar="FILE")
    info.set_defaults(func=cmd_info)


_IMPORT_DESCRIPTION = "\n\n".join(textwrap.fill(text, 88) for text in (
    "Read the arrays of FILE.npz (states or trajectories of your own), or the frames of a "
    "molecular-dynamics trajectory that ASE reads (FILE.xyz, .extxyz, .traj, ...; needs "
    "pip install hogn[ase]), and save them as a dataset file DATA that every command takes "
    "(train, evaluate, rollout --data, info).",
    "Arrays: states [M, d] or [M, n, d] have no time order and need their derivatives dq, "
    "dp; trajectories [G, T, n, d] need their times (t or dt), and their derivatives, when "
    "missing, are estimated by second-order central differences (said so in 'hogn info').",
    "ASE frames (one trajectory, the same atoms in every frame) keep ASE's units (Å, eV, "
    "amu, ASE time): q = positions, p = momenta, dq = p/m, dp = the forces, node constants "
    "[mass, atomic number]; times from the frames' info 'time' or --dt-fs; an orthorhombic "
    "cell periodic in x, y, z becomes the box (with --cutoff).",
    "See docs/your_own_data.md."))


def _import_epilog() -> str:
    from systems.array_keys import HNN_KEYS, NPZ_KEYS  # torch-free, unlike systems.arrays

    def table(keys: dict[str, str]) -> str:
        return "\n".join(f"  {k:<11} {v}" for k, v in keys.items())

    return (f"keys (q, p required):\n{table(NPZ_KEYS)}\n\nor the HNN paper's code layout "
            f"(x, dx required):\n{table(HNN_KEYS)}\n\nany other key is refused.\n\n"
            "examples:\n"
            "  numpy.savez('spring.npz', q=q, p=p, dq=dq, dp=dp, test=test)   # in Python\n"
            "  hogn import spring.npz -o spring.pt\n"
            "  hogn import trajectories.npz --system mass-spring -o ms.pt --test-fraction 0.1\n"
            "  hogn import lj.xyz --dt-fs 5 --cutoff 8.5 -o argon.pt   # ASE frames, 5 fs apart")
