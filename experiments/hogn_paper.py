"""Experiment 2 of issue 6: the HOGN paper's comparisons (Sanchez-Gonzalez et al. 2019).

DeltaGN, OGN, HOGN and SeparableHOGN are trained with the same budget on
spring-nbody and gravity-nbody systems of 4-8 particles, all on the one-step rollout
target through RK4 (DeltaGN, a stepper, on the same target with its own dt), then

(a) rolled out with RK4 on held-out systems of 4-8 particles: relative error and
    true-energy error against the horizon;
(b) rolled out zero-shot with other integrators, each where it is valid for the model
    (``model.compatible_integrators()``): euler, rk2, rk4 and the symplectic methods
    for any H (implicit_midpoint, gauss4, gauss6) for every derivative model; the
    splitting methods leapfrog and yoshida4 only where H is separable (SeparableHOGN,
    and the true H of both systems), since on a learned, non-separable H they are
    neither symplectic nor of their order; and with other steps (dt/2 as two RK4
    substeps on the same truth; 2·dt on truth saved every 2·dt; DeltaGN, a stepper,
    can change neither: n/a);
(c) rolled out zero-shot on larger systems of 16, 64 and 256 particles.

The true Hamiltonian's own vector field run through the same integrators ("true-H")
is a reference row: it is the error the integrator alone makes at that step.

Writes ``hogn_paper.json`` (every number), ``hogn_paper_<system>.png`` (error and
energy error against the horizon), ``hogn_paper_sizes.png`` and the markdown
fragment ``hogn_paper.md`` generated from the JSON alone.

With ``--runs DIR`` every trained model is kept as ``DIR/<system>/<model>.pt`` (with
its training record beside it, ``<model>.json``) and loaded instead of trained when
its record matches the run's configuration, so a rerun or an interrupted run resumes
without training again (the ground truth is regenerated: it is seeded).

    python experiments/hogn_paper.py --runs runs/hogn_paper    # full run (~30 min on one core)
    python experiments/hogn_paper.py --quick --out /tmp/q
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _shared import begin, experiment_parser

import systems
from hogn import integrators, models
from hogn.evaluation import evaluate
from hogn.io import atomic_write
from hogn.metrics import geometric_mean, relative_error
from hogn.report import format_value, write_json
from hogn.train import train

NAME = "hogn_paper"
MODELS = ("deltagn", "ogn", "hogn", "separable-hogn")
#: Every integrator of part (b), each run only where it fits the model's separability.
INTEGRATORS = ("euler", "rk2", "rk4", "implicit_midpoint", "gauss4", "gauss6", "leapfrog",
               "yoshida4")
#: The test-time changes judged against RK4 (euler, first order, is shown, not judged).
CHANGED = tuple(i for i in INTEGRATORS if i not in ("euler", "rk4"))
#: Table cell of a (model, integrator) pair that is not run: a splitting method on a
#: model whose H is not separable.
INVALID = "—"
SYSTEMS = ("spring-nbody", "gravity-nbody")
REFERENCE = "true-H"

#: Sizes of the full run (~25 min on one core). Ground truth per size: (trajectories,
#: steps, method, substeps, rtol). Adaptive DOP853 is too slow for the largest springs (on
#: one core, 64 particles: 4 x 100 steps took 125 s at rtol 1e-12, 2 x 50 steps 24 s at
#: 1e-9: springs of a complete graph pass through each other, where |q_i − q_j| is not
#: smooth, and the stiffness grows like N), so 64 and 256 particles use fixed-step GBS8
#: with 8 substeps (2 x 50 steps: 9 s, at most 0.014 from DOP853 at 1e-9 in any
#: coordinate); the energy drift of every truth set is recorded. Model rollouts on 256
#: particles (65,280 edges) cost 0.6 (DeltaGN) to 4.8 (HOGN, RK4) s per step, hence 10 steps.
#: Gravity steps dt = 0.01: with softening 0.1, close passes make the *true* field through
#: RK4 at dt = 0.05 err by 0.36 (rel_error@50, 16 trajectories of 4-8 bodies), at 0.02 by
#: 0.03 and at 0.01 by 2e-4, so a model trained at 0.05 would learn the integrator's error.
FULL: dict[str, Any] = {
    "dt": {"spring-nbody": 0.05, "gravity-nbody": 0.01},
    "train_trajectories": 96, "train_steps": 50, "train_particles": (4, 8),
    "test_trajectories": 16, "horizon": 200, "horizons": (10, 50, 200),
    "integrator_horizon": 100,
    "sizes": {16: (4, 100, "adaptive", 1, 1e-12), 64: (2, 40, "gbs8", 8, None),
              256: (1, 10, "gbs8", 8, None)},
    "hidden": 64, "epochs": 12, "samples": 2048, "batch_size": 64, "lr": 3e-3,
}
QUICK: dict[str, Any] = {
    "dt": {"spring-nbody": 0.05, "gravity-nbody": 0.01},
    "train_trajectories": 12, "train_steps": 10, "train_particles": (4, 8),
    "test_trajectories": 2, "horizon": 20, "horizons": (5, 20),
    "integrator_horizon": 10,
    "sizes": {16: (1, 10, "adaptive", 1, 1e-9)},
    "hidden": 16, "epochs": 2, "samples": 128, "batch_size": 32, "lr": 3e-3,
}

#: The paper's qualitative claims, as summarised in issue 6 and the survey
#: (/work/shared/seeds/survey-neural-hamiltonian-dynamics.txt, §3.4: "the Hamiltonian
#: inductive bias effectively improves the accuracy and generalization ability of graph
#: neural networks"). The seeds hold no numbers of the paper, so the comparison is
#: qualitative only.
CLAIMS = {
    "integrators_beat_delta": "OGN and HOGN (a GN inside an RK4 integrator) have lower "
                              "rollout error than DeltaGN (a GN predicting the change)",
    "hogn_beats_ogn": "the Hamiltonian bias helps: HOGN's rollout error is below OGN's",
    "hogn_energy": "HOGN conserves the true energy better than OGN and DeltaGN",
    "integrator_change": "RK4-trained models tolerate another integrator at test time, "
                         "each where it is valid ("
                         + ", ".join(i for i in CHANGED if integrators.get(i).fits(False))
                         + "; " + ", ".join(i for i in CHANGED
                                            if not integrators.get(i).fits(False))
                         + " only for separable-hogn): error within 2x of RK4's",
    "dt_change": "RK4-trained derivative models tolerate another dt at test time "
                 "(dt/2 and 2dt: error over the same time within 2x of dt's)",
    "size_generalization": "the Hamiltonian bias improves generalization: HOGN's error "
                           "on larger systems is below OGN's and DeltaGN's",
}


def _rel_at(ev_rel: torch.Tensor, h: int) -> float:
    """Geometric mean over trajectories of the mean relative error over steps 1..h."""
    return geometric_mean(ev_rel[1: h + 1].mean(0)).item()


def _drift(energy_err: torch.Tensor, h: int) -> float:
    """Geometric mean over trajectories of max_{t<=h} |H(x̂_t) − H_0| / |H_0|."""
    return geometric_mean(energy_err[: h + 1].amax(0)).item()


def _curve(x: torch.Tensor) -> list[float]:
    """Per-step geometric mean over trajectories, ``[T + 1, G] -> [T + 1]``."""
    return [float(v) for v in geometric_mean(x.clamp_min(1e-30), dim=1)]


def _generate(name: str, trajectories: int, steps: int, dt: float, seed: int,
              particles: int | tuple[int, int], method: str = "adaptive", substeps: int = 1,
              rtol: float | None = 1e-12) -> tuple[systems.Dataset, dict[str, Any]]:
    start = time.perf_counter()
    options: dict[str, Any] = {"method": method, "substeps": substeps}
    if method == "adaptive":
        options["rtol"] = rtol
    else:  # fixed steps: the drift check is the record below, not a rejection
        options["max_drift"] = 1.0
    data = systems.generate(name, trajectories, steps, dt, seed=seed, n_particles=particles,
                            test_fraction=0.0, **options)
    summary = data.summary()
    info = {"trajectories": trajectories, "steps": steps, "dt": dt,
            "particles": particles if isinstance(particles, int) else list(particles),
            "method": method, "substeps": substeps, "rtol": rtol if method == "adaptive"
            else None, "max_rel_energy_drift": summary["max_rel_energy_drift"],
            "seconds": round(time.perf_counter() - start, 1)}
    return data, info


def _reference(data: systems.Dataset, integrator: str, steps: int, substeps: int = 1
               ) -> dict[str, torch.Tensor]:
    """Errors of the true Hamiltonian's vector field run through ``integrator``."""
    system, graph = data.system(), data.graph
    state = data.state(0)
    q, p = integrators.integrate(system.vector_field(graph), state.q, state.p, data.dt,
                                 steps, method=integrator, substeps=substeps,
                                 separable=system.separable)
    rel = relative_error(q, p, data.q[: steps + 1], data.p[: steps + 1], graph.batch,
                         graph.num_graphs)
    energy = data.energy_function()
    h = energy(q, p)
    err = (h - h[:1]).abs() / h[:1].abs()
    return {"rel": rel, "energy": err}


