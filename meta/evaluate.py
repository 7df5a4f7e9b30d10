"""Few-shot adaptation to one unseen trajectory, scored by rollouts.

From given parameters, take ``0 … S`` plain SGD steps on ``K`` points of one
trajectory (the meta-learning paper's evaluation, section 3.3); after the chosen
steps roll the adapted model out with an integrator (RK4 by default) from the
trajectory's first state over its whole time span, and measure the MSE against the
true trajectory (the paper's metric). Two scale-free scores come with it
(:mod:`meta.metrics`): the derivative error at the trajectory's points outside the
``K`` support points relative to a zero field (:func:`meta.metrics.derivative_nmse`),
and the error of the first 10 % of the same rollout relative to standing still
(:func:`meta.metrics.short_rollout_nmse`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from hogn import checks, integrators
from hogn.models.base import DynamicsModel
from meta.algorithms import InnerLR, LossFn, _inner_loop, predict, task_loss
from meta.metrics import derivative_nmse, held_out, short_rollout_nmse
from meta.tasks import Points, _Trajectories

__all__ = ["Adaptation", "AdaptationPoints", "adapt_and_evaluate", "check_eval_steps",
           "heldout_derivative_nmse", "point_seed", "rollout_mse", "rollout_with"]


def point_seed(seed: int, index: int) -> int:
    """The seed of the support points' draw on trajectory ``index`` of a dataset, for an
    evaluation seeded ``seed``: the same for every method, network or fitted, so that all
    meet the same points."""
    return seed * 100_003 + index


@dataclass
class Adaptation:
    """The result of :func:`adapt_and_evaluate`.

    Attributes:
        steps: Adaptation steps at which the model was rolled out, ``[E]`` (long).
        mse: Rollout MSE after each of those steps, ``[E]`` (``inf``/``nan`` when the
            rollout diverged).
        support_loss: Loss on the ``K`` support points after ``0 … S`` steps, ``[S + 1]``.
        rollouts: Step → ``(q, p)`` rollout ``[T, n, d]`` (real particles only), for the
            steps asked for with ``keep``.
        derivative_nmse: After each evaluated step, the derivative error at the
            trajectory's points outside the ``K`` support points relative to a zero
            field (:func:`meta.metrics.derivative_nmse`), ``[E]`` float64 (``nan`` when
            every point is a support point, ``inf`` for a non-finite prediction).
        short_rollout_nmse: After each evaluated step, the error of the first 10 % of
            the rollout relative to standing still
            (:func:`meta.metrics.short_rollout_nmse`), ``[E]`` float64.
    """

    steps: Tensor
    mse: Tensor
    support_loss: Tensor
    rollouts: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)
    derivative_nmse: Tensor = field(
        default_factory=lambda: torch.empty(0, dtype=torch.float64))
    short_rollout_nmse: Tensor = field(
        default_factory=lambda: torch.empty(0, dtype=torch.float64))


def rollout_with(model: DynamicsModel, params: Mapping[str, Tensor], start: Points,
                 dt: float, steps: int, integrator: str = "rk4", substeps: int = 1
                 ) -> tuple[Tensor, Tensor]:
    """Integrate the model at ``params`` from the states of ``start``.

    Padding particles (``start.mask`` false) get zero derivatives, so they stay at
    their zero state, as during training.

    Args:
        model: A derivative model.
        params: Parameters to use (detached internally; no autograd graph is kept).
        start: Initial states (one or more graphs); only ``start.graph`` is used.
        dt: Time step.
        steps: Saved steps ``T``.
        integrator: Integrator name.
        substeps: Integrator steps per saved step.

    Returns:
        ``q, p [T + 1, N, d]``.
    """
    graph = start.graph
    fixed = {k: v.detach() for k, v in params.items()}
    keep = None if start.mask is None else start.mask.to(graph.q.dtype)[:, None]

    def field_(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        dq, dp = predict(model, fixed, graph, q, p, create_graph=False)
        if keep is not None:
            dq, dp = dq * keep, dp * keep
        return dq.detach(), dp.detach()

    with torch.no_grad():
        return integrators.integrate(field_, graph.q, graph.p, dt, steps, method=integrator,
                                     substeps=substeps, separable=model.separable)


def rollout_mse(q: Tensor, p: Tensor, q_true: Tensor, p_true: Tensor,
                mask: Tensor | None = None) -> Tensor:
    """Mean squared error of a rollout over times, real particles and ``q, p`` components.

    Args:
        q: Predicted positions ``[T, N, d]`` (and ``p`` alike).
        p: Predicted momenta ``[T, N, d]``.
        q_true: True positions ``[T, N, d]``.
        p_true: True momenta ``[T, N, d]``.
        mask: ``[N]`` bool of real particles (``None``: all).

    Returns:
        Scalar MSE.
    """
    err = torch.cat([q - q_true, p - p_true], -1).square()  # [T, N, 2d]
    if mask is not None:
        err = err[:, mask]
    return err.mean()


def heldout_derivative_nmse(model: DynamicsModel, params: Mapping[str, Tensor],
                            points: Points | None) -> float:
    """:func:`meta.metrics.derivative_nmse` of the model at ``params`` on ``points``.

    Args:
        model: A derivative model.
        params: Parameters to use (no autograd graph is kept).
        points: The held-out points of a trajectory (``graph`` of ``M'`` points with
            ``dq, dp [M'·n, d]`` and the padding ``mask [M'·n]``), or ``None`` when
            there are none.

    Returns:
        The normalised derivative error (``nan`` without points).
    """
    if points is None:
        return math.nan
    fixed = {k: v.detach() for k, v in params.items()}
    with torch.no_grad():  # Hamiltonian models differentiate H internally all the same
        dq, dp = predict(model, fixed, points.graph, create_graph=False)
    return derivative_nmse(dq, dp, points.dq, points.dp, points.mask)


def check_eval_steps(steps: int, eval_steps: Sequence[int] | None, keep: Sequence[int]
                     ) -> list[int]:
    """The sorted evaluated steps (default every step ``0 … steps``), after checking that
    they and ``keep`` lie in ``0 … steps``; ``ValueError`` otherwise."""
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    evals = sorted(set(range(steps + 1) if eval_steps is None else eval_steps))
    if any(not 0 <= s <= steps for s in [*evals, *keep]):
        raise ValueError(f"eval_steps and keep must lie in 0..{steps}, got "
                         f"{list(eval_steps or [])} and {list(keep)}")
    return evals


class AdaptationPoints:
    """The points of one trajectory that an adaptation uses and is scored on.

    Args:
        trajectory: A ``systems.Dataset`` of one trajectory (``data[i]``).
        shots: Support points ``K`` (drawn without replacement, seeded).
        seed: Seed of the draw.
        n_particles: Padded layout size (``None``: the graph layout).
        dtype: Floating dtype to convert the data to.
        device: Device to move the data to.
        noise: Observation noise ``σ`` of the support points, as a fraction of each
            coordinate's spread: every coordinate of the support states ``q, p`` and of
            their derivatives ``dq, dp`` gets Gaussian noise of standard deviation ``σ``
            times that coordinate's standard deviation over the trajectory's saved
            points (seeded by ``seed``; constant coordinates and padding get none). The
            held-out points, the start and the truth stay exact: methods fitted to
            noisy observations are scored against the true field and trajectory.

    Attributes:
        support: The ``K`` support points.
        start: The first saved state (one graph).
        heldout: The trajectory's other points (``None`` when ``K = T``).
        q_true: True positions ``[T, n, d]`` (and ``p_true``).
        num_times: ``T``.
        dt: Time between saved states.

    Raises:
        ValueError: if ``trajectory`` does not hold one trajectory or has fewer than
            ``shots`` points.
    """

    def __init__(self, trajectory: Any, shots: int, seed: int, n_particles: int | None,
                 dtype: torch.dtype, device: torch.device, noise: float = 0.0) -> None:
        if len(trajectory) != 1:
            raise ValueError(f"adaptation needs a dataset of one trajectory (data[i]), got "
                             f"{len(trajectory)}")
        data = trajectory.to(device, dtype)
        traj = _Trajectories("trajectory", data, "all")
        t = traj.num_times
        if not isinstance(shots, int) or not 1 <= shots <= t:
            raise ValueError(f"shots must be an int in 1..{t}, got {shots!r}")
        gen = torch.Generator().manual_seed(seed)
        times = torch.randperm(t, generator=gen)[:shots].sort().values
        self.num_times, self.dt = t, float(data.dt)
        self.support = traj.points(0, times, n_particles)
        self.start = traj.points(0, torch.tensor([0]), n_particles)
        truth = traj.points(0, torch.arange(t), n_particles)
        n = self.start.graph.num_nodes
        self.q_true = truth.graph.q.reshape(t, n, -1)
        self.p_true = truth.graph.p.reshape(t, n, -1)
        unseen = held_out(t, times)
        self.heldout: Points | None = (traj.points(0, torch.from_numpy(unseen), n_particles)
                                       if unseen.size else None)
        self.noise = checks.fraction(noise, "noise")  # of each coordinate's spread
        if self.noise > 0:
            self.support = _noisy(self.support, truth, t, self.noise, seed)


NOISE_SEED = 7_919  # offset of the noise draws' seed from the support draw's


def _noisy(support: Points, truth: Points, num_times: int, noise: float, seed: int) -> Points:
    """``support`` with Gaussian noise of ``noise`` × each coordinate's standard deviation
    over the trajectory (``truth``: its ``T`` points) on ``q, p, dq, dp``."""
    gen = torch.Generator().manual_seed(seed + NOISE_SEED)
    k = support.num_points
    n = support.graph.num_nodes // k
    # the draws cover the real particles only (they come first in each point), so the
    # padded and the graph layout of one trajectory get the same noise
    real = n if support.mask is None else int(support.mask[:n].sum())

    def perturb(x: Tensor, every: Tensor) -> Tensor:
        spread = every.reshape(num_times, n, -1).double().std(0)  # [n, d]
        draw = torch.zeros((k, *spread.shape), dtype=torch.float64)
        draw[:, :real] = torch.randn((k, real, spread.shape[-1]), generator=gen,
                                     dtype=torch.float64)
        return x + (noise * spread * draw).reshape(x.shape).to(x)

    graph = support.graph
    noisy = graph.replace(q=perturb(graph.q, truth.graph.q), p=perturb(graph.p, truth.graph.p))
    return Points(noisy, perturb(support.dq, truth.dq), perturb(support.dp, truth.dp),
                  support.mask, support.times)


def adapt_and_evaluate(model: DynamicsModel, params: Mapping[str, Tensor], trajectory: Any,
                       shots: int = 50, steps: int = 100, inner_lr: InnerLR = 0.01,
                       loss: str | LossFn = "logcosh", eval_steps: Sequence[int] | None = None,
                       n_particles: int | None = None, seed: int = 0,
                       integrator: str = "rk4", substeps: int = 1, keep: Sequence[int] = (),
                       noise: float = 0.0) -> Adaptation:
    """Adapt to ``shots`` points of one trajectory and score rollouts along the way.

    Step ``s`` applies ``θ_{s+1} = θ_s − α ∇L_K(θ_s)`` (first order, nothing kept for
    a meta-gradient) on the same ``K`` points, drawn once (seeded) from the
    trajectory's saved states. After the steps in ``eval_steps`` the model is rolled
    out from the first saved state for the trajectory's ``T − 1`` intervals ``dt``, and
    the MSE over all saved times, real particles and ``q, p`` components is recorded,
    with the normalised error of the first 10 % of that rollout and the normalised
    derivative error at the ``T − K`` points that are not support points (see
    :class:`Adaptation`).

    Args:
        model: The model (its own weights are not changed).
        params: Starting parameters (e.g. meta-trained ones, or :func:`parameters` of a
            freshly initialised model for the random-init baseline).
        trajectory: A ``systems.Dataset`` holding exactly one trajectory (``data[i]``);
            it is converted to the model's dtype and device.
        shots: Support points ``K``.
        steps: Adaptation steps ``S``.
        inner_lr: Step size ``α`` (float or per-parameter tensors).
        loss: Loss name or element-wise penalty.
        eval_steps: Steps after which to roll out (default: every step ``0 … S``); a
            rollout costs ``T · substeps`` integrator steps.
        n_particles: Pad to this many particles (fixed-size models); default: the
            model's ``n_particles`` if it has one (HNN, MLP), else the graph layout.
        seed: Seed of the draw of the ``K`` points.
        integrator: Integrator of the rollouts (``"rk4"`` as in the paper).
        substeps: Integrator steps per saved interval.
        keep: Steps whose rollouts are returned (e.g. ``(15,)`` for plots).
        noise: Observation noise of the support points (a fraction of each
            coordinate's spread, see :class:`AdaptationPoints`); scores use the truth.

    Returns:
        An :class:`Adaptation`.

    Raises:
        ValueError: if ``trajectory`` does not hold one trajectory, it has fewer than
            ``shots`` points, or an evaluation step lies outside ``0 … S``.
    """
    evals = check_eval_steps(steps, eval_steps, keep)
    param = next(iter(params.values()))
    if n_particles is None:
        n_particles = getattr(model, "n_particles", None)
    traj = AdaptationPoints(trajectory, shots, seed, n_particles, param.dtype, param.device,
                            noise)
    support, start, heldout = traj.support, traj.start, traj.heldout
    q_true, p_true, num_times = traj.q_true, traj.p_true, traj.num_times

    current = {k: v.detach() for k, v in params.items()}
    support_losses, mses, derivs, shorts = [], [], [], []
    rollouts: dict[int, tuple[Tensor, Tensor]] = {}
    for s in range(steps + 1):
        if s in evals or s in keep:
            q, p = rollout_with(model, current, start, traj.dt, num_times - 1, integrator,
                                substeps)
            if s in evals:
                mses.append(rollout_mse(q, p, q_true, p_true, start.mask))
                shorts.append(short_rollout_nmse(q, p, q_true, p_true, start.mask))
                derivs.append(heldout_derivative_nmse(model, current, heldout))
            if s in keep:
                real = slice(None) if start.mask is None else start.mask
                rollouts[s] = (q[:, real], p[:, real])
        with torch.enable_grad():
            if s == steps:
                support_losses.append(task_loss(model, current, support, loss).detach())
                break
            adapted, losses = _inner_loop(model, current, support, loss, 1, inner_lr,
                                          create_graph=False)
        support_losses.append(losses[0])
        current = {k: v.detach() for k, v in adapted.items()}
    return Adaptation(torch.tensor(evals, dtype=torch.long), torch.stack(mses).cpu()
                      if mses else torch.empty(0), torch.stack(support_losses).cpu(), rollouts,
                      torch.tensor(derivs, dtype=torch.float64),
                      torch.tensor(shorts, dtype=torch.float64))
