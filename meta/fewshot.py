"""Classical few-shot vector-field regressors: the baselines of meta-learning.

Each method sees ``K`` observed phase-space points of one trajectory, states
``x [K, D]`` with their time derivatives ``dx [K, D]``, and predicts ``dx`` at new
states. The state layout is ``x = [q_flat (D/2), p_flat (D/2)]`` (positions of every
particle, then momenta); Hamilton's equations read ``dx = J ∇H`` with
``J = [[0, I], [−I, 0]]``, so ``∇H = Jᵀ dx = [−dp, dq]``.

Methods (:data:`BASELINES`, built by :func:`get`; each a small frozen dataclass of its
hyper-parameters whose :meth:`Baseline.fit` returns a batched :class:`Field`):

- ``"zero"``: predicts ``dx = 0`` (the reference of the normalised scores).
- ``"affine"``: ``dx = A x + b`` by ridge least squares on standardised coordinates.
- ``"polynomial"``: a least-squares Hamiltonian ``H = Σ c_i m_i(z)`` over every
  monomial of degree ``1 … degree`` of the standardised coordinates; the fitted field
  is exactly ``J ∇H`` (symplectic).
- ``"kernel"``: the posterior mean of a Gaussian process on ``H`` with an RBF kernel,
  observed through ``J ∇H``; again exactly ``J ∇H`` for an explicit ``H``.
- ``"nearest"``: the derivative of the nearest support point (standardised distance).

Shared conventions:

- Standardisation uses the support's statistics: ``z = (x − mean) / std`` (population
  std). A coordinate whose std is below ``1e-12`` of the largest (a surplus embedding
  coordinate, a momentum that stays zero, every coordinate when ``K = 1``) is
  *constant*: the methods ignore it, and the Hamiltonian methods predict a zero
  derivative for its conjugate (``H`` cannot depend on it).
- Ridge strengths are relative, so the methods are scale-free: ``ridge`` multiplies
  the mean eigenvalue of the Gram matrix (its trace over its size; for least squares
  over the smaller of ``ΦᵀΦ`` and ``ΦΦᵀ``, which share their non-zero eigenvalues, so
  the primal and dual forms give the same solution). ``ridge = 0`` is plain (min-norm)
  least squares or interpolation.
- Inputs of any float dtype are accepted; everything is computed and returned in
  float64 on the support's device. Fields are differentiable in their input
  (``torch.autograd`` sees through them).

Hyper-parameter grids (:data:`GRIDS`) are provided for a selection done elsewhere;
:func:`describe` gives a short human label.

Example::

    import torch
    from meta import fewshot
    field = fewshot.get("polynomial", degree=3, ridge=1e-8).fit(x, dx)   # x, dx [K, D]
    pred = field(x_new)                                                   # [M, D] float64
    field.hamiltonian(x_new)                                              # [M]
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import torch
from torch import Tensor

from hogn import checks

__all__ = [
    "BASELINES",
    "GRIDS",
    "Affine",
    "Baseline",
    "Field",
    "HamiltonianField",
    "Kernel",
    "Nearest",
    "Polynomial",
    "Zero",
    "describe",
    "get",
    "monomial_count",
    "names",
]

_CONSTANT = 1e-12
"""A coordinate whose support std is below this fraction of the largest is constant."""

_CHUNK = 1 << 22
"""Elements of the largest intermediate tensor evaluated at once (rows are chunked)."""


# ----------------------------------------------------------------------- validation
def _check_states(x: Any, name: str, dim: int | None = None) -> Tensor:
    """``x`` as a float64 ``[M, D]`` tensor; ``ValueError`` naming the problem."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor [M, D], got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D [points, D], got shape {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} must be [M, {dim}] (the support's D), got shape "
                         f"{tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf values")
    return x.to(torch.float64)


def _check_support(x: Any, dx: Any) -> tuple[Tensor, Tensor]:
    """Support states and derivatives as float64 ``[K, D]``, ``K >= 1``, ``D`` even."""
    x = _check_states(x, "x")
    k, d = x.shape
    if k < 1:
        raise ValueError(f"x must hold at least one support point (K >= 1), got shape "
                         f"{tuple(x.shape)}")
    if d < 2 or d % 2:
        raise ValueError(f"x must be [K, D] with D even (q then p), got D = {d}")
    dx = _check_states(dx, "dx")
    if dx.shape != x.shape:
        raise ValueError(f"dx must have the shape of x {tuple(x.shape)}, got "
                         f"{tuple(dx.shape)}")
    return x, dx.to(x.device)


