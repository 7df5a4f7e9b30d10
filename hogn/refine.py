"""Initial-state refinement at prediction time (Chen et al., "Symplectic Recurrent
Neural Networks", ICLR 2020).

A rollout started from a noisy observation carries that noise forward (and, in a
chaotic system, amplifies it). :func:`refine_start` fits the start state to the
first few observed points instead: the state ``(q0, p0)`` whose rollout under the
learned model comes closest (mean squared error) to the observations
``q_obs[0..S-1], p_obs[0..S-1]``, starting from the first observation and found by
L-BFGS (``torch.optim.LBFGS``, strong-Wolfe line search) with the model's
parameters fixed. The refined state then starts :func:`hogn.rollout`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hogn import checks
from hogn.models.base import DynamicsModel
from hogn.rollout import initial_state

__all__ = ["refine_start"]


def refine_start(model: DynamicsModel, graph: Any, q_obs: Tensor, p_obs: Tensor, dt: float,
                 integrator: str = "leapfrog", iterations: int = 100, lr: float = 1.0
                 ) -> tuple[Tensor, Tensor]:
    """Fit the start of a rollout to the first observed points of noisy trajectories.

    Minimises ``mean_s |x̂_s(q0, p0) − x_obs[s]|²`` over ``(q0, p0)``, where ``x̂_s`` is
    the state after ``s`` steps of ``integrator`` under ``model`` (``s = 0..S-1``, so
    the first observation itself is one of the points matched) and ``x = (q, p)``.
    Every graph of the batch is fitted at once (their errors are independent, so the
    joint minimum is each graph's own).

    Args:
        model: A derivative model (not a stepper); it is not changed (no gradient
            reaches its parameters; its training mode is restored).
        graph: The static graph of the trajectories: a ``GraphBatch``, a PyG
            ``Data``/``Batch`` or a dataset (see :func:`hogn.rollout.initial_state`);
            its ``c``, edges and ``ptr`` are used, its state is not.
        q_obs: Observed positions ``[S, N, d]`` at times ``0, dt, .., (S-1) dt``
            (``S >= 1``), with the model's dtype and device.
        p_obs: Observed momenta ``[S, N, d]``.
        dt: Time between observations.
        integrator: Integrator name (one the model accepts).
        iterations: Most L-BFGS iterations.
        lr: L-BFGS step length (1 with the line search, as usual).

    Returns:
        The refined start ``(q0 [N, d], p0 [N, d])``, detached.

    Raises:
        ValueError: for a stepper, an integrator the model cannot use, observations
            whose shape or dtype does not fit the graph and model, or a bad ``dt``,
            ``iterations`` or ``lr``.
    """
    if model.is_stepper:
        raise ValueError(f"{model.name} is a stepper; refine_start needs a model with a "
                         "time derivative")
    method = model.check_integrator(integrator)
    dt = checks.positive_float(dt, "dt")
    iterations = checks.positive_int(iterations, "iterations")
    lr = checks.positive_float(lr, "lr")
    static = initial_state(graph)
    for label, obs in (("q_obs", q_obs), ("p_obs", p_obs)):
        if (not isinstance(obs, Tensor) or obs.dim() != 3
                or obs.shape[1:] != static.q.shape or obs.shape[0] < 1):
            shape = list(obs.shape) if isinstance(obs, Tensor) else type(obs).__name__
            raise ValueError(f"{label} must be [S, {static.q.shape[0]}, {static.q.shape[1]}] "
                             f"(S >= 1 observed states of the graph's nodes), got {shape}")
    if p_obs.shape != q_obs.shape:
        raise ValueError(f"q_obs and p_obs must have the same shape, got {list(q_obs.shape)} "
                         f"and {list(p_obs.shape)}")
    model.check_state(q_obs[0], p_obs[0], static)  # dtype and device of the parameters
    q0 = q_obs[0].detach().clone().requires_grad_(True)
    p0 = p_obs[0].detach().clone().requires_grad_(True)
    target = torch.cat([q_obs, p_obs], -1).detach()
    field = model.vector_field(static)  # partial derivatives: see state_gradients
    optimizer = torch.optim.LBFGS([q0, p0], lr=lr, max_iter=iterations,
                                  line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        with torch.enable_grad():
            q, p = q0, p0
            states = [torch.cat([q, p], -1)]
            for _ in range(target.shape[0] - 1):
                q, p = method.step(field, q, p, dt)
                states.append(torch.cat([q, p], -1))
            loss = (torch.stack(states) - target).square().mean()
            q0.grad, p0.grad = torch.autograd.grad(loss, (q0, p0))
        return loss.detach()

    was_training = model.training
    model.eval()
    try:
        optimizer.step(closure)
    finally:
        model.train(was_training)
    return q0.detach(), p0.detach()
