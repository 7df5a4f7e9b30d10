"""Training options: :class:`TrainConfig` and the names of its choices (targets,
losses, schedules)."""

from __future__ import annotations

from dataclasses import dataclass

from hogn import checks
from hogn.models.base import DynamicsModel

__all__ = ["LOSSES", "SCHEDULES", "TARGETS", "TrainConfig"]

LOSSES = ("mse", "logcosh")
TARGETS = ("derivative", "rollout")
SCHEDULES = ("none", "cosine")


@dataclass
class TrainConfig:
    """Training options (all JSON-serialisable; stored in the run's ``config.json``).

    Attributes:
        target: ``"derivative"`` or ``"rollout"`` (``None``: rollout for steppers,
            derivative otherwise).
        integrator: Integrator for the rollout target.
        rollout_steps: Steps ``k`` integrated and matched per sample (rollout target).
        loss: ``"mse"`` or ``"logcosh"``.
        epochs: Passes over the training samples (with ``steps``: leave at its default,
            20; it is then not used).
        steps: Train for exactly this many optimizer steps instead of ``epochs``
            (0: by epochs). Epochs run until the steps are taken, the last one cut
            short; ``cosine`` anneals over the steps.
        batch_size: Graphs (states) per batch; at least the training samples of an
            epoch: full batch (one step per epoch over all of them, unshuffled).
        edge_budget: Cut training batches by size instead: each holds graphs, in a
            shuffled order, until the next would pass this many edges plus nodes
            (0: off, ``batch_size`` graphs per batch). For graphs of very different
            sizes, where memory and time follow the edges; a graph above the budget
            gets a batch of its own (:class:`hogn.batching.EdgeBudgetBatches`).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        schedule: ``"none"`` or ``"cosine"`` (annealed to 0 over the epochs, or over
            the optimizer steps with ``steps``: the learning rate of step ``i`` of
            ``S`` is ``lr (1 + cos(pi i / S)) / 2``).
        val_fraction: Fraction of training trajectories held out for validation.
        max_samples: Cap on training samples per epoch (random subset; 0: all).
        grad_clip: Clip the gradient norm (0: off).
        seed: Seed of the split and the batch order.
        device: Torch device.
        checkpoint_every: Write the run folder's checkpoint every this many epochs
            (0: not by epoch count). Only with a run folder.
        checkpoint_seconds: Write the checkpoint when this many seconds have passed
            since the last one (0: not by time). The checkpoint is also written after
            the final epoch and when training stops on an exception, whatever these
            two say; with both 0, only then. The default (every 30 s) keeps the
            run folder's cost per epoch small and independent of the epoch count; a
            killed run loses at most the epochs since its last checkpoint.
        refine_initial: Rollout target only: the start state ``(q, p)`` of every
            training sample gets a learnable offset, initialised at zero (the start is
            the observation) and optimised with the network by the same Adam
            optimizer, without weight decay (the initial-state refinement of
            Chen et al., "Symplectic Recurrent Neural Networks", for noisy
            observations). The training loss is then the mean over ``k + 1`` states:
            the refined start against its observation, then the rollout against the
            next ``k`` observed states (which are not refined). Validation and test
            samples start from the plain observation (their loss: over ``k`` states).
            The refined starts are :attr:`TrainResult.refined_starts`. ``grad_clip``
            clips the network's gradient only. With mini-batches, Adam's momentum
            keeps moving an offset for some steps after its sample's batch (dense
            Adam, as for embeddings). One process only.
        refine_lr: Adam learning rate of the start offsets (0: ``lr``).
    """

    target: str | None = None
    integrator: str = "rk4"
    rollout_steps: int = 1
    loss: str = "mse"
    epochs: int = 20
    steps: int = 0
    batch_size: int = 64
    edge_budget: int = 0
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "none"
    val_fraction: float = 0.1
    max_samples: int = 0
    grad_clip: float = 0.0
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 0
    checkpoint_seconds: float = 30.0
    refine_initial: bool = False
    refine_lr: float = 0.0

    def validate(self, model: DynamicsModel) -> None:
        """Check the options against each other and the model. Raises ``ValueError``."""
        for key, value, choices in (("target", self.target, TARGETS),
                                    ("loss", self.loss, LOSSES),
                                    ("schedule", self.schedule, SCHEDULES)):
            if value not in choices:
                raise ValueError(f"unknown {key} {value!r}; expected one of: "
                                 f"{', '.join(choices)}")
        if model.is_stepper:
            if self.target != "rollout":
                raise ValueError(f"{model.name} is a stepper: it trains on target 'rollout', "
                                 f"not {self.target!r}")
        elif self.target == "rollout":
            model.check_integrator(self.integrator)
        for key, check in (("epochs", checks.positive_int),
                           ("steps", checks.nonnegative_int),
                           ("batch_size", checks.positive_int),
                           ("edge_budget", checks.nonnegative_int),
                           ("rollout_steps", checks.positive_int),
                           ("lr", checks.positive_float),
                           ("weight_decay", checks.nonnegative_float),
                           ("max_samples", checks.nonnegative_int),
                           ("grad_clip", checks.nonnegative_float),
                           ("seed", checks.nonnegative_int),
                           ("checkpoint_every", checks.nonnegative_int),
                           ("checkpoint_seconds", checks.nonnegative_float),
                           ("refine_lr", checks.nonnegative_float)):
            check(getattr(self, key), key)
        if not isinstance(self.refine_initial, bool):
            raise ValueError(f"refine_initial must be True or False, got "
                             f"{self.refine_initial!r}")
        if self.refine_initial and self.target != "rollout":
            raise ValueError(f"refine_initial needs target 'rollout' (the start state is "
                             f"refined through the rollout from it), got target "
                             f"{self.target!r}")
        if self.refine_lr and not self.refine_initial:
            raise ValueError(f"refine_lr={self.refine_lr} is set but refine_initial is off; "
                             "set refine_initial=True or leave refine_lr at 0")
        checks.fraction(self.val_fraction, "val_fraction", upper_open=True)
        checks.device(self.device, "device")
        default_epochs = TrainConfig.epochs
        if self.steps and self.epochs != default_epochs:
            raise ValueError(f"steps and epochs are exclusive: got steps={self.steps} and "
                             f"epochs={self.epochs}; give one (steps counts optimizer steps, "
                             f"epochs passes over the data; leave epochs at {default_epochs} "
                             "with steps)")
        if self.edge_budget and self.max_samples:
            raise ValueError("edge_budget and max_samples cannot be combined: an edge budget "
                             "cuts every training sample of an epoch into batches; set one")
