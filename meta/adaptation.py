"""Few-shot adaptation of many (trajectory, starting point) pairs in one call per step.

:func:`meta.evaluate.adapt_and_evaluate` adapts one starting point to one trajectory:
``0 … S`` SGD steps on its ``K`` support points, and after the evaluated steps an RK4
rollout from the first state, scored by the rollout MSE, the short-horizon NMSE and the
held-out derivative NMSE. :func:`adapt_many` does the same for ``P`` pairs at once:
every pair gets its own copy of the parameters (stacked ``[P, ...]``), the pairs' support
points, start states and held-out points are each laid out as one batch of graphs
(:func:`meta.batched.stack_points`), so that each adaptation step is one forward and
backward pass, each rollout one integration of all pairs together, and each derivative
score one forward pass. The results are those of :func:`meta.evaluate.adapt_and_evaluate`
pair by pair (to rounding: batched and single matrix products round differently, which
a chaotic rollout can amplify over a long horizon).

A pair's step rule is a float (every parameter), or per-parameter rates (learned
Meta-SGD rates, or rates for the decoder only, ANIL); a parameter without a rate in a
pair's rule is not adapted for that pair.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from hogn import integrators
from hogn.models.base import DynamicsModel
from meta.algorithms import InnerLR, LossFn, predict
from meta.batched import (
    StackedPoints,
    blocked_params,
    inner_loop,
    row_kinds,
    stack_points,
    task_losses,
)
from meta.evaluate import Adaptation, AdaptationPoints, check_eval_steps, rollout_mse
from meta.metrics import derivative_nmse, short_rollout_nmse

__all__ = ["OPTIMIZERS", "adapt_many"]


def _rates(model: DynamicsModel, params: Mapping[str, Tensor], rules: Sequence[InnerLR]
           ) -> dict[str, Tensor]:
    """Per-pair rates ``[P, ...]`` (``[P, 1, ...]`` where every rule is a float) of the
    parameters any pair adapts; 0 where a pair's rule has no rate for a parameter."""
    names = [k for k in params
             if any(not isinstance(r, Mapping) or k in r for r in rules)]
    unknown = sorted({k for r in rules if isinstance(r, Mapping) for k in r} - set(params))
    if unknown:
        raise ValueError(f"rates for unknown parameter(s) {', '.join(unknown)}")
    if not names:
        raise ValueError("no pair adapts any parameter")
    out = {}
    for k in names:
        ref = params[k]
        shape = ref.shape[1:]
        if all(not isinstance(r, Mapping) for r in rules):
            out[k] = torch.tensor([float(r) for r in rules], dtype=ref.dtype,  # type: ignore[arg-type]
                                  device=ref.device).reshape(-1, *[1] * len(shape))
            continue
        rows = []
        for r in rules:
            if isinstance(r, Mapping):
                rate = r.get(k)
                rows.append(ref.new_zeros(shape) if rate is None
                            else rate.detach().to(ref).expand(shape))
            else:
                rows.append(ref.new_full(shape, float(r)))
        out[k] = torch.stack(rows)
    return out


OPTIMIZERS = ("sgd", "adam")
"""Step rules of :func:`adapt_many`."""
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def _adam_step(model: DynamicsModel, current: Mapping[str, Tensor], support: StackedPoints,
               loss: str | LossFn, rates: Mapping[str, Tensor], kinds: Mapping[str, str],
               moments: dict[str, tuple[Tensor, Tensor]], step: int
               ) -> tuple[dict[str, Tensor], list[Tensor]]:
    """One Adam step of every pair on its own support loss (``torch.optim.Adam``'s rule,
    elementwise, so the pairs stay independent); ``moments`` is updated in place."""
    live = {k: current[k].detach().requires_grad_(True) for k in rates}
    values = task_losses(model, {**current, **live}, support, loss, kinds)
    grads = torch.autograd.grad(values.sum(), list(live.values()), allow_unused=True,
                                materialize_grads=True)
    b1, b2 = ADAM_BETAS
    out = dict(current)
    for (k, theta), g in zip(live.items(), grads, strict=True):
        m, v = moments.get(k, (torch.zeros_like(g), torch.zeros_like(g)))
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        moments[k] = (m, v)
        update = (m / (1 - b1 ** step)) / ((v / (1 - b2 ** step)).sqrt() + ADAM_EPS)
        out[k] = (theta - rates[k] * update).detach()
    return out, [values.detach()]


