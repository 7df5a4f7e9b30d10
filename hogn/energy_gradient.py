"""A graph network's energy and its gradient in the inputs, written out.

A Hamiltonian graph network is trained on ``∂H/∂p`` and ``−∂H/∂q``: autograd takes
the gradient of ``H`` in ``(q, p)`` with ``create_graph=True`` and then differentiates
that gradient once more in the parameters. The first, recorded backward is generic:
the backward of ``torch.cat([x_i, x_j, e, g])`` in the edge MLP slices its gradient,
and differentiating those slices zero-fills a buffer ``[E, 3h + a]`` per block.

Here the forward pass and the reverse pass for the *inputs only* are ordinary tensor
code, so training differentiates them once (first order), and the rollout runs them
with no autograd at all. The edge MLP's first layer is split by the blocks of its
input, ``z = (x W_i)[i] + (x W_j)[j] + e W_e + g W_g + b``: the node products are
taken on ``N`` rows instead of ``E``, and in reverse the edge gradients are summed
per node before their product with ``W_i`` and ``W_j``. The results equal autograd's
to rounding (tested in float64 to 1e-10, gradients in the parameters included).

Used by :class:`hogn.models.HOGN` whenever :func:`supports` holds; otherwise (stacked
per-task weights in :mod:`meta.batched`, an activation without a written derivative)
the model falls back to autograd.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from hogn.nn import (
    MLP,
    GraphNetwork,
    Softplus,
    blocked_linear,
    blocked_matmul,
    cutoff_envelope,
    cutoff_envelope_slope,
    minimum_image,
    scatter_sum,
)

__all__ = ["energy_and_gradient", "mlp_input_gradient", "supports"]


def _softplus(z: Tensor) -> tuple[Tensor, Tensor]:
    return nn.functional.softplus(z), torch.sigmoid(z)


def _tanh(z: Tensor) -> tuple[Tensor, Tensor]:
    a = torch.tanh(z)
    return a, 1 - a * a


def _silu(z: Tensor) -> tuple[Tensor, Tensor]:
    s = torch.sigmoid(z)
    a = z * s
    return a, s + a * (1 - s)


# Activation module type -> z ↦ (σ(z), σ'(z)).
_DERIVATIVES: dict[type, Callable[[Tensor], tuple[Tensor, Tensor]]] = {
    Softplus: _softplus, nn.Softplus: _softplus, nn.Tanh: _tanh, nn.SiLU: _silu}


def _mlp_supported(mlp: nn.Module) -> bool:
    for module in mlp:
        if isinstance(module, nn.Linear):
            continue
        if type(module) not in _DERIVATIVES or (
                isinstance(module, nn.Softplus) and (module.beta != 1 or module.threshold != 20)):
            return False
    return True


def supports(net: GraphNetwork | MLP) -> bool:
    """Whether :func:`energy_and_gradient` (a graph network) or
    :func:`mlp_input_gradient` (an MLP) can run ``net``: every activation has a written
    derivative. (Weights may be plain or stacked per block of rows, as
    :mod:`meta.batched` gives them; see :func:`hogn.nn.blocked_linear`.)"""
    if isinstance(net, MLP):
        return _mlp_supported(net)
    gn = net
    mlps = [gn.node_encoder, gn.edge_encoder, gn.node_decoder]
    mlps += [m for block in gn.blocks for m in (block.edge_mlp, block.node_mlp)]
    if gn.edge_decoder is not None:
        mlps.append(gn.edge_decoder)
    return all(_mlp_supported(m) for m in mlps)


def _linears(mlp: MLP) -> list[nn.Linear]:
    return [m for m in mlp if isinstance(m, nn.Linear)]


def _act(mlp: MLP) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    acts = [m for m in mlp if not isinstance(m, nn.Linear)]
    return _DERIVATIVES[type(acts[0])] if acts else _softplus


def _times_narrow(grad: Tensor, weight: Tensor) -> Tensor:
    """``grad @ weight`` for a weight ``[h, k]`` of few columns (an input layer's),
    ``[R, h] -> [R, k]``, written as ``(weightᵀ gradᵀ)ᵀ`` so that autograd forms the
    weight's gradient as a ``[k, R] @ [R, h]`` product: as ``gradᵀ @ [R, k]`` (what
    ``grad @ weight`` records) it runs about 10× slower at ``k ≈ 5``."""
    if weight.dim() == 3:
        return blocked_matmul(grad, weight)
    return (weight.t() @ grad.t()).t()


def _narrow_linear(u: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``u @ weightᵀ (+ bias)`` for a weight ``[h, k]`` of few columns, ``[R, k] -> [R, h]``,
    with ``weightᵀ`` made row-major so that autograd forms the weight's gradient as
    ``uᵀ @ grad`` (``[k, R] @ [R, h]``), not as ``(gradᵀ @ u)ᵀ`` (see :func:`_times_narrow`)."""
    if weight.dim() == 3:
        return blocked_linear(u, weight, bias)
    wt = weight.t().contiguous()
    return u @ wt if bias is None else torch.addmm(bias, u, wt)


