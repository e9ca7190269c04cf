"""`AccuracyAwareTrainingLoop` and `create_accuracy_aware_training_loop`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from nncf_jax.accuracy_aware.adaptive import has_settable_rate
from nncf_jax.accuracy_aware.history import (
    AccuracyAwareResult,
    EpochRecord,
    history_table,
    summary,
)
from nncf_jax.accuracy_aware.params import SECTION, AccuracyAwareParams
from nncf_jax.accuracy_aware.run import Run
from nncf_jax.accuracy_aware.state import State, checked_state, finite
from nncf_jax.checkpoint import CheckpointManager
from nncf_jax.config import NNCFConfig
from nncf_jax.errors import UsageError

__all__ = ["AccuracyAwareTrainingLoop", "create_accuracy_aware_training_loop"]


class AccuracyAwareTrainingLoop:
    """NNCF's accuracy-aware training loop; made by `create_accuracy_aware_training_loop`.

    Args:
      params: the parsed config section.
      ctrl: the compression controller.
      uncompressed_model_accuracy: the reference accuracy, or None to measure
        it in `run` with ``validate_uncompressed_fn``.
      minimal_compression_rate: the search stops rather than go below it.
      maximal_compression_rate: the search goes no higher than it nor than
        ``ctrl.maximal_compression_rate``.
      verbose: print a line per epoch and a history table at the end.
      console: where to print (a new ``rich.console.Console`` by default).
    """

    def __init__(
        self,
        params: AccuracyAwareParams,
        ctrl: Any,
        *,
        uncompressed_model_accuracy: float | None = None,
        minimal_compression_rate: float = 0.0,
        maximal_compression_rate: float = 0.95,
        verbose: bool = True,
        console: Console | None = None,
    ):
        self.params = params
        self.ctrl = ctrl
        self.uncompressed_model_accuracy = (
            None
            if uncompressed_model_accuracy is None
            else finite(uncompressed_model_accuracy, "uncompressed_model_accuracy")
        )
        low = finite(minimal_compression_rate, "minimal_compression_rate")
        high = finite(maximal_compression_rate, "maximal_compression_rate")
        high = min(high, float(ctrl.maximal_compression_rate))
        if not 0.0 <= low <= high:
            raise UsageError(
                f"minimal_compression_rate ({low}) must be in [0, maximal_compression_rate "
                f"({high}, the lower of the argument and ctrl.maximal_compression_rate)]"
            )
        self.minimal_compression_rate = low
        self.maximal_compression_rate = high
        self.verbose = verbose
        self.console = console if console is not None else Console(highlight=False)
        self._history: list[EpochRecord] = []
        self._result: AccuracyAwareResult | None = None

    @property
    def mode(self) -> str:
        """``"early_exit"`` or ``"adaptive_compression_level"``."""
        return self.params.mode

    @property
    def history(self) -> tuple[EpochRecord, ...]:
        """The validations of the current (or last) `run` so far."""
        return tuple(self._history)

    @property
    def result(self) -> AccuracyAwareResult | None:
        """What the last `run` returned (None before)."""
        return self._result

    def run(
        self,
        state: Mapping[str, Any],
        *,
        train_epoch_fn: Callable[[State, int], State],
        validate_fn: Callable[[State], float],
        configure_optimizers_fn: Callable[[State, float], State] | None = None,
        dump_checkpoint_fn: Callable[[State, EpochRecord], None] | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        validate_uncompressed_fn: Callable[[State], float] | None = None,
    ) -> AccuracyAwareResult:
        """Trains until the mode's stop condition; see the package doc.

        Args:
          state: the carried state, ``{"variables", "cstate", ...}``.
          train_epoch_fn: ``(state, epoch) -> state``, one epoch of training.
          validate_fn: ``state -> accuracy`` of the compressed model.
          configure_optimizers_fn: ``(state, lr_scale) -> state`` with a fresh
            ``opt_state``; optional.
          dump_checkpoint_fn: ``(state, record) -> None`` after every
            validation; optional.
          checkpoint_dir: if given, the best state is also saved there with
            `nncf_jax.checkpoint.CheckpointManager` (one step, named by its
            epoch; ``state["opt_state"]`` is saved when present). Must not
            hold checkpoints yet.
          validate_uncompressed_fn: ``state -> accuracy`` of the uncompressed
            model (e.g. plain ``model.apply`` on ``state["variables"]``),
            called once when no ``uncompressed_model_accuracy`` was given.

        Returns:
          `AccuracyAwareResult`; the controller's handles are synced to its
          best state. `history` also holds the records as the run goes.

        Raises:
          UsageError: the state is not a dict with ``variables`` and
            ``cstate``; a callback returned something else than a state or a
            finite accuracy; no reference accuracy; ``checkpoint_dir``
            already holds checkpoints.
        """
        state = checked_state(state, "state")
        if self.uncompressed_model_accuracy is not None:
            reference = self.uncompressed_model_accuracy
        elif validate_uncompressed_fn is not None:
            reference = finite(validate_uncompressed_fn(state), "validate_uncompressed_fn")
        else:
            raise UsageError(
                "the uncompressed model's accuracy is needed: pass uncompressed_model_accuracy= "
                "to create_accuracy_aware_training_loop or validate_uncompressed_fn= to run"
            )
        manager = None
        if checkpoint_dir is not None:
            manager = CheckpointManager(checkpoint_dir, max_to_keep=1)
            if manager.all_steps():
                manager.close()
                raise UsageError(
                    f"checkpoint_dir {manager.directory} already holds checkpoints "
                    f"{manager.all_steps()}; give an empty or new directory"
                )
        self._history = []
        self._result = None
        run = Run(
            self,
            reference=reference,
            train_epoch_fn=train_epoch_fn,
            validate_fn=validate_fn,
            configure_optimizers_fn=configure_optimizers_fn,
            dump_checkpoint_fn=dump_checkpoint_fn,
            manager=manager,
        )
        try:
            self._result = run.run(state)
        finally:
            if manager is not None:
                manager.close()
        if self.verbose:
            self._print_summary()
        return self._result

    def history_table(self) -> Table:
        """The history as a ``rich`` table; the best epoch is starred and bold."""
        best_epoch = None if self._result is None else self._result.epoch
        return history_table(self._history, self.mode, best_epoch)

    def _print_summary(self) -> None:
        r = self._result
        if r is None:
            return
        self.console.print(self.history_table())
        self.console.print(summary(r), markup=False)


def create_accuracy_aware_training_loop(
    config: NNCFConfig | Mapping[str, Any],
    ctrl: Any,
    *,
    uncompressed_model_accuracy: float | None = None,
    minimal_compression_rate: float = 0.0,
    maximal_compression_rate: float = 0.95,
    verbose: bool = True,
    console: Console | None = None,
) -> AccuracyAwareTrainingLoop:
    """NNCF's ``create_accuracy_aware_training_loop`` for a functional controller.

    Args:
      config: an `NNCFConfig` or config dict with an ``accuracy_aware_training``
        section (all of it is honoured; defaults as in
        ``NNCFConfig.resolved_accuracy_aware_training()``).
      ctrl: the controller from `nncf_jax.create_compressed_model`.
      uncompressed_model_accuracy: the original model's accuracy, in the units
        of ``validate_fn``; if None, ``run`` needs ``validate_uncompressed_fn``.
      minimal_compression_rate, maximal_compression_rate: the range the
        adaptive search may explore (NNCF's defaults, 0.0 and 0.95; the upper
        bound is also capped by ``ctrl.maximal_compression_rate``).
      verbose: print a line per epoch and the history table at the end.
      console: the ``rich`` console to print to.

    Returns:
      An `AccuracyAwareTrainingLoop`; call its ``run``.

    Raises:
      ConfigError: no ``accuracy_aware_training`` section, or an invalid one.
      UsageError: the controller has no algorithm (nothing to be accuracy-aware
        about), or ``adaptive_compression_level`` with no algorithm whose
        compression rate can be set (e.g. only quantization or const sparsity).
    """
    params = AccuracyAwareParams.from_config(config)
    if not ctrl.algorithms:
        raise UsageError(
            "accuracy-aware training needs a controller with at least one compression algorithm"
        )
    if params.mode == "adaptive_compression_level" and not has_settable_rate(ctrl):
        names = [a.name for a in ctrl.algorithms]
        raise UsageError(
            f"{SECTION}.mode: 'adaptive_compression_level' sets the compression rate, and none "
            f"of {names} has one to set; use magnitude/RB sparsity or filter pruning, or mode "
            "'early_exit'"
        )
    return AccuracyAwareTrainingLoop(
        params,
        ctrl,
        uncompressed_model_accuracy=uncompressed_model_accuracy,
        minimal_compression_rate=minimal_compression_rate,
        maximal_compression_rate=maximal_compression_rate,
        verbose=verbose,
        console=console,
    )
