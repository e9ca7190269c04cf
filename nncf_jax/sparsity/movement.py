"""Movement sparsity: NNCF's mask, loss, schedule and structured-mask functions.

Pure building blocks; the ``movement_sparsity`` algorithm
(`nncf_jax.sparsity.movement_algorithm`) is assembled from them.

Every targeted kernel ``w`` has importance scores ``s`` (trainable state).
The scores have the kernel's rank; each axis is either the kernel's size
(one score per index), 1 (one score shared along the whole axis) or a
divisor of it (one score per block of ``size / n`` indices), see
`expand_scores`. The forward uses ``w * mask`` with

    mask = 1[expand(s) > min(threshold, quantile(s, 0.98))]

and a straight-through gradient ``d mask / d s = 1`` (NNCF's
``binary_mask_by_threshold``: the 0.98 quantile cap keeps at least ~2 % of
every layer). So ``d loss / d s = sum over the block of grad_w_eff * w``:
the *movement* of the weights away from zero.

Schedule (NNCF's ``MovementPolynomialThresholdScheduler``), with ``u`` the
scheduler's position in optimizer steps, ``a = int(warmup_start_epoch *
steps_per_epoch)`` and ``b = int(warmup_end_epoch * steps_per_epoch)``:

- ``u < a`` (pre-warm-up): threshold ``-inf`` (no weight masked), factor 0;
- ``a <= u < b`` (warm-up): ``scale = 1 - (1 - (u - a) / (b - a))**power``,
  threshold ``init + scale * (final - init)``, factor ``scale * lambda``;
- ``u >= b`` (post-warm-up): threshold ``final``, factor ``lambda``; the
  masks are fixed (and resolved into structures, `resolve_group`).

Loss (NNCF's ``ImportanceLoss``): the mean over layers of
``factor * ||sigmoid(s_l)||_1 / numel(s_l)``; 0 once the masks are fixed.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

__all__ = [
    "MAX_PERCENTILE",
    "expand_scores",
    "importance_loss",
    "kth_smallest_threshold",
    "movement_mask",
    "movement_schedule",
    "resolve_group",
]

MAX_PERCENTILE = 0.98
INIT_SPARSITY = 0.001  # NNCF's automatic init threshold: ~0.1 % of weights below it


def expand_scores(scores: jax.Array, shape: Sequence[int]) -> jax.Array:
    """Scores expanded to a kernel's shape.

    Args:
      scores: float array of the kernel's rank; along each axis its size is
        the kernel's, 1 (broadcast) or a divisor ``n`` (each score repeated
        over a block of ``size / n`` consecutive indices).
      shape: the kernel's shape.

    Returns:
      float32 array of ``shape``.

    Example:
      >>> expand_scores(jnp.array([[1.0, 2.0]]), (2, 4)).tolist()
      [[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0]]
    """
    x = scores.astype(jnp.float32)
    for axis, (n, size) in enumerate(zip(scores.shape, shape, strict=True)):
        if n not in (1, size):
            x = jnp.repeat(x, size // n, axis=axis)
    return jnp.broadcast_to(x, tuple(shape))


@jax.custom_jvp
def _ste_threshold(expanded: jax.Array, threshold: jax.Array) -> jax.Array:
    return (expanded > threshold).astype(jnp.float32)


@_ste_threshold.defjvp
def _ste_threshold_jvp(primals, tangents):
    # Straight through: the mask moves with the scores (NNCF's STThreshold);
    # the threshold gets no gradient.
    return _ste_threshold(*primals), tangents[0].astype(jnp.float32)


def movement_mask(scores: jax.Array, shape: Sequence[int], threshold: jax.Array) -> jax.Array:
    """The training mask of one kernel, straight through to its scores.

    ``1[expand(s) > min(threshold, quantile(s, 0.98))]`` (the quantile of
    the scores as stored, without gradient).

    Args:
      scores: the kernel's scores (see `expand_scores`).
      shape: the kernel's shape.
      threshold: float32 scalar (``-inf``: keep everything).

    Returns:
      float32 0/1 mask of ``shape``; its gradient with respect to the
      expanded scores is the identity.
    """
    cap = jax.lax.stop_gradient(jnp.quantile(scores.astype(jnp.float32), MAX_PERCENTILE))
    return _ste_threshold(expand_scores(scores, shape), jnp.minimum(threshold, cap))


def importance_loss(scores: Sequence[jax.Array], factor: jax.Array) -> jax.Array:
    """NNCF's ``ImportanceLoss``: ``mean_l(factor * sum(sigmoid(s_l)) / numel(s_l))``.

    Args:
      scores: the scores of every targeted kernel.
      factor: float32 scalar, the scheduled regularisation factor.

    Returns:
      float32 scalar.
    """
    terms = [jnp.mean(jax.nn.sigmoid(s.astype(jnp.float32))) for s in scores]
    return (factor * sum(terms) / len(terms)).astype(jnp.float32)


def movement_schedule(
    position: jax.Array,
    start: jax.Array | int,
    end: jax.Array | int,
    *,
    power: float,
    init_threshold: jax.Array,
    final_threshold: float,
    factor: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Threshold, regularisation factor and stage at a scheduler position.

    Args:
      position: int32 scalar, the scheduler position ``u`` (optimizer steps,
        or epochs when steps per epoch are unknown).
      start, end: ``a`` and ``b`` of the module docstring, same unit.
      power: the cubic's power (3 by default).
      init_threshold: float32 scalar, the threshold at the warm-up start.
      final_threshold: ``final_importance_threshold``.
      factor: ``importance_regularization_factor``.

    Returns:
      ``(threshold, factor, stage)``: float32, float32, int32 (0 before,
      1 in, 2 after the warm-up).

    Example:
      >>> thr, lam, stage = movement_schedule(
      ...     jnp.int32(5), 0, 10, power=3.0, init_threshold=jnp.float32(-1.0),
      ...     final_threshold=0.0, factor=2.0)
      >>> round(float(thr), 4), round(float(lam), 4), int(stage)
      (-0.125, 1.75, 1)
    """
    u = jnp.asarray(position, jnp.float32)
    a, b = jnp.float32(start), jnp.float32(end)
    p = jnp.clip((u - a) / jnp.maximum(b - a, 1.0), 0.0, 1.0)
    scale = 1.0 - (1.0 - p) ** jnp.float32(power)
    init = jnp.asarray(init_threshold, jnp.float32)
    stage = jnp.where(u < a, 0, jnp.where(u < b, 1, 2)).astype(jnp.int32)
    threshold = jnp.where(
        stage == 0,
        -jnp.inf,
        jnp.where(
            stage == 1, init + scale * (jnp.float32(final_threshold) - init), final_threshold
        ),
    )
    lam = jnp.where(stage == 0, 0.0, jnp.where(stage == 1, scale * factor, factor))
    return threshold.astype(jnp.float32), lam.astype(jnp.float32), stage


