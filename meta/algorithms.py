"""MAML, first-order MAML and Reptile as pure functions over parameter dicts.

A model's parameters are a dict ``name → tensor`` (``dict(model.named_parameters())``
or an adapted copy); the model is evaluated at any such dict with
``torch.func.functional_call``, so adaptation never touches the module's own weights.
Every model of :mod:`hogn.models` works (HNN, MLP, HOGN, ...): a task's loss compares
the model's ``derivative(q, p, graph)`` with the true ``(dq, dp)`` of its points.

Notation: ``θ`` the meta-parameters, ``L_s`` / ``L_q`` a task's support / query loss,
``α`` the inner learning rate, ``θ'`` the parameters after the inner loop
``θ_{j+1} = θ_j − α ∇L_s(θ_j)`` (``j = 0 … steps − 1``), ``B`` tasks in a meta-batch.

- ``maml``: meta-gradient ``(1/B) Σ_i ∇_θ L_q,i(θ'_i(θ))``, differentiated through the
  inner loop (second order: Hessian-vector products of ``L_s``).
- ``fomaml``: the inner gradients are treated as constants, ``dθ'/dθ = I``, so the
  meta-gradient is ``(1/B) Σ_i ∇L_q,i`` evaluated at ``θ'_i``.
- ``reptile`` (Nichol et al. 2018): the inner loop runs on the support points and
  the meta-gradient is ``(1/B) Σ_i (θ − θ'_i) / α`` (= the sum of the inner gradients
  along the path, ``Σ_j ∇L_s(θ_j)``), handed to the outer optimizer like any gradient
  ("treat θ − θ' as a gradient and plug it into Adam"). Dividing by ``α`` gives it the
  scale of a loss gradient, so one outer learning rate suits all three algorithms.
  With one inner step it is exactly ``∇_θ (1/B) Σ_i L_s,i(θ)``: Reptile then is joint
  training on the meta-batch's support points.

The inner learning rate is a float, or a dict ``name → tensor`` (broadcastable to the
parameter) of per-parameter rates: learned by the outer optimizer (Meta-SGD, Li et
al. 2017) when they require grad (:func:`init_inner_lr`). A dict of rates may cover
only some parameters: the others are held fixed in the inner loop.

ANIL (Raghu et al. 2020, "almost no inner loop"): the inner loop adapts only the
model's *decoder* (its readout: :func:`decoder_names`, defined per model family in
:data:`DECODERS`), the outer loop trains all parameters (for ``maml`` the meta-gradient
of the body also flows through the decoder's inner gradient). Options::

    MetaConfig(algorithm="maml" | "fomaml" | "reptile", inner_steps=N,
               learn_inner_lr=True,   # Meta-SGD (maml, fomaml)
               anil=True)             # decoder-only inner loop (maml, fomaml)

Loss: the element-wise penalty (log-cosh by default, as in the meta-learning paper;
or squared error) of ``pred − true`` over all real particles' ``dq`` and ``dp``
components, *averaged* (the paper sums): the mean keeps the inner learning rate
independent of the number of points ``K``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from hogn.graph import GraphBatch
from hogn.models.base import DynamicsModel
from hogn.train import log_cosh
from meta.tasks import Points, Task

__all__ = [
    "ALGORITHMS",
    "DECODERS",
    "LOSSES",
    "InnerLR",
    "LossFn",
    "MetaConfig",
    "Params",
    "decoder_names",
    "get_loss",
    "init_inner_lr",
    "inner_parameters",
    "inner_update",
    "meta_gradient",
    "meta_loss",
    "parameters",
    "predict",
    "task_loss",
]

Params = dict[str, Tensor]
InnerLR = float | Mapping[str, Tensor]
LossFn = Callable[[Tensor], Tensor]

ALGORITHMS = ("maml", "fomaml", "reptile")
LOSSES: dict[str, LossFn] = {"logcosh": log_cosh, "mse": torch.square}


# --------------------------------------------------------------------- config
@dataclass
class MetaConfig:
    """Meta-training options (JSON-serialisable with :meth:`to_dict`).

    Attributes:
        algorithm: ``"maml"`` (second order), ``"fomaml"`` or ``"reptile"``.
        inner_steps: Gradient steps of the inner loop.
        inner_lr: Inner learning rate ``α`` (initial value when learned).
        learn_inner_lr: Learn one rate per parameter element (Meta-SGD); not with
            Reptile, which has no gradient for it.
        anil: Adapt only the decoder in the inner loop (ANIL; :func:`decoder_names`);
            the outer loop still trains every parameter. Not with Reptile, whose
            update ``θ − θ'`` would then never reach the body.
        outer_lr: Adam learning rate ``β`` of the meta-parameters (and learned rates).
        meta_batch: Tasks per meta-update ``B``.
        loss: ``"logcosh"`` or ``"mse"``.
        shots: Support points per task ``K``.
        query: Query points per task (``None``: the trajectory's other points).
        grad_clip: Clip the meta-gradient norm (0: off).
        batched: Run the meta-batch's tasks in one call (:mod:`meta.batched`: every
            task its own copy of the weights over one batch of graphs); ``False``: one
            task at a time (:func:`meta_gradient`); ``None`` (default): in one call
            when the model allows it (:func:`meta.batched.supports`: every model of
            :mod:`hogn.models`), else task by task. Same results to rounding.
        seed: Seed of the task draws.
        device: Torch device for the caller to put the model on
            (:func:`meta.training.meta_train_step` moves tasks to the model's device).
    """

    algorithm: str = "maml"
    inner_steps: int = 1
    inner_lr: float = 0.01
    learn_inner_lr: bool = False
    anil: bool = False
    outer_lr: float = 1e-3
    meta_batch: int = 8
    loss: str = "logcosh"
    shots: int = 50
    query: int | None = None
    grad_clip: float = 0.0
    batched: bool | None = None
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check the options. Raises ``ValueError`` naming the bad one (and the choices)."""
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algorithm!r}; expected one of: "
                             f"{', '.join(ALGORITHMS)}")
        get_loss(self.loss)
        for key in ("inner_steps", "meta_batch", "shots"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a positive int, got {value!r}")
        if self.query is not None and (not isinstance(self.query, int) or self.query < 1):
            raise ValueError(f"query must be a positive int or None, got {self.query!r}")
        for key in ("inner_lr", "outer_lr"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{key} must be a positive finite number, got {value!r}")
        if not (self.grad_clip >= 0 and math.isfinite(self.grad_clip)):
            raise ValueError(f"grad_clip must be >= 0, got {self.grad_clip!r}")
        for key in ("learn_inner_lr", "anil"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{key} must be True or False, got {getattr(self, key)!r}")
        if self.batched not in (None, True, False):
            raise ValueError(f"batched must be None, True or False, got {self.batched!r}")
        if self.learn_inner_lr and self.algorithm == "reptile":
            raise ValueError("learn_inner_lr (Meta-SGD) needs a meta-gradient through the "
                             "inner loop (maml or fomaml); reptile has none")
        if self.anil and self.algorithm == "reptile":
            raise ValueError("anil needs maml or fomaml: reptile's update (θ − θ')/α would "
                             "move only the decoder and never train the body")

    def to_dict(self) -> dict[str, Any]:
        """The options as a plain dict."""
        return asdict(self)


# ------------------------------------------------------------ model at params
def get_loss(loss: str | LossFn) -> LossFn:
    """The element-wise penalty of the residual ``pred − true``.

    Args:
        loss: ``"logcosh"`` or ``"mse"`` (squared error), or a callable
            ``residual [...] -> penalty [...]``.

    Raises:
        ValueError: for an unknown name, listing the choices.
    """
    if callable(loss):
        return loss
    try:
        return LOSSES[loss]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {loss!r}; expected one of: "
                         f"{', '.join(LOSSES)}") from None


def parameters(model: nn.Module) -> Params:
    """The model's trainable parameters as a dict (the live tensors, not copies)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _last_linear(prefix: str) -> Callable[[nn.Module], list[str]]:
    """The parameters of the last ``nn.Linear`` inside the submodule ``prefix``."""
    def names(model: nn.Module) -> list[str]:
        sub = model.get_submodule(prefix)
        last = [n for n, m in sub.named_modules() if isinstance(m, nn.Linear)][-1]
        return [f"{prefix}.{last}.{k}" for k, _ in sub.get_submodule(last).named_parameters()]
    return names


def _submodules(*prefixes: str) -> Callable[[nn.Module], list[str]]:
    """Every parameter of the submodules ``prefixes`` that the model has."""
    def names(model: nn.Module) -> list[str]:
        return [n for n, _ in model.named_parameters()
                if any(n.startswith(f"{p}.") for p in prefixes)]
    return names


def _separable(model: nn.Module) -> list[str]:
    return (_submodules("potential.node_decoder", "potential.edge_decoder")(model)
            + _last_linear("kinetic")(model))


def _dissipative(model: nn.Module) -> list[str]:
    return _last_linear("net")(model) + _last_linear("dissipation_net")(model)


def _dissipative_graph(model: nn.Module) -> list[str]:
    names = _submodules("hogn.gn.node_decoder", "hogn.gn.edge_decoder",
                        "dissipation_gn.node_decoder", "dissipation_gn.edge_decoder")(model)
    for mlp in ("dissipation_node", "dissipation_edge"):  # dissipation_inputs="momenta"
        if getattr(model, mlp, None) is not None:
            names += _last_linear(mlp)(model)
    return names


DECODERS: dict[str, Callable[[nn.Module], list[str]]] = {
    "hnn": _last_linear("net"),
    "mlp": _last_linear("net"),
    "hogn": _submodules("gn.node_decoder", "gn.edge_decoder"),
    "ogn": _submodules("gn.node_decoder", "gn.edge_decoder"),
    "deltagn": _submodules("gn.node_decoder", "gn.edge_decoder"),
    "separable-hogn": _separable,
    "potential-hogn": _submodules("potential.node_decoder", "potential.edge_decoder"),
    "dhnn": _dissipative,
    "dissipative-hogn": _dissipative_graph,
    "srnn": lambda model: _last_linear("kinetic")(model) + _last_linear("potential")(model),
    "symoden": lambda model: [name for net in ("inverse_mass_net", "potential_net", "input_net")
                              if getattr(model, net, None) is not None
                              for name in _last_linear(net)(model)],
    "pixel-hnn": _last_linear("decoder"),
    "chnn": lambda model: [name for net in ("net", "mass_net")
                           if getattr(model, net, None) is not None
                           for name in _last_linear(net)(model)],
    "ghnn": lambda model: [name for net in ("net", "structure_net", "dissipation_net")
                           if getattr(model, net, None) is not None
                           for name in _last_linear(net)(model)],
    "hnn-basis": lambda model: ["head"],
    "hogn-basis": lambda model: ["head"],
}
"""Model name → the names of its *decoder* parameters (ANIL's inner loop), in one place:
the last linear layer of the MLP for the flat models (``hnn``: the layer reading out
``H``; ``mlp``: the one reading out ``dq, dp``), the node (and edge) decoder MLPs of
the graph network for the graph models (``separable-hogn``: those of its potential
and the last layer of its kinetic-energy MLP; ``potential-hogn``: those of its
potential, its kinetic energy being known; ``dhnn``: the last layers of its ``H``
and ``D`` MLPs; ``dissipative-hogn``: the decoders of its ``H`` graph network and of
its ``D`` graph network, or with ``"momenta"`` the last layers of its per-node and
per-edge ``D`` MLPs; ``pixel-hnn``: the last layer of its pixel decoder; ``symoden``:
the last layers of its ``M⁻¹``, ``V`` and ``g`` MLPs; ``chnn``: the last layers of its
``V`` MLP and of its inverse-mass MLP; ``ghnn``: the last layers of its ``H``, ``A``
(of ``P``) and ``L`` (of ``Q``) MLPs, where it has them; ``hnn-basis`` and
``hogn-basis``: the linear head ``w`` of ``H = φ · w``, which
:func:`meta.closed_form.solve_head` solves in closed form). Add an entry for a model of
your own."""


def decoder_names(model: nn.Module) -> list[str]:
    """Names of the model's decoder parameters (see :data:`DECODERS`), in model order.

    Raises:
        ValueError: for a model family without an entry in :data:`DECODERS`.
    """
    name = getattr(model, "name", None)
    try:
        rule = DECODERS[name]  # type: ignore[index]
    except (KeyError, TypeError):
        raise ValueError(f"no decoder defined for model {name!r} (ANIL); known: "
                         f"{', '.join(DECODERS)} (add yours to meta.DECODERS)") from None
    chosen = set(rule(model))
    names = [n for n, p in model.named_parameters() if n in chosen and p.requires_grad]
    if not names:
        raise ValueError(f"model {name!r} has no trainable decoder parameters")
    return names


def inner_parameters(model: nn.Module, config: MetaConfig) -> Params:
    """The parameters the inner loop adapts: the decoder's with ``config.anil``, else all."""
    params = parameters(model)
    if not config.anil:
        return params
    return {k: params[k] for k in decoder_names(model)}


class _Derivative(nn.Module):
    """``forward`` = ``model.derivative``, so ``functional_call`` can reach it."""

    def __init__(self, model: DynamicsModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, q: Tensor, p: Tensor, graph: GraphBatch, create_graph: bool | None
                ) -> tuple[Tensor, Tensor]:
        return self.model.derivative(q, p, graph, create_graph=create_graph)


def predict(model: DynamicsModel, params: Mapping[str, Tensor], graph: GraphBatch,
            q: Tensor | None = None, p: Tensor | None = None,
            create_graph: bool | None = True) -> tuple[Tensor, Tensor]:
    """The model's time derivative with its parameters replaced by ``params``.

    Args:
        model: A derivative model (not a stepper).
        params: Parameters by name (missing ones: the model's own).
        graph: Static graph (and the state, unless ``q``, ``p`` are given).
        q: Positions ``[N, d]`` (default ``graph.q``).
        p: Momenta ``[N, d]`` (default ``graph.p``).
        create_graph: Keep the autograd graph of Hamiltonian derivatives, so that the
            result can be differentiated w.r.t. ``params`` (needed for any loss).

    Returns:
        ``(dq [N, d], dp [N, d])``.
    """
    wrapper = _Derivative(model)
    named = {f"model.{k}": v for k, v in params.items()}
    q = graph.q if q is None else q
    p = graph.p if p is None else p
    return functional_call(wrapper, named, (q, p, graph, create_graph))


def task_loss(model: DynamicsModel, params: Mapping[str, Tensor], points: Points,
              loss: str | LossFn = "logcosh") -> Tensor:
    """Mean penalty of the predicted vs true ``(dq, dp)`` over the real particles.

    Args:
        model: The model.
        params: Parameters to evaluate it at.
        points: ``M`` points (padding particles, if any, are left out by the mask).
        loss: Loss name or element-wise penalty (see :func:`get_loss`).

    Returns:
        Scalar: the mean over real particles ``r`` and components of
        ``penalty(pred − true)``, ``Σ_r Σ_c ℓ / (R · 2d)``.
    """
    fn = get_loss(loss)
    dq, dp = predict(model, params, points.graph)
    penalty = fn(torch.cat([dq - points.dq, dp - points.dp], -1))  # [M·n, 2d]
    if points.mask is None:
        return penalty.mean()
    weight = points.mask.to(penalty.dtype)[:, None]
    return (penalty * weight).sum() / (weight.sum() * penalty.shape[1])


# ------------------------------------------------------------------ inner loop
def init_inner_lr(params: Mapping[str, Tensor], value: float, per_element: bool = True
                  ) -> Params:
    """Learnable per-parameter inner learning rates (Meta-SGD), all equal to ``value``.

    Args:
        params: Parameters by name.
        value: Initial rate.
        per_element: One rate per parameter element (same shape as the parameter);
            else one scalar per parameter tensor.

    Returns:
        ``name → rate`` tensors that require grad (give them to the outer optimizer).
    """
    return {name: torch.full(p.shape if per_element else (), float(value), dtype=p.dtype,
                             device=p.device, requires_grad=True)
            for name, p in params.items()}


def _lr(lr: InnerLR, name: str) -> float | Tensor:
    if isinstance(lr, Mapping):
        try:
            return lr[name]
        except KeyError:
            raise ValueError(f"no inner learning rate for parameter {name!r}") from None
    return lr


def _adapted_names(params: Mapping[str, Tensor], lr: InnerLR,
                   only: Collection[str] | None) -> list[str]:
    """The parameters an inner loop moves: ``only`` (default all, or those with a rate)."""
    unknown = sorted(set(only or ()) - set(params))
    if isinstance(lr, Mapping):
        unknown += sorted(set(lr) - set(params) - set(unknown))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for the inner "
                         "loop")
    if only is not None:
        chosen = set(only)
        names = [k for k in params if k in chosen]
        for k in names:
            _lr(lr, k)  # every adapted parameter needs a rate
    elif isinstance(lr, Mapping):
        names = [k for k in params if k in lr]
    else:
        names = list(params)
    if not names:
        raise ValueError("the inner loop has no parameter to adapt")
    return names


def _inner_loop(model: DynamicsModel, params: Mapping[str, Tensor], support: Points,
                loss: str | LossFn, steps: int, lr: InnerLR, create_graph: bool,
                only: Collection[str] | None = None) -> tuple[Params, list[Tensor]]:
    """Inner SGD on the parameters ``only`` (default: all, or those that have a rate in a
    dict ``lr``; the others are passed through unchanged); returns the adapted
    parameters and the support loss before each step."""
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"inner steps must be an int >= 0, got {steps!r}")
    fn = get_loss(loss)
    names = _adapted_names(params, lr, only)
    moving = set(names)
    current = {k: v if v.requires_grad or k not in moving else v.detach().requires_grad_(True)
               for k, v in params.items()}
    return _sgd(lambda p: task_loss(model, p, support, fn), current, names, lr, steps,
                create_graph)


def _sgd(loss_of: Callable[[Params], Tensor], current: Params, names: Sequence[str],
         lr: InnerLR, steps: int, create_graph: bool) -> tuple[Params, list[Tensor]]:
    """``steps`` SGD steps ``θ_k ← θ_k − α_k ∇_k Σ loss_of(θ)`` on the parameters ``names``;
    returns the parameters and the (detached) losses before each step. ``loss_of`` may
    return one loss or a vector of independent ones (tasks with their own parameters)."""
    losses = []
    for _ in range(steps):
        value = loss_of(current)
        grads = torch.autograd.grad(value.sum(), [current[k] for k in names],
                                    create_graph=create_graph, allow_unused=True,
                                    materialize_grads=True)
        losses.append(value.detach())
        current = {**current, **{k: current[k] - _lr(lr, k) * g
                                 for k, g in zip(names, grads, strict=True)}}
    return current, losses


def inner_update(model: DynamicsModel, params: Mapping[str, Tensor], support: Points,
                 loss: str | LossFn = "logcosh", steps: int = 1, lr: InnerLR = 0.01,
                 first_order: bool = False, create_graph: bool | None = None,
                 only: Collection[str] | None = None) -> Params:
    """Adapt parameters to a task with ``steps`` SGD steps on its support points.

    ``θ_{j+1} = θ_j − α ∇L_s(θ_j)`` (``α ⊙ ∇`` with per-parameter rates), on the
    parameters ``only`` (ANIL: :func:`decoder_names`); the others stay as given.

    Args:
        model: The model.
        params: Starting parameters ``θ`` (a parameter that does not require grad is
            treated as a constant starting point).
        support: The task's support points.
        loss: Loss name or element-wise penalty.
        steps: Inner steps (0 returns ``params``).
        lr: ``α``: a float, or ``name → tensor`` per-parameter rates (learned ones
            receive gradients through the result); parameters without a rate are not
            adapted.
        first_order: Treat the inner gradients as constants (first-order MAML): the
            result depends on ``θ`` only through the identity, ``dθ'/dθ = I``.
        create_graph: Keep the graph of the inner gradients (default
            ``not first_order``); needed for second-order MAML.
        only: Names of the parameters to adapt (default: all, or those with a rate);
            the others are returned as given.

    Returns:
        Adapted parameters ``θ'`` by name, differentiable w.r.t. ``params`` (and
        learned rates) as described.
    """
    if create_graph is None:
        create_graph = not first_order
    adapted, _ = _inner_loop(model, params, support, loss, steps, lr,
                             create_graph and not first_order, only)
    return adapted


# ------------------------------------------------------------------ outer loop
def _check_tasks(tasks: Sequence[Task]) -> None:
    if len(tasks) == 0:
        raise ValueError("a meta-batch needs at least one task")


def _meta_inputs(config: MetaConfig, tasks: Sequence[Task], inner_lr: InnerLR | None
                 ) -> tuple[InnerLR, dict[str, Tensor]]:
    """Check the options and the meta-batch; the inner rates and the learned ones."""
    config.validate()
    _check_tasks(tasks)
    lr = config.inner_lr if inner_lr is None else inner_lr
    learned = ({k: v for k, v in lr.items() if v.requires_grad}
               if isinstance(lr, Mapping) else {})
    return lr, learned


def meta_loss(model: DynamicsModel, params: Mapping[str, Tensor], tasks: Sequence[Task],
              config: MetaConfig, inner_lr: InnerLR | None = None) -> Tensor:
    """Mean query loss after adaptation, ``(1/B) Σ_i L_q,i(θ'_i)`` (MAML / FOMAML).

    Differentiable w.r.t. ``params`` (through the inner loop for ``maml``, at ``θ'``
    only for ``fomaml``) and w.r.t. learned inner rates. Holds the graphs of all tasks
    at once; :func:`meta_gradient` accumulates task by task instead.

    Args:
        model: The model.
        params: Meta-parameters ``θ``.
        tasks: Meta-batch.
        config: Algorithm, loss, inner steps and rate.
        inner_lr: Rates overriding ``config.inner_lr`` (e.g. learned ones).

    Raises:
        ValueError: for Reptile, which has no meta-loss (see :func:`meta_gradient`).
    """
    if config.algorithm == "reptile":
        raise ValueError("reptile has no meta-loss; use meta_gradient")
    _check_tasks(tasks)
    lr = config.inner_lr if inner_lr is None else inner_lr
    first = config.algorithm == "fomaml"
    only = decoder_names(model) if config.anil else None
    total = 0
    for task in tasks:
        adapted = inner_update(model, params, task.support, config.loss, config.inner_steps,
                               lr, first_order=first, only=only)
        total = total + task_loss(model, adapted, task.query, config.loss)
    return total / len(tasks)


def meta_gradient(model: DynamicsModel, params: Mapping[str, Tensor], tasks: Sequence[Task],
                  config: MetaConfig, inner_lr: InnerLR | None = None
                  ) -> tuple[Params, Params, dict[str, float]]:
    """The meta-gradient of a meta-batch (see the module docstring for each algorithm).

    Tasks are processed one at a time (their graphs freed after each). With
    ``config.anil`` the inner loop adapts the decoder only (:func:`decoder_names`); the
    gradients cover every parameter of ``params``.

    Args:
        model: The model.
        params: Meta-parameters ``θ`` (leaf tensors, e.g. :func:`parameters`).
        tasks: Meta-batch of ``B`` tasks.
        config: Algorithm, loss, inner steps and rate.
        inner_lr: Rates overriding ``config.inner_lr``; learned rates (tensors that
            require grad) get their gradient in the second dict (``maml``/``fomaml``).

    Returns:
        ``(grads, lr_grads, stats)``: gradients by parameter name, gradients of the
        learned rates by name (empty when none are learned), and mean losses
        ``support_before`` (``L_s`` at ``θ``) and ``query_after`` (``L_q`` at ``θ'``).

    Raises:
        ValueError: for an empty meta-batch, or Reptile with per-parameter rates.
    """
    lr, learned = _meta_inputs(config, tasks, inner_lr)
    names = list(params)
    grads = {k: torch.zeros_like(v) for k, v in params.items()}
    lr_grads = {k: torch.zeros_like(v) for k, v in learned.items()}
    support, query = 0.0, 0.0
    b = len(tasks)
    if config.algorithm == "reptile":
        if isinstance(lr, Mapping):
            raise ValueError("reptile takes a float inner learning rate (its meta-gradient "
                             "is (θ − θ') / α)")
        base = {k: v.detach() for k, v in params.items()}
        for task in tasks:
            adapted, losses = _inner_loop(model, base, task.support, config.loss,
                                          config.inner_steps, lr, create_graph=False)
            for k in names:
                grads[k] += (base[k] - adapted[k].detach()) / (lr * b)
            support += float(losses[0]) / b
            with torch.no_grad():
                query += float(task_loss(model, _detached(adapted), task.query,
                                         config.loss)) / b
        return grads, lr_grads, {"support_before": support, "query_after": query}
    first = config.algorithm == "fomaml"
    only = decoder_names(model) if config.anil else None
    targets = [params[k] for k in names] + list(learned.values())
    for task in tasks:
        adapted, losses = _inner_loop(model, params, task.support, config.loss,
                                      config.inner_steps, lr, create_graph=not first,
                                      only=only)
        value = task_loss(model, adapted, task.query, config.loss)
        out = torch.autograd.grad(value / b, targets, allow_unused=True,
                                  materialize_grads=True)
        for k, g in zip(names, out[:len(names)], strict=True):
            grads[k] += g
        for k, g in zip(learned, out[len(names):], strict=True):
            lr_grads[k] += g
        support += float(losses[0]) / b if losses else float(value.detach()) / b
        query += float(value.detach()) / b
    return grads, lr_grads, {"support_before": support, "query_after": query}


def _detached(params: Mapping[str, Tensor]) -> Params:
    return {k: v.detach() for k, v in params.items()}
