"""The ``early_exit`` mode: train until within tolerance and FULLY compressed.

Its phase is also the initial phase of ``adaptive_compression_level``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from nncf_jax.accuracy_aware.history import EpochRecord
from nncf_jax.accuracy_aware.state import State
from nncf_jax.core.stage import CompressionStage

if TYPE_CHECKING:
    from nncf_jax.accuracy_aware.run import Run


def level(ctrl: Any) -> float | None:
    """The level the scheduler holds, which is what the rate setter takes."""
    for attribute in ("current_sparsity_level", "current_pruning_level"):
        try:
            value = getattr(ctrl.scheduler, attribute)
        except AttributeError:
            continue
        # A float32 level read back (0.30000001192...) as the number it stands for.
        return float(str(np.float32(value)))
    return ctrl.compression_rate


def rank(record: EpochRecord) -> tuple:
    """Larger is better: FULLY compressed within tolerance, then FULLY, then by accuracy."""
    fully = record.stage == CompressionStage.FULLY_COMPRESSED
    tier = 2 if fully and record.within_tolerance else int(fully)
    return (tier, record.accuracy)


def criterion_met(best: EpochRecord) -> bool:
    """Whether the best state is within tolerance and FULLY compressed."""
    return best.within_tolerance and best.stage == CompressionStage.FULLY_COMPRESSED


def run_phase(run: Run, state: State, *, phase: str, limit: int) -> tuple[State, bool]:
    """Validates, then trains until the criterion or ``limit`` total epochs.

    Returns the last state and whether the criterion was met.
    """

    def met(accuracy, stage):
        return accuracy >= run.minimal and stage == CompressionStage.FULLY_COMPRESSED

    accuracy, stage = run.validate(state)
    while True:
        done = met(accuracy, stage)
        action = "criterion met" if done else "epoch limit" if run.epoch >= limit else "continue"
        run.record(state, accuracy, stage, phase=phase, rate=level(run.ctrl), action=action)
        if done or run.epoch >= limit:
            return state, done
        state = run.train(state)
        accuracy, stage = run.validate(state)
