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
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jax
import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table

from nncf_jax.checkpoint import CheckpointManager
from nncf_jax.config import NNCFConfig
from nncf_jax.config.schema import ACCURACY_AWARE_SCHEMA
from nncf_jax.core.algorithm import CompressionAlgorithm
from nncf_jax.core.stage import CompressionStage
from nncf_jax.errors import ConfigError, UsageError

__all__ = [
    "AccuracyAwareParams",
    "AccuracyAwareResult",
    "AccuracyAwareTrainingLoop",
    "EpochRecord",
    "create_accuracy_aware_training_loop",
]

State = dict[str, Any]
StopReason = Literal[
    "criterion_met",
    "maximal_total_epochs",
    "minimal_step",
    "minimal_rate",
    "maximal_rate",
]

_SECTION = "accuracy_aware_training"
_MODES = ("early_exit", "adaptive_compression_level")
# Rates are sums of float steps (0.5 + 0.1 = 0.6000000000000001); rounding
# keeps them equal to the numbers a person would write.
_RATE_DIGITS = 9


def _schema_default(key: str) -> Any:
    return ACCURACY_AWARE_SCHEMA["properties"]["params"]["properties"][key].get("default")


@dataclass(frozen=True)
class AccuracyAwareParams:
    """The ``accuracy_aware_training`` section, parsed, with its defaults.

    Exactly one of the two degradations is set. Keys of the adaptive mode keep
    their schema defaults in ``early_exit``, where they are unused.

    Attributes:
      mode: ``"early_exit"`` or ``"adaptive_compression_level"``.
      maximal_relative_accuracy_degradation: allowed drop in percent of the
        uncompressed accuracy, or None.
      maximal_absolute_accuracy_degradation: allowed drop in accuracy units, or None.
      maximal_total_epochs: epochs trained at most, over all phases.
      initial_training_phase_epochs: epochs with the scheduler before the search.
      patience_epochs: epochs a rate may train to get within tolerance.
      initial_compression_rate_step: the first step of the rate search.
      compression_rate_step_reduction_factor: step multiplier on a direction flip.
      lr_reduction_factor: learning-rate-scale multiplier on a direction flip.
      minimal_compression_rate_step: the search stops below this step.
    """

    mode: str
    maximal_relative_accuracy_degradation: float | None
    maximal_absolute_accuracy_degradation: float | None
    maximal_total_epochs: int
    initial_training_phase_epochs: int
    patience_epochs: int
    initial_compression_rate_step: float
    compression_rate_step_reduction_factor: float
    lr_reduction_factor: float
    minimal_compression_rate_step: float

    @classmethod
    def from_config(cls, config: NNCFConfig | Mapping[str, Any]) -> AccuracyAwareParams:
        """Parses ``config["accuracy_aware_training"]``.

        Args:
          config: an `NNCFConfig` or a config dict (validated here).

        Raises:
          ConfigError: the section is missing or invalid (the message names
            its JSON path).
        """
        if not isinstance(config, NNCFConfig):
            config = NNCFConfig.from_dict(config)
        else:
            config.validate()
        section = config.resolved_accuracy_aware_training()
        if section is None:
            raise ConfigError(
                _SECTION,
                "accuracy-aware training needs this section: "
                '{"mode": "early_exit" | "adaptive_compression_level", '
                '"params": {"maximal_relative_accuracy_degradation": 1.0}}',
            )
        params = section["params"]

        def get(key: str) -> Any:
            return params.get(key, _schema_default(key))

        def number(key: str) -> float | None:
            value = params.get(key)
            return None if value is None else float(value)

        return cls(
            mode=section["mode"],
            maximal_relative_accuracy_degradation=number("maximal_relative_accuracy_degradation"),
            maximal_absolute_accuracy_degradation=number("maximal_absolute_accuracy_degradation"),
            maximal_total_epochs=int(get("maximal_total_epochs")),
            initial_training_phase_epochs=int(get("initial_training_phase_epochs")),
            patience_epochs=int(get("patience_epochs")),
            initial_compression_rate_step=float(get("initial_compression_rate_step")),
            compression_rate_step_reduction_factor=float(
                get("compression_rate_step_reduction_factor")
            ),
            lr_reduction_factor=float(get("lr_reduction_factor")),
            minimal_compression_rate_step=float(get("minimal_compression_rate_step")),
        )

    def minimal_tolerable_accuracy(self, uncompressed_accuracy: float) -> float:
        r"""The lowest accuracy within tolerance.

        :math:`a_0 - \delta_{abs}` with an absolute degradation, else
        :math:`a_0 (1 - \delta_{rel} / 100)`.
        """
        if self.maximal_absolute_accuracy_degradation is not None:
            return uncompressed_accuracy - self.maximal_absolute_accuracy_degradation
        relative = self.maximal_relative_accuracy_degradation or 0.0
        return uncompressed_accuracy * (1.0 - 0.01 * relative)


