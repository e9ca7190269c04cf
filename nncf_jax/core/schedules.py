"""NNCF's compression-level schedules as ``optax.Schedule``-style functions.

Each factory closes over its hyper-parameters and returns a pure function
``epoch -> level``. ``epoch`` may be an integer or a fractional epoch
(``epoch + k / steps_per_epoch`` in per-step mode), a Python number or a
traced JAX scalar; the result is a float32 JAX scalar. So our schedules can
drive an optax optimizer, and an optax schedule can drive a sparsity level.

The formulas are those of REFERENCE.md section 3 (NNCF 2.x).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax.numpy as jnp

from nncf_jax.errors import UsageError

__all__ = [
    "Schedule",
    "baseline_pruning_schedule",
    "exponential_pruning_schedule",
    "exponential_sparsity_schedule",
    "exponential_with_bias_pruning_schedule",
    "multistep_schedule",
    "polynomial_schedule",
]

Schedule = Callable[[jnp.ndarray | float | int], jnp.ndarray]


def polynomial_schedule(
    init: float, target: float, target_epoch: float, power: float = 0.9, concave: bool = True
) -> Schedule:
    """Polynomial ramp from ``init`` to ``target`` over ``target_epoch`` epochs.

    With ``p = clip(epoch / target_epoch, 0, 1)``:
    concave ``L = target - (target - init) * (1 - p)**power``,
    convex ``L = init + (target - init) * p**power``.
    ``target_epoch == 0`` gives ``target`` at every epoch.

    Example:
      >>> f = polynomial_schedule(0.2, 0.6, 2, power=1)
      >>> [round(float(f(e)), 4) for e in range(4)]
      [0.2, 0.4, 0.6, 0.6]
    """
    if target_epoch == 0:
        return lambda epoch: jnp.float32(target)

    def schedule(epoch):
        p = jnp.clip(jnp.asarray(epoch, jnp.float32) / target_epoch, 0.0, 1.0)
        if concave:
            return jnp.float32(target - (target - init) * (1.0 - p) ** power)
        return jnp.float32(init + (target - init) * p**power)

    return schedule


def exponential_sparsity_schedule(init: float, target: float, target_epoch: float) -> Schedule:
    """Density ``1 - L`` decays geometrically from ``1 - init`` to ``1 - target``.

    ``L = min(1 - (1 - init) * ((1 - target) / (1 - init)) ** (epoch / target_epoch), target)``.
    """
    if target_epoch == 0:
        return lambda epoch: jnp.float32(target)
    ratio = (1.0 - target) / (1.0 - init)

    def schedule(epoch):
        e = jnp.maximum(jnp.asarray(epoch, jnp.float32), 0.0)
        level = 1.0 - (1.0 - init) * ratio ** (e / target_epoch)
        return jnp.minimum(level, target).astype(jnp.float32)

    return schedule


def multistep_schedule(steps: Sequence[float], levels: Sequence[float]) -> Schedule:
    """Piecewise-constant levels: ``L = levels[bisect_right(steps, epoch)]``.

    Args:
      steps: increasing epochs at which the level changes, length ``n``.
      levels: ``n + 1`` levels; ``levels[-1]`` is the final target.

    Raises:
      UsageError: ``len(levels) != len(steps) + 1``.
    """
    if len(levels) != len(steps) + 1:
        raise UsageError(
            f"multistep needs len(levels) == len(steps) + 1, got {len(levels)} levels "
            f"and {len(steps)} steps"
        )
    steps_arr = jnp.asarray(steps, jnp.float32)
    levels_arr = jnp.asarray(levels, jnp.float32)

    def schedule(epoch):
        index = jnp.searchsorted(steps_arr, jnp.asarray(epoch, jnp.float32), side="right")
        return levels_arr[index]

    return schedule


def baseline_pruning_schedule(target: float, num_init_steps: int = 0) -> Schedule:
    """Pruning level 0 before epoch ``num_init_steps``, ``target`` from then on."""

    def schedule(epoch):
        return jnp.where(jnp.asarray(epoch) < num_init_steps, 0.0, target).astype(jnp.float32)

    return schedule


def exponential_pruning_schedule(
    init: float, target: float, num_init_steps: int = 0, pruning_steps: int = 100
) -> Schedule:
    """NNCF's exponential pruning schedule.

    Level 0 while ``epoch < w``; then
    ``min(1 - (1-init) * ((1-target)/(1-init)) ** ((epoch-w)/(S-1)), target)``
    with ``w = num_init_steps`` and ``S = pruning_steps``.
    """
    denominator = max(pruning_steps - 1, 1)
    ratio = (1.0 - target) / (1.0 - init)

    def schedule(epoch):
        e = jnp.asarray(epoch, jnp.float32)
        level = 1.0 - (1.0 - init) * ratio ** (jnp.maximum(e - num_init_steps, 0.0) / denominator)
        level = jnp.minimum(level, target)
        return jnp.where(e < num_init_steps, 0.0, level).astype(jnp.float32)

    return schedule


def _bias_schedule_rate(init: float, target: float, pruning_steps: int) -> float:
    """Solves ``y**0.125 - c*y + c - 1 = 0`` for ``k`` (``y = exp(-k (S-1))``) by Newton from k=1.

    ``k = 0`` is always a root; NNCF starts its solver at 1 to reach the
    other one. Runs once on the host at build time.
    """
    span = pruning_steps - 1
    c = (0.75 * target - init) / (target - init)

    def f(k: float) -> float:
        y = math.exp(-k * span)
        return y**0.125 - c * y + c - 1.0

    def df(k: float) -> float:
        y = math.exp(-k * span)
        dy = -span * y
        return 0.125 * y ** (-0.875) * dy - c * dy

    k = 1.0
    for _ in range(200):
        step = f(k) / df(k)
        k -= step
        if abs(step) < 1e-14:
            break
    return k


def exponential_with_bias_pruning_schedule(
    init: float, target: float, num_init_steps: int = 0, pruning_steps: int = 100
) -> Schedule:
    """NNCF's ``exponential_with_bias`` pruning schedule.

    Level 0 while ``epoch < w``; then ``min(a * exp(-k (epoch - w)) + b, target)``
    where ``k`` solves ``y**0.125 - c*y + c - 1 = 0`` with
    ``y = exp(-k (S-1))``, ``c = (0.75 target - init) / (target - init)``,
    ``a = (target - init) / (exp(-k (S-1)) - 1)`` and ``b = init - a``.
    """
    if target == init:
        return baseline_pruning_schedule(target, num_init_steps)
    k = _bias_schedule_rate(init, target, pruning_steps)
    a = (target - init) / (math.exp(-k * (pruning_steps - 1)) - 1.0)
    b = init - a

    def schedule(epoch):
        e = jnp.asarray(epoch, jnp.float32)
        level = jnp.minimum(a * jnp.exp(-k * (e - num_init_steps)) + b, target)
        return jnp.where(e < num_init_steps, 0.0, level).astype(jnp.float32)

    return schedule