def _errors(model: models.DynamicsModel | None, data: systems.Dataset, integrator: str | None,
            steps: int, substeps: int = 1) -> dict[str, torch.Tensor]:
    if model is None:
        return _reference(data, integrator or "rk4", steps, substeps)
    ev = evaluate(model, data, energy=data.energy_function(), integrator=integrator, steps=steps,
                  substeps=substeps)
    return {"rel": ev.relative_error, "energy": ev.energy_error}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _retry(model: models.DynamicsModel | None, data: systems.Dataset, integrator: str,
           steps: int, substeps: int = 2) -> dict[str, Any]:
    """The same rollout at ``dt / substeps``, after the stages of an implicit method
    did not converge at ``dt``: whether the method works on this model at all (its
    numbers are reported beside the claims, never judged as the method at ``dt``)."""
    row: dict[str, Any] = {"substeps": substeps}
    try:
        e = _errors(model, data, integrator, steps, substeps=substeps)
    except integrators.ConvergenceError as exc:
        return {**row, "failed": str(exc)}
    return {**row, "rel_error": _finite(_rel_at(e["rel"], steps)),
            "energy_drift": _finite(_drift(e["energy"], steps))}


def valid_integrators(model: models.DynamicsModel | None, data: systems.Dataset) -> list[str]:
    """The :data:`INTEGRATORS` valid for ``model`` (``None``: the true H of ``data``'s
    system): the splitting methods only where H is separable, none for a stepper."""
    if model is None:
        separable = data.system().separable
        return [i for i in INTEGRATORS if integrators.get(i).fits(separable)]
    return [i for i in INTEGRATORS if i in model.compatible_integrators()]


