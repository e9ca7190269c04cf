"""`Run`: the mutable bookkeeping of one `AccuracyAwareTrainingLoop.run`."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from nncf_jax.accuracy_aware import adaptive, early_exit
from nncf_jax.accuracy_aware.history import (
    STAGE_NAMES,
    AccuracyAwareResult,
    EpochRecord,
    StopReason,
    format_number,
)
from nncf_jax.accuracy_aware.params import AccuracyAwareParams
from nncf_jax.accuracy_aware.state import State, checked_state, copy_state, finite
from nncf_jax.core.stage import CompressionStage

if TYPE_CHECKING:
    from nncf_jax.accuracy_aware.loop import AccuracyAwareTrainingLoop


class Run:
    """The mutable bookkeeping of one `AccuracyAwareTrainingLoop.run`.

    It calls the callbacks, records every validation and keeps the best state
    (by the mode's ``rank``); the phases live in `early_exit` and `adaptive`.
    """

    def __init__(
        self,
        loop: AccuracyAwareTrainingLoop,
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
        state = checked_state(
            self.train_epoch_fn(state, self.epoch), f"train_epoch_fn (epoch {self.epoch})"
        )
        self.epoch += 1
        return state

    def configure(self, state: State, lr_scale: float) -> State:
        if self.configure_optimizers_fn is None:
            return state
        return checked_state(
            self.configure_optimizers_fn(state, lr_scale), "configure_optimizers_fn"
        )

    def validate(self, state: State) -> tuple[float, CompressionStage]:
        self.sync(state)
        accuracy = finite(self.validate_fn(state), f"validate_fn (epoch {self.epoch})")
        return accuracy, self.ctrl.compression_stage()

    def _rank(self, record: EpochRecord) -> tuple:
        if self.p.mode == "early_exit":
            return early_exit.rank(record)
        return adaptive.rank(record)

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
            self.best, self.best_key, self.best_state = record, key, copy_state(state)
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
                f"epoch {record.epoch} {phase}: rate {format_number(rate)}, accuracy "
                f"{accuracy:.4f} (budget {record.accuracy_budget:+.4f}), {STAGE_NAMES[stage]} "
                f"-> {action}" + (" [best]" if record.best else ""),
                markup=False,
            )
        return record

    # --- the run ------------------------------------------------------------

    def run(self, state: State) -> AccuracyAwareResult:
        p = self.p
        state = self.configure(state, 1.0)
        if p.mode == "early_exit":
            state, met = early_exit.run_phase(
                self, state, phase="early_exit", limit=p.maximal_total_epochs
            )
            reason: StopReason = "criterion_met" if met else "maximal_total_epochs"
        else:
            limit = min(p.initial_training_phase_epochs, p.maximal_total_epochs)
            state, _ = early_exit.run_phase(self, state, phase="initial", limit=limit)
            if self.epoch >= p.maximal_total_epochs:
                reason = "maximal_total_epochs"
            else:
                state, reason = adaptive.search(self, state)
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
            met = early_exit.criterion_met(best)
        else:
            met = adaptive.criterion_met(best)
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
