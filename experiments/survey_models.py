"""The survey's model families beside HNN and MLP, each on its natural system.

The survey "Learning Neural Hamiltonian Dynamics: A Methodological Overview" (Chen,
Feng, Yan, Zha; its Table 1 and sections 3.2–3.5) names the families a user of a neural-Hamiltonian
framework asks for: dissipative (DHNN), the generalized form ``(P + Q)∇H`` (GHNN),
symplectic recurrent training (SRNN), constrained (CHNN), control input (SymODEN) and
pixels. Each family is one entry of
:data:`FAMILIES`: its registered model, its natural system(s) with their generation
options, the baselines ``hnn`` and ``mlp`` trained on the same data, the training
options of each model and, at most, one extra metric function. A family whose model
(or system) is not registered yet is skipped with a printed note, so the script picks
the others up as they land.

Metrics, per family, system, model and seed, all on the same footing:

- ``deriv_mse``: MSE of ``(dq, dp)`` against the true field at the test trajectories'
  clean states (``nan`` for a stepper, which has no derivative);
- ``rollout_mse``: state MSE of the rollout from each test trajectory's clean first
  state over the whole test trajectory, every model with the same integrator (RK4,
  ``substeps`` steps per saved step), mean over steps and trajectories;
- ``energy_error``: the largest relative error ``max_t |H(x̂_t) − H(x_t)| / |H(x_0)|``
  of the true energy along the model's rollout against the true energy curve,
  geometric mean over test trajectories. On a conservative system the true curve is
  flat, so this is the drift of the true H; on a damped or forced one it is the error
  of the energy's decay (or growth);
- ``target_test_loss``: :attr:`hogn.train.TrainResult.test_loss`, the test loss with
  each model's own training target (derivative or rollout MSE);
- a baseline in other coordinates (:class:`Recoordinated`, e.g. ``hnn-angles``: an
  ``hnn`` on the chain's link angles) is trained and rolled out in its own
  coordinates and mapped back before it is scored, so its rollout, energy and family
  metrics are in the family's coordinates like the others'; its ``deriv_mse`` is
  ``nan`` (its derivatives are in other units: its ``target_test_loss`` is its
  derivative MSE in those);
- family metrics: ``gamma_hat`` (the friction ``γ`` recovered from a learned
  dissipation ``D``: slope of ``∂D/∂p`` against ``−p``, see :func:`gamma_hat`),
  ``constraint_error`` (largest deviation of the link lengths along the rollout),
  ``latent_energy_drift`` (a pixel model's latent energy), ``learned_h_increase`` (how
  often a model's own learned ``H`` rises along its rollout, see
  :func:`learned_energy_increase`).

The results markdown lists the survey's claims (:data:`CLAIMS`) and judges each from
the measured numbers with one stated rule (:func:`judge`: "A lower than B" is
supported when A is at least :data:`MARGIN` times lower in every seed, contradicted
when it is that much higher in every seed; "near a target" within a stated
tolerance); a claim of a family that is not available is listed as not measured.

Adding a family is one entry of :data:`FAMILIES` (plus, at most, a metric function
and its claims in :data:`CLAIMS`)::

    Family(name="my family", model="my-model", section="3.x",
           systems=(SystemSpec("my-system", "my-system", {"param": 1.0},
                               {"trajectories": 25, "steps": 50, "dt": 0.1},
                               {"trajectories": 10, "steps": 20}),),   # --quick
           options={"my-model": {...}, "hnn": {"hidden": 64}, "mlp": {"hidden": 64}},
           train={"my-model": {"target": "rollout", "integrator": "leapfrog",
                               "rollout_steps": 5}},    # over DERIVATIVE's defaults
           metric=None,    # or f(model, system, test, evaluation) -> {name: value}
           recoordinated={})  # {"hnn-angles": Recoordinated("hnn", convert, back, note)}

Usage::

    python experiments/survey_models.py                   # full: 3 seeds
    python experiments/survey_models.py --quick --out /tmp/sm   # < 1 min, 1 seed
    python experiments/survey_models.py --render          # redraw .md/.png from .json

Writes ``<out>/survey_models.json``, ``.png`` and ``.md`` (every number of the
markdown comes from the JSON, see :func:`markdown`). A full run saves each finished
(family, system, model, seed) in ``<out>/survey_models_parts/`` and takes it from
there when run again with the same settings, so a stopped run goes on where it was.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _shared import begin, experiment_parser, mean_std, write_text
from hnn_paper import all_states, derivative_mse

import hogn
import systems
from hogn import models
from hogn.evaluation import Evaluation, evaluate
from hogn.metrics import geometric_mean, relative_error, state_mse
from hogn.models.dissipative import DissipativeModel
from hogn.report import format_table, write_json
from systems.chain import angle_dataset, from_angles

NAME = "survey_models"
BASELINES = ("hnn", "mlp")
METRICS = ("deriv_mse", "rollout_mse", "energy_error", "target_test_loss")
#: metrics of the family metric functions in pieces saved before a piece listed them
#: (``family_metrics``); new metric functions need no entry here
EXTRA = ("gamma_hat", "constraint_error", "latent_energy_drift")
#: derivative training, full batch (the 1-D and small systems fit one batch)
DERIVATIVE = {"target": "derivative", "steps": 500, "batch_size": 10**9, "lr": 1e-2,
              "schedule": "cosine", "val_fraction": 0.0}
QUICK_STEPS = 30
#: a claim "A lower than B" needs B ≥ MARGIN · A in every seed (see :func:`judge`)
MARGIN = 1.1

MetricFn = Callable[[models.DynamicsModel, "systems.System | None", systems.Dataset,
                     Evaluation], dict[str, float]]


# ----------------------------------------------------------------- family metrics
def finite_geometric_mean(x: torch.Tensor) -> float:
    """Geometric mean of per-trajectory errors ``x [G]`` (:func:`hogn.metrics.geometric_mean`,
    floored at its ``eps``), a diverged (non-finite) trajectory counted as ``inf``."""
    x = torch.where(torch.isfinite(x), x, torch.full_like(x, float("inf")))
    return geometric_mean(x).item()


def gamma_hat(model: models.DynamicsModel, system: systems.System, test: systems.Dataset,
              ev: Evaluation) -> dict[str, float]:
    """The friction ``γ`` recovered from a learned dissipation ``D(p)``.

    :meth:`hogn.models.dissipative.DissipativeModel.linear_friction`: the least-squares
    slope of ``∂D/∂p ≈ −γ p + a`` (with an intercept ``a``: the gauge of ``D``) over
    200 fresh states from the system's own initial-state sampler. Only for the
    dissipative family; ``{}`` for the others.
    """
    if not isinstance(model, DissipativeModel):
        return {}
    gamma, _ = model.linear_friction(system.sample(200, seed=5).to(dtype=model.param_dtype))
    return {"gamma_hat": gamma}


def constraint_error(model: models.DynamicsModel, system: systems.System,
                     test: systems.Dataset, ev: Evaluation) -> dict[str, float]:
    """Largest deviation of the chain's link lengths along the rollout.

    Particles are ordered from the pivot (the origin) outwards; link ``i`` joins
    particle ``i − 1`` (the pivot for ``i = 0``) to particle ``i``. The true lengths are
    read from the true first states (the truth keeps them), so nothing depends on how
    the system encodes them. Geometric mean over test trajectories of
    ``max_{t, i} | |x̂_i − x̂_{i−1}| − l_i |``.
    """
    n = int(test.graph.ptr[1] - test.graph.ptr[0])
    g = test.num_graphs

    def lengths(q: torch.Tensor) -> torch.Tensor:  # [T, G*n, d] -> [T, G, n]
        x = q.reshape(q.shape[0], g, n, -1)
        prev = torch.cat([torch.zeros_like(x[:, :, :1]), x[:, :, :-1]], 2)
        return (x - prev).norm(dim=-1)

    true = lengths(test.q[:1].double())
    dev = (lengths(ev.q.double()) - true).abs().amax(dim=(0, 2))  # [G]
    return {"constraint_error": finite_geometric_mean(dev)}


def latent_energy_drift(model: models.DynamicsModel, system: systems.System | None,
                        test: systems.Dataset, ev: Evaluation) -> dict[str, float]:
    """Drift of a pixel model's learned latent energy along its own latent rollout.

    The paper's rollout (``latent_rollout``: encode the first observation once,
    integrate the latent H over the test trajectory's length);
    ``max_t |E(z_t) − E(z_0)|`` divided by the spread (max − min) of ``E(z_0)`` over
    the test trajectories (the latent energy has no natural zero), geometric mean over
    trajectories. Only for models with ``latent_rollout`` and ``latent_energy``.
    """
    if not (hasattr(model, "latent_rollout") and hasattr(model, "latent_energy")):
        return {}
    start = test.state(0).to(model.param_device, model.param_dtype)
    with torch.no_grad():
        z = model.latent_rollout(start, test.t.numel() - 1)  # [T + 1, G, 2]
        energy = model.latent_energy(z).double()  # [T + 1, G]
    spread = (energy[0].max() - energy[0].min()).clamp_min(1e-12)
    drift = (energy - energy[:1]).abs().amax(0) / spread
    return {"latent_energy_drift": finite_geometric_mean(drift)}


def learned_energy_increase(model: models.DynamicsModel, system: systems.System | None,
                            test: systems.Dataset, ev: Evaluation) -> dict[str, float]:
    """How often a model's own learned ``H`` increases along its own rollout.

    A generalized Hamiltonian field ``(P + Q) ∇H`` (``P`` skew, ``Q`` negative
    semi-definite) never increases its ``H``: ``dH/dt = ∇Hᵀ Q ∇H ≤ 0``. Measured as
    the fraction of saved rollout steps ``t → t + 1`` (over all test trajectories)
    where ``H(x̂_{t+1}) − H(x̂_t)`` exceeds ``1e-4`` of that trajectory's spread
    ``max_t H − min_t H`` (float32 rounding of a conserved ``H`` is not an increase).
    Only for models with a learned ``hamiltonian`` that are not steppers (``ghnn``,
    ``hnn``); ``{}`` for the others.
    """
    if model.is_stepper or not hasattr(model, "hamiltonian"):
        return {}
    graph = test.graph.to(device=model.param_device, dtype=model.param_dtype)
    q, p = ev.q.to(graph.q), ev.p.to(graph.q)
    with torch.no_grad():
        h = torch.stack([model.hamiltonian(graph.replace(q=q[t], p=p[t])).double()
                         for t in range(q.shape[0])])  # [T + 1, G]
    spread = (h.amax(0) - h.amin(0)).clamp_min(1e-30)
    rises = h.diff(dim=0) > 1e-4 * spread
    return {"learned_h_increase": float(rises.double().mean())}


def observed_derivatives(name: str, seed: int, **options: Any) -> systems.Dataset:
    """Noisy data whose training targets are estimated from the noisy observations.

    ``systems.generate(name, noise=...)`` gives exact derivatives at the clean states
    as the targets of a derivative-trained model, however noisy its inputs. Measured
    data have no such targets: here the training trajectories' ``dq, dp`` are the
    second-order central differences in time (``numpy.gradient``) of the noisy
    observations ``q_obs, p_obs``, as a user's trajectories without derivatives get
    them. The test trajectories keep their exact derivatives, for scoring.
    """
    data = systems.generate(name, seed=seed, **options)
    if data.q_obs is None or data.p_obs is None:
        raise ValueError(f"observed_derivatives needs noisy observations: pass noise > 0 "
                         f"in the options, got {options.get('noise', 0)!r}")
    train = ~data.test[data.graph.batch][None, :, None]  # [1, N, 1] nodes of training graphs
    fd_q, fd_p = (torch.from_numpy(np.gradient(x.numpy(), data.dt, axis=0, edge_order=2))
                  for x in (data.q_obs, data.p_obs))
    return dataclasses.replace(
        data, dq=torch.where(train, fd_q, data.dq), dp=torch.where(train, fd_p, data.dp),
        meta={**data.meta, "derivatives": "estimated: central differences of the noisy "
              "observations (training trajectories; test trajectories exact)"})


# ------------------------------------------------------------------ the table
@dataclass(frozen=True)
class SystemSpec:
    """A natural system of a family and how its data are generated.

    Attributes:
        name: ``systems`` registry name.
        label: Row label in the tables (unique in the whole table).
        params: System parameters (``systems.get(name, **params)``).
        generate: ``systems.generate`` options of the full run (``trajectories``,
            ``steps``, ``dt``, ``noise``, ``n_particles``, ...).
        quick: Overrides of ``generate`` in ``--quick``.
        substeps: RK4 steps per saved step in the evaluation rollouts.
        make: A function building the dataset instead of ``systems.generate(name,
            ...)``, called as ``make(seed=..., **generate)``, or its
            ``"module:function"`` name (for a module that may not exist yet); ``""``:
            none. The true energy is scored where ``name`` is a registered system.
    """

    name: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    generate: dict[str, Any] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=dict)
    substeps: int = 2
    make: str | Callable[..., systems.Dataset] = ""

    def builder(self) -> Callable[..., systems.Dataset] | None:
        """The ``make`` function, or ``None`` when its module or name does not exist."""
        if callable(self.make):
            return self.make
        module, _, name = self.make.partition(":")
        try:
            return getattr(importlib.import_module(module), name, None)
        except ImportError:
            return None


@dataclass(frozen=True)
class Recoordinated:
    """A baseline that learns the same trajectories in other coordinates.

    It is trained on ``convert(data)`` (same trajectories, times and test split), rolled
    out with RK4 in those coordinates from the converted test starts, and its rollout
    is mapped back with ``back`` before it is scored, so every metric but the
    derivative MSE is in the family's coordinates.

    Attributes:
        model: Registered model name (``hogn.models.names()``).
        convert: The data in the other coordinates, ``convert(data) -> Dataset``.
        back: ``back(q, p, test) -> (q, p)``: a rollout ``[T, N', d']`` in the other
            coordinates to the family's ``[T, N, d]``, given the family's test data.
        note: What the coordinates are (printed with the setup).
    """

    model: str
    convert: Callable[[systems.Dataset], systems.Dataset]
    back: Callable[[torch.Tensor, torch.Tensor, systems.Dataset],
                   tuple[torch.Tensor, torch.Tensor]]
    note: str = ""


def _angles_back(q: torch.Tensor, p: torch.Tensor, test: systems.Dataset
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """An angle rollout ``θ, p_θ [T, G n, 1]`` to Cartesian ``q, p [T, G n, 2]``
    (:func:`systems.chain.from_angles`, masses and lengths from the chain's graph)."""
    steps, graphs = q.shape[0], test.num_graphs
    return from_angles(q.reshape(steps, graphs, -1), p.reshape(steps, graphs, -1),
                       test.state(0))


#: the angle-coordinate HNN beside CHNN (Finzi et al. 2020 compare with it)
HNN_ANGLES = Recoordinated(
    "hnn", angle_dataset, _angles_back,
    "an `hnn` on the same trajectories in link angles from the vertical and their "
    "canonical momenta (`systems.chain.angle_dataset`, one node per link, d = 1, exact "
    "derivatives), rolled out with RK4 in angles and mapped back with "
    "`systems.chain.from_angles`")


@dataclass(frozen=True)
class Family:
    """One row group of the comparison: a model family beside the baselines.

    Attributes:
        name: Family name (table label).
        model: Registered model name of the family (``hogn.models.names()``).
        section: Where the survey describes it.
        systems: Its natural systems.
        options: Constructor options per model name (the family's and the baselines').
        train: ``hogn.train`` options per model name (default :data:`DERIVATIVE`);
            ``steps`` is replaced by :data:`QUICK_STEPS` in ``--quick``.
        baselines: Models trained on the same data beside the family's.
        metric: Extra metrics of the family, ``(model, system, test, evaluation) ->
            {name: value}`` (e.g. :func:`gamma_hat`), or ``None``.
        recoordinated: Baselines in other coordinates, by their row name (e.g.
            ``{"hnn-angles": HNN_ANGLES}``); their options and training options are
            looked up under that name too.
    """

    name: str
    model: str
    section: str
    systems: tuple[SystemSpec, ...]
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    train: dict[str, dict[str, Any]] = field(default_factory=dict)
    baselines: tuple[str, ...] = BASELINES
    metric: MetricFn | None = None
    recoordinated: dict[str, Recoordinated] = field(default_factory=dict)

    @property
    def model_names(self) -> tuple[str, ...]:
        """The family's model first, then the baselines (those in other coordinates
        last)."""
        return (self.model, *self.baselines, *self.recoordinated)

    def registered(self, name: str) -> str:
        """The registered model behind a row name."""
        other = self.recoordinated.get(name)
        return other.model if other is not None else name

    def train_options(self, model: str, quick: bool) -> dict[str, Any]:
        """``hogn.train`` options of a row: :data:`DERIVATIVE` with the family's
        ``train`` entry for it on top, ``steps`` :data:`QUICK_STEPS` in ``--quick``."""
        options = {**DERIVATIVE, **self.train.get(model, {})}
        if quick:
            options["steps"] = QUICK_STEPS
        return options

    def missing(self) -> str | None:
        """Why the family cannot run yet (a model or system not registered), or ``None``."""
        for name in self.model_names:
            if self.registered(name) not in models.names():
                return f"model {self.registered(name)!r} is not registered yet"
        for spec in self.systems:
            if spec.make and spec.builder() is None:
                return f"{spec.make} does not exist yet"
            if not spec.make and spec.name not in systems.names():
                return f"system {spec.name!r} is not registered yet"
        return None


_ONE_D = {"trajectories": 25, "steps": 50, "dt": 0.1}  # 20 train / 5 test, 5 time units
_ONE_D_QUICK = {"trajectories": 10, "steps": 20}
_MLP = {"hidden": 64}

FAMILIES: tuple[Family, ...] = (
    Family(
        name="dissipative", model="dhnn", section="3.2, Table 1 (Generalized)",
        systems=(SystemSpec("damped-pendulum", "damped-pendulum", {"gamma": 0.1}, _ONE_D,
                            _ONE_D_QUICK),
                 SystemSpec("damped-mass-spring", "damped-mass-spring", {"gamma": 0.1}, _ONE_D,
                            _ONE_D_QUICK),
                 SystemSpec("mass-spring", "mass-spring (conservative)", {}, _ONE_D,
                            _ONE_D_QUICK)),
        options={"dhnn": {**_MLP, "dissipation_inputs": "momenta"}, "hnn": _MLP, "mlp": _MLP},
        metric=gamma_hat),
    Family(
        name="generalized (GHNN)", model="ghnn", section="3.2 (generalized Hamiltonian form)",
        systems=(SystemSpec("damped-pendulum", "damped-pendulum", {"gamma": 0.1}, _ONE_D,
                            _ONE_D_QUICK),
                 SystemSpec("damped-mass-spring", "damped-mass-spring", {"gamma": 0.1}, _ONE_D,
                            _ONE_D_QUICK)),
        options={"ghnn": _MLP, "hnn": _MLP, "mlp": _MLP},
        metric=learned_energy_increase),
    Family(
        name="symplectic recurrent", model="srnn", section="3.3, Table 1 (Quadrature, Leapfrog)",
        systems=(SystemSpec("henon-heiles", "henon-heiles (noisy)", {},
                            {"trajectories": 25, "steps": 50, "dt": 0.1, "noise": 0.05},
                            {"trajectories": 6, "steps": 10}),
                 SystemSpec("three-body", "three-body (noisy)", {},
                            {"trajectories": 25, "steps": 50, "dt": 0.05, "noise": 0.05},
                            {"trajectories": 6, "steps": 10}, substeps=4),
                 SystemSpec("henon-heiles", "henon-heiles (noisy, estimated derivatives)", {},
                            {"trajectories": 25, "steps": 50, "dt": 0.1, "noise": 0.05},
                            {"trajectories": 6, "steps": 10},
                            make=functools.partial(observed_derivatives, "henon-heiles")),
                 SystemSpec("three-body", "three-body (noisy, estimated derivatives)", {},
                            {"trajectories": 25, "steps": 50, "dt": 0.05, "noise": 0.05},
                            {"trajectories": 6, "steps": 10}, substeps=4,
                            make=functools.partial(observed_derivatives, "three-body"))),
        options={"srnn": _MLP, "hnn": _MLP, "mlp": _MLP},
        train={"srnn": {"target": "rollout", "integrator": "leapfrog", "rollout_steps": 5,
                        "refine_initial": True, "steps": 300, "batch_size": 256,
                        "lr": 3e-3}}),
    Family(
        name="constrained", model="chnn", section="3.5 (Constraints)",
        systems=(SystemSpec("pendulum-chain", "pendulum-chain (2 links)", {},
                            {**_ONE_D, "n_particles": 2, "steps": 50},
                            _ONE_D_QUICK),),
        options={"hnn": _MLP, "mlp": _MLP, "hnn-angles": _MLP},
        metric=constraint_error, recoordinated={"hnn-angles": HNN_ANGLES}),
    Family(
        name="control", model="symoden", section="3.4–3.5 (Angle input, Control)",
        systems=(SystemSpec("forced-pendulum", "forced-pendulum", {}, _ONE_D, _ONE_D_QUICK),),
        options={"hnn": _MLP, "mlp": _MLP}),
    Family(
        name="pixels", model="pixel-hnn", section="3.1, 3.4 (Pixel input)",
        systems=(SystemSpec("pixel-pendulum", "pixel-pendulum (14×14)", {},
                            {"trajectories": 25, "steps": 30, "dt": 0.15, "size": 14},
                            {"trajectories": 10, "steps": 10}, substeps=1,
                            make="systems.pixels:generate"),),
        options={"pixel-hnn": {"hidden": 100}, "hnn": _MLP, "mlp": _MLP},
        train={"pixel-hnn": {"target": "rollout", "rollout_steps": 1, "lr": 1e-3}},
        metric=latent_energy_drift),
)


# ------------------------------------------------------------------ the claims
@dataclass(frozen=True)
class Claim:
    """One qualitative claim of the survey and the comparison that judges it.

    ``kind="lower"``: model ``a``'s ``metric`` is lower than model ``b``'s on
    ``system``; ``kind="near"``: model ``a``'s ``metric`` is within ``tolerance`` of
    ``target`` (absolute).
    """

    text: str
    family: str
    system: str
    metric: str
    a: str
    b: str = ""
    kind: str = "lower"
    target: float = 0.0
    tolerance: float = 0.0


CLAIMS: tuple[Claim, ...] = (
    *(Claim("§3.1, Fig. 1: an HNN conserves energy where the baseline NN drifts (spirals)",
            "dissipative", "mass-spring (conservative)", "energy_error", "hnn", "mlp"),
      Claim("§3.1: an HNN generalises better than the baseline NN (conservative system)",
            "dissipative", "mass-spring (conservative)", "rollout_mse", "hnn", "mlp")),
    *(c for label in ("damped-pendulum", "damped-mass-spring") for c in (
        Claim("§3.2, Table 1: the Standard (HNN) type suits only conservative systems; the "
              "Generalized DHNN follows the energy loss of a dissipative one",
              "dissipative", label, "energy_error", "dhnn", "hnn"),
        Claim("§3.2: DHNN predicts a dissipative system's motion better than HNN",
              "dissipative", label, "rollout_mse", "dhnn", "hnn"),
        Claim("§3.2: DHNN's D captures the friction (irrotational part of the Helmholtz "
              "split): γ̂ within 10% of γ = 0.1", "dissipative", label, "gamma_hat", "dhnn",
              kind="near", target=0.1, tolerance=0.01))),
    Claim("§3.2, Table 1: the Generalized type suits conservative systems too: DHNN learns "
          "no friction there (γ̂ within 0.01 of 0)", "dissipative", "mass-spring (conservative)",
          "gamma_hat", "dhnn", kind="near", target=0.0, tolerance=0.01),
    *(c for label in ("damped-pendulum", "damped-mass-spring") for c in (
        Claim("§3.2: the generalized form dx = (P + Q)∇H (Q negative semi-definite) "
              "follows a dissipative system's energy loss (GHNN's true-energy error below "
              "HNN's)", "generalized (GHNN)", label, "energy_error", "ghnn", "hnn"),
        Claim("§3.2: in the generalized form the energy never increases (dH/dt = ∇HᵀQ∇H ≤ "
              "0): GHNN's own H rises in at most 1% of its rollout steps",
              "generalized (GHNN)", label, "learned_h_increase", "ghnn", kind="near",
              target=0.0, tolerance=0.01))),
    *(c for label in ("henon-heiles (noisy)", "three-body (noisy)",
                      "henon-heiles (noisy, estimated derivatives)",
                      "three-body (noisy, estimated derivatives)") for c in (
        Claim("§4, §3.3: a vanilla HNN fails on chaotic three-body / Hénon–Heiles data; "
              "symplectic (leapfrog) rollout training improves it", "symplectic recurrent",
              label, "rollout_mse", "srnn", "hnn"),)),
    Claim("§3.5: Cartesian coordinates with explicit constraints simplify learning (CHNN "
          "beats the unconstrained HNN)", "constrained", "pendulum-chain (2 links)",
          "rollout_mse", "chnn", "hnn"),
    *(Claim("§3.5: embedding in Cartesian coordinates with explicit constraints "
            "dramatically simplifies learning compared with generalized (angle) coordinates "
            "(Finzi et al.: CHNN beats the angle-coordinate HNN)", "constrained",
            "pendulum-chain (2 links)", metric, "chnn", "hnn-angles")
      for metric in ("rollout_mse", "energy_error")),
    Claim("§3.5: CHNN keeps the holonomic constraints (link lengths within 1e-6 along "
          "its rollout)", "constrained", "pendulum-chain (2 links)", "constraint_error",
          "chnn", kind="near", target=0.0, tolerance=1e-6),
    Claim("§3.5: SymODEN's control term lets it learn controlled dynamics (beats the HNN, "
          "which has none)", "control", "forced-pendulum", "rollout_mse", "symoden", "hnn"),
    Claim("§3.1: with an autoencoder, an HNN learns from pixels (latent energy conserved)",
          "pixels", "pixel-pendulum (14×14)", "latent_energy_drift", "pixel-hnn", kind="near",
          target=0.0, tolerance=0.01),
)


def judge(claim: Claim, summary: dict[tuple[str, str, str], dict[str, Any]]
          ) -> tuple[str, str]:
    """(evidence, verdict) of ``claim`` from the per-seed values (``per_seed``; the
    seeds share their data, so model ``a`` and ``b`` are compared seed by seed).

    Rule for ``lower``: *supported* when ``a``'s value is at least :data:`MARGIN`
    times lower than ``b``'s in every seed, *contradicted* when it is at least
    :data:`MARGIN` times higher in every seed, else *not resolved* (the seeds
    disagree, or the difference is within the margin). Rule for ``near``: *supported*
    when ``|mean_a − target| ≤ tolerance``, else *not supported*. A claim whose numbers
    are missing is *not measured*.
    """
    row_a = summary.get((claim.family, claim.system, claim.a), {})
    if claim.metric not in row_a:
        return "–", "not measured (family or metric not available)"
    ma, sa = row_a[claim.metric]
    if claim.kind == "near":
        verdict = ("supported" if abs(ma - claim.target) <= claim.tolerance
                   else "not supported")
        return (f"{claim.a.upper()} {claim.metric} = {ma:.3g} ± {sa:.2g} (target "
                f"{claim.target:g} ± {claim.tolerance:g})", verdict)
    row_b = summary.get((claim.family, claim.system, claim.b), {})
    if claim.metric not in row_b:
        return "–", "not measured (baseline or metric not available)"
    mb, sb = row_b[claim.metric]
    a = row_a.get("per_seed", {}).get(claim.metric, [ma])
    b = row_b.get("per_seed", {}).get(claim.metric, [mb])
    lower = sum(x < y for x, y in zip(a, b, strict=True))
    ratio = mb / ma if ma > 0 else math.inf
    evidence = (f"{claim.a.upper()} {ma:.3g} ± {sa:.2g} vs {claim.b.upper()} {mb:.3g} ± "
                f"{sb:.2g}: means {ratio:.3g}× lower" if ratio >= 1 else
                f"{claim.a.upper()} {ma:.3g} ± {sa:.2g} vs {claim.b.upper()} {mb:.3g} ± "
                f"{sb:.2g}: means {1 / ratio:.3g}× higher")
    evidence += f"; lower in {lower} of {len(a)} seed(s)"
    if any(not (math.isfinite(x) or math.isfinite(y)) for x, y in zip(a, b, strict=True)):
        verdict = "not resolved (both diverged)"
    elif all(y >= MARGIN * x for x, y in zip(a, b, strict=True)):
        verdict = "supported"
    elif all(x >= MARGIN * y for x, y in zip(a, b, strict=True)):
        verdict = "contradicted"
    else:
        verdict = "not resolved (seeds disagree or within the margin)"
    return evidence, verdict


# --------------------------------------------------------------- one piece of work
def dataset(spec: SystemSpec, seed: int, quick: bool
            ) -> tuple[systems.System | None, systems.Dataset]:
    """The system (``None`` when ``spec.name`` is not a registered system, for data
    built by ``spec.make``) and its float64 ground-truth dataset for ``seed``."""
    options = {**spec.generate, **(spec.quick if quick else {})}
    system = systems.get(spec.name, **spec.params) if spec.name in systems.names() else None
    if spec.make:
        return system, spec.builder()(seed=seed, **options)
    return system, systems.generate(system, seed=seed, **options)


def energy_error(system: systems.System, test: systems.Dataset, ev: Evaluation
                 ) -> tuple[float, list[float], list[float]]:
    """``max_t |H(x̂_t) − H(x_t)| / |H(x_0)|`` (geometric mean over test trajectories),
    and the first test trajectory's true and predicted energy curves."""
    graph = test.graph
    with torch.no_grad():
        h_true = system.hamiltonian(test.q.double(), test.p.double(), graph)  # [T, G]
        h_pred = system.hamiltonian(ev.q.double(), ev.p.double(), graph)
    err = ((h_pred - h_true).abs() / h_true[:1].abs()).amax(0)
    return finite_geometric_mean(err), h_true[:, 0].tolist(), h_pred[:, 0].tolist()


def run_piece(family: Family, spec: SystemSpec, model_name: str, seed: int, quick: bool
              ) -> dict[str, Any]:
    """Train one model on one system with one seed and measure it."""
    started = time.perf_counter()
    system, data = dataset(spec, seed, quick)
    test = data.heldout
    other = family.recoordinated.get(model_name)
    learned = other.convert(data) if other is not None else data
    torch.manual_seed(seed)
    model = models.for_data(family.registered(model_name), learned,
                            **family.options.get(model_name, {}))
    options = family.train_options(model_name, quick)
    result = hogn.train(model, learned, seed=seed, progress=False, **options)
    model.eval()
    row: dict[str, Any] = {"target_test_loss": result.test_loss, "train_loss": result.best_val,
                           "optimizer_steps": result.steps,
                           "parameters": sum(p.numel() for p in model.parameters())}
    if model.is_stepper or other is not None:  # no derivative, or one in other units
        row["deriv_mse"] = math.nan
    else:
        graph, target = all_states(test, observed=False, dtype=model.param_dtype)
        row["deriv_mse"] = derivative_mse(model, graph, target)
    if other is not None:
        ev = evaluate_back(model, learned.heldout, test, other.back, spec.substeps)
    else:
        ev = evaluate(model, test, integrator=None if model.is_stepper else "rk4",
                      substeps=1 if model.is_stepper else spec.substeps)
    finite = torch.isfinite(ev.state_mse[1:])
    row["rollout_mse"] = (float(ev.state_mse[1:].mean()) if bool(finite.all()) else math.inf)
    if system is not None:
        row["energy_error"], row["energy_true"], row["energy_pred"] = energy_error(
            system, test, ev)
    else:  # no true energy of the observations (pixels)
        row["energy_error"], row["energy_true"], row["energy_pred"] = math.nan, [], []
    if family.metric is not None:
        extra = family.metric(model, system, test, ev)
        row.update(extra)
        row["family_metrics"] = list(extra)
    row["seconds"] = round(time.perf_counter() - started, 2)
    return row


def evaluate_back(model: models.DynamicsModel, converted: systems.Dataset,
                  test: systems.Dataset, back: Callable[..., tuple[torch.Tensor,
                                                                   torch.Tensor]],
                  substeps: int) -> Evaluation:
    """Roll a model of other coordinates out on ``converted`` (RK4, ``substeps`` per
    saved step, from the converted test starts) and map the rollout back to
    ``test``'s coordinates: an :class:`~hogn.evaluation.Evaluation` whose ``q, p``,
    ``state_mse`` and ``relative_error`` are those of the mapped-back rollout against
    ``test`` (``energy_error`` ``None``: the caller scores the true energy)."""
    ev = evaluate(model, converted, integrator="rk4", substeps=substeps)
    q, p = back(ev.q.double(), ev.p.double(), test)
    q, p = q.to(test.q.dtype), p.to(test.q.dtype)
    graph = test.graph
    return dataclasses.replace(
        ev, q=q, p=p, batch=graph.batch, energy_error=None,
        state_mse=state_mse(q, p, test.q, test.p, graph.batch, graph.num_graphs),
        relative_error=relative_error(q, p, test.q, test.p, graph.batch, graph.num_graphs))


def _name(fn: Callable[..., Any]) -> str:
    """A function's name (a ``functools.partial``: its function's)."""
    return getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__",
                                                    repr(fn))


