"""Regularisation-based (RB) sparsity: NNCF's mask and loss functions.

Pure building blocks; the ``rb_sparsity`` algorithm that trains the logits
(`nncf_jax.sparsity.rb_algorithm`) is assembled from them. One logit ``m``
per weight, initialised to ``logit(0.99)``. Training mask:
``sigmoid(m + logit(u)) > 0.5`` with ``u ~ U(1e-6, 1 - 1e-6)`` and a
straight-through gradient (that of ``sigmoid(m + logit(u))``); eval/frozen
mask: ``sigmoid(m) > 0.5``, i.e. ``m > 0``, straight through ``sigmoid(m)``.
Loss with ``p = 0.05``: ``(sum_l sum(mask_l) / N - (1 - level))**2 / p**2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

__all__ = [
    "RB_INITIAL_LOGIT",
    "rb_binary_mask",
    "rb_eval_mask",
    "rb_local_sparsity_loss",
    "rb_mask",
    "rb_masked_weight",
    "rb_sparsity_loss",
    "rb_training_mask",
    "rb_uniform",
]

RB_INITIAL_LOGIT = math.log(0.99 / 0.01)
_EPS = 1e-6


def rb_eval_mask(logits: jax.Array) -> jax.Array:
    """Deterministic mask ``sigmoid(m) > 0.5`` as float32, shaped like ``logits`` (no gradient)."""
    return (logits > 0).astype(jnp.float32)


@jax.custom_jvp
def _rb_mask(logits: jax.Array, u: jax.Array, sample: jax.Array) -> jax.Array:
    # sigmoid(m + logit(u)) > 0.5  <=>  u > (1 - u) * exp(-m): one exp, no log.
    # Not sampling: m > 0 exactly (what strip and statistics use).
    stochastic = u > (1.0 - u) * jnp.exp(-logits)
    return jnp.where(sample, stochastic, logits > 0).astype(jnp.float32)


@_rb_mask.defjvp
def _rb_mask_jvp(primals, tangents):
    logits, u, sample = primals
    # Straight through sigmoid(m + logit(u)) = u / (u + (1 - u) exp(-m)); with
    # u = 1/2 (not sampling) that is sigmoid(m). exp(-m) = inf gives s = 0 and
    # exp(-m) = 0 gives s = 1: no NaN at any logit.
    u = jnp.where(sample, u, 0.5)
    soft = u / (u + (1.0 - u) * jnp.exp(-logits))
    return _rb_mask(*primals), soft * (1.0 - soft) * tangents[0]


def rb_binary_mask(logits: jax.Array) -> jax.Array:
    """NNCF's deterministic ``binary_mask``: ``sigmoid(m) > 0.5`` straight through ``sigmoid(m)``.

    Args:
      logits: float array, one logit per weight.

    Returns:
      float32 0/1 mask shaped like ``logits`` (exactly ``m > 0``); its
      gradient with respect to ``logits`` is ``sigmoid'(m)`` (what the RB
      loss trains the logits with).
    """
    logits = logits.astype(jnp.float32)
    return _rb_mask(logits, jnp.full(logits.shape, 0.5, jnp.float32), jnp.bool_(False))


def _mix(x: jax.Array) -> jax.Array:
    """A bijection of uint32 that spreads every input bit over the word."""
    x = (x ^ (x >> 16)) * jnp.uint32(0x7FEB352D)
    x = (x ^ (x >> 15)) * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def rb_uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Uniform float32 noise in ``[1e-6, 1 - 1e-6]``, a pure function of ``key``.

    ``jax.random.uniform`` costs a Threefry hash (about a hundred integer
    operations) per weight, which on CPU is a third of the digits CNN's whole
    train step. Here ``key`` gives two words by one Threefry call and each
    element hashes its index with them (two rounds of a 32-bit mixing
    bijection, about ten operations); the top 24 bits give ``u``. The noise
    only has to be independent across weights and steps, which this is for
    any practical purpose; it is not a cryptographic or a general-purpose
    generator. Tensors hold fewer than ``2**32`` elements.

    Args:
      key: a typed PRNG key.
      shape: the output shape.

    Returns:
      float32 array of ``shape``, values in ``[1e-6, 1 - 1e-6]``.
    """
    seeds = jax.random.bits(key, (2,), jnp.uint32)
    size = math.prod(shape)
    index = jax.lax.iota(jnp.uint32, size).reshape(shape)
    bits = _mix(_mix(index ^ seeds[0]) + seeds[1])
    u = ((bits >> 8).astype(jnp.float32) + 0.5) * jnp.float32(2.0**-24)
    return jnp.clip(u, _EPS, 1.0 - _EPS)


