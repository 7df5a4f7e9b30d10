"""Argon from ASE to hogn and back: a potential learned from ASE's own files drives
ASE's molecular dynamics, on the training cell and zero-shot on a 4× larger one.

Data: ASE simulates fcc argon (Lennard-Jones, σ = 3.405 Å, ε = 10.4 meV, ASE's smooth
cut-off at 7.5 Å; 108 atoms, a periodic cubic cell of 15.78 Å) with velocity Verlet
at 5 fs, thermalised at 100 K (≈ 50 K after equipartition with the lattice), and
writes the frames with ``ase.io.write`` as extended XYZ (positions, momenta, forces,
energy, time). A second, independent run gives the held-out frames.

The doors a user takes, as commands (no glue code)::

    hogn import train.extxyz -o argon.pt --cutoff 7.5
    hogn train potential-hogn argon.pt --cutoff 7.5 --hidden 32 --mp-steps 1 \\
        --model-arg edge_energies=true --epochs 60 --batch-size 4 -o run-h32

(and the same at ``--hidden 16``: two widths, the cost of a step against accuracy).

``hogn import`` keeps the cell, masses, species, momenta, forces and times;
``hogn train`` on a dataset with a box gives every saved state the edges of its own
positions within the cut-off (``Dataset.snapshots``) and learns the forces (the
potential model's velocity ``p/m`` is exact). Then, in Python, ASE's
``VelocityVerlet`` runs 2 ps on ``hogn.ase.Calculator(model)``:

- ``force_relative_error``: ‖F_model − F_ASE‖ / ‖F_ASE‖ on the held-out frames, and
  along the learned trajectory (ASE's forces at the learned states);
- ``energy_excursion_mev_per_atom``: the largest change of the *true* energy (ASE's
  Lennard-Jones potential energy at the learned states plus their kinetic energy)
  per atom, beside the same for ASE's own MD from the same start;
- the temperature and g(r) of the learned MD against ASE's own (``hogn.metrics``);
- ``ms_per_step``: the cost of one MD step (calculator call) of the learned model and
  of ASE's Lennard-Jones, minimum over repeated calls at 108 and 432 atoms.

Usage::

    python experiments/argon_md.py                  # full (~15 CPU minutes)
    python experiments/argon_md.py --quick --out /tmp/argon

Resumable: the frames, the dataset and the training run are kept under ``--work``
and reused when the script runs again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _shared import begin, experiment_parser, write_text

import hogn
from hogn.metrics import force_relative_error, radial_distribution
from hogn.report import write_json

NAME = "argon_md"
LJ = {"sigma": 3.405, "epsilon": 0.0104, "rc": 7.5, "smooth": True}
CUTOFF = 7.5
FULL = {"frames": 200, "test_frames": 50, "every": 2, "epochs": 60, "widths": [32, 16],
        "batch_size": 4, "md_steps": 400, "probe_every": 10, "repeats": [(3, 3, 3), (6, 6, 3)],
        "cost_calls": 20}
QUICK = {"frames": 12, "test_frames": 4, "every": 2, "epochs": 1, "widths": [8],
         "batch_size": 4, "md_steps": 20, "probe_every": 10, "repeats": [(3, 3, 3)],
         "cost_calls": 3}
FS = 5.0  # the MD time step, femtoseconds


def lennard_jones() -> Any:
    from ase.calculators.lj import LennardJones

    return LennardJones(**LJ)


def argon(repeat: tuple[int, int, int], seed: int) -> Any:
    """fcc argon thermalised at 100 K and equilibrated for 1 ps with ASE's MD."""
    from ase import units
    from ase.build import bulk
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(repeat)
    atoms.calc = lennard_jones()
    MaxwellBoltzmannDistribution(atoms, temperature_K=100, rng=np.random.default_rng(seed))
    Stationary(atoms)
    VelocityVerlet(atoms, timestep=FS * units.fs).run(200)
    return atoms


def write_frames(path: Path, frames: int, every: int, seed: int) -> None:
    """ASE's MD of 108 atoms, ``frames`` frames ``every`` steps apart, as extended XYZ."""
    import ase.io
    from ase import units
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.md.verlet import VelocityVerlet

    atoms = argon((3, 3, 3), seed)
    md = VelocityVerlet(atoms, timestep=FS * units.fs)
    images = []
    for _ in range(frames):
        md.run(every)
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(),
                                           forces=atoms.get_forces())
        frame.info["time"] = md.get_time()
        images.append(frame)
    tmp = path.with_suffix(".tmp.extxyz")
    ase.io.write(tmp, images, format="extxyz")
    tmp.replace(path)


def hogn_command(*args: str) -> None:
    """Run a ``hogn`` command as a user would, failing loudly."""
    cmd = [sys.executable, "-m", "hogn", *args]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{run.stdout}\n{run.stderr}")
    print(run.stdout.strip().splitlines()[-1] if run.stdout.strip() else "", flush=True)


