"""Evaluate a learned model by rolling it out against ground-truth trajectories.

>>> result = hogn.evaluate(model, data, energy=true_h, integrator="rk4")  # doctest: +SKIP
>>> result.summary()                                                       # doctest: +SKIP
{'rel_error': 0.012, 'final_rel_error': 0.05, 'state_mse': 1e-4, 'energy_drift': 3e-3, ...}

``hogn`` knows no physical system: the true energy comes from the caller as
``energy(q, p) -> [T, G]`` (for a ``systems.Dataset``, the system's Hamiltonian on
the dataset's graph).

States without time order (one point per trajectory, as ``systems.Dataset.from_arrays``
makes of ``[M, d]`` or ``[M, n, d]`` states) leave nothing to roll out: there
:func:`evaluate` compares the model's derivatives with the data's ``dq, dp`` instead
(``derivative_rel_error``, ``derivative_mse``; the rollout numbers are ``nan`` and
``steps`` is 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from hogn import checks
from hogn.graph import NeighbourList
from hogn.metrics import (
    energy_error,
    geometric_mean,
    relative_error,
    state_mse,
    time_to_threshold,
)
from hogn.models.base import DynamicsModel
from hogn.rollout import rollout

__all__ = ["Evaluation", "evaluate", "references"]

EnergyFn = Callable[[Tensor, Tensor], Tensor]

ENERGY_REFERENCES = ("initial", "truth")
"""What :func:`evaluate` compares the true energy along a prediction with."""


@dataclass
class Evaluation:
    """Per-step errors of a rollout against the truth.

    Attributes:
        t: Times ``[T + 1]`` (from 0).
        q, p: Predicted trajectory ``[T + 1, N, d]``.
        relative_error: ``‖x̂ − x‖ / (‖x̂‖ + ‖x‖)`` of the whole state, ``[T + 1, G]``.
        state_mse: Mean squared state error, ``[T + 1, G]``.
        energy_error: ``|H(x̂_t) − H(x_0)| / |H(x_0)|`` under the true ``H``,
            ``[T + 1, G]`` (``None`` without an energy function); with
            ``energy_reference="truth"`` (systems that do not conserve ``H``)
            ``|H(x̂_t) − H(x_t)| / |H(x_0)|``, the error against the true energy curve.
        batch: Graph of each node ``[N]``.
        derivative_rel_error: ``‖f̂ − f‖ / (‖f̂‖ + ‖f‖)`` of the predicted derivatives
            ``f̂ = (dq, dp)`` at the true states, ``[G]`` (only for states without
            time order, ``T = 1``, where ``q, p`` are those states, the errors of the
            state are 0 and ``energy_error`` is ``None``; else ``None``).
        derivative_mse: Mean squared error of those derivatives, ``[G]`` (or ``None``).
        energy_reference: What ``energy_error`` is relative to (see :func:`evaluate`).
    """

    t: Tensor
    q: Tensor
    p: Tensor
    relative_error: Tensor
    state_mse: Tensor
    energy_error: Tensor | None
    batch: Tensor
    derivative_rel_error: Tensor | None = None
    derivative_mse: Tensor | None = None
    energy_reference: str = "initial"

    @property
    def num_graphs(self) -> int:
        """Number of evaluated trajectories ``G``."""
        return self.relative_error.shape[1]

    def summary(self, threshold: float = 0.1) -> dict[str, Any]:
        """Scalar summary over trajectories.

        Args:
            threshold: Relative-error level for ``time_to_threshold``.

        Returns:
            ``rel_error``: geometric mean over trajectories of the mean relative
            error over the horizon (the HOGN paper's rollout metric);
            ``final_rel_error``: its geometric mean at the last step;
            ``state_mse``: mean over steps and trajectories;
            ``energy_drift``: geometric mean over trajectories of the largest
            relative error of the true energy along the prediction (``nan``
            without an energy function), named ``energy_error`` instead when it
            was measured against the true energy curve (``energy_reference=
            "truth"``);
            ``time_to_threshold``: median time until the relative error passes
            ``threshold`` (``inf`` if it never does); and the counts. With no step
            (states without time order) these are ``nan``, and
            ``derivative_rel_error`` (geometric mean over graphs) and
            ``derivative_mse`` (mean over graphs) score the derivatives instead.
        """
        threshold = checks.positive_float(threshold, "threshold")
        drift = (geometric_mean(self.energy_error.amax(0)).item()
                 if self.energy_error is not None else math.nan)
        steps = self.t.numel() - 1
        if steps:
            reach = time_to_threshold(self.relative_error, self.t, threshold)
            rollout = {"rel_error": geometric_mean(self.relative_error[1:].mean(0)).item(),
                       "final_rel_error": geometric_mean(self.relative_error[-1]).item(),
                       "state_mse": self.state_mse[1:].mean().item(),
                       "energy_drift": drift, "time_to_threshold": reach.median().item()}
        else:
            rollout = dict.fromkeys(("rel_error", "final_rel_error", "state_mse",
                                     "energy_drift", "time_to_threshold"), math.nan)
        if self.energy_reference == "truth":
            rollout["energy_error"] = rollout.pop("energy_drift")
        out = {**rollout, "trajectories": self.num_graphs, "steps": steps}
        if self.derivative_rel_error is not None and self.derivative_mse is not None:
            out["derivative_rel_error"] = geometric_mean(self.derivative_rel_error).item()
            out["derivative_mse"] = self.derivative_mse.mean().item()
        return out


def evaluate(model: DynamicsModel, data: Any, *, energy: EnergyFn | None = None,
             integrator: str | None = "rk4", steps: int | None = None, substeps: int = 1,
             observed: bool = False, progress: bool = False,
             energy_reference: str = "initial",
             neighbours: NeighbourList | None = None) -> Evaluation:
    """Roll ``model`` out from each trajectory's first state and compare with the truth.

    Args:
        model: A trained model, cast to the dtype and device it should run in
            (the data is moved to them).
        data: Ground truth with ``t [T]``, ``q, p [T, N, d]``, ``ptr [G + 1]`` and
            ``state(index)`` (e.g. ``systems.Dataset``, or its ``heldout()``).
        energy: True Hamiltonian ``energy(q, p) -> [T, G]`` of trajectories on
            ``data``'s graphs, for the energy error.
        integrator: Integrator for derivative models (``None`` for a stepper).
        steps: Steps to compare (default: all, ``T − 1``).
        substeps: Integrator steps per saved step (finer than the data's ``dt``).
        observed: Start from the noisy observation instead of the clean state.
        progress: Show a progress bar.
        neighbours: Roll out on this neighbour list (edges rebuilt from the positions;
            see :func:`hogn.rollout.rollout`), as systems whose neighbours change need.
        energy_reference: What the true energy along the prediction is compared
            with: ``"initial"``, the true initial energy (its drift: for systems
            that conserve ``H``), or ``"truth"``, the true energy at the same time
            (for damped or driven systems, whose energy changes by design; still
            relative to ``|H(x_0)|``).

    With one point per trajectory (states without time order) nothing is rolled
    out: the model's derivatives at the states are compared with ``data.dq, data.dp``
    (see :class:`Evaluation`); ``steps`` must then be ``None``.

    Returns:
        The :class:`Evaluation`.

    Raises:
        ValueError: for a horizon the data does not cover, a stepper on states
            without time order, or anything :func:`hogn.rollout.rollout` refuses.
    """
    if energy_reference not in ENERGY_REFERENCES:
        raise ValueError(f"unknown energy_reference {energy_reference!r}; expected one of: "
                         f"{', '.join(ENERGY_REFERENCES)}")
    available = data.t.numel() - 1
    if available == 0:
        if steps is not None:
            raise ValueError(f"the data holds states without time order (one point per "
                             f"trajectory): there is nothing to roll out, so steps must "
                             f"be None (the derivatives are compared), got {steps!r}")
        return _derivative_evaluation(model, data, observed)
    steps = available if steps is None else checks.positive_int(steps, "steps")
    substeps = checks.positive_int(substeps, "substeps")
    if not 1 <= steps <= available:
        raise ValueError(f"steps must be an int in [1, {available}] (the data has "
                         f"{available + 1} points per trajectory), got {steps!r}")
    dt = float(data.t[1] - data.t[0])
    start = data.state(0, observed=observed).to(model.param_device, model.param_dtype)
    q, p = rollout(model, start, steps, dt=dt, integrator=integrator, substeps=substeps,
                   progress=progress, neighbours=neighbours)
    return _scored(data, q, p, steps, energy, energy_reference)


def _scored(data: Any, q: Tensor, p: Tensor, steps: int, energy: EnergyFn | None,
            energy_reference: str) -> Evaluation:
    """The :class:`Evaluation` of a predicted trajectory ``q, p [steps + 1, N, d]``
    against ``data``'s first ``steps + 1`` points."""
    # errors and energies in the data's own precision and device
    q, p = q.to(data.q.device, data.q.dtype), p.to(data.q.device, data.q.dtype)
    q_true, p_true = data.q[: steps + 1], data.p[: steps + 1]
    graph = data.graph
    batch, g = graph.batch, graph.num_graphs
    energy_err = None
    if energy is not None:
        with torch.no_grad():
            reference = (energy(q_true[:1], p_true[:1])[0] if energy_reference == "initial"
                         else energy(q_true, p_true))  # [G], or the true curve [T + 1, G]
            energy_err = energy_error(q, p, energy, reference=reference)
    return Evaluation(
        t=data.t[: steps + 1] - data.t[0], q=q, p=p,
        relative_error=relative_error(q, p, q_true, p_true, batch, g),
        state_mse=state_mse(q, p, q_true, p_true, batch, g),
        energy_error=energy_err, batch=batch, energy_reference=energy_reference)


STILL = "standing still"
"""Name of the do-nothing reference of :func:`references`."""


def references(data: Any, integrator: str | None = "rk4", *, steps: int | None = None,
               substeps: int = 1, energy: EnergyFn | None = None,
               energy_reference: str = "initial") -> dict[str, Evaluation]:
    """What a rollout's errors mean: the same scores for two references on the same
    trajectories, horizon and time step.

    - ``"standing still"`` (:data:`STILL`): the initial state kept for ever, the
      prediction of a model that learned nothing;
    - ``"true field, <integrator>"``: the *true* vector field (``data.system()``'s)
      stepped by the same integrator at the same ``dt`` and ``substeps``: the error
      that the integration alone makes, the floor no learned field can go below with
      that integrator (only where the system can be rebuilt, and not for a stepper:
      ``integrator=None``).

    Args:
        data: Ground truth, as for :func:`evaluate` (with time order).
        integrator: The integrator the model was rolled out with.
        steps: Steps to compare (default: all).
        substeps: Integrator steps per saved step.
        energy: True Hamiltonian, as for :func:`evaluate`.
        energy_reference: As for :func:`evaluate`.

    Returns:
        ``{name: Evaluation}``; empty for states without time order.
    """
    from hogn import integrators

    available = data.t.numel() - 1
    if available == 0:
        return {}
    steps = available if steps is None else checks.positive_int(steps, "steps")
    if not 1 <= steps <= available:
        raise ValueError(f"steps must be an int in [1, {available}], got {steps!r}")
    shape = (steps + 1, *data.q.shape[1:])
    out = {STILL: _scored(data, data.q[0].expand(shape), data.p[0].expand(shape), steps,
                          energy, energy_reference)}
    problem = getattr(data, "energy_problem", lambda: "no system")()
    if integrator is None or problem is not None:
        return out
    system, graph = data.system(), data.graph
    if integrators.get(integrator).needs_separable and not system.separable:
        return out  # the splitting method would step another field than the truth's
    with torch.no_grad():
        q, p = integrators.integrate(system.vector_field(graph), data.q[0], data.p[0],
                                     float(data.t[1] - data.t[0]), steps, method=integrator,
                                     substeps=substeps, separable=system.separable)
    out[f"true field, {integrator}"] = _scored(data, q, p, steps, energy, energy_reference)
    return out


_CHUNK_GRAPHS = 4096  # graphs per model call when scoring derivatives (bounds memory)


def _derivative_evaluation(model: DynamicsModel, data: Any, observed: bool) -> Evaluation:
    """Score ``model``'s derivatives at the states of one-point data against
    ``data.dq, data.dp [1, N, d]`` (in the data's precision and device)."""
    if model.is_stepper:
        raise ValueError(f"{model.name} is a stepper: states without time order (one point "
                         "per trajectory) give it no next state to compare with; evaluate "
                         "it on trajectories")
    state = data.state(0, observed=observed)
    graph = data.graph
    batch, g = graph.batch, graph.num_graphs
    parts_q, parts_p = [], []
    for start in range(0, g, _CHUNK_GRAPHS):
        chunk = state if g <= _CHUNK_GRAPHS else state.select(
            torch.arange(start, min(start + _CHUNK_GRAPHS, g)))
        chunk = chunk.to(model.param_device, model.param_dtype)
        dq, dp = model.rollout_field(chunk)(chunk.q, chunk.p)
        parts_q.append(dq.detach().to(data.q.device, data.q.dtype))
        parts_p.append(dp.detach().to(data.q.device, data.q.dtype))
    dq, dp = torch.cat(parts_q)[None], torch.cat(parts_p)[None]  # [1, N, d]
    zeros = torch.zeros(1, g, dtype=data.q.dtype, device=data.q.device)
    return Evaluation(
        t=data.t[:1] - data.t[0], q=data.q[:1], p=data.p[:1], relative_error=zeros,
        state_mse=zeros.clone(), energy_error=None, batch=batch,
        derivative_rel_error=relative_error(dq, dp, data.dq[:1], data.dp[:1], batch, g)[0],
        derivative_mse=state_mse(dq, dp, data.dq[:1], data.dp[:1], batch, g)[0])
