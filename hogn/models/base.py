"""The one interface of every dynamics model, the model registry and model files.

A model maps a particle state to its time derivative, or (``DeltaGN``) directly to
the next state:

- :class:`DynamicsModel`: ``derivative(q, p, graph) -> (dq, dp)`` is the primitive;
  ``time_derivative(graph)`` applies it to the graph's own state and
  ``vector_field(graph)`` wraps it as ``f(q, p)`` for :mod:`hogn.integrators`
  (``rollout_field(graph)``: the same field for simulation, without autograd graphs);
  ``next_state(graph, integrator, dt)`` takes one integrator step.
- :class:`HamiltonianModel`: a learned scalar ``H`` per graph
  (``hamiltonian(graph) -> H [G]``); derivatives by autograd,
  ``dq = ∂H/∂p``, ``dp = −∂H/∂q``.

``graph`` is a :class:`hogn.graph.GraphBatch` or a PyG ``Data``/``Batch`` with
``q, p [N, d]``, ``c [N, k]``, ``edge_index [2, E]``, optional ``edge_attr [E, a]``
and ``ptr`` (a ``Data`` is one graph). Models check every input against their
config and raise ``ValueError`` naming what they expected and what they got.
Models never cast: the state must have the dtype and device of the parameters
(``model.double()``, ``model.to(device)``).

Files: :meth:`DynamicsModel.save` writes a checksummed ``hogn-model`` archive
(:mod:`hogn.io`) holding the registry name, the config and the ``state_dict``;
:func:`load` rebuilds the model through the registry.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn
from torch_geometric.data.data import BaseData

from hogn import integrators
from hogn.graph import GraphBatch
from hogn.io import FileFormatError, load_archive, save_archive

__all__ = [
    "FORMAT",
    "VERSION",
    "DynamicsModel",
    "GraphLike",
    "HamiltonianModel",
    "as_graph",
    "for_data",
    "get",
    "load",
    "names",
    "register",
]

FORMAT = "hogn-model"
VERSION = 1

GraphLike = GraphBatch | BaseData
M = TypeVar("M", bound="DynamicsModel")

_REGISTRY: dict[str, type[DynamicsModel]] = {}
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
           "float64": torch.float64}


def register(cls: type[M]) -> type[M]:
    """Class decorator adding a model to the registry under ``cls.name``."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"model name {cls.name!r} is empty or already registered")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def get(name: str, **config: Any) -> DynamicsModel:
    """Build a model by registry name.

    Args:
        name: Registry name (see :func:`names`).
        **config: Constructor arguments.

    Raises:
        ValueError: for an unknown name (listing the valid ones), an unknown or
            missing argument (listing the accepted ones), or an invalid value.
    """
    try:
        cls = _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; expected one of: "
                         f"{', '.join(names())}") from None
    signature = inspect.signature(cls.__init__)
    accepted = [p for p in signature.parameters if p != "self"]
    try:
        signature.bind(None, **config)
    except TypeError as exc:
        raise ValueError(f"{name}: {exc}; arguments are {', '.join(accepted)}") from None
    return cls(**config)


def accepts(name: str, argument: str) -> bool:
    """Whether the registered model ``name`` takes the constructor ``argument``.

    Raises:
        ValueError: for an unknown name (listing the valid ones).
    """
    if name not in _REGISTRY:
        get(name)  # raises, listing the names
    return argument in inspect.signature(_REGISTRY[name].__init__).parameters


def for_data(name: str, data: Any, **config: Any) -> DynamicsModel:
    """Build a model whose input sizes fit ``data``; ``config`` sets the rest.

    ``dim``, ``node_constants`` and ``edge_features`` come from the data, and so do
    ``n_particles`` for the fixed-size models (all graphs must have the same size)
    and ``dt`` for steppers (the data's sampling step), unless given in ``config``.

    Args:
        name: Registry name.
        data: A ``systems.Dataset`` or anything with ``t [T]``, ``q [T, N, d]``,
            ``c [N, k]``, ``edge_attr`` and ``ptr [G + 1]``.
        **config: Further constructor arguments (``hidden=64``, ...).

    Raises:
        ValueError: for an unknown name or argument, or a fixed-size model on
            graphs of different sizes.
    """
    if name not in _REGISTRY:
        get(name)  # raises, listing the names
    accepted = inspect.signature(_REGISTRY[name].__init__).parameters
    edge_attr = getattr(data, "edge_attr", None)
    inferred: dict[str, Any] = {
        "dim": int(data.q.shape[-1]), "node_constants": int(data.c.shape[-1]),
        "edge_features": 0 if edge_attr is None else int(edge_attr.shape[-1])}
    if "n_particles" in accepted and "n_particles" not in config:
        sizes = sorted(set(data.ptr.diff().tolist()))
        if len(sizes) != 1:
            raise ValueError(f"{name} needs graphs of one size, but the data has sizes "
                             f"{sizes}; select one size or use a graph model")
        inferred["n_particles"] = sizes[0]
    if "dt" in accepted and "dt" not in config:
        if data.t.numel() < 2:
            raise ValueError(f"{name} needs the data's dt, but it has one time point")
        inferred["dt"] = float(data.t[1] - data.t[0])
    inferred = {k: v for k, v in inferred.items() if k in accepted}
    return get(name, **{**inferred, **config})


