"""``hogn demo``: every system's ground truth, then HOGN against its baselines.

Part 1 simulates a few trajectories of every system and tabulates their energy
conservation. Part 2 trains HOGN, OGN, DeltaGN and the baseline MLP with the same
budget (epochs, samples per epoch, width, seed) on spring-nbody systems of 4-6
particles, rolls each out for ``--horizon`` steps with gauss4 (DeltaGN with its own
step) on held-out systems of the same sizes and zero-shot on 16 particles, and
prints the relative error and the drift of the true energy along the predictions.

Why gauss4: a learned H (HOGN) or vector field (OGN, MLP) is not separable, so the
splitting methods (leapfrog, yoshida4, symplectic_euler) would be neither symplectic
nor of their order on it, and the models refuse them. gauss4, the two-stage
Gauss-Legendre method, is symplectic for any H and of order 4 (like the RK4 the
trained models are usually rolled out with), so HOGN's energy drift is measured with
an integrator that adds no secular drift of its own. Its stages are solved by
fixed-point iteration (about 5 iterations per step in float32 at dt = 0.05, about
1 + 2 x 5 model evaluations per step against RK4's 4); implicit_midpoint, order 2,
would cost about half as much per step but drift more by itself at this dt.
``--integrator`` picks another method valid for a non-separable model.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import systems
from hogn.cli import choices
from hogn.cli.args import NONNEG_INT, POS_FLOAT, POS_INT

__all__ = ["add_commands"]

SUMMARY_COLUMNS = ("system", "particles", "dims", "trajectories", "points", "energy_min",
                   "energy_max", "max_rel_energy_drift", "resampled")
LEARN_COLUMNS = ("model", "test", "particles", "integrator", "steps", "rel_error@100",
                 "rel_error@horizon", "energy_drift", "train_seconds", "rollout_seconds")
#: (registry name, training target); the MLP needs one particle count (5).
MODELS = (("hogn", "derivative"), ("ogn", "derivative"), ("deltagn", "rollout"),
          ("mlp", "derivative"))


def _systems_table(args: argparse.Namespace, out: Path) -> None:
    from hogn.plot import TrajectoryPanel, trajectories_and_energy
    from hogn.report import format_table, write_json

    rows, panels = [], []
    print(f"part 1: {args.trajectories} trajectories x {args.steps} steps (dt={args.dt}) of "
          "every system, float64 ground truth\n")
    for name in systems.names():
        system = systems.get(name)
        # any-N systems: 4-6 particles, or the fewest a system allows (a periodic box
        # must hold twice its interaction range)
        low = max(4, getattr(system, "min_particles", lambda: 4)())
        n_particles = None if system.n_particles is not None else (low, low + 2)
        start = time.perf_counter()
        data = systems.generate(system, args.trajectories, args.steps, args.dt, seed=args.seed,
                                n_particles=n_particles, progress=not args.quiet)
        row = data.summary()
        if system.dissipative:  # friction or forcing: the drift is the physics, not an error
            row["system"] = f"{name} (not conservative)"
        row["seconds"] = round(time.perf_counter() - start, 2)
        rows.append(row)
        first = data[0]
        panels.append(TrajectoryPanel(f"{name} (N={int(first.sizes[0])})", first.t,
                                      first.q, first.energy()[:, 0]))
    print(format_table(rows, [*SUMMARY_COLUMNS, "seconds"]))
    write_json(out / "systems.json", rows)
    png = trajectories_and_energy(panels, out / "systems.png")
    print(f"\nwrote {out / 'systems.json'} and {png}\n")


def _learning(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import torch

    from hogn import integrators, models
    from hogn.evaluation import evaluate
    from hogn.metrics import geometric_mean
    from hogn.plot import loss_curves, rollout_comparison
    from hogn.report import format_table
    from hogn.train import train

    system = systems.get("spring-nbody")
    dt, horizon = args.learn_dt, args.horizon
    method = integrators.get(args.integrator)  # --integrator offers the non-separable fits
    kind = ("symplectic for any H" if method.symplectic else "not symplectic")
    print(f"part 2: HOGN vs baselines on spring-nbody (4-6 particles, dt={dt}), "
          f"{args.epochs} epochs x {args.samples} samples each, hidden {args.hidden}; "
          f"rollouts with {method.name} (order {method.order}, {kind}; DeltaGN: its own "
          "step)\n")
    start = time.perf_counter()
    data = systems.generate(system, args.train_trajectories, args.train_steps, dt,
                            seed=args.seed, n_particles=(4, 6), test_fraction=0.0,
                            progress=False)
    tests = {
        "held-out": systems.generate(system, args.test_trajectories, horizon, dt,
                                     seed=args.seed + 1, n_particles=(4, 6),
                                     test_fraction=0.0, progress=False),
        "zero-shot": systems.generate(system, args.test_trajectories, args.zero_shot_horizon, dt,
                                      seed=args.seed + 2, n_particles=16, test_fraction=0.0,
                                      progress=False),
    }
    print(f"ground truth: {data.num_graphs} training and 2 x {args.test_trajectories} test "
          f"trajectories in {time.perf_counter() - start:.1f} s")
    rows: list[dict[str, Any]] = []
    histories: dict[str, list[dict[str, float]]] = {}
    plots: dict[str, dict[str, Any]] = {key: {"q": {}, "energy": {}} for key in tests}
    for name, target in MODELS:
        train_data = data.select(data.sizes == 5) if name == "mlp" else data
        torch.manual_seed(args.seed)
        model = models.for_data(name, train_data, hidden=args.hidden)
        integrator = None if model.is_stepper else model.check_integrator(method).name
        start = time.perf_counter()
        result = train(model, train_data, target=target, epochs=args.epochs,
                       max_samples=args.samples, batch_size=64, lr=args.lr, schedule="cosine",
                       seed=args.seed, progress=not args.quiet)
        seconds = time.perf_counter() - start
        histories[name] = result.history
        for key, truth in tests.items():
            if name == "mlp":  # fixed size: only its own particle count
                if not bool((truth.sizes == 5).any()):
                    continue
                truth = truth.select(truth.sizes == 5)
            rolled = time.perf_counter()
            try:
                ev = evaluate(model, truth, energy=truth.energy_function(), integrator=integrator)
            except integrators.ConvergenceError as exc:  # an implicit method's stages
                print(f"{name}, {key}: {exc}")
                rows.append({"model": name, "test": key, "particles": truth.particle_range,
                             "integrator": f"{integrator} (no convergence)",
                             "energy_drift": math.nan, "train_seconds": round(seconds, 1)})
                continue
            rel = ev.relative_error
            rows.append({"model": name, "test": key, "particles": truth.particle_range,
                         "integrator": integrator or f"own dt={dt:g}", "steps": len(ev.t) - 1,
                         "rel_error@100": geometric_mean(rel[1:101].mean(0)).item(),
                         "rel_error@horizon": ev.summary()["rel_error"],
                         "energy_drift": ev.summary()["energy_drift"],
                         "train_seconds": round(seconds, 1),
                         "rollout_seconds": round(time.perf_counter() - rolled, 1)})
            if name == "mlp" and int(tests[key].sizes[0]) != 5:
                continue  # the plotted trajectory is another size
            a, b = int(truth.ptr[0]), int(truth.ptr[1])
            plots[key]["q"][name] = ev.q[:, a:b]
            plots[key]["energy"][name] = ev.energy_error[:, 0]
            plots[key]["truth"], plots[key]["t"] = truth.q[:, a:b], ev.t
    why = (" and symplectic: it adds no secular energy drift of its own"
           if method.symplectic else "")
    print(f"\nrollouts of {horizon} steps held-out, {args.zero_shot_horizon} zero-shot "
          f"(dt = {dt:g}) with {method.name} (DeltaGN: its own step). A learned H or vector "
          "field is not separable, so leapfrog and yoshida4 would be neither symplectic nor "
          f"of their order on it; {method.name} is valid for any H{why}. rel_error: "
          "geometric mean "
          "over trajectories of ‖x̂−x‖/(‖x̂‖+‖x‖) averaged over the first 100 steps and over "
          "the horizon; energy_drift: geometric mean of max_t |H(x̂_t)−H₀|/|H₀| under the "
          "true H\n")
    print(format_table(rows, LEARN_COLUMNS))
    print("(mlp: fixed size, trained and tested on the 5-particle systems only)")
    for key, panel in plots.items():
        rollout_comparison(panel["t"], panel["truth"], panel["q"], panel["energy"],
                           out / f"rollout-{key}.png",
                           title=f"spring-nbody, {key}, {len(panel['t']) - 1} steps")
    loss_curves(histories, out / "loss.png", title="training loss (derivative or one-step)")
    drift = {r["model"]: r["energy_drift"] for r in rows if r["test"] == "held-out"}
    verdict = drift["hogn"] < min(drift["ogn"], drift["deltagn"])
    print(f"\nHOGN's energy drift on held-out systems is {drift['hogn']:.3g} vs OGN "
          f"{drift['ogn']:.3g} and DeltaGN {drift['deltagn']:.3g}: "
          f"{'lower, as the HOGN paper claims' if verdict else 'NOT lower'}")
    return {"rows": rows, "hogn_drift_lowest": verdict, "integrator": method.name,
            "horizon": horizon,
            "zero_shot_horizon": args.zero_shot_horizon, "dt": dt,
            "epochs": args.epochs, "samples_per_epoch": args.samples, "hidden": args.hidden,
            "histories": histories}


def cmd_demo(args: argparse.Namespace) -> int:
    """Run both parts and save tables and plots under ``--out``."""
    import torch

    from hogn.report import write_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    _systems_table(args, out)
    if not args.skip_learning:
        result = _learning(args, out)
        write_json(out / "learning.json", result)
        print(f"wrote {out / 'learning.json'}, {out / 'rollout-held-out.png'}, "
              f"{out / 'rollout-zero-shot.png'} and {out / 'loss.png'}")
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``demo``."""
    demo = sub.add_parser(
        "demo", help="run the built-in demo",
        description=__doc__.split("\n\n", 1)[1].replace("``", "'"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--out", default="demo-output", help="output folder (default "
                      "demo-output)")
    demo.add_argument("--trajectories", type=POS_INT, default=32, help="part 1: per system")
    demo.add_argument("--steps", type=POS_INT, default=100, help="part 1: steps")
    demo.add_argument("--dt", type=POS_FLOAT, default=0.1, help="part 1: dt")
    demo.add_argument("--seed", type=NONNEG_INT, default=0)
    learn = demo.add_argument_group("part 2 (learning)")
    learn.add_argument("--skip-learning", action="store_true", help="only part 1")
    learn.add_argument("--train-trajectories", type=POS_INT, default=96)
    learn.add_argument("--train-steps", type=POS_INT, default=50)
    learn.add_argument("--learn-dt", type=POS_FLOAT, default=0.05)
    learn.add_argument("--test-trajectories", type=POS_INT, default=8, help="per test set")
    learn.add_argument("--horizon", type=POS_INT, default=1000, help="rollout steps, held-out")
    learn.add_argument("--zero-shot-horizon", type=POS_INT, default=200,
                       help="rollout steps, 16 particles (their truth is costly)")
    learn.add_argument("--epochs", type=POS_INT, default=30)
    learn.add_argument("--samples", type=POS_INT, default=2048, help="samples per epoch")
    learn.add_argument("--hidden", type=POS_INT, default=64)
    learn.add_argument("--lr", type=POS_FLOAT, default=3e-3)
    fits = choices.NON_SEPARABLE_INTEGRATORS
    learn.add_argument("--integrator", default="gauss4", choices=fits, metavar="NAME",
                       help="integrator of the derivative models' rollouts (default gauss4: "
                       "symplectic for any H, order 4); one valid for a non-separable "
                       f"model: {', '.join(fits)}")
    demo.add_argument("--threads", type=POS_INT, default=1, help="torch threads (default 1: the "
                      "demo's tensors are small, and extra threads only wait on a busy machine)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)
