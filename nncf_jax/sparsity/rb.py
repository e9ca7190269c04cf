"""Regularisation-based (RB) sparsity: NNCF's mask and loss functions.

Pure building blocks; the ``rb_sparsity`` algorithm that trains the logits
is assembled from them. One logit ``m`` per weight, initialised to
``logit(0.99)``. Training mask: ``sigmoid(m + logit(u)) > 0.5`` with
``u ~ U(1e-6, 1 - 1e-6)`` and a straight-through (identity) gradient;
eval/frozen mask: ``sigmoid(m) > 0.5``. Loss with ``p = 0.05``:
``(sum_l sum(mask_l) / N - (1 - level))**2 / p**2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

__all__ = ["RB_INITIAL_LOGIT", "rb_eval_mask", "rb_sparsity_loss", "rb_training_mask"]

RB_INITIAL_LOGIT = math.log(0.99 / 0.01)
_EPS = 1e-6


def rb_eval_mask(logits: jax.Array) -> jax.Array:
    """Deterministic mask ``sigmoid(m) > 0.5`` as float32, shaped like ``logits``."""
    return (logits > 0).astype(jnp.float32)


def rb_training_mask(logits: jax.Array, key: jax.Array) -> jax.Array:
    """Stochastic binary mask with a straight-through gradient to ``logits``.

    Args:
      logits: float array, one logit per weight.
      key: a PRNG key; the same key gives the same mask.

    Returns:
      float32 mask of 0s and 1s shaped like ``logits``; its gradient with
      respect to ``logits`` is that of ``sigmoid(m + logit(u))``.
    """
    u = jax.random.uniform(key, logits.shape, jnp.float32, _EPS, 1.0 - _EPS)
    soft = jax.nn.sigmoid(logits + jnp.log(u) - jnp.log1p(-u))
    hard = (soft > 0.5).astype(jnp.float32)
    return soft + jax.lax.stop_gradient(hard - soft)


def rb_sparsity_loss(
    masks: Sequence[jax.Array], level: jax.Array | float, p: float = 0.05
) -> jax.Array:
    """NNCF's RB loss ``(sum_l sum(mask_l) / N - (1 - level))**2 / p**2``.

    Args:
      masks: the layers' masks (values in [0, 1]).
      level: target sparsity level in [0, 1).
      p: NNCF's fixed scale, 0.05.

    Returns:
      A float32 scalar. All masks at 1 and levels 0.2, 0.4, 0.6 give 16,
      64, 144.
    """
    total = sum(m.size for m in masks)
    kept = sum(jnp.sum(m.astype(jnp.float32)) for m in masks)
    return ((kept / total - (1.0 - jnp.float32(level))) ** 2 / p**2).astype(jnp.float32)