def _gradient_target(dx: Tensor) -> Tensor:
    """``∇H = Jᵀ dx = [−dp, dq]`` for ``dx [..., D]``."""
    n = dx.shape[-1] // 2
    return torch.cat([-dx[..., n:], dx[..., :n]], -1)


def _field_from_gradient(grad: Tensor) -> Tensor:
    """``J ∇H = [∂H/∂p, −∂H/∂q]`` for ``∇H [..., D]``."""
    n = grad.shape[-1] // 2
    return torch.cat([grad[..., n:], -grad[..., :n]], -1)


@dataclass(frozen=True)
class _Scaling:
    """Support statistics: ``mean, std [D]`` and the non-constant coordinates
    ``active [a]`` (long)."""

    mean: Tensor
    std: Tensor
    active: Tensor

    @classmethod
    def of(cls, x: Tensor) -> _Scaling:
        mean = x.mean(0)
        std = x.std(0, correction=0)
        top = float(std.max())
        active = (std > _CONSTANT * top).nonzero().flatten() if top > 0 else \
            torch.zeros(0, dtype=torch.long, device=x.device)
        return cls(mean, std, active)

    def standardise(self, x: Tensor) -> Tensor:
        """Standardised active coordinates ``z [M, a]`` of ``x [M, D]``."""
        a = self.active
        return (x[:, a] - self.mean[a]) / self.std[a]


def _chunks(rows: int, per_row: int) -> list[slice]:
    """Row slices keeping ``rows_in_chunk · per_row`` near :data:`_CHUNK`."""
    step = max(1, _CHUNK // max(1, per_row))
    return [slice(i, min(i + step, rows)) for i in range(0, rows, step)] or [slice(0, 0)]


# ----------------------------------------------------------------------- solvers
def _psd_solve(gram: Tensor, rhs: Tensor, lam: float) -> Tensor:
    """``(G + λ I)⁻¹ rhs`` for a symmetric PSD ``G [n, n]`` and ``rhs [n, R]``: by
    Cholesky when ``λ > 0``; by eigendecomposition when ``λ = 0`` (the pseudo-inverse:
    eigenvalues below ``n · eps`` of the largest count as zero) or when Cholesky fails."""
    if lam > 0:
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        chol, info = torch.linalg.cholesky_ex(gram + lam * eye)
        if int(info) == 0:
            return torch.cholesky_solve(rhs, chol)
    e, v = torch.linalg.eigh(gram)  # λ = 0, or a ridge too small for round-off
    e = e.clamp(min=0)
    if lam > 0:
        inv = 1.0 / (e + lam)
    else:
        cut = float(e.max()) * gram.shape[0] * torch.finfo(gram.dtype).eps if e.numel() else 0.0
        inv = torch.where(e > cut, 1.0 / torch.where(e > cut, e, 1.0), 0.0)
    return v @ (inv[:, None] * (v.T @ rhs))


def _ridge_solve(phi: Tensor, y: Tensor, ridge: float) -> Tensor:
    """Ridge least squares ``argmin_c |Φ c − y|² + λ |c|²`` for ``Φ [n, F]``, ``y [n, R]``
    (returns ``[F, R]``), with ``λ = ridge · |Φ|²_F / min(n, F)``: the mean eigenvalue of
    the smaller Gram matrix. Primal form (``ΦᵀΦ``) when ``F <= n``, dual (``Φᵀ (ΦΦᵀ +
    λ)⁻¹ y``) otherwise; ``ridge = 0`` is the min-norm least-squares solution."""
    n, f = phi.shape
    if n == 0 or f == 0:
        return phi.new_zeros(f, y.shape[1])
    dual = f > n
    gram = phi @ phi.T if dual else phi.T @ phi
    lam = ridge * float(gram.diagonal().sum()) / min(n, f)
    if dual:
        return phi.T @ _psd_solve(gram, y, lam)
    return _psd_solve(gram, phi.T @ y, lam)


# ----------------------------------------------------------------------- fields
class Field:
    """A fitted vector field: ``field(x [M, D]) -> dx [M, D]`` (float64, batched).

    Attributes:
        dim: State size ``D``.
        device: Device of the fitted tensors (queries are moved there).
        label: What was fitted (see :func:`describe`).
    """

    def __init__(self, dim: int, device: torch.device, label: str) -> None:
        self.dim = dim
        self.device = device
        self.label = label

    def __call__(self, x: Tensor) -> Tensor:
        """Predicted time derivatives.

        Args:
            x: States ``[M, D]`` (any float dtype; moved to the support's device).

        Returns:
            ``dx [M, D]`` float64.

        Raises:
            ValueError: if ``x`` is not a finite ``[M, D]`` float tensor.
        """
        x = _check_states(x, "x", self.dim).to(self.device)
        return self._evaluate(x)

    def _evaluate(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label}, D={self.dim})"


