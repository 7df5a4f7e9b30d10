"""The written-out energy gradient of the graph Hamiltonians equals autograd's:
derivatives, parameter gradients of a training loss, under ``no_grad``, in float64 and
float32, for every architecture option, and it steps aside where it cannot run."""

from __future__ import annotations

import pytest
import torch

import hogn.models as models
import systems
from hogn import energy_gradient
from hogn.graph import GraphBatch
from hogn.models.base import HamiltonianModel

CASES = {
    "default": {},
    "edge-energies": {"edge_energies": True},
    "tanh-3-layers": {"activation": "tanh", "layers": 3},
    "silu-no-steps": {"activation": "silu", "steps": 0},
    "absolute-1-layer": {"absolute_positions": True, "layers": 1},
    "three-steps": {"steps": 3, "edge_energies": True},
}


@pytest.fixture(scope="module")
def springs() -> GraphBatch:
    """Five float64 spring graphs of 2 to 6 particles (edge constants k, L)."""
    return systems.get("spring-nbody").sample(5, seed=3, n_particles=(2, 6))


def make(name: str, dtype: torch.dtype, **config) -> models.DynamicsModel:
    torch.manual_seed(0)
    return models.get(name, dim=2, node_constants=1, edge_features=2, hidden=12,
                      **config).to(dtype)


def derivative_and_grads(model: models.DynamicsModel, graph: GraphBatch, written: bool
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(dq, dp)`` and the parameter gradients of a squared loss on them."""
    model.zero_grad(set_to_none=True)
    if written:
        dq, dp = model.time_derivative(graph)
    else:
        dq, dp = HamiltonianModel._derivative(model, graph.q, graph.p, graph, True)
    out = torch.cat([dq, dp], -1)
    target = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    (out - target).square().mean().backward()
    grads = {n: torch.zeros_like(p) if p.grad is None else p.grad.clone()
             for n, p in model.named_parameters()}
    return out.detach(), grads


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("name", ["hogn", "separable-hogn"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_written_gradient_equals_autograd_with_parameter_gradients(springs, name, case,
                                                                     dtype, tol):
    model = make(name, dtype, **CASES[case])
    graph = springs.to(dtype=dtype)
    fast, fast_grads = derivative_and_grads(model, graph, written=True)
    slow, slow_grads = derivative_and_grads(model, graph, written=False)
    assert rel(fast, slow) < tol
    assert fast.abs().max() > 0
    for key, value in slow_grads.items():
        if value.abs().max() > 0:
            assert rel(fast_grads[key], value) < tol, key
        else:
            assert fast_grads[key].abs().max() == 0, key


def test_no_autograd_graph_outside_training_and_same_values(springs):
    model = make("hogn", torch.float64, edge_energies=True).eval()
    with torch.no_grad():
        dq, dp = model.time_derivative(springs)
    assert dq.grad_fn is None and dp.grad_fn is None
    ref_dq, ref_dp = HamiltonianModel._derivative(model, springs.q, springs.p, springs, False)
    assert rel(dq, ref_dq) < 1e-12 and rel(dp, ref_dp) < 1e-12


def test_gradient_flows_into_states_that_require_it(springs):
    """Training through an integrator: the derivative is differentiable in q and p."""
    model = make("hogn", torch.float64)
    q = springs.q.clone().requires_grad_(True)
    p = springs.p.clone().requires_grad_(True)
    graph = springs.replace(q=q, p=p)
    fast = torch.autograd.grad(torch.cat(model.time_derivative(graph), -1).square().sum(),
                               (q, p))
    slow = torch.autograd.grad(torch.cat(HamiltonianModel._derivative(
        model, q, p, graph, True), -1).square().sum(), (q, p))
    for a, b in zip(fast, slow, strict=True):
        assert rel(a, b) < 1e-10


def test_one_particle_graphs_without_edges():
    """Mass-spring style: no edges, the potential from absolute positions."""
    graph = systems.get("mass-spring").sample(4, seed=0)
    torch.manual_seed(0)
    model = models.for_data("hogn", graph, hidden=8, absolute_positions=True).double()
    assert graph.edge_index.shape[1] == 0
    fast, _ = derivative_and_grads(model, graph, written=True)
    slow, _ = derivative_and_grads(model, graph, written=False)
    assert rel(fast, slow) < 1e-12


class _Derivative(torch.nn.Module):
    """``time_derivative`` as ``forward``, for :func:`torch.func.functional_call`."""

    def __init__(self, model: models.DynamicsModel, written: bool) -> None:
        super().__init__()
        self.model, self.written = model, written

    def forward(self, graph: GraphBatch) -> torch.Tensor:
        if self.written:
            dq, dp = self.model.time_derivative(graph, create_graph=True)
        else:
            dq, dp = HamiltonianModel._derivative(self.model, graph.q, graph.p, graph, True)
        return torch.cat([dq, dp], -1)


@pytest.mark.parametrize("case", ["default", "edge-energies", "tanh-3-layers"])
def test_stacked_weights_per_block_equal_each_copy_alone(case):
    """Weights stacked per block of rows (as meta.batched gives them): block b of nodes
    and of edges is graph b, run at its own copy of the parameters."""
    graphs = systems.get("spring-nbody").sample(3, seed=5, n_particles=4)
    model = make("hogn", torch.float64, **CASES[case])
    torch.manual_seed(1)
    copies = {n: p.detach() + 0.05 * torch.randn(3, *p.shape, dtype=p.dtype)
              for n, p in model.named_parameters()}
    stacked = {f"model.{n}": v.clone().requires_grad_(True) for n, v in copies.items()}
    out = torch.func.functional_call(_Derivative(model, written=True), stacked, (graphs,))
    target = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    (out - target).square().sum().backward()
    for b in range(3):
        one = {f"model.{n}": v[b].clone().requires_grad_(True) for n, v in copies.items()}
        graph = graphs.select([b])
        ref = torch.func.functional_call(_Derivative(model, written=False), one, (graph,))
        rows = slice(4 * b, 4 * b + 4)
        assert rel(out[rows].detach(), ref.detach()) < 1e-10
        (ref - target[rows]).square().sum().backward()
        for name, value in one.items():
            if value.grad is not None and value.grad.abs().max() > 0:
                assert rel(stacked[name].grad[b], value.grad) < 1e-10, name


def test_unknown_activation_falls_back_to_autograd(springs):
    model = make("hogn", torch.float64)
    assert energy_gradient.supports(model.gn)
    model.gn.blocks[0].edge_mlp[1] = torch.nn.Softplus(beta=2.0)  # no written derivative
    assert not energy_gradient.supports(model.gn)
    fast, _ = derivative_and_grads(model, springs, written=True)
    slow, _ = derivative_and_grads(model, springs, written=False)
    assert torch.equal(fast, slow)  # the same (autograd) path


def test_a_subclass_with_its_own_energy_is_differentiated_by_autograd(springs):
    class Doubled(models.HOGN):
        def energy(self, q, p, graph):
            return 2 * super().energy(q, p, graph)

    torch.manual_seed(0)
    base = make("hogn", torch.float64)
    doubled = Doubled(dim=2, node_constants=1, edge_features=2, hidden=12).double()
    doubled.load_state_dict(base.state_dict())
    for a, b in zip(doubled.time_derivative(springs), base.time_derivative(springs),
                    strict=True):
        assert rel(a.detach(), 2 * b.detach()) < 1e-12
