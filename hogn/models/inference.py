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
- without an edge decoder, the last block's edge latents only feed their sums at the
  receivers, so its edge MLP's output layer acts on per-node sums (``N`` rows);
- the readout layer (``H`` itself) and gradients with respect to constants are never
  computed.

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

__all__ = ["GradientFn", "energy_gradient"]

#: ``grad(q, p) -> (∂H/∂q [N, d], ∂H/∂p [N, d])`` of the summed ``H`` of every graph.
GradientFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]

_ACTIVATIONS: dict[type, str] = {hnn.Softplus: "softplus", nn.Tanh: "tanh", nn.SiLU: "silu"}


def _activate(kind: str, z: Tensor) -> tuple[Tensor, Tensor]:
    """Activation at ``z [R, h]`` and what its reverse pass needs (see :func:`_slope`).

    The values are those of the modules (``F.softplus``, ``tanh``, ``silu``), the
    derivatives those of their backward passes (``hogn.nn.Softplus``: ``sigmoid``).
    """
    if kind == "softplus":
        return F.softplus(z), torch.sigmoid(z)
    if kind == "tanh":
        y = torch.tanh(z)
        return y, y  # the derivative 1 − y² is applied by tanh_backward
    s = torch.sigmoid(z)  # silu: x σ(x), derivative σ(x) (1 + x (1 − σ(x)))
    return z * s, (1.0 - s).mul_(z).add_(1.0).mul_(s)


def _slope(kind: str, grad: Tensor, saved: Tensor) -> Tensor:
    """``grad · σ'(z)`` from what :func:`_activate` saved (``grad`` may be overwritten)."""
    if kind == "tanh":
        return torch.ops.aten.tanh_backward(grad, saved)
    return grad.mul_(saved) if grad.is_contiguous() and grad.shape == saved.shape else (
        grad * saved)


