"""Few-shot methods that fit a vector field once, scored by the code that scores adaptation.

:func:`meta.evaluate.adapt_and_evaluate` scores a network after each SGD step. The
methods here instead *fit* a field to the ``K`` support points of a trajectory in one
go: the classical regressors of :mod:`meta.fewshot` (do-nothing, affine least squares,
a least-squares Hamiltonian in polynomials, a Hamiltonian kernel, nearest neighbour) and
the closed-form head of a meta-learned basis (:func:`meta.closed_form.solve_head`). A
*fitter* maps the trajectory's :class:`meta.evaluate.AdaptationPoints` (the same ``K``
points, the same observation noise) to a field ``(graph, q, p) -> (dq, dp)``, and
:func:`score_field` scores that field exactly as an adapted network is scored: the RK4
rollout from the first state (the paper's MSE and the short-rollout NMSE) and the
derivative NMSE at the trajectory's other points.

:func:`evaluate_fits` does this for every trajectory of a dataset and returns the same
record as :func:`meta.protocol.evaluate_adaptation`; a fitted method has one value per
trajectory, repeated at every evaluated step (it takes no steps), so that the paired
comparisons of :mod:`meta.summary` compare an adapted network after ``s`` steps with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from hogn import integrators
from hogn.graph import GraphBatch
from hogn.models.base import DynamicsModel
from meta.evaluate import AdaptationPoints, point_seed, rollout_mse
from meta.metrics import derivative_nmse, short_rollout_nmse
from meta.tasks import Points

__all__ = ["Field", "Fitter", "baseline_fitter", "evaluate_fits", "flat_state", "head_fitter",
           "residual_fitter", "score_field"]

Field = Callable[[GraphBatch, Tensor, Tensor], tuple[Tensor, Tensor]]
"""A fitted vector field: ``(graph, q [N, d], p [N, d]) -> (dq, dp) [N, d]``."""

Fitter = Callable[[AdaptationPoints], Field]
"""Fits a field to a trajectory's support points (``points.support``). A fitter may also
have a method ``many(points: Sequence[AdaptationPoints]) -> ManyField`` that fits every
trajectory at once (:func:`fit_many` falls back to one fit each)."""

ManyField = Callable[[GraphBatch, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
"""Fields of several trajectories at once: ``(graph, q, p, owner [G]) -> (dq, dp)``, graph
``g`` following the field fitted to trajectory ``owner[g]`` (each trajectory's graphs
contiguous, in order)."""


def _owner_slices(graph: GraphBatch, owner: Tensor) -> list[tuple[int, slice, slice]]:
    """``(trajectory, graphs, nodes)`` of each trajectory's contiguous run of graphs."""
    ptr = graph.ptr.tolist()
    counts = torch.bincount(owner).tolist()
    out, first = [], 0
    for j, n in enumerate(counts):
        if n:
            out.append((j, slice(first, first + n), slice(ptr[first], ptr[first + n])))
            first += n
    return out


