"""Roll a learned model forward in time from initial states, batched over graphs.

The graph can be larger than any seen in training: graph models act per node and
per edge, so a model trained on 4-6 particles runs on 16 or 256.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from hogn import checks, integrators
from hogn.graph import GraphBatch, NeighbourList
from hogn.models.base import DynamicsModel, as_graph

__all__ = ["initial_state", "rollout"]


def initial_state(source: Any) -> GraphBatch:
    """The starting states: a ``GraphBatch``, a PyG ``Data``/``Batch``, or a dataset
    (anything with ``state(index)``, e.g. ``systems.Dataset``), whose first saved
    states are used."""
    state = getattr(source, "state", None)
    if callable(state):
        return state(0)
    return as_graph(source)


def rollout(model: DynamicsModel, source: Any, steps: int, dt: float | None = None,
            integrator: str | None = "rk4", substeps: int = 1, progress: bool = False,
            neighbours: NeighbourList | None = None) -> tuple[Tensor, Tensor]:
    """Simulate with a learned model.

    Args:
        model: A trained model (its training mode is restored afterwards; the
            rollout runs in eval mode without building autograd graphs). Derivative
            models are stepped with :meth:`~hogn.models.DynamicsModel.rollout_field`:
            the field of ``model.vector_field`` up to rounding, with the graph
            checked once and, for HOGN, SeparableHOGN and HNN, ``∂H`` written out
            rather than taken by autograd (:mod:`hogn.models.inference`).
        source: Initial states (see :func:`initial_state`); nodes of many graphs of
            any sizes are stepped in one call.
        steps: Number of saved steps ``T``.
        dt: Time between saved states (each is ``substeps`` integrator steps of
            ``dt / substeps``); a stepper (DeltaGN) uses its own and rejects another.
        integrator: Integrator name for derivative models; must be ``None`` for a
            stepper.
        substeps: Integrator steps per saved step (derivative models). A model with
            a ``project(q, p, graph) -> (q, p)`` method (a constrained model,
            :class:`hogn.models.CHNN`) has its state mapped back onto its constraint
            manifold after every integrator step.
        progress: Show a progress bar.
        neighbours: For systems whose neighbours change (large systems, short-range
            forces): the graph's edges are taken from this neighbour list before
            every saved step (a search only when some particle moved more than half
            its skin), instead of being kept fixed. The model must read edges only
            up to its ``cutoff`` (smoothly, see :class:`hogn.models.HOGN`), at most
            the list's ``radius``: then its field does not depend on the extra
            edges the skin keeps, and the rebuilt graphs give one smooth field.

    Returns:
        ``q, p [T + 1, N, d]`` starting at the initial state.

    Raises:
        ValueError: for an integrator the model cannot use, a missing or foreign
            ``dt``, states that do not fit the model, or a neighbour list with a
            model without a cutoff within its radius, or with edge constants.
    """
    graph = initial_state(source)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if neighbours is not None:
                return _roll_neighbours(model, graph, steps, dt, integrator, substeps,
                                        neighbours, progress)
            if model.is_stepper:
                return _roll_stepper(model, graph, steps, dt, integrator, progress)
            if dt is None:
                raise ValueError(f"{model.name} needs a dt for rollout")
            method = model.check_integrator(integrator)
            if callable(getattr(model, "project", None)):
                method = _projected(method, model.project, graph)
            return integrators.integrate(model.rollout_field(graph), graph.q, graph.p, dt,
                                         steps, method=method, substeps=substeps,
                                         progress=f"rollout {model.name}" if progress else False,
                                         separable=model.separable)
    finally:
        model.train(was_training)


def _check_neighbours(model: DynamicsModel, graph: GraphBatch,
                      neighbours: NeighbourList) -> None:
    cutoff = model.config().get("cutoff")
    if not isinstance(neighbours, NeighbourList):
        raise ValueError(f"neighbours must be a hogn.graph.NeighbourList, got "
                         f"{type(neighbours).__name__}")
    if cutoff is None or cutoff > neighbours.radius * (1 + 1e-12):
        raise ValueError(
            f"a rollout on a neighbour list of radius {neighbours.radius:g} needs a graph model "
            f"whose edges are cut off smoothly within that radius (model cutoff <= "
            f"{neighbours.radius:g}); {model.name} has cutoff={cutoff!r}, so its field would "
            "change with every rebuild of the list")
    if graph.edge_attr is not None:
        raise ValueError("a neighbour-list rollout builds its own edges and cannot carry edge "
                         "constants (edge_attr); the graph has some")


def _roll_neighbours(model: DynamicsModel, graph: GraphBatch, steps: int, dt: float | None,
                     integrator: str | None, substeps: int, neighbours: NeighbourList,
                     progress: bool) -> tuple[Tensor, Tensor]:
    """:func:`rollout` with the edges rebuilt from ``neighbours`` before every saved step
    (the field is rebuilt only when the list is)."""
    _check_neighbours(model, graph, neighbours)
    steps = checks.nonnegative_int(steps, "steps")
    substeps = checks.positive_int(substeps, "substeps")
    if model.is_stepper:
        _check_stepper(model, dt, integrator)
        method = None
    else:
        if dt is None:
            raise ValueError(f"{model.name} needs a dt for rollout")
        model.check_integrator(integrator)
        method = integrators.get(integrator)
    integrators.check_state(graph.q, graph.p)
    graph = graph.replace(edge_attr=None)
    qs = graph.q.new_empty((steps + 1, *graph.q.shape))
    ps = torch.empty_like(qs)
    qs[0], ps[0] = graph.q, graph.p
    q, p = graph.q, graph.p
    field, built = None, -1
    # a separable model's splitting step reuses its last force while the field lives
    cached = None if method is None or not model.separable else method.cached_step
    force: Tensor | None = None
    for i in _step_range(model, steps, progress):
        edges = neighbours.update(q, graph.ptr)
        current = graph.replace(q=q, p=p, edge_index=edges)
        if method is None:
            q, p = model.next_state(current)
        else:
            if neighbours.rebuilds != built:
                field, built, force = model.rollout_field(current), neighbours.rebuilds, None
            h = dt / substeps
            for _ in range(substeps):
                if cached is not None:
                    q, p, force = cached(field, q, p, h, force)
                else:
                    q, p = method.step(field, q, p, h)
        qs[i], ps[i] = q, p
    return qs, ps


def _projected(method: integrators.Integrator, project: Any, graph: GraphBatch
               ) -> integrators.Integrator:
    """``method`` with each of its steps followed by ``project(q, p, graph)`` (a
    constrained model's return to its manifold), and without the cached kick of a
    splitting method (the projection moves ``q`` after the kick was taken)."""
    def step(f: integrators.VectorField, q: Tensor, p: Tensor, dt: float
             ) -> tuple[Tensor, Tensor]:
        return project(*method.step(f, q, p, dt), graph)

    return dataclasses.replace(method, step_fn=step, cached_step=None)


def _check_stepper(model: DynamicsModel, dt: float | None, integrator: str | None) -> None:
    """A stepper takes no integrator and no ``dt`` but its own."""
    own_dt = float(model.config()["dt"])
    if integrator is not None:
        raise ValueError(f"{model.name} is a stepper with its own fixed dt={own_dt:g}; "
                         f"pass integrator=None, not {integrator!r}")
    if dt is not None and abs(dt - own_dt) > 1e-12 * max(1.0, own_dt):
        raise ValueError(f"{model.name} was trained for dt={own_dt:g} and cannot step "
                         f"dt={dt:g}")


def _step_range(model: DynamicsModel, steps: int, progress: bool) -> Any:
    """``range(1, steps + 1)``, behind a tqdm bar when ``progress``."""
    iterator: Any = range(1, steps + 1)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=f"rollout {model.name}", leave=False, disable=None)
    return iterator


def _roll_stepper(model: DynamicsModel, graph: GraphBatch, steps: int, dt: float | None,
                  integrator: str | None, progress: bool) -> tuple[Tensor, Tensor]:
    _check_stepper(model, dt, integrator)
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    integrators.check_state(graph.q, graph.p)
    qs = graph.q.new_empty((steps + 1, *graph.q.shape))
    ps = torch.empty_like(qs)
    qs[0], ps[0] = graph.q, graph.p
    q, p = graph.q, graph.p
    for i in _step_range(model, steps, progress):
        q, p = model.next_state(graph.replace(q=q, p=p))
        qs[i], ps[i] = q, p
    return qs, ps
