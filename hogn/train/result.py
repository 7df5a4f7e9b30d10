"""What training gives back: :class:`TrainResult`, or :class:`NonFiniteLossError`
when the loss diverges."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

__all__ = ["NonFiniteLossError", "TrainResult"]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite. With a run folder the message says which
    checkpoint is kept (or that no epoch ended, so there is none)."""


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        history: One dict per epoch (epoch, step, train_loss, val_loss, lr, seconds;
            the final epoch's also test_loss). ``step`` is the number of optimizer
            steps taken by the end of the epoch; ``lr`` the learning rate of its first
            step; ``train_loss`` the mean of the losses measured before each step;
            ``val_loss`` the loss of the weights at the end of the epoch on the
            validation trajectories or, with ``val_fraction=0``, on a fixed subset of
            the training samples (as many as an epoch uses), so that the best epoch
            is ranked by the weights it saves. A run folder written before ``step``
            and ``test_loss`` existed keeps its old rows without them.
        best_val: Lowest ``val_loss``.
        best_epoch: Epoch of ``best_val``.
        run_dir: Run folder, if any.
        resumed_epoch: The checkpointed epoch this call went on from (0: a new run).
        test_loss: Loss of the returned (best) weights on the dataset's test
            trajectories, with the training target and loss (mean as ``val_loss``:
            of the per-batch means, weighted by graphs; one batch when
            ``batch_size`` covers the split); ``None`` when the dataset has none.
        steps: Optimizer steps the run has taken in all (before a resume included).
        full_batch: Whether every epoch was one step over all training samples.
        refined_starts: With ``refine_initial``: the observed states plus their
            learned offsets as the last epoch left them (whichever epoch's weights the
            model holds: the validation loss, from plain observations, does not rank
            the offsets), ``(q, p)`` each ``[T, N, d]`` in the model's dtype (equal to
            the observations where no training sample starts: validation and test
            trajectories, the last ``k`` times); ``None`` otherwise.
    """

    history: list[dict[str, float]]
    best_val: float
    best_epoch: int
    run_dir: Path | None
    resumed_epoch: int = 0
    test_loss: float | None = None
    steps: int = 0
    full_batch: bool = False
    refined_starts: tuple[Tensor, Tensor] | None = None