def fingerprint(family: Family, spec: SystemSpec, model_name: str, seed: int, quick: bool
                ) -> dict[str, Any]:
    """What a saved piece must match to be taken again."""
    key = {"quick": quick, "family": family.name, "system": spec.name, "label": spec.label,
           "params": spec.params, "generate": spec.generate, "substeps": spec.substeps,
           "model": model_name, "options": family.options.get(model_name, {}),
           "train": family.train_options(model_name, quick), "seed": seed}
    other = family.recoordinated.get(model_name)
    if other is not None:
        key["recoordinated"] = {"model": other.model, "convert": _name(other.convert),
                                "back": _name(other.back)}
    return key


def run(families: tuple[Family, ...], seeds: list[int], quick: bool, parts: Path | None,
        log: Callable[[str], None]) -> dict[str, Any]:
    """Every available family x system x model x seed; ``parts`` keeps finished pieces."""
    runs: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for family in families:
        why = family.missing()
        if why is not None:
            skipped[family.name] = why
            log(f"skipped family {family.name!r}: {why}")
            continue
        for spec in family.systems:
            for model_name in family.model_names:
                for seed in seeds:
                    key = fingerprint(family, spec, model_name, seed, quick)
                    part = (parts / f"{family.name}__{spec.label}__{model_name}__s{seed}.json"
                            .replace(" ", "_").replace("(", "").replace(")", "")
                            if parts is not None else None)
                    kept = json.loads(part.read_text()) if part and part.is_file() else None
                    if kept is not None and kept.get("key") == key:
                        runs.append(kept)
                        log(f"{family.name} / {spec.label} / {model_name} seed {seed}: kept "
                            f"from {part.name}")
                        continue
                    row = {"key": key, "family": family.name, "system": spec.label,
                           "model": model_name, "seed": seed,
                           **run_piece(family, spec, model_name, seed, quick)}
                    if part is not None:
                        part.parent.mkdir(parents=True, exist_ok=True)
                        write_json(part, row)
                    runs.append(row)
                    log(f"{family.name} / {spec.label} / {model_name} seed {seed}: rollout "
                        f"{row['rollout_mse']:.3g} energy {row['energy_error']:.3g} deriv "
                        f"{row['deriv_mse']:.3g}"
                        + (f" gamma_hat {row['gamma_hat']:.4f}" if "gamma_hat" in row else "")
                        + f" ({row['seconds']:.0f} s)")
    return {"runs": runs, "skipped": skipped, "summary": summarize(runs)}


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std (ddof 1; 0 for one seed) of every metric per family, system, model,
    and the values per seed (``per_seed``, in seed order)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in sorted(runs, key=lambda r: r["seed"]):
        groups.setdefault((r["family"], r["system"], r["model"]), []).append(r)
    out = []
    for (fam, label, model_name), rows in groups.items():
        entry: dict[str, Any] = {"family": fam, "system": label, "model": model_name,
                                 "seeds": len(rows)}
        extra = rows[0].get("family_metrics", [k for k in EXTRA if k in rows[0]])
        keys = [k for k in (*METRICS, *extra) if k in rows[0]]
        entry["family_metrics"] = list(extra)
        for k in keys:
            entry[k] = mean_std(r[k] if r[k] is not None else math.nan for r in rows)
        entry["per_seed"] = {k: [float(r[k]) if r[k] is not None else math.nan
                                 for r in rows] for k in keys}
        out.append(entry)
    return out


