"""Neural-network building blocks: smooth MLPs and message passing on PyG.

- :class:`MLP`: a stack of linear layers with a smooth activation between them.
  Hamiltonian networks are differentiated twice (once for Hamilton's equations,
  once more for training), so only smooth activations are registered.
- :class:`GNBlock`: one residual message-passing step on a PyG ``MessagePassing``:
  every edge updates its latent from the receiver and sender latents and the
  relative geometry ``q_i − q_j, |q_i − q_j|`` (plus edge constants), every node
  sums its incoming edge latents and updates its own.
- :class:`GraphNetwork`: node and edge encoders, ``K`` blocks, per-node (and
  optionally per-edge) decoders.

Sums over edges and over graphs go through :func:`scatter_sum`, whose backend is
chosen by name: ``"torch"`` (PyG's ``torch_geometric.utils.scatter``, built on
``Tensor.scatter_add_``), ``"torch_scatter"`` (the ``torch_scatter`` extension) or
``"auto"`` (``torch_scatter`` when it imports, else ``"torch"``). Both compute the
same sums: on CPU they run the same ``scatter_add_`` kernel and agree bit for bit;
on GPU both use atomic adds, so they agree to rounding.

Edges follow the ``hogn.graph`` convention: ``edge_index [2, E]`` with senders
``j = edge_index[0]`` and receivers ``i = edge_index[1]`` (PyG's
``flow="source_to_target"``), both directions of each pair stored, no self loops.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.typing import WITH_TORCH_SCATTER
from torch_geometric.utils import scatter as pyg_scatter

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "ROW_KINDS",
    "SCATTER_BACKENDS",
    "GNBlock",
    "GraphNetwork",
    "Linear",
    "Softplus",
    "activation",
    "activation_names",
    "blocked_linear",
    "blocked_matmul",
    "cutoff_envelope",
    "cutoff_envelope_slope",
    "edge_geometry",
    "minimum_image",
    "resolve_scatter",
    "scatter_sum",
]

class _SoftplusFn(torch.autograd.Function):
    """``softplus(x) = log(1 + e^x)`` whose backward is ``g · sigmoid(x)``, written in
    differentiable ops so that autograd differentiates it again (``sigmoid``'s own
    derivatives are cheap); PyTorch's softplus double-backward is slower."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return nn.functional.softplus(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad * torch.sigmoid(x)


class Softplus(nn.Module):
    """``nn.Softplus()`` (the same values) with cheaper higher derivatives.

    Hamiltonian networks differentiate their activations up to three times in
    meta-learning (``H → ∂H/∂x → ∇_θ loss → meta-gradient``); here the first derivative
    is ``sigmoid(x)`` and autograd takes it from there, about 8 % faster per MAML step
    of a HOGN than PyTorch's softplus backward formulas. (Above ``x = 20`` PyTorch's
    backward returns exactly 1, this one ``sigmoid(x)``: a difference below ``3e-9``.)

    Shapes:
        ``[...] -> [...]``.
    """

    def forward(self, x: Tensor) -> Tensor:
        return _SoftplusFn.apply(x)


# Smooth activations only: H must be twice differentiable (ReLU is not registered).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "silu": nn.SiLU,
    "softplus": Softplus,
    "tanh": nn.Tanh,
}

SCATTER_BACKENDS: tuple[str, ...] = ("auto", "torch", "torch_scatter")

ROW_KINDS: tuple[str, ...] = ("nodes", "edges", "graphs")
"""What the rows of an :class:`MLP`'s input are, in a batch of graphs."""


def activation_names() -> list[str]:
    """Names of the registered activations, sorted."""
    return sorted(ACTIVATIONS)


def activation(name: str) -> nn.Module:
    """A new activation module by name.

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.
    """
    try:
        return ACTIVATIONS[name]()
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; expected one of: "
                         f"{', '.join(activation_names())}") from None


_activation = activation  # for classes whose ``activation`` argument shadows the function


def resolve_scatter(backend: str) -> str:
    """The concrete scatter backend (``"torch"`` or ``"torch_scatter"``) for a name.

    Raises:
        ValueError: for an unknown name, or ``"torch_scatter"`` when the package
            cannot be imported.
    """
    if backend not in SCATTER_BACKENDS:
        raise ValueError(f"unknown scatter backend {backend!r}; expected one of: "
                         f"{', '.join(SCATTER_BACKENDS)}")
    if backend == "auto":
        return "torch_scatter" if WITH_TORCH_SCATTER else "torch"
    if backend == "torch_scatter" and not WITH_TORCH_SCATTER:
        raise ValueError("scatter backend 'torch_scatter' requested but torch_scatter cannot "
                         "be imported; install it or use scatter='torch' (or 'auto')")
    return backend


