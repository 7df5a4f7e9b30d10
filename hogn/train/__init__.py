"""Training a dynamics model on trajectory data.

Targets:

- ``derivative``: match the true ``dq, dp`` at each observed state (as HNN);
- ``rollout``: integrate ``k`` steps with a registered integrator from an observed
  state and match the next ``k`` observed states, back-propagating through the
  integrator (as HOGN). Steppers (DeltaGN) always train on ``rollout``.

Data is any object with the arrays of a ``systems.Dataset`` (``t [T]``, ``q, p, dq,
dp [T, N, d]``, optional ``q_obs, p_obs``, ``c [N, k]``, ``edge_index``,
``edge_attr``, ``ptr [G + 1]``, ``test [G]``); training uses its training
trajectories, part of which are held out for validation. Batches of graphs of
different sizes are cut out of the dataset's arrays at once (:meth:`Samples.collate`:
the same batch as a PyG ``Batch`` of per-state ``Data``, without the per-state cost).

Length: ``epochs`` passes over the training samples, or exactly ``steps`` optimizer
steps (``steps > 0``): then epochs run until that many steps are taken, the last one
cut short (its first batches only), and a ``cosine`` schedule anneals over the steps.
Either way the history holds one row per epoch (``step`` counts the optimizer steps
taken by its end). Full batch: with ``batch_size`` at least the training samples (and
no ``max_samples`` or ``edge_budget`` below them), every epoch is one step over all of
them, in one batch, in a fixed order (:attr:`TrainResult.full_batch`); with
``steps=N`` that is N full-batch steps, as in the HNN paper's training.

Test split: when training ends, the dataset's test trajectories (``test [G]``; never
trained or validated on) are scored with the best weights, with the same target and
loss as the validation: :attr:`TrainResult.test_loss` (``None`` without a test split),
also stored as ``test_loss`` in the final epoch's row (the last line of
``metrics.jsonl``; ``null`` without a test split).

A run folder receives ``config.json``, ``metrics.jsonl`` (one line per epoch,
appended and flushed as each epoch ends), ``checkpoint.pt`` (everything a resume
needs) and ``best.pt``, ``last.pt`` (the model files that ``hogn evaluate`` and
``hogn rollout`` load). A folder that holds a different run is refused; the same run
(the epoch or step count may grow, but a run by epochs stays one by epochs and a run
by steps one by steps; the checkpoint frequency may change) resumes from its
checkpoint. A run by steps resumed with more steps goes on from the checkpointed
epoch: when that epoch was cut short, its untaken batches are not taken.

Checkpoints. ``checkpoint.pt`` is one atomic write (temporary file and
``os.replace``) of the state at the end of an epoch: model, optimizer, scheduler,
the batch-order generator and torch's global CPU (and CUDA) random state, the epoch,
the best-so-far loss, epoch and weights, the byte length of ``metrics.jsonl`` at
that epoch and, with ``refine_initial``, the start offsets. It is written every
``checkpoint_every`` epochs and/or every ``checkpoint_seconds`` (default: every 30 s),
after the final epoch, and when training stops on an exception (Ctrl-C, a non-finite
loss): then it holds the last epoch that ended up to ~1 s before (the state is copied
in memory at most once a second, so that the run folder costs the same per epoch
however many epochs there are).
``best.pt`` and ``last.pt`` are written from the checkpointed state right after it,
never ahead of it. A resume reads only the checkpoint: it cuts ``metrics.jsonl``
back to the recorded length and goes on, so a run killed at any instant (SIGKILL,
power loss) and resumed gives the same ``metrics.jsonl`` lines (but for the wall
time in ``seconds``) and bit-for-bit the same weights as a run never interrupted.
A killed run loses at most the epochs since its last checkpoint; hidden temporary
files it left behind (see :func:`hogn.io.remove_temp_files`) are removed by the
next run in the folder. Python's ``random`` and numpy's global generator are not
used by training and not saved.

Damage and concurrency. The checkpoint carries the SHA-256 of its bytes
(:func:`hogn.io.save_checked`), and the one it replaced is kept as
``checkpoint.prev.pt``: a damaged checkpoint is refused in one line naming it, and
deleting it resumes from the previous one (a run killed between keeping the previous
checkpoint and writing the new one resumes from it by itself). One process writes a
run folder: :func:`train` holds the folder's lock (:class:`hogn.io.RunLock`,
``FOLDER/.lock``) from start to end; a second ``train`` on the same folder raises
:class:`hogn.io.RunLockedError` at once, and the lock of a killed run is free.

The package, one concept a module: :mod:`~hogn.train.config` (the options),
:mod:`~hogn.train.result` (what training returns or raises), :mod:`~hogn.train.samples`
(samples, batches, the split), :mod:`~hogn.train.start_offsets` (``refine_initial``),
:mod:`~hogn.train.batches` (loaders, a rank's share of a batch),
:mod:`~hogn.train.losses` (targets and losses), :mod:`~hogn.train.epochs` (one pass
over the batches), :mod:`~hogn.train.checkpoint`, :mod:`~hogn.train.run_folder`,
:mod:`~hogn.train.setup` (what a run is built from) and :mod:`~hogn.train.loop`
(:func:`train` and its steps). This module only hands their names on (the private ones
too, as they were importable from it); to replace one in a test, patch it in the module
that looks it up (``hogn.train.loop._epoch``, ``hogn.train.epochs._batch_loss``).
"""

from __future__ import annotations

from hogn.train.batches import (  # noqa: F401
    _Batches,
    _batches,
    _FirstBatches,
    _loader,
    _ShardCollate,
    _Share,
)
from hogn.train.checkpoint import (  # noqa: F401
    CHECKPOINT_VERSION,
    _apply_checkpoint,
    _checkpoint_path,
    _clone,
    _first_line,
    _legacy_checkpoint,
    _load_offsets,
    _read_checkpoint,
    _rng_state,
    _set_rng_state,
)
from hogn.train.config import LOSSES, SCHEDULES, TARGETS, TrainConfig
from hogn.train.epochs import _device_of, _epoch, _sharded_epoch, _step  # noqa: F401
from hogn.train.loop import _SNAPSHOT_SECONDS, _train, train  # noqa: F401
from hogn.train.losses import (  # noqa: F401
    _batch_loss,
    _has_auxiliary_loss,
    _loss,
    _penalty,
    _prediction,
    _SummedLoss,
    log_cosh,
)
from hogn.train.result import NonFiniteLossError, TrainResult
from hogn.train.run_folder import (  # noqa: F401
    _RESUMABLE_CHANGES,
    _append_line,
    _open_metrics,
    _prepare_run,
    _run_lock,
    _RunFolder,
    _same_data_file,
)
from hogn.train.samples import Batch, Samples, _split  # noqa: F401
from hogn.train.setup import _has_unused, _step_scheduler  # noqa: F401
from hogn.train.start_offsets import _StartOffsets  # noqa: F401

__all__ = ["LOSSES", "SCHEDULES", "TARGETS", "Batch", "NonFiniteLossError", "Samples",
           "TrainConfig", "TrainResult", "log_cosh", "train"]

# the function hogn.train (hogn/_lazy.py) is addressed as defined here
train.__module__ = __name__
