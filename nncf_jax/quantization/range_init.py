"""Quantizer range initialisation from calibration statistics (NNCF ``initializer.range``).

Statistics are collected on the float model. For each calibration batch the
caller runs the model and hands every quantizer the tensor ``x`` it would
see, shaped ``(batch, ...)``; the leading axis is the batch axis and each of
its rows is one *sample*. Three pure functions stream the statistic:

    acc = init_accumulator(spec, x.shape, x.dtype)
    for x in batches:
        acc = accumulate(spec, acc, x)          # jit-able: jax.jit(accumulate, static_argnums=0)
    lo, hi = finalize(spec, acc)                # () per tensor, (C,) per channel

and small converters turn ``(lo, hi)`` into quantizer parameters
(`symmetric_scale_from_minmax`, `asymmetric_range_from_minmax`, `is_signed`).
Weight quantizers use `weight_range`, which applies the same statistic to the
weight tensor itself.

Only the first ``num_init_samples`` samples count: later batches are ignored
and the batch that crosses the limit is truncated (10 samples over batches of
4, 4, 4 use 4, 4 and 2 rows).

Statistics, per channel when ``axis`` is set (NNCF 2.x torch semantics):

- ``min_max``: global extremes, ``min_i x`` and ``max_i x``.
- ``mean_min_max``: each *batch* (as given, truncated) contributes its
  extremes; the result is their mean over batches.
- ``mixed_min_max`` (default): for per-tensor activations each *sample*
  contributes its extremes (NNCF's per-sample statistics); the max is the mean
  of the per-sample maxima and the min is the global minimum (symmetric) or
  the mean of the per-sample minima (asymmetric). Per channel it is
  ``min_max`` (NNCF uses means only for per-tensor activations).
- ``threesigma``: ``median -+ 3 * 1.4826 * MAD`` of all collected values,
  where ``MAD = median |x - median|`` and 1.4826 turns a MAD into the standard
  deviation of a normal distribution. Exact zeros are left out of both
  medians, as in NNCF: after a ReLU they can be the majority and would give a
  zero MAD.
- ``percentile``: the ``min_percentile`` / ``max_percentile`` percentiles (in
  percent, numpy's linear interpolation) of all collected values.
- ``mean_percentile``: each batch's percentiles, averaged over batches.

For symmetric quantizers the max statistic is taken of ``|x|`` (NNCF's
``use_abs_max``) for the three min/max types: ``max`` is then a magnitude
while ``min`` stays signed, so it still decides the signedness. The scale
``max(|min|, |max|)`` is the same for ``min_max``; the mean types differ.

Memory: the min/max and ``mean_percentile`` accumulators hold ``O(C)``
numbers. ``percentile`` and ``threesigma`` need the values themselves: the
accumulator keeps ``num_init_samples x C x K`` of them, ``K`` positions per
channel of each sample, with ``num_init_samples * C * K <= MAX_BUFFER_VALUES``
(4M values; 16 MiB at float32) when the samples are larger (``K`` is at least
1). The ``K`` positions are a fixed uniform random subset, the same for every
sample; below the cap every value is kept and the result is exact. (NNCF
keeps every value; this cap is ours.)

Calibration data should be finite: NaN marks empty buffer slots, so the
percentile and ``threesigma`` statistics skip NaN inputs, while the min/max
types propagate them.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from nncf_jax.errors import UsageError

__all__ = [
    "MAX_BUFFER_VALUES",
    "MIN_RANGE_FRACTION",
    "RANGE_INIT_TYPES",
    "SCALE_FLOOR",
    "RangeAccumulator",
    "RangeInitSpec",
    "accumulate",
    "asymmetric_range_from_minmax",
    "finalize",
    "init_accumulator",
    "is_signed",
    "symmetric_scale_from_minmax",
    "weight_range",
]

RANGE_INIT_TYPES = (
    "min_max",
    "mean_min_max",
    "mixed_min_max",
    "threesigma",
    "percentile",
    "mean_percentile",
)
# Values kept per quantizer by `percentile` / `threesigma` before subsampling.
MAX_BUFFER_VALUES = 1 << 22
# NNCF's SCALE_LOWER_THRESHOLD for symmetric quantizers.
SCALE_FLOOR = 0.1
# NNCF's eps for asymmetric quantizers: no channel narrower than 1% of the widest.
MIN_RANGE_FRACTION = 0.01
# 1 / Phi^-1(3/4): sigma = 1.4826 * MAD for a normal distribution (NNCF's constant).
_MAD_TO_SIGMA = 1.4826230

_MIN_MAX_TYPES = ("min_max", "mean_min_max", "mixed_min_max")
_BUFFERED_TYPES = ("percentile", "threesigma")


@dataclass(frozen=True)
class RangeInitSpec:
    """How one quantizer's range is initialised; hashable, so it can be a static jit argument.

    Attributes:
      type: one of `RANGE_INIT_TYPES` (see the module docstring).
      num_init_samples: samples (rows of the batch axis) to use, at least 1.
      min_percentile: lower percentile in percent, for the percentile types.
      max_percentile: upper percentile in percent, ``min_percentile < max_percentile``.
      axis: per-channel axis (of ``x``, batch axis included, for activations;
        of the weight for `weight_range`); None for a per-tensor quantizer.
      symmetric: the quantizer is symmetric (its max statistic is of ``|x|``);
        False for asymmetric.

    Raises:
      UsageError: a field is out of range; the message names the field and value.
    """

    type: str = "mixed_min_max"
    num_init_samples: int = 256
    min_percentile: float = 0.1
    max_percentile: float = 99.9
    axis: int | None = None
    symmetric: bool = True

    def __post_init__(self):
        if self.type not in RANGE_INIT_TYPES:
            raise UsageError(
                f"RangeInitSpec.type: expected one of {', '.join(RANGE_INIT_TYPES)}, got {self.type!r}"
            )
        n = self.num_init_samples
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise UsageError(f"RangeInitSpec.num_init_samples: expected an int >= 1, got {n!r}")
        for name in ("min_percentile", "max_percentile"):
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 100:
                raise UsageError(f"RangeInitSpec.{name}: expected a number in [0, 100], got {p!r}")
        if not self.min_percentile < self.max_percentile:
            raise UsageError(
                "RangeInitSpec.min_percentile: expected less than max_percentile "
                f"({self.max_percentile!r}), got {self.min_percentile!r}"
            )
        if self.axis is not None and (
            isinstance(self.axis, bool) or not isinstance(self.axis, int)
        ):
            raise UsageError(f"RangeInitSpec.axis: expected an int or None, got {self.axis!r}")
        if not isinstance(self.symmetric, bool):
            raise UsageError(f"RangeInitSpec.symmetric: expected a bool, got {self.symmetric!r}")

    @property
    def per_sample(self) -> bool:
        """Whether each sample, rather than each batch, is one unit of the mean statistics.

        True for ``mixed_min_max`` only (NNCF collects per-sample statistics
        for activations with that type); ``mean_min_max`` and
        ``mean_percentile`` average over the batches as given.
        """
        return self.type == "mixed_min_max"

    @property
    def mean_of_mins(self) -> bool:
        """Whether the min statistic is a mean over units (else the minimum of the unit minima)."""
        if self.type in ("mean_min_max", "mean_percentile"):
            return True
        return self.type == "mixed_min_max" and self.axis is None and not self.symmetric

    @property
    def mean_of_maxes(self) -> bool:
        """Whether the max statistic is a mean over units (else the maximum of the unit maxima)."""
        if self.type in ("mean_min_max", "mean_percentile"):
            return True
        return self.type == "mixed_min_max" and self.axis is None


class RangeAccumulator(struct.PyTreeNode):
    """Running statistic of one quantizer; fixed shapes and dtypes across batches.

    ``C`` is the number of channels (1 per tensor); float fields are float32
    (or float64 for float64 inputs when x64 is on).

    Attributes:
      seen: int32 scalar, samples used so far (at most ``num_init_samples``).
      units: int32 scalar, batches (samples when ``spec.per_sample``) that
        contributed to a mean.
      lo: ``(C,)`` minimum of the unit minima, or their sum when the min is a
        mean (sum of lower percentiles for ``mean_percentile``); unused by the
        buffered types.
      hi: ``(C,)`` the same for the maxima.
      buffer: ``(num_init_samples, C, K)`` in the input dtype, the kept values
        of each sample, NaN where no sample was written yet; ``(0, C, 0)`` for
        the types that need no values.
      sample_shape: static, the shape of one sample (``x.shape[1:]``).
    """

    seen: jax.Array
    units: jax.Array
    lo: jax.Array
    hi: jax.Array
    buffer: jax.Array
    sample_shape: tuple[int, ...] = struct.field(pytree_node=False)


def init_accumulator(
    spec: RangeInitSpec, x_shape: Sequence[int], dtype: jnp.dtype
) -> RangeAccumulator:
    """An empty accumulator for activations shaped ``x_shape``.

    Args:
      spec: the quantizer's `RangeInitSpec`.
      x_shape: ``(batch, ...)``, the shape of ``x``; the batch size is
        ignored, so the last batch may be smaller.
      dtype: floating dtype of ``x``.

    Returns:
      A `RangeAccumulator` with no samples.

    Raises:
      UsageError: ``x`` is not floating, has no batch axis, is empty per
        sample, or ``spec.axis`` is out of range or the batch axis.

    Example:
      >>> spec = RangeInitSpec("min_max", num_init_samples=8)
      >>> acc = init_accumulator(spec, (4, 16), jnp.float32)
    """
    if not jnp.issubdtype(dtype, jnp.floating):
        raise UsageError(f"init_accumulator: expected a floating dtype, got {jnp.dtype(dtype)}")
    x_shape = tuple(int(d) for d in x_shape)
    if len(x_shape) < 1:
        raise UsageError("init_accumulator: x_shape needs a leading batch axis, got ()")
    sample_shape = x_shape[1:]
    if math.prod(sample_shape) == 0:
        raise UsageError(f"init_accumulator: one sample of {x_shape} holds no values")
    channels, per_channel = _channels_and_size(spec, x_shape)
    acc_dtype = _acc_dtype(dtype)
    lo_init = 0.0 if spec.mean_of_mins or spec.type in _BUFFERED_TYPES else np.inf
    hi_init = 0.0 if spec.mean_of_maxes or spec.type in _BUFFERED_TYPES else -np.inf
    if spec.type in _BUFFERED_TYPES:
        n = spec.num_init_samples
        kept = min(per_channel, max(1, MAX_BUFFER_VALUES // (n * channels)))
        buffer = jnp.full((n, channels, kept), jnp.nan, dtype)
    else:
        buffer = jnp.zeros((0, channels, 0), dtype)
    return RangeAccumulator(
        seen=jnp.int32(0),
        units=jnp.int32(0),
        lo=jnp.full((channels,), lo_init, acc_dtype),
        hi=jnp.full((channels,), hi_init, acc_dtype),
        buffer=buffer,
        sample_shape=sample_shape,
    )


def accumulate(spec: RangeInitSpec, acc: RangeAccumulator, x: jax.Array) -> RangeAccumulator:
    """Adds one calibration batch; pure and jit-able with ``spec`` static.

    Rows beyond ``spec.num_init_samples`` (counting from the first batch) are
    ignored, so a batch after the limit leaves the statistic unchanged.

    Args:
      spec: the quantizer's `RangeInitSpec`.
      acc: the accumulator from `init_accumulator` or the previous call.
      x: ``(batch, *acc.sample_shape)`` floating, the tensor the quantizer sees.

    Returns:
      The updated accumulator (same shapes and dtypes).

    Raises:
      UsageError: ``x`` does not have the shape of one batch of ``acc``.

    Example:
      >>> step = jax.jit(accumulate, static_argnums=0)
      >>> acc = step(spec, acc, jnp.ones((4, 16)))
    """
    x = jnp.asarray(x)
    if x.ndim < 1 or tuple(x.shape[1:]) != acc.sample_shape:
        raise UsageError(
            f"accumulate: expected x of shape (batch, {', '.join(map(str, acc.sample_shape))}) "
            f"as at init_accumulator, got {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        return acc
    return _accumulate(spec, acc, x)


# Jitted so that an eager call is one compiled program per spec and batch
# shape rather than dozens of dispatched ops; under an outer jit it inlines.
@functools.partial(jax.jit, static_argnums=0)
def _accumulate(spec: RangeInitSpec, acc: RangeAccumulator, x: jax.Array) -> RangeAccumulator:
    batch = x.shape[0]
    rows = _as_rows(x, _channel_axis(spec, x.ndim, activations=True))  # (B, C, M)
    first = acc.seen
    take = jnp.clip(spec.num_init_samples - first, 0, batch)
    valid = jnp.arange(batch) < take  # (B,)
    acc = acc.replace(seen=first + take)

    if spec.type in _BUFFERED_TYPES:
        kept = acc.buffer.shape[2]
        if kept < rows.shape[2]:
            rows = rows[:, :, _kept_positions(rows.shape[2], kept)]
        # Row i goes to seen + i; the rows past num_init_samples fall off the
        # end of the buffer and are dropped, which is the truncation.
        slots = first + jnp.arange(batch)
        return acc.replace(
            buffer=acc.buffer.at[slots].set(rows.astype(acc.buffer.dtype), mode="drop")
        )

    values = rows.astype(acc.lo.dtype)
    if spec.type == "mean_percentile":
        # Rows past the limit become NaN, which nanpercentile leaves out.
        masked = jnp.where(valid[:, None, None], values, jnp.nan)
        per_channel = jnp.moveaxis(masked, 1, 0).reshape(masked.shape[1], -1)  # (C, B*M)
        q = jnp.nanpercentile(per_channel, _percentiles(spec), axis=1)  # (2, C)
        counted = take > 0
        return acc.replace(
            units=acc.units + counted.astype(jnp.int32),
            lo=acc.lo + jnp.where(counted, q[0], 0),
            hi=acc.hi + jnp.where(counted, q[1], 0),
        )

    row_min = jnp.min(values, axis=2)  # (B, C)
    row_max = jnp.max(jnp.abs(values) if spec.symmetric else values, axis=2)
    if spec.per_sample:
        unit_min, unit_max, unit_valid = row_min, row_max, valid
        new_units = take
    else:
        # The batch is one unit: its extremes over the rows that count.
        unit_min = jnp.min(jnp.where(valid[:, None], row_min, jnp.inf), axis=0, keepdims=True)
        unit_max = jnp.max(jnp.where(valid[:, None], row_max, -jnp.inf), axis=0, keepdims=True)
        unit_valid = (take > 0)[None]
        new_units = (take > 0).astype(jnp.int32)
    return acc.replace(
        units=acc.units + new_units,
        lo=_fold(acc.lo, unit_min, unit_valid, mean=spec.mean_of_mins, lower=True),
        hi=_fold(acc.hi, unit_max, unit_valid, mean=spec.mean_of_maxes, lower=False),
    )


def finalize(spec: RangeInitSpec, acc: RangeAccumulator) -> tuple[jax.Array, jax.Array]:
    """The collected ``(min, max)``; runs eagerly (it checks that samples were seen).

    Args:
      spec: the quantizer's `RangeInitSpec`.
      acc: the accumulator after the last `accumulate`.

    Returns:
      ``(lo, hi)``, float32 scalars per tensor, ``(C,)`` per channel. For
      symmetric min/max types ``hi`` is a statistic of ``|x|``.

    Raises:
      UsageError: no sample was accumulated (NNCF: statistics are not collected).
    """
    if int(acc.seen) == 0:
        raise UsageError(
            "finalize: no calibration samples were accumulated; pass at least one "
            "non-empty batch to accumulate"
        )
    if spec.type in _BUFFERED_TYPES:
        lo, hi = _buffer_statistic(spec, acc.buffer)
    else:
        units = acc.units.astype(acc.lo.dtype)
        lo = acc.lo / units if spec.mean_of_mins else acc.lo
        hi = acc.hi / units if spec.mean_of_maxes else acc.hi
    return _per_tensor_or_channel(spec, lo, hi)


# Jitted: a sort-based statistic is many ops, one program is cheaper eagerly.
@functools.partial(jax.jit, static_argnums=0)
def _buffer_statistic(spec: RangeInitSpec, buffer: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``percentile`` / ``threesigma`` of a ``(N, C, K)`` buffer, per channel ``(C,)``."""
    # (N, C, K) -> (C, N*K); unwritten rows are NaN and left out.
    values = jnp.moveaxis(buffer, 1, 0).reshape(buffer.shape[1], -1)
    values = values.astype(_acc_dtype(buffer.dtype))
    if spec.type == "percentile":
        lo, hi = jnp.nanpercentile(values, _percentiles(spec), axis=1)
        return lo, hi
    return _three_sigma(values)


