"""Ground-truth dataset generation and the papers' dataset presets.

:func:`generate` samples initial states, simulates them in one batch with an
eighth-order integrator and sub-steps, resamples trajectories the system rejects
(close gravitational passes, orbits leaving the magnetic bottle) or whose relative
energy drift exceeds ``max_drift``, records how many, computes the true
derivatives from the analytic ``H`` (its hand-derived field where the system has one,
equal to autograd of ``H`` to round-off), adds observation noise and splits train/test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from hogn import checks
from hogn.graph import GraphBatch
from hogn.metrics import relative_drift
from systems.base import System
from systems.dataset import Dataset
from systems.splits import random_test_mask

__all__ = ["PRESETS", "Preset", "from_preset", "generate", "preset_names"]


def _registry_get(name: str, **params: Any) -> System:
    from systems import get

    return get(name, **params)


def generate(system: System | str, trajectories: int, steps: int, dt: float, *,
             seed: int = 0, n_particles: int | tuple[int, int] | None = None,
             noise: float = 0.0, test_fraction: float = 0.2, method: str | None = None,
             substeps: int = 1, rtol: float = 1e-12, max_drift: float | None = None,
             max_rounds: int = 50,
             progress: bool = False, device: torch.device | str | None = None,
             preset: str | None = None) -> Dataset:
    """Simulate a float64 ground-truth dataset.

    Args:
        system: A :class:`~systems.base.System` or a registry name (default params).
        trajectories: Number of trajectories ``G`` to keep.
        steps: Saved steps per trajectory (``T = steps + 1`` points).
        dt: Time between saved points.
        seed: Seed of every random draw; the same seed gives the same file bytes.
        n_particles: Particles per graph for any-``N`` systems (int or range).
        noise: Standard deviation of Gaussian noise added to the observed ``q, p``.
        test_fraction: Fraction of trajectories marked as test.
        method: ``"adaptive"`` (eighth-order Dormand–Prince, a step size per
            trajectory) or a registered fixed-step integrator; ``None``: the
            system's ``ground_truth_method`` (adaptive, but velocity Verlet for
            Lennard-Jones).
        substeps: Fixed-step methods: integrator steps per saved step.
        rtol: Adaptive method: local relative (and absolute) tolerance.
        max_drift: Largest accepted relative energy drift of a trajectory; the
            others are resampled (a safety net: with the default tolerance this
            rejects almost nothing). Not checked for dissipative systems. ``None``:
            the system's ``max_energy_drift`` (``1e-8``; ``1e-3`` for the
            fixed-step Lennard-Jones ground truth).
        max_rounds: Resampling rounds before giving up.
        progress: Show progress bars.
        device: Device to simulate on (the result stays there).
        preset: Name recorded in the metadata when called through a preset.

    Returns:
        The :class:`Dataset`.

    Raises:
        ValueError: on invalid arguments, or when resampling cannot reach
            ``trajectories`` accepted trajectories within ``max_rounds``.
    """
    if isinstance(system, str):
        system = _registry_get(system)
    method = system.ground_truth_method if method is None else method
    max_drift = system.max_energy_drift if max_drift is None else max_drift
    # one rule per kind of value, shared with the command line (bools are not numbers)
    trajectories = checks.positive_int(trajectories, "trajectories")
    steps = checks.positive_int(steps, "steps")
    dt = checks.positive_float(dt, "dt")
    noise = checks.nonnegative_float(noise, "noise")
    test_fraction = checks.fraction(test_fraction, "test_fraction", upper_open=True)
    rtol = checks.tolerance(rtol, "rtol")
    substeps = checks.positive_int(substeps, "substeps")
    max_rounds = checks.positive_int(max_rounds, "max_rounds")
    seed = checks.nonnegative_int(seed, "seed")
    gen = torch.Generator().manual_seed(seed)
    kept: list[GraphBatch] = []
    have = 0
    resampled = {"rejected_by_system": 0, "energy_drift": 0}
    sampled = 0
    for _ in range(max_rounds):
        need = trajectories - have
        # after a first round, oversample by the observed acceptance rate so that few
        # rounds are needed (surplus accepted trajectories are dropped, deterministically)
        rate = have / sampled if sampled else 1.0
        count = need if rate >= 1.0 else math.ceil(1.1 * need / max(rate, 0.05)) + 1
        sampled += count
        graph = system.sample(count, gen, n_particles=n_particles, device=device)
        q, p, by_system = system.trajectory(graph, dt, steps, method=method, substeps=substeps,
                                            rtol=rtol, atol=rtol, stop=True, progress=progress)
        traj = graph.replace(q=q, p=p)
        drift = relative_drift(system.hamiltonian(traj.q, traj.p, traj))
        if system.dissipative:  # its energy decays by design
            drift = torch.zeros_like(drift)
        by_drift = ~(drift <= max_drift) & ~by_system
        resampled["rejected_by_system"] += int(by_system.sum())
        resampled["energy_drift"] += int(by_drift.sum())
        ok = (~(by_system | by_drift)).nonzero().flatten().cpu()[:need]
        if ok.numel():
            kept.append(traj.select(ok))
            have += ok.numel()
        if have == trajectories:
            break
    else:
        raise ValueError(
            f"{system.name}: only {have} of {trajectories} trajectories passed after "
            f"{max_rounds} rounds ({resampled}); relax min_distance/max_drift or lower dt")

    traj = GraphBatch.cat(kept)
    dq, dp = true_derivatives(system, traj)
    q_obs = p_obs = None
    if noise > 0:
        q_obs = traj.q + noise * torch.randn(traj.q.shape, generator=gen,
                                             dtype=traj.q.dtype).to(traj.q.device)
        p_obs = traj.p + noise * torch.randn(traj.p.shape, generator=gen,
                                             dtype=traj.p.dtype).to(traj.p.device)
    test = random_test_mask(trajectories, test_fraction, gen)
    meta = {
        "system": system.config(), "dt": float(dt), "steps": steps, "seed": seed,
        "noise": float(noise), "method": method, "substeps": substeps,
        "n_particles": n_particles, "max_drift": max_drift, "resampled": resampled,
        "rtol": rtol,
        "preset": preset, "test_fraction": test_fraction,
    }
    t = torch.arange(steps + 1, dtype=traj.q.dtype, device=traj.q.device) * dt
    return Dataset(t=t, q=traj.q, p=traj.p, dq=dq, dp=dp, c=traj.c,
                   edge_index=traj.edge_index, ptr=traj.ptr, test=test.to(traj.q.device),
                   meta=meta, edge_attr=traj.edge_attr, q_obs=q_obs, p_obs=p_obs,
                   box=traj.box)


def true_derivatives(system: System, traj: GraphBatch) -> tuple[Tensor, Tensor]:
    """``(dq, dp)`` of trajectories ``traj.q, traj.p [T, N, d]``: the system's
    hand-derived field where it has one (held equal to autograd of ``H`` by the tests),
    else Hamilton's equations by autograd; new tensors either way."""
    field = system.analytic_vector_field(traj)
    if field is None:
        return system.time_derivative(traj.q, traj.p, traj)
    with torch.no_grad():
        dq, dp = field(traj.q, traj.p)
    return (dq.clone() if dq is traj.p else dq), dp  # unit masses: dq may be p itself