# ------------------------------------------------------------------ markdown, plot
def _pm(pair: list[float] | None) -> str:
    if pair is None:
        return "–"
    mean, std = pair
    return "n/a" if math.isnan(mean) else f"{mean:.3g} ± {std:.2g}"


def by_system(summary: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The summary rows grouped by (family, system label), in their order."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in summary:
        groups.setdefault((r["family"], r["system"]), []).append(r)
    return groups


def claim_rows(results: dict[str, Any]) -> list[dict[str, str]]:
    """Every claim of :data:`CLAIMS` with its evidence and verdict."""
    summary = {(r["family"], r["system"], r["model"]): r for r in results["summary"]}
    rows = []
    for claim in CLAIMS:
        evidence, verdict = judge(claim, summary)
        if verdict.startswith("not measured") and claim.family in results["skipped"]:
            verdict = f"not measured: {results['skipped'][claim.family]}"
        elif verdict.startswith("not measured") and not any(
                f == claim.family for f, _, _ in summary):
            verdict = ("not measured: family not in this run" if claim.family in
                       {f.name for f in FAMILIES} else "not measured: no entry for this "
                       "family yet")
        rows.append({"claim": claim.text, "system": claim.system, "metric": claim.metric,
                     "evidence": evidence, "verdict": verdict})
    return rows


def markdown(results: dict[str, Any]) -> str:
    """The markdown fragment, from the JSON dict alone."""
    cfg = results["config"]
    lines = [
        "## The survey's model families beside HNN and MLP",
        "",
        f"Command: `{cfg['command']}` ({cfg['piece_seconds'] / 60:.1f} min of training and "
        f"evaluation in all, the pieces kept from earlier calls included; "
        f"{cfg['threads']} thread(s); seeds {', '.join(map(str, cfg['seeds']))}). Each "
        "family's model and the "
        "baselines HNN and MLP are trained with `hogn.train` on the same float64 ground "
        "truth (`systems.generate`, learning in float32), 80/20 trajectories train/test. "
        "Metrics on the test trajectories: derivative MSE at the clean states; rollout "
        "state MSE of RK4 from the clean first state over the whole test trajectory "
        "(every model the same integrator); energy error "
        "`max_t |H(x̂_t) − H(x_t)| / |H(x_0)|` of the true H along the rollout against "
        "the true energy curve (the drift of H on a conservative system), geometric "
        "mean over trajectories; each model's test loss with its own training target.",
        "",
        "Setups:",
        "",
    ]
    for fam in cfg["families"]:
        state = (f" — **skipped**: {results['skipped'][fam['name']]}"
                 if fam["name"] in results["skipped"] else "")
        lines.append(f"- **{fam['name']}** (`{fam['model']}`; survey {fam['section']}){state}")
        if state:
            continue
        for s in fam["systems"]:
            made = f" by `{s['make']}`" if s.get("make") else ""
            lines.append(f"  - {s['label']}: `{s['name']}` {s['params'] or ''} generated"
                         f"{made} with {s['generate']}, RK4 substeps {s['substeps']}")
        for m in fam["models"]:
            other = fam.get("recoordinated", {}).get(m)
            what = f" — {other['note']}" if other else ""
            lines.append(f"  - `{m}`: options {fam['options'].get(m, {})}, train "
                         f"{fam['train'][m]}{what}")
    lines.append("")
    extra_keys = list(dict.fromkeys(k for r in results["summary"]
                                    for k in r.get("family_metrics", ())))
    header = ["Family", "System", "Model", "deriv MSE", "rollout MSE", "energy error",
              "target test loss", *extra_keys]
    lines += ["Mean ± std over seeds (bold: lowest rollout MSE and energy error of the "
              "system; n/a: a stepper has no derivative, pixel frames no true energy, "
              "the pixel data's derivative targets are finite differences of the frames, "
              "and a model in other coordinates (HNN-ANGLES) has derivatives in other "
              "units: its target test loss is its derivative MSE in those, not comparable):",
              "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (fam, label), rows in by_system(results["summary"]).items():
        best = {k: min(r[k][0] for r in rows) for k in ("rollout_mse", "energy_error")}
        for r in rows:
            cells = [fam, label, r["model"].upper(), _pm(r.get("deriv_mse"))]
            for k in ("rollout_mse", "energy_error"):
                cell = _pm(r[k])
                cells.append(f"**{cell}**" if r[k][0] == best[k] else cell)
            cells.append(_pm(r.get("target_test_loss")))
            cells += [_pm(r.get(k)) for k in extra_keys]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![survey models](results/survey_models.png)", "",
              "The survey's claims, judged from the numbers above. Rule: a claim that model "
              f"A is lower than model B is *supported* when A is at least {MARGIN:g}× lower "
              "than B in every seed (the seeds share their data, so the models are "
              f"compared seed by seed), *contradicted* when A is at least {MARGIN:g}× "
              "higher in every seed, else *not resolved*; a claim that a value is near a "
              "target is *supported* within the stated tolerance.", "",
              "| Claim (survey) | System | Metric | Evidence | Verdict |",
              "|---|---|---|---|---|"]
    for row in claim_rows(results):
        cells = (row[k].replace("|", "\\|") for k in ("claim", "system", "metric",
                                                       "evidence", "verdict"))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if cfg.get("notes"):
        lines += [f"Notes: {cfg['notes']}", ""]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Per system: the true energy and the models' (first test trajectory, first seed),
    and bars of rollout MSE and energy error (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hogn.plot import save_figure

    groups = by_system(results["summary"])
    first = min((r["seed"] for r in results["runs"]), default=0)
    n = max(1, len(groups))
    fig, axes = plt.subplots(n, 3, figsize=(13, 3.0 * n), squeeze=False)
    for row_axes, ((fam, label), rows) in zip(axes, groups.items(), strict=False):
        ax = row_axes[0]
        curves = [r for r in results["runs"] if r["family"] == fam and r["system"] == label
                  and r["seed"] == first]
        ax.set_title(f"{fam}: {label}\ntrue H along the rollout", fontsize=9)
        if curves and curves[0]["energy_true"]:
            ax.plot(curves[0]["energy_true"], "k-", lw=2, label="truth")
            for i, r in enumerate(curves):
                ax.plot(r["energy_pred"], color=f"C{i}", label=r["model"].upper())
            ax.set_xlabel("saved step")
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no true energy of these observations", ha="center",
                    va="center", transform=ax.transAxes)
            ax.set_axis_off()
        for ax, key in zip(row_axes[1:], ("rollout_mse", "energy_error"), strict=True):
            names = [r["model"].upper() for r in rows]
            mean = [r[key][0] for r in rows]
            std = [r[key][1] for r in rows]
            if not any(math.isfinite(m) for m in mean):
                ax.set_axis_off()
                continue
            ax.bar(names, mean, yerr=std, capsize=3, color=[f"C{i}" for i in range(len(rows))])
            if all(m > 0 and math.isfinite(m) for m in mean):
                ax.set_yscale("log")
            ax.set_title(key.replace("_", " "), fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


# ------------------------------------------------------------------------- main
NOTES = (
    "(1) The noisy SRNN rows come in two kinds: `systems.generate` gives exact "
    "derivatives at the clean states as targets even when the inputs are noisy (HNN and "
    "MLP train on those in the '(noisy)' rows), while in the '(noisy, estimated "
    "derivatives)' rows the derivative-trained models get central differences of the "
    "noisy observations, as measured data would give them (the survey's setting); SRNN "
    "trains on the noisy trajectories (leapfrog rollouts, refined starts) in both. "
    "(2) CHNN's baselines HNN and MLP see the same Cartesian chain data; HNN-ANGLES is an "
    "`hnn` trained (same options, same training) on the same trajectories in link angles "
    "and canonical momenta, rolled out in angles and mapped back to Cartesian positions "
    "and momenta, so its rollout MSE and energy error are on the same footing; its "
    "constraint error is 0 by construction up to rounding (angles cannot stretch a "
    "link), and its target test loss is a derivative MSE in (θ, p_θ) units. "
    "(3) On pixel data HNN and MLP learn the frames' finite-difference "
    "derivatives; the pixel model is a stepper (no derivative MSE) rolled out by "
    "re-encoding each step, its latent energy drift measured along its latent rollout. "
    "(4) No dissipative graph system exists yet (the damped systems have one particle), "
    "so dissipative-hogn is not compared with hogn here.")


def _make_name(spec: SystemSpec) -> str:
    """``spec.make`` as text: ``"module:function"``, or the function's name and the
    system it is bound to (``observed_derivatives('three-body')``)."""
    if not callable(spec.make):
        return spec.make
    if isinstance(spec.make, functools.partial):
        return f"{_name(spec.make)}({', '.join(map(repr, spec.make.args))})"
    return _name(spec.make)


def family_config(family: Family, quick: bool) -> dict[str, Any]:
    """The JSON record of a family's setup."""
    return {"name": family.name, "model": family.model, "section": family.section,
            "models": list(family.model_names),
            "systems": [{"name": s.name, "label": s.label, "params": s.params,
                         "generate": {**s.generate, **(s.quick if quick else {})},
                         "substeps": s.substeps, "make": _make_name(s)}
                        for s in family.systems],
            "options": {m: family.options.get(m, {}) for m in family.model_names},
            "train": {m: family.train_options(m, quick) for m in family.model_names},
            "recoordinated": {m: {"model": o.model, "convert": _name(o.convert),
                                  "back": _name(o.back), "note": o.note}
                              for m, o in family.recoordinated.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = experiment_parser(__doc__, "tiny run (< 1 min, 1 seed), for tests",
                               "only redraw the PNG and markdown from <out>/survey_models.json")
    parser.add_argument("--seeds", type=int, default=None,
                        help="number of seeds (default 3; quick: 1)")
    parser.add_argument("--families", nargs="+", default=None,
                        choices=[f.name for f in FAMILIES], help="subset of families")
    args, out = begin(parser, argv)
    if args.render:
        results = json.loads((out / f"{NAME}.json").read_text())
        plot(results, out / f"{NAME}.png")
        write_text(out / f"{NAME}.md", markdown(results))
        print(f"redrew {out / NAME}.png and .md from the JSON")
        return 0
    started = time.perf_counter()
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    families = tuple(f for f in FAMILIES if args.families is None or f.name in args.families)

    def log(msg: str) -> None:
        print(msg, flush=True)

    parts = None if args.quick else out / f"{NAME}_parts"
    results = run(families, seeds, args.quick, parts, log)
    command = "python experiments/survey_models.py" + (" --quick" if args.quick else "")
    if args.seeds is not None:
        command += f" --seeds {args.seeds}"
    if args.families:
        command += " --families " + " ".join(args.families)
    results["config"] = {
        "command": command, "quick": args.quick, "seeds": seeds, "threads": args.threads,
        "families": [family_config(f, args.quick) for f in families],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "piece_seconds": round(sum(r["seconds"] for r in results["runs"]), 1),
        "notes": ("quick mode: tiny data, few steps, one seed" if args.quick else NOTES),
        "torch": torch.__version__, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    write_json(out / f"{NAME}.json", results)
    plot(results, out / f"{NAME}.png")
    write_text(out / f"{NAME}.md", markdown(results))
    rows = [{"family": r["family"], "system": r["system"], "model": r["model"],
             **{k: r[k][0] for k in ("deriv_mse", "rollout_mse", "energy_error") if k in r}}
            for r in results["summary"]]
    print("\n" + format_table(rows))
    for row in claim_rows(results):
        print(f"- {row['verdict']}: {row['claim']} [{row['system']}; {row['evidence']}]")
    print(f"\nwrote {out / NAME}.json, .png, .md in {results['config']['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
