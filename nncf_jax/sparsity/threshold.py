"""Exact k-th smallest value of many non-negative float arrays, without a sort.

NNCF sorts every targeted weight to find the global magnitude threshold
(``sort(importances)[k]``), which costs hundreds of reads of the params at
scale. Non-negative float32 values order the same way as their bit patterns
read as int32, so a two-pass radix select finds the exact k-th value:

1. histogram of the top 16 bits (65,536 buckets) summed over all arrays,
   cumulative sum, pick the bucket holding rank ``k``;
2. histogram of the low 15 bits of the elements in that bucket, pick the
   exact bit pattern.

Arrays are never concatenated (their histograms are added), ties are exact,
and the result is deterministic. NaN sorts above +inf.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

__all__ = ["kth_smallest"]

_LOW_BITS = 15
_HIGH_BUCKETS = 1 << 16
_LOW_BUCKETS = 1 << _LOW_BITS


def _bits(x: jax.Array) -> jax.Array:
    return jax.lax.bitcast_convert_type(jnp.abs(x.astype(jnp.float32)).ravel(), jnp.int32)


def kth_smallest(values: Sequence[jax.Array], k: jax.Array | int) -> jax.Array:
    """The ``k``-th smallest (0-based) of all elements of ``values``.

    Equals ``jnp.sort(jnp.concatenate([v.ravel() for v in values]))[k]`` for
    non-negative inputs, in two linear passes.

    Args:
      values: arrays of any shapes; read as ``abs(v)`` in float32 (callers
        pass importances, which are non-negative).
      k: int32 scalar rank, ``0 <= k < total size`` (clipped into range).

    Returns:
      A float32 scalar.
    """
    bits = [_bits(v) for v in values]
    total = sum(int(b.size) for b in bits)
    k = jnp.clip(jnp.asarray(k, jnp.int32), 0, max(total - 1, 0))

    high = jnp.zeros(_HIGH_BUCKETS, jnp.int32)
    for b in bits:
        high = high.at[b >> _LOW_BITS].add(1)
    high_cum = jnp.cumsum(high)
    bucket = jnp.searchsorted(high_cum, k, side="right").astype(jnp.int32)
    rank_in_bucket = k - (high_cum[bucket] - high[bucket])

    low = jnp.zeros(_LOW_BUCKETS, jnp.int32)
    for b in bits:
        in_bucket = (b >> _LOW_BITS) == bucket
        low = low.at[b & (_LOW_BUCKETS - 1)].add(in_bucket.astype(jnp.int32))
    low_index = jnp.searchsorted(jnp.cumsum(low), rank_in_bucket, side="right").astype(jnp.int32)
    return jax.lax.bitcast_convert_type((bucket << _LOW_BITS) | low_index, jnp.float32)
