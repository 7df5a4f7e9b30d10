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

Scores are kept per validation system (:func:`fitter_scores`, :func:`rate_scores`,
:func:`scratch_scores`, :func:`ridge_scores`) and combined by :func:`choose`, which
leaves the held-out system's score out. A method whose starting point does not depend on
the held-out system (the classical regressors, a network's random init) can therefore be
scored once on the validation trajectories of all seven systems and chosen for each
held-out system from the other six: the same choice as scoring the six alone, at a
seventh of the cost.
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
from meta import batched
from meta.adaptation import adapt_many
from meta.algorithms import InnerLR
from meta.evaluate import point_seed
from meta.fitted import Fitter, baseline_fitter, evaluate_fits, head_fitter
from meta.protocol import META_SYSTEMS, _system_seed, check_system, evaluate_adaptation

__all__ = [
    "FLOOR",
    "PAIRS",
    "RIDGES",
    "SCRATCH_RATES",
    "SCRATCH_STEPS",
    "SGD_RATES",
    "VALIDATION_OFFSET",
    "Scored",
    "choose",
    "criterion",
    "fitter_scores",
    "rate_scores",
    "ridge_scores",
    "scratch_scores",
    "select_baseline",
    "select_fitter",
    "select_rate",
    "select_ridge",
    "select_scratch",
    "system_score",
    "validation_data",
]

Scored = list[dict[str, Any]]
"""Scores of a grid: one ``{"hyper": settings, "systems": {system: score}}`` per setting
(:func:`system_score` of each validation system)."""

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


def validation_data(holdout: str | None, trajectories: int, seed: int = 0, **options: Any
                    ) -> dict[str, systems.Dataset]:
    """Fresh trajectories of the six training systems of ``holdout`` (never of it).

    Args:
        holdout: The held-out system (left out); ``None``: all seven systems, for scores
            made once for every held-out system (:func:`choose` leaves each one's out).
        trajectories: Trajectories per training system.
        seed: Seed of the protocol (each system's draw has its own seed, apart from the
            training and the evaluation data).
        **options: For ``systems.from_preset`` (e.g. ``rtol``).
    """
    if holdout is not None:
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


def system_score(values: Tensor | np.ndarray) -> float:
    """One validation system's score: ``log10`` of the median over trajectories of the
    derivative NMSE (the mean of those over columns, e.g. adaptation steps); lower is
    better.

    Args:
        values: NMSE ``[M]`` or ``[M, E]`` (non-finite: diverged, counted as ``inf``;
            values are floored at :data:`FLOOR`).

    Returns:
        The score (``inf`` if a median is not finite).
    """
    arr = np.asarray(torch.as_tensor(values, dtype=torch.float64).cpu(), dtype=np.float64)
    arr = np.where(np.isnan(arr), np.inf, arr)
    med = np.median(arr.reshape(arr.shape[0], -1), axis=0)
    return float(np.mean(np.log10(np.maximum(med, FLOOR))))


def criterion(nmse: Mapping[str, Tensor | np.ndarray]) -> float:
    """Mean over systems of :func:`system_score`; lower is better.

    Args:
        nmse: System → derivative NMSE ``[M]`` or ``[M, E]``.

    Returns:
        The score (``inf`` if any system's median is not finite; ``inf`` for no system).
    """
    scores = [system_score(values) for values in nmse.values()]
    return float(np.mean(scores)) if scores else math.inf


def choose(scored: Scored, holdout: str) -> dict[str, Any]:
    """The best setting for ``holdout``, by the mean score over every *other* system.

    The held-out system's own scores, where ``scored`` holds them (scores made once for
    every held-out system), are left out: they never change the choice.

    Args:
        scored: Scores per setting and system (e.g. :func:`fitter_scores`).
        holdout: The held-out system.

    Returns:
        ``{"hyper": best settings (the first of equal scores), "score": its criterion,
        "scores": [{"hyper", "score"} of every setting]}``.

    Raises:
        ValueError: for no setting, or no system other than ``holdout``.
    """
    check_system(holdout)
    rows = []
    for entry in scored:
        values = [v for name, v in entry["systems"].items() if name != holdout]
        if not values:
            raise ValueError(f"no validation system other than the held-out {holdout!r}")
        rows.append((dict(entry["hyper"]), float(np.mean(values))))
    if not rows:
        raise ValueError("no setting could be tried")
    best = min(range(len(rows)), key=lambda i: (rows[i][1], i))
    return {"hyper": rows[best][0], "score": rows[best][1],
            "scores": [{"hyper": h, "score": v} for h, v in rows]}


def _fit_scores(fitter: Fitter, validation: Mapping[str, systems.Dataset], shots: int,
                noise: float, seed: int, n_particles: int | None = None,
                dtype: torch.dtype = torch.float64) -> dict[str, float]:
    scores = {}
    for name, data in validation.items():
        result = evaluate_fits({"m": fitter}, data, shots=shots, seed=seed, noise=noise,
                               n_particles={"m": n_particles}, dtype={"m": dtype},
                               rollouts=False)
        scores[name] = system_score(result["derivative_nmse"]["m"][:, 0])
    return scores


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


def fitter_scores(make: Callable[..., Fitter], grid: Sequence[Mapping[str, Any]],
                  validation: Mapping[str, systems.Dataset], shots: int, noise: float = 0.0,
                  seed: int = 0, n_particles: int | None = None,
                  dtype: torch.dtype = torch.float64) -> Scored:
    """Scores of any fitted method per setting and validation system: ``make(**settings)``
    is its fitter.

    Args:
        make: The fitter's factory.
        grid: Settings to try.
        validation: Validation trajectories by system.
        shots: Support points ``K``.
        noise: Observation noise of the support points.
        seed: Seed of the points' draws.
        n_particles: The layout of the points (a padded fixed-size model: its
            ``n_particles``; ``None``: the graph layout).
        dtype: Dtype of the points (a float32 network: ``torch.float32``).

    Returns:
        One entry per setting; a setting whose fit raises ``ValueError`` or
        ``FloatingPointError`` (a singular solve) is skipped.
    """
    scored = []
    for hyper in grid:
        try:
            scored.append({"hyper": dict(hyper), "systems": _fit_scores(
                make(**hyper), validation, shots, noise, seed, n_particles, dtype)})
        except (ValueError, FloatingPointError):  # a setting that cannot be fitted
            continue
    return scored


def select_fitter(make: Callable[..., Fitter], grid: Sequence[Mapping[str, Any]],
                  validation: Mapping[str, systems.Dataset], holdout: str, shots: int,
                  noise: float = 0.0, seed: int = 0, n_particles: int | None = None,
                  dtype: torch.dtype = torch.float64) -> dict[str, Any]:
    """The settings of any fitted method: ``make(**settings)`` is its fitter.

    Arguments as for :func:`select_baseline` and :func:`fitter_scores`.
    """
    _check(validation, holdout)
    return choose(fitter_scores(make, grid, validation, shots, noise, seed, n_particles,
                                dtype), holdout)


def ridge_scores(model: DynamicsModel, params: Mapping[str, Tensor],
                 validation: Mapping[str, systems.Dataset], shots: int, noise: float = 0.0,
                 seed: int = 0, ridges: Sequence[float] = RIDGES) -> Scored:
    """Scores of a closed-form head (:func:`meta.closed_form.solve_head`) per ridge and
    validation system; arguments as for :func:`select_ridge`."""
    p = next(iter(params.values()))
    return fitter_scores(lambda ridge: head_fitter(model, params, ridge),
                         [{"ridge": float(r)} for r in ridges], validation, shots, noise,
                         seed, getattr(model, "n_particles", None), p.dtype)


def select_ridge(model: DynamicsModel, params: Mapping[str, Tensor],
                 validation: Mapping[str, systems.Dataset], holdout: str, shots: int,
                 noise: float = 0.0, seed: int = 0, ridges: Sequence[float] = RIDGES
                 ) -> dict[str, Any]:
    """The ridge of a closed-form head (:func:`meta.closed_form.solve_head`).

    Arguments as for :func:`select_baseline`, with the basis model and its parameters.
    """
    _check(validation, holdout)
    return choose(ridge_scores(model, params, validation, shots, noise, seed, ridges),
                  holdout)


PAIRS = 512
"""Most (trajectory, setting) pairs adapted together in one call during selection."""


def _adaptation_scores(model: DynamicsModel, params: Mapping[str, Tensor],
                       validation: Mapping[str, systems.Dataset], shots: int, noise: float,
                       seed: int, rates: Sequence[InnerLR], eval_steps: Sequence[int],
                       optimizer: str) -> list[dict[str, Tensor]]:
    """Derivative NMSE ``[M, E]`` per rate (a float or per-parameter rates) and validation
    system, after each of ``eval_steps``: every (rate, system, trajectory) adapted
    together (:func:`meta.adaptation.adapt_many`, at most :data:`PAIRS` at a time), each
    trajectory on the points :func:`meta.protocol.evaluate_adaptation` draws for it."""
    if not batched.supports(model):  # one pair at a time
        return [{name: evaluate_adaptation(
            model, {"m": params}, data, shots=shots, steps=max(eval_steps),
            method_lr={"m": rate}, eval_steps=eval_steps, seed=seed, noise=noise,
            optimizer=optimizer,
            rollouts=False)["derivative_nmse"]["m"] for name, data in validation.items()}
            for rate in rates]
    pairs = [(r, name, i) for r in range(len(rates)) for name, data in validation.items()
             for i in range(len(data))]
    single = {(name, i): data[i] for name, data in validation.items() for i in range(len(data))}
    values: dict[tuple[int, str, int], Tensor] = {}
    for first in range(0, len(pairs), PAIRS):
        chunk = pairs[first:first + PAIRS]
        results = adapt_many(model, [params] * len(chunk), [single[n, i] for _, n, i in chunk],
                             [rates[r] for r, _, _ in chunk],
                             [point_seed(seed, i) for _, _, i in chunk], shots=shots,
                             steps=max(eval_steps), eval_steps=eval_steps, noise=noise,
                             optimizer=optimizer, rollouts=False)
        values.update(zip(chunk, (a.derivative_nmse for a in results), strict=True))
    return [{name: torch.stack([values[r, name, i] for i in range(len(data))])
             for name, data in validation.items()} for r in range(len(rates))]


def rate_scores(model: DynamicsModel, params: Mapping[str, Tensor],
                validation: Mapping[str, systems.Dataset], shots: int, noise: float = 0.0,
                seed: int = 0, rates: Sequence[float] = SGD_RATES,
                steps: Sequence[int] = (1, 5, 15),
                rule: Callable[[float], InnerLR] | None = None, key: str = "inner_lr"
                ) -> Scored:
    """Scores of SGD adaptation from ``params`` per step size and validation system
    (each averaged over ``steps``); arguments as for :func:`select_rate`."""
    rules = [float(r) if rule is None else rule(float(r)) for r in rates]
    by_rate = _adaptation_scores(model, params, validation, shots, noise, seed, rules,
                                 steps, "sgd")
    return [{"hyper": {key: float(r)},
             "systems": {name: system_score(v) for name, v in by_system.items()}}
            for r, by_system in zip(rates, by_rate, strict=True)]


def select_rate(model: DynamicsModel, params: Mapping[str, Tensor],
                validation: Mapping[str, systems.Dataset], holdout: str, shots: int,
                noise: float = 0.0, seed: int = 0, rates: Sequence[float] = SGD_RATES,
                steps: Sequence[int] = (1, 5, 15),
                rule: Callable[[float], InnerLR] | None = None, key: str = "inner_lr"
                ) -> dict[str, Any]:
    """The SGD step size of adapting ``params`` (criterion averaged over ``steps``).

    Arguments as for :func:`select_baseline`, with the model, its starting parameters,
    the step sizes to try and the adaptation steps the criterion averages over; with
    ``rule``, each tried value ``r`` adapts by ``rule(r)`` instead (e.g. ANIL's rate on
    the decoder only, :meth:`meta.protocol.RunModels.adaptation_lr`, or Meta-SGD's learned
    rates times ``r``), recorded as ``{key: r}``.
    """
    _check(validation, holdout)
    return choose(rate_scores(model, params, validation, shots, noise, seed, rates, steps,
                              rule, key), holdout)


def scratch_scores(model: DynamicsModel, params: Mapping[str, Tensor],
                   validation: Mapping[str, systems.Dataset], shots: int,
                   noise: float = 0.0, seed: int = 0, rates: Sequence[float] = SCRATCH_RATES,
                   steps: Sequence[int] = SCRATCH_STEPS) -> Scored:
    """Scores of Adam training from ``params`` on the support points alone, per (rate,
    steps) and validation system: one run per rate, scored after each of ``steps``;
    arguments as for :func:`select_scratch`."""
    steps = sorted({int(s) for s in steps})
    by_rate = _adaptation_scores(model, params, validation, shots, noise, seed, rates,
                                 steps, "adam")
    return [{"hyper": {"lr": float(r), "steps": s},
             "systems": {k: system_score(v[:, j]) for k, v in by_system.items()}}
            for r, by_system in zip(rates, by_rate, strict=True) for j, s in enumerate(steps)]


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
    return choose(scratch_scores(model, params, validation, shots, noise, seed, rates,
                                 steps), holdout)
