"""The HNN paper's pixel model: an autoencoder whose 2-D latent follows a learned H.

Greydanus, Dzamba and Yosinski, "Hamiltonian Neural Networks" (NeurIPS 2019),
section "Learning a Hamiltonian from pixels". Every node holds one observation: two
consecutive frames of ``P`` pixels, ``q`` = frame ``t`` and ``p`` = frame ``t + 1``
(``d = P``; :mod:`systems.pixels` builds such data, one node per graph). The model

- encodes ``x = [q, p, c]`` (``[N, 2P + k]``) with an MLP to a latent
  ``z = (z_q, z_p)`` (``[N, 2]``),
- moves the latent with Hamilton's equations of a learned scalar ``H(z_q, z_p)``
  (an MLP, smooth activation), ``dz_q/dτ = ∂H/∂z_p``, ``dz_p/dτ = −∂H/∂z_q``,
  or, with ``latent="mlp"``, with an MLP vector field (the baseline),
- decodes a latent to the two frames ``[N, 2P]`` with a second MLP.

Latent time ``τ`` is counted in frames, as in the authors' code (``z_{t+1} = z_t +
J∇H(z_t)``): one frame is ``τ = 1`` whatever the data's ``dt``, which the model keeps
only to refuse data sampled at another rate. One step of the model is one frame,
``substeps`` steps of ``1 / substeps`` of the latent ``integrator``. The learned H is
not separable (it is any function of ``z``), so the splitting methods are refused;
the default is ``rk4`` (no symplectic structure, but its energy error per step is
``O(h⁵)``: on a random model the tests measure ``|ΔH| / |H|`` of 1.4e-8 over 300
frames, Euler's 8.9e-3);
``implicit_midpoint``/``gauss4`` keep H's error bounded at more cost.

The model is a stepper (``is_stepper``): :meth:`PixelHNN.next_state` encodes the
observation, takes one latent step and decodes the next observation (frames
``t + 1, t + 2``). :func:`hogn.rollout` calls it repeatedly, so it *re-encodes* each
decoded observation; :meth:`PixelHNN.latent_rollout` is the paper's rollout: encode
once, integrate the latent, decode for pictures.

Training: ``hogn.train(model, data, target="rollout", rollout_steps=1)``. The
objective of a batch of observations ``x_t`` with next observation ``x_{t+1}`` is

``L = L_pred + w_ae · L_AE + w_cc · L_CC + w_hnn · L_HNN``

- ``L_pred``: :func:`hogn.train`'s own loss, ``|decode(step(encode(x_t))) −
  x_{t+1}|²`` averaged over pixels (not in the paper; it ties the decoder to the
  latent dynamics and is the quantity a rollout is judged by);
- ``L_AE = |decode(encode(x_t)) − x_t|²`` (mean over pixels), the reconstruction;
- ``L_CC = |z_p^t − (z_q^{t+1} − z_q^t)|²`` (``z^{t+1} = encode(x_{t+1})``), the
  canonical-coordinates term: the momentum latent is the change of the position
  latent over one frame;
- ``L_HNN = |step(z^t) − z^{t+1}|²`` (mean over the two latents), the latent
  dynamics; ``step`` is the model's latent integrator (the paper's code takes one
  Euler step, ``z^t + J∇H(z^t)``).

The weights default to the authors' code: ``w_ae = w_cc = 1``, ``w_hnn = 0.1``
(with weight decay ``1e-5`` there, an option of :func:`hogn.train`). These three
terms are :meth:`PixelHNN.auxiliary_loss`, added by :func:`hogn.train` to each
batch loss; :meth:`PixelHNN.loss_terms` returns each of them.

The autoencoder follows the paper: MLPs of 200 hidden units with ReLU (``layers=4``
linear layers each way); ``H`` is a tanh MLP of 200 units (``hnn_layers=3``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from hogn import checks, integrators
from hogn.graph import GraphBatch
from hogn.models.base import DynamicsModel, GraphLike, as_graph, register, state_gradients
from hogn.nn import ACTIVATIONS, Linear
from hogn.nn import MLP as _Net

__all__ = ["AE_ACTIVATIONS", "LATENT_KINDS", "PixelHNN"]

AE_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU,
                                               "tanh": nn.Tanh, "softplus": nn.Softplus}
"""Activations of the autoencoder (differentiated once: ReLU is allowed there)."""

LATENT_KINDS: tuple[str, ...] = ("hnn", "mlp")
"""``"hnn"``: the latent follows a learned H; ``"mlp"``: a learned vector field."""

_DECODER_OUTPUTS = ("linear", "sigmoid")


def _autoencoder_mlp(in_features: int, hidden: int, out_features: int, layers: int,
                     activation: str) -> nn.Sequential:
    """``layers`` linear maps with ``activation`` between them, none after the last."""
    widths = [in_features] + [hidden] * (layers - 1) + [out_features]
    modules: list[nn.Module] = []
    for k in range(layers):
        modules.append(Linear(widths[k], widths[k + 1]))
        if k < layers - 1:
            modules.append(AE_ACTIVATIONS[activation]())
    return nn.Sequential(*modules)


def _check_int(name: str, key: str, value: object, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}: {key} must be an int >= {low}, got {value!r}")


def _check_choice(name: str, key: str, value: object, choices: tuple[str, ...] | list[str]
                  ) -> None:
    if value not in choices:
        raise ValueError(f"{name}: unknown {key} {value!r}; expected one of: "
                         f"{', '.join(choices)}")


@register
class PixelHNN(DynamicsModel):
    """Autoencoder with a Hamiltonian latent (see the module notes), a stepper over ``dt``.

    Args:
        dt: Time between the data's frames (> 0), checked against the data.
        dim: Pixels per frame ``P`` (an observation is two frames, ``2P`` numbers).
        node_constants: Node constants ``k``, extra encoder inputs (pixel data: 0).
        hidden: Hidden width of encoder and decoder (paper: 200).
        layers: Linear layers of encoder and of decoder (paper: 4).
        activation: Autoencoder activation (paper: ``"relu"``; see
            :data:`AE_ACTIVATIONS`).
        decoder_output: ``"linear"`` (paper) or ``"sigmoid"`` (frames in ``(0, 1)``).
        latent: ``"hnn"`` (learned H) or ``"mlp"`` (learned latent field, baseline).
        hnn_hidden: Hidden width of the latent network (paper: 200).
        hnn_layers: Linear layers of the latent network (paper: 3).
        hnn_activation: Smooth activation of the latent network (paper: tanh).
        integrator: Latent integrator (any not needing a separable field).
        substeps: Latent integrator steps per frame.
        ae_weight, cc_weight, hnn_weight: Weights of ``L_AE``, ``L_CC``, ``L_HNN``
            (paper's code: 1, 1, 0.1).
    """

    name: ClassVar[str] = "pixel-hnn"
    is_stepper: ClassVar[bool] = True
    uses_edges: ClassVar[bool] = False

    def __init__(self, dt: float, dim: int = 784, node_constants: int = 0, hidden: int = 200,
                 layers: int = 4, activation: str = "relu", decoder_output: str = "linear",
                 latent: str = "hnn", hnn_hidden: int = 200, hnn_layers: int = 3,
                 hnn_activation: str = "tanh", integrator: str = "rk4", substeps: int = 1,
                 ae_weight: float = 1.0, cc_weight: float = 1.0, hnn_weight: float = 0.1
                 ) -> None:
        name = self.name
        dt = checks.positive_float(dt, f"{name}: dt")
        for key, value, low in (("hidden", hidden, 1), ("layers", layers, 2),
                                ("hnn_hidden", hnn_hidden, 1), ("hnn_layers", hnn_layers, 2),
                                ("substeps", substeps, 1)):
            _check_int(name, key, value, low)
        _check_choice(name, "activation", activation, list(AE_ACTIVATIONS))
        _check_choice(name, "decoder_output", decoder_output, _DECODER_OUTPUTS)
        _check_choice(name, "latent", latent, LATENT_KINDS)
        _check_choice(name, "hnn_activation", hnn_activation, sorted(ACTIVATIONS))
        method = integrators.require_fit(integrators.get(integrator), False,
                                         f"{name}'s latent field")
        weights = {key: checks.nonnegative_float(value, f"{name}: {key}") for key, value in
                   (("ae_weight", ae_weight), ("cc_weight", cc_weight),
                    ("hnn_weight", hnn_weight))}
        super().__init__(dict(
            dt=dt, dim=dim, node_constants=node_constants, hidden=hidden, layers=layers,
            activation=activation, decoder_output=decoder_output, latent=latent,
            hnn_hidden=hnn_hidden, hnn_layers=hnn_layers, hnn_activation=hnn_activation,
            integrator=method.name, substeps=substeps, **weights))
        self.dt = dt
        self.latent = latent
        self.integrator = method
        self.substeps = substeps
        self.sigmoid_output = decoder_output == "sigmoid"
        self.weights = {k.removesuffix("_weight"): v for k, v in weights.items()}
        self.encoder = _autoencoder_mlp(2 * dim + node_constants, hidden, 2, layers, activation)
        self.decoder = _autoencoder_mlp(2, hidden, 2 * dim, layers, activation)
        self.latent_net = _Net(2, hnn_hidden, 1 if latent == "hnn" else 2, hnn_layers,
                               hnn_activation)

    # ------------------------------------------------------------ autoencoder
    def observation(self, graph: GraphLike) -> Tensor:
        """The checked observation ``[q, p, c]`` of each node, ``[N, 2P + k]``."""
        g = as_graph(graph)
        self.check_state(g.q, g.p, g)
        return torch.cat([g.q, g.p, g.c], -1)

    def encode(self, graph: GraphLike) -> Tensor:
        """Latent ``z = (z_q, z_p)`` of each node's observation, ``[N, 2]`` (``[G, 2]``
        for pixel data, one node per graph)."""
        return self.encoder(self.observation(graph))

    def decode(self, z: Tensor) -> Tensor:
        """The two frames ``[..., 2P]`` (frame ``t``, then ``t + 1``) of latents
        ``z [..., 2]``."""
        if z.shape[-1:] != (2,):
            raise ValueError(f"{self.name}: latents must be [..., 2], got {tuple(z.shape)}")
        x = self.decoder(z)
        return torch.sigmoid(x) if self.sigmoid_output else x

    # ---------------------------------------------------------- latent motion
    def _latent_energy(self, zq: Tensor, zp: Tensor, graph: object = None) -> Tensor:
        return self.latent_net(torch.cat([zq, zp], -1))[..., 0]

    def latent_energy(self, z: Tensor) -> Tensor:
        """Learned Hamiltonian of latents ``z [..., 2]``, ``[...]``.

        Raises:
            ValueError: for the ``latent="mlp"`` baseline, which has no energy.
        """
        if self.latent != "hnn":
            raise ValueError(f"{self.name} with latent={self.latent!r} learns a latent vector "
                             "field, not an energy; build it with latent='hnn'")
        if z.shape[-1:] != (2,):
            raise ValueError(f"{self.name}: latents must be [..., 2], got {tuple(z.shape)}")
        return self._latent_energy(z[..., :1], z[..., 1:])

    def latent_field(self, zq: Tensor, zp: Tensor) -> tuple[Tensor, Tensor]:
        """``(dz_q/dτ, dz_p/dτ)`` at ``z_q, z_p [M, 1]`` (``τ`` in frames): Hamilton's
        equations of the latent H, or the baseline's MLP field."""
        if self.latent == "mlp":
            out = self.latent_net(torch.cat([zq, zp], -1))
            return out[..., :1], out[..., 1:]
        create = self._create_graph(zq, zp, None)
        ((dh_dq, dh_dp),) = state_gradients((self._latent_energy,), zq, zp,
                                            None, create)  # type: ignore[arg-type]
        return dh_dp, -dh_dq

    def latent_step(self, z: Tensor) -> Tensor:
        """The latents one frame later, ``[M, 2]``: ``substeps`` steps of the integrator."""
        zq, zp = z[..., :1], z[..., 1:]
        h = 1.0 / self.substeps
        for _ in range(self.substeps):
            zq, zp = self.integrator.step(self.latent_field, zq, zp, h)
        return torch.cat([zq, zp], -1)

    def latent_rollout(self, graph: GraphLike, steps: int) -> Tensor:
        """The paper's rollout: encode once, integrate the latent ``steps`` frames.

        Runs without autograd graphs (in eval mode; the mode is restored). Decode
        the result (:meth:`decode`) to picture it.

        Returns:
            Latents ``[steps + 1, N, 2]``, starting at the encoded state.
        """
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                z = self.encode(graph)
                out = [z]
                for _ in range(steps):
                    z = self.latent_step(z)
                    out.append(z)
            return torch.stack(out)
        finally:
            self.train(was_training)

    # ---------------------------------------------------------------- stepper
    def delta(self, graph: GraphLike) -> tuple[Tensor, Tensor]:
        """Predicted change of both frames over one step: ``(Δq [N, P], Δp [N, P])``."""
        g = as_graph(graph)
        q, p = self._next(g)
        return q - g.q, p - g.p

    def _next(self, graph: GraphBatch) -> tuple[Tensor, Tensor]:
        x = self.decode(self.latent_step(self.encode(graph)))
        return x[:, : self.dim], x[:, self.dim:]

    def next_state(self, graph: GraphLike, integrator: str | integrators.Integrator | None = None,
                   dt: float | None = None) -> tuple[Tensor, Tensor]:
        """The next observation: encode, one latent step (one frame), decode.

        Args:
            graph: Observations ``q, p [N, P]`` (frames ``t, t + 1``).
            integrator: Must be ``None`` (the latent integrator is part of the config).
            dt: ``None`` or the model's ``dt``.

        Returns:
            ``(q_next [N, P], p_next [N, P])``: the decoded frames ``t + 1, t + 2``.

        Raises:
            ValueError: if an integrator is given or ``dt`` differs from the model's.
        """
        self._check_own_step(integrator, dt, f" (its latent integrator, {self.integrator.name}, "
                             "is set when it is built)")
        return self._next(as_graph(graph))

    # ----------------------------------------------------------------- losses
    def loss_terms(self, graph: GraphLike, y_q: Tensor, y_p: Tensor) -> dict[str, Tensor]:
        """The paper's three losses, unweighted, each a mean over the batch.

        Args:
            graph: Observations ``q, p [N, P]`` (frames ``t, t + 1``).
            y_q, y_p: The next observations ``[N, P]`` (frames ``t + 1, t + 2``) or
                the rollout targets ``[N, k, P]`` (the first of the ``k`` is used).

        Returns:
            ``{"ae": L_AE, "cc": L_CC, "hnn": L_HNN}`` (see the module notes; ``"hnn"``
            is the latent-dynamics term of either latent kind).

        Raises:
            ValueError: for targets whose shape does not fit the graph.
        """
        g = as_graph(graph)
        x = self.observation(g)
        if y_q.dim() == 3:
            y_q, y_p = y_q[:, 0], y_p[:, 0]
        if y_q.shape != g.q.shape or y_p.shape != g.p.shape:
            raise ValueError(f"{self.name}: next observations must be [N, P] = "
                             f"{list(g.q.shape)} (or [N, k, P]), got {list(y_q.shape)} and "
                             f"{list(y_p.shape)}")
        z = self.encoder(x)
        z_next = self.encoder(torch.cat([y_q, y_p, g.c], -1))
        ae = F.mse_loss(self.decode(z), x[:, : 2 * self.dim])
        cc = F.mse_loss(z[:, 1], z_next[:, 0] - z[:, 0])
        hnn = F.mse_loss(self.latent_step(z), z_next)
        return {"ae": ae, "cc": cc, "hnn": hnn}

    def auxiliary_loss(self, graph: GraphBatch, y_q: Tensor, y_p: Tensor) -> Tensor:
        """``w_ae · L_AE + w_cc · L_CC + w_hnn · L_HNN`` (added by :func:`hogn.train` to
        its pixel prediction loss)."""
        terms = self.loss_terms(graph, y_q, y_p)
        return sum((self.weights[k] * v for k, v in terms.items()),
                   start=torch.zeros((), dtype=terms["ae"].dtype, device=terms["ae"].device))