def _mlp_hidden(mlp: MLP, z: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Run an MLP of two or more layers from its first layer's output ``z`` up to the
    input of its last layer; returns that and the activation derivative after each
    hidden layer (the reverse pass needs them)."""
    act = _act(mlp)
    a, slope = act(z)
    slopes = [slope]
    for linear in _linears(mlp)[1:-1]:
        a, slope = act(blocked_linear(a, linear.weight, linear.bias))
        slopes.append(slope)
    return a, slopes


def _hidden_back(mlp: MLP, slopes: list[Tensor], grad: Tensor) -> Tensor:
    """Gradient at the first layer's output from the gradient at the last layer's input."""
    grad = grad * slopes[-1]
    for linear, slope in zip(reversed(_linears(mlp)[1:-1]), reversed(slopes[:-1]),
                             strict=True):
        grad = blocked_matmul(grad, linear.weight) * slope
    return grad


def _mlp_rest(mlp: MLP, z: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Run ``mlp`` from its first layer's output ``z``; returns the output and the
    activation derivatives (see :func:`_mlp_hidden`; none for one layer)."""
    linears = _linears(mlp)
    if len(linears) == 1:
        return z, []
    a, slopes = _mlp_hidden(mlp, z)
    return blocked_linear(a, linears[-1].weight, linears[-1].bias), slopes


def _mlp_back(mlp: MLP, slopes: list[Tensor], grad: Tensor) -> Tensor:
    """Gradient at the first layer's output from the gradient at the MLP's output."""
    if not slopes:
        return grad
    return _hidden_back(mlp, slopes, blocked_matmul(grad, _linears(mlp)[-1].weight))


def mlp_input_gradient(mlp: MLP, u: Tensor, grad_out: Tensor | None = None
                       ) -> tuple[Tensor, Tensor]:
    """An MLP's output and the gradient of ``Σ grad_out · output`` in its input.

    Args:
        mlp: A :class:`hogn.nn.MLP` (see :func:`supports`).
        u: Inputs ``[R, in]``.
        grad_out: Weights of the outputs ``[R, out]`` (``None``: all ones).

    Returns:
        ``(output [R, out], gradient [R, in])``.
    """
    first = _linears(mlp)[0]
    out, slopes = _mlp_rest(mlp, _narrow_linear(u, first.weight, first.bias))
    grad = torch.ones_like(out) if grad_out is None else grad_out
    return out, _times_narrow(_mlp_back(mlp, slopes, grad), first.weight)


def energy_and_gradient(gn: GraphNetwork, q: Tensor, p: Tensor | None, c: Tensor,
                        edge_index: Tensor, edge_attr: Tensor | None,
                        box: Tensor | None = None
                        ) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
    """Per-node (and per-edge) energies of a one-output graph network and the gradient
    of their total in ``q`` and ``p``.

    The same values as ``gn(q, p, c, edge_index, edge_attr)`` followed by
    ``torch.autograd.grad`` of the summed outputs, computed without autograd (see the
    module docstring); differentiable in the parameters and in ``q, p`` by ordinary
    first-order autograd.

    Args:
        gn: A graph network with ``node_out = 1`` and ``edge_out`` 0 or 1 for which
            :func:`supports` holds.
        q: Positions ``[N, d]``.
        p: Momenta ``[N, d]`` (``None`` with ``use_momenta=False``).
        c: Node constants ``[N, k]``.
        edge_index: ``[2, E]`` (senders, receivers).
        edge_attr: Edge constants ``[E, a]`` or ``None``.
        box: Periodic box lengths of each edge's graph ``[E, d]`` (minimum-image edge
            vectors), or ``None``.

    Returns:
        ``(node_energy [N], edge_energy [E] or None, dE/dq [N, d], dE/dp [N, d] or None)``
        where ``E`` is the sum of all node and edge energies.
    """
    backend = gn.scatter_backend
    n, d, h = q.shape[0], gn.dim, gn.node_encoder[-1].out_features
    src, dst = edge_index[0], edge_index[1]

    # Forward, keeping what the reverse pass needs.
    rel = minimum_image(q.index_select(0, dst) - q.index_select(0, src), box)
    dist = (rel.square().sum(-1, keepdim=True) + gn.distance_eps).sqrt()
    g = torch.cat([rel, dist] + ([edge_attr] if gn.edge_features else []), -1)
    # a smooth cutoff weighs each edge's messages and edge energy by w(|rel|)
    env = None if gn.cutoff is None else cutoff_envelope(dist, gn.cutoff)  # [E, 1]
    parts = ([p] if gn.use_momenta else []) + [c] + ([q] if gn.absolute_positions else [])
    x, x_slopes = _mlp_rest(gn.node_encoder,
                            _narrow_linear(torch.cat(parts, -1), gn.node_encoder[0].weight,
                                           gn.node_encoder[0].bias))
    e, e_slopes = _mlp_rest(gn.edge_encoder,
                            _narrow_linear(g, gn.edge_encoder[0].weight,
                                           gn.edge_encoder[0].bias))
    saved = []
    # After the last block the edge latents only enter through their sums per node:
    # there the edge MLP's last layer acts on those sums (N rows) instead of on E rows
    # (with plain weights: stacked ones are laid out per block of edge rows).
    summed_last = (gn.edge_decoder is None and len(gn.blocks) > 0
                   and len(_linears(gn.blocks[-1].edge_mlp)) > 1
                   and _linears(gn.blocks[-1].edge_mlp)[-1].weight.dim() == 2)
    for k, block in enumerate(gn.blocks):
        w, b = block.edge_mlp[0].weight, block.edge_mlp[0].bias
        if w.dim() == 2:  # split by input blocks: node products on N rows
            z = (nn.functional.linear(x, w[:, :h]).index_select(0, dst)
                 + nn.functional.linear(x, w[:, h:2 * h]).index_select(0, src)
                 + nn.functional.linear(e, w[:, 2 * h:3 * h], b)
                 + _narrow_linear(g, w[:, 3 * h:]))
        else:
            z = blocked_linear(torch.cat([x.index_select(0, dst), x.index_select(0, src), e, g],
                                         -1), w, b)
        if summed_last and k == len(gn.blocks) - 1:
            a, edge_slopes = _mlp_hidden(block.edge_mlp, z)
            last = _linears(block.edge_mlp)[-1]
            ones = torch.ones_like(dst, dtype=x.dtype) if env is None else env[:, 0]
            degree = scatter_sum(ones, dst, n, backend)
            summed_a = scatter_sum(a if env is None else a * env, dst, n, backend)
            agg = (scatter_sum(e if env is None else e * env, dst, n, backend)
                   + nn.functional.linear(summed_a, last.weight) + degree[:, None] * last.bias)
            kept = (e, a)  # the weight's gradient needs the summed latent's parts
        else:
            msg, edge_slopes = _mlp_rest(block.edge_mlp, z)
            e = e + msg
            agg = scatter_sum(e if env is None else e * env, dst, n, backend)
            kept = (e, None)
        v = block.node_mlp[0].weight
        z = (blocked_linear(x, v[..., :h], block.node_mlp[0].bias)
             + blocked_linear(agg, v[..., h:]))
        upd, node_slopes = _mlp_rest(block.node_mlp, z)
        x = x + upd
        saved.append((edge_slopes, node_slopes, kept))
    node_energy, dec_slopes = _mlp_rest(
        gn.node_decoder, blocked_linear(x, gn.node_decoder[0].weight, gn.node_decoder[0].bias))
    edge_energy = None
    grad_e = None
    if gn.edge_decoder is not None:
        edge_energy, edec_slopes = _mlp_rest(
            gn.edge_decoder, blocked_linear(e, gn.edge_decoder[0].weight,
                                            gn.edge_decoder[0].bias))
        grad_e = blocked_matmul(_mlp_back(gn.edge_decoder, edec_slopes,
                                          torch.ones_like(edge_energy) if env is None
                                          else env.expand_as(edge_energy)),
                                gn.edge_decoder[0].weight)
        if env is not None:
            grad_w = edge_energy.sum(-1, keepdim=True)  # d(Σ w ε_e)/dw
            edge_energy = edge_energy * env

    # Reverse, for the inputs only.
    grad_x = blocked_matmul(_mlp_back(gn.node_decoder, dec_slopes, torch.ones_like(node_energy)),
                            gn.node_decoder[0].weight)
    grad_g = None
    if env is not None and gn.edge_decoder is None:
        grad_w = torch.zeros_like(env)
    for k in reversed(range(len(gn.blocks))):
        block, (edge_slopes, node_slopes, (e_k, a_k)) = gn.blocks[k], saved[k]
        v = block.node_mlp[0].weight
        dz = _mlp_back(block.node_mlp, node_slopes, grad_x)
        grad_agg = blocked_matmul(dz, v[..., h:])
        grad_x = grad_x + blocked_matmul(dz, v[..., :h])
        if summed_last and k == len(gn.blocks) - 1:
            grad_e = grad_agg.index_select(0, dst)
            last = _linears(block.edge_mlp)[-1]
            grad_a = (grad_agg @ last.weight).index_select(0, dst)
            if env is not None:  # agg = Σ w (e + a Wᵀ + b)
                grad_w = grad_w + ((grad_e * e_k).sum(-1, keepdim=True)
                                   + (grad_a * a_k).sum(-1, keepdim=True)
                                   + (grad_agg @ last.bias[:, None]).index_select(0, dst))
                grad_e, grad_a = grad_e * env, grad_a * env
            dz = _hidden_back(block.edge_mlp, edge_slopes, grad_a)
        else:
            grad_agg = grad_agg.index_select(0, dst)
            if env is not None:  # agg = Σ w e
                grad_w = grad_w + (grad_agg * e_k).sum(-1, keepdim=True)
                grad_agg = grad_agg * env
            grad_e = grad_agg if grad_e is None else grad_e + grad_agg
            dz = _mlp_back(block.edge_mlp, edge_slopes, grad_e)
        w = block.edge_mlp[0].weight
        if w.dim() == 2:  # sum per node first, then the products on N rows
            grad_x = (grad_x + scatter_sum(dz, dst, n, backend) @ w[:, :h]
                      + scatter_sum(dz, src, n, backend) @ w[:, h:2 * h])
            grad_e = grad_e + dz @ w[:, 2 * h:3 * h]
            dg = _times_narrow(dz, w[:, 3 * h:])
        else:
            du = blocked_matmul(dz, w)
            grad_x = (grad_x + scatter_sum(du[:, :h], dst, n, backend)
                      + scatter_sum(du[:, h:2 * h], src, n, backend))
            grad_e = grad_e + du[:, 2 * h:3 * h]
            dg = du[:, 3 * h:]
        grad_g = dg if grad_g is None else grad_g + dg
    if grad_e is None:  # no blocks and no edge energies: H does not depend on the edges
        grad_e = torch.zeros_like(e)
    grad_u = _times_narrow(_mlp_back(gn.node_encoder, x_slopes, grad_x),
                           gn.node_encoder[0].weight)
    dg = _times_narrow(_mlp_back(gn.edge_encoder, e_slopes, grad_e), gn.edge_encoder[0].weight)
    grad_g = dg if grad_g is None else grad_g + dg
    grad_dist = grad_g[:, d:d + 1]
    if env is not None:
        grad_dist = grad_dist + grad_w * cutoff_envelope_slope(dist, gn.cutoff)
    grad_rel = grad_g[:, :d] + grad_dist * rel / dist
    grad_q = scatter_sum(grad_rel, dst, n, backend) - scatter_sum(grad_rel, src, n, backend)
    if gn.absolute_positions:
        grad_q = grad_q + grad_u[:, -d:]
    grad_p = grad_u[:, :d] if gn.use_momenta else None
    return (node_energy[:, 0], None if edge_energy is None else edge_energy[:, 0],
            grad_q, grad_p)
