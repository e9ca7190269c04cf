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


def _bits(v: jax.Array) -> jax.Array:
    return jax.lax.bitcast_convert_type(jnp.abs(v.astype(jnp.float32)).ravel(), jnp.int32)


def _select_bucket(hist: jax.Array, rank: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Bucket holding 0-based ``rank`` in a histogram, and the rank inside it.

    Two-level prefix sums over rows of 256 buckets, each a masked sum over a
    triangle, instead of ``cumsum`` + ``searchsorted`` (a scan and a while
    loop on CPU); no integer matmul, which some backends lack.
    """
    rows = hist.reshape(-1, 256)
    totals = rows.sum(axis=1)
    rows_below = jnp.tril(jnp.ones((rows.shape[0],) * 2, jnp.bool_))
    row_inclusive = jnp.sum(jnp.where(rows_below, totals[None, :], 0), axis=1)
    row = jnp.sum(row_inclusive <= rank).astype(jnp.int32)
    before_row = row_inclusive[row] - totals[row]
    in_row = rows[row]
    cols_below = jnp.tril(jnp.ones((256, 256), jnp.bool_))
    col_inclusive = jnp.sum(jnp.where(cols_below, in_row[None, :], 0), axis=1)
    col = jnp.sum(col_inclusive <= rank - before_row).astype(jnp.int32)
    before = before_row + col_inclusive[col] - in_row[col]
    return row * 256 + col, rank - before


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
    # Histograms per tensor, added: concatenating first would copy every
    # importance once more (measured 1.4x slower at 25M params on CPU).
    bits = [_bits(v) for v in values]
    total = sum(int(b.size) for b in bits)
    k = jnp.clip(jnp.asarray(k, jnp.int32), 0, max(total - 1, 0))
    high = jnp.zeros(_HIGH_BUCKETS, jnp.int32)
    for b in bits:
        high = high.at[b >> _LOW_BITS].add(1)
    bucket, rank_in_bucket = _select_bucket(high, k)
    low = jnp.zeros(_LOW_BUCKETS, jnp.int32)
    for b in bits:
        low = low.at[b & (_LOW_BUCKETS - 1)].add(((b >> _LOW_BITS) == bucket).astype(jnp.int32))
    low_index, _ = _select_bucket(low, rank_in_bucket)
    return jax.lax.bitcast_convert_type((bucket << _LOW_BITS) | low_index, jnp.float32)
