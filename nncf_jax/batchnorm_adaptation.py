"""Batch-norm adaptation: re-estimate ``batch_stats`` through the compressed forward.

NNCF's ``initializer.batchnorm_adaptation``: after compression changes the
weights (and puts quantizers on activations), the running statistics of
the batch-norm layers no longer match what they normalise. Running
calibration batches through the *compressed* model with the batch-norm
layers in training mode re-estimates them; nothing else changes.

nncf-jax is functional: NNCF adapts the model in place inside
``create_compressed_model``, here `adapt_batchnorm` (or
``ctrl.adapt_batchnorm``) returns new variables.

The running statistics become the plain average of the per-batch
statistics over the batches seen (the first batch replaces the old values,
batch ``t`` is weighted ``1/t``), which is what a cumulative moving average
gives and what NNCF's adaptation approximates with its momentum schedule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from nncf_jax.core.init_data import as_call
from nncf_jax.core.init_data import num_samples as samples_in
from nncf_jax.errors import NNCFJaxError, UsageError

__all__ = ["adapt_batchnorm"]


def _training_batchnorm(momentum: Any):
    """Interceptor: every ``nn.BatchNorm`` call in training mode with ``momentum``."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if not isinstance(module, nn.BatchNorm) or context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        saved = (module.momentum, module.use_running_average)
        # The bound clone lives for this call only; restored right after.
        object.__setattr__(module, "momentum", momentum)
        if kwargs.get("use_running_average") is not None or len(args) > 1:
            if len(args) > 1:
                args = (args[0], False, *args[2:])
            else:
                kwargs = {**kwargs, "use_running_average": False}
        else:
            object.__setattr__(module, "use_running_average", False)
        try:
            return next_fun(*args, **kwargs)
        finally:
            object.__setattr__(module, "momentum", saved[0])
            object.__setattr__(module, "use_running_average", saved[1])

    return interceptor


def adapt_batchnorm(
    ctrl: Any,
    variables: Mapping[str, Any],
    cstate: Any,
    batches: Iterable[Any],
    *,
    num_samples: int = 2000,
) -> dict[str, Any]:
    """New ``batch_stats`` estimated through the compressed forward.

    Args:
      ctrl: the controller (its ``apply`` is the compressed forward).
      variables: linen variables with a ``batch_stats`` collection.
      cstate: the compression state the forward uses.
      batches: model inputs (an array, or a tuple of positional inputs, per
        item); read until ``num_samples`` samples were seen.
      num_samples: NNCF's ``num_bn_adaptation_samples``; 0 returns
        ``variables`` unchanged.

    Returns:
      ``{**variables, "batch_stats": adapted}``; params are untouched.

    Raises:
      UsageError: no ``batch_stats`` collection, no batch, or the model
        cannot run on a batch.
    """
    if not isinstance(variables, Mapping) or "batch_stats" not in variables:
        raise UsageError(
            "batch-norm adaptation needs linen variables with a 'batch_stats' collection "
            "(the model has no nn.BatchNorm, or these are not model.init(...) variables)"
        )
    if num_samples <= 0:
        return dict(variables)

    @jax.jit
    def step(variables, cstate, args, momentum):
        with nn.intercept_methods(_training_batchnorm(momentum)):
            _, updates = ctrl.apply(variables, cstate, *args, mutable=["batch_stats"])
        return {**variables, "batch_stats": updates["batch_stats"]}

    seen, steps = 0, 0
    out = dict(variables)
    for i, batch in enumerate(batches):
        if seen >= num_samples:
            break
        args = as_call(batch)
        # Cumulative average: batch t (0-based) gets weight 1 / (t + 1).
        momentum = np.float32(steps / (steps + 1))
        try:
            out = step(out, cstate, args, momentum)
        except NNCFJaxError:
            raise
        except Exception as e:
            raise UsageError(
                f"batch-norm adaptation: the compressed model failed on batch {i}: "
                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            ) from e
        seen += samples_in(args)
        steps += 1
    if steps == 0:
        raise UsageError("batch-norm adaptation: the batches were empty")
    return out
