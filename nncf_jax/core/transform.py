"""The scheduler as an optax transformation whose state is the compression state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optax

from nncf_jax.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from nncf_jax.core.controller import CompressionController

__all__ = ["compression_transform"]


_NO_EPOCHS = 2**30  # steps per epoch when no algorithm schedules by epochs


def compression_transform(ctrl: CompressionController) -> optax.GradientTransformationExtraArgs:
    """``ctrl.transform``: one scheduler tick per optimizer step, inside jit.

    ``init(params)`` returns the initial `CompressionState` (counters at -1,
    level ``sparsity_init``). ``update(updates, state, params)``:

    1. holds compressed-away weights still (zeroes their updates);
    2. advances NNCF's counters to the next iteration, deriving the epoch
       from ``steps_per_epoch``: the state it returns is what
       ``scheduler.epoch_step()`` / ``scheduler.step()`` would give at the
       start of the next iteration, so call it once per iteration, after the
       gradients (the first iteration runs on the initial state, whose level
       is ``sparsity_init``);
    3. recomputes levels and, when the schedule says so, masks from
       ``params + updates`` (the params the next iteration will see), under
       ``lax.cond``: no host sync, no recompilation.

    Raises:
      ConfigError: no ``steps_per_epoch`` is known (set it in the config's
        ``params`` or pass it to `create_compressed_model`) and an algorithm
        schedules by epochs.
    """
    steps_per_epoch = ctrl.steps_per_epoch
    if steps_per_epoch is None and not any(a.epoch_scheduled for a in ctrl.algorithms):
        # Nothing follows epochs (quantization, distillation): the step counter
        # still advances, the epoch stays 0.
        steps_per_epoch = _NO_EPOCHS
    if steps_per_epoch is None:
        raise ConfigError(
            "params.steps_per_epoch",
            "ctrl.transform derives epochs from optimizer steps and needs steps_per_epoch: "
            "pass steps_per_epoch=len(train_batches) to create_compressed_model or set "
            "params.steps_per_epoch in the algorithm section",
        )

    def init_fn(params: Any):
        return ctrl.init_state(params)

    def update_fn(updates: Any, state: Any, params: Any = None, **extra_args: Any):
        del extra_args
        if params is None:
            raise UsageError(
                "ctrl.transform.update needs params: call update(updates, state, params)"
            )
        updates = ctrl.filter_updates(updates, state)
        state = ctrl.tick(state, lambda: optax.apply_updates(params, updates), steps_per_epoch)
        return updates, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
