"""Hyper-parameters of every few-shot method, chosen on the training systems only.

Every method of the leave-one-system-out evaluation has settings that change its score:
the step size of SGD adaptation (meta-trained, random init, pretrained), the rate and
number of Adam steps of a network trained from scratch, the ridge of a closed-form head,
the degree, length scale and ridge of the classical regressors. A fair comparison
chooses each the same way and never on the held-out system. Here each is chosen per
regime (``K`` points and observation noise) on *validation trajectories of the six
training systems* (:func:`validation_data`: fresh draws, apart from the training data and
from the held-out evaluation data), by one criterion (:func:`criterion`): the mean over
those systems of ``log10`` of the median held-out derivative NMSE (over trajectories;
for an adapted network also averaged over the compared steps). The held-out system's
name is an argument of every function only so that it can be refused: any validation
set holding it raises ``ValueError``.

For the classical regressors, which learn nothing from other systems, this is the same
as leaving one training system out inside the six. For the meta-trained and pretrained
networks the validation trajectories are unseen, but their systems were trained on, so
the chosen step size is the one that suits laws the network knows; it is still never
tuned on the held-out law.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

import systems
from hogn.models.base import DynamicsModel
from meta.fitted import Fitter, baseline_fitter, evaluate_fits, head_fitter
from meta.protocol import META_SYSTEMS, _system_seed, check_system, evaluate_adaptation

__all__ = [
    "FLOOR",
    "RIDGES",
    "SCRATCH_RATES",
    "SCRATCH_STEPS",
    "SGD_RATES",
    "VALIDATION_OFFSET",
    "criterion",
    "select_baseline",
    "select_fitter",
    "select_rate",
    "select_ridge",
    "select_scratch",
    "validation_data",
]

VALIDATION_OFFSET = 700
"""Seed offset of the validation trajectories (training data: 0, evaluation: 500)."""
SGD_RATES = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
"""Step sizes tried for SGD adaptation."""
SCRATCH_RATES = (1e-3, 3e-3, 1e-2)
"""Adam rates tried for a network trained from random init."""
SCRATCH_STEPS = (100, 300, 1000)
"""Adam steps tried for a network trained from random init."""
RIDGES = (1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""Relative ridges tried for a closed-form head."""
FLOOR = 1e-16
"""Smallest NMSE the criterion distinguishes (an exact fit scores log10 = -16)."""


def validation_data(holdout: str, trajectories: int, seed: int = 0, **options: Any
                    ) -> dict[str, systems.Dataset]:
    """Fresh trajectories of the six training systems of ``holdout`` (never of it).

    Args:
        holdout: The held-out system (left out).
        trajectories: Trajectories per training system.
        seed: Seed of the protocol (each system's draw has its own seed, apart from the
            training and the evaluation data).
        **options: For ``systems.from_preset`` (e.g. ``rtol``).
    """
    check_system(holdout)
    return {name: systems.from_preset(
        f"meta-{name}", trajectories=trajectories,
        seed=_system_seed(name, seed, VALIDATION_OFFSET), test_fraction=0.0, progress=False,
        **options) for name in META_SYSTEMS if name != holdout}


def _check(validation: Mapping[str, Any], holdout: str) -> None:
    """Refuse validation data that hold the held-out system, by key or by the datasets'
    own preset (``meta-<name>``, recorded by ``systems.generate``)."""
    check_system(holdout)
    if not validation:
        raise ValueError("no validation data")
    presets = {key: getattr(data, "meta", {}).get("preset") for key, data in validation.items()}
    if holdout in validation or f"meta-{holdout}" in presets.values():
        raise ValueError(f"the validation data hold the held-out system {holdout!r}: "
                         "hyper-parameters must be chosen on the training systems only")


def criterion(nmse: Mapping[str, Tensor | np.ndarray]) -> float:
    """Mean over systems of ``log10`` of the median over trajectories (and the mean of
    those over columns, e.g. adaptation steps) of the derivative NMSE; lower is better.

    Args:
        nmse: System → values ``[M]`` or ``[M, E]`` (non-finite: diverged, counted as
            ``inf``; values are floored at :data:`FLOOR`).

    Returns:
        The score (``inf`` if any system's median is not finite).
    """
    scores = []
    for values in nmse.values():
        arr = np.asarray(torch.as_tensor(values, dtype=torch.float64).cpu(), dtype=np.float64)
        arr = np.where(np.isnan(arr), np.inf, arr)
        arr = arr.reshape(arr.shape[0], -1)
        med = np.median(arr, axis=0)
        scores.append(float(np.mean(np.log10(np.maximum(med, FLOOR)))))
    return float(np.mean(scores)) if scores else math.inf


def _choose(scored: list[tuple[dict[str, Any], float]]) -> dict[str, Any]:
    """The record of the best setting (first of equal scores) and every score."""
    best = min(range(len(scored)), key=lambda i: (scored[i][1], i))
    return {"hyper": scored[best][0], "score": scored[best][1],
            "scores": [{"hyper": h, "score": s} for h, s in scored]}


def _fit_scores(fitter: Fitter, validation: Mapping[str, systems.Dataset], shots: int,
                noise: float, seed: int, n_particles: int | None = None,
                dtype: torch.dtype = torch.float64) -> float:
    nmse = {}
    for name, data in validation.items():
        result = evaluate_fits({"m": fitter}, data, shots=shots, seed=seed, noise=noise,
                               n_particles={"m": n_particles}, dtype={"m": dtype},
                               rollouts=False)
        nmse[name] = result["derivative_nmse"]["m"][:, 0]
    return criterion(nmse)