def _trained(name: str, model_name: str, train_data: systems.Dataset, cfg: dict[str, Any],
             seed: int, runs: Path | None, log: Any) -> tuple[models.DynamicsModel,
                                                          dict[str, Any]]:
    """The model trained on ``train_data`` and its training record: loaded from
    ``runs/<system>/<model>.pt`` when a record there matches this configuration,
    otherwise trained (and saved there, when ``runs`` is given)."""
    key = {"system": name, "model": model_name, "seed": seed,
           **{k: cfg[k] for k in ("dt", "train_trajectories", "train_steps",
                                  "train_particles", "hidden", "epochs", "samples",
                                  "batch_size", "lr")}}
    key = json.loads(json.dumps(key))  # as read back (tuples become lists)
    path = None if runs is None else runs / name / f"{model_name}.pt"
    if path is not None and path.is_file() and path.with_suffix(".json").is_file():
        saved = json.loads(path.with_suffix(".json").read_text())
        if saved.get("key") == key:
            log(f"{name}: loaded {model_name} from {path} (trained in "
                f"{saved['training']['seconds']} s)")
            return models.load(path), {**saved["training"], "loaded": True}
    torch.manual_seed(seed)
    model = models.for_data(model_name, train_data, hidden=cfg["hidden"])
    start = time.perf_counter()
    result = train(model, train_data, target="rollout", integrator="rk4", rollout_steps=1,
                   epochs=cfg["epochs"], max_samples=cfg["samples"],
                   batch_size=cfg["batch_size"], lr=cfg["lr"], schedule="cosine",
                   seed=seed, progress=False)
    record = {"seconds": round(time.perf_counter() - start, 1),
              "parameters": sum(p.numel() for p in model.parameters()),
              "final_train_loss": result.history[-1]["train_loss"],
              "best_val_loss": result.best_val, "best_epoch": result.best_epoch,
              "history": result.history}
    log(f"{name}: trained {model_name} in {record['seconds']} s, val loss "
        f"{result.best_val:.3g}")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)  # the model first: a record never points at a missing model
        write_json(path.with_suffix(".json"), {"key": key, "training": record})
    return model, {**record, "loaded": False}