@dataclass(frozen=True)
class EpochRecord:
    """One validation of the loop.

    Attributes:
      epoch: epochs trained so far over the whole run (0: before training).
      phase: ``"early_exit"``, ``"initial"`` (adaptive mode, scheduler on) or
        ``"search"`` (adaptive mode, rate set by the loop).
      compression_rate: the level in force: the scheduler's sparsity or
        pruning level, or in the search the rate the loop set (None for an
        algorithm without a rate). Not ``ctrl.compression_rate``, which for
        sparsity counts the zeros of all params, biases included.
      accuracy: what ``validate_fn`` returned.
      accuracy_budget: accuracy minus the minimal tolerable accuracy.
      stage: ``ctrl.compression_stage()``.
      action: what the loop did next: ``"continue"``, ``"criterion met"``
        (early exit), ``"accept"``, ``"retry"`` or ``"reject"`` (search).
      best: whether this state became the best so far.
      compression_rate_step: the search step that led to this rate (search only).
    """

    epoch: int
    phase: str
    compression_rate: float | None
    accuracy: float
    accuracy_budget: float
    stage: CompressionStage
    action: str
    best: bool
    compression_rate_step: float | None = None

    @property
    def within_tolerance(self) -> bool:
        """Whether the accuracy budget is >= 0."""
        return self.accuracy_budget >= 0.0


@dataclass(frozen=True)
class AccuracyAwareResult:
    """What `AccuracyAwareTrainingLoop.run` returns.

    Attributes:
      state: the best state (see the module doc for "best"); the
        controller's handles are synced to it. In ``adaptive_compression_level``
        its scheduler is disabled.
      compression_rate: its compression rate (level).
      accuracy: its accuracy.
      epoch: the epoch it was validated at.
      criterion_met: whether it is within tolerance (and, in ``early_exit``,
        FULLY compressed).
      stop_reason: ``"criterion_met"``, ``"maximal_total_epochs"``,
        ``"minimal_step"``, ``"minimal_rate"`` or ``"maximal_rate"``.
      uncompressed_accuracy: the reference accuracy.
      minimal_tolerable_accuracy: the lowest accuracy within tolerance.
      history: every validation, in order.
      last_state: the state after the last epoch trained.
    """

    state: State
    compression_rate: float | None
    accuracy: float
    epoch: int
    criterion_met: bool
    stop_reason: StopReason
    uncompressed_accuracy: float
    minimal_tolerable_accuracy: float
    history: tuple[EpochRecord, ...]
    last_state: State