def scatter_sum(src: Tensor, index: Tensor, dim_size: int, backend: str = "torch") -> Tensor:
    """Sum rows of ``src`` into ``dim_size`` buckets.

    Args:
        src: Values ``[M, ...]``.
        index: Bucket of each row, ``[M]`` (long).
        dim_size: Number of buckets ``B`` (empty buckets give zeros).
        backend: ``"torch"`` or ``"torch_scatter"`` (see :func:`resolve_scatter`).

    Returns:
        ``[B, ...]`` sums.
    """
    if backend == "torch_scatter":
        import torch_scatter

        return torch_scatter.scatter(src, index, dim=0, dim_size=dim_size, reduce="sum")
    return pyg_scatter(src, index, dim=0, dim_size=dim_size, reduce="sum")


class Linear(nn.Linear):
    """``nn.Linear`` that also takes a stack of per-task weights (same parameters).

    With its own parameters (``weight [out, in]``, ``bias [out]``) it is
    ``nn.Linear``. Evaluated with :func:`torch.func.functional_call` at *stacked*
    parameters ``weight [B, out, in]``, ``bias [B, out]``, it applies weight ``b`` to
    the ``b``-th of ``B`` equal, consecutive blocks of input rows: ``x [B·R, in]`` is
    read as ``[B, R, in]`` and mapped by one batched matrix product. This is how
    :mod:`meta.batched` evaluates many tasks, each with its own adapted copy of the
    network, in one call over one batch of graphs laid out task by task (a task's
    rows may span several blocks, each given that task's weights).

    Shapes:
        ``[..., in] -> [..., out]``; stacked: ``[B·R, in] -> [B·R, out]``.
    """

    def forward(self, x: Tensor) -> Tensor:
        return blocked_linear(x, self.weight, self.bias)


