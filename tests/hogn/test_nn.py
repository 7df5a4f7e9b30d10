"""Message-passing blocks: smooth activations, sum aggregation semantics, scatter
backends, differentiable geometry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hogn import nn as hnn
from hogn.graph import fully_connected


def second_derivative_consistent(act: nn.Module, x: torch.Tensor, h: float = 1e-5) -> bool:
    """Autograd's second derivative equals the central difference of the first."""
    def first(z: torch.Tensor) -> torch.Tensor:
        (g,) = torch.autograd.grad(act(z).sum(), z, create_graph=True)
        return g

    z = x.detach().requires_grad_(True)
    (g2,) = torch.autograd.grad(first(z).sum(), z, materialize_grads=True)
    fd = (first((x + h).requires_grad_(True)) - first((x - h).requires_grad_(True))) / (2 * h)
    return bool(torch.allclose(g2, fd.detach(), atol=1e-6, rtol=1e-6))


X = torch.tensor([-3.0, -0.5, 0.0, 1e-7, 0.7, 4.0], dtype=torch.float64)


@pytest.mark.parametrize("name", hnn.activation_names())
def test_registered_activations_are_twice_differentiable(name):
    assert second_derivative_consistent(hnn.activation(name), X)


def test_smoothness_check_rejects_relu():
    # the check above is able to fail: ReLU's autograd second derivative is 0
    # everywhere, its first derivative jumps at 0
    assert not second_derivative_consistent(nn.ReLU(), X)
    assert "relu" not in hnn.activation_names()


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match="expected one of: silu, softplus, tanh"):
        hnn.activation("relu")
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        hnn.MLP(2, 8, 1, layers=2, activation="gelu")


def test_mlp_layers_count_linear_maps_like_the_hnn_paper():
    # "3 layers x 200" (Greydanus et al.): in -> 200 -> 200 -> out
    net = hnn.MLP(4, 200, 1, layers=3, activation="tanh")
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 200), (200, 200), (200, 1)]
    assert sum(isinstance(m, nn.Tanh) for m in net) == 2
    single = hnn.MLP(3, 5, 2, layers=1)
    assert len(single) == 1  # a single affine map, no activation
    for bad in ({"layers": 0}, {"hidden": 0}, {"layers": 2.0}):
        with pytest.raises(ValueError, match="MLP"):
            hnn.MLP(**{"in_features": 3, "hidden": 5, "out_features": 2, **bad})


def test_gnblock_sums_updated_edges_at_receivers():
    """Reference loop over a directed (asymmetric) edge set: catches a wrong flow
    direction, a mean instead of a sum, or edges leaking between nodes."""
    torch.manual_seed(0)
    h, g_dim = 6, 3
    block = hnn.GNBlock(h, g_dim, layers=2, scatter="torch").double()
    edge_index = torch.tensor([[0, 0, 1, 3, 2], [1, 2, 2, 2, 0]])  # node 3 receives nothing
    x = torch.randn(4, h, dtype=torch.float64)
    e = torch.randn(5, h, dtype=torch.float64)
    g = torch.randn(5, g_dim, dtype=torch.float64)
    x_new, e_new = block(x, e, g, edge_index)
    for k, (j, i) in enumerate(edge_index.T.tolist()):
        expect = e[k] + block.edge_mlp(torch.cat([x[i], x[j], e[k], g[k]]))
        torch.testing.assert_close(e_new[k], expect, rtol=0, atol=1e-12)
    for i in range(4):
        incoming = [k for k in range(5) if edge_index[1, k] == i]
        agg = e_new[incoming].sum(0) if incoming else torch.zeros(h, dtype=torch.float64)
        expect = x[i] + block.node_mlp(torch.cat([x[i], agg]))
        torch.testing.assert_close(x_new[i], expect, rtol=0, atol=1e-12)


def test_scatter_backend_names():
    assert hnn.resolve_scatter("torch") == "torch"
    with pytest.raises(ValueError, match="auto, torch, torch_scatter"):
        hnn.resolve_scatter("cuda")
    with pytest.raises(ValueError, match="unknown scatter backend"):
        hnn.GraphNetwork(2, 1, 8, 1, scatter="segment")