def _from_many(many: Callable[[Sequence[AdaptationPoints]], ManyField]) -> Fitter:
    """A fitter whose one-trajectory fit is its ``many`` fit of that trajectory alone."""
    def fit(points: AdaptationPoints) -> Field:
        field = many([points])

        def one(graph: GraphBatch, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
            owner = torch.zeros(graph.num_graphs, dtype=torch.long, device=q.device)
            return field(graph, q, p, owner)

        return one

    fit.many = many  # type: ignore[attr-defined]
    return fit


def fit_many(fitter: Fitter, points: Sequence[AdaptationPoints]) -> ManyField:
    """Fit ``fitter`` to every trajectory: its own ``many`` if it has one, else one fit per
    trajectory, each field applied to its own trajectory's graphs (a trajectory whose
    state is not finite, a diverged rollout, gets ``nan`` without a call)."""
    many = getattr(fitter, "many", None)
    if many is not None:
        return many(points)
    fields = [fitter(pts) for pts in points]

    def field(graph: GraphBatch, q: Tensor, p: Tensor, owner: Tensor) -> tuple[Tensor, Tensor]:
        dq, dp = torch.full_like(q, math.nan), torch.full_like(p, math.nan)
        for j, graphs, nodes in _owner_slices(graph, owner):
            qj, pj = q[nodes], p[nodes]
            if not (torch.isfinite(qj).all() and torch.isfinite(pj).all()):
                continue
            sub = graph if graphs.start == 0 and graphs.stop == graph.num_graphs else \
                graph.select(torch.arange(graphs.start, graphs.stop))
            dq[nodes], dp[nodes] = fields[j](sub, qj, pj)
        return dq, dp

    return field


def flat_state(q: Tensor, p: Tensor, graph: GraphBatch, mask: Tensor | None = None) -> Tensor:
    """The states of ``G`` equal-size graphs as flat vectors of their real particles.

    Args:
        q: Positions ``[G·n, d]``.
        p: Momenta ``[G·n, d]``.
        graph: The ``G`` graphs (``n`` nodes each).
        mask: ``[G·n]`` bool of real particles (``None``: all real).

    Returns:
        ``x [G, 2·r·d]``: the ``r`` real particles' positions, then their momenta.
    """
    g = graph.num_graphs
    if mask is not None:
        q, p = q[mask], p[mask]
    return torch.cat([q.reshape(g, -1), p.reshape(g, -1)], -1)


def _unflatten(dx: Tensor, like: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """``dx [G, 2·r·d]`` back to ``(dq, dp)`` shaped like ``like [G·n, d]`` (0 at padding)."""
    d = like.shape[-1]
    half = dx.shape[-1] // 2
    dq, dp = dx[:, :half].reshape(-1, d), dx[:, half:].reshape(-1, d)
    if mask is None:
        return dq.to(like), dp.to(like)
    out_q, out_p = like.new_zeros(like.shape), like.new_zeros(like.shape)
    out_q[mask], out_p[mask] = dq.to(like), dp.to(like)
    return out_q, out_p


def baseline_fitter(name: str, **hyper: Any) -> Fitter:
    """A fitter of one classical regressor of :mod:`meta.fewshot` (float64).

    The regressor sees the support points as flat states of their real particles
    (:func:`flat_state`) with their observed derivatives.

    Args:
        name: A method of :data:`meta.fewshot.BASELINES`.
        **hyper: Its hyper-parameters.
    """
    from meta import fewshot

    method = fewshot.get(name, **hyper)

    def fit(points: AdaptationPoints) -> Field:
        s = points.support
        x = flat_state(s.graph.q, s.graph.p, s.graph, s.mask).double()
        dx = flat_state(s.dq, s.dp, s.graph, s.mask).double()
        fitted = method.fit(x, dx)
        mask_n = None if s.mask is None else s.mask[: s.graph.num_nodes // s.num_points]

        def field(graph: GraphBatch, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
            mask = None if mask_n is None else mask_n.repeat(graph.num_graphs)
            return _unflatten(fitted(flat_state(q, p, graph, mask).double()), q, mask)

        return field

    return fit


def residual_fitter(prior: Fitter, lengthscale: float, ridge: float) -> Fitter:
    """A prior's field plus a Hamiltonian-kernel fit of its residual on the support points.

    The prior (e.g. a meta-learned basis with its solved head, :func:`head_fitter`) is
    fitted first; the kernel regressor of :mod:`meta.fewshot` (``"kernel"``) then fits
    what the prior leaves of the observed derivatives, ``dx − f_prior(x)``, so the
    prediction is ``f_prior + f_residual``: a Gaussian process whose mean is the prior.
    Where the prior is right the kernel has little to do; where it is wrong near the
    support points the kernel corrects it there.

    Args:
        prior: The fitter of the prior field.
        lengthscale: Length scale of the residual's kernel (units of each coordinate's
            support std).
        ridge: Relative ridge of the residual's kernel.
    """
    from meta import fewshot

    kernel = fewshot.get("kernel", lengthscale=lengthscale, ridge=ridge)

    def many(points: Sequence[AdaptationPoints]) -> ManyField:
        base = fit_many(prior, points)
        supports = [pts.support for pts in points]
        graph = GraphBatch.cat([s.graph for s in supports])
        owner = torch.repeat_interleave(torch.arange(len(points), device=graph.q.device),
                                        torch.tensor([s.num_points for s in supports],
                                                     device=graph.q.device))
        with torch.no_grad():
            dq0, dp0 = base(graph, graph.q, graph.p, owner)
        fits, masks, first = [], [], 0
        for s in supports:
            nodes = slice(first, first + s.graph.num_nodes)
            first = nodes.stop
            x = flat_state(s.graph.q, s.graph.p, s.graph, s.mask).double()
            rest = flat_state((s.dq - dq0[nodes]).double(), (s.dp - dp0[nodes]).double(),
                              s.graph, s.mask)
            fits.append(kernel.fit(x, rest))
            masks.append(None if s.mask is None
                         else s.mask[: s.graph.num_nodes // s.num_points])

        def field(graph: GraphBatch, q: Tensor, p: Tensor, owner: Tensor
                  ) -> tuple[Tensor, Tensor]:
            dq, dp = base(graph, q, p, owner)
            for j, graphs, nodes in _owner_slices(graph, owner):
                qj, pj = q[nodes], p[nodes]
                if not (torch.isfinite(qj).all() and torch.isfinite(pj).all()):
                    continue
                g = graphs.stop - graphs.start
                mask = None if masks[j] is None else masks[j].repeat(g)
                sub_x = torch.cat([(qj if mask is None else qj[mask]).reshape(g, -1),
                                   (pj if mask is None else pj[mask]).reshape(g, -1)], -1)
                kq, kp = _unflatten(fits[j](sub_x.double()), qj, mask)
                dq[nodes], dp[nodes] = dq[nodes] + kq, dp[nodes] + kp
            return dq, dp

        return field

    return _from_many(many)


def head_fitter(model: DynamicsModel, params: Mapping[str, Tensor], ridge: float) -> Fitter:
    """A fitter that solves the closed-form head of a basis model on the support points
    (:func:`meta.closed_form.solve_head`) and predicts with the solved head.

    Args:
        model: A basis model (``hnn-basis`` or ``hogn-basis``).
        params: Its meta-trained parameters (the features and the prior head).
        ridge: Relative ridge of the solve.
    """
    from meta.closed_form import head_fields, solve_heads

    fixed = {k: v.detach() for k, v in params.items()}

    def many(points: Sequence[AdaptationPoints]) -> ManyField:
        heads = solve_heads(model, fixed, [pts.support for pts in points], ridge).detach()

        def field(graph: GraphBatch, q: Tensor, p: Tensor, owner: Tensor
                  ) -> tuple[Tensor, Tensor]:
            return head_fields(model, fixed, heads, graph, q, p, owner)

        return field

    return _from_many(many)


def score_field(field: Field, points: AdaptationPoints, integrator: str = "rk4",
                substeps: int = 1, rollout: bool = True
                ) -> tuple[float, float, float, tuple[Tensor, Tensor] | None]:
    """Score a fitted field on one trajectory as an adapted network is scored.

    Args:
        field: The fitted field.
        points: The trajectory's points (start, truth, held-out points).
        integrator: Integrator of the rollout (RK4 as in the paper).
        substeps: Integrator steps per saved interval.
        rollout: Roll out (``False``: the two rollout scores are ``nan`` and no rollout
            is returned; for cheap selection of hyper-parameters).

    Returns:
        ``(paper MSE, derivative NMSE, short-rollout NMSE, (q, p))``: the rollout MSE
        from the first state over all saved times, the held-out derivative error over a
        zero field's (``nan`` without held-out points), the first 10 % of the rollout
        over standing still's, and the rollout of the real particles ``[T, r, d]``.
    """
    deriv = float("nan")
    held: Points | None = points.heldout
    if held is not None:
        with torch.no_grad():
            dq, dp = field(held.graph, held.graph.q, held.graph.p)
        deriv = derivative_nmse(dq, dp, held.dq, held.dp, held.mask)
    if not rollout:
        return float("nan"), deriv, float("nan"), None
    start = points.start
    graph = start.graph
    keep = None if start.mask is None else start.mask.to(graph.q.dtype)[:, None]

    def f(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        if not (torch.isfinite(q).all() and torch.isfinite(p).all()):  # diverged: stays nan
            return torch.full_like(q, math.nan), torch.full_like(p, math.nan)
        dq, dp = field(graph, q, p)
        if keep is not None:
            dq, dp = dq * keep, dp * keep
        return dq, dp

    with torch.no_grad():
        q, p = integrators.integrate(f, graph.q, graph.p, points.dt, points.num_times - 1,
                                     method=integrator, substeps=substeps, separable=False)
    mse = float(rollout_mse(q, p, points.q_true, points.p_true, start.mask))
    short = short_rollout_nmse(q, p, points.q_true, points.p_true, start.mask)
    real = slice(None) if start.mask is None else start.mask
    return mse, deriv, short, (q[:, real], p[:, real])


def score_many(field: ManyField, points: Sequence[AdaptationPoints], integrator: str = "rk4",
               substeps: int = 1, rollout: bool = True
               ) -> list[tuple[float, float, float, tuple[Tensor, Tensor] | None]]:
    """:func:`score_field` of several trajectories' fields at once: one rollout of all
    their first states together and one call at all their held-out points.

    Args:
        field: The fields (:func:`fit_many` of ``points``).
        points: The trajectories' points, all with the same saved times and ``dt``.
        integrator: Integrator of the rollouts.
        substeps: Integrator steps per saved interval.
        rollout: Roll out (``False``: the rollout scores are ``nan``).

    Returns:
        One :func:`score_field` tuple per trajectory, in order.

    Raises:
        ValueError: for trajectories of different lengths or time steps.
    """
    if len({(pts.num_times, pts.dt) for pts in points}) > 1:
        raise ValueError("score_many rolls every trajectory out together: they must share "
                         "their number of saved times and dt")
    m = len(points)
    device = points[0].start.graph.q.device
    out: list[list[Any]] = [[math.nan, math.nan, math.nan, None] for _ in range(m)]
    held = [pts.heldout for pts in points]
    if all(h is not None for h in held):
        graph = GraphBatch.cat([h.graph for h in held])  # type: ignore[union-attr]
        owner = torch.repeat_interleave(torch.arange(m, device=device), torch.tensor(
            [h.num_points for h in held], device=device))  # type: ignore[union-attr]
        with torch.no_grad():
            dq, dp = field(graph, graph.q, graph.p, owner)
        first = 0
        for j, h in enumerate(held):
            nodes = slice(first, first + h.graph.num_nodes)  # type: ignore[union-attr]
            first = nodes.stop
            out[j][1] = derivative_nmse(dq[nodes], dp[nodes], h.dq, h.dp, h.mask)  # type: ignore[union-attr]
    if rollout:
        starts = [pts.start for pts in points]
        graph = GraphBatch.cat([st.graph for st in starts])
        owner = torch.arange(m, device=device)
        keep = None
        if any(st.mask is not None for st in starts):
            keep = torch.cat([torch.ones(st.graph.num_nodes, dtype=torch.bool, device=device)
                              if st.mask is None else st.mask for st in starts])
            keep = keep.to(graph.q.dtype)[:, None]

        def f(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
            dq, dp = field(graph, q, p, owner)
            if keep is not None:
                dq, dp = dq * keep, dp * keep
            return dq, dp

        with torch.no_grad():
            q, p = integrators.integrate(f, graph.q, graph.p, points[0].dt,
                                         points[0].num_times - 1, method=integrator,
                                         substeps=substeps, separable=False)
        first = 0
        for j, (pts, st) in enumerate(zip(points, starts, strict=True)):
            nodes = slice(first, first + st.graph.num_nodes)
            first = nodes.stop
            qj, pj = q[:, nodes], p[:, nodes]
            out[j][0] = float(rollout_mse(qj, pj, pts.q_true, pts.p_true, st.mask))
            out[j][2] = short_rollout_nmse(qj, pj, pts.q_true, pts.p_true, st.mask)
            real = slice(None) if st.mask is None else st.mask
            out[j][3] = (qj[:, real], pj[:, real])
    return [tuple(row) for row in out]  # type: ignore[misc]


def evaluate_fits(fitters: Mapping[str, Fitter], data: Any, shots: int = 50,
                  eval_steps: Sequence[int] = (0,), seed: int = 0, noise: float = 0.0,
                  n_particles: Mapping[str, int | None] | None = None,
                  dtype: Mapping[str, torch.dtype] | None = None,
                  device: torch.device | str = "cpu", keep: bool = False,
                  integrator: str = "rk4", rollouts: bool = True) -> dict[str, Any]:
    """Fit every method to every trajectory of ``data`` and score it.

    Trajectory ``i`` is drawn with seed ``seed · 100003 + i``, as in
    :func:`meta.protocol.evaluate_adaptation`, so every method (fitted or adapted) meets
    the same ``K`` points with the same noise.

    Args:
        fitters: Method name → fitter.
        data: Trajectories (a ``systems.Dataset``; ``M`` = all of them).
        shots: Support points ``K``.
        eval_steps: The ``E`` step numbers the values are repeated at.
        seed: Seed of the points' draws.
        noise: Observation noise of the support points (fraction of each coordinate's
            spread).
        n_particles: Method → padded layout size (``None`` or missing: each system's
            own graph).
        dtype: Method → dtype of its points (missing: float64).
        device: Device of the points.
        keep: Return the rollout of the first trajectory (``{method: {step: (q, p)}}``,
            at the first evaluated step).
        integrator: Integrator of the rollouts.
        rollouts: Roll out (``False``: derivative NMSE only, see :func:`score_field`).

    Returns:
        ``{"steps", "mse", "derivative_nmse", "short_rollout_nmse"}`` as
        :func:`meta.protocol.evaluate_adaptation` (each method's ``[M, E]`` float64
        tensor, columns equal), ``"rollouts"`` and ``"fit_seconds"`` (method → seconds
        of fitting and scoring in all).
    """
    import time

    m = len(data)
    if m < 1:
        raise ValueError("no trajectories to fit")
    steps = sorted({int(s) for s in eval_steps})
    layouts = dict(n_particles or {})
    dtypes = dict(dtype or {})
    rows: dict[str, list[tuple[float, float, float]]] = {k: [] for k in fitters}
    seconds = dict.fromkeys(fitters, 0.0)
    kept: dict[str, dict[int, tuple[Tensor, Tensor]]] = {}
    trajectories = [data[i] for i in range(m)]
    cache: dict[tuple[int | None, torch.dtype], list[AdaptationPoints]] = {}
    for name, fitter in fitters.items():
        key = (layouts.get(name), dtypes.get(name, torch.float64))
        if key not in cache:
            cache[key] = [AdaptationPoints(traj, shots, point_seed(seed, i), key[0], key[1],
                                           torch.device(device), noise)
                          for i, traj in enumerate(trajectories)]
        points = cache[key]
        start = time.perf_counter()
        if len({(pts.num_times, pts.dt) for pts in points}) == 1:
            scores = score_many(fit_many(fitter, points), points, integrator, rollout=rollouts)
        else:  # trajectories of different lengths: one at a time
            scores = [score_field(fitter(pts), pts, integrator, rollout=rollouts)
                      for pts in points]
        seconds[name] += time.perf_counter() - start
        rows[name] = [score[:3] for score in scores]
        if keep and scores[0][3] is not None:
            kept[name] = {steps[0]: scores[0][3]}

    def table(j: int) -> dict[str, Tensor]:
        return {k: torch.tensor([r[j] for r in v], dtype=torch.float64)[:, None]
                .repeat(1, len(steps)) for k, v in rows.items()}

    return {"steps": steps, "mse": table(0), "derivative_nmse": table(1),
            "short_rollout_nmse": table(2), "rollouts": kept, "fit_seconds": seconds}