def load(path: str | os.PathLike, device: torch.device | str | None = None) -> DynamicsModel:
    """Rebuild a model saved with :meth:`DynamicsModel.save`.

    The model gets the saved dtype, is moved to ``device`` and is returned in eval
    mode (call ``.train()`` to go on training).

    Raises:
        FileFormatError: if the file is missing, corrupted, not a model file, or
            its config or tensors do not fit a registered model.
    """
    meta, arrays, _ = load_archive(path, FORMAT, (VERSION,))
    name, config, dtype = meta.get("name"), meta.get("config"), meta.get("dtype")
    if not isinstance(config, dict) or dtype not in _DTYPES:
        raise FileFormatError(f"{path}: malformed {FORMAT} file (config or dtype missing)")
    try:
        model = get(name, **config)
    except ValueError as exc:
        raise FileFormatError(f"{path}: cannot rebuild the model: {exc}") from None
    model.to(dtype=_DTYPES[dtype])
    try:
        model.load_state_dict(arrays, strict=True)
    except RuntimeError as exc:
        raise FileFormatError(f"{path}: parameters do not fit {name} {config}: {exc}") from None
    return model.to(device).eval()


def as_graph(graph: GraphLike) -> GraphBatch:
    """A :class:`GraphBatch` view of a ``GraphBatch`` or PyG ``Data``/``Batch`` (no copy).

    Raises:
        ValueError: for any other object, or a PyG graph without ``q, p, c``.
    """
    if isinstance(graph, GraphBatch):
        return graph
    if isinstance(graph, BaseData):
        missing = [k for k in ("q", "p", "c", "edge_index") if getattr(graph, k, None) is None]
        if missing:
            raise ValueError(f"PyG graph lacks {missing}; models need q, p [N, d], c [N, k] "
                             "and edge_index [2, E]")
        return GraphBatch.from_pyg(graph)
    raise ValueError(f"expected a hogn.graph.GraphBatch or a PyG Data/Batch, got "
                     f"{type(graph).__name__}")


def _shape(t: Tensor | None) -> str:
    return "None" if t is None else "[" + ", ".join(str(s) for s in t.shape) + "]"