def weight_range(spec: RangeInitSpec, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The range statistic of a weight tensor, taken as a single sample.

    With one sample every mean is the value itself, so the three min/max types
    give ``(min w, max w)`` (``max |w|`` when symmetric), both percentile types
    give the percentiles of ``w`` and ``threesigma`` gives ``median -+ 3 sigma``
    of ``w``; per output channel when ``spec.axis`` (an axis of ``w``) is set.
    ``num_init_samples`` is not used. Every value is used (no subsampling).

    Args:
      spec: the weight quantizer's `RangeInitSpec`.
      w: floating weight of any shape, not empty.

    Returns:
      ``(lo, hi)``, float32 scalars per tensor, ``(w.shape[axis],)`` per channel.

    Raises:
      UsageError: ``w`` is not floating or empty, or ``spec.axis`` is out of range.

    Example:
      >>> lo, hi = weight_range(RangeInitSpec("min_max", axis=-1), kernel)  # Dense (in, out)
    """
    w = jnp.asarray(w)
    if not jnp.issubdtype(w.dtype, jnp.floating) or w.size == 0:
        raise UsageError(
            f"weight_range: expected a non-empty floating weight, got {w.dtype}{w.shape}"
        )
    _channel_axis(spec, w.ndim, activations=False)  # raises before tracing
    return _weight_range(spec, w)


@functools.partial(jax.jit, static_argnums=0)
def _weight_range(spec: RangeInitSpec, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    axis = _channel_axis(spec, w.ndim, activations=False)
    values = _as_rows(w[None], None if axis is None else axis + 1)[0]  # (C, M)
    values = values.astype(_acc_dtype(w.dtype))
    if spec.type in _MIN_MAX_TYPES:
        lo = jnp.min(values, axis=1)
        hi = jnp.max(jnp.abs(values) if spec.symmetric else values, axis=1)
    elif spec.type == "threesigma":
        lo, hi = _three_sigma(values)
    else:
        lo, hi = jnp.percentile(values, _percentiles(spec), axis=1)
    return _per_tensor_or_channel(spec, lo, hi)


def symmetric_scale_from_minmax(
    lo: jax.Array, hi: jax.Array, *, floor: float = SCALE_FLOOR
) -> jax.Array:
    """Symmetric scale ``c = max(|lo|, |hi|)``, floored at ``floor`` per element (NNCF).

    Args:
      lo: min statistic, scalar or ``(C,)``.
      hi: max statistic, broadcastable with ``lo``.
      floor: smallest scale; NNCF's ``SCALE_LOWER_THRESHOLD`` 0.1.

    Returns:
      ``where(c > floor, c, floor)``, shaped like ``lo`` and ``hi`` broadcast.

    Example:
      >>> symmetric_scale_from_minmax(jnp.array([-3.0, 0.0]), jnp.array([1.0, 0.05]))
      Array([3. , 0.1], dtype=float32)
    """
    abs_max = jnp.maximum(jnp.abs(lo), jnp.abs(hi))
    return jnp.where(abs_max > floor, abs_max, jnp.asarray(floor, abs_max.dtype))


def asymmetric_range_from_minmax(
    lo: jax.Array, hi: jax.Array, *, min_fraction: float = MIN_RANGE_FRACTION
) -> tuple[jax.Array, jax.Array]:
    """Asymmetric ``(input_low, input_range)`` from min/max, NNCF's widening rule.

    With ``r = hi - lo`` per channel and ``R = max r`` over all channels, each
    range is clipped to ``[min_fraction * R, R]`` and widened about its middle:

        r' = clip(r, min_fraction * R, R);  input_low = lo - (r' - r) / 2

    so no channel is narrower than 1% of the widest. Per tensor ``R = r`` and
    nothing changes (a constant tensor keeps range 0; the fake-quantizer adds
    its own epsilon).

    Args:
      lo: min statistic, scalar or ``(C,)``.
      hi: max statistic, broadcastable with ``lo``.
      min_fraction: NNCF's ``eps`` 0.01.

    Returns:
      ``(input_low, input_range)``, shaped like ``lo`` and ``hi`` broadcast.

    Example:
      >>> low, width = asymmetric_range_from_minmax(jnp.array([0.0, 1.0]), jnp.array([10.0, 1.0]))
      >>> # low ~ [0, 0.95], width ~ [10, 0.1]: the constant channel is widened to 1% of 10.
    """
    lo, hi = jnp.broadcast_arrays(jnp.asarray(lo), jnp.asarray(hi))
    ranges = hi - lo
    widest = jnp.max(ranges)
    widened = jnp.clip(ranges, min_fraction * widest, widest)
    return lo - (widened - ranges) * 0.5, widened


def is_signed(lo: jax.Array) -> bool:
    """Whether the quantizer is signed: any calibration minimum is negative (NNCF).

    Args:
      lo: min statistic, scalar or ``(C,)``.

    Returns:
      A Python bool (this reads the device; call it at build time only).
    """
    return bool(jnp.any(jnp.asarray(lo) < 0))


def _acc_dtype(dtype) -> jnp.dtype:
    # Means and percentiles of bfloat16/float16 inputs lose too much in their own dtype.
    return jax.dtypes.canonicalize_dtype(jnp.promote_types(dtype, jnp.float32))


def _percentiles(spec: RangeInitSpec) -> jax.Array:
    return jnp.array([spec.min_percentile, spec.max_percentile], jnp.float32)


def _channel_axis(spec: RangeInitSpec, ndim: int, *, activations: bool) -> int | None:
    """``spec.axis`` made non-negative; for activations it may not be the batch axis."""
    if spec.axis is None:
        return None
    if not -ndim <= spec.axis < ndim:
        raise UsageError(
            f"RangeInitSpec.axis: expected an axis of a rank-{ndim} tensor, got {spec.axis}"
        )
    axis = spec.axis % ndim
    if activations and axis == 0:
        raise UsageError(
            f"RangeInitSpec.axis: axis {spec.axis} is the batch axis of the activation; "
            "use a channel axis (1 .. ndim-1) or None"
        )
    return axis


def _channels_and_size(spec: RangeInitSpec, x_shape: tuple[int, ...]) -> tuple[int, int]:
    """``(C, M)``: channels, and values per channel in one sample."""
    axis = _channel_axis(spec, len(x_shape), activations=True)
    per_sample = math.prod(x_shape[1:])
    if axis is None:
        return 1, per_sample
    return x_shape[axis], per_sample // x_shape[axis]


def _as_rows(x: jax.Array, axis: int | None) -> jax.Array:
    """``(B, ...)`` -> ``(B, C, M)``, channel axis second (C = 1 per tensor)."""
    if axis is None:
        return x.reshape(x.shape[0], 1, -1)
    x = jnp.moveaxis(x, axis, 1)
    return x.reshape(x.shape[0], x.shape[1], -1)


@functools.lru_cache(maxsize=64)
def _kept_positions(size: int, kept: int) -> np.ndarray:
    # A fixed seed: the same positions for every batch and every run.
    rng = np.random.default_rng(0)
    return np.sort(rng.choice(size, size=kept, replace=False)).astype(np.int32)


def _fold(running, unit_values, unit_valid, *, mean: bool, lower: bool):
    """Folds ``(U, C)`` unit statistics (rows where ``unit_valid``) into ``(C,)``."""
    keep = unit_valid[:, None]
    if mean:
        return running + jnp.sum(jnp.where(keep, unit_values, 0), axis=0)
    if lower:
        return jnp.minimum(running, jnp.min(jnp.where(keep, unit_values, jnp.inf), axis=0))
    return jnp.maximum(running, jnp.max(jnp.where(keep, unit_values, -jnp.inf), axis=0))


def _three_sigma(values: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``median -+ 3 * 1.4826 * MAD`` per row of ``(C, L)``; NaN and exact zeros left out.

    A row with nothing left gives ``(0, 0)``.
    """
    values = jnp.where(values == 0, jnp.nan, values)
    present = jnp.any(~jnp.isnan(values), axis=1)
    median = jnp.nanmedian(values, axis=1)
    mad = jnp.nanmedian(jnp.abs(values - median[:, None]), axis=1)
    median = jnp.where(present, median, 0)
    sigma = jnp.where(present, _MAD_TO_SIGMA * mad, 0)
    return median - 3 * sigma, median + 3 * sigma


def _per_tensor_or_channel(spec, lo, hi):
    if spec.axis is None:
        return lo[0], hi[0]
    return lo, hi