def md_against_truth(model: Any, atoms: Any, steps: int, probe_every: int) -> dict[str, Any]:
    """ASE velocity Verlet on the learned calculator and on ASE's Lennard-Jones."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    n = len(atoms)
    learned, ref = atoms.copy(), atoms.copy()
    learned.calc = hogn_calculator(model)
    ref.calc = lennard_jones()
    truth = lennard_jones()
    start_error = _force_error(learned.get_forces(), atoms.get_forces())
    energies: list[float] = []
    ref_energies: list[float] = []
    temps: list[float] = []
    ref_temps: list[float] = []
    errors: list[float] = []
    frames: list[np.ndarray] = []
    ref_frames: list[np.ndarray] = []
    runs = (VelocityVerlet(learned, timestep=FS * units.fs),
            VelocityVerlet(ref, timestep=FS * units.fs))
    seconds = [0.0, 0.0]
    for _ in range(steps // probe_every):
        for k, md in enumerate(runs):
            t0 = time.process_time()
            md.run(probe_every)
            seconds[k] += time.process_time() - t0
        probe = learned.copy()
        probe.calc = truth
        energies.append(probe.get_potential_energy() + learned.get_kinetic_energy())
        errors.append(_force_error(learned.get_forces(), probe.get_forces()))
        temps.append(learned.get_temperature())
        ref_energies.append(ref.get_total_energy())
        ref_temps.append(ref.get_temperature())
        frames.append(learned.get_positions())
        ref_frames.append(ref.get_positions())
    box = torch.tensor(np.diag(atoms.cell[:]))
    half = len(frames) // 2
    r, g_model = radial_distribution(torch.tensor(np.array(frames[half:])), None, box, 7.0, 70)
    _, g_ref = radial_distribution(torch.tensor(np.array(ref_frames[half:])), None, box, 7.0, 70)
    dr = float(r[1] - r[0])

    def excursion(e: list[float]) -> float:
        return 1e3 * float(np.abs(np.asarray(e) - e[0]).max()) / n

    return {"atoms": n, "steps": steps, "ps": steps * FS / 1e3,
            "force_relative_error_start": start_error,
            "force_relative_error_along": [float(np.mean(errors)), float(np.max(errors))],
            "energy_excursion_mev_per_atom": excursion(energies),
            "energy_excursion_mev_per_atom_ase": excursion(ref_energies),
            "temperature_k": [float(np.mean(temps)), float(np.std(temps))],
            "temperature_k_ase": [float(np.mean(ref_temps)), float(np.std(ref_temps))],
            "rdf_abs_difference_integral": float((g_model - g_ref).abs().sum() * dr),
            "rdf_peak_r": [float(r[g_model.argmax()]), float(r[g_ref.argmax()])],
            "md_cpu_seconds": [round(seconds[0], 2), round(seconds[1], 2)]}


def hogn_calculator(model: Any) -> Any:
    from hogn.ase import Calculator

    return Calculator(model)


def _force_error(pred: np.ndarray, true: np.ndarray) -> float:
    return float(force_relative_error(torch.tensor(pred), torch.tensor(true)))


def step_cost(model: Any, repeat: tuple[int, int, int], calls: int) -> dict[str, Any]:
    """Milliseconds of one force call, the learned calculator against ASE's LJ."""
    from ase.build import bulk

    out: dict[str, Any] = {}
    for name, calc in (("hogn", hogn_calculator(model)), ("ase_lj", lennard_jones())):
        atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(repeat)
        atoms.rattle(0.05, seed=1)
        atoms.calc = calc
        atoms.get_forces()
        times = []
        for _ in range(calls):
            atoms.positions += 1e-4
            t0 = time.perf_counter()
            atoms.get_forces()
            times.append(time.perf_counter() - t0)
        out[name] = [1e3 * float(np.min(times)), 1e3 * float(np.median(times))]
    out["ratio_min"] = out["hogn"][0] / out["ase_lj"][0]
    return out


