"""The ``adaptive_compression_level`` mode: the search over ``ctrl.compression_rate``.

It follows an initial `early_exit` phase with the scheduler on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nncf_jax.accuracy_aware.history import EpochRecord, StopReason
from nncf_jax.accuracy_aware.state import State, copy_state
from nncf_jax.core.algorithm import CompressionAlgorithm

if TYPE_CHECKING:
    from nncf_jax.accuracy_aware.run import Run

# Rates are sums of float steps (0.5 + 0.1 = 0.6000000000000001); rounding
# keeps them equal to the numbers a person would write.
RATE_DIGITS = 9


def has_settable_rate(ctrl: Any) -> bool:
    """Whether one of the controller's algorithms overrides ``set_compression_rate``."""
    return any(
        type(a).set_compression_rate is not CompressionAlgorithm.set_compression_rate
        for a in ctrl.algorithms
    )


def rank(record: EpochRecord) -> tuple:
    """Larger is better: the highest rate within tolerance, then the most accurate."""
    if record.within_tolerance:
        return (1, record.compression_rate or 0.0, record.accuracy)
    return (0, record.accuracy, 0.0)


def criterion_met(best: EpochRecord) -> bool:
    """Whether the best state is within tolerance."""
    return best.within_tolerance


def set_rate(run: Run, state: State, rate: float) -> State:
    """``state`` with the scheduler disabled and the compression rate set to ``rate``."""
    run.sync(state)
    run.ctrl.disable_scheduler()
    run.ctrl.compression_rate = rate
    return {**state, "cstate": run.ctrl.state}


def search(run: Run, state: State) -> tuple[State, StopReason]:
    """Searches the rate from ``state``; returns the last state and why it stopped."""
    p = run.p
    loop = run.loop
    # NNCF's first move: up from the best state within tolerance, or down
    # from the current one when none is.
    accepted = run.best is not None and run.best.within_tolerance
    rate = (run.best if accepted else loop.history[-1]).compression_rate or 0.0
    run.sync(state)
    run.ctrl.disable_scheduler()
    state = {**state, "cstate": run.ctrl.state}
    step, lr_scale, previous = p.initial_compression_rate_step, 1.0, None
    while True:
        direction = 1 if accepted else -1
        if previous is not None and direction != previous:
            step *= p.compression_rate_step_reduction_factor
            lr_scale *= p.lr_reduction_factor
        previous = direction
        if step < p.minimal_compression_rate_step:
            return state, "minimal_step"
        target = round(rate + direction * step, RATE_DIGITS)
        if target < loop.minimal_compression_rate:
            return state, "minimal_rate"
        if target > loop.maximal_compression_rate:
            if accepted and rate >= loop.maximal_compression_rate:
                return state, "maximal_rate"
            target = loop.maximal_compression_rate
        if run.epoch >= p.maximal_total_epochs:
            return state, "maximal_total_epochs"
        # Every rate starts from the best state within tolerance so far
        # (NNCF's load_best_checkpoint); its masks are re-derived at the new rate.
        if run.best is not None and run.best.within_tolerance and run.best_state is not None:
            state = copy_state(run.best_state)
        state = run.configure(set_rate(run, state, target), lr_scale)
        rate, accepted = target, False
        for patience in range(1, p.patience_epochs + 1):
            if run.epoch >= p.maximal_total_epochs:
                return state, "maximal_total_epochs"
            state = run.train(state)
            accuracy, stage = run.validate(state)
            accepted = accuracy >= run.minimal
            action = (
                "accept" if accepted else "reject" if patience == p.patience_epochs else "retry"
            )
            run.record(state, accuracy, stage, phase="search", rate=rate, action=action, step=step)
            if accepted:
                break