class _Net:
    """A :class:`hogn.nn.MLP` with detached weights, evaluated from the pre-activation
    of its first layer (the caller computes that layer, split by inputs).

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

    def forward(self, z0: Tensor, output: bool = True) -> tuple[Tensor | None, list[Tensor]]:
        """Run the layers after the first from its pre-activation ``z0 [R, out_0]``.

        Returns:
            The output ``[R, out]`` (``None`` with ``output=False``: the last layer
            is skipped) and, per hidden layer, what the reverse pass needs of its
            activation (``[R, h]``, see :func:`_activate`).
        """
        derivs: list[Tensor] = []
        z = z0
        for k in range(1, len(self.weights)):
            a, d = _activate(self.kind, z)
            derivs.append(d)
            if k == len(self.weights) - 1 and not output:
                return None, derivs
            z = torch.addmm(self.biases[k], a, self.weights_t[k])
        return z, derivs

    def hidden(self, z0: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Like :meth:`forward` up to the last hidden activation ``[R, h]`` (returned
        instead of the output; at least two layers)."""
        derivs: list[Tensor] = []
        z = z0
        for k in range(1, len(self.weights)):
            a, d = _activate(self.kind, z)
            derivs.append(d)
            if k < len(self.weights) - 1:
                z = torch.addmm(self.biases[k], a, self.weights_t[k])
        return a, derivs

    def backward(self, grad: Tensor, derivs: list[Tensor], at_hidden: bool = False) -> Tensor:
        """Gradient at the first pre-activation from that at the output (``at_hidden``:
        at the last hidden activation), ``[R, out_0]``."""
        last = len(self.weights) - 1
        if at_hidden:
            grad, last = _slope(self.kind, grad, derivs[last - 1]), last - 1
        for k in range(last, 0, -1):
            grad = _slope(self.kind, grad @ self.weights[k], derivs[k - 1])
        return grad

    def backward_readout(self, rows: int, derivs: list[Tensor]) -> Tensor:
        """Like :meth:`backward` for the gradient of the sum over ``rows`` rows of output
        column 0 (an energy readout), ``[rows, out_0]``."""
        w = self.weights[-1][0]
        if len(self.weights) == 1:  # the first layer is the readout
            grad = w.new_zeros(rows, self.weights[0].shape[0])
            grad[:, 0] = 1.0
            return grad
        grad = _slope(self.kind, w.expand_as(derivs[-1]), derivs[-1])
        for k in range(len(self.weights) - 2, 0, -1):
            grad = _slope(self.kind, grad @ self.weights[k], derivs[k - 1])
        return grad


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
    edge decoder), on one static graph."""

    def __init__(self, gn: hnn.GraphNetwork, graph: GraphBatch,
                 nets: dict[str, _Net]) -> None:
        self.gn = gn
        self.d = d = gn.dim
        self.eps = gn.distance_eps
        self.recv, self.send = graph.edge_index[1], graph.edge_index[0]
        self.n, self.e = graph.num_nodes, graph.edge_index.shape[1]
        self.box = graph.edge_box
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
        # hidden activations (N rows instead of E), Σ_e (a_e W + b) = (Σ_e a_e) W + deg b.
        self.fold_last = (self.edge_dec is None and bool(self.blocks)
                          and len(self.blocks[-1].edge.weights) >= 2)
        if self.fold_last:
            last = self.blocks[-1].edge
            deg = c.new_zeros(self.n).index_add_(0, self.recv, c.new_ones(self.e))
            self.deg_bias = deg[:, None] * last.biases[-1]

    def __call__(self, q: Tensor, p: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``(∂S/∂q [N, d], ∂S/∂p [N, d] or None)`` of the readout sum ``S``."""
        recv, send, n, e_rows, d = self.recv, self.send, self.n, self.e, self.d
        # ---------------------------------------------------------------- forward
        rel = hnn.minimum_image(q.index_select(0, recv) - q.index_select(0, send), self.box)
        dist = (rel.square().sum(-1, keepdim=True) + self.eps).sqrt()
        geo = torch.cat([rel, dist], -1)
        parts = [t for t, on in ((p, self.gn.use_momenta), (q, self.gn.absolute_positions)) if on]
        if parts:
            z = torch.addmm(self.node_bias, torch.cat(parts, -1) if len(parts) > 1 else parts[0],
                            self.node_w_t)
        else:
            z = self.node_bias
        x, node_enc_d = self.node_enc.forward(z)
        e, edge_enc_d = self.edge_enc.forward(torch.addmm(self.edge_bias, geo, self.edge_geo_w_t))
        saved = []
        for i, blk in enumerate(self.blocks):
            xw = x @ blk.w_ij_t
            z = torch.addmm(blk.bias, e, blk.w_e_t).addmm_(geo, blk.w_g_t)
            z += xw[:, :blk.width].index_select(0, recv)
            z += xw[:, blk.width:].index_select(0, send)
            if self.fold_last and i == len(self.blocks) - 1:
                a, edge_d = blk.edge.hidden(z)
                agg = torch.addmm(_scatter(e, recv, n).add_(self.deg_bias), _scatter(a, recv, n),
                                  blk.edge.weights_t[-1])
            else:
                m, edge_d = blk.edge.forward(z)
                e = e + m
                agg = _scatter(e, recv, n)
            z = torch.addmm(blk.node.biases[0], x, blk.w_x_t).addmm_(agg, blk.w_a_t)
            m, node_d = blk.node.forward(z)
            x = x + m
            saved.append((edge_d, node_d))
        _, dec_d = self.node_dec.forward(_first(self.node_dec, x), output=False)
        # --------------------------------------------------------------- backward
        gx = self.node_dec.backward_readout(n, dec_d) @ self.node_dec.first
        ge: Tensor | None = None
        if self.edge_dec is not None:
            _, edec_d = self.edge_dec.forward(_first(self.edge_dec, e), output=False)
            ge = self.edge_dec.backward_readout(e_rows, edec_d) @ self.edge_dec.first
        ggeo = None
        for j, (blk, (edge_d, node_d)) in enumerate(zip(reversed(self.blocks), reversed(saved),
                                                        strict=True)):
            gz = blk.node.backward(gx, node_d)
            gx = torch.addmm(gx, gz, blk.w_x)
            gagg = gz @ blk.w_a
            if self.fold_last and j == 0:  # the folded last layer (ge is None here)
                ga = (gagg @ blk.edge.weights[-1]).index_select(0, recv)
                ge = gagg.index_select(0, recv)
                gz = blk.edge.backward(ga, edge_d, at_hidden=True)
            else:
                gagg = gagg.index_select(0, recv)
                ge = gagg if ge is None else ge + gagg
                gz = blk.edge.backward(ge, edge_d)
            ge = torch.addmm(ge, gz, blk.w_e)
            ggeo = gz @ blk.w_g if ggeo is None else ggeo.addmm_(gz, blk.w_g)
            s = torch.cat([_scatter(gz, recv, n), _scatter(gz, send, n)], 1)
            gx = gx.addmm_(s, blk.w_ij)
        if ge is None:  # no blocks and no edge decoder: the edges do not matter
            ggeo = q.new_zeros(e_rows, d + 1)
        else:
            gz = self.edge_enc.backward(ge, edge_enc_d)
            ggeo = gz @ self.edge_geo_w if ggeo is None else ggeo.addmm_(gz, self.edge_geo_w)
        grel = torch.addcmul(ggeo[:, :d], ggeo[:, d:], rel / dist)
        gq = _scatter(grel, recv, n).index_add_(0, send, grel, alpha=-1.0)
        gp = None
        if self.node_w is not None:
            gin = self.node_enc.backward(gx, node_enc_d) @ self.node_w
            if self.gn.use_momenta:
                gp = gin[:, :d]
            if self.gn.absolute_positions:
                gq = gq + gin[:, -d:]
        return gq, gp