class HamiltonianField(Field):
    """A field of the form ``J ∇H`` for an explicit scalar ``H``: symplectic by
    construction. :meth:`hamiltonian` gives ``H`` (up to an additive constant)."""

    def hamiltonian(self, x: Tensor) -> Tensor:
        """The fitted Hamiltonian.

        Args:
            x: States ``[M, D]``.

        Returns:
            ``H [M]`` float64 (defined up to a constant).
        """
        x = _check_states(x, "x", self.dim).to(self.device)
        return self._energy(x)

    def _energy(self, x: Tensor) -> Tensor:
        raise NotImplementedError


class _ZeroField(HamiltonianField):
    def _evaluate(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape)

    def _energy(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0])


class _AffineField(Field):
    """``dx = W z + b`` with ``z`` the standardised active coordinates."""

    def __init__(self, scaling: _Scaling, weight: Tensor, bias: Tensor, label: str) -> None:
        super().__init__(bias.numel(), bias.device, label)
        self.scaling, self.weight, self.bias = scaling, weight, bias

    def _evaluate(self, x: Tensor) -> Tensor:
        return self.scaling.standardise(x) @ self.weight + self.bias


class _NearestField(Field):
    def __init__(self, scaling: _Scaling, support: Tensor, dx: Tensor, label: str) -> None:
        super().__init__(dx.shape[1], dx.device, label)
        self.scaling, self.support, self.dx = scaling, scaling.standardise(support), dx

    def _evaluate(self, x: Tensor) -> Tensor:
        z = self.scaling.standardise(x)
        k, a = self.support.shape
        index = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
        for rows in _chunks(x.shape[0], k * max(a, 1)):
            d2 = ((z[rows, None, :] - self.support[None]) ** 2).sum(-1)  # [m, K]
            index[rows] = d2.argmin(1)  # ties: the first support point
        return self.dx[index]


def monomial_count(a: int, degree: int) -> int:
    """Number of monomials of degree ``1 … degree`` in ``a`` variables:
    ``C(a + degree, degree) − 1`` (the feature count of :class:`Polynomial`)."""
    return math.comb(a + degree, degree) - 1


@lru_cache(maxsize=32)
def _basis_tables(a: int, degree: int) -> tuple[list[int], list[int], list[int], list[tuple]]:
    """Index tables of the monomials of degree ``0 … degree`` in ``a`` variables.

    Monomials are numbered by degree, then lexicographically (number 0 is the constant):
    each is a sorted tuple of factor indices (``z0² z2`` is ``(0, 0, 2)``) and equals its
    *parent* (the tuple without its last factor, one degree lower) times its last factor.

    Returns:
        ``parents`` and ``lasts`` (for monomials ``1 …``), ``starts`` (the first number of
        each degree, then the total) and the derivative rows ``(f, j, e, g)``:
        ``∂m_f/∂z_j = e · m_g`` for every monomial ``f >= 1`` and variable ``j`` in it.
    """
    monos: list[tuple[int, ...]] = [()]
    number = {(): 0}
    parents: list[int] = []
    lasts: list[int] = []
    starts = [0]
    for deg in range(1, degree + 1):
        starts.append(len(monos))
        for combo in itertools.combinations_with_replacement(range(a), deg):
            number[combo] = len(monos)
            monos.append(combo)
            parents.append(number[combo[:-1]])
            lasts.append(combo[-1])
    starts.append(len(monos))
    rows = []
    for f, combo in enumerate(monos[1:], 1):
        for j in sorted(set(combo)):
            cut = combo.index(j)
            rows.append((f, j, combo.count(j), number[combo[:cut] + combo[cut + 1:]]))
    return parents, lasts, starts, rows