def select_baseline(name: str, validation: Mapping[str, systems.Dataset], holdout: str,
                    shots: int, noise: float = 0.0, seed: int = 0,
                    grid: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The hyper-parameters of a classical regressor (:mod:`meta.fewshot`).

    Args:
        name: The regressor (:data:`meta.fewshot.BASELINES`).
        validation: Validation trajectories by training system (:func:`validation_data`).
        holdout: The held-out system (refused in ``validation``).
        shots: Support points ``K``.
        noise: Observation noise of the support points.
        seed: Seed of the points' draws.
        grid: Settings to try (default :data:`meta.fewshot.GRIDS` of ``name``).

    Returns:
        ``{"hyper": best settings, "score": its criterion, "scores": [every setting's]}``.
    """
    from meta import fewshot

    grid = fewshot.GRIDS[name] if grid is None else grid
    return select_fitter(lambda **hyper: baseline_fitter(name, **hyper), grid, validation,
                         holdout, shots, noise, seed)


def select_fitter(make: Callable[..., Fitter], grid: Sequence[Mapping[str, Any]],
                  validation: Mapping[str, systems.Dataset], holdout: str, shots: int,
                  noise: float = 0.0, seed: int = 0, n_particles: int | None = None,
                  dtype: torch.dtype = torch.float64) -> dict[str, Any]:
    """The settings of any fitted method: ``make(**settings)`` is its fitter.

    Arguments as for :func:`select_baseline`, with the fitter's factory, the settings to
    try, and the layout and dtype of the points it fits (a padded fixed-size model: its
    ``n_particles``; a float32 network: ``torch.float32``). A setting whose fit raises
    ``ValueError`` or ``FloatingPointError`` (a singular solve) is skipped.
    """
    _check(validation, holdout)
    scored = []
    for hyper in grid:
        try:
            scored.append((dict(hyper), _fit_scores(make(**hyper), validation, shots, noise,
                                                    seed, n_particles, dtype)))
        except (ValueError, FloatingPointError):  # a setting that cannot be fitted
            continue
    if not scored:
        raise ValueError("no setting could be tried")
    return _choose(scored)


def select_ridge(model: DynamicsModel, params: Mapping[str, Tensor],
                 validation: Mapping[str, systems.Dataset], holdout: str, shots: int,
                 noise: float = 0.0, seed: int = 0, ridges: Sequence[float] = RIDGES
                 ) -> dict[str, Any]:
    """The ridge of a closed-form head (:func:`meta.closed_form.solve_head`).

    Arguments as for :func:`select_baseline`, with the basis model and its parameters.
    """
    p = next(iter(params.values()))
    return select_fitter(lambda ridge: head_fitter(model, params, ridge),
                         [{"ridge": float(r)} for r in ridges], validation, holdout, shots,
                         noise, seed, getattr(model, "n_particles", None), p.dtype)


def _adaptation_scores(model: DynamicsModel, params: Mapping[str, Tensor],
                       validation: Mapping[str, systems.Dataset], shots: int, noise: float,
                       seed: int, rate: float, eval_steps: Sequence[int], optimizer: str
                       ) -> dict[str, Tensor]:
    out = {}
    for name, data in validation.items():
        result = evaluate_adaptation(model, {"m": params}, data, shots=shots,
                                     steps=max(eval_steps), inner_lr=rate,
                                     eval_steps=eval_steps, seed=seed, noise=noise,
                                     optimizer=optimizer, rollouts=False)
        out[name] = result["derivative_nmse"]["m"]
    return out


def select_rate(model: DynamicsModel, params: Mapping[str, Tensor],
                validation: Mapping[str, systems.Dataset], holdout: str, shots: int,
                noise: float = 0.0, seed: int = 0, rates: Sequence[float] = SGD_RATES,
                steps: Sequence[int] = (1, 5, 15)) -> dict[str, Any]:
    """The SGD step size of adapting ``params`` (criterion averaged over ``steps``).

    Arguments as for :func:`select_baseline`, with the model, its starting parameters,
    the step sizes to try and the adaptation steps the criterion averages over.
    """
    _check(validation, holdout)
    scored = [({"inner_lr": float(r)}, criterion(_adaptation_scores(
        model, params, validation, shots, noise, seed, float(r), steps, "sgd")))
        for r in rates]
    return _choose(scored)


def select_scratch(model: DynamicsModel, params: Mapping[str, Tensor],
                   validation: Mapping[str, systems.Dataset], holdout: str, shots: int,
                   noise: float = 0.0, seed: int = 0, rates: Sequence[float] = SCRATCH_RATES,
                   steps: Sequence[int] = SCRATCH_STEPS) -> dict[str, Any]:
    """The Adam rate and number of steps of a network trained from ``params`` (random
    init) on the support points alone: one run per rate, scored after each of ``steps``.

    Arguments as for :func:`select_rate`.

    Returns:
        As :func:`select_baseline`, with settings ``{"lr": rate, "steps": n}``.
    """
    _check(validation, holdout)
    steps = sorted({int(s) for s in steps})
    scored = []
    for r in rates:
        by_system = _adaptation_scores(model, params, validation, shots, noise, seed,
                                       float(r), steps, "adam")
        for j, s in enumerate(steps):
            scored.append(({"lr": float(r), "steps": s},
                           criterion({k: v[:, j] for k, v in by_system.items()})))
    return _choose(scored)
