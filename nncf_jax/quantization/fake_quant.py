r"""Fake quantization with NNCF's straight-through gradients (``jax.custom_vjp``).

A fake quantizer rounds ``x`` to ``levels`` evenly spaced values in a range
``[lo, lo + r]`` and returns them as floats, so the model trains against the
error int8 inference will make. Let ``n = levels - 1 = level_high - level_low``:

.. math::

    s = n / r, \qquad zp = \mathrm{round}(-lo \cdot s), \qquad
    y = \mathrm{round}\big((\mathrm{clip}(x, lo, lo + r) - lo)\, s - zp\big) / s

``round`` is round-half-to-even (``jnp.round``, as ``torch.round``). The
output grid is ``{m / s}`` for integers ``m``, so ``y(0) = 0`` exactly.

Symmetric quantizers have one parameter, the scale ``c``:

.. math::

    \hat c = |c| + \epsilon, \qquad lo = \hat c \cdot ll / lh, \qquad r = \hat c - lo

with integer levels ``[ll, lh]`` from `quantization_levels` and
``epsilon = 1e-16``. Asymmetric quantizers have ``lo`` and ``r``; they use
``\hat r = |r| + \epsilon`` and then widen ``[lo, lo + \hat r]`` so that 0.0 is
exactly a grid point (NNCF's ``TuneRange``): with ``lo_0 = min(lo, 0)``,
``hi_0 = max(lo + \hat r, 0)`` and ``z = round(-lo_0 \cdot n / (hi_0 - lo_0))``,
either the low end moves to ``z / (z - n) \cdot hi_0`` or the high end to
``(z - n) / z \cdot lo_0``, whichever gives the wider range (the other one
would cut into the range the user asked for). As in NNCF, when ``z`` rounds to
0 or ``n`` (0.0 within half a step of an end of the range) both candidates
degenerate and the range is kept as given; ``y(0) = 0`` still holds.

Gradients (NNCF's ``Quantize_backward``), with ``hi = lo + r``, upstream
gradient ``g`` and ``alpha = ll / lh``:

.. math::

    \partial x &= g \cdot [lo \le x \le hi] \\
    \partial r &= \textstyle\sum g \cdot
        \begin{cases} (y - x) / r & lo \le x \le hi \\ alpha & x < lo \\ 1 & x > hi \end{cases} \\
    \partial lo &= \textstyle\sum g \cdot [x < lo \text{ or } x > hi]

The sums run over every axis but the channel axis (all axes per tensor). The
symmetric scale receives ``\partial r`` as its gradient, as in NNCF: the exact
chain rule through ``r = \hat c (1 - alpha)`` would multiply it by
``1 - alpha`` (about 2 for signed quantizers), so NNCF's scale gradient is
about half the LSQ one. The tuned asymmetric range is treated as the identity
in the backward pass (NNCF's ``TuneRange.backward``): ``\partial lo`` and
``\partial r`` of the tuned range go to ``input_low`` and ``input_range``.
``|.|`` is differentiated as in torch: ``d|v|/dv = sign(v)``, 0 at ``v = 0``.

Differences from NNCF, on purpose:

- Asymmetric quantizers always use all ``2^bits`` levels and ignore
  ``narrow_range`` (NNCF's ``calculate_asymmetric_level_ranges`` would drop
  level 0; its hardware configs never ask for that).
- NNCF's reference backward carries the range sign (``range_sign``); here the
  range is always positive after ``|.| + epsilon``, so it is left out (no
  change in results).

The backward pass recomputes ``y`` from ``x`` instead of storing it, as
NNCF's CPU kernel does: one elementwise pass instead of one more
activation-sized residual. Everything runs in ``x.dtype`` (params are cast to it). In float16
``epsilon`` underflows to 0, so a zero scale or range gives NaN there, as in
NNCF; bfloat16 and float32 are safe.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nncf_jax.errors import UsageError

__all__ = [
    "EPS",
    "FAKE_QUANTIZE_CALL",
    "MAX_BITS",
    "MIN_BITS",
    "asymmetric_quantize",
    "asymmetric_range",
    "fake_quantize_call_levels",
    "quantization_levels",
    "symmetric_quantize",
    "symmetric_range",
]

EPS = 1e-16
"""Added to ``|scale|`` and ``|input_range|`` so that the range is never 0 (NNCF's ``eps``)."""

MIN_BITS = 2
MAX_BITS = 8


# ---------------------------------------------------------------- validation


def _check_bool(name: str, value: Any, where: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise UsageError(f"{where}: {name} must be a Python bool, got {value!r}")
    return bool(value)


def _check_bits(bits: Any, where: str) -> int:
    # bits decides the graph (number of levels), so it must be static: a traced
    # value or a float is a mistake, not something to coerce.
    if isinstance(bits, bool | np.bool_) or not isinstance(bits, int | np.integer):
        raise UsageError(
            f"{where}: bits must be a Python int in [{MIN_BITS}, {MAX_BITS}], got {bits!r}"
        )
    if not MIN_BITS <= int(bits) <= MAX_BITS:
        raise UsageError(f"{where}: bits must be in [{MIN_BITS}, {MAX_BITS}], got {int(bits)}")
    return int(bits)


def _check_x(x: Any, where: str) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise UsageError(f"{where}: x must be a floating-point array, got dtype {x.dtype}")
    return x


def _param_shape(x: jax.Array, axis: Any, where: str) -> tuple[tuple[int, ...], int | None]:
    """(expected param shape, normalised axis) for quantizing ``x`` along ``axis``."""
    if axis is None:
        return (), None
    if isinstance(axis, bool | np.bool_) or not isinstance(axis, int | np.integer):
        raise UsageError(f"{where}: axis must be None or a Python int, got {axis!r}")
    if not -x.ndim <= axis < x.ndim:
        raise UsageError(
            f"{where}: axis={int(axis)} is out of range for x of shape {tuple(x.shape)}"
        )
    norm = int(axis) % x.ndim
    return (x.shape[norm],), norm


def _prepare_param(name: str, value: Any, x: jax.Array, axis: Any, where: str) -> jax.Array:
    """Checks a scale / low / range and broadcasts it against ``x``, in ``x.dtype``."""
    expected, norm = _param_shape(x, axis, where)
    shape = tuple(np.shape(value))
    if shape != expected:
        if norm is None:
            want = "a scalar (shape ()) for per-tensor quantization (axis=None)"
        else:
            want = f"shape {expected} = (x.shape[{axis}],) for x of shape {tuple(x.shape)}"
        raise UsageError(f"{where}: {name} must be {want}, got shape {shape}")
    value = jnp.asarray(value).astype(x.dtype)
    if norm is None:
        return value
    bshape = [1] * x.ndim
    bshape[norm] = expected[0]
    return value.reshape(bshape)


# ------------------------------------------------------------------ helpers


def quantization_levels(
    bits: int, *, signed: bool, narrow_range: bool, symmetric: bool
) -> tuple[int, int]:
    """Integer range ``(level_low, level_high)`` of a quantizer.

    ============================  ========================  ====================
    quantizer                     full range                narrow range
    ============================  ========================  ====================
    symmetric, signed             ``[-2^(b-1), 2^(b-1)-1]``  ``[-2^(b-1)+1, 2^(b-1)-1]``
    symmetric, unsigned           ``[0, 2^b-1]``            ``[0, 2^b-2]``
    asymmetric                    ``[0, 2^b-1]``            ``[0, 2^b-1]``
    ============================  ========================  ====================

    Args:
      bits: bit width, a Python int in [2, 8].
      signed: symmetric quantizers only: whether the grid has negative levels.
        Ignored for asymmetric quantizers, whose range is set by ``input_low``.
      narrow_range: symmetric quantizers only: drop one level (the most
        negative one if signed, the top one if unsigned). Ignored for
        asymmetric quantizers, which always use all ``2^bits`` levels.
      symmetric: symmetric (scale only) or asymmetric (low and range).

    Returns:
      ``(level_low, level_high)``, Python ints; the quantizer has
      ``level_high - level_low + 1`` levels.

    Raises:
      UsageError: ``bits`` is not an int in [2, 8], or a flag is not a bool.

    Example:
      >>> quantization_levels(8, signed=True, narrow_range=True, symmetric=True)
      (-127, 127)
    """
    where = "quantization_levels"
    bits = _check_bits(bits, where)
    signed = _check_bool("signed", signed, where)
    narrow_range = _check_bool("narrow_range", narrow_range, where)
    symmetric = _check_bool("symmetric", symmetric, where)
    if not symmetric:
        return 0, 2**bits - 1
    if signed:
        return -(2 ** (bits - 1)) + int(narrow_range), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1 - int(narrow_range)


def _abs(v: jax.Array) -> jax.Array:
    # |v| whose derivative is sign(v), i.e. 0 at v == 0, as torch's abs in
    # NNCF's `abs(scale) + eps`; jnp.abs would give 1 there.
    return jnp.sign(v) * v


def _symmetric_low_range(
    scale_safe: jax.Array, level_low: int, level_high: int
) -> tuple[jax.Array, jax.Array]:
    input_low = scale_safe * (level_low / level_high)
    return input_low, scale_safe - input_low


def symmetric_range(
    scale: jax.Array, level_low: int, level_high: int
) -> tuple[jax.Array, jax.Array]:
    """Range ``[input_low, input_low + input_range]`` a symmetric quantizer uses.

    ``c = |scale| + EPS``, ``input_low = c * level_low / level_high``,
    ``input_range = c - input_low``; e.g. 8-bit signed full range with scale
    1 gives ``[-128/127, 1]``.

    Args:
      scale: float array of any shape (elementwise).
      level_low: integer low level from `quantization_levels`.
      level_high: integer high level from `quantization_levels` (> 0).

    Returns:
      ``(input_low, input_range)``, both shaped and typed like ``scale``.
    """
    scale = jnp.asarray(scale)
    return _symmetric_low_range(_abs(scale) + EPS, level_low, level_high)


def _tuned_range(
    input_low: jax.Array, input_range: jax.Array, n: int
) -> tuple[jax.Array, jax.Array]:
    """NNCF's TuneRange forward: widen ``[lo, lo + r]`` so 0.0 is a grid point."""
    input_high = input_low + input_range
    low0 = jnp.minimum(input_low, 0)
    high0 = jnp.maximum(input_high, 0)
    zp = jnp.round(-low0 * (n / (high0 - low0)))
    # Keep the high end and move the low end so that 0 sits on level zp, or
    # keep the low end and move the high end. The unused branch may divide by
    # zero (zp == n or zp == 0); `where` discards it.
    moved_low = jnp.where(zp < n, zp / (zp - n) * high0, low0)
    moved_high = jnp.where(zp > 0, (zp - n) / zp * low0, high0)
    # One of the two widens the range and the other shrinks it; take the wider
    # one so that no value inside the requested range gets clipped.
    take_low = (high0 - moved_low) > (moved_high - low0)
    new_low = jnp.where(take_low, moved_low, low0)
    new_range = jnp.where(take_low, high0, moved_high) - new_low
    return new_low, new_range


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _tune_range(
    input_low: jax.Array, input_range: jax.Array, n: int
) -> tuple[jax.Array, jax.Array]:
    return _tuned_range(input_low, input_range, n)


def _tune_range_fwd(input_low, input_range, n):
    return _tuned_range(input_low, input_range, n), None


def _tune_range_bwd(n, _, g):
    # Straight through, as NNCF's TuneRange.backward: the widening is a small
    # correction, and its own derivative (through round) is zero almost
    # everywhere.
    return g


_tune_range.defvjp(_tune_range_fwd, _tune_range_bwd)


def asymmetric_range(
    input_low: jax.Array, input_range: jax.Array, *, bits: int
) -> tuple[jax.Array, jax.Array]:
    """Range ``[input_low', input_low' + input_range']`` an asymmetric quantizer uses.

    ``r = |input_range| + EPS``, then the range is widened so that 0.0 is a
    grid point (see the module docstring). This is the range to export.

    Args:
      input_low: float array of any shape.
      input_range: float array shaped like ``input_low``.
      bits: bit width, a Python int in [2, 8].

    Returns:
      ``(input_low', input_range')``, shaped and typed like ``input_low``.

    Raises:
      UsageError: bad ``bits`` or mismatched shapes.
    """
    where = "asymmetric_range"
    bits = _check_bits(bits, where)
    input_low = jnp.asarray(input_low)
    input_range = jnp.asarray(input_range)
    if input_low.shape != input_range.shape:
        raise UsageError(
            f"{where}: input_low and input_range must have the same shape, got "
            f"{tuple(input_low.shape)} and {tuple(input_range.shape)}"
        )
    return _tune_range(input_low, _abs(input_range) + EPS, 2**bits - 1)


# ------------------------------------------------------------ fake quantize


def _fq_forward(x: jax.Array, input_low: jax.Array, input_range: jax.Array, n: int) -> jax.Array:
    # Operation order as in NNCF's kernels, so float32 results agree bit for bit
    # in the common case.
    s = n / input_range
    zero_point = jnp.round(-input_low * s)
    y = jnp.clip(x, input_low, input_low + input_range)
    return jnp.round((y - input_low) * s - zero_point) / s


FAKE_QUANTIZE_CALL = "nncf_fake_quantize"
"""Name prefix of the jitted call that holds each fake quantizer's forward.

In a traced model the forward `_fq_forward` of every fake quantizer is one
``jit`` equation named ``f"{FAKE_QUANTIZE_CALL}_levels{n + 1}"`` with inputs
``(x, input_low, input_range)``, so that an exporter can recognise it and emit
its runtime's own quantize op (OpenVINO's ``FakeQuantize``) instead of the
elementwise ops inside; `fake_quantize_call_levels` reads the level count back.
The call changes neither the numbers nor the gradients: it sits inside the
``custom_vjp`` primal, and XLA inlines it when the caller is jitted.
"""

_CALL_NAME = re.compile(rf"{FAKE_QUANTIZE_CALL}_levels(\d+)")


@functools.cache
def _fq_call(n: int):
    """`_fq_forward` with ``n`` bound, as a ``jit`` named for `FAKE_QUANTIZE_CALL`."""

    def call(x, input_low, input_range):
        return _fq_forward(x, input_low, input_range, n)

    call.__name__ = call.__qualname__ = f"{FAKE_QUANTIZE_CALL}_levels{n + 1}"
    return jax.jit(call)


def _fq_traced(x: jax.Array, input_low: jax.Array, input_range: jax.Array, n: int) -> jax.Array:
    """`_fq_forward`, as the named call `_fq_call` when traced.

    Eager calls run the ops one by one, as before: a compiled call would let
    XLA rewrite ``m / (n / r)`` as ``m * r / n`` and move eager results (the
    stripped weights, which exported int8 codes must reproduce) by an ulp.
    Traced, the call is inlined by XLA like the ops it replaces.
    """
    if any(isinstance(v, jax.core.Tracer) for v in (x, input_low, input_range)):
        return _fq_call(n)(x, input_low, input_range)
    return _fq_forward(x, input_low, input_range, n)


def fake_quantize_call_levels(name: str) -> int | None:
    """The level count ``n + 1`` of a fake-quantize ``jit`` call's name, or None.

    Args:
      name: a ``jit`` equation's ``name`` parameter.

    Returns:
      ``levels`` for a name made by this module (see `FAKE_QUANTIZE_CALL`),
      None for any other name.

    Example:
      >>> fake_quantize_call_levels("nncf_fake_quantize_levels256")
      256
    """
    match = _CALL_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def _sum_like(t: jax.Array, like: jax.Array) -> jax.Array:
    """Sums ``t`` down to the (broadcast) shape of ``like``."""
    if like.ndim == 0:
        return jnp.sum(t)
    axes = tuple(i for i, d in enumerate(like.shape) if d == 1 and t.shape[i] != 1)
    return jnp.sum(t, axis=axes, keepdims=True)


def _fq_backward(
    g: jax.Array,
    x: jax.Array,
    input_low: jax.Array,
    input_range: jax.Array,
    n: int,
    alpha: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(d x, d input_low, d input_range) of `_fq_forward` (NNCF's straight-through rule)."""
    y = _fq_forward(x, input_low, input_range, n)
    above = x > input_low + input_range
    below = x < input_low
    inside = ~(above | below)
    zero = jnp.zeros((), g.dtype)
    # `where`, not multiplication by a 0/1 mask: a NaN or Inf upstream gradient
    # outside the range must not leak in (NNCF's CPU kernel masks the same way).
    d_range = g * jnp.where(above, 1.0, jnp.where(below, alpha, (y - x) / input_range))
    d_x = jnp.where(inside, g, zero)
    d_low = jnp.where(inside, zero, g)
    return d_x, _sum_like(d_low, input_low), _sum_like(d_range, input_range)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _symmetric_core(x: jax.Array, scale_safe: jax.Array, level_low: int, level_high: int):
    input_low, input_range = _symmetric_low_range(scale_safe, level_low, level_high)
    return _fq_traced(x, input_low, input_range, level_high - level_low)


def _symmetric_core_fwd(x, scale_safe, level_low, level_high):
    return _symmetric_core(x, scale_safe, level_low, level_high), (x, scale_safe)


def _symmetric_core_bwd(level_low, level_high, res, g):
    x, scale_safe = res
    input_low, input_range = _symmetric_low_range(scale_safe, level_low, level_high)
    d_x, _, d_range = _fq_backward(
        g, x, input_low, input_range, level_high - level_low, level_low / level_high
    )
    # NNCF hands d(range) to the scale as is (see the module docstring).
    return d_x, d_range


_symmetric_core.defvjp(_symmetric_core_fwd, _symmetric_core_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _asymmetric_core(
    x: jax.Array, input_low: jax.Array, input_range: jax.Array, level_low: int, level_high: int
):
    return _fq_traced(x, input_low, input_range, level_high - level_low)


def _asymmetric_core_fwd(x, input_low, input_range, level_low, level_high):
    y = _asymmetric_core(x, input_low, input_range, level_low, level_high)
    return y, (x, input_low, input_range)


def _asymmetric_core_bwd(level_low, level_high, res, g):
    x, input_low, input_range = res
    return _fq_backward(
        g, x, input_low, input_range, level_high - level_low, level_low / level_high
    )


_asymmetric_core.defvjp(_asymmetric_core_fwd, _asymmetric_core_bwd)


def symmetric_quantize(
    x: jax.Array,
    scale: jax.Array,
    *,
    bits: int,
    signed: bool,
    narrow_range: bool,
    axis: int | None = None,
) -> jax.Array:
    """Symmetric fake quantization of ``x`` with NNCF's gradients.

    With ``c = |scale| + EPS`` and levels ``[ll, lh]`` from
    `quantization_levels`, ``x`` is quantized on ``[c * ll / lh, c]`` in steps
    of ``c / lh``: ``y = round(clip(x, lo, c) * lh / c) * c / lh`` up to the
    zero-point bookkeeping described in the module docstring.

    Gradients: ``dy/dx = 1`` inside the range and 0 outside (straight
    through); ``scale`` gets NNCF's range gradient (rounding error
    ``(y - x) / r`` inside, ``ll / lh`` below, 1 above, times ``sign(scale)``).

    Args:
      x: floating-point array, any shape; the computation runs in ``x.dtype``.
      scale: a scalar when ``axis`` is None, else shape ``(x.shape[axis],)``;
        cast to ``x.dtype``. Its sign is ignored.
      bits: bit width, a Python int in [2, 8].
      signed: whether the grid has negative levels.
      narrow_range: drop one level (see `quantization_levels`).
      axis: channel axis of ``x`` (may be negative) for per-channel scales, or
        None for one scale for the whole tensor.

    Returns:
      ``y``, shaped and typed like ``x``, every value on the grid
      ``{k * c / lh : ll <= k <= lh}``.

    Raises:
      UsageError: bad ``bits``, a non-bool flag, a non-float ``x``, an axis
        out of range, or a ``scale`` of the wrong shape (checked at trace time).

    Example:
      >>> x = jnp.array([-2.0, -0.3, 0.5, 1.5])
      >>> symmetric_quantize(x, 1.0, bits=8, signed=True, narrow_range=False) * 127
      Array([-128., -38., 64., 127.], dtype=float32)
    """
    where = "symmetric_quantize"
    level_low, level_high = quantization_levels(
        bits, signed=signed, narrow_range=narrow_range, symmetric=True
    )
    x = _check_x(x, where)
    scale = _prepare_param("scale", scale, x, axis, where)
    return _symmetric_core(x, _abs(scale) + EPS, level_low, level_high)


def asymmetric_quantize(
    x: jax.Array,
    input_low: jax.Array,
    input_range: jax.Array,
    *,
    bits: int,
    narrow_range: bool = False,
    axis: int | None = None,
) -> jax.Array:
    """Asymmetric fake quantization of ``x`` with NNCF's gradients.

    The range ``[input_low, input_low + |input_range| + EPS]`` is first widened
    so that 0.0 is a grid point (`asymmetric_range`), then ``x`` is quantized
    on ``2^bits`` levels of it.

    Gradients: ``dy/dx = 1`` inside the (widened) range, 0 outside;
    ``input_low`` gets the summed upstream gradient of the clipped elements;
    ``input_range`` gets the rounding error ``(y - x) / r`` inside, 0 below,
    1 above, times ``sign(input_range)``. The widening itself passes
    gradients straight through (as NNCF).

    Args:
      x: floating-point array, any shape; the computation runs in ``x.dtype``.
      input_low: a scalar when ``axis`` is None, else shape
        ``(x.shape[axis],)``; cast to ``x.dtype``.
      input_range: shaped like ``input_low``; its sign is ignored.
      bits: bit width, a Python int in [2, 8].
      narrow_range: accepted for symmetry with `symmetric_quantize` and
        ignored: asymmetric quantizers always use all ``2^bits`` levels.
      axis: channel axis of ``x`` (may be negative), or None for per-tensor.

    Returns:
      ``y``, shaped and typed like ``x``; ``y == 0`` where ``x == 0``.

    Raises:
      UsageError: bad ``bits``, a non-bool flag, a non-float ``x``, an axis
        out of range, or params of the wrong shape (checked at trace time).

    Example:
      >>> asymmetric_quantize(jnp.array([0.0, 0.5, 3.0]), -0.2, 1.0, bits=2)
      Array([0. , 0.4, 0.8], dtype=float32)
    """
    where = "asymmetric_quantize"
    _check_bool("narrow_range", narrow_range, where)
    level_low, level_high = quantization_levels(
        bits, signed=False, narrow_range=False, symmetric=False
    )
    x = _check_x(x, where)
    input_low = _prepare_param("input_low", input_low, x, axis, where)
    input_range = _prepare_param("input_range", input_range, x, axis, where)
    input_low, input_range = _tune_range(input_low, _abs(input_range) + EPS, level_high)
    return _asymmetric_core(x, input_low, input_range, level_low, level_high)
