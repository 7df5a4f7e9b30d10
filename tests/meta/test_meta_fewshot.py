"""Few-shot baselines (meta.fewshot): exact recovery where the true field lies in the
model class, Hamiltonian structure of the kernel field, interpolation, scale-freedom,
batching and the input checks."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import systems
from meta import fewshot

F64 = torch.float64


def _flat(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``[T, n, d]`` positions and momenta -> states ``[T, 2 n d]`` (q then p)."""
    return torch.cat([q.reshape(q.shape[0], -1), p.reshape(p.shape[0], -1)], -1)


def _trajectory(data: systems.Dataset, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """States ``x [T, D]`` and true derivatives ``dx [T, D]`` of one trajectory."""
    one = data[index]
    return _flat(one.q, one.p), _flat(one.dq, one.dp)


def _fresh(system: systems.System, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` freshly sampled one-particle states and their true derivatives from the
    system's own vector field."""
    graph = system.sample(n, seed=seed)
    dq, dp = system.vector_field(graph)(graph.q, graph.p)
    return torch.cat([graph.q, graph.p], -1), torch.cat([dq, dp], -1)


def _rel(pred: torch.Tensor, true: torch.Tensor) -> float:
    return float((pred - true).norm() / true.norm())


def _support(x: torch.Tensor, dx: torch.Tensor, k: int, seed: int = 0):
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:k]
    mask = torch.zeros(x.shape[0], dtype=torch.bool)
    mask[idx] = True
    return x[mask], dx[mask], x[~mask], dx[~mask]


@pytest.fixture(scope="module")
def pendulum_2d():
    """Three pendulum trajectories (embedded in d = 2: surplus q = l = 1, p = 0)."""
    return systems.from_preset("meta-pendulum", trajectories=3, seed=4, progress=False)


@pytest.fixture(scope="module")
def henon_heiles():
    return systems.from_preset("meta-henon-heiles", trajectories=2, seed=1, progress=False)


# --------------------------------------------------------------------------- exact recovery
def test_affine_recovers_mass_spring_from_10_points():
    system = systems.get("mass-spring", mass=2.0, k=3.0, embed_dim=2)
    data = systems.generate(system, trajectories=1, steps=99, dt=0.1, seed=0, progress=False)
    x, dx = _trajectory(data, 0)
    xs, dxs, _, _ = _support(x, dx, 10)
    field = fewshot.get("affine").fit(xs, dxs)
    xf, dxf = _fresh(system, 200, seed=7)  # other energies and phases
    assert _rel(field(xf), dxf) < 1e-10
    # dq = p / m, dp = −k q: the zero field is far off, the affine one is exact
    assert _rel(fewshot.get("zero").fit(xs, dxs)(xf), dxf) == 1.0


def test_polynomial_recovers_henon_heiles_from_50_points(henon_heiles):
    x, dx = _trajectory(henon_heiles, 0)
    xs, dxs, _, _ = _support(x, dx, 50)
    xf, dxf = _fresh(systems.get("henon-heiles"), 300, seed=3)
    field = fewshot.get("polynomial", degree=3, ridge=0.0).fit(xs, dxs)
    assert _rel(field(xf), dxf) < 1e-8
    # a small ridge stays accurate; degree 2 cannot hold the cubic potential
    assert _rel(fewshot.get("polynomial", degree=3, ridge=1e-10).fit(xs, dxs)(xf), dxf) < 1e-6
    assert _rel(fewshot.get("polynomial", degree=2, ridge=0.0).fit(xs, dxs)(xf), dxf) > 1e-3
    # the fitted H is the true one up to a constant
    system = systems.get("henon-heiles")
    graph = system.sample(300, seed=3)
    h_true = system.hamiltonian(graph.q, graph.p, graph)
    h = field.hamiltonian(xf)
    assert float(((h - h_true) - (h - h_true).mean()).abs().max()) < 1e-8


def test_polynomial_on_embedded_one_dof_systems(pendulum_2d):
    # mass-spring in d = 2: both surplus coordinates constant (0); degree 2 is exact
    system = systems.get("mass-spring", embed_dim=2)
    data = systems.generate(system, trajectories=1, steps=40, dt=0.25, seed=2, progress=False)
    x, dx = _trajectory(data, 0)
    xs, dxs, _, _ = _support(x, dx, 10)
    xf, dxf = _fresh(system, 100, seed=5)
    field = fewshot.get("polynomial", degree=2, ridge=0.0).fit(xs, dxs)
    assert _rel(field(xf), dxf) < 1e-10
    # pendulum in d = 2: surplus q = 1 constant (not 0), its momentum 0; x = (θ, 1, p, 0)
    x, dx = _trajectory(pendulum_2d, 0)
    assert torch.all(x[:, 1] == 1) and torch.all(x[:, 3] == 0)
    xs, dxs, xh, dxh = _support(x, dx, 50)
    field = fewshot.get("polynomial", degree=6, ridge=0.0).fit(xs, dxs)
    pred = field(xh)
    assert torch.all(pred[:, [1, 3]] == 0)  # H ignores the constant coordinates
    assert _rel(pred, dxh) < 1e-5  # 1 − cos θ by θ²/2 − θ⁴/24 + … up to θ⁶, |θ| < 1.4
    moved = xh.clone()
    moved[:, 1] = 5.0  # H does not depend on the constant coordinate: neither does f
    assert torch.equal(field(moved), pred)


# --------------------------------------------------------------------------- kernel
def test_kernel_field_is_hamiltonian(henon_heiles):
    x, dx = _trajectory(henon_heiles, 1)
    xs, dxs, xh, _ = _support(x, dx, 30, seed=1)
    field = fewshot.get("kernel", lengthscale=0.7, ridge=1e-6).fit(xs, dxs)
    n = x.shape[1] // 2
    eye = torch.eye(n, dtype=F64)
    j = torch.cat([torch.cat([0 * eye, eye], 1), torch.cat([-eye, 0 * eye], 1)])  # J

    def grad_h(v: torch.Tensor) -> torch.Tensor:  # J⁻¹ f = Jᵀ f, must be ∇H
        return j.T @ field(v[None])[0]

    for point in xh[:5]:
        hess = torch.autograd.functional.jacobian(grad_h, point)
        scale = float(hess.abs().max())
        assert scale > 1e-3
        assert float((hess - hess.T).abs().max()) < 1e-10 * scale
    # the analytic H is the potential of the field: autograd ∇H = Jᵀ f
    pts = xh[:20].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(field.hamiltonian(pts).sum(), pts)
    assert _rel(g, field(xh[:20]) @ j) < 1e-12
    # an affine fit is generally not symplectic (the check above can fail)
    affine = fewshot.get("affine").fit(xs, dxs)
    hess = torch.autograd.functional.jacobian(lambda v: j.T @ affine(v[None])[0], xh[0])
    assert float((hess - hess.T).abs().max()) > 1e-6


def test_kernel_interpolates_as_ridge_vanishes(pendulum_2d):
    x, dx = _trajectory(pendulum_2d, 1)
    xs, dxs, _, _ = _support(x, dx, 20, seed=2)
    residual = [_rel(fewshot.get("kernel", lengthscale=1.0, ridge=r).fit(xs, dxs)(xs), dxs)
                for r in (1e-2, 1e-4, 1e-6, 1e-8, 0.0)]
    assert all(b < a for a, b in itertools.pairwise(residual))
    assert residual[0] > 1e-4 and residual[-1] < 1e-6


def test_kernel_learns_pendulum_from_50_points(pendulum_2d):
    x, dx = _trajectory(pendulum_2d, 2)
    xs, dxs, xh, dxh = _support(x, dx, 50, seed=3)
    nmse = {}
    for name, hyper in [("kernel", {"lengthscale": 1.0, "ridge": 1e-8}), ("zero", {}),
                        ("nearest", {})]:
        pred = fewshot.get(name, **hyper).fit(xs, dxs)(xh)
        nmse[name] = float(((pred - dxh) ** 2).sum() / (dxh**2).sum())
    assert nmse["zero"] == 1.0
    assert nmse["kernel"] < 1e-5
    assert nmse["kernel"] < 1e-2 * nmse["nearest"]


# --------------------------------------------------------------------------- zero, nearest
def test_nearest_and_zero():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, 4, dtype=F64, generator=gen)
    dx = torch.randn(12, 4, dtype=F64, generator=gen)
    field = fewshot.get("nearest").fit(x, dx)
    assert torch.equal(field(x), dx)
    assert torch.equal(field(x + 1e-6 * torch.randn(12, 4, dtype=F64, generator=gen)), dx)
    # distances in standardised units: a huge-scale coordinate does not dominate
    x2, dx2 = torch.tensor([[0.0, 0.0], [1000.0, 1.0]], dtype=F64), torch.eye(2, dtype=F64)
    near = fewshot.get("nearest").fit(x2, dx2)
    assert torch.equal(near(torch.tensor([[400.0, 0.9]], dtype=F64)), dx2[1:])
    zero = fewshot.get("zero").fit(x, dx)
    assert torch.equal(zero(x[:3]), torch.zeros(3, 4, dtype=F64))
    assert torch.equal(zero.hamiltonian(x[:3]), torch.zeros(3, dtype=F64))


def test_single_support_point():
    x = torch.tensor([[0.3, -0.2]], dtype=F64)
    dx = torch.tensor([[1.0, 2.0]], dtype=F64)
    query = torch.tensor([[0.0, 0.0], [5.0, 1.0]], dtype=F64)
    assert torch.equal(fewshot.get("affine").fit(x, dx)(query), dx.expand(2, 2))
    assert torch.equal(fewshot.get("nearest").fit(x, dx)(query), dx.expand(2, 2))
    for name in ("polynomial", "kernel"):  # every coordinate constant: H cannot vary
        assert torch.equal(fewshot.get(name).fit(x, dx)(query), torch.zeros(2, 2, dtype=F64))


# --------------------------------------------------------------------------- common properties
METHODS = [("zero", {}), ("affine", {"ridge": 1e-6}), ("polynomial", {"degree": 3}),
           ("kernel", {"lengthscale": 1.0, "ridge": 1e-6}), ("nearest", {})]


@pytest.mark.parametrize(("name", "hyper"), METHODS)
def test_deterministic_batched_and_scale_free(name, hyper, henon_heiles):
    x, dx = _trajectory(henon_heiles, 0)
    xs, dxs, xh, _ = _support(x, dx, 50, seed=4)
    method = fewshot.get(name, **hyper)
    field = method.fit(xs, dxs)
    pred = field(xh)
    assert pred.dtype == F64 and pred.shape == xh.shape
    assert torch.equal(method.fit(xs, dxs)(xh), pred)  # deterministic
    single = torch.cat([field(xh[i:i + 1]) for i in range(xh.shape[0])])
    torch.testing.assert_close(single, pred, rtol=1e-12, atol=1e-13 * float(pred.abs().max()))
    # units: x -> c x, dx -> c dx predicts c f(x) (standardisation and relative ridge)
    c = 1e3
    scaled = method.fit(c * xs, c * dxs)(c * xh)
    torch.testing.assert_close(scaled, c * pred, rtol=1e-8, atol=1e-8 * c * float(
        pred.abs().max()))
    # float32 input: computed and returned in float64, same as the float64 of the values
    x32, dx32 = xs.float(), dxs.float()
    out32 = method.fit(x32, dx32)(xh.float())
    assert out32.dtype == F64
    assert torch.equal(out32, method.fit(x32.double(), dx32.double())(xh.float().double()))


# --------------------------------------------------------------------------- registry, errors
def test_registry_grids_and_labels():
    assert fewshot.names() == ["zero", "affine", "polynomial", "kernel", "nearest"]
    assert set(fewshot.GRIDS) == set(fewshot.BASELINES)
    for name, grid in fewshot.GRIDS.items():
        labels = {fewshot.describe(name, hyper) for hyper in grid}
        assert len(labels) == len(grid)  # every grid point is valid and distinct
    assert len(fewshot.GRIDS["polynomial"]) == 40 and len(fewshot.GRIDS["kernel"]) == 42
    assert fewshot.describe("polynomial", {"degree": 3, "ridge": 1e-8}) == \
        "polynomial H, degree 3, ridge 1e-08"
    assert fewshot.describe("polynomial") == "polynomial H, degree 3, ridge 1e-08"
    assert isinstance(fewshot.get("kernel", lengthscale=2), fewshot.Kernel)
    assert fewshot.monomial_count(4, 3) == 34 == fewshot._Basis(4, 3, torch.device("cpu")).count
    with pytest.raises(ValueError, match="expected one of: zero, affine, polynomial"):
        fewshot.get("spline")
    with pytest.raises(ValueError, match=r"unknown hyper-parameter\(s\) \['lengthscale'\].*"
                                         "degree, ridge, max_features"):
        fewshot.get("polynomial", lengthscale=1.0)
    with pytest.raises(ValueError, match="none"):
        fewshot.describe("zero", {"ridge": 0.0})
    for name, hyper, word in [("affine", {"ridge": -1.0}, "ridge"),
                              ("kernel", {"ridge": math.nan}, "ridge"),
                              ("kernel", {"lengthscale": 0.0}, "lengthscale"),
                              ("polynomial", {"degree": 0}, "degree"),
                              ("polynomial", {"degree": True}, "degree"),
                              ("polynomial", {"degree": 2.5}, "degree"),
                              ("polynomial", {"max_features": 0}, "max_features")]:
        with pytest.raises(ValueError, match=word):
            fewshot.get(name, **hyper)


def test_bad_inputs_are_refused():
    x = torch.randn(5, 4, dtype=F64)
    field = fewshot.get("kernel").fit(x, x)
    bad = [
        ((x[0], x[0]), "2-D"),
        ((x, x[:, :2]), "shape of x"),
        ((x[:0], x[:0]), "K >= 1"),
        ((x[:, :3], x[:, :3]), "D even"),
        ((x.masked_fill(x > 0.5, math.nan), x), "x must be finite"),
        ((x, x.masked_fill(x > 0.5, math.inf)), "dx must be finite"),
        ((x.numpy(), x), "torch.Tensor"),
        ((x.long(), x), "floating dtype"),
    ]
    for name in fewshot.names():
        for args, message in bad:
            with pytest.raises(ValueError, match=message):
                fewshot.get(name).fit(*args)
    with pytest.raises(ValueError, match=r"\[M, 4\]"):
        field(x[:, :2])
    with pytest.raises(ValueError, match="finite"):
        field(torch.full((2, 4), math.nan, dtype=F64))
    wide = torch.randn(30, 24, dtype=F64)
    with pytest.raises(ValueError, match="max_features"):
        fewshot.get("polynomial", degree=6).fit(wide, wide)
