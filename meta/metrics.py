"""Scale-free adaptation metrics and paired comparisons of two starting points.

The paper's metric (the MSE of the RK4 rollout from the first state after each
adaptation step, :func:`meta.evaluate.rollout_mse`) is dominated by the late, chaotic
part of a trajectory and by its scale, so it says little about whether a few steps of
adaptation learned the *vector field*. The functions here add two normalised views and
a fair way to compare two methods on the same trajectories:

- :func:`derivative_nmse`: the derivative error at the trajectory's points outside the
  ``K`` support points, divided by the error of a zero vector field (so ``0`` is exact,
  ``1`` is as good as predicting nothing). :func:`held_out` lists those points.
- :func:`short_rollout_nmse`: the rollout error over the first 10 % of the horizon,
  divided by the error of the *do-nothing* prediction (the initial state held still).
  :func:`short_steps` says how many steps that is.
- :func:`paired_comparison`: per-trajectory values of one metric at one adaptation
  step for two methods (e.g. meta-trained vs random init): share of trajectories where
  the first is lower, median ratio with a seeded bootstrap interval and the two-sided
  Wilcoxon signed-rank p-value (scipy), and a verdict; :func:`ahead_on_system` turns
  the verdicts at several steps into one per system.

Everything is a pure function: torch tensors (any device or dtype; detached) or numpy
arrays in, computed in float64, plain floats, arrays and dataclasses out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

__all__ = [
    "PairedComparison",
    "ahead_on_system",
    "derivative_nmse",
    "held_out",
    "paired_comparison",
    "short_rollout_nmse",
    "short_steps",
]

ArrayLike = npt.ArrayLike | torch.Tensor
"""Anything :func:`numpy.asarray` accepts, or a torch tensor on any device."""

_BOOTSTRAP_CHUNK = 2_000_000  # resampled values held at once by the bootstrap


def _array(x: ArrayLike, name: str) -> np.ndarray:
    """``x`` as a float64 numpy array (torch tensors are detached and moved to the CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.dtype.kind != "f":  # pragma: no cover - asarray(dtype=float64) guarantees it
        raise ValueError(f"{name} must be numeric")
    return arr


def _real(arr: np.ndarray, mask: ArrayLike | None, name: str) -> np.ndarray:
    """The entries of ``arr [..., d]`` at real particles: ``[R, d]`` (all if no mask).

    ``mask`` is broadcast against ``arr.shape[:-1]`` from the right, so ``[N]`` selects
    particles of ``[T, N, d]`` and ``[M·n]`` selects rows of flattened points ``[M·n, d]``.
    """
    if mask is None:
        return arr.reshape(-1, arr.shape[-1])
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        raise ValueError(f"mask must be boolean, got dtype {m.dtype}")
    try:
        m = np.broadcast_to(m, arr.shape[:-1])
    except ValueError:
        raise ValueError(f"mask of shape {m.shape} does not match {name} of shape "
                         f"{arr.shape} (expected [N] for [..., N, d])") from None
    return arr[m]


def _same_shapes(named: Mapping[str, np.ndarray]) -> None:
    shapes = {k: v.shape for k, v in named.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError("shapes differ: " + ", ".join(f"{k} {s}" for k, s in shapes.items()))
    first = next(iter(named.values()))
    if first.ndim < 2:
        raise ValueError(f"expected arrays [..., N, d], got shape {first.shape}")


def _ratio(num: float, den: float) -> float:
    """``num / den`` for non-negative sums: ``0/0 = 0``, ``x/0 = inf``, ``nan`` → ``inf``."""
    if not math.isfinite(num):
        return math.inf
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def held_out(num_times: int, support: ArrayLike) -> np.ndarray:
    """The time indices of a trajectory that are not support points.

    Args:
        num_times: Saved times ``T`` of the trajectory.
        support: Indices of the ``K`` support points ``[K]`` (any order, repeats allowed).

    Returns:
        Sorted indices ``[T - K']`` (int64) of the held-out points, ``K'`` the distinct
        support indices.

    Raises:
        ValueError: if a support index lies outside ``0 … T − 1``.
    """
    if isinstance(support, torch.Tensor):
        support = support.detach().cpu().numpy()
    idx = np.asarray(support, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= num_times):
        raise ValueError(f"support indices must lie in 0..{num_times - 1}, got "
                         f"{idx.min()}..{idx.max()}")
    keep = np.ones(num_times, dtype=bool)
    keep[idx] = False
    return np.flatnonzero(keep).astype(np.int64)


def derivative_nmse(dq: ArrayLike, dp: ArrayLike, dq_true: ArrayLike, dp_true: ArrayLike,
                    mask: ArrayLike | None = None) -> float:
    """Derivative error at held-out points, relative to a zero vector field.

    ``Σ (ŷ − y)² / Σ y²`` with ``y = (dq, dp)`` the true time derivatives, summed over
    the held-out points (the trajectory's points outside the ``K`` support points, see
    :func:`held_out`), the real particles and every component. ``0`` is exact, ``1`` is
    the error of predicting ``dq = dp = 0``; the value does not change when the
    derivatives (or the system's units) are scaled.

    Args:
        dq: Predicted ``dq`` at the held-out points ``[T', N, d]`` (any ``[..., N, d]``).
        dp: Predicted ``dp``, same shape.
        dq_true: True ``dq``, same shape.
        dp_true: True ``dp``, same shape.
        mask: ``[N]`` bool of real particles (``None``: all); padded particles are
            ignored whatever their values. Any boolean array broadcastable to
            ``shape[:-1]`` works (e.g. ``[T'·N]`` for flattened points ``[T'·N, d]``).

    Returns:
        The normalised MSE, a float ``>= 0``. A non-finite prediction (a diverged model)
        gives ``inf``; if the true derivatives are all zero the result is ``0.0`` for an
        exact prediction and ``inf`` otherwise.

    Raises:
        ValueError: if the shapes differ or the mask does not fit.
    """
    arrs = {"dq": _array(dq, "dq"), "dp": _array(dp, "dp"),
            "dq_true": _array(dq_true, "dq_true"), "dp_true": _array(dp_true, "dp_true")}
    _same_shapes(arrs)
    real = {k: _real(v, mask, k) for k, v in arrs.items()}
    with np.errstate(over="ignore", invalid="ignore"):
        num = float(np.sum(np.square(real["dq"] - real["dq_true"]))
                    + np.sum(np.square(real["dp"] - real["dp_true"])))
        den = float(np.sum(np.square(real["dq_true"])) + np.sum(np.square(real["dp_true"])))
    return _ratio(num, den)


def short_steps(num_times: int, fraction: float = 0.1) -> int:
    """How many steps after the initial state :func:`short_rollout_nmse` scores.

    ``max(1, ceil(fraction · (T − 1)))``: the horizon has ``T − 1`` steps and the
    count is rounded *up* so the scored window covers at least ``fraction`` of it. A
    product that exceeds an integer only by floating-point rounding (``0.1 · 30 =
    3.0000000000000004``) counts as that integer (3, not 4).

    Args:
        num_times: Saved times ``T`` of the trajectory, initial state included (``>= 2``).
        fraction: Share of the horizon, in ``(0, 1]``.

    Returns:
        The number of steps ``m``, ``1 <= m <= T − 1``: times ``1 … m`` are scored.

    Raises:
        ValueError: if ``num_times < 2`` or ``fraction`` lies outside ``(0, 1]``.
    """
    if not isinstance(num_times, (int, np.integer)) or num_times < 2:
        raise ValueError(f"num_times must be an int >= 2, got {num_times!r}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
    horizon = int(num_times) - 1
    exact = fraction * horizon
    steps = math.ceil(exact - 1e-9 * max(1.0, exact))
    return min(horizon, max(1, steps))


def short_rollout_nmse(q: ArrayLike, p: ArrayLike, q_true: ArrayLike, p_true: ArrayLike,
                       mask: ArrayLike | None = None, fraction: float = 0.1) -> float:
    """Rollout error over the first part of the horizon, relative to doing nothing.

    With ``x_t = (q_t, p_t)`` and ``m =`` :func:`short_steps` ``(T, fraction)`` (rounded
    up, at least one step):
    ``Σ_{t=1..m} (x̂_t − x_t)² / Σ_{t=1..m} (x_0 − x_t)²``, summed over real particles
    and components. The initial time is left out (the rollout starts from ``x_0``). ``1``
    is the error of holding the initial state still, ``0`` is exact.

    Args:
        q: Predicted positions ``[T, N, d]`` (a rollout from ``x_0``, ``q[0]`` the start).
        p: Predicted momenta ``[T, N, d]``.
        q_true: True positions ``[T, N, d]``.
        p_true: True momenta ``[T, N, d]``.
        mask: ``[N]`` bool of real particles (``None``: all); padded particles are
            ignored whatever their values.
        fraction: Share of the ``T − 1`` steps to score (default 10 %).

    Returns:
        The normalised MSE, a float ``>= 0``. A non-finite prediction in the window (a
        diverged rollout) gives ``inf``; if the true state does not move in the window
        the result is ``0.0`` for an exact prediction and ``inf`` otherwise.

    Raises:
        ValueError: if the shapes differ or are not ``[T, N, d]`` with ``T >= 2``, the
            mask does not fit, or ``fraction`` lies outside ``(0, 1]``.
    """
    arrs = {"q": _array(q, "q"), "p": _array(p, "p"),
            "q_true": _array(q_true, "q_true"), "p_true": _array(p_true, "p_true")}
    _same_shapes(arrs)
    shape = arrs["q"].shape
    if len(shape) != 3:
        raise ValueError(f"expected trajectories [T, N, d], got shape {shape}")
    m = short_steps(shape[0], fraction)
    window = {k: v[: m + 1] for k, v in arrs.items()}
    real = {k: _real(v, mask, k).reshape(m + 1, -1, shape[-1]) for k, v in window.items()}
    with np.errstate(over="ignore", invalid="ignore"):
        num = sum(float(np.sum(np.square(real[k][1:] - real[f"{k}_true"][1:])))
                  for k in ("q", "p"))
        den = sum(float(np.sum(np.square(real[f"{k}_true"][1:] - real[f"{k}_true"][:1])))
                  for k in ("q", "p"))
    return _ratio(num, den)


@dataclass(frozen=True)
class PairedComparison:
    """Method ``a`` against method ``b`` on the same trajectories (one metric, one step).

    Attributes:
        n: Pairs used (both values finite).
        dropped: Pairs left out because ``a`` or ``b`` (or both) was not finite.
        a_nonfinite: Of the dropped pairs, those with ``a`` not finite (e.g. diverged).
        b_nonfinite: Of the dropped pairs, those with ``b`` not finite.
        share_lower: Share of the ``n`` pairs with ``a < b`` strictly (ties count as not
            lower); ``nan`` if ``n == 0``.
        ties: Pairs with ``a == b``.
        median_ratio: Median over pairs of ``a / b`` (``0/0 = 1``, ``x/0 = inf``).
        ci_low: Lower end of the bootstrap percentile interval of the median ratio.
        ci_high: Upper end of that interval.
        confidence: Level of the interval (e.g. 0.95).
        p_value: Two-sided Wilcoxon signed-rank p-value of ``a − b`` (scipy's
            ``wilcoxon``, default ``zero_method="wilcox"``: zero differences are
            dropped); ``1.0`` when every difference is zero or no pair is left.
        lower: ``a`` is *ahead*: ``median_ratio < 1`` and ``p_value < alpha``.
        alpha: Significance level of :attr:`lower`.
        resamples: Bootstrap resamples.
        seed: Seed of the bootstrap.
    """

    n: int
    dropped: int
    a_nonfinite: int
    b_nonfinite: int
    share_lower: float
    ties: int
    median_ratio: float
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float
    lower: bool
    alpha: float
    resamples: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """Plain Python ints, floats and bools (``nan``/``inf`` kept as floats, which
        ``json.dumps`` writes as ``NaN``/``Infinity``, as :func:`hogn.report.write_json`
        does)."""
        return asdict(self)


def _ratios(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a / b`` element-wise for non-negative finite values: ``0/0 = 1``, ``x/0 = inf``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = a / b
    r[(a == 0) & (b == 0)] = 1.0
    return r


def _quantiles(x: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Linear-interpolation quantiles of non-negative ``x`` that may hold ``inf``."""
    big = np.finfo(np.float64).max
    out = np.quantile(np.minimum(x, big), qs)
    out[out >= big] = np.inf
    return out


def _bootstrap_medians(r: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Medians of ``resamples`` resamples (with replacement) of ``r [n]``: ``[resamples]``."""
    rng = np.random.default_rng(seed)
    n = r.size
    rows = max(1, _BOOTSTRAP_CHUNK // n)
    out = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = np.median(r[idx], axis=1)
    return out


def _wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of ``d`` (scipy); 1.0 if undefined."""
    if d.size == 0 or not np.any(d != 0):
        return 1.0
    from scipy.stats import wilcoxon

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(wilcoxon(d).pvalue)
    except ValueError:
        return 1.0
    return p if math.isfinite(p) else 1.0


def paired_comparison(a: ArrayLike, b: ArrayLike, seed: int = 0, resamples: int = 10_000,
                      confidence: float = 0.95, alpha: float = 0.05) -> PairedComparison:
    """Compare two methods' per-trajectory values of one metric at one adaptation step.

    ``a[i]`` and ``b[i]`` are the same metric (lower is better) on the same trajectory
    ``i``, e.g. the rollout MSE of the meta-trained and the random-init starting point
    after 5 steps. Reported: the share of trajectories where ``a`` is lower, the median
    of the per-trajectory ratios ``a[i] / b[i]`` with a bootstrap percentile interval
    (``resamples`` resamples of the ratios with replacement, drawn by
    ``numpy.random.default_rng(seed)``, vectorised), and the two-sided Wilcoxon
    signed-rank p-value of ``a − b`` from ``scipy.stats.wilcoxon``.

    Handling of awkward values:

    - *Non-finite* (``nan``/``±inf``, e.g. a diverged rollout): the pair is dropped from
      every statistic and counted in ``dropped`` (and ``a_nonfinite``/``b_nonfinite``);
      report divergences separately, since dropping them favours the method that
      diverges more.
    - *Zeros*: ``0/0`` is a ratio of 1 (a tie), ``x/0`` with ``x > 0`` is ``inf`` (a lost
      pair); the median and interval may then be ``inf``.
    - *Ties* (``a == b``): not lower in ``share_lower``, counted in ``ties``; Wilcoxon
      drops zero differences (scipy's default); all differences zero (or no pair
      left) gives ``p = 1.0``, as does any case where scipy returns ``nan``.

    Args:
        a: Values of the first method ``[M]`` (non-negative, e.g. MSE or NMSE).
        b: Values of the second method ``[M]``, same trajectories in the same order.
        seed: Seed of the bootstrap (the result is reproducible for a given seed).
        resamples: Bootstrap resamples.
        confidence: Level of the percentile interval, in ``(0, 1)``.
        alpha: Significance level of the ``lower`` verdict.

    Returns:
        A :class:`PairedComparison`; ``lower`` is true when ``median_ratio < 1`` and
        ``p_value < alpha``. With no finite pair: ``n = 0``, ``nan`` share, median and
        interval, ``p = 1.0`` and ``lower = False``.

    Raises:
        ValueError: if ``a`` and ``b`` are not 1-D of the same length, a finite value is
            negative, or ``resamples``/``confidence``/``alpha`` are out of range.
    """
    x, y = _array(a, "a"), _array(b, "b")
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"a and b must be 1-D of the same length, got {x.shape} and {y.shape}")
    if not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples must be a positive int, got {resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    fin_a, fin_b = np.isfinite(x), np.isfinite(y)
    ok = fin_a & fin_b
    x, y = x[ok], y[ok]
    if np.any(x < 0) or np.any(y < 0):
        raise ValueError("paired_comparison expects non-negative values (errors); "
                         "got a negative one")
    n = int(x.size)
    common = {"n": n, "dropped": int((~ok).sum()), "a_nonfinite": int((~fin_a).sum()),
              "b_nonfinite": int((~fin_b).sum()), "ties": int(np.sum(x == y)),
              "confidence": float(confidence), "alpha": float(alpha),
              "resamples": int(resamples), "seed": int(seed)}
    if n == 0:
        return PairedComparison(share_lower=math.nan, median_ratio=math.nan, ci_low=math.nan,
                                ci_high=math.nan, p_value=1.0, lower=False, **common)
    r = _ratios(x, y)
    median = float(np.median(r))
    medians = _bootstrap_medians(r, int(resamples), int(seed))
    tail = (1.0 - confidence) / 2.0
    lo, hi = _quantiles(medians, [tail, 1.0 - tail])
    p = _wilcoxon_p(x - y)
    return PairedComparison(share_lower=float(np.mean(x < y)), median_ratio=median,
                            ci_low=float(lo), ci_high=float(hi), p_value=p,
                            lower=bool(median < 1.0 and p < alpha), **common)


def ahead_on_system(comparisons_by_step: Mapping[int, PairedComparison],
                    steps: Sequence[int] = (1, 5, 15, 100), alpha: float = 0.05) -> bool:
    """Is method ``a`` ahead of ``b`` on one system, over several adaptation steps?

    A step counts as a win when its comparison has ``median_ratio < 1`` and
    ``p_value < alpha`` (``alpha`` here overrides the one stored in the comparison).
    ``a`` is ahead when it wins at a strict majority (more than half) of the steps of
    ``steps`` present in ``comparisons_by_step``: 2 of 4 is not enough, 3 of 4 is. With
    none of those steps present the answer is ``False``.

    Args:
        comparisons_by_step: Adaptation step → :func:`paired_comparison` of ``a`` vs ``b``.
        steps: The steps to judge (others in the mapping are ignored).
        alpha: Significance level of a win.

    Returns:
        Whether ``a`` is ahead.
    """
    present = [s for s in dict.fromkeys(steps) if s in comparisons_by_step]
    wins = sum(1 for s in present
               if comparisons_by_step[s].median_ratio < 1.0
               and comparisons_by_step[s].p_value < alpha)
    return 2 * wins > len(present)