_STAGE_NAMES = {
    CompressionStage.UNCOMPRESSED: "none",
    CompressionStage.PARTIALLY_COMPRESSED: "partial",
    CompressionStage.FULLY_COMPRESSED: "full",
}


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _finite(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{what}: expected a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise UsageError(f"{what}: expected a finite number, got {value!r}")
    return number


def _checked_state(state: Any, what: str) -> State:
    if not isinstance(state, Mapping) or "variables" not in state or "cstate" not in state:
        got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
        raise UsageError(
            f"{what}: expected a dict with keys 'variables' and 'cstate' (plus 'opt_state' or "
            f"anything else your train step carries), got {got}"
        )
    return dict(state)


def _copy(state: State) -> State:
    """A copy whose arrays survive a train step that donates its input buffers."""
    return jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, state)


def _has_settable_rate(ctrl: Any) -> bool:
    return any(
        type(a).set_compression_rate is not CompressionAlgorithm.set_compression_rate
        for a in ctrl.algorithms
    )


def _level(ctrl: Any) -> float | None:
    """The level the scheduler holds, which is what the rate setter takes."""
    for attribute in ("current_sparsity_level", "current_pruning_level"):
        try:
            value = getattr(ctrl.scheduler, attribute)
        except AttributeError:
            continue
        # A float32 level read back (0.30000001192...) as the number it stands for.
        return float(str(np.float32(value)))
    return ctrl.compression_rate


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
            else _finite(uncompressed_model_accuracy, "uncompressed_model_accuracy")
        )
        low = _finite(minimal_compression_rate, "minimal_compression_rate")
        high = _finite(maximal_compression_rate, "maximal_compression_rate")
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
        """Trains until the mode's stop condition; see the module doc.

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
        state = _checked_state(state, "state")
        if self.uncompressed_model_accuracy is not None:
            reference = self.uncompressed_model_accuracy
        elif validate_uncompressed_fn is not None:
            reference = _finite(validate_uncompressed_fn(state), "validate_uncompressed_fn")
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
        run = _Run(
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
        adaptive = self.mode == "adaptive_compression_level"
        table = Table(
            title=f"Accuracy-aware training ({self.mode})",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
        )
        for column in ("Epoch", "Phase", "Rate", "Step", "Accuracy", "Budget", "Stage", "Action"):
            if column == "Step" and not adaptive:
                continue
            left = column in ("Phase", "Stage", "Action")
            table.add_column(
                column, justify="left" if left else "right", no_wrap=column == "Action"
            )
        for r in self._history:
            best = r.epoch == best_epoch
            cells = [
                f"{r.epoch}{'*' if best else ''}",
                r.phase,
                _number(r.compression_rate),
                _number(r.compression_rate_step),
                f"{r.accuracy:.4f}",
                f"{r.accuracy_budget:+.4f}",
                _STAGE_NAMES[r.stage],
                r.action,
            ]
            if not adaptive:
                del cells[3]
            table.add_row(*cells, style="bold" if best else None)
        return table

    def _print_summary(self) -> None:
        r = self._result
        if r is None:
            return
        self.console.print(self.history_table())
        self.console.print(
            f"best (*): epoch {r.epoch}, rate {_number(r.compression_rate)}, accuracy "
            f"{r.accuracy:.4f}; criterion {'met' if r.criterion_met else 'NOT met'}\n"
            f"stopped: {r.stop_reason}; uncompressed accuracy {r.uncompressed_accuracy:.4f}, "
            f"minimal tolerable {r.minimal_tolerable_accuracy:.4f}",
            markup=False,
        )


class _Run:
    """The mutable bookkeeping of one `AccuracyAwareTrainingLoop.run`."""

    def __init__(
        self,
        loop,
        *,
        reference,
        train_epoch_fn,
        validate_fn,
        configure_optimizers_fn,
        dump_checkpoint_fn,
        manager,
    ):
        self.loop = loop
        self.ctrl = loop.ctrl
        self.p: AccuracyAwareParams = loop.params
        self.reference = reference
        self.minimal = self.p.minimal_tolerable_accuracy(reference)
        self.train_epoch_fn = train_epoch_fn
        self.validate_fn = validate_fn
        self.configure_optimizers_fn = configure_optimizers_fn
        self.dump_checkpoint_fn = dump_checkpoint_fn
        self.manager = manager
        self.epoch = 0
        self.best: EpochRecord | None = None
        self.best_key: tuple = ()
        self.best_state: State | None = None

    # --- steps --------------------------------------------------------------

    def sync(self, state: State) -> None:
        self.ctrl.sync(state["variables"], state["cstate"])

    def train(self, state: State) -> State:
        state = _checked_state(
            self.train_epoch_fn(state, self.epoch), f"train_epoch_fn (epoch {self.epoch})"
        )
        self.epoch += 1
        return state

    def configure(self, state: State, lr_scale: float) -> State:
        if self.configure_optimizers_fn is None:
            return state
        return _checked_state(
            self.configure_optimizers_fn(state, lr_scale), "configure_optimizers_fn"
        )

    def validate(self, state: State) -> tuple[float, CompressionStage]:
        self.sync(state)
        accuracy = _finite(self.validate_fn(state), f"validate_fn (epoch {self.epoch})")
        return accuracy, self.ctrl.compression_stage()

    def _rank(self, record: EpochRecord) -> tuple:
        if self.p.mode == "early_exit":
            fully = record.stage == CompressionStage.FULLY_COMPRESSED
            tier = 2 if fully and record.within_tolerance else int(fully)
            return (tier, record.accuracy)
        if record.within_tolerance:
            return (1, record.compression_rate or 0.0, record.accuracy)
        return (0, record.accuracy, 0.0)

    def record(self, state: State, accuracy, stage, *, phase, rate, action, step=None):
        record = EpochRecord(
            epoch=self.epoch,
            phase=phase,
            compression_rate=rate,
            accuracy=accuracy,
            accuracy_budget=accuracy - self.minimal,
            stage=stage,
            action=action,
            best=False,
            compression_rate_step=step,
        )
        key = self._rank(record)
        if self.best is None or key > self.best_key:
            record = dataclasses.replace(record, best=True)
            self.best, self.best_key, self.best_state = record, key, _copy(state)
            if self.manager is not None:
                self.manager.save(
                    record.epoch,
                    ctrl=self.ctrl,
                    variables=self.best_state["variables"],
                    cstate=self.best_state["cstate"],
                    opt_state=self.best_state.get("opt_state"),
                )
        self.loop._history.append(record)
        if self.dump_checkpoint_fn is not None:
            self.dump_checkpoint_fn(state, record)
        if self.loop.verbose:
            self.loop.console.print(
                f"epoch {record.epoch} {phase}: rate {_number(rate)}, accuracy {accuracy:.4f} "
                f"(budget {record.accuracy_budget:+.4f}), {_STAGE_NAMES[stage]} -> {action}"
                + (" [best]" if record.best else ""),
                markup=False,
            )
        return record

    # --- phases -------------------------------------------------------------

    def early_exit(self, state: State, *, phase: str, limit: int) -> tuple[State, bool]:
        """Validates, then trains until the criterion or ``limit`` total epochs.

        Returns the last state and whether the criterion was met.
        """

        def met(accuracy, stage):
            return accuracy >= self.minimal and stage == CompressionStage.FULLY_COMPRESSED

        accuracy, stage = self.validate(state)
        while True:
            done = met(accuracy, stage)
            action = (
                "criterion met" if done else "epoch limit" if self.epoch >= limit else "continue"
            )
            self.record(state, accuracy, stage, phase=phase, rate=_level(self.ctrl), action=action)
            if done or self.epoch >= limit:
                return state, done
            state = self.train(state)
            accuracy, stage = self.validate(state)

    def set_rate(self, state: State, rate: float) -> State:
        self.sync(state)
        self.ctrl.disable_scheduler()
        self.ctrl.compression_rate = rate
        return {**state, "cstate": self.ctrl.state}

    def search(self, state: State) -> tuple[State, StopReason]:
        p = self.p
        # NNCF's first move: up from the best state within tolerance, or down
        # from the current one when none is.
        accepted = self.best is not None and self.best.within_tolerance
        rate = (self.best if accepted else self.loop.history[-1]).compression_rate or 0.0
        self.sync(state)
        self.ctrl.disable_scheduler()
        state = {**state, "cstate": self.ctrl.state}
        step, lr_scale, previous = p.initial_compression_rate_step, 1.0, None
        while True:
            direction = 1 if accepted else -1
            if previous is not None and direction != previous:
                step *= p.compression_rate_step_reduction_factor
                lr_scale *= p.lr_reduction_factor
            previous = direction
            if step < p.minimal_compression_rate_step:
                return state, "minimal_step"
            target = round(rate + direction * step, _RATE_DIGITS)
            if target < self.loop.minimal_compression_rate:
                return state, "minimal_rate"
            if target > self.loop.maximal_compression_rate:
                if accepted and rate >= self.loop.maximal_compression_rate:
                    return state, "maximal_rate"
                target = self.loop.maximal_compression_rate
            if self.epoch >= p.maximal_total_epochs:
                return state, "maximal_total_epochs"
            # Every rate starts from the best state within tolerance so far
            # (NNCF's load_best_checkpoint); its masks are re-derived at the new rate.
            if self.best is not None and self.best.within_tolerance and self.best_state is not None:
                state = _copy(self.best_state)
            state = self.configure(self.set_rate(state, target), lr_scale)
            rate, accepted = target, False
            for patience in range(1, p.patience_epochs + 1):
                if self.epoch >= p.maximal_total_epochs:
                    return state, "maximal_total_epochs"
                state = self.train(state)
                accuracy, stage = self.validate(state)
                accepted = accuracy >= self.minimal
                action = (
                    "accept" if accepted else "reject" if patience == p.patience_epochs else "retry"
                )
                self.record(
                    state, accuracy, stage, phase="search", rate=rate, action=action, step=step
                )
                if accepted:
                    break

    def run(self, state: State) -> AccuracyAwareResult:
        p = self.p
        state = self.configure(state, 1.0)
        if p.mode == "early_exit":
            state, met = self.early_exit(state, phase="early_exit", limit=p.maximal_total_epochs)
            reason: StopReason = "criterion_met" if met else "maximal_total_epochs"
        else:
            limit = min(p.initial_training_phase_epochs, p.maximal_total_epochs)
            state, _ = self.early_exit(state, phase="initial", limit=limit)
            if self.epoch >= p.maximal_total_epochs:
                reason = "maximal_total_epochs"
            else:
                state, reason = self.search(state)
        best, best_state = self.best, self.best_state
        assert best is not None and best_state is not None  # epoch 0 is always recorded
        if p.mode == "adaptive_compression_level":
            # NNCF's adaptive loop leaves the scheduler disabled, also when the
            # best state is from the initial phase: its rate is the result.
            self.sync(best_state)
            self.ctrl.disable_scheduler()
            best_state = {**best_state, "cstate": self.ctrl.state}
        self.sync(best_state)
        if p.mode == "early_exit":
            met = best.within_tolerance and best.stage == CompressionStage.FULLY_COMPRESSED
        else:
            met = best.within_tolerance
        return AccuracyAwareResult(
            state=best_state,
            compression_rate=best.compression_rate,
            accuracy=best.accuracy,
            epoch=best.epoch,
            criterion_met=met,
            stop_reason=reason,
            uncompressed_accuracy=self.reference,
            minimal_tolerable_accuracy=self.minimal,
            history=tuple(self.loop._history),
            last_state=state,
        )


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
    if params.mode == "adaptive_compression_level" and not _has_settable_rate(ctrl):
        names = [a.name for a in ctrl.algorithms]
        raise UsageError(
            f"{_SECTION}.mode: 'adaptive_compression_level' sets the compression rate, and none "
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
