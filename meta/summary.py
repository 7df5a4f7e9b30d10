"""Paired verdicts per held-out system and the counts over systems, for reports.

The leave-one-system-out experiment scores every starting point (meta-trained, random
init, pretrained) on the same ``M`` trajectories of a held-out system with three
metrics (:data:`METRICS`): the paper's rollout MSE and the two normalised errors of
:mod:`meta.metrics`. This module turns those per-trajectory values into

- :func:`paired_system`: for one model and one held-out system, the
  :func:`meta.metrics.paired_comparison` of meta-trained against each baseline
  (:data:`PAIRS`) at each compared step (:data:`COMPARED_STEPS`), per metric, and the
  verdict of :func:`meta.metrics.ahead_on_system` (lower at a strict majority of those
  steps with ``p < alpha``);
- :func:`summary_block`: for every model and metric, on how many held-out systems the
  meta-trained weights are ahead of each baseline, and which;
- :func:`against_paper`: the verdicts on the paper's own four evaluated systems
  (:data:`PAPER_SYSTEMS`, where the paper reports meta-training ahead of random init on
  all four), with the systems where ours differs.

Pure functions over dicts, numpy arrays or tensors; the results are JSON-able (plain
ints, floats, bools, strings, lists and dicts; step numbers as string keys).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meta.metrics import ArrayLike, _array, ahead_on_system, paired_comparison

__all__ = [
    "BASELINE_STEPS",
    "COMPARED_STEPS",
    "EARLY_STEPS",
    "METRICS",
    "MODELS",
    "PAIRS",
    "PAPER_SYSTEMS",
    "against_paper",
    "baselines_block",
    "medians",
    "paired_system",
    "summary_block",
    "versus_baselines",
]

METRICS = ("paper_mse", "derivative_nmse", "short_rollout_nmse")
"""The metrics of a report: the paper's rollout MSE, the held-out derivative error
normalised by a zero field, the short-rollout error normalised by standing still."""

PAIRS = {"meta_vs_random": ("meta", "random"), "meta_vs_pretrained": ("meta", "pretrained")}
"""Pair name → (method, baseline) of the paired comparisons."""

COMPARED_STEPS = (1, 5, 15, 100)
"""Adaptation steps at which the methods are compared (those evaluated)."""

MODELS = ("hnn", "hogn")
"""The models of the summary block, in its order (others follow in the given order)."""

BASELINE_STEPS = (1, 5, 15)
"""Adaptation steps at which a meta-learned method is compared with every baseline."""

EARLY_STEPS = (1, 5)
"""The few-step reading: ahead at both steps 1 and 5 (a strict majority of two)."""

PAPER_SYSTEMS = ("magnetic-mirror", "double-pendulum", "pendulum", "mass-spring")
"""The held-out systems the meta-learning paper evaluated; it reports the meta-trained
model ahead of random init on all four."""


def paired_system(values: Mapping[str, Mapping[str, ArrayLike]], steps: Sequence[int],
                  compared: Sequence[int] = COMPARED_STEPS, seed: int = 0,
                  resamples: int = 10_000, alpha: float = 0.05) -> dict[str, Any]:
    """Paired comparisons of meta-trained against each baseline on one held-out system.

    Args:
        values: Metric → method → per-trajectory values ``[M, E]`` (row ``i`` the same
            trajectory for every method, column ``j`` after ``steps[j]`` adaptation
            steps; lower is better; non-finite values are diverged and dropped pairwise,
            see :func:`meta.metrics.paired_comparison`).
        steps: The ``E`` evaluated step numbers.
        compared: Steps to compare (those of them in ``steps``).
        seed: Seed of the bootstrap intervals.
        resamples: Bootstrap resamples.
        alpha: Significance level of a win.

    Returns:
        ``{metric: {pair: {"a": method, "b": baseline, "steps": [compared steps
        present], "comparisons": {str(step): PairedComparison.to_dict()}, "wins":
        [steps with median ratio < 1 and p < alpha], "ahead": bool}}}`` for every pair of
        :data:`PAIRS` whose two methods are in ``values[metric]`` (e.g. no
        ``meta_vs_pretrained`` without a pretrained baseline).

    Raises:
        ValueError: if a method's values are not ``[M, E]`` with ``E = len(steps)``, or
            the methods of a metric differ in ``M``.
    """
    steps = [int(s) for s in steps]
    present = [s for s in dict.fromkeys(int(c) for c in compared) if s in steps]
    out: dict[str, Any] = {}
    for metric, methods in values.items():
        arrays = {m: _array(v, f"{metric}/{m}") for m, v in methods.items()}
        for m, arr in arrays.items():
            if arr.ndim != 2 or arr.shape[1] != len(steps):
                raise ValueError(f"{metric}/{m}: expected values [M, {len(steps)}] (one column "
                                 f"per step {steps}), got shape {arr.shape}")
        rows = {arr.shape[0] for arr in arrays.values()}
        if len(rows) > 1:
            raise ValueError(f"{metric}: the methods hold different numbers of trajectories "
                             f"({', '.join(f'{m} {a.shape[0]}' for m, a in arrays.items())})")
        pairs: dict[str, Any] = {}
        for pair, (a, b) in PAIRS.items():
            if a not in arrays or b not in arrays:
                continue
            by_step = {s: paired_comparison(arrays[a][:, steps.index(s)],
                                            arrays[b][:, steps.index(s)], seed=seed,
                                            resamples=resamples, alpha=alpha)
                       for s in present}
            pairs[pair] = {
                "a": a, "b": b, "steps": present,
                "comparisons": {str(s): c.to_dict() for s, c in by_step.items()},
                "wins": [s for s, c in by_step.items()
                         if c.median_ratio < 1.0 and c.p_value < alpha],
                "ahead": ahead_on_system(by_step, present, alpha)}
        out[metric] = pairs
    return out


def _ordered(names: Sequence[str]) -> list[str]:
    return [m for m in MODELS if m in names] + [m for m in names if m not in MODELS]


def summary_block(paired: Mapping[str, Mapping[str, Mapping[str, Any]]],
                  models: Sequence[str] | None = None,
                  metrics: Sequence[str] = METRICS) -> dict[str, dict[str, dict[str, Any]]]:
    """On how many held-out systems is meta-training ahead, per model and metric?

    Args:
        paired: Model → held-out system → :func:`paired_system` of that piece.
        models: Models to report (default: those in ``paired``, :data:`MODELS` first);
            one without results gets zero counts.
        metrics: Metrics to report.

    Returns:
        ``{model: {metric: {"systems": n, "ahead_of_random": k, "ahead_of_pretrained":
        k, "ahead_of_random_systems": [names], "ahead_of_pretrained_systems":
        [names]}}}``: ``n`` counts the systems with that metric; the names keep the order
        of ``paired[model]``. A system without a pretrained baseline counts in ``n`` but
        never as ahead of it.
    """
    names = _ordered(list(paired)) if models is None else list(models)
    block: dict[str, dict[str, dict[str, Any]]] = {}
    for model in names:
        by_system = paired.get(model, {})
        block[model] = {}
        for metric in metrics:
            scored = {h: res[metric] for h, res in by_system.items() if metric in res}
            ahead = {pair: [h for h, res in scored.items()
                            if res.get(pair, {}).get("ahead", False)]
                     for pair in ("meta_vs_random", "meta_vs_pretrained")}
            block[model][metric] = {
                "systems": len(scored),
                "ahead_of_random": len(ahead["meta_vs_random"]),
                "ahead_of_pretrained": len(ahead["meta_vs_pretrained"]),
                "ahead_of_random_systems": ahead["meta_vs_random"],
                "ahead_of_pretrained_systems": ahead["meta_vs_pretrained"]}
    return block


def against_paper(ahead: Mapping[str, bool], systems: Sequence[str] = PAPER_SYSTEMS
                  ) -> dict[str, Any]:
    """Our verdicts (meta-trained ahead of random init?) on the paper's evaluated systems.

    Args:
        ahead: Held-out system → whether meta-training is ahead of random init there
            (systems not run are left out).
        systems: The paper's evaluated systems (it reports "ahead" on every one).

    Returns:
        ``{"paper_systems": [...], "paper_ahead": len(systems), "evaluated": [those we
        have], "ahead": [...], "not_ahead": [...], "missing": [...], "agrees": bool}``:
        ``agrees`` when every paper system is evaluated and ahead.
    """
    evaluated = [s for s in systems if s in ahead]
    yes = [s for s in evaluated if bool(ahead[s])]
    no = [s for s in evaluated if not bool(ahead[s])]
    missing = [s for s in systems if s not in ahead]
    return {"paper_systems": list(systems), "paper_ahead": len(systems),
            "evaluated": evaluated, "ahead": yes, "not_ahead": no, "missing": missing,
            "agrees": not no and not missing}



def medians(values: Mapping[str, ArrayLike], steps: Sequence[int],
            report: Sequence[int]) -> dict[str, dict[str, float]]:
    """Each method's median over trajectories at each reported step.

    Args:
        values: Method → per-trajectory values ``[M, E]`` (non-finite: diverged, counted
            as ``inf``, so a median over mostly diverged trajectories is ``inf``).
        steps: The ``E`` evaluated step numbers.
        report: Steps to report (those of them in ``steps``).

    Returns:
        ``{method: {str(step): median}}``.
    """
    import numpy as np

    steps = [int(s) for s in steps]
    out = {}
    for method, v in values.items():
        arr = _array(v, method)
        arr = np.where(np.isnan(arr), np.inf, arr)
        out[method] = {str(s): float(np.median(arr[:, steps.index(s)]))
                       for s in report if s in steps}
    return out


def versus_baselines(values: Mapping[str, ArrayLike], steps: Sequence[int],
                     methods: Sequence[str], baselines: Sequence[str],
                     compared: Sequence[int] = BASELINE_STEPS, seed: int = 0,
                     resamples: int = 2_000, alpha: float = 0.05) -> dict[str, Any]:
    """Is each method ahead of every baseline on one held-out system, by one metric?

    For each (method, baseline) the paired comparison of :func:`meta.metrics.
    paired_comparison` at each of ``compared`` (a method fitted once, with the same value
    at every step, is compared at each step all the same); the method is *ahead* of a
    baseline when it wins (median ratio < 1, Wilcoxon ``p < alpha``) at a strict majority
    of those steps, and *ahead of the baselines* when it is ahead of every one. The
    same is judged at :data:`EARLY_STEPS` (both must be won).

    Args:
        values: Method → per-trajectory values ``[M, E]`` of one metric (the same ``M``
            trajectories for every method).
        steps: The ``E`` evaluated step numbers.
        methods: The methods judged (e.g. the meta-learned ones).
        baselines: The methods they must beat.
        compared: Steps of the verdict.
        seed: Seed of the bootstrap intervals.
        resamples: Bootstrap resamples per comparison.
        alpha: Significance level of a win.

    Returns:
        ``{method: {"ahead": bool, "ahead_early": bool, "behind": [baselines it is not
        ahead of], "versus": {baseline: {"wins": [steps], "ahead": bool, "median_ratio":
        {str(step): r}, "p_value": {str(step): p}}}}}``.
    """
    steps = [int(s) for s in steps]
    present = [s for s in dict.fromkeys(int(c) for c in compared) if s in steps]
    early = [s for s in EARLY_STEPS if s in steps]
    arrays = {m: _array(values[m], m) for m in [*methods, *baselines]}
    out: dict[str, Any] = {}
    for method in methods:
        versus: dict[str, Any] = {}
        for base in baselines:
            if base == method:
                continue
            by_step = {s: paired_comparison(arrays[method][:, steps.index(s)],
                                            arrays[base][:, steps.index(s)], seed=seed,
                                            resamples=resamples, alpha=alpha)
                       for s in dict.fromkeys([*present, *early])}
            versus[base] = {
                "wins": [s for s in present if by_step[s].lower],
                "ahead": ahead_on_system({s: by_step[s] for s in present}, present, alpha),
                "ahead_early": bool(early) and all(by_step[s].lower for s in early),
                "median_ratio": {str(s): c.median_ratio for s, c in by_step.items()},
                "p_value": {str(s): c.p_value for s, c in by_step.items()}}
        out[method] = {"ahead": all(v["ahead"] for v in versus.values()),
                       "ahead_early": all(v["ahead_early"] for v in versus.values()),
                       "behind": [b for b, v in versus.items() if not v["ahead"]],
                       "versus": versus}
    return out


def baselines_block(verdicts: Mapping[str, Mapping[str, Mapping[str, Any]]],
                    methods: Sequence[str], metrics: Sequence[str] = METRICS
                    ) -> dict[str, dict[str, Any]]:
    """On how many held-out systems is each method ahead of every baseline?

    Args:
        verdicts: Held-out system → metric → :func:`versus_baselines` of that system.
        methods: The judged methods.
        metrics: The metrics to count.

    Returns:
        ``{method: {metric: {"systems": n, "ahead_of_baselines": k,
        "ahead_of_baselines_systems": [...], "ahead_early": k', "ahead_early_systems":
        [...], "behind": {system: [baselines not beaten]}, "ahead_of_each": {baseline:
        [systems where the method is ahead of it]}}}}``.
    """
    block: dict[str, dict[str, Any]] = {}
    for method in methods:
        block[method] = {}
        for metric in metrics:
            rows = {h: v[metric][method] for h, v in verdicts.items()
                    if metric in v and method in v[metric]}
            ahead = [h for h, r in rows.items() if r["ahead"]]
            early = [h for h, r in rows.items() if r["ahead_early"]]
            each: dict[str, list[str]] = {}
            for h, r in rows.items():
                for base, v in r["versus"].items():
                    each.setdefault(base, [])
                    if v["ahead"]:
                        each[base].append(h)
            block[method][metric] = {
                "systems": len(rows), "ahead_of_baselines": len(ahead),
                "ahead_of_baselines_systems": ahead, "ahead_early": len(early),
                "ahead_early_systems": early,
                "behind": {h: r["behind"] for h, r in rows.items() if r["behind"]},
                "ahead_of_each": each}
    return block