def _network_and_inputs(scatter: str):
    torch.manual_seed(0)
    net = hnn.GraphNetwork(2, 1, 16, node_out=1, edge_out=1, edge_features=2, steps=2,
                           scatter=scatter).double()
    gen = torch.Generator().manual_seed(1)
    edge_index = fully_connected([3, 5, 4])
    q = torch.randn(12, 2, generator=gen, dtype=torch.float64)
    p = torch.randn(12, 2, generator=gen, dtype=torch.float64)
    c = torch.rand(12, 1, generator=gen, dtype=torch.float64) + 0.5
    a = torch.rand(edge_index.shape[1], 2, generator=gen, dtype=torch.float64)
    return net, (q, p, c, edge_index, a)


def test_torch_scatter_and_torch_paths_agree():
    pytest.importorskip("torch_scatter", reason="torch_scatter is not installed: the "
                        "torch_scatter backend cannot be compared with the torch path")
    assert hnn.resolve_scatter("auto") == "torch_scatter"
    results = []
    for backend in ("torch", "torch_scatter"):
        net, (q, p, c, ei, a) = _network_and_inputs(backend)
        assert net.scatter_backend == backend
        q = q.requires_grad_(True)
        node, edge = net(q, p, c, ei, a)
        loss = node.square().sum() + edge.sum()
        loss.backward()
        results.append((node.detach(), edge.detach(), q.grad,
                        [prm.grad for prm in net.parameters()]))
    (n0, e0, g0, p0), (n1, e1, g1, p1) = results
    # on CPU both backends run the same scatter_add_ kernel: bit-identical
    assert torch.equal(n0, n1) and torch.equal(e0, e1) and torch.equal(g0, g1)
    assert all(torch.equal(x, y) for x, y in zip(p0, p1, strict=True))


def test_edge_geometry_is_smooth_at_coincident_particles():
    q = torch.tensor([[0.3, -0.2], [0.3, -0.2], [1.0, 0.5]], dtype=torch.float64,
                     requires_grad=True)
    ei = fully_connected([3])
    geo = hnn.edge_geometry(q, ei, eps=1e-8)
    (g,) = torch.autograd.grad(geo[:, -1].sum(), q, create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), q)
    assert torch.isfinite(g).all() and torch.isfinite(gg).all()
    # away from coincidence it is the distance, to eps / (2 r) accuracy
    dist = (q[ei[1]] - q[ei[0]]).norm(dim=-1).detach()
    far = dist > 0.1
    torch.testing.assert_close(geo[far, -1].detach(), dist[far], atol=1e-7, rtol=0)
    torch.testing.assert_close(geo[:, :2], q[ei[1]] - q[ei[0]])
    # without smoothing the gradient at a coincidence is NaN: the reason for eps
    (g0,) = torch.autograd.grad(hnn.edge_geometry(q, ei, eps=0.0)[:, -1].sum(), q)
    assert torch.isnan(g0).any()


def test_graph_network_without_edges_and_without_inputs():
    torch.manual_seed(0)
    net = hnn.GraphNetwork(1, 1, 8, node_out=2, absolute_positions=True).double()
    q = torch.randn(5, 1, dtype=torch.float64)
    p = torch.randn(5, 1, dtype=torch.float64)
    c = torch.ones(5, 1, dtype=torch.float64)
    none = torch.empty(2, 0, dtype=torch.long)
    out, edge = net(q, p, c, none)
    assert edge is None
    # isolated particles: each output depends on its own node only
    out2, _ = net(q.flip(0), p.flip(0), c, none)
    torch.testing.assert_close(out2, out.flip(0), rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="no node inputs"):
        hnn.GraphNetwork(2, 0, 8, 1, use_momenta=False)


def test_softplus_matches_torch_up_to_the_third_derivative():
    """The registered softplus has PyTorch's values and derivatives (it only computes
    the higher ones differently), including where PyTorch switches to x at x > 20."""
    from hogn.nn import Softplus

    x = torch.linspace(-30, 30, 241, dtype=torch.float64, requires_grad=True)
    ours, ref = Softplus()(x), torch.nn.functional.softplus(x)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)

    def derivatives(y):
        out, g = [], y.sum()
        for _ in range(3):
            (g,) = torch.autograd.grad(g, x, create_graph=True)
            out.append(g)
            g = g.sum()
        return out

    sig = torch.sigmoid(x)
    exact = [sig, sig * (1 - sig), sig * (1 - sig) * (1 - 2 * sig)]
    for got, want, theirs in zip(derivatives(ours), exact, derivatives(ref), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(got, theirs, rtol=0, atol=3e-9)
    assert torch.autograd.gradgradcheck(lambda t: Softplus()(t), (x[::20].detach().clone()
                                                                  .requires_grad_(),))