def run_system(name: str, cfg: dict[str, Any], seed: int, log: Any,
               runs: Path | None = None) -> dict[str, Any]:
    dt = cfg["dt"][name]
    horizon, ih = cfg["horizon"], cfg["integrator_horizon"]
    truth: dict[str, Any] = {}
    train_data, truth["train"] = _generate(name, cfg["train_trajectories"], cfg["train_steps"],
                                           dt, seed, tuple(cfg["train_particles"]))
    test, truth["test"] = _generate(name, cfg["test_trajectories"], horizon, dt, seed + 1,
                                    tuple(cfg["train_particles"]))
    # the same seed and sizes draw the same initial states, saved every 2 dt
    test2, truth["test_2dt"] = _generate(name, cfg["test_trajectories"], ih // 2, 2 * dt,
                                         seed + 1, tuple(cfg["train_particles"]))
    if not torch.allclose(test2.q[0], test.q[0]):
        raise RuntimeError("the 2dt test set does not start from the dt test set's states")
    sized: dict[int, systems.Dataset] = {}
    for n, (traj, steps, method, substeps, rtol) in cfg["sizes"].items():
        sized[int(n)], truth[f"n{n}"] = _generate(name, traj, steps, dt, seed + 100 + int(n),
                                                  int(n), method, substeps, rtol)
    log(f"{name}: ground truth " + ", ".join(f"{k} {v['seconds']}s" for k, v in truth.items()))

    training: dict[str, Any] = {}
    curves: dict[str, Any] = {"t": [float(x) for x in test.t[: horizon + 1] - test.t[0]],
                              "rel_error": {}, "energy_error": {}}
    rollout_rows, integrator_rows, dt_rows, size_rows = [], [], [], []
    entries: list[tuple[str, models.DynamicsModel | None]] = [(REFERENCE, None)]
    separable: dict[str, bool] = {REFERENCE: test.system().separable}
    for model_name in MODELS:
        model, training[model_name] = _trained(name, model_name, train_data, cfg, seed, runs,
                                               log)
        separable[model_name] = model.separable
        entries.append((model_name, model))

    for label, model in entries:
        stepper = model is not None and model.is_stepper
        started = time.perf_counter()
        # (a) RK4 rollouts against the horizon
        err = _errors(model, test, None if stepper else "rk4", horizon)
        curves["rel_error"][label] = _curve(err["rel"])
        curves["energy_error"][label] = _curve(err["energy"])
        row: dict[str, Any] = {"model": label}
        for h in cfg["horizons"]:
            row[f"rel_error@{h}"] = _finite(_rel_at(err["rel"], h))
        row["energy_drift"] = _finite(_drift(err["energy"], horizon))
        rollout_rows.append(row)
        # (b) integrators (each where valid: none for a stepper) and dt over `ih` steps
        for integ in valid_integrators(model, test):
            t0 = time.perf_counter()
            try:
                e = err if integ == "rk4" else _errors(model, test, integ, ih)
            except integrators.ConvergenceError as exc:  # an implicit method's stages
                log(f"{name}: {label} with {integ}: {exc}")
                integrator_rows.append({"model": label, "integrator": integ, "rel_error": None,
                                        "energy_drift": None, "failed": str(exc),
                                        "retry": _retry(model, test, integ, ih),
                                        "seconds": round(time.perf_counter() - t0, 1)})
                continue
            integrator_rows.append({"model": label, "integrator": integ,
                                    "rel_error": _finite(_rel_at(e["rel"], ih)),
                                    "energy_drift": _finite(_drift(e["energy"], ih)),
                                    "seconds": round(time.perf_counter() - t0, 1)})
        base = _rel_at(err["rel"], ih)
        dt_rows.append({"model": label, "dt_factor": 1.0, "dt": dt, "steps": ih,
                        "rel_error": base, "final_rel_error": geometric_mean(
                            err["rel"][ih]).item(), "energy_drift": _drift(err["energy"], ih)})
        for factor in (0.5, 2.0):
            if stepper:
                dt_rows.append({"model": label, "dt_factor": factor, "dt": dt * factor,
                                "steps": None, "rel_error": None, "final_rel_error": None,
                                "energy_drift": None})
                continue
            if factor == 0.5:  # the same truth, two steps of dt/2 per saved point
                e, k, data = _errors(model, test, "rk4", ih, substeps=2), ih, test
                rel = e["rel"]
            else:
                data, k = test2, ih // 2
                e = _errors(model, test2, "rk4", k)
                rel = e["rel"]
            dt_rows.append({"model": label, "dt_factor": factor, "dt": dt * factor,
                            "steps": round(k * data.dt / (dt * factor)),
                            "rel_error": _finite(_rel_at(rel, k)),
                            "final_rel_error": _finite(geometric_mean(rel[k]).item()),
                            "energy_drift": _finite(_drift(e["energy"], k))})
        # (c) larger systems
        for n, data in sized.items():
            t0 = time.perf_counter()
            steps = data.t.numel() - 1
            e = _errors(model, data, None if stepper else "rk4", steps)
            size_rows.append({"model": label, "particles": n, "trajectories": data.num_graphs,
                              "steps": steps, "rel_error": _finite(_rel_at(e["rel"], steps)),
                              "diverged": not bool(torch.isfinite(e["rel"]).all()),
                              "final_rel_error": _finite(geometric_mean(e["rel"][-1]).item()),
                              "energy_drift": _finite(_drift(e["energy"], steps)),
                              "seconds": round(time.perf_counter() - t0, 1)})
        log(f"{name}: evaluated {label} in {time.perf_counter() - started:.1f} s")
    return {"dt": dt, "truth": truth, "training": training, "separable": separable,
            "curves": curves,
            "rollout": rollout_rows, "integrators": integrator_rows, "dt_change": dt_rows,
            "sizes": size_rows}