def blocked_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x Wᵀ + b``, or with stacked weights one weight per block of rows.

    Args:
        x: Inputs ``[R, in]`` (stacked: ``[B·R, in]``, ``B`` equal consecutive blocks).
        weight: ``[out, in]`` or stacked ``[B, out, in]``.
        bias: ``[out]``, stacked ``[B, out]``, or ``None``.

    Returns:
        ``[R, out]`` (stacked: ``[B·R, out]``, block ``b`` mapped by weight ``b``).

    Raises:
        ValueError: when stacked weights do not divide the rows into equal blocks.
    """
    if weight.dim() == 2:
        return nn.functional.linear(x, weight, bias)
    rows = _blocks(x, weight.shape[0], weight.shape[-1])
    if rows is None:
        return x.new_zeros(0, weight.shape[1])
    if bias is None:
        out = torch.bmm(rows, weight.transpose(1, 2))
    else:
        out = torch.baddbmm(bias[:, None, :], rows, weight.transpose(1, 2))
    return out.reshape(-1, out.shape[-1])


def blocked_matmul(grad: Tensor, weight: Tensor) -> Tensor:
    """``grad W``: the input gradient of :func:`blocked_linear` from its output gradient.

    Args:
        grad: ``[R, out]`` (stacked: ``[B·R, out]``).
        weight: ``[out, in]`` or stacked ``[B, out, in]``.

    Returns:
        ``[R, in]`` (stacked: ``[B·R, in]``).
    """
    if weight.dim() == 2:
        return grad @ weight
    rows = _blocks(grad, weight.shape[0], weight.shape[1])
    if rows is None:
        return grad.new_zeros(0, weight.shape[-1])
    return torch.bmm(rows, weight).reshape(-1, weight.shape[-1])


def _blocks(x: Tensor, tasks: int, width: int) -> Tensor | None:
    """``x [B·R, width]`` as ``[B, R, width]`` (``None``: no tasks and no rows)."""
    if tasks == 0 and x.shape[0] == 0:
        return None
    if x.dim() != 2 or tasks == 0 or x.shape[0] % tasks:
        raise ValueError(f"stacked weights of {tasks} tasks need inputs [{tasks}·R, "
                         f"{width}], got {tuple(x.shape)}")
    return x.reshape(tasks, x.shape[0] // tasks, x.shape[-1])


class MLP(nn.Sequential):
    """``layers`` linear maps with a smooth activation between them (none after the last).

    ``layers`` counts linear layers, output included: ``layers=3`` is
    ``in → hidden → hidden → out`` (two hidden layers), the "3-layer" MLP of the
    HNN paper; ``layers=1`` is a single linear map.

    Args:
        in_features: Input width.
        hidden: Width of the hidden layers.
        out_features: Output width.
        layers: Number of linear layers (>= 1).
        activation: Activation name (see :func:`activation_names`).
        rows: What one input row is in a batch of graphs: ``"nodes"``, ``"edges"`` or
            ``"graphs"`` (``None``: not said). Stored as :attr:`rows`; it lets
            :mod:`meta.batched` give each block of rows its own weights.

    Shapes:
        ``[..., in_features] -> [..., out_features]`` (stacked per-block weights: see
        :class:`Linear`).
    """

    def __init__(self, in_features: int, hidden: int, out_features: int, layers: int = 2,
                 activation: str = "softplus", rows: str | None = None) -> None:
        if rows is not None and rows not in ROW_KINDS:
            raise ValueError(f"MLP rows must be None or one of {', '.join(ROW_KINDS)}, got "
                             f"{rows!r}")
        for name, value, low in (("in_features", in_features, 1), ("hidden", hidden, 1),
                                 ("out_features", out_features, 1), ("layers", layers, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"MLP {name} must be an int >= {low}, got {value!r}")
        _activation(activation)  # validate the name before building anything
        widths = [in_features] + [hidden] * (layers - 1) + [out_features]
        modules: list[nn.Module] = []
        for k in range(layers):
            modules.append(Linear(widths[k], widths[k + 1]))
            if k < layers - 1:
                modules.append(_activation(activation))
        super().__init__(*modules)
        self.rows = rows


def minimum_image(rel: Tensor, box: Tensor | None) -> Tensor:
    """Edge vectors ``[E, d]`` as minimum images in per-edge periodic box lengths
    ``box [E, d]`` (``None``: no box, ``rel`` unchanged). ``round`` is piecewise
    constant, so the gradient is that of ``rel``."""
    return rel if box is None else rel - box * torch.round(rel / box)


def edge_geometry(q: Tensor, edge_index: Tensor, eps: float, box: Tensor | None = None
                  ) -> Tensor:
    """Relative geometry of every edge, ``[q_i − q_j, sqrt(|q_i − q_j|² + eps)]``.

    The distance is smoothed by ``eps`` so that it is differentiable (twice) even
    where two particles coincide; with ``eps = 0`` its gradient is NaN there.

    Args:
        q: Positions ``[N, d]``.
        edge_index: ``[2, E]``, senders ``j`` in row 0, receivers ``i`` in row 1.
        eps: Smoothing of the distance (>= 0).
        box: Periodic box lengths of each edge's graph, ``[E, d]``: ``q_i − q_j`` is
            then the minimum image (``None``: no box).

    Returns:
        ``[E, d + 1]``.
    """
    rel = minimum_image(q[edge_index[1]] - q[edge_index[0]], box)
    dist = (rel.square().sum(-1, keepdim=True) + eps).sqrt()
    return torch.cat([rel, dist], -1)


def cutoff_envelope(dist: Tensor, cutoff: float) -> Tensor:
    """Smooth weight of an edge of length ``dist``: 1 at 0, 0 from ``cutoff`` on.

    ``w(x) = 1 − 10x³ + 15x⁴ − 6x⁵`` at ``x = dist / cutoff`` (the quintic
    smoothstep, reversed), ``0`` for ``x ≥ 1``: its first and second derivatives
    vanish at the cutoff, so an energy gated by it stays twice differentiable as
    particles cross the cutoff, and edges beyond it (such as those a neighbour list
    keeps within its skin) contribute nothing.

    Args:
        dist: Edge lengths ``[E, 1]``.
        cutoff: The cutoff radius (> 0).

    Returns:
        ``[E, 1]`` in ``[0, 1]``.
    """
    x = (dist / cutoff).clamp(max=1.0)
    return 1.0 - x.pow(3) * (10.0 - x * (15.0 - 6.0 * x))


def cutoff_envelope_slope(dist: Tensor, cutoff: float) -> Tensor:
    """Derivative of :func:`cutoff_envelope` in ``dist``, ``[E, 1]``:
    ``w'(x) / cutoff = −30 x² (1 − x)² / cutoff`` (``0`` from the cutoff on)."""
    x = (dist / cutoff).clamp(max=1.0)
    return (-30.0 / cutoff) * (x * (1.0 - x)).square()