def _split(x: Tensor, stacked: StackedPoints, j: int, nodes: int) -> Tensor:
    """Pair ``j``'s own nodes of per-node values ``[..., N, d]``."""
    a = stacked.offsets[j]
    return x[..., a:a + nodes, :]


def adapt_many(model: DynamicsModel, starts: Sequence[Mapping[str, Tensor]],
               trajectories: Sequence[Any], rules: Sequence[InnerLR], seeds: Sequence[int],
               shots: int = 50, steps: int = 100, loss: str | LossFn = "logcosh",
               eval_steps: Sequence[int] | None = None, n_particles: int | None = None,
               integrator: str = "rk4", substeps: int = 1, keep: Sequence[int] = (),
               noise: float = 0.0, optimizer: str = "sgd", rollouts: bool = True
               ) -> list[Adaptation]:
    """:func:`meta.evaluate.adapt_and_evaluate` for ``P`` pairs at once.

    Pair ``j`` adapts ``starts[j]`` to ``trajectories[j]`` with the rule ``rules[j]`` on
    the ``shots`` points drawn with ``seeds[j]``; the other arguments are shared and
    mean what they mean there.

    Args:
        model: The model (its own weights are not changed); every parameter must be in
            an MLP that says its rows (:func:`meta.batched.row_kinds`).
        starts: Starting parameters of each pair.
        trajectories: A one-trajectory ``systems.Dataset`` per pair, all with the same
            number of saved times and ``dt`` where there are rollouts (one rollout
            integrates every pair); any, of any systems, with ``rollouts=False``.
        rules: Each pair's step rule: a float, or per-parameter rates.
        seeds: Each pair's seed of the draw of its support points.
        shots: Support points ``K``.
        steps: Adaptation steps ``S``.
        loss: Loss name or element-wise penalty.
        eval_steps: Steps after which to roll out and score (default every step).
        n_particles: Padded layout size (default: the model's ``n_particles``, if any).
        integrator: Integrator of the rollouts.
        substeps: Integrator steps per saved interval.
        keep: Steps whose rollouts are returned.
        noise: Observation noise of the support points (see
            :class:`meta.evaluate.AdaptationPoints`).
        optimizer: ``"sgd"`` (plain steps, the paper's adaptation) or ``"adam"`` (Adam
            with the rule's rate, each pair its own moments: a network trained on its
            support points, e.g. from random init to convergence).
        rollouts: Roll out after the evaluated steps (``False``: only the derivative
            NMSE is scored, the rollout scores are ``nan``; for cheap selection of
            hyper-parameters).

    Returns:
        One :class:`meta.evaluate.Adaptation` per pair, in order.

    Raises:
        ValueError: for lists of different lengths, no pair, trajectories of different
            lengths or time steps, or the errors of ``adapt_and_evaluate``.
    """
    pairs = len(starts)
    if pairs == 0:
        raise ValueError("adapt_many needs at least one pair")
    if not len(trajectories) == len(rules) == len(seeds) == pairs:
        raise ValueError(f"starts, trajectories, rules and seeds must have one entry per "
                         f"pair, got {pairs}, {len(trajectories)}, {len(rules)}, {len(seeds)}")
    evals = check_eval_steps(steps, eval_steps, keep)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of: "
                         f"{', '.join(OPTIMIZERS)}")
    ref = next(iter(starts[0].values()))
    if n_particles is None:
        n_particles = getattr(model, "n_particles", None)
    cache: dict[tuple[int, int], AdaptationPoints] = {}
    trajs = []
    for traj, seed in zip(trajectories, seeds, strict=True):
        key = (id(traj), int(seed))
        if key not in cache:
            cache[key] = AdaptationPoints(traj, shots, int(seed), n_particles, ref.dtype,
                                          ref.device, noise)
        trajs.append(cache[key])
    if (rollouts or keep) and len({(t.num_times, t.dt) for t in trajs}) > 1:
        raise ValueError("adapt_many integrates every pair together: the trajectories must "
                         "share their number of saved times and dt, got "
                         f"{sorted({(t.num_times, t.dt) for t in trajs})} (without "
                         "rollouts, any may be adapted together)")
    num_times, dt = trajs[0].num_times, trajs[0].dt
    kinds = row_kinds(model)
    used = set(kinds.values())
    support = stack_points([t.support for t in trajs], used, model.uses_edges)
    start = stack_points([t.start for t in trajs], used, model.uses_edges)
    heldout = (stack_points([t.heldout for t in trajs], used, model.uses_edges)  # type: ignore[misc]
               if trajs[0].heldout is not None else None)
    sizes = [t.start.graph.num_nodes for t in trajs]
    masks = [t.start.mask for t in trajs]
    current = {k: torch.stack([s[k].detach() for s in starts]) for k in starts[0]}
    rates = _rates(model, current, rules)
    keep_start = start.weight[:, None]

    def field(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        dq, dp = predict(model, blocked, start.graph, q, p, create_graph=False)
        return (dq * keep_start).detach(), (dp * keep_start).detach()

    rows: list[dict[str, list]] = [{"mse": [], "short": [], "deriv": [], "support": []}
                                   for _ in range(pairs)]
    kept: list[dict[int, tuple[Tensor, Tensor]]] = [{} for _ in range(pairs)]
    moments: dict[str, tuple[Tensor, Tensor]] = {}
    nan = torch.full((num_times, start.graph.num_nodes, start.graph.q.shape[-1]), math.nan,
                     dtype=ref.dtype, device=ref.device)
    for s in range(steps + 1):
        if s in evals or s in keep:
            blocked = blocked_params(model, current, start, kinds)
            q = p = nan
            if rollouts or s in keep:
                with torch.no_grad():
                    q, p = integrators.integrate(field, start.graph.q, start.graph.p, dt,
                                                 num_times - 1, method=integrator,
                                                 substeps=substeps, separable=model.separable)
            if s in evals and heldout is not None:
                dq, dp = predict(model, blocked_params(model, current, heldout, kinds),
                                 heldout.graph, create_graph=False)
            for j in range(pairs):
                qj, pj = _split(q, start, j, sizes[j]), _split(p, start, j, sizes[j])
                t = trajs[j]
                if s in evals and not rollouts:
                    rows[j]["mse"].append(torch.tensor(math.nan, dtype=ref.dtype))
                    rows[j]["short"].append(math.nan)
                elif s in evals:
                    rows[j]["mse"].append(rollout_mse(qj, pj, t.q_true, t.p_true, masks[j]))
                    rows[j]["short"].append(short_rollout_nmse(qj, pj, t.q_true, t.p_true,
                                                               masks[j]))
                if s in evals:
                    if heldout is None or t.heldout is None:
                        rows[j]["deriv"].append(float("nan"))
                    else:
                        h = t.heldout
                        n = h.graph.num_nodes
                        rows[j]["deriv"].append(derivative_nmse(
                            _split(dq, heldout, j, n).detach(),
                            _split(dp, heldout, j, n).detach(), h.dq, h.dp, h.mask))
                if s in keep:
                    real = slice(None) if masks[j] is None else masks[j]
                    kept[j][s] = (qj[:, real], pj[:, real])
        with torch.enable_grad():
            if s == steps:
                final = task_losses(model, current, support, loss, kinds).detach()
                for j in range(pairs):
                    rows[j]["support"].append(final[j])
                break
            if optimizer == "adam":
                adapted, losses = _adam_step(model, current, support, loss, rates, kinds,
                                             moments, s + 1)
            else:
                adapted, losses = inner_loop(model, current, support, loss, 1, rates,
                                             create_graph=False, only=list(rates), kinds=kinds)
        for j in range(pairs):
            rows[j]["support"].append(losses[0][j])
        current = {k: v.detach() for k, v in adapted.items()}
    steps_t = torch.tensor(evals, dtype=torch.long)
    return [Adaptation(steps_t.clone(),
                       torch.stack(r["mse"]).cpu() if r["mse"] else torch.empty(0),
                       torch.stack(r["support"]).cpu(), kept[j],
                       torch.tensor(r["deriv"], dtype=torch.float64),
                       torch.tensor(r["short"], dtype=torch.float64))
            for j, r in enumerate(rows)]
