"""``hogn export``: a dataset's trajectories as extended XYZ for ASE, OVITO and alike."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

import systems
from hogn import checks
from hogn.cli.args import POS_INT, UserError

__all__ = ["add_commands", "output_paths", "trajectory_spec"]


def trajectory_spec(text: str) -> str | list[range]:
    """``"all"``, ``"3"``, ``"0,2,5"`` or ``"1..4"`` (inclusive) -> ``"all"`` or index
    ranges (not expanded: a range is checked against the dataset before it is)."""
    if text.strip() == "all":
        return "all"
    indices: list[range] = []
    try:
        for part in text.split(","):
            if ".." in part:
                lo, hi = (checks.parse_text(checks.nonnegative_int, x, "trajectory index")
                          for x in part.split("..", 1))
                if lo > hi:
                    raise checks.CheckError(f"the range must run from low to high, got {part!r}")
                indices.append(range(lo, hi + 1))
            else:
                i = checks.parse_text(checks.nonnegative_int, part, "trajectory index")
                indices.append(range(i, i + 1))
    except checks.CheckError as exc:
        raise argparse.ArgumentTypeError(
            f"expected 'all', an index >= 0, a list like 0,2,5 or a range like 1..4: {exc}"
        ) from None
    return indices


def output_paths(out: Path, indices: list[int]) -> list[Path]:
    """One file per trajectory: ``out`` itself for one, ``STEM-INDEX.SUFFIX`` for several."""
    if len(indices) == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in indices]


def cmd_export(args: argparse.Namespace) -> int:
    """Write the chosen trajectories of a dataset file as extended XYZ files."""
    from hogn.cli.common import check_output
    from hogn.xyz import element_symbols, write_xyz

    data = systems.load(args.data)
    count = data.num_graphs
    spans = [range(count)] if args.trajectory == "all" else args.trajectory
    wrong = [r[-1] for r in spans if r[-1] >= count]
    if wrong:
        raise UserError(f"trajectory {max(wrong)} is out of range: {args.data} holds {count} "
                        f"trajectories (0..{count - 1})")
    indices = sorted({i for r in spans for i in r})  # bounded by the dataset now
    outs = output_paths(Path(args.output), indices)
    for out in outs:  # every output checked before any is written
        check_output(out, args.force)
    keep = slice(None, None, args.stride)
    name = data.system_name
    columns, z = _constant_names(data.meta, data.c.shape[1])
    for done, (i, out) in enumerate(zip(indices, outs, strict=True)):
        a, b = int(data.ptr[i]), int(data.ptr[i + 1])
        box = None if data.box is None else data.box[i]
        info = {"trajectory": i, **({"system": name} if name else {})}
        species = "X" if z is None else element_symbols(data.c[a:b, z])
        try:
            write_xyz(out, data.q[keep, a:b], data.p[keep, a:b], t=data.t[keep],
                      c=data.c[a:b], box=box, info=info, digits=args.digits,
                      species=species, constant_names=columns)
        except OSError as exc:
            if done == 0:
                raise
            raise OSError(exc.errno, f"{exc.strerror or exc}; the {done} file(s) before it "
                          f"were written ({outs[0]} .. {outs[done - 1]}), the "
                          f"{len(outs) - done} from {out} on were not") from None
    frames = len(range(data.t.numel())[keep])
    where = str(outs[0]) if len(outs) == 1 else f"{outs[0]} ... {outs[-1]}"
    count_text = "1 trajectory" if len(outs) == 1 else f"{len(outs)} trajectories"
    print(f"wrote {where}: {count_text} x {frames} frames (stride {args.stride}) as extended "
          "XYZ")
    return 0


def _constant_names(meta: dict[str, Any], k: int) -> tuple[list[str] | None, int | None]:
    """Column names of the node constants for the file (``None``: write_xyz's defaults)
    and the column of atomic numbers (``None``: none), from ``meta["node_constants"]``
    (datasets from ASE: ``[mass, atomic_number]``)."""
    names = meta.get("node_constants")
    if not isinstance(names, list) or len(names) != k or not all(
            isinstance(x, str) for x in names):
        return None, None
    z = names.index("atomic_number") if "atomic_number" in names else None
    return ["masses" if x == "mass" else x for x in names], z


def _digits(text: str) -> int:
    value = POS_INT(text)
    if value > 17:
        raise argparse.ArgumentTypeError(f"expected an int in [1, 17], got {value}")
    return value


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``export``."""
    cmd = sub.add_parser(
        "export", help="write a dataset's trajectories as extended XYZ (ASE, OVITO)",
        description=textwrap.fill(
            "Write trajectories of the dataset file DATA as extended XYZ, the text format "
            "ASE and OVITO open: one file per trajectory, a frame per saved time with "
            "positions, momenta, node constants (masses first), the time and the periodic "
            "box. Particles are elements where the data has atomic numbers (imported from "
            "ASE), else X. 2-D systems are padded with z = 0; see docs/pictures.md.", 88),
        epilog="examples:\n"
        "  hogn export data/spring.pt -o spring.xyz                    # trajectory 0\n"
        "  hogn export data/lj.pt -o lj.xyz --trajectory 0,3 --stride 10\n"
        "                                          # lj-0.xyz, lj-3.xyz, every 10th point",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    cmd.add_argument("data", metavar="DATA", help="dataset file (hogn generate / import)")
    cmd.add_argument("-o", "--output", required=True, metavar="OUT.xyz",
                     help="file to write; with several trajectories OUT-INDEX.xyz each")
    cmd.add_argument("--trajectory", type=trajectory_spec, default=[range(1)], metavar="WHICH",
                     help="an index, a list (0,2,5), a range (1..4) or 'all' (default 0)")
    cmd.add_argument("--stride", type=POS_INT, default=1,
                     help="write every STRIDE-th saved time (default 1: all)")
    cmd.add_argument("--digits", type=_digits, default=10,
                     help="significant digits per number, 1-17 (default 10; 17: exact)")
    cmd.add_argument("--force", action="store_true", help="overwrite existing files")
    cmd.set_defaults(func=cmd_export)