def _first(net: _Net, x: Tensor) -> Tensor:
    """Pre-activation of a net's first layer at its full input ``x``."""
    return torch.addmm(net.biases[0], x, net.weights_t[0])


def _graph_network_nets(gn: nn.Module) -> dict[str, _Net] | None:
    """The frozen MLPs of a plain :class:`hogn.nn.GraphNetwork`, or ``None``."""
    if (type(gn) is not hnn.GraphNetwork or gn.cutoff is not None
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
    """``grad(q, p) -> (∂H/∂q, ∂H/∂p)`` of the summed ``H`` of a recognised model on
    the static ``graph`` (its parameters read now: do not change them while using it).

    Args:
        model: A :class:`~hogn.models.HamiltonianModel`.
        graph: Static graph (``c``, ``edge_index``, ``edge_attr``, ``ptr``), checked by
            the caller against the model.

    Returns:
        The gradient function (``q, p [N, d]`` to two ``[N, d]``), or ``None`` when
        the model is not one of those written out here.
    """
    from hogn.models.graph_models import HOGN, SeparableHOGN
    from hogn.models.mlp_models import HNN

    energy = type(model).energy
    with torch.no_grad():
        if energy is HOGN.energy:
            nets = _graph_network_nets(model.gn)
            if nets is None or not model.gn.use_momenta:
                return None
            gn_grad = _GraphNetworkGradient(model.gn, graph, nets)

            def hogn_grad(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
                gq, gp = gn_grad(q, p)
                return gq, gp

            return hogn_grad
        if energy is SeparableHOGN.energy:
            nets = _graph_network_nets(model.potential)
            kinetic = _Net.of(model.kinetic)
            if nets is None or kinetic is None or model.potential.use_momenta:
                return None
            v_grad = _GraphNetworkGradient(model.potential, graph, nets)
            d = model.dim
            t_bias = torch.addmm(kinetic.biases[0], graph.c, kinetic.first[:, d:].t())
            w_p, w_p_t = kinetic.first[:, :d], kinetic.first[:, :d].t().contiguous()

            def separable_grad(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
                _, derivs = kinetic.forward(torch.addmm(t_bias, p, w_p_t), output=False)
                gp = kinetic.backward_readout(p.shape[0], derivs) @ w_p
                gq, _ = v_grad(q, None)
                return gq, gp

            return separable_grad
        if energy is HNN.energy:
            net = _Net.of(model.net)
            if net is None:
                return None
            g, half = graph.num_graphs, model.n_particles * model.dim
            w = net.first[:, :2 * half]
            w_t = w.t().contiguous()
            bias = torch.addmm(net.biases[0], graph.c.reshape(g, -1), net.first[:, 2 * half:].t())

            def hnn_grad(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
                flat = torch.cat([q.reshape(g, -1), p.reshape(g, -1)], -1)
                _, derivs = net.forward(torch.addmm(bias, flat, w_t), output=False)
                grad = net.backward_readout(g, derivs) @ w
                return grad[:, :half].reshape(q.shape), grad[:, half:].reshape(p.shape)

            return hnn_grad
    return None