def one_width(model: Any, test: list[Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """Held-out forces, MD against ASE's and the cost of a step, for one trained model."""
    calc = hogn_calculator(model)
    errors = []
    for frame in test:
        learned = frame.copy()
        learned.calc = calc
        errors.append(_force_error(learned.get_forces(), frame.get_forces()))
    out: dict[str, Any] = {
        "hidden": model.config()["hidden"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "heldout_force_relative_error": [float(np.mean(errors)), float(np.max(errors))],
        "md": {}, "cost_ms": {}}
    for i, repeat in enumerate(cfg["repeats"]):
        atoms = argon(tuple(repeat), seed=5 + i)
        key = str(len(atoms))
        out["md"][key] = md_against_truth(model, atoms, cfg["md_steps"], cfg["probe_every"])
        out["cost_ms"][key] = step_cost(model, tuple(repeat), cfg["cost_calls"])
        print(f"hidden {out['hidden']}, {key} atoms: {json.dumps(out['md'][key])}\n"
              f"  cost {out['cost_ms'][key]}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = experiment_parser(__doc__, "a few frames, one epoch: the doors only",
                               "rewrite the Markdown from the JSON")
    parser.add_argument("--work", default="runs/argon_md", help="folder of the resumable work")
    args, out = begin(parser, argv)
    cfg = QUICK if args.quick else FULL
    name = NAME + ("_quick" if args.quick else "")
    if args.render:
        write_text(out / f"{name}.md", render(json.loads((out / f"{name}.json").read_text())))
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    for file, frames, seed in (("train.extxyz", cfg["frames"], 0),
                               ("test.extxyz", cfg["test_frames"], 1)):
        if not (work / file).is_file():
            write_frames(work / file, frames, cfg["every"], seed)
    if not (work / "argon.pt").is_file():
        hogn_command("import", str(work / "train.extxyz"), "-o", str(work / "argon.pt"),
                     "--cutoff", str(CUTOFF))
    import ase.io

    test = ase.io.read(work / "test.extxyz", ":")
    result: dict[str, Any] = {"config": {**cfg, "cutoff": CUTOFF, "lj": LJ, "dt_fs": FS},
                              "widths": {}}
    for width in cfg["widths"]:
        run = work / f"run-h{width}"
        if not (run / "best.pt").is_file():
            hogn_command("train", "potential-hogn", str(work / "argon.pt"),
                         "--cutoff", str(CUTOFF), "--hidden", str(width), "--mp-steps", "1",
                         "--model-arg", "edge_energies=true", "--epochs", str(cfg["epochs"]),
                         "--batch-size", str(cfg["batch_size"]), "--quiet", "-o", str(run))
        result["widths"][str(width)] = one_width(hogn.models.load(run / "best.pt").eval(),
                                                 test, cfg)
    result["wall_seconds_this_call"] = round(time.perf_counter() - t_start, 1)
    write_json(out / f"{name}.json", result)
    write_text(out / f"{name}.md", render(result))
    print(render(result))
    return 0


def render(result: dict[str, Any]) -> str:
    """The Markdown of a result: a table per model width, the targets, the command."""
    cfg = result["config"]
    lines = ["# Argon: ASE frames → hogn import → hogn train → ASE MD on hogn.ase.Calculator",
             "",
             f"potential-hogn (1 message-passing step, edge energies, cut-off {cfg['cutoff']} Å) "
             f"at widths {', '.join(map(str, cfg['widths']))}, {cfg['epochs']} epochs at batch "
             f"{cfg['batch_size']} on {cfg['frames']} frames of 108 atoms; MD "
             f"{cfg['md_steps']} steps of {cfg['dt_fs']} fs. Only these widths were run; the "
             "held-out frames come from an independent ASE run.", ""]
    targets = []
    for width, res in result["widths"].items():
        held = res["heldout_force_relative_error"]
        lines += [f"## Width {width} ({res['parameters']} parameters)", "",
                  f"Held-out force relative error (mean, max over {cfg['test_frames']} "
                  f"frames): {held[0]:.4f}, {held[1]:.4f}.", "",
                  "| atoms | force rel. error (start / along MD mean) | true-energy excursion "
                  "meV/atom (learned / ASE) | T K (learned / ASE) | ∫\\|Δg(r)\\| dr | "
                  "ms/step (hogn / ASE LJ) |",
                  "|---|---|---|---|---|---|"]
        targets.append(f"- width {width}: held-out force relative RMSE ≤ 2 %: "
                       f"{100 * held[0]:.2f} % ({'met' if held[0] <= 0.02 else 'missed'})")
        for key, md in res["md"].items():
            cost = res["cost_ms"][key]
            lines.append(
                f"| {key} | {md['force_relative_error_start']:.4f} / "
                f"{md['force_relative_error_along'][0]:.4f} | "
                f"{md['energy_excursion_mev_per_atom']:.4f} / "
                f"{md['energy_excursion_mev_per_atom_ase']:.4f} | "
                f"{md['temperature_k'][0]:.1f} / {md['temperature_k_ase'][0]:.1f} | "
                f"{md['rdf_abs_difference_integral']:.3f} | "
                f"{cost['hogn'][0]:.1f} / {cost['ase_lj'][0]:.1f} ({cost['ratio_min']:.2f}×) |")
            exc = md["energy_excursion_mev_per_atom"]
            targets.append(
                f"  - {key} atoms: true-energy excursion ≤ 0.1 meV/atom over {md['ps']:g} ps: "
                f"{exc:.4f} ({'met' if exc <= 0.1 else 'missed'}); one MD step at most one "
                f"ASE Lennard-Jones force call: {cost['ratio_min']:.2f}× "
                f"({'met' if cost['ratio_min'] <= 1 else 'missed'})")
        lines.append("")
    lines += ["Targets (issue: the molecular-simulation user):", "", *targets, "",
              "Command: `python experiments/argon_md.py` (one thread; wall time of the last "
              f"call {result.get('wall_seconds_this_call', float('nan')):.0f} s, training "
              "included where it ran). The 432-atom cell is zero-shot: the models saw only "
              "108-atom frames. The cost is the minimum over repeated force calls on a busy "
              "2-core machine; `benchmarks/bench_md_step.py` measures it side by side. The "
              "narrower model is the cheaper and the less accurate: pick by the accuracy you "
              "need."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