@dataclass(frozen=True)
class Preset:
    """A dataset recipe from a paper.

    Attributes:
        system: System name.
        trajectories: Number of trajectories in the paper.
        points: Saved points per trajectory.
        t_end: Time span ``[0, t_end]`` covered by the points.
        noise: Observation noise standard deviation.
        params: System parameters (``embed_dim`` included).
        n_particles: Particles per graph for any-``N`` systems.
        test_fraction: Held-out fraction.
        source: Where the numbers come from.
    """

    system: str
    trajectories: int
    points: int
    t_end: float
    noise: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    n_particles: int | tuple[int, int] | None = None
    test_fraction: float = 0.2
    source: str = ""

    @property
    def dt(self) -> float:
        """Time between saved points."""
        return self.t_end / (self.points - 1)


_HNN_REPORT = ("HNN paper (Greydanus et al. 2019) as the text of M. Merkle's report "
               "'Hamiltonian Neural Networks' (TU Munich) describes it")
_HNN_CODE = ("HNN paper (Greydanus et al. 2019): the authors' code, greydanus/hamiltonian-nn "
             "experiment-*/data.py (see the PRESETS comments)")
_META = "meta-learning paper (Song & Jeong), appendix A.1"
_META_LATER = ("later version of the meta-learning paper (Song & Jeong, 'Identifying "
               "Hamiltonian Manifold in Neural Networks'); sampling and span ours")

