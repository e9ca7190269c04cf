"""NNCF's scheduler facade: ``ctrl.scheduler.step()`` / ``epoch_step()``.

For users porting NNCF scripts. It advances the controller's state handle
(``ctrl.state``) with the same jitted functions the optax-style
``ctrl.transform`` uses, reading the params from ``ctrl.params`` (sync both
after your train step: ``ctrl.sync(variables, cstate)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nncf_jax.core.controller import CompressionController

__all__ = ["Scheduler"]


class Scheduler:
    """Host-side view of the scheduler part of a controller's state."""

    def __init__(self, ctrl: CompressionController):
        self._ctrl = ctrl

    def step(self, next_step: int | None = None) -> None:
        """NNCF ``step``: call at the start of every training iteration."""
        self._ctrl._facade_tick(next_step=next_step, event="step")

    def epoch_step(self, next_epoch: int | None = None) -> None:
        """NNCF ``epoch_step``: call at the start of every epoch."""
        self._ctrl._facade_tick(next_step=next_epoch, event="epoch")

    @property
    def current_step(self) -> int:
        """Steps taken over the whole run, -1 before the first ``step()``."""
        return int(self._ctrl.state.clock.step)

    @property
    def current_epoch(self) -> int:
        """Epochs started, -1 before the first ``epoch_step()``."""
        return int(self._ctrl.state.clock.epoch)

    @property
    def current_sparsity_level(self) -> float:
        """The scheduled sparsity level of the controller's sparsity algorithm."""
        return self._ctrl._scheduled_level("sparsity")

    @property
    def current_pruning_level(self) -> float:
        """The scheduled pruning level of the controller's pruning algorithm."""
        return self._ctrl._scheduled_level("pruning")

    def get_state(self) -> dict[str, Any]:
        """``{"current_step": int, "current_epoch": int}``; ``{}`` once disabled."""
        if not bool(self._ctrl.state.scheduler_enabled):
            return {}
        return {"current_step": self.current_step, "current_epoch": self.current_epoch}

    def load_state(self, state: dict[str, Any]) -> None:
        """Sets the counters (and re-derives levels and masks) from `get_state` output."""
        self._ctrl._load_counters(state)