def kth_smallest_threshold(expanded: Sequence[jax.Array], fraction: float = INIT_SPARSITY):
    """NNCF's automatic ``init_importance_threshold``: the ``k``-th smallest score.

    ``k = min(n, int(n * fraction) + 1)`` over all ``n`` expanded scores, so
    about ``fraction`` of the weights are below it.
    """
    flat = jnp.concatenate([e.reshape(-1).astype(jnp.float32) for e in expanded])
    n = flat.size
    k = min(n, int(n * fraction) + 1)
    return jnp.sort(flat)[k - 1]


def resolve_group(
    masks: Sequence[jax.Array],
    unit_axes: Sequence[int],
    inner_axes: Sequence[Sequence[int]] | None = None,
) -> list[jax.Array]:
    """Structured masks of a group of kernels that share one structure axis.

    NNCF's structured mask resolution, simplified: in each kernel, a unit
    (a head, a hidden neuron) along ``unit_axes[i]`` is kept if any of its
    weights is kept; a unit of the group is kept if any member keeps it (the
    union); an index of each member's other axes (except ``inner_axes``,
    which belong to the unit, e.g. the head dimension) survives if any of its
    weights does. The resolved mask is the outer product of these: dense
    inside kept units, zero elsewhere.

    Args:
      masks: bool masks of the members.
      unit_axes: the structure axis of each member (all of one size).
      inner_axes: per member, axes that are part of the unit (default none).

    Returns:
      The resolved bool masks, shaped like ``masks``.
    """
    inner_axes = inner_axes or [()] * len(masks)

    def axis_keep(m, axes):
        reduce = tuple(i for i in range(m.ndim) if i not in axes)
        shape = [m.shape[i] if i in axes else 1 for i in range(m.ndim)]
        return jnp.any(m, axis=reduce), shape

    unit = None
    for m, axis in zip(masks, unit_axes, strict=True):
        keep, _ = axis_keep(m, (axis,))
        unit = keep if unit is None else jnp.logical_or(unit, keep)
    resolved = []
    for m, axis, inner in zip(masks, unit_axes, inner_axes, strict=True):
        _, shape = axis_keep(m, (axis,))
        out = unit.reshape(shape)
        for other in range(m.ndim):
            if other != axis and other not in inner:
                keep, shape = axis_keep(m, (other,))
                out = jnp.logical_and(out, keep.reshape(shape))
        resolved.append(jnp.broadcast_to(out, m.shape))
    return resolved