class GNBlock(MessagePassing):
    """One residual message-passing step with an edge latent and sum aggregation.

    For an edge ``j → i`` with latent ``e_ij`` and raw features ``g_ij`` (relative
    geometry and edge constants)::

        e'_ij = e_ij + φ_e([x_i, x_j, e_ij, g_ij])
        x'_i  = x_i  + φ_x([x_i, Σ_j e'_ij])

    Args:
        hidden: Width of node and edge latents.
        edge_features: Width of the raw edge features ``g``.
        layers: Linear layers per MLP.
        activation: Activation name.
        scatter: Scatter backend name (see :func:`resolve_scatter`).
    """

    def __init__(self, hidden: int, edge_features: int, layers: int = 2,
                 activation: str = "softplus", scatter: str = "auto") -> None:
        super().__init__(aggr="sum", flow="source_to_target")
        self.scatter_backend = resolve_scatter(scatter)
        self.edge_mlp = MLP(3 * hidden + edge_features, hidden, hidden, layers, activation,
                            rows="edges")
        self.node_mlp = MLP(2 * hidden, hidden, hidden, layers, activation, rows="nodes")

    def forward(self, x: Tensor, e: Tensor, g: Tensor, edge_index: Tensor,
                weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Update node and edge latents.

        Args:
            x: Node latents ``[N, hidden]``.
            e: Edge latents ``[E, hidden]``.
            g: Raw edge features ``[E, edge_features]``.
            edge_index: ``[2, E]``.
            weight: Weight of each edge's message in the sum, ``[E, 1]`` (a smooth
                cutoff, see :func:`cutoff_envelope`; ``None``: 1).

        Returns:
            ``(x' [N, hidden], e' [E, hidden])``.
        """
        e = self.edge_updater(edge_index, x=x, e=e, g=g)
        n = x.shape[0]
        x = self.propagate(edge_index, x=x, e=e if weight is None else e * weight, size=(n, n))
        return x, e

    def edge_update(self, x_i: Tensor, x_j: Tensor, e: Tensor, g: Tensor) -> Tensor:
        """``e + φ_e([x_i, x_j, e, g])``, ``[E, hidden]``."""
        return e + self.edge_mlp(torch.cat([x_i, x_j, e, g], -1))

    def message(self, e: Tensor) -> Tensor:
        """The updated edge latent is the message, ``[E, hidden]``."""
        return e

    def aggregate(self, inputs: Tensor, index: Tensor, ptr: Tensor | None = None,
                  dim_size: int | None = None) -> Tensor:
        """Sum messages ``[E, hidden]`` at their receivers, ``[N, hidden]``."""
        if self.scatter_backend == "torch_scatter":
            return scatter_sum(inputs, index, dim_size, "torch_scatter")
        return super().aggregate(inputs, index, ptr=ptr, dim_size=dim_size)

    def update(self, inputs: Tensor, x: Tensor) -> Tensor:
        """``x + φ_x([x, Σ e'])``, ``[N, hidden]``."""
        return x + self.node_mlp(torch.cat([x, inputs], -1))


class GraphNetwork(nn.Module):
    """Encode–process–decode graph network over particle states.

    Node inputs are ``[p, c]`` (``p`` left out with ``use_momenta=False``, ``q``
    added with ``absolute_positions=True``); positions otherwise enter only
    through the relative edge geometry ``q_i − q_j, |q_i − q_j|``, so the outputs
    are invariant under a common translation of all positions of a graph. Every
    operation is per node, per edge, or a sum over incoming edges, so the outputs
    are permutation-equivariant and graphs in a batch do not interact.

    Args:
        dim: Coordinates per particle ``d``.
        node_constants: Node constants per particle ``k``.
        hidden: Latent width.
        node_out: Outputs per node.
        edge_out: Outputs per edge (0: no edge decoder).
        edge_features: Edge constants per edge ``a`` (0: none).
        steps: Message-passing steps ``K`` (>= 0).
        layers: Linear layers per MLP.
        activation: Activation name.
        use_momenta: Include ``p`` in the node inputs.
        absolute_positions: Include ``q`` in the node inputs (breaks translation
            invariance; needed for external potentials).
        scatter: Scatter backend name.
        distance_eps: Smoothing of ``|q_i − q_j|`` (see :func:`edge_geometry`).
        cutoff: Edges longer than this carry nothing: each edge's message (and edge
            output) is weighted by :func:`cutoff_envelope`, smooth at the cutoff, so
            the outputs do not depend on which edges beyond it a neighbour graph
            holds (``None``: every edge counts fully, the default).
    """

    def __init__(self, dim: int, node_constants: int, hidden: int, node_out: int,
                 edge_out: int = 0, edge_features: int = 0, steps: int = 2, layers: int = 2,
                 activation: str = "softplus", use_momenta: bool = True,
                 absolute_positions: bool = False, scatter: str = "auto",
                 distance_eps: float = 1e-8, cutoff: float | None = None) -> None:
        super().__init__()
        for name, value, low in (("dim", dim, 1), ("node_constants", node_constants, 0),
                                 ("edge_features", edge_features, 0), ("steps", steps, 0),
                                 ("edge_out", edge_out, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"GraphNetwork {name} must be an int >= {low}, got {value!r}")
        if not (isinstance(distance_eps, (int, float)) and distance_eps >= 0):
            raise ValueError(f"distance_eps must be a number >= 0, got {distance_eps!r}")
        node_in = node_constants + dim * (int(use_momenta) + int(absolute_positions))
        if node_in == 0:
            raise ValueError("GraphNetwork has no node inputs: give node constants, momenta "
                             "or absolute positions")
        self.dim, self.node_constants, self.edge_features = dim, node_constants, edge_features
        self.use_momenta, self.absolute_positions = use_momenta, absolute_positions
        self.distance_eps = float(distance_eps)
        if cutoff is not None and not (isinstance(cutoff, (int, float))
                                       and not isinstance(cutoff, bool)
                                       and math.isfinite(cutoff) and cutoff > 0):
            raise ValueError(f"cutoff must be a positive finite number or None, got {cutoff!r}")
        self.cutoff = None if cutoff is None else float(cutoff)
        self.scatter_backend = resolve_scatter(scatter)
        geometry = dim + 1 + edge_features
        self.node_encoder = MLP(node_in, hidden, hidden, layers, activation, rows="nodes")
        self.edge_encoder = MLP(geometry, hidden, hidden, layers, activation, rows="edges")
        self.blocks = nn.ModuleList(GNBlock(hidden, geometry, layers, activation, scatter)
                                    for _ in range(steps))
        self.node_decoder = MLP(hidden, hidden, node_out, layers, activation, rows="nodes")
        self.edge_decoder = (MLP(hidden, hidden, edge_out, layers, activation, rows="edges")
                             if edge_out else None)

    def forward(self, q: Tensor, p: Tensor | None, c: Tensor, edge_index: Tensor,
                edge_attr: Tensor | None = None, box: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None]:
        """Per-node (and per-edge) outputs.

        Args:
            q: Positions ``[N, d]``.
            p: Momenta ``[N, d]`` (ignored, may be ``None``, with ``use_momenta=False``).
            c: Node constants ``[N, k]``.
            edge_index: ``[2, E]`` (senders, receivers), no self loops.
            edge_attr: Edge constants ``[E, a]``; ``None`` when ``a = 0``.
            box: Periodic box lengths of each edge's graph ``[E, d]`` (minimum-image
                edge vectors), or ``None``.

        Returns:
            ``(node_out [N, node_out], edge_out [E, edge_out] or None)``.
        """
        parts = [c]
        if self.use_momenta:
            parts.insert(0, p)
        if self.absolute_positions:
            parts.append(q)
        g = edge_geometry(q, edge_index, self.distance_eps, box)
        weight = (None if self.cutoff is None
                  else cutoff_envelope(g[:, self.dim:self.dim + 1], self.cutoff))
        if self.edge_features:
            g = torch.cat([g, edge_attr], -1)
        x = self.node_encoder(torch.cat(parts, -1))
        e = self.edge_encoder(g)
        for block in self.blocks:
            x, e = block(x, e, g, edge_index, weight)
        node_out = self.node_decoder(x)
        edge_out = self.edge_decoder(e) if self.edge_decoder is not None else None
        if edge_out is not None and weight is not None:
            edge_out = edge_out * weight
        return node_out, edge_out