class _Basis:
    """Monomials of degree ``0 … degree`` of ``a`` standardised coordinates, evaluated
    level by level (each monomial is its parent times one coordinate: one product per
    monomial), as index tensors on ``device``."""

    def __init__(self, a: int, degree: int, device: torch.device) -> None:
        parents, lasts, starts, rows = _basis_tables(a, degree)
        self.a, self.degree, self.starts = a, degree, starts
        long = {"dtype": torch.long, "device": device}
        # per degree d >= 1: parents as positions within degree d − 1, and last factors
        self.levels = [(torch.tensor(parents[lo - 1:hi - 1], **long) - starts[d - 1],
                        torch.tensor(lasts[lo - 1:hi - 1], **long))
                       for d, (lo, hi) in enumerate(itertools.pairwise(starts[1:]), 1)]
        table = torch.tensor(rows, **long).reshape(-1, 4)
        self.feature, self.variable, self.power, self.lower = table.T  # ∂m_f/∂z_j = e·m_g

    @property
    def count(self) -> int:
        """Features ``F``: monomials of degree ``1 … degree``."""
        return self.starts[-1] - 1

    def values(self, z: Tensor, degree: int) -> Tensor:
        """Monomials of degree ``0 … degree`` of ``z [M, a]``: ``[M, starts[degree + 1]]``."""
        level = torch.ones_like(z[:, :1])
        out = [level]
        for parent, last in self.levels[:degree]:
            level = level[:, parent] * z[:, last]
            out.append(level)
        return torch.cat(out, 1)

    def gradients(self, z: Tensor) -> Tensor:
        """``∂m_f/∂z_j`` of the features at ``z [K, a]``: ``[K, a, F]``."""
        lower = self.values(z, self.degree - 1)
        grad = z.new_zeros(z.shape[0], self.a, self.count)
        grad[:, self.variable, self.feature - 1] = self.power.to(z) * lower[:, self.lower]
        return grad

    def gradient_weights(self, coef: Tensor) -> Tensor:
        """``C [starts[degree], a]`` with ``∇_z (Σ_f c_f m_f) = m_{≤ degree−1}(z) @ C``."""
        weights = coef.new_zeros(self.starts[self.degree], self.a)
        return weights.index_put((self.lower, self.variable),
                                 self.power.to(coef) * coef[self.feature - 1], accumulate=True)


class _PolynomialField(HamiltonianField):
    """``H = Σ c_f m_f(z)``; ``∂H/∂x_i = (1/s_i) ∂H/∂z_i`` on the active coordinates,
    evaluated as the monomials of one degree less times precomputed weights."""

    def __init__(self, scaling: _Scaling, basis: _Basis, coef: Tensor, dim: int,
                 label: str) -> None:
        super().__init__(dim, coef.device, label)
        self.scaling, self.basis, self.coef = scaling, basis, coef
        self._weights = basis.gradient_weights(coef)  # [F_lower, a]

    def _gradient(self, x: Tensor) -> Tensor:
        grad = x.new_zeros(x.shape)
        a = self.scaling.active
        if a.numel() == 0:
            return grad
        z = self.scaling.standardise(x)
        grad_z = torch.cat([self.basis.values(z[rows], self.basis.degree - 1) @ self._weights
                            for rows in _chunks(x.shape[0], self._weights.shape[0])])
        return grad.index_copy(1, a, grad_z / self.scaling.std[a])

    def _evaluate(self, x: Tensor) -> Tensor:
        return _field_from_gradient(self._gradient(x))

    def _energy(self, x: Tensor) -> Tensor:
        if self.scaling.active.numel() == 0:
            return x.new_zeros(x.shape[0])
        z = self.scaling.standardise(x)
        return torch.cat([self.basis.values(z[rows], self.basis.degree)[:, 1:] @ self.coef
                          for rows in _chunks(x.shape[0], self.coef.numel())])