class DynamicsModel(nn.Module):
    """Base class: a learned map from a particle state to its time derivative.

    Subclasses set :attr:`name`, call ``super().__init__(config)`` with all their
    constructor arguments, and implement :meth:`_derivative` (or, as
    :class:`HamiltonianModel` does, :meth:`energy`).

    Attributes:
        name: Registry name.
        is_stepper: ``True`` when the model predicts the next state over its own
            fixed ``dt`` instead of a derivative (then no integrator applies).
        uses_edges: ``False`` for models that ignore ``edge_index``/``edge_attr``
            (then ``edge_attr`` is not checked).
        separable: ``True`` when ``dq`` depends on ``p`` alone and ``dp`` on ``q``
            alone (a learned ``H = T(p) + V(q)``): only then may the splitting
            integrators (leapfrog, yoshida4, symplectic_euler) step it.
        dim: Coordinates per particle ``d``.
        node_constants: Node constants per particle ``k``.
        edge_features: Edge constants per edge ``a`` (0: the graph has none).
    """

    name: ClassVar[str] = ""
    is_stepper: ClassVar[bool] = False
    uses_edges: ClassVar[bool] = True
    separable: ClassVar[bool] = False

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self._config = dict(config)
        dim = config.get("dim")
        k = config.get("node_constants", 0)
        a = config.get("edge_features", 0)
        for key, value, low in (("dim", dim, 1), ("node_constants", k, 0),
                                ("edge_features", a, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{self.name}: {key} must be an int >= {low}, got {value!r}")
        self.dim: int = dim
        self.node_constants: int = k
        self.edge_features: int = a

    # ------------------------------------------------------------ description
    def config(self) -> dict[str, Any]:
        """All constructor arguments: ``hogn.models.get(model.name, **model.config())``
        builds the same architecture."""
        return dict(self._config)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._config.items())

    @property
    def param_dtype(self) -> torch.dtype:
        """Floating dtype of the parameters (inputs must have it)."""
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    @property
    def param_device(self) -> torch.device:
        """Device of the parameters (inputs must be there)."""
        return next(self.parameters()).device

    def compatible_integrators(self) -> list[str]:
        """Names of the integrators this model can be stepped with: none for a
        stepper; for a derivative model every registered one valid for its
        separability (the splitting methods only if :attr:`separable`)."""
        return [] if self.is_stepper else integrators.compatible(self.separable)

    def check_integrator(self, integrator: str | integrators.Integrator
                         ) -> integrators.Integrator:
        """The integrator, after checking that this model can be used with it.

        Raises:
            ValueError: for an unknown integrator, any integrator on a stepper, or a
                splitting method on a model whose ``H`` is not separable (the
                message names the methods that fit).
        """
        method = integrators.get(integrator)
        if self.is_stepper:
            raise ValueError(f"{self.name} is a stepper and is used with no integrator, "
                             f"got {method.name!r}")
        kind = "learned H" if isinstance(self, HamiltonianModel) else "learned vector field"
        return integrators.require_fit(method, self.separable, f"{self.name}'s {kind}")

    # ------------------------------------------------------------- validation
    def _create_graph(self, q: Tensor, p: Tensor, create_graph: bool | None) -> bool:
        """``create_graph`` as given, or (``None``) whether the derivative will be
        differentiated: grad enabled and training, or the state itself requires grad."""
        if create_graph is not None:
            return create_graph
        return torch.is_grad_enabled() and (self.training or q.requires_grad or p.requires_grad)

    def check_state(self, q: Tensor, p: Tensor, graph: GraphBatch) -> None:
        """Check a state and its static graph against the model's config.

        Raises:
            ValueError: naming what the model expects and what it got.
        """
        if not isinstance(q, Tensor) or not isinstance(p, Tensor):
            raise ValueError(f"{self.name}: q and p must be tensors, got "
                             f"{type(q).__name__} and {type(p).__name__}")
        n = graph.num_nodes
        if (q.dim() != 2 or p.shape != q.shape or q.shape[0] != n or q.shape[1] != self.dim
                or graph.c.shape[1] != self.node_constants):
            raise ValueError(
                f"{self.name} expects d={self.dim} and {self.node_constants} node "
                f"constant(s) on {n} nodes (q, p [{n}, {self.dim}], c [{n}, "
                f"{self.node_constants}]), got q {_shape(q)}, p {_shape(p)}, c {_shape(graph.c)}")
        edge_attr = graph.edge_attr if self.uses_edges else None
        a = 0 if edge_attr is None else (edge_attr.shape[1] if edge_attr.dim() == 2 else -1)
        if self.uses_edges and a != self.edge_features:
            raise ValueError(f"{self.name} expects {self.edge_features} edge feature(s) "
                             f"(edge_attr [E, {self.edge_features}]"
                             f"{' or None' if not self.edge_features else ''}), got edge_attr "
                             f"{_shape(graph.edge_attr)}")
        dtype, device = self.param_dtype, self.param_device
        for label, t in (("q", q), ("p", p), ("c", graph.c), ("edge_attr", edge_attr)):
            if t is not None and (t.dtype != dtype or t.device != device):
                raise ValueError(f"{self.name} has {dtype} parameters on {device}, got {label} "
                                 f"{t.dtype} on {t.device}; move the model (.to(...)) or "
                                 "the graph, models never cast silently")

    # --------------------------------------------------------------- dynamics
    def derivative(self, q: Tensor, p: Tensor, graph: GraphLike,
                   create_graph: bool | None = None) -> tuple[Tensor, Tensor]:
        """Time derivative of the state ``(q, p)`` on the static ``graph``.

        Args:
            q: Positions ``[N, d]``.
            p: Momenta ``[N, d]``.
            graph: Static graph (``c``, ``edge_index``, ``edge_attr``, ``ptr``); its
                own ``q, p`` are ignored.
            create_graph: Hamiltonian models: keep the autograd graph of the
                derivative (default: when training, or when ``q``/``p`` require grad,
                and grad mode is on). Ignored by direct models.

        Returns:
            ``(dq [N, d], dp [N, d])``.

        Raises:
            ValueError: for an input that does not fit the model, or when the model
                is a stepper without a time derivative.
        """
        if self.is_stepper:
            raise self._stepper_error("derivative")
        g = as_graph(graph)
        self.check_state(q, p, g)
        return self._derivative(q, p, g, create_graph)

    def _derivative(self, q: Tensor, p: Tensor, graph: GraphBatch,
                    create_graph: bool | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def time_derivative(self, graph: GraphLike, create_graph: bool | None = None
                        ) -> tuple[Tensor, Tensor]:
        """``(dq, dp)`` at the graph's own state ``graph.q, graph.p`` (see :meth:`derivative`)."""
        if self.is_stepper:
            raise self._stepper_error("time_derivative")
        g = as_graph(graph)
        return self.derivative(g.q, g.p, g, create_graph)

    def vector_field(self, graph: GraphLike) -> integrators.VectorField:
        """``f(q, p) -> (dq, dp)`` on the static ``graph``, for :mod:`hogn.integrators`."""
        if self.is_stepper:
            raise self._stepper_error("vector_field")
        g = as_graph(graph)
        return lambda q, p: self.derivative(q, p, g)

    def rollout_field(self, graph: GraphLike) -> integrators.VectorField:
        """``f(q, p) -> (dq, dp)`` for simulating with the parameters as they are now.

        The field of :meth:`vector_field` (equal up to rounding), for rollouts rather
        than training: the static graph is checked here once, never per call, the
        result carries no autograd graph and is never differentiable (not in the
        parameters, not in ``q, p``), and the parameters must not change while it is
        in use. Hamiltonian models whose network :mod:`hogn.models.inference` writes
        out (HOGN, SeparableHOGN, HNN) take ``∂H`` without autograd, with the
        constant inputs' part of the first layers computed here once (on graphs of
        thousands of edges the field also keeps its edge-sized work tensors from call
        to call: about one evaluation's memory, held while the field lives); other
        models call their own derivative with ``create_graph=False``.

        Args:
            graph: Static graph (``c``, ``edge_index``, ``edge_attr``, ``ptr``), with a
                state ``q, p [N, d]`` that fits the model (checked).

        Returns:
            ``f(q [N, d], p [N, d]) -> (dq [N, d], dp [N, d])``.

        Raises:
            ValueError: for a stepper, or a graph that does not fit the model.
        """
        if self.is_stepper:
            raise self._stepper_error("rollout_field")
        g = as_graph(graph)
        self.check_state(g.q, g.p, g)

        def field(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
            with torch.no_grad():
                return self._derivative(q, p, g, False)

        return field

    def next_state(self, graph: GraphLike, integrator: str | integrators.Integrator | None = None,
                   dt: float | None = None) -> tuple[Tensor, Tensor]:
        """One step from the graph's state: ``integrator.step(vector_field, q, p, dt)``.

        Args:
            graph: State and static graph.
            integrator: Integrator name or instance (required here; steppers take none).
            dt: Step size (required here; steppers use their own).

        Returns:
            ``(q_next [N, d], p_next [N, d])``.
        """
        if integrator is None or dt is None:
            raise ValueError(f"{self.name} predicts a time derivative: next_state needs an "
                             f"integrator (one of {', '.join(self.compatible_integrators())}) "
                             "and a dt")
        method = self.check_integrator(integrator)
        g = as_graph(graph)
        return method.step(self.vector_field(g), g.q, g.p, dt)

    def auxiliary_loss(self, graph: GraphBatch, y_q: Tensor, y_p: Tensor) -> Tensor | None:
        """Extra training terms of the model, added by :func:`hogn.train` to the mean
        loss of each batch (training, validation and test alike); ``None``: none (the
        default). A model overrides it to train on more than its prediction, e.g. an
        autoencoder's reconstruction.

        Args:
            graph: The batch's states.
            y_q, y_p: Its targets, ``[N, d]`` (derivative target) or ``[N, k, d]``
                (rollout target: the next ``k`` observed states).

        Returns:
            A scalar (already a mean over the batch) or ``None``.
        """
        return None

    def _check_own_step(self, integrator: Any, dt: float | None, detail: str = "") -> None:
        """For a stepper's :meth:`next_state`: refuse an integrator, and a ``dt`` other
        than the model's own (``self.dt``; to catch a mismatched rollout).

        Raises:
            ValueError: naming what was given and what the model steps.
        """
        own = float(self.dt)  # type: ignore[attr-defined]
        if integrator is not None:
            raise ValueError(f"{self.name} is a stepper over its fixed dt={own:g} and is used "
                             f"with no integrator{detail}, got integrator "
                             f"{getattr(integrator, 'name', integrator)!r}")
        if dt is not None and abs(dt - own) > 1e-12 * max(1.0, abs(own)):
            raise ValueError(f"{self.name} was built for dt={own:g}, got dt={dt:g}")

    def _stepper_error(self, what: str) -> ValueError:
        return ValueError(f"{self.name} is a stepper: it predicts the state change over "
                          f"its fixed dt and has no time derivative ({what} is undefined); "
                          "use next_state(graph) instead of an integrator")

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write name, config, dtype and ``state_dict`` as a ``hogn-model`` archive.

        Returns:
            The path written (atomically).
        """
        dtype = str(self.param_dtype).removeprefix("torch.")
        meta = {"name": self.name, "config": self.config(), "dtype": dtype}
        return save_archive(path, FORMAT, VERSION, meta, self.state_dict())

    @classmethod
    def load(cls: type[M], path: str | os.PathLike, device: torch.device | str | None = None
             ) -> M:
        """Load a model file, checking that it holds a ``cls`` (see :func:`load`)."""
        model = load(path, device)
        if not isinstance(model, cls):
            raise FileFormatError(f"{path}: holds a {model.name} model, not {cls.name or cls}")
        return model


def state_gradients(fns: Sequence[Callable[[Tensor, Tensor, GraphBatch], Tensor]], q: Tensor,
                    p: Tensor, graph: GraphBatch, create_graph: bool
                    ) -> list[tuple[Tensor, Tensor]]:
    """``(∂F/∂q [N, d], ∂F/∂p [N, d])`` by autograd of each scalar field ``F = fn(q, p,
    graph)`` (``[G]``, summed over graphs), with ``create_graph`` when the result will be
    differentiated again (training), and on detached copies of ``q, p`` otherwise.

    With ``create_graph`` the gradients are taken with respect to fresh views of
    ``q, p``: inside a differentiable rollout ``p`` may have been computed from ``q``
    (a splitting step ends with the kick ``p += dt/2 · dp(q)``), and the gradient with
    respect to ``q`` itself would then sum every path from ``F`` back to ``q``, through
    ``p`` too: a total, not the partial derivative (the next kick off by ``O(dt)``).
    No path joins two views made here, and the gradients still flow back through them.
    """
    with torch.enable_grad():
        q = (q.detach().requires_grad_(True) if not create_graph or not q.requires_grad
             else q.view_as(q))
        p = (p.detach().requires_grad_(True) if not create_graph or not p.requires_grad
             else p.view_as(p))
        return [torch.autograd.grad(fn(q, p, graph).sum(), (q, p), create_graph=create_graph,
                                    materialize_grads=True) for fn in fns]


class HamiltonianModel(DynamicsModel):
    """A model of a scalar ``H`` per graph; Hamilton's equations by autograd.

    Subclasses implement :meth:`energy`.
    """

    def energy(self, q: Tensor, p: Tensor, graph: GraphBatch) -> Tensor:
        """Learned Hamiltonian without input checks.

        Args:
            q: Positions ``[N, d]``.
            p: Momenta ``[N, d]``.
            graph: Static graph.

        Returns:
            ``H [G]``.
        """
        raise NotImplementedError

    def hamiltonian(self, graph: GraphLike) -> Tensor:
        """Learned Hamiltonian of each graph at its state, ``H [G]``."""
        g = as_graph(graph)
        self.check_state(g.q, g.p, g)
        return self.energy(g.q, g.p, g)

    def _written_gradient(self, graph: GraphBatch
                          ) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None:
        """``grad(q, p) -> (∂H/∂q, ∂H/∂p)`` written out without autograd on the static
        ``graph`` (:mod:`hogn.models.inference`), for rollouts; ``None`` (the default):
        the model's own derivative is used. Models whose networks that module writes out
        return its function here, and ``None`` for a subclass with its own ``energy``."""
        return None

    def rollout_field(self, graph: GraphLike) -> integrators.VectorField:
        g = as_graph(graph)
        self.check_state(g.q, g.p, g)
        grad = self._written_gradient(g)
        if grad is None:
            return super().rollout_field(g)

        def field(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
            with torch.no_grad():
                dh_dq, dh_dp = grad(q, p)
                return dh_dp, torch.neg(dh_dq)

        return field

    rollout_field.__doc__ = DynamicsModel.rollout_field.__doc__

    def _derivative(self, q: Tensor, p: Tensor, graph: GraphBatch,
                    create_graph: bool | None) -> tuple[Tensor, Tensor]:
        ((dh_dq, dh_dp),) = state_gradients((self.energy,), q, p, graph,
                                            self._create_graph(q, p, create_graph))
        return dh_dp, -dh_dq
