"""Filter importance and the per-group keep masks of filter pruning.

Scores and masks are separate pieces: `filter_importance` scores the output
filters of one kernel, `group_importance` sums them over a group's kernels,
and `level_mask` / `global_masks` turn scores into bool masks at a level.
All are pure and jit-safe (the level may be traced).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

__all__ = [
    "IMPORTANCES",
    "filter_importance",
    "global_masks",
    "group_importance",
    "kept_count",
    "level_mask",
]

IMPORTANCES = ("L2", "L1", "geometric_median")
ROUND_TO = 8  # NNCF's default: the kept filter count is a multiple of 8


def filter_importance(kernel: jax.Array, axis: int, kind: str) -> jax.Array:
    """Importance of each output filter of ``kernel`` (slices along ``axis``).

    ``L1``: ``sum |F_i|``; ``L2``: ``sqrt(sum F_i**2)``; ``geometric_median``:
    ``sum_j ||F_i - F_j||_2`` (a filter close to all others is redundant).

    Returns:
      float32 ``(kernel.shape[axis],)``.

    Example:
      >>> filter_importance(jnp.array([[3.0, 1.0], [4.0, 0.0]]), 1, "L2").tolist()
      [5.0, 1.0]
    """
    f = jnp.moveaxis(kernel.astype(jnp.float32), axis, 0).reshape(kernel.shape[axis], -1)
    if kind == "L1":
        return jnp.sum(jnp.abs(f), axis=1)
    if kind == "L2":
        return jnp.sqrt(jnp.sum(f * f, axis=1))
    if kind == "geometric_median":
        sq = jnp.sum(f * f, axis=1)
        d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * f @ f.T, 0.0)
        return jnp.sum(jnp.sqrt(d2), axis=1)
    raise ValueError(f"unknown filter importance {kind!r}; expected one of {IMPORTANCES}")


def group_importance(kernels: Sequence[tuple[jax.Array, int]], kind: str) -> jax.Array:
    """Sum of `filter_importance` over a group's ``(kernel, output axis)`` pairs."""
    return sum(filter_importance(k, axis, kind) for k, axis in kernels)


def kept_count(n: int, level: jax.Array | float) -> jax.Array:
    """Filters kept out of ``n`` at ``level``: ``min(ceil(n (1 - level) / 8) * 8, n)``, int32.

    Example:
      >>> int(kept_count(32, 0.4)), int(kept_count(64, 0.4)), int(kept_count(16, 0.4))
      (24, 40, 16)
    """
    level = jnp.asarray(level, jnp.float32)
    # float32 slack, so that exact products (16 * 0.5 = 8) do not round up.
    blocks = jnp.ceil(n * (1.0 - level) / ROUND_TO - 1e-5)
    return jnp.clip(blocks * ROUND_TO, 0, n).astype(jnp.int32)


def level_mask(importance: jax.Array, level: jax.Array | float) -> jax.Array:
    """NNCF's uniform-level mask for one group.

    With ``k = N - kept_count(N, level)``, keeps ``importance >= sort(importance)[min(k, N - 1)]``.

    Returns:
      bool ``(N,)``.
    """
    n = importance.shape[0]
    k = n - kept_count(n, level)
    threshold = jnp.sort(importance)[jnp.minimum(k, n - 1)]
    return importance >= threshold


def _top(importance: jax.Array, keep: jax.Array) -> jax.Array:
    rank = jnp.argsort(jnp.argsort(-importance, stable=True), stable=True)
    return rank < keep


def global_masks(importances: Sequence[jax.Array], level: jax.Array | float) -> list[jax.Array]:
    """``all_weights``: one ranking over every group's filters.

    Each group's scores are divided by their maximum (groups of different
    depth and width become comparable); the ``floor(level * total)`` lowest
    normalised filters over all groups are pruned, then each group's kept
    count is rounded up to a multiple of 8 (at most its size) and its
    highest-scoring filters are kept.

    Returns:
      one bool mask per group.
    """
    if not importances:
        return []
    level = jnp.asarray(level, jnp.float32)
    normed = [i / jnp.maximum(jnp.max(i), 1e-12) for i in importances]
    scores = jnp.concatenate(normed)
    total = scores.shape[0]
    k = jnp.floor(total * level + 1e-4).astype(jnp.int32)
    threshold = jnp.sort(scores)[jnp.minimum(k, total - 1)]
    masks = []
    for s in normed:
        n = s.shape[0]
        keep = jnp.sum(s >= threshold)
        keep = jnp.clip(jnp.ceil(keep / ROUND_TO) * ROUND_TO, 0, n).astype(jnp.int32)
        keep = jnp.where(level > 0, keep, n)
        masks.append(_top(s, keep))
    return masks