class _KernelField(HamiltonianField):
    """GP posterior mean of ``H`` with an RBF kernel of inverse squared lengthscales
    ``w [a]`` on the active coordinates: ``H(x) = Σ_j k(x, x_j) (w ⊙ (x − x_j)) · β_j``
    and ``∇H(x) = Σ_j k(x, x_j) (diag w − u_j u_jᵀ) β_j`` with ``u_j = w ⊙ (x − x_j)``."""

    def __init__(self, scaling: _Scaling, support: Tensor, weights: Tensor, beta: Tensor,
                 dim: int, label: str) -> None:
        super().__init__(dim, beta.device, label)
        self.scaling, self.support, self.weights, self.beta = scaling, support, weights, beta

    def _terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``k [M, K]`` and ``u [M, K, a]`` at states ``x [M, D]``."""
        r = x[:, self.scaling.active][:, None, :] - self.support[None]  # [M, K, a]
        u = self.weights * r
        k = torch.exp(-0.5 * (u * r).sum(-1))
        return k, u

    def _gradient(self, x: Tensor) -> Tensor:
        grad = x.new_zeros(x.shape)
        a = self.scaling.active
        if a.numel() == 0:
            return grad
        out = []
        for rows in _chunks(x.shape[0], self.beta.numel()):
            k, u = self._terms(x[rows])
            ub = (u * self.beta).sum(-1)  # [m, K]
            out.append((k @ self.beta) * self.weights - torch.einsum("mk,mka->ma", k * ub, u))
        return grad.index_copy(1, a, torch.cat(out))

    def _evaluate(self, x: Tensor) -> Tensor:
        return _field_from_gradient(self._gradient(x))

    def _energy(self, x: Tensor) -> Tensor:
        if self.scaling.active.numel() == 0:
            return x.new_zeros(x.shape[0])
        out = []
        for rows in _chunks(x.shape[0], self.beta.numel()):
            k, u = self._terms(x[rows])
            out.append((k * (u * self.beta).sum(-1)).sum(-1))
        return torch.cat(out)


# ----------------------------------------------------------------------- methods
def _ridge_value(value: Any, name: str) -> float:
    return checks.nonnegative_float(value, name)


@dataclass(frozen=True)
class Baseline:
    """A few-shot regressor: hyper-parameters, and :meth:`fit` on ``K`` points."""

    name: ClassVar[str] = ""

    def fit(self, x: Tensor, dx: Tensor) -> Field:
        """Fit on the support.

        Args:
            x: Support states ``[K, D]`` (``q`` then ``p``; any float dtype).
            dx: Their time derivatives ``[K, D]``.

        Returns:
            The fitted :class:`Field` (float64, on ``x``'s device).

        Raises:
            ValueError: on malformed input (shapes, ``K < 1``, odd ``D``, NaN/inf).
        """
        x, dx = _check_support(x, dx)
        return self._fit(x, dx)

    def _fit(self, x: Tensor, dx: Tensor) -> Field:
        raise NotImplementedError

    def describe(self) -> str:
        """A short human label, e.g. ``"polynomial H, degree 3, ridge 1e-08"``."""
        raise NotImplementedError


@dataclass(frozen=True)
class Zero(Baseline):
    """Predicts ``dx = 0`` everywhere."""

    name: ClassVar[str] = "zero"

    def _fit(self, x: Tensor, dx: Tensor) -> Field:
        return _ZeroField(x.shape[1], x.device, self.describe())

    def describe(self) -> str:
        return "zero field"


@dataclass(frozen=True)
class Affine(Baseline):
    """``dx = A x + b`` by ridge least squares on standardised coordinates (the bias
    is not penalised; constant coordinates are left out, their effect is in ``b``).

    Attributes:
        ridge: Relative ridge (``>= 0``; ``0``: min-norm least squares).
    """

    name: ClassVar[str] = "affine"
    ridge: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ridge", _ridge_value(self.ridge, "affine ridge"))

    def _fit(self, x: Tensor, dx: Tensor) -> Field:
        scaling = _Scaling.of(x)
        z = scaling.standardise(x)  # centred
        bias = dx.mean(0)
        weight = _ridge_solve(z, dx - bias, self.ridge)  # [a, D]
        return _AffineField(scaling, weight, bias, self.describe())

    def describe(self) -> str:
        return f"affine, ridge {self.ridge:g}"


@dataclass(frozen=True)
class Polynomial(Baseline):
    """Least-squares polynomial Hamiltonian ``H = Σ c_i m_i(z)`` over the monomials of
    degree ``1 … degree`` of the standardised non-constant coordinates; ``c`` solves
    the stacked Hamilton equations ``[K·a, F]`` by ridge.

    Attributes:
        degree: Highest monomial degree (``>= 1``).
        ridge: Relative ridge (``>= 0``).
        max_features: Largest monomial count ``F`` accepted; more is refused with a
            ``ValueError`` at fit time (``F = C(a + degree, degree) − 1``).
    """

    name: ClassVar[str] = "polynomial"
    degree: int = 3
    ridge: float = 1e-8
    max_features: int = 20_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "degree", checks.positive_int(self.degree, "polynomial degree"))
        object.__setattr__(self, "ridge", _ridge_value(self.ridge, "polynomial ridge"))
        object.__setattr__(self, "max_features",
                           checks.positive_int(self.max_features, "polynomial max_features"))

    def _fit(self, x: Tensor, dx: Tensor) -> Field:
        scaling = _Scaling.of(x)
        a = scaling.active.numel()
        count = monomial_count(a, self.degree)
        if count > self.max_features:
            raise ValueError(f"polynomial degree {self.degree} in {a} non-constant coordinates "
                             f"has {count} monomials, more than max_features="
                             f"{self.max_features}; expected a lower degree or a larger "
                             "max_features")
        basis = _Basis(a, self.degree, x.device)
        coef = x.new_zeros(count)
        if a:
            z = scaling.standardise(x)
            dm = basis.gradients(z)  # ∂m_f/∂z_j at x_k: [K, a, F]
            # Φ [K · a, F]: row (k, j) holds ∂m/∂x_j = (1/s_j) ∂m/∂z_j at x_k
            phi = (dm / scaling.std[scaling.active][:, None]).reshape(-1, count)
            target = _gradient_target(dx)[:, scaling.active].reshape(-1, 1)
            coef = _ridge_solve(phi, target, self.ridge)[:, 0]
        return _PolynomialField(scaling, basis, coef, x.shape[1], self.describe())

    def describe(self) -> str:
        return f"polynomial H, degree {self.degree}, ridge {self.ridge:g}"


@dataclass(frozen=True)
class Kernel(Baseline):
    """Kernel ridge regression (GP posterior mean) with a Hamiltonian kernel.

    ``H ~ GP(0, k)``, ``k(x, x') = exp(−½ Σ_i (x_i − x'_i)² / (ℓ s_i)²)`` with ``s_i``
    the support std (constant coordinates ignored), observed through ``f = J ∇H``, whose
    matrix kernel is ``J ∇∇'ᵀk Jᵀ`` with ``∇∇'ᵀk = k (Λ⁻¹ − Λ⁻¹ r rᵀ Λ⁻¹)``,
    ``r = x − x'``. Since ``J`` is orthogonal this is the same as regressing ``∇H`` on
    ``Jᵀ dx`` with the kernel ``∇∇'ᵀk``: ``(G + λ·mean(diag G) I) β = Jᵀ dx`` and
    ``f(x*) = J G(x*, X) β``, exactly ``J ∇H`` for
    ``H(x) = Σ_j β_j · ∇_{x_j} k(x, x_j)``.

    Attributes:
        lengthscale: ``ℓ``, in units of each coordinate's support std (``> 0``).
        ridge: Relative ridge (``>= 0``; ``0``: interpolation by pseudo-inverse).
    """

    name: ClassVar[str] = "kernel"
    lengthscale: float = 1.0
    ridge: float = 1e-6

    def __post_init__(self) -> None:
        object.__setattr__(self, "lengthscale",
                           checks.positive_float(self.lengthscale, "kernel lengthscale"))
        object.__setattr__(self, "ridge", _ridge_value(self.ridge, "kernel ridge"))

    def _fit(self, x: Tensor, dx: Tensor) -> Field:
        scaling = _Scaling.of(x)
        active = scaling.active
        k_pts, a = x.shape[0], active.numel()
        support = x[:, active]
        weights = (self.lengthscale * scaling.std[active]) ** -2  # [a]
        beta = x.new_zeros(k_pts, a)
        if a:
            r = support[:, None, :] - support[None]  # [K, K, a]
            u = weights * r
            k = torch.exp(-0.5 * (u * r).sum(-1))
            outer = u[..., :, None] * u[..., None, :]  # [K, K, a, a]
            block = torch.diag_embed(weights.expand(k_pts, k_pts, a)) - outer
            gram = (k[..., None, None] * block).transpose(1, 2).reshape(k_pts * a, k_pts * a)
            lam = self.ridge * float(weights.mean())  # mean(diag G): k(x, x) = 1, u = 0
            target = _gradient_target(dx)[:, active].reshape(-1, 1)
            beta = _psd_solve(gram, target, lam).reshape(k_pts, a)
        return _KernelField(scaling, support, weights, beta, x.shape[1], self.describe())

    def describe(self) -> str:
        return f"RBF-kernel H, lengthscale {self.lengthscale:g}, ridge {self.ridge:g}"


@dataclass(frozen=True)
class Nearest(Baseline):
    """1-nearest neighbour in standardised coordinates (constant ones ignored): the
    neighbour's ``dx`` (the first of equally near ones)."""

    name: ClassVar[str] = "nearest"

    def _fit(self, x: Tensor, dx: Tensor) -> Field:
        return _NearestField(_Scaling.of(x), x, dx, self.describe())

    def describe(self) -> str:
        return "nearest neighbour"


