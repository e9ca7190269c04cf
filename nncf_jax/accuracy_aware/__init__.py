"""Accuracy-aware training: NNCF's ``early_exit`` and ``adaptive_compression_level`` loops.

The loop drives *your* training code through callbacks, as NNCF's
``create_accuracy_aware_training_loop(config, ctrl, ...)`` /
``loop.run(model, train_epoch_fn=..., validate_fn=...)`` do, but functionally:
the callbacks take and return the state your train loop carries instead of
mutating a model.

**The carried state** is a dict holding at least ``"variables"`` (the model
variables, as for ``ctrl.apply``) and ``"cstate"`` (the `CompressionState`),
the same names `nncf_jax.checkpoint.CheckpointManager` uses; ``"opt_state"``
and any other key your train step needs ride along untouched. The loop reads
``variables`` and ``cstate`` to sync the controller's facade handles
(``ctrl.sync``) before every validation, and writes ``cstate`` back after it
disables the scheduler or sets a compression rate.

**Callbacks**:

- ``train_epoch_fn(state, epoch) -> state``: trains one epoch. ``epoch`` is
  the 0-based index, over the whole run, of the epoch about to be trained.
  The compression schedule advances inside your step (``ctrl.transform``), so
  the loop does not call ``ctrl.scheduler.epoch_step()`` as NNCF's runner does.
- ``validate_fn(state) -> float``: the accuracy of the compressed model
  (higher is better). Any unit works — NNCF's examples use percent (76.1) —
  as long as ``uncompressed_model_accuracy`` and
  ``maximal_absolute_accuracy_degradation`` use the same one;
  ``maximal_relative_accuracy_degradation`` is always in percent of the
  uncompressed accuracy.
- ``configure_optimizers_fn(state, lr_scale) -> state`` (optional): returns
  the state with a fresh optimizer state. Called once before training and, in
  ``adaptive_compression_level``, whenever a new rate is set (NNCF's
  ``reset_training``); ``lr_scale`` is the product of ``lr_reduction_factor``
  over the direction changes so far (1.0 until the first one).
- ``dump_checkpoint_fn(state, record) -> None`` (optional): called after every
  validation with the `EpochRecord`; ``record.best`` tells whether this state
  is the best so far.

**Tolerance**: the minimal tolerable accuracy is
:math:`a_0 - \\delta_{abs}` or :math:`a_0 (1 - \\delta_{rel}/100)`, with
:math:`a_0` the uncompressed accuracy; an epoch is *within tolerance* when its
accuracy is at least that (the accuracy budget, accuracy minus it, is >= 0).

**early_exit**: validate the state as given (epoch 0), then train epoch by
epoch until an epoch is within tolerance and ``ctrl.compression_stage()`` is
``FULLY_COMPRESSED``, or ``maximal_total_epochs`` epochs were trained. Best
state: the most accurate FULLY compressed epoch within tolerance; failing
that, the most accurate FULLY compressed epoch; failing that, the most
accurate epoch (earliest on ties).

**adaptive_compression_level**: an early-exit phase of at most
``initial_training_phase_epochs`` epochs with the scheduler on; then
``ctrl.disable_scheduler()`` and a search over ``ctrl.compression_rate``.
Each rate trains from the best state within tolerance so far (NNCF's
``load_best_checkpoint``) for up to ``patience_epochs`` epochs: the first
epoch within tolerance accepts it, ``patience_epochs`` epochs without one
reject it. Accepted: the next rate is one step up; rejected: one step down.
When the direction flips, the step is multiplied by
``compression_rate_step_reduction_factor`` (and the learning-rate scale by
``lr_reduction_factor``). The search stops when the step falls below
``minimal_compression_rate_step``, the next rate would fall below
``minimal_compression_rate``, the maximal rate was accepted, or
``maximal_total_epochs`` epochs (both phases) were trained. Best state: the
highest rate within tolerance, the most accurate among equal rates; failing
any, the most accurate epoch. The scheduler stays disabled in the returned
state, as NNCF leaves it.

``docs/accuracy_aware.md`` has a complete example on the digits data.

Example::

    from nncf_jax.accuracy_aware import create_accuracy_aware_training_loop

    loop = create_accuracy_aware_training_loop(
        config, ctrl, uncompressed_model_accuracy=98.3)
    result = loop.run(
        {"variables": variables, "opt_state": opt_state, "cstate": cstate},
        train_epoch_fn=train_epoch, validate_fn=validate)
    result.compression_rate, result.accuracy, result.state["variables"]

The package: `params` (the config section), `history` (`EpochRecord`, the
result and the history table), `early_exit` and `adaptive` (the two modes'
phases and their "best"), `run` (the bookkeeping of one run) and `loop`
(`AccuracyAwareTrainingLoop` and its factory).
"""

from nncf_jax.accuracy_aware.history import AccuracyAwareResult, EpochRecord
from nncf_jax.accuracy_aware.history import StopReason as StopReason
from nncf_jax.accuracy_aware.loop import (
    AccuracyAwareTrainingLoop,
    create_accuracy_aware_training_loop,
)
from nncf_jax.accuracy_aware.params import AccuracyAwareParams
from nncf_jax.accuracy_aware.state import State as State

__all__ = [
    "AccuracyAwareParams",
    "AccuracyAwareResult",
    "AccuracyAwareTrainingLoop",
    "EpochRecord",
    "create_accuracy_aware_training_loop",
]