def rb_mask(logits: jax.Array, key: jax.Array, sample: jax.Array | bool = True) -> jax.Array:
    """The training mask when ``sample`` is set, else the deterministic one, in one kernel.

    Args:
      logits: float array, one logit per weight.
      key: a typed PRNG key (its noise is drawn either way, and used only when sampling).
      sample: bool scalar, may be traced.

    Returns:
      float32 0/1 mask shaped like ``logits``: ``rb_training_mask(logits,
      key)`` if ``sample`` else ``rb_binary_mask(logits)``, with their
      gradients. One elementwise kernel, no ``lax.cond``: XLA fuses it with
      the weight it masks.
    """
    logits = logits.astype(jnp.float32)
    return _rb_mask(logits, rb_uniform(key, logits.shape), jnp.asarray(sample, jnp.bool_))


def rb_training_mask(logits: jax.Array, key: jax.Array) -> jax.Array:
    """Stochastic binary mask with a straight-through gradient to ``logits``.

    ``mask = sigmoid(m + logit(u)) > 0.5``: weight ``j`` is kept with
    probability ``sigmoid(m_j)``.

    Args:
      logits: float array, one logit per weight.
      key: a typed PRNG key; the same key gives the same mask.

    Returns:
      float32 mask of 0s and 1s shaped like ``logits``; its gradient with
      respect to ``logits`` is that of ``sigmoid(m + logit(u))``.
    """
    return rb_mask(logits, key, True)


def rb_masked_weight(w: jax.Array, mask: jax.Array) -> jax.Array:
    """``w * mask``: the weight the forward uses, with the gradients of a product.

    The mask's logit receives ``grad * w`` whether the weight is kept or not
    (a pruned weight can come back, as in NNCF). A plain product: a NaN or
    Inf weight would make its logit's gradient NaN anyway, so the forward
    does not special-case it (``ctrl.strip`` does: a pruned NaN is 0 there).

    Args:
      w: a weight, any float dtype.
      mask: float32 0/1 mask shaped like ``w``.

    Returns:
      The masked weight, dtype of ``w``.
    """
    return w * mask.astype(w.dtype)


def rb_sparsity_loss(
    masks: Sequence[jax.Array], level: jax.Array | float, p: float = 0.05
) -> jax.Array:
    """NNCF's RB loss ``(sum_l sum(mask_l) / N - (1 - level))**2 / p**2`` (global mode).

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


def rb_local_sparsity_loss(
    masks: Sequence[jax.Array], level: jax.Array | float, p: float = 0.05
) -> jax.Array:
    """NNCF's per-layer RB loss ``sum_l (sum(mask_l) / N_l - (1 - level))**2 / p**2`` (local mode).

    Every layer is pulled to the level on its own. All masks at 1, two layers
    and level 0.2 give ``2 * 16 = 32``.

    Args:
      masks: the layers' masks (values in [0, 1]).
      level: target sparsity level in [0, 1).
      p: NNCF's fixed scale, 0.05.

    Returns:
      A float32 scalar.
    """
    target = 1.0 - jnp.float32(level)
    terms = [(jnp.mean(m.astype(jnp.float32)) - target) ** 2 / p**2 for m in masks]
    return sum(terms, jnp.float32(0.0)).astype(jnp.float32)
