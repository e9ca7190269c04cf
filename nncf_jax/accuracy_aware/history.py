"""What a run records: `EpochRecord` per validation, `AccuracyAwareResult`, the history table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich import box
from rich.table import Table

from nncf_jax.accuracy_aware.state import State
from nncf_jax.core.stage import CompressionStage

__all__ = ["AccuracyAwareResult", "EpochRecord", "StopReason"]

StopReason = Literal[
    "criterion_met",
    "maximal_total_epochs",
    "minimal_step",
    "minimal_rate",
    "maximal_rate",
]

STAGE_NAMES = {
    CompressionStage.UNCOMPRESSED: "none",
    CompressionStage.PARTIALLY_COMPRESSED: "partial",
    CompressionStage.FULLY_COMPRESSED: "full",
}


def format_number(value: float | None) -> str:
    """``value`` in 4 significant digits, or ``-`` for None."""
    return "-" if value is None else f"{value:.4g}"


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
      state: the best state (see the package doc for "best"); the
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


def history_table(history: Sequence[EpochRecord], mode: str, best_epoch: int | None) -> Table:
    """The history as a ``rich`` table; the ``best_epoch`` is starred and bold."""
    adaptive = mode == "adaptive_compression_level"
    table = Table(
        title=f"Accuracy-aware training ({mode})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    for column in ("Epoch", "Phase", "Rate", "Step", "Accuracy", "Budget", "Stage", "Action"):
        if column == "Step" and not adaptive:
            continue
        left = column in ("Phase", "Stage", "Action")
        table.add_column(column, justify="left" if left else "right", no_wrap=column == "Action")
    for r in history:
        best = r.epoch == best_epoch
        cells = [
            f"{r.epoch}{'*' if best else ''}",
            r.phase,
            format_number(r.compression_rate),
            format_number(r.compression_rate_step),
            f"{r.accuracy:.4f}",
            f"{r.accuracy_budget:+.4f}",
            STAGE_NAMES[r.stage],
            r.action,
        ]
        if not adaptive:
            del cells[3]
        table.add_row(*cells, style="bold" if best else None)
    return table


def summary(r: AccuracyAwareResult) -> str:
    """The lines printed under the history table: the best state and why the run stopped."""
    return (
        f"best (*): epoch {r.epoch}, rate {format_number(r.compression_rate)}, accuracy "
        f"{r.accuracy:.4f}; criterion {'met' if r.criterion_met else 'NOT met'}\n"
        f"stopped: {r.stop_reason}; uncompressed accuracy {r.uncompressed_accuracy:.4f}, "
        f"minimal tolerable {r.minimal_tolerable_accuracy:.4f}"
    )