# ----------------------------------------------------------------------- registry
BASELINES: dict[str, type[Baseline]] = {
    cls.name: cls for cls in (Zero, Affine, Polynomial, Kernel, Nearest)}
"""Method name -> its hyper-parameter dataclass."""

GRIDS: dict[str, list[dict[str, Any]]] = {
    "zero": [{}],
    "affine": [{"ridge": r} for r in (0.0, 1e-8, 1e-6, 1e-4, 1e-2)],
    "polynomial": [{"degree": d, "ridge": r} for d in range(2, 7)
                   for r in (0.0, 1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2, 1e-1)],
    "kernel": [{"lengthscale": s, "ridge": r} for s in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
               for r in (1e-10, 1e-8, 1e-6, 1e-4, 1e-2, 1e-1)],
    "nearest": [{}],
}
"""Method name -> default hyper-parameter grid (a list of keyword dicts for :func:`get`)."""


def names() -> list[str]:
    """Names of the few-shot baselines, in :data:`BASELINES` order."""
    return list(BASELINES)


def get(name: str, **hyper: Any) -> Baseline:
    """Build a few-shot baseline by name.

    Args:
        name: One of :func:`names`.
        **hyper: Its hyper-parameters (see the class: e.g. ``degree``, ``ridge``).

    Raises:
        ValueError: for an unknown name (listing the choices), an unknown
            hyper-parameter (listing the method's) or a bad value.
    """
    try:
        cls = BASELINES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown few-shot baseline {name!r}; expected one of: "
                         f"{', '.join(names())}") from None
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(hyper) - set(allowed))
    if unknown:
        expected = ", ".join(allowed) if allowed else "none"
        raise ValueError(f"few-shot baseline {name!r}: unknown hyper-parameter(s) {unknown}; "
                         f"expected some of: {expected}")
    return cls(**hyper)


def describe(name: str, hyper: Mapping[str, Any] | None = None) -> str:
    """Short human label of a method and its hyper-parameters (defaults filled in),
    e.g. ``describe("polynomial", {"degree": 3})`` -> ``"polynomial H, degree 3,
    ridge 1e-08"``.

    Raises:
        ValueError: as :func:`get`.
    """
    return get(name, **dict(hyper or {})).describe()