PRESETS: dict[str, Preset] = {
    # HNN, the authors' code (greydanus/hamiltonian-nn; where it and the report's text
    # differ, the code produced the paper's numbers):
    # - experiment-spring/data.py: H = q² + p² (here m = 1/2, k = 2: ω = 2), initial
    #   (q, p) at a phase-plane radius U[0.1, 1] (so E = r²), 30 points over t = 3,
    #   noise 0.1 on q and p, 50 trajectories, test_split 0.5 (25/25).
    "hnn-mass-spring": Preset("mass-spring", 50, 30, 3.0, 0.1,
                              {"mass": 0.5, "k": 2.0, "radius_range": (0.1, 1.0)},
                              test_fraction=0.5, source=_HNN_CODE),
    # - experiment-pend/data.py: H = 3(1 − cos q) + p² (m = 1/2, l = 1, g = 6), radius
    #   U[1.3, 2.3], 45 points over t = 3 (timescale 15), noise 0.1, 25/25.
    "hnn-pendulum": Preset("pendulum", 50, 45, 3.0, 0.1,
                           {"mass": 0.5, "g": 6.0, "radius_range": (1.3, 2.3)},
                           test_fraction=0.5, source=_HNN_CODE),
    # - experiment-2body/data.py: 1000 orbits x 50 points over t = 20, no noise on the
    #   inputs (its 0.05 is orbit_noise), 80/20; bodies at ±x with x uniform in the
    #   square [0.5, 1.5]², so the separation 2|x| lies in [√2, 3√2] (ours: uniform
    #   there, at a uniform angle); its circular speed is scaled by 1 + 0.05 ξ, ours gets
    #   a Gaussian vector of relative size orbit_noise, 0.05 / √2 for the same mean
    #   squared velocity perturbation.
    "hnn-two-body": Preset("two-body", 1000, 50, 20.0, 0.0,
                           {"radius_range": (math.sqrt(2), 3 * math.sqrt(2)),
                            "orbit_noise": 0.05 / math.sqrt(2)}, source=_HNN_CODE),
    # - experiment-3body/data.py: 5000 orbits x 20 points over t = 5, no input noise,
    #   80/20, Lagrange triangles at radius U[0.9, 1.2] with each velocity component
    #   scaled by 1 + 0.2 U[-1, 1] (mean squared perturbation 0.2²/3 of the speed²; ours,
    #   Gaussian per component: orbit_noise 0.2 / √6). Its total momentum is not
    #   removed; ours is.
    "hnn-three-body": Preset("three-body", 5000, 20, 5.0, 0.0,
                             {"orbit_noise": 0.2 / math.sqrt(6)}, source=_HNN_CODE),
    # HNN as the report's text describes it (the presets before issue 15): 50 x 30
    # points, "variance σ² = 0.1" read as noise 0.1, "initial energies" [0.2, 1] and
    # [1.3, 2.3] (the code's radii), 80/20; 1000 x 50 points, σ 0.05 for the bodies.
    "hnn-report-mass-spring": Preset("mass-spring", 50, 30, 3.0, 0.1,
                                     {"energy_range": (0.2, 1.0)}, source=_HNN_REPORT),
    "hnn-report-pendulum": Preset("pendulum", 50, 30, 3.0, 0.1,
                                  {"g": 3.0, "energy_range": (1.3, 2.3)}, source=_HNN_REPORT),
    "hnn-report-two-body": Preset("two-body", 1000, 50, 20.0, 0.05, source=_HNN_REPORT),
    "hnn-report-three-body": Preset("three-body", 1000, 50, 5.0, 0.05, source=_HNN_REPORT),
    # HNN's real pendulum is lab data; ours: the report's ideal pendulum plus friction.
    "hnn-real-pendulum": Preset("damped-pendulum", 50, 30, 3.0, 0.1,
                                {"g": 3.0, "energy_range": (1.3, 2.3), "gamma": 0.1},
                                source=_HNN_REPORT),
    # Meta-learning: 10,000 trajectories per system, points/spans of appendix A.1,
    # one-degree-of-freedom systems embedded in d = 2.
    "meta-mass-spring": Preset("mass-spring", 10_000, 100, 10.0, params={"embed_dim": 2},
                               source=_META),
    "meta-pendulum": Preset("pendulum", 10_000, 100, 10.0, params={"embed_dim": 2},
                            source=_META),
    "meta-double-pendulum": Preset("double-pendulum", 10_000, 200, 20.0,
                                   params={"embed_dim": 2}, source=_META),
    "meta-two-body": Preset("two-body", 10_000, 200, 20.0, source=_META),
    "meta-three-body": Preset("three-body", 10_000, 100, 10.0, source=_META),
    "meta-magnetic-mirror": Preset("magnetic-mirror", 10_000, 200, 20.0, source=_META),
    # The later version adds Hénon–Heiles; points and span as meta-magnetic-mirror (the
    # other 2-D one-particle system; both oscillate at frequencies of order 1).
    "meta-henon-heiles": Preset("henon-heiles", 10_000, 200, 20.0, source=_META_LATER),
    # A short-range many-body fluid for neighbour-graph models: 16-64 Lennard-Jones
    # particles in periodic boxes (rho = 0.5, T = 1), 101 points over t = 1 (dt = 0.01:
    # two velocity-Verlet steps of 0.005 each); edges change: rebuild them per state.
    "lj-2d": Preset("lennard-jones", 1000, 101, 1.0, params={"dim": 2},
                    n_particles=(16, 64), source="ours (issue 13)"),
}


def preset_names() -> list[str]:
    """Names of all dataset presets, sorted."""
    return sorted(PRESETS)


def get_preset(name: str) -> Preset:
    """Look up a preset.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; expected one of: "
                         f"{', '.join(preset_names())}") from None


def from_preset(name: str, trajectories: int | None = None, seed: int = 0,
                params: dict[str, Any] | None = None, **overrides: Any) -> Dataset:
    """Generate a preset's dataset.

    Args:
        name: Preset name (see :func:`preset_names`).
        trajectories: Override the paper's trajectory count (e.g. for quick runs).
        seed: Random seed.
        params: System parameters overriding the preset's.
        **overrides: Further :func:`generate` arguments (``noise``, ``progress``, ...).
    """
    preset = get_preset(name)
    system = _registry_get(preset.system, **{**preset.params, **(params or {})})
    kwargs: dict[str, Any] = {"noise": preset.noise, "n_particles": preset.n_particles,
                              "test_fraction": preset.test_fraction, **overrides}
    count = preset.trajectories if trajectories is None else trajectories
    return generate(system, count, preset.points - 1, preset.dt,
                    seed=seed, preset=name, **kwargs)
