"""The compression state: the pytree that lives beside the params.

`CompressionState` holds everything that changes during training: NNCF's
scheduler counters and, per algorithm, its arrays (masks, levels, ...). It is
a frozen `flax.struct` dataclass, so it passes through `jax.jit`, shards
like any pytree and is saved by orbax. Its structure and dtypes never change
after `create_compressed_model`, so a jitted step compiles once.

The counter functions here are the single implementation of NNCF's
``scheduler.step()`` / ``epoch_step()`` timing; both the host-side facade and
the jitted `ctrl.transform` call them.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import struct

__all__ = ["Clock", "CompressionState", "clock_at_iteration", "epoch_step_clock", "step_clock"]


class Clock(struct.PyTreeNode):
    """NNCF's scheduler counters.

    Attributes:
      step: int32 scalar, ``scheduler.current_step``; -1 before the first ``step()``.
      epoch: int32 scalar, ``scheduler.current_epoch``; -1 before the first ``epoch_step()``.
      steps_in_epoch: int32 scalar, ``step()`` calls since the last ``epoch_step()``.
    """

    step: jnp.ndarray
    epoch: jnp.ndarray
    steps_in_epoch: jnp.ndarray

    @classmethod
    def initial(cls) -> Clock:
        return cls(step=jnp.int32(-1), epoch=jnp.int32(-1), steps_in_epoch=jnp.int32(0))


def epoch_step_clock(clock: Clock, next_epoch: int | jnp.ndarray | None = None) -> Clock:
    """NNCF ``epoch_step``: ``epoch += 1`` (or ``= next_epoch``); restarts the in-epoch count."""
    epoch = clock.epoch + 1 if next_epoch is None else jnp.asarray(next_epoch, jnp.int32)
    return clock.replace(epoch=jnp.int32(epoch), steps_in_epoch=jnp.int32(0))


def step_clock(clock: Clock, next_step: int | jnp.ndarray | None = None) -> Clock:
    """NNCF ``step``: ``step += 1`` (or ``= next_step``); one more step in this epoch."""
    step = clock.step + 1 if next_step is None else jnp.asarray(next_step, jnp.int32)
    return clock.replace(step=jnp.int32(step), steps_in_epoch=clock.steps_in_epoch + 1)


def clock_at_iteration(iteration: jnp.ndarray, steps_per_epoch: int) -> Clock:
    """The counters NNCF has at the start of global iteration ``iteration`` (0-based).

    That is after ``iteration // steps_per_epoch + 1`` epoch steps and
    ``iteration + 1`` steps, with ``iteration % steps_per_epoch + 1`` steps in
    the current epoch.
    """
    iteration = jnp.asarray(iteration, jnp.int32)
    return Clock(
        step=iteration,
        epoch=iteration // steps_per_epoch,
        steps_in_epoch=iteration % steps_per_epoch + 1,
    )


class CompressionState(struct.PyTreeNode):
    """Everything compression changes during training, as one pytree.

    Attributes:
      clock: NNCF's scheduler counters (`Clock`).
      scheduler_enabled: bool scalar; False after ``ctrl.disable_scheduler()``
        (levels and masks then stay where they are).
      algorithms: ``{algorithm name: that algorithm's state pytree}``, in the
        order of the config's ``compression`` list. Leaves that belong to a
        parameter (masks, ...) sit at the parameter's path.
    """

    clock: Clock
    scheduler_enabled: jnp.ndarray
    algorithms: dict[str, Any]

    @property
    def step(self) -> jnp.ndarray:
        return self.clock.step

    @property
    def epoch(self) -> jnp.ndarray:
        return self.clock.epoch
