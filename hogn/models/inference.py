"""Hamilton's equations of a trained model without autograd, for simulation.

A rollout needs ``∂H/∂q`` and ``∂H/∂p`` at every stage of every step and nothing
else: no gradient with respect to the parameters and no graph to differentiate
again. Autograd records the whole forward pass for a general backward pass; here
the forward pass keeps only the activation derivatives and the backward pass
(reverse mode, by hand) is written out for the networks of :mod:`hogn.nn`, with
the parameters read once (detached) and savings autograd cannot make:

- the contributions of the constant inputs (node constants ``c``, edge constants)
  to the first layers are computed once per rollout, not at every evaluation;
- the first layer of a message-passing edge MLP, ``W [x_i, x_j, e, g]``, is split by
  input: ``W_i x`` and ``W_j x`` are computed per *node* and then gathered to the
  edges (``E ≈ (n − 1) N`` for complete graphs of ``n`` particles), and in the
  backward pass the edge gradients are summed per node before the matrix product;
- a network of positions alone (a potential ``V(q)``: no momenta, no absolute
  positions) has constant first node latents: they and their part of the first
  block's edge MLP (``W_i x_i + W_j x_j`` on every edge) are computed once, and no
  gradient is taken back to them (two edge-sized scatters fewer a call);
- without an edge decoder, the last block's edge latents only feed their sums at the
  receivers, so its edge MLP's output layer acts on per-node sums (``N`` rows);
- the readout layer (``H`` itself) and gradients with respect to constants are never
  computed;
- with a cut-off, the edges beyond it (a neighbour list's skin: a third more edges
  at a skin of a tenth of the cut-off) carry nothing and are dropped before the
  networks run (:data:`COMPACT_BELOW`): 1.6x faster a call on argon with that skin;
- on large graphs the edge-sized tensors are written into tensors kept from one
  call to the next (:class:`_Buffers`), so a rollout step does not fault in fresh
  pages for them: with them the cost per particle stays flat from 1,024 to 16,384
  particles, where fresh allocations made it grow 2–3×
  (``benchmarks/bench_scaling.py``).

Periodic boxes (minimum-image edge vectors) and the smooth ``cutoff`` (the envelope's
weights on messages and edge energies, and its derivative) are written out too.

:mod:`hogn.energy_gradient` writes out the graph networks' gradient for training
too, differentiable in the parameters (the path of ``model.derivative``); this
module is the frozen-weight counterpart for rollouts, where the constant parts can
be computed once (about 1.2-1.5× faster per evaluation on 6-particle springs).

The result is the same field as :meth:`hogn.models.HamiltonianModel.derivative` up
to rounding (the sums are taken in another order): about ``1e-15`` relative in
float64, ``1e-6`` in float32. :func:`energy_gradient` returns ``None`` for a model
or network it does not recognise (another activation, a subclass with its own
``energy``, stacked per-task weights, ...): the caller then uses autograd.

Recognised: :class:`~hogn.models.HOGN`, :class:`~hogn.models.SeparableHOGN` and
:class:`~hogn.models.HNN`, with the activations of :data:`hogn.nn.ACTIVATIONS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hogn import nn as hnn
from hogn.graph import GraphBatch

__all__ = ["GradientFn", "energy_gradient", "graph_network_gradient", "mlp_gradient",
           "position_gradient", "separable_gradient"]

#: ``grad(q, p) -> (∂H/∂q [N, d], ∂H/∂p [N, d])`` of the summed ``H`` of every graph.
GradientFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]

_ACTIVATIONS: dict[type, str] = {hnn.Softplus: "softplus", nn.Tanh: "tanh", nn.SiLU: "silu"}


class _Buffers:
    """Edge-sized tensors kept from one call of a gradient function to the next.

    An evaluation on ``E`` edges makes a few dozen tensors ``[E, h]``; on large graphs
    they pass glibc's mmap threshold (32 MiB) or, freed together at the end, are
    returned to the system, so every call would fault their pages in afresh (the
    kernel's share of a 16,384-particle evaluation was about 60 %). Written with
    ``out=`` into tensors kept here, each call reuses the memory of the last one.

    Args:
        like: A tensor of the dtype and device to allocate.
        on: ``False``: hand out ``None`` (allocate per call; small graphs).
        capacity: Rows to allocate at least (the edges; a call may use fewer).
    """

    def __init__(self, like: Tensor, on: bool, capacity: int = 0) -> None:
        self.like, self.on, self.capacity = like, on, capacity
        self.kept: dict[tuple[str, int], Tensor] = {}

    def __call__(self, name: str, rows: int, cols: int) -> Tensor | None:
        """The first ``rows`` of the kept tensor ``[capacity, cols]`` of ``name`` (made
        on first use), or ``None``."""
        if not self.on:
            return None
        key = (name, cols)
        t = self.kept.get(key)
        if t is None or t.shape[0] < rows:
            t = self.kept[key] = self.like.new_empty(max(rows, self.capacity), cols)
        return t[:rows]


#: With a cut-off, a call keeps only the edges within it when they are at most this
#: fraction of the graph's (a neighbour list holds those within cut-off + skin).
COMPACT_BELOW = 0.9

#: Graphs with at least this many edges keep their edge-sized tensors between calls
#: (:class:`_Buffers`); below, allocation is cheap and kept memory would be waste.
KEEP_EDGE_BUFFERS = 4096


def _activate(kind: str, z: Tensor, out: Tensor | None = None, slope: Tensor | None = None
              ) -> tuple[Tensor, Tensor]:
    """Activation at ``z [R, h]`` and what its reverse pass needs (see :func:`_slope`),
    written into ``out`` and ``slope`` when given.

    The values are those of the modules (``F.softplus``, ``tanh``, ``silu``), the
    derivatives those of their backward passes (``hogn.nn.Softplus``: ``sigmoid``).
    """
    if kind == "softplus":
        if out is None:
            return F.softplus(z), torch.sigmoid(z)
        return torch._C._nn.softplus(z, 1, 20, out=out), torch.sigmoid(z, out=slope)
    if kind == "tanh":
        y = torch.tanh(z, out=out)
        return y, y  # the derivative 1 − y² is applied by tanh_backward
    s = torch.sigmoid(z, out=slope)  # silu: x σ(x), derivative σ(x) + x σ(x) (1 − σ(x))
    a = torch.mul(z, s, out=out)
    return a, s.addcmul_(a, s, value=-1.0).add_(a)


def _slope(kind: str, grad: Tensor, saved: Tensor) -> Tensor:
    """``grad · σ'(z)`` from what :func:`_activate` saved (``grad`` may be overwritten)."""
    if kind == "tanh":
        if grad.is_contiguous() and grad.shape == saved.shape:
            return torch.ops.aten.tanh_backward.grad_input(grad, saved, grad_input=grad)
        return torch.ops.aten.tanh_backward(grad, saved)
    return grad.mul_(saved) if grad.is_contiguous() and grad.shape == saved.shape else (
        grad * saved)


def _out(buf: _Buffers | None, name: str, rows: int, cols: int) -> Tensor | None:
    """``buf(name, rows, cols)``, or ``None`` without buffers."""
    return None if buf is None else buf(name, rows, cols)


class _Net:
    """A :class:`hogn.nn.MLP` with detached weights, evaluated from the pre-activation
    of its first layer (the caller computes that layer, split by inputs).

    The methods take an optional :class:`_Buffers` and a ``tag`` naming this network's
    tensors in it: rows are then written into tensors kept from call to call.

    Attributes:
        weights: ``W_k [out_k, in_k]`` of every linear layer.
        weights_t: ``W_kᵀ`` (contiguous) for the forward products.
        biases: ``b_k [out_k]``.
        kind: Activation name.
    """

    def __init__(self, weights: list[Tensor], biases: list[Tensor], kind: str) -> None:
        self.weights = weights
        self.weights_t = [w.t().contiguous() for w in weights]
        self.biases = biases
        self.kind = kind

    @classmethod
    def of(cls, mlp: nn.Module | None) -> _Net | None:
        """The frozen network of an ``MLP``, or ``None`` if it is not a plain stack of
        :class:`hogn.nn.Linear` layers (own 2-D weights, with biases) and one
        recognised activation between them."""
        if type(mlp) is not hnn.MLP:
            return None
        mods = list(mlp)
        linears, acts = mods[0::2], mods[1::2]
        kinds = {_ACTIVATIONS.get(type(a)) for a in acts}
        if (len(mods) % 2 != 1 or any(type(m) is not hnn.Linear for m in linears)
                or None in kinds or len(kinds) > 1
                or any(m.weight.dim() != 2 or m.bias is None for m in linears)):
            return None
        kind = kinds.pop() if kinds else "tanh"  # one layer: no activation to apply
        return cls([m.weight.detach() for m in linears], [m.bias.detach() for m in linears],
                   kind)

    @property
    def first(self) -> Tensor:
        """``W_0 [out_0, in_0]``."""
        return self.weights[0]

    def first_layer(self, x: Tensor, buf: _Buffers | None = None, tag: str = "") -> Tensor:
        """Pre-activation of the first layer at its full input ``x [R, in_0]``."""
        return torch.addmm(self.biases[0], x, self.weights_t[0],
                           out=_out(buf, f"{tag}.z0", x.shape[0], self.weights[0].shape[0]))

    def _layers(self, z0: Tensor, upto: int, buf: _Buffers | None, tag: str,
                scratch: str | None = None) -> tuple[Tensor, Tensor, list[Tensor]]:
        """From ``z0``, the activations after layers ``0 … upto − 1`` and the products
        of layers ``1 … upto − 1`` between them; returns the last activation, the last
        pre-activation and the activation derivatives. The pre-activations and the
        activations the reverse pass does not read go to the ``scratch`` names
        (shared by networks run one after the other), the derivatives to ``tag``."""
        scratch = scratch or tag
        derivs: list[Tensor] = []
        rows, z, a = z0.shape[0], z0, z0
        for k in range(1, upto + 1):
            width = self.weights[k].shape[1]
            kept = tag if self.kind == "tanh" else scratch  # tanh's derivative is its value
            a, d = _activate(self.kind, z, _out(buf, f"{kept}.a{k}", rows, width),
                             _out(buf, f"{tag}.d{k}", rows, width))
            derivs.append(d)
            if k < upto:
                z = torch.addmm(self.biases[k], a, self.weights_t[k],
                                out=_out(buf, f"{scratch}.z{k}", rows, self.weights[k].shape[0]))
        return a, z, derivs

    def forward(self, z0: Tensor, output: bool = True, buf: _Buffers | None = None,
                tag: str = "", scratch: str | None = None
                ) -> tuple[Tensor | None, list[Tensor]]:
        """Run the layers after the first from its pre-activation ``z0 [R, out_0]``
        (``scratch``: see :meth:`_layers`; the output goes there too).

        Returns:
            The output ``[R, out]`` (``None`` with ``output=False``: the last layer
            is skipped) and, per hidden layer, what the reverse pass needs of its
            activation (``[R, h]``, see :func:`_activate`).
        """
        last = len(self.weights) - 1
        if last == 0:
            return (z0 if output else None), []
        a, _, derivs = self._layers(z0, last, buf, tag, scratch)
        if not output:
            return None, derivs
        return torch.addmm(self.biases[last], a, self.weights_t[last],
                           out=_out(buf, f"{scratch or tag}.z{last}", z0.shape[0],
                                    self.weights[last].shape[0])), derivs

    def hidden(self, z0: Tensor, buf: _Buffers | None = None, tag: str = ""
               ) -> tuple[Tensor, list[Tensor]]:
        """Like :meth:`forward` up to the last hidden activation ``[R, h]`` (returned
        instead of the output; at least two layers)."""
        a, _, derivs = self._layers(z0, len(self.weights) - 1, buf, tag)
        return a, derivs

    def _back_from(self, grad: Tensor, top: int, derivs: list[Tensor],
                   buf: _Buffers | None, tag: str) -> Tensor:
        """Through the products of layers ``top … 1`` and the activations below them."""
        for k in range(top, 0, -1):
            product = torch.mm(grad, self.weights[k],
                               out=_out(buf, f"{tag}.g{k}", grad.shape[0],
                                        self.weights[k].shape[1]))
            grad = _slope(self.kind, product, derivs[k - 1])
        return grad

    def backward(self, grad: Tensor, derivs: list[Tensor], at_hidden: bool = False,
                 buf: _Buffers | None = None, tag: str = "") -> Tensor:
        """Gradient at the first pre-activation from that at the output (``at_hidden``:
        at the last hidden activation, and ``grad`` is overwritten), ``[R, out_0]``."""
        last = len(self.weights) - 1
        if at_hidden:
            grad, last = _slope(self.kind, grad, derivs[last - 1]), last - 1
        return self._back_from(grad, last, derivs, buf, tag)

    def backward_readout(self, rows: int, derivs: list[Tensor], buf: _Buffers | None = None,
                         tag: str = "") -> Tensor:
        """Like :meth:`backward` for the gradient of the sum over ``rows`` rows of output
        column 0 (an energy readout), ``[rows, out_0]``."""
        w = self.weights[-1][0]
        if len(self.weights) == 1:  # the first layer is the readout
            grad = w.new_zeros(rows, self.weights[0].shape[0])
            grad[:, 0] = 1.0
            return grad
        saved = derivs[-1]
        out = _out(buf, f"{tag}.r", rows, saved.shape[1])
        if self.kind == "tanh":
            grad = (torch.ops.aten.tanh_backward(w.expand_as(saved), saved) if out is None
                    else torch.ops.aten.tanh_backward.grad_input(w.expand_as(saved), saved,
                                                                 grad_input=out))
        else:
            grad = torch.mul(saved, w, out=out)
        return self._back_from(grad, len(self.weights) - 2, derivs, buf, tag)


def _scatter(src: Tensor, index: Tensor, rows: int) -> Tensor:
    """Row sums ``[rows, h]`` of ``src [M, h]`` by ``index [M]``."""
    return src.new_zeros(rows, src.shape[1]).index_add_(0, index, src)


def _edge_bias(bias: Tensor, w_attr: Tensor, attr: Tensor | None) -> Tensor:
    """Bias of a first edge layer plus its edge constants' part, ``[out]`` or ``[E, out]``."""
    if attr is None or w_attr.shape[1] == 0:
        return bias
    return torch.addmm(bias, attr, w_attr.t())


@dataclass
class _Block:
    """A :class:`hogn.nn.GNBlock`'s frozen MLPs, their first layers split by input.

    The edge MLP reads ``[x_i, x_j, e, g, a]`` (receiver and sender latents, edge
    latent, geometry, edge constants), the node MLP ``[x, Σ e]``.

    Attributes:
        edge, node: The two MLPs.
        width: Output width ``h'`` of the edge MLP's first layer.
        w_ij, w_ij_t: ``[W_i; W_j] [2h', h]`` and its transpose (``x ↦ [x W_iᵀ, x W_jᵀ]``).
        w_e, w_e_t, w_g, w_g_t: The edge latent's and the geometry's columns.
        bias: First-layer bias plus the edge constants' part, ``[h']`` or ``[E, h']``.
        w_x, w_x_t, w_a, w_a_t: The node MLP's columns for ``x`` and for ``Σ e``.
    """

    edge: _Net
    node: _Net
    width: int
    w_ij: Tensor
    w_ij_t: Tensor
    w_e: Tensor
    w_e_t: Tensor
    w_g: Tensor
    w_g_t: Tensor
    bias: Tensor
    w_x: Tensor
    w_x_t: Tensor
    w_a: Tensor
    w_a_t: Tensor

    @classmethod
    def of(cls, edge: _Net, node: _Net, geo: int, attr: Tensor | None) -> _Block:
        """Split the first layers (``geo = d + 1`` geometry columns)."""
        hid = node.first.shape[1] // 2
        w, v = edge.first, node.first
        w_ij = torch.cat([w[:, :hid], w[:, hid:2 * hid]], 0)
        w_e, w_g = w[:, 2 * hid:3 * hid], w[:, 3 * hid:3 * hid + geo]
        return cls(edge, node, w.shape[0], w_ij, w_ij.t().contiguous(),
                   w_e, w_e.t().contiguous(), w_g, w_g.t().contiguous(),
                   _edge_bias(edge.biases[0], w[:, 3 * hid + geo:], attr),
                   v[:, :hid], v[:, :hid].t().contiguous(), v[:, hid:], v[:, hid:].t().contiguous())


class _GraphNetworkGradient:
    """``∂/∂q`` and ``∂/∂p`` of the summed readout column 0 of a
    :class:`hogn.nn.GraphNetwork` (node outputs, plus edge outputs if it has an
    edge decoder; with its smooth cutoff, if any), on one static graph.

    Graphs of :data:`KEEP_EDGE_BUFFERS` edges or more keep their edge-sized tensors
    from one call to the next (:class:`_Buffers`): about the memory of one evaluation
    stays held while the function lives.
    """

    def __init__(self, gn: hnn.GraphNetwork, graph: GraphBatch,
                 nets: dict[str, _Net]) -> None:
        self.gn = gn
        self.d = d = gn.dim
        self.eps = gn.distance_eps
        self.cutoff = gn.cutoff
        self.recv, self.send = graph.edge_index[1], graph.edge_index[0]
        self.n, self.e = graph.num_nodes, graph.edge_index.shape[1]
        self.box = graph.edge_box
        self.buf = _Buffers(graph.q, on=self.e >= KEEP_EDGE_BUFFERS, capacity=self.e)
        c, attr = graph.c, graph.edge_attr if gn.edge_features else None
        geo = d + 1
        # node encoder: input [p?, c, q?]; the c columns fold into a per-node bias
        enc = nets["node_encoder"]
        k = gn.node_constants
        cols_p = slice(0, d) if gn.use_momenta else None
        start_c = d if gn.use_momenta else 0
        cols_q = slice(start_c + k, start_c + k + d) if gn.absolute_positions else None
        w0 = enc.first
        self.node_enc, self.node_cols = enc, [s for s in (cols_p, cols_q) if s is not None]
        self.node_w = (torch.cat([w0[:, s] for s in self.node_cols], 1)
                       if self.node_cols else None)  # [h, d or 2d]
        self.node_w_t = None if self.node_w is None else self.node_w.t().contiguous()
        self.node_bias = torch.addmm(enc.biases[0], c, w0[:, start_c:start_c + k].t())
        # edge encoder: input [rel, dist, edge_attr]
        enc = nets["edge_encoder"]
        self.edge_enc = enc
        self.edge_geo_w = enc.first[:, :geo]
        self.edge_geo_w_t = self.edge_geo_w.t().contiguous()
        self.edge_bias = _edge_bias(enc.biases[0], enc.first[:, geo:], attr)
        self.blocks = [_Block.of(nets[f"blocks.{i}.edge_mlp"], nets[f"blocks.{i}.node_mlp"],
                                 geo, attr) for i in range(len(gn.blocks))]
        self.node_dec, self.edge_dec = nets["node_decoder"], nets.get("edge_decoder")
        # Without an edge decoder the last block's edge latents only feed their sums at
        # the receivers: its edge MLP's last layer acts on the per-node sums of its
        # hidden activations (N rows instead of E), Σ_e w_e (a_e W + b) =
        # (Σ_e w_e a_e) W + (Σ_e w_e) b, with w_e the cutoff's envelope (or 1).
        self.fold_last = (self.edge_dec is None and bool(self.blocks)
                          and len(self.blocks[-1].edge.weights) >= 2)
        if self.fold_last and self.cutoff is None:
            last = self.blocks[-1].edge
            deg = c.new_zeros(self.n).index_add_(0, self.recv, c.new_ones(self.e))
            self.deg_bias = deg[:, None] * last.biases[-1]
        # A network of positions alone (a potential V(q): no momenta, no absolute
        # positions) encodes constants only into its first node latents: they, and their
        # part of the first block's edge MLP (W_i x_i + W_j x_j on every edge), are
        # computed once here, and no gradient is taken back to them.
        self.x0: Tensor | None = None
        self.block0_bias: Tensor | None = None
        if not self.node_cols:
            self.x0 = self.node_enc.forward(self.node_bias)[0]
            if self.blocks:
                blk, width = self.blocks[0], self.blocks[0].width
                xw = self.x0 @ blk.w_ij_t
                self.block0_bias = (blk.bias + xw[:, :width].index_select(0, self.recv)
                                    + xw[:, width:].index_select(0, self.send))

    def _geometry(self, q: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None,
                                             Tensor | None]:
        """``(rel [E, d], dist [E, 1], [rel, dist] [E, d + 1], envelope [E, 1],
        its slope [E, 1])`` (the last two ``None`` without a cutoff)."""
        recv, send, d, buf, rows = self.recv, self.send, self.d, self.buf, self.e
        rel = torch.sub(torch.index_select(q, 0, recv, out=buf("q_recv", rows, d)),
                        torch.index_select(q, 0, send, out=buf("q_send", rows, d)),
                        out=buf("rel", rows, d))
        if self.box is not None:  # minimum image: rel − round(rel / L) L
            rel.sub_(torch.div(rel, self.box, out=buf("image", rows, d))
                     .round_().mul_(self.box))
        dist = torch.sum(torch.mul(rel, rel, out=buf("square", rows, d)), -1, keepdim=True,
                         out=buf("dist", rows, 1)).add_(self.eps).sqrt_()
        geo = torch.cat([rel, dist], -1, out=buf("geo", rows, d + 1))
        if self.cutoff is None:
            return rel, dist, geo, None, None
        # hogn.nn.cutoff_envelope and its slope at x = min(dist / r_c, 1)
        x = torch.div(dist, self.cutoff, out=buf("x", rows, 1)).clamp_(max=1.0)
        poly = torch.mul(x, -6.0, out=buf("env", rows, 1)).add_(15.0).mul_(x).neg_().add_(10.0)
        env = poly.mul_(torch.pow(x, 3, out=buf("x3", rows, 1))).neg_().add_(1.0)
        slope = (torch.mul(x, -1.0, out=buf("env_slope", rows, 1)).add_(1.0).mul_(x)
                 .square_().mul_(-30.0 / self.cutoff))
        return rel, dist, geo, env, slope

    def __call__(self, q: Tensor, p: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``(∂S/∂q [N, d], ∂S/∂p [N, d] or None)`` of the readout sum ``S``."""
        recv, send, n, rows, d, buf = self.recv, self.send, self.n, self.e, self.d, self.buf

        def dot(u: Tensor, v: Tensor) -> Tensor:  # row-wise u·v, [E, 1]
            return torch.sum(torch.mul(u, v, out=buf("product", rows, u.shape[1])), -1,
                             keepdim=True, out=buf("dot", rows, 1))

        # ---------------------------------------------------------------- forward
        rel, dist, geo, env, env_slope = self._geometry(q)
        edge_bias, block0_bias = self.edge_bias, self.block0_bias
        biases = [blk.bias for blk in self.blocks]
        if env is not None:  # edges beyond the cut-off (a neighbour list's skin) carry 0
            keep = torch.nonzero(dist[:, 0] < self.cutoff).squeeze(1)
            if keep.numel() <= COMPACT_BELOW * rows:
                def pick(t: Tensor | None) -> Tensor | None:
                    return (t.index_select(0, keep) if t is not None and t.dim() == 2
                            and t.shape[0] == self.e else t)

                recv, send, rel, dist, geo, env, env_slope = (
                    t.index_select(0, keep) for t in (recv, send, rel, dist, geo, env, env_slope))
                rows = keep.numel()
                edge_bias, block0_bias = pick(edge_bias), pick(block0_bias)
                biases = [pick(bias) for bias in biases]
        parts = [t for t, on in ((p, self.gn.use_momenta), (q, self.gn.absolute_positions)) if on]
        node_enc_d: list[Tensor] = []
        if self.x0 is not None:
            x = self.x0
        else:
            z = torch.addmm(self.node_bias, torch.cat(parts, -1) if len(parts) > 1 else parts[0],
                            self.node_w_t)
            x, node_enc_d = self.node_enc.forward(z)
        h = self.edge_geo_w.shape[0]
        e, edge_enc_d = self.edge_enc.forward(
            torch.addmm(edge_bias, geo, self.edge_geo_w_t, out=buf("enc.z0", rows, h)),
            buf=buf, tag="enc")
        saved = []
        for i, blk in enumerate(self.blocks):
            tag, width = f"block{i}", blk.width
            if i == 0 and block0_bias is not None:  # the constant nodes' part
                z = torch.addmm(block0_bias, e, blk.w_e_t, out=buf("edge_mlp.z0", rows, width))
                z.addmm_(geo, blk.w_g_t)
            else:
                xw = x @ blk.w_ij_t
                z = torch.addmm(biases[i], e, blk.w_e_t, out=buf("edge_mlp.z0", rows, width))
                z.addmm_(geo, blk.w_g_t)
                z += torch.index_select(xw[:, :width], 0, recv, out=buf("gather", rows, width))
                z += torch.index_select(xw[:, width:], 0, send, out=buf("gather", rows, width))
            if self.fold_last and i == len(self.blocks) - 1:
                a, edge_d = blk.edge.hidden(z, buf, tag)
                if env is None:
                    base = _scatter(e, recv, n).add_(self.deg_bias)
                    summed_a = _scatter(a, recv, n)
                else:
                    weighted = torch.mul(e, env, out=buf("weighted", rows, e.shape[1]))
                    base = _scatter(weighted, recv, n).addcmul_(
                        _scatter(env, recv, n), blk.edge.biases[-1])
                    weighted = torch.mul(a, env, out=buf("weighted", rows, a.shape[1]))
                    summed_a = _scatter(weighted, recv, n)
                agg = torch.addmm(base, summed_a, blk.edge.weights_t[-1])
                kept = (e, a)  # the envelope's gradient needs the summed latent's parts
            else:
                m, edge_d = blk.edge.forward(z, buf=buf, tag=tag, scratch="edge_mlp")
                e = torch.add(e, m, out=buf(f"{tag}.e", rows, m.shape[1]))
                agg = _scatter(e if env is None else torch.mul(
                    e, env, out=buf("weighted", rows, e.shape[1])), recv, n)
                kept = (e, None)
            z = torch.addmm(blk.node.biases[0], x, blk.w_x_t).addmm_(agg, blk.w_a_t)
            m, node_d = blk.node.forward(z)
            x = x + m
            saved.append((edge_d, node_d, kept))
        _, dec_d = self.node_dec.forward(self.node_dec.first_layer(x), output=False)
        # --------------------------------------------------------------- backward
        gx = self.node_dec.backward_readout(n, dec_d) @ self.node_dec.first
        ge: Tensor | None = None
        grad_w: Tensor | None = None  # ∂S/∂w_e of the envelope's weights
        if self.edge_dec is not None:
            energy, edec_d = self.edge_dec.forward(
                self.edge_dec.first_layer(e, buf, "edge_decoder"), output=env is not None,
                buf=buf, tag="edge_decoder")
            ge = torch.mm(self.edge_dec.backward_readout(rows, edec_d, buf, "back"),
                          self.edge_dec.first, out=buf("ge", rows, e.shape[1]))
            if env is not None:  # S holds Σ w_e ε_e
                grad_w = buf("grad_w", rows, 1)
                grad_w = energy[:, :1].clone() if grad_w is None else grad_w.copy_(energy[:, :1])
                ge.mul_(env)

        def add_to_grad_w(term: Tensor) -> Tensor:
            if grad_w is None:
                out = buf("grad_w", rows, 1)
                return term.clone() if out is None else out.copy_(term)
            return grad_w.add_(term)

        ggeo = None
        for j, (blk, (edge_d, node_d, (e_k, a_k))) in enumerate(zip(reversed(self.blocks),
                                                                    reversed(saved),
                                                                    strict=True)):
            # the first block's node inputs are constants of a network of positions
            to_nodes = self.x0 is None or j < len(self.blocks) - 1
            gz = blk.node.backward(gx, node_d)
            if to_nodes:
                gx = torch.addmm(gx, gz, blk.w_x)
            gagg = gz @ blk.w_a
            if self.fold_last and j == 0:  # the folded last layer (ge is None here)
                last_w = blk.edge.weights[-1]
                ga = torch.index_select(gagg @ last_w, 0, recv,
                                        out=buf("ga", rows, last_w.shape[1]))
                ge = torch.index_select(gagg, 0, recv, out=buf("ge", rows, gagg.shape[1]))
                if env is not None:  # agg = Σ w (e + a Wᵀ + b)
                    grad_w = add_to_grad_w(dot(ge, e_k))
                    grad_w.add_(dot(ga, a_k))
                    grad_w.add_(torch.index_select(gagg @ blk.edge.biases[-1][:, None], 0, recv,
                                                   out=buf("dot", rows, 1)))
                    ge.mul_(env)
                    ga.mul_(env)
                gz = blk.edge.backward(ga, edge_d, at_hidden=True, buf=buf, tag="back")
            else:
                picked = torch.index_select(
                    gagg, 0, recv, out=buf("ge" if ge is None else "gagg", rows, gagg.shape[1]))
                if env is not None:  # agg = Σ w e
                    grad_w = add_to_grad_w(dot(picked, e_k))
                    picked.mul_(env)
                ge = picked if ge is None else ge.add_(picked)
                gz = blk.edge.backward(ge, edge_d, buf=buf, tag="back")
            ge = torch.addmm(ge, gz, blk.w_e) if gz is ge else ge.addmm_(gz, blk.w_e)
            ggeo = (torch.mm(gz, blk.w_g, out=buf("ggeo", rows, d + 1)) if ggeo is None
                    else ggeo.addmm_(gz, blk.w_g))
            if to_nodes:
                s = torch.cat([_scatter(gz, recv, n), _scatter(gz, send, n)], 1)
                gx = gx.addmm_(s, blk.w_ij)
        if ge is None:  # no blocks and no edge decoder: the edges do not matter
            ggeo = q.new_zeros(rows, d + 1)
        else:
            gz = self.edge_enc.backward(ge, edge_enc_d, buf=buf, tag="back")
            ggeo = (torch.mm(gz, self.edge_geo_w, out=buf("ggeo", rows, d + 1)) if ggeo is None
                    else ggeo.addmm_(gz, self.edge_geo_w))
        gdist = ggeo[:, d:]
        if grad_w is not None:
            gdist = torch.addcmul(gdist, grad_w, env_slope, out=buf("gdist", rows, 1))
        grel = torch.addcmul(ggeo[:, :d], gdist, torch.div(rel, dist, out=buf("unit", rows, d)),
                             out=buf("grel", rows, d))
        gq = _scatter(grel, recv, n).index_add_(0, send, grel, alpha=-1.0)
        gp = None
        if self.node_w is not None:
            gin = self.node_enc.backward(gx, node_enc_d) @ self.node_w
            if self.gn.use_momenta:
                gp = gin[:, :d]
            if self.gn.absolute_positions:
                gq = gq + gin[:, -d:]
        return gq, gp


def _graph_network_nets(gn: nn.Module) -> dict[str, _Net] | None:
    """The frozen MLPs of a plain :class:`hogn.nn.GraphNetwork`, or ``None``."""
    if (type(gn) is not hnn.GraphNetwork
            or any(type(b) is not hnn.GNBlock for b in gn.blocks)):
        return None
    nets: dict[str, _Net | None] = {
        "node_encoder": _Net.of(gn.node_encoder), "edge_encoder": _Net.of(gn.edge_encoder),
        "node_decoder": _Net.of(gn.node_decoder)}
    if gn.edge_decoder is not None:
        nets["edge_decoder"] = _Net.of(gn.edge_decoder)
    for i, block in enumerate(gn.blocks):
        nets[f"blocks.{i}.edge_mlp"] = _Net.of(block.edge_mlp)
        nets[f"blocks.{i}.node_mlp"] = _Net.of(block.node_mlp)
    if any(v is None for v in nets.values()):
        return None
    return nets  # type: ignore[return-value]


def energy_gradient(model: nn.Module, graph: GraphBatch) -> GradientFn | None:
    """``grad(q, p) -> (∂H/∂q, ∂H/∂p)`` of the summed ``H`` of a model on the static
    ``graph`` (its parameters read now: do not change them while using it), as the
    model's ``_written_gradient(graph)`` builds it from this module's functions
    (:func:`graph_network_gradient`, :func:`separable_gradient`, :func:`mlp_gradient`).
    This module knows no model class: each model says how its ``H`` is written out.

    Args:
        model: A :class:`~hogn.models.HamiltonianModel`.
        graph: Static graph (``c``, ``edge_index``, ``edge_attr``, ``ptr``), checked by
            the caller against the model.

    Returns:
        The gradient function (``q, p [N, d]`` to two ``[N, d]``), or ``None`` when
        the model's ``H`` is not written out here.
    """
    written = getattr(model, "_written_gradient", None)
    return written(graph) if callable(written) else None


def graph_network_gradient(gn: nn.Module, graph: GraphBatch) -> GradientFn | None:
    """``grad(q, p)`` of the summed readout of a graph network that reads momenta
    (:class:`~hogn.models.HOGN`'s ``H``), or ``None`` where it is not written out."""
    with torch.no_grad():
        nets = _graph_network_nets(gn)
        if nets is None or not gn.use_momenta:
            return None
        gn_grad = _GraphNetworkGradient(gn, graph, nets)

    def hogn_grad(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        gq, gp = gn_grad(q, p)
        assert gp is not None
        return gq, gp

    return hogn_grad


def separable_gradient(potential: nn.Module, kinetic: nn.Module, dim: int, graph: GraphBatch
                       ) -> GradientFn | None:
    """``grad(q, p)`` of ``T(p, c) + V(q, c)``: a per-node MLP ``kinetic`` of ``[p, c]``
    and a graph network ``potential`` without momenta
    (:class:`~hogn.models.SeparableHOGN`), or ``None`` where it is not written out."""
    with torch.no_grad():
        nets = _graph_network_nets(potential)
        net = _Net.of(kinetic)
        if nets is None or net is None or potential.use_momenta:
            return None
        v_grad = _GraphNetworkGradient(potential, graph, nets)
        t_bias = torch.addmm(net.biases[0], graph.c, net.first[:, dim:].t())
        w_p, w_p_t = net.first[:, :dim], net.first[:, :dim].t().contiguous()

    def separable_grad(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        _, derivs = net.forward(torch.addmm(t_bias, p, w_p_t), output=False)
        gp = net.backward_readout(p.shape[0], derivs) @ w_p
        gq, _ = v_grad(q, None)
        return gq, gp

    return separable_grad


def mlp_gradient(mlp: nn.Module, n_particles: int, dim: int, graph: GraphBatch
                 ) -> GradientFn | None:
    """``grad(q, p)`` of an MLP ``H`` of each graph's flattened ``[q, p, c]``
    (:class:`~hogn.models.HNN`), or ``None`` where it is not written out."""
    with torch.no_grad():
        net = _Net.of(mlp)
        if net is None:
            return None
        g, half = graph.num_graphs, n_particles * dim
        w = net.first[:, :2 * half]
        w_t = w.t().contiguous()
        bias = torch.addmm(net.biases[0], graph.c.reshape(g, -1), net.first[:, 2 * half:].t())

    def hnn_grad(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        flat = torch.cat([q.reshape(g, -1), p.reshape(g, -1)], -1)
        _, derivs = net.forward(torch.addmm(bias, flat, w_t), output=False)
        grad = net.backward_readout(g, derivs) @ w
        return grad[:, :half].reshape(q.shape), grad[:, half:].reshape(p.shape)

    return hnn_grad


def position_gradient(gn: nn.Module, graph: GraphBatch) -> Callable[[Tensor], Tensor] | None:
    """``grad(q) -> ∂S/∂q [N, d]`` of the summed readout ``S`` of a graph network that
    reads no momenta (a potential ``V(q)``), on the static ``graph``, written out as
    for :func:`energy_gradient` (its parameters read now).

    Returns:
        The gradient function, or ``None`` for a network this module does not write
        out (or one that reads momenta).
    """
    with torch.no_grad():
        nets = _graph_network_nets(gn)
        if nets is None or gn.use_momenta:
            return None
        v_grad = _GraphNetworkGradient(gn, graph, nets)

    def grad(q: Tensor) -> Tensor:
        with torch.no_grad():
            return v_grad(q, None)[0]

    return grad