# ------------------------------------------------------------------ claims
def _lookup(rows: list[dict[str, Any]], key: str, **match: Any) -> Any:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r[key]
    raise KeyError(f"no row {match}")


def _lt(a: float | None, b: float | None) -> bool:
    """``a < b`` where ``None`` (a rollout that left the finite numbers) is the worst."""
    return _worst(a) < _worst(b)


def _worst(x: float | None) -> float:
    return math.inf if x is None else x


def check_claims(results: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """Whether each claim holds on each system, with the numbers that decide it.

    ``None`` stands for a diverged rollout (counted as the worst); DeltaGN's n/a rows
    (no integrator, no other dt) never enter a comparison.
    """
    h = f"rel_error@{cfg['horizons'][-1]}"
    out: dict[str, Any] = {}
    for key, text in CLAIMS.items():
        per: dict[str, Any] = {}
        for name, res in results.items():
            ro = {r["model"]: r for r in res["rollout"]}
            if key == "integrators_beat_delta":
                ev = {m: ro[m][h] for m in ("deltagn", "ogn", "hogn")}
                holds = _lt(ev["ogn"], ev["deltagn"]) and _lt(ev["hogn"], ev["deltagn"])
            elif key == "hogn_beats_ogn":
                ev = {m: ro[m][h] for m in ("ogn", "hogn", "separable-hogn")}
                holds = _lt(ev["hogn"], ev["ogn"])
            elif key == "hogn_energy":
                ev = {m: ro[m]["energy_drift"] for m in ("deltagn", "ogn", "hogn")}
                holds = _lt(ev["hogn"], min(_worst(ev["ogn"]), _worst(ev["deltagn"])))
            elif key == "integrator_change":  # on the methods valid for each model only
                ev, holds = {}, True
                for m in ("ogn", "hogn", "separable-hogn"):
                    rows = {r["integrator"]: r for r in res["integrators"] if r["model"] == m}
                    rk4 = rows["rk4"]["rel_error"]
                    for integ in (i for i in CHANGED if i in rows):
                        r = rows[integ]["rel_error"]
                        ratio = None if r is None or rk4 is None else r / rk4
                        ev[f"{m}/{integ}"] = ("no convergence" if rows[integ].get("failed")
                                              else ratio)
                        holds = holds and ratio is not None and ratio <= 2
            elif key == "dt_change":
                ev, holds = {}, True
                for m in ("ogn", "hogn", "separable-hogn"):
                    base = _lookup(res["dt_change"], "final_rel_error", model=m, dt_factor=1.0)
                    for f in (0.5, 2.0):
                        r = _lookup(res["dt_change"], "final_rel_error", model=m, dt_factor=f)
                        ratio = None if r is None or base is None else r / base
                        ev[f"{m}/x{f:g}"] = ratio
                        holds = holds and ratio is not None and ratio <= 2
            else:  # size_generalization
                ev, holds = {}, True
                for n in sorted({r["particles"] for r in res["sizes"]}):
                    vals = {m: _lookup(res["sizes"], "rel_error", model=m, particles=n)
                            for m in ("deltagn", "ogn", "hogn")}
                    ev[f"N={n}"] = vals
                    holds = holds and _lt(vals["hogn"], vals["ogn"]) and _lt(
                        vals["hogn"], vals["deltagn"])
            per[name] = {"holds": bool(holds), "evidence": ev}
        out[key] = {"claim": text, "systems": per}
    return out


# ------------------------------------------------------------------ output
def plot_curves(name: str, res: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    from hogn.plot import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    t = res["curves"]["t"][1:]
    for label in res["curves"]["rel_error"]:
        style = {"color": "k", "ls": "--"} if label == REFERENCE else {}
        axes[0].semilogy(t, res["curves"]["rel_error"][label][1:], label=label, **style)
        axes[1].semilogy(t, res["curves"]["energy_error"][label][1:], label=label, **style)
    axes[0].set(xlabel="time", ylabel="relative state error (geo. mean)",
                title=f"{name}: held-out 4-8 particles, RK4")
    axes[1].set(xlabel="time", ylabel="|H(x̂)−H₀|/|H₀| (true H, geo. mean)",
                title=f"{name}: energy error")
    axes[0].legend(fontsize=8)
    return save_figure(fig, path)


def plot_sizes(results: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    from hogn.plot import save_figure

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items(), strict=True):
        for label in [REFERENCE, *MODELS]:
            rows = [r for r in res["sizes"] if r["model"] == label and r["rel_error"] is not None]
            style = {"color": "k", "ls": "--"} if label == REFERENCE else {"marker": "o"}
            line, = ax.loglog([r["particles"] for r in rows], [r["rel_error"] for r in rows],
                              label=label, **style)
            lost = [r["particles"] for r in res["sizes"]
                    if r["model"] == label and r["rel_error"] is None]
            if lost:  # diverged rollouts: drawn at the top, error 1
                ax.plot(lost, [1.0] * len(lost), "x", ms=10, color=line.get_color(),
                        label=f"{label} diverged")
        sizes = sorted({r["particles"] for r in res["sizes"]})
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.set(xlabel="particles (trained on 4-8)", ylabel="mean relative error",
               title=f"{name}: zero-shot to larger systems (RK4)")
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def _failures(rows: list[dict[str, Any]], dt: float) -> list[str]:
    """Markdown lines on the rollouts whose implicit stages did not converge."""
    failed = [r for r in rows if r.get("failed")]
    if not failed:
        return []
    lines = ["'no convergence': the fixed-point iteration of the implicit method's stages "
             f"did not converge at dt = {dt:g} (it contracts only while dt times the "
             "field's Lipschitz constant times the method's coefficients is below 1; "
             "the rollout is then retried at a smaller step, reported here and not judged "
             "as the method at dt):", ""]
    for r in failed:
        rk4 = next((x["rel_error"] for x in rows
                    if x["model"] == r["model"] and x["integrator"] == "rk4"), None)
        retry = r.get("retry") or {}
        if retry.get("failed") or not retry:
            again = (f"with {retry['substeps']} substeps per step it fails too"
                     if retry else "not retried")
        else:
            ratio = ("" if rk4 is None or retry["rel_error"] is None
                     else f", {retry['rel_error'] / rk4:.3g}x RK4's at dt")
            again = (f"with {retry['substeps']} substeps per step (dt = "
                     f"{dt / retry['substeps']:g}) it converges: rel_error "
                     f"{_fmt(retry['rel_error'])}{ratio}, energy_drift "
                     f"{_fmt(retry['energy_drift'])}")
        lines.append(f"- {r['model']}, {r['integrator']}: {r['failed']}. Retried: {again}.")
    return [*lines, ""]


def _by_model(rows: list[dict[str, Any]], key: str, columns: list[str]
              ) -> list[dict[str, Any]]:
    """One row per model of ``key`` per integrator: ``INVALID`` where the pair was not
    run (not valid), 'no convergence' where an implicit method's stages failed."""
    table: dict[str, dict[str, Any]] = {}
    for r in rows:
        row = table.setdefault(r["model"], {"model": r["model"], **dict.fromkeys(columns,
                                                                                INVALID)})
        row[r["integrator"]] = "no convergence" if r.get("failed") else r[key]
    return list(table.values())


def _missing(row: dict[str, Any]) -> str:
    """How a missing number reads: DeltaGN has no integrator or other dt; any other model's
    missing number is a rollout that left the finite numbers."""
    return "n/a" if row.get("model") in ("deltagn", None) else "diverged"


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_missing(r) if r.get(c) is None else format_value(r.get(c))
                              for c in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def command(result: dict[str, Any]) -> str:
    """The command line that produced ``result`` (output folder and threads aside)."""
    cfg = result["config"]
    parts = ["python experiments/hogn_paper.py", *(["--quick"] if cfg["quick"] else []),
             f"--seed {cfg['seed']}"]
    if list(result["systems"]) != list(SYSTEMS):
        parts.append("--systems " + " ".join(result["systems"]))
    return " ".join(parts)


def markdown(result: dict[str, Any], png_prefix: str = "results/hogn_paper") -> str:
    """The results fragment, every number read from ``result`` (the JSON)."""
    cfg = result["config"]
    lines = ["## Experiment 2: HOGN paper comparisons (Sanchez-Gonzalez et al. 2019)", ""]
    lines += [
        f"Models trained on {cfg['train_trajectories']} trajectories x {cfg['train_steps']} "
        f"steps of {cfg['train_particles'][0]}-{cfg['train_particles'][1]}-particle systems, "
        f"one-step RK4 rollout target (DeltaGN: the same target at its own dt), hidden "
        f"{cfg['hidden']}, {cfg['epochs']} epochs x {cfg['samples']} samples, batch "
        f"{cfg['batch_size']}, Adam lr {cfg['lr']} cosine, seed {cfg['seed']}"
        f"{' (QUICK MODE: tiny sizes, numbers meaningless)' if cfg['quick'] else ''}. "
        f"Tests: {cfg['test_trajectories']} held-out trajectories of the training sizes, "
        f"{cfg['horizon']} steps. rel_error@h: geometric mean over trajectories of the mean "
        "over steps 1..h of ||x̂−x||/(||x̂||+||x||) (0 perfect, 1 unrelated); energy_drift: "
        "geometric mean over trajectories of max_t |H(x̂_t)−H₀|/|H₀| under the true H. "
        f"`{REFERENCE}` is the true vector field through the same integrator: the error the "
        f"integrator alone makes at that step. `{command(result)}` took "
        f"{result['seconds']:.0f} s ({result['threads']} thread(s)){_loaded(result)}.", ""]
    for name, res in result["systems"].items():
        lines += [f"### {name} (dt = {res['dt']:g})", ""]
        truth_rows = [{"set": k, **v} for k, v in res["truth"].items()]
        lines += ["Ground truth:", "", _table(truth_rows, [
            "set", "trajectories", "particles", "steps", "dt", "method", "substeps", "rtol",
            "max_rel_energy_drift", "seconds"]), ""]
        train_rows = [{"model": m, **{k: v for k, v in t.items() if k != "history"}}
                      for m, t in res["training"].items()]
        lines += ["Training:", "", _table(train_rows, [
            "model", "parameters", "seconds", "final_train_loss", "best_val_loss",
            "best_epoch"]), ""]
        hcols = [f"rel_error@{h}" for h in cfg["horizons"]]
        lines += [f"(a) RK4 rollouts, held-out {cfg['train_particles'][0]}-"
                  f"{cfg['train_particles'][1]} particles "
                  f"(energy_drift over {cfg['horizon']} steps):", "",
                  _table(res["rollout"], ["model", *hcols, "energy_drift"]), "",
                  f"![{name} rollouts]({png_prefix}_{name}.png)", ""]
        ih = cfg["integrator_horizon"]
        columns = [i for i in INTEGRATORS if any(r["integrator"] == i
                                                 for r in res["integrators"])]
        separable = res.get("separable", {})
        sep_labels = [m for m, v in separable.items() if v]
        lines += [f"(b) zero-shot integrator change (trained with RK4): rel_error@{ih}. "
                  f"The `{REFERENCE}` row is the integrator's own error; where a model's "
                  "error is far above it, the model's error hides the integrator's. "
                  "implicit_midpoint, gauss4 and gauss6 (Gauss–Legendre, orders 2, 4, 6) "
                  "are symplectic for any H, their stages solved by fixed-point "
                  "iteration; leapfrog and yoshida4 are splitting methods, symplectic and "
                  "of their order only for a separable H = T(p) + V(q), so they are run "
                  f"only where H is separable ({', '.join(sep_labels) or 'none'}); "
                  f"'{INVALID}': not valid for that model (its H is not separable). "
                  "DeltaGN, a stepper, takes no integrator.", "",
                  _table(_by_model(res["integrators"], "rel_error", columns),
                         ["model", *columns]), ""]
        lines += [f"energy_drift over {ih} steps per integrator:", "",
                  _table(_by_model(res["integrators"], "energy_drift", columns),
                         ["model", *columns]), ""]
        lines += _failures(res["integrators"], res["dt"])
        dt_rows = [{**r, "dt_factor": f"x{r['dt_factor']:g}"} for r in res["dt_change"]]
        lines += [f"(b) zero-shot dt change (RK4), over the same time span "
                  f"({ih * res['dt']:g}): mean and final rel_error", "",
                  _table(dt_rows, ["model", "dt_factor", "dt", "steps", "rel_error",
                                   "final_rel_error", "energy_drift"]), ""]
        lines += ["(c) zero-shot to larger systems (RK4; DeltaGN its own step). The "
                  "horizon and trajectory count shrink with the size (the cost of "
                  "256-particle rollouts), so compare models within a size, not sizes; "
                  "'diverged': a rollout left the finite numbers in at least one trajectory "
                  "(counted as the worst in the claims below).", "",
                  _table(res["sizes"], ["model", "particles", "trajectories", "steps",
                                        "rel_error", "final_rel_error", "energy_drift",
                                        "seconds"]), ""]
    lines += [f"![zero-shot sizes]({png_prefix}_sizes.png)", ""]
    lines += ["### The paper's qualitative claims beside ours", "",
              "The seeds hold no numbers of the HOGN paper (the survey summarises it: "
              "'the Hamiltonian inductive bias effectively improves the accuracy and "
              "generalization ability of graph neural networks'), so only the direction "
              "of each claim is compared.", "",
              "| claim | " + " | ".join(result["systems"]) + " |",
              "|---|" + "---|" * len(result["systems"])]
    for c in result["claims"].values():
        cells = []
        for name in result["systems"]:
            s = c["systems"][name]
            cells.append(("agrees" if s["holds"] else "does not agree") + ": "
                         + _evidence(s["evidence"]))
        lines.append(f"| {c['claim']} | " + " | ".join(cells) + " |")
    lines += ["", "'agrees' says only which model is ahead; the tables above say how far each "
              "is from the truth (and from the `true-H` row)."]
    if any(r.get("failed") for res in result["systems"].values() for r in res["integrators"]):
        lines += ["", "A method whose stages did not converge ('no convergence') counts "
                  "against the integrator claim: it could not be run at that dt (see the "
                  "notes under (b) for the same rollout at a smaller step)."]
    lines.append("")
    return "\n".join(lines)


def _loaded(result: dict[str, Any]) -> str:
    """How much of the training the run's time leaves out (models loaded from --runs)."""
    trained = [t for res in result["systems"].values() for t in res["training"].values()]
    loaded = [t for t in trained if t.get("loaded")]
    if not loaded:
        return ""
    return (f", with {len(loaded)} of the {len(trained)} trained models loaded from an "
            f"earlier run's `--runs` folder (their training there, "
            f"{sum(t['seconds'] for t in loaded):.0f} s, is not in that time)")


def render(out: Path) -> dict[str, Any]:
    """Plots and markdown fragment from ``out/hogn_paper.json``; returns the record."""
    record = json.loads((out / f"{NAME}.json").read_text())
    claims = check_claims(record["systems"], record["config"])
    if claims != record.get("claims"):  # judged from the JSON's own numbers
        record["claims"] = claims
        write_json(out / f"{NAME}.json", record)
    for name, res in record["systems"].items():
        plot_curves(name, res, out / f"{NAME}_{name}.png")
    plot_sizes(record["systems"], out / f"{NAME}_sizes.png")
    text = markdown(record)
    atomic_write(out / f"{NAME}.md", lambda fh: fh.write(text.encode()))
    return record


def _evidence(ev: dict[str, Any]) -> str:
    parts = []
    for k, v in ev.items():
        if isinstance(v, dict):
            parts.append(f"{k}: " + ", ".join(f"{m} {_fmt(x)}" for m, x in v.items()))
        else:
            parts.append(f"{k} {_fmt(v)}")
    return "; ".join(parts)


def _fmt(x: Any) -> str:
    if isinstance(x, str):
        return x
    return "diverged" if x is None else format_value(float(x))


def main(argv: list[str] | None = None) -> int:
    parser = experiment_parser(__doc__, "tiny sizes (a smoke test)", "only redraw the plots "
                               "and rewrite the markdown from the JSON already in --out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--runs", default=None, help="folder keeping the trained models "
                        "(<system>/<model>.pt and .json): they are loaded instead of trained "
                        "when their record matches the configuration, so a rerun or an "
                        "interrupted run resumes (default: none, train every time)")
    args, out = begin(parser, argv)
    if args.render:
        render(out)
        return 0
    cfg = dict(QUICK if args.quick else FULL)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", flush=True)

    runs = None if args.runs is None else Path(args.runs) / ("quick" if args.quick else "full")
    results = {name: run_system(name, cfg, args.seed, log, runs) for name in args.systems}
    claims = check_claims(results, cfg)
    record = {
        "experiment": "hogn_paper", "quick": args.quick,
        "config": {**{k: v for k, v in cfg.items() if k != "sizes"},
                   "sizes": {str(n): dict(zip(("trajectories", "steps", "method", "substeps",
                                                "rtol"), s, strict=True))
                             for n, s in cfg["sizes"].items()},
                   "seed": args.seed, "quick": args.quick, "models": list(MODELS),
                   "integrators": list(INTEGRATORS)},
        "threads": args.threads, "seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__, "systems": results, "claims": claims}
    json_path = write_json(out / f"{NAME}.json", record)
    record = render(out)  # the fragment and plots read only what was written
    log(f"wrote {json_path}, {out / NAME}.md and plots")
    for c in record["claims"].values():
        log(f"{c['claim']}: " + ", ".join(
            f"{n} {'agrees' if s['holds'] else 'does NOT agree'}"
            for n, s in c["systems"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
