"""Fake quantization: REFERENCE.md section 6 check, a float64 NumPy reference, properties."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nncf_jax.errors import UsageError
from nncf_jax.quantization.fake_quant import (
    asymmetric_quantize,
    asymmetric_range,
    quantization_levels,
    symmetric_quantize,
    symmetric_range,
)

# ------------------------------------------------------------------ REFERENCE.md

REF_X = [-2, -1, -0.3, 0, 0.004, 0.3, 0.5, 1, 1.5]
REF_Y_TIMES_127 = [-128, -127, -38, 0, 1, 38, 64, 127, 127]
REF_DYDX = [0, 1, 1, 1, 1, 1, 1, 1, 0]


@pytest.mark.parametrize("jit", [False, True])
def test_reference_check_8bit_signed_scale_1(jit):
    def fq(x):
        return symmetric_quantize(x, 1.0, bits=8, signed=True, narrow_range=False)

    x = jnp.asarray(REF_X, jnp.float32)
    grad = jax.grad(lambda x: jnp.sum(fq(x)))
    if jit:
        fq, grad = jax.jit(fq), jax.jit(grad)
    y = np.asarray(fq(x), np.float64) * 127
    np.testing.assert_allclose(y, REF_Y_TIMES_127, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(np.rint(y), REF_Y_TIMES_127)
    np.testing.assert_array_equal(np.asarray(grad(x)), REF_DYDX)


@pytest.mark.parametrize(
    ("bits", "signed", "narrow", "symmetric", "expected"),
    [
        (8, True, False, True, (-128, 127)),
        (8, True, True, True, (-127, 127)),
        (8, False, False, True, (0, 255)),
        (8, False, True, True, (0, 254)),
        (4, True, False, True, (-8, 7)),
        (2, True, True, True, (-1, 1)),
        (8, True, True, False, (0, 255)),
        (3, False, True, False, (0, 7)),
    ],
)
def test_quantization_levels(bits, signed, narrow, symmetric, expected):
    got = quantization_levels(bits, signed=signed, narrow_range=narrow, symmetric=symmetric)
    assert got == expected
    assert all(type(v) is int for v in got)


def test_symmetric_range_8bit_signed():
    low, rng = symmetric_range(jnp.float32(1.0), -128, 127)
    np.testing.assert_allclose(float(low), -128 / 127, rtol=1e-7)
    np.testing.assert_allclose(float(rng), 1 + 128 / 127, rtol=1e-7)


# ------------------------------------------------ independent float64 reference
# Written from the formulas in REFERENCE.md section 6 and NNCF's reference.py,
# elementwise and in float64, without looking at the JAX implementation.


def np_levels(bits, signed, narrow, symmetric):
    half = 2 ** (bits - 1)
    if not symmetric:
        return 0, 2 * half - 1
    if signed:
        return (1 - half if narrow else -half), half - 1
    return 0, 2 * half - (2 if narrow else 1)


def np_tune(lo, r, n):
    """Widen each [lo, lo + r] so that 0 is one of its n + 1 grid points (float64)."""
    new_lo, new_r = np.empty_like(lo), np.empty_like(r)
    for i, (low, rng) in enumerate(zip(lo.ravel(), r.ravel(), strict=True)):
        high = max(low + rng, 0.0)
        low = min(low, 0.0)
        z = np.round(-low * n / (high - low))
        # Keep the top and move the bottom so that 0 is level z ...
        low_a = -z * high / (n - z) if z < n else low
        # ... or keep the bottom and move the top.
        high_b = (z - n) * low / z if z > 0 else high
        if high - low_a > high_b - low:
            new_lo.flat[i], new_r.flat[i] = low_a, high - low_a
        else:
            new_lo.flat[i], new_r.flat[i] = low, high_b - low
    return new_lo, new_r


def np_pre_round(x, lo, r, n):
    s = n / r
    return (np.clip(x, lo, lo + r) - lo) * s - np.round(-lo * s)


def np_forward(x, lo, r, n):
    return np.round(np_pre_round(x, lo, r, n)) * (r / n)


def np_backward(g, x, lo, r, n, alpha):
    """Elementwise (d x, d low, d range) before the reduction to the parameter shape."""
    y = np_forward(x, lo, r, n)
    above = x > lo + r
    below = x < lo
    inside = ~(above | below)
    d_range = g * np.select([above, below], [1.0, alpha], (y - x) / r)
    return g * inside, g * ~inside, d_range


def np_reduce(t, axis):
    if axis is None:
        return t.sum()
    return np.moveaxis(t, axis, 0).reshape(t.shape[axis], -1).sum(axis=1)


def np_bcast(p, x, axis):
    if axis is None:
        return p
    shape = [1] * x.ndim
    shape[axis] = -1
    return p.reshape(shape)


# (x shape, axis): per tensor, and per channel on the first, a middle and the last
# axis. One x shape keeps the number of distinct XLA compilations (the runtime) low.
LAYOUTS = [((3, 4, 5), None), ((3, 4, 5), 0), ((3, 4, 5), 1), ((3, 4, 5), -1)]


def f32(a):
    """float64 copy of the float32 rounding of ``a``: the values the JAX side really sees."""
    return np.asarray(a, np.float32).astype(np.float64)


def avoid_ties_and_edges(x, lo, r, n):
    """Moves x (float64 holding float32 values) off rounding ties and clip edges.

    At those points float32 and float64 may legitimately round differently.
    """
    for _ in range(10):
        v = np_pre_round(x, lo, r, n)
        tie = np.abs(v - np.floor(v) - 0.5) < 0.02
        edge = (np.abs(x - lo) < 1e-4 * r) | (np.abs(x - (lo + r)) < 1e-4 * r)
        bad = tie | edge
        if not bad.any():
            return x
        x = f32(np.where(bad, x + 0.3 * r / n, x))
    raise AssertionError("could not move x off ties")


@pytest.mark.parametrize("case", range(28))
def test_symmetric_matches_float64_reference(case):
    rng = np.random.RandomState(case)
    # 28 cases: every (bits, signed, narrow) once, every layout 7 times.
    bits, signed, narrow = 2 + case % 7, case % 4 in (1, 3), case % 4 in (2, 3)
    shape, axis = LAYOUTS[case // 7]
    ll, lh = np_levels(bits, signed, narrow, symmetric=True)
    n = lh - ll
    channels = () if axis is None else (shape[axis],)
    scale = f32(rng.uniform(0.1, 3.0, channels) * rng.choice([-1.0, 1.0], channels))
    c = np.abs(scale) + 1e-16
    c = np_bcast(c, np.zeros(shape), axis)
    lo = c * ll / lh
    r = c - lo
    x = f32(rng.normal(size=shape) * 1.3 * c)
    x = avoid_ties_and_edges(x, lo, r, n)
    g = f32(rng.normal(size=shape))

    fn = functools.partial(
        symmetric_quantize, bits=bits, signed=signed, narrow_range=narrow, axis=axis
    )
    y, vjp = jax.vjp(fn, jnp.asarray(x, jnp.float32), jnp.asarray(scale, jnp.float32))
    d_x, d_scale = vjp(jnp.asarray(g, jnp.float32))

    d_x_ref, _, d_range_ref = np_backward(g, x, lo, r, n, ll / lh)
    np.testing.assert_allclose(np.asarray(y), np_forward(x, lo, r, n), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(d_x), d_x_ref)
    assert d_scale.shape == scale.shape
    np.testing.assert_allclose(
        np.asarray(d_scale), np.sign(scale) * np_reduce(d_range_ref, axis), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("case", range(28))
def test_asymmetric_matches_float64_reference(case):
    rng = np.random.RandomState(1000 + case)
    # 28 cases: every (bits, layout) once; narrow_range must change nothing.
    bits, narrow = 2 + case % 7, case % 2 == 1
    shape, axis = LAYOUTS[case // 7]
    n = 2**bits - 1
    channels = () if axis is None else (shape[axis],)
    while True:
        # Ranges below, across and above 0; some input_range negative (its sign is ignored).
        low = f32(rng.uniform(-2.0, 1.0, channels))
        rng_ = f32(rng.uniform(0.2, 3.0, channels) * rng.choice([-1.0, 1.0], channels))
        high0 = np.maximum(low + np.abs(rng_), 0)
        low0 = np.minimum(low, 0)
        z = -low0 * n / (high0 - low0)
        # The zero-point rounding inside the range tuning must not be a near tie.
        if np.all(np.abs(z - np.floor(z) - 0.5) > 1e-3):
            break
    lo_t, r_t = np_tune(low, np.abs(rng_) + 1e-16, n)
    lo = np_bcast(lo_t, np.zeros(shape), axis)
    r = np_bcast(r_t, np.zeros(shape), axis)
    x = f32(rng.uniform(-1.2, 1.2, shape) * (np.abs(lo) + r) + lo + r / 2)
    x = avoid_ties_and_edges(x, lo, r, n)
    g = f32(rng.normal(size=shape))

    fn = functools.partial(asymmetric_quantize, bits=bits, narrow_range=narrow, axis=axis)
    args = [jnp.asarray(a, jnp.float32) for a in (x, low, rng_)]
    y, vjp = jax.vjp(fn, *args)
    d_x, d_low, d_range = vjp(jnp.asarray(g, jnp.float32))

    d_x_ref, d_low_ref, d_range_ref = np_backward(g, x, lo, r, n, 0.0)
    np.testing.assert_allclose(np.asarray(y), np_forward(x, lo, r, n), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(d_x), d_x_ref)
    np.testing.assert_allclose(np.asarray(d_low), np_reduce(d_low_ref, axis), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(d_range), np.sign(rng_) * np_reduce(d_range_ref, axis), rtol=1e-5, atol=1e-5
    )
    tuned = asymmetric_range(args[1], args[2], bits=bits)
    np.testing.assert_allclose(np.asarray(tuned[0]), lo_t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(tuned[1]), r_t, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------- properties


@pytest.mark.parametrize("bits", [2, 3, 5, 8])
@pytest.mark.parametrize(
    ("signed", "narrow"), [(True, False), (True, True), (False, False), (False, True)]
)
def test_symmetric_output_on_grid_and_clipped(bits, signed, narrow):
    ll, lh = quantization_levels(bits, signed=signed, narrow_range=narrow, symmetric=True)
    scale = jnp.asarray([0.5, 2.0, 7.0], jnp.float32)
    x = jax.random.normal(jax.random.key(bits), (64, 3)) * 3 * scale
    x = x.at[0].set(1e6).at[1].set(-1e6)
    y = symmetric_quantize(x, scale, bits=bits, signed=signed, narrow_range=narrow, axis=-1)
    k = np.asarray(y, np.float64) * lh / np.asarray(scale, np.float64)
    np.testing.assert_allclose(k, np.rint(k), atol=1e-4)
    assert k.min() >= ll - 1e-4 and k.max() <= lh + 1e-4
    np.testing.assert_allclose(np.asarray(y[0]), scale, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(y[1]), scale * ll / lh, rtol=1e-6)
    assert len(np.unique(np.rint(k[:, 2]))) <= lh - ll + 1


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize(("low", "rng"), [(-0.37, 1.0), (0.3, 2.0), (-3.0, 1.1), (-2.5, 2.0)])
def test_asymmetric_zero_exact_and_grid(bits, low, rng):
    x = jnp.concatenate([jnp.linspace(-4.0, 4.0, 401), jnp.zeros(3)])
    y = asymmetric_quantize(x, low, rng, bits=bits)
    assert np.all(np.asarray(y[-3:]) == 0.0)
    lo_t, r_t = (float(v) for v in asymmetric_range(low, rng, bits=bits))
    n = 2**bits - 1
    # The tuned range covers the asked one and 0 is one of its grid points.
    assert lo_t <= min(low, 0.0) + 1e-6 and lo_t + r_t >= max(low + rng, 0.0) - 1e-6
    np.testing.assert_allclose(-lo_t * n / r_t, np.rint(-lo_t * n / r_t), atol=1e-3)
    k = np.asarray(y, np.float64) * n / r_t
    np.testing.assert_allclose(k, np.rint(k), atol=1e-3)
    assert len(np.unique(np.asarray(y))) <= n + 1
    np.testing.assert_allclose(float(y.min()), lo_t, atol=1e-5)
    np.testing.assert_allclose(float(y.max()), lo_t + r_t, atol=1e-5)


@pytest.mark.parametrize(("low", "rng"), [(-1.0, 1.001), (-0.001, 1.0)])
def test_asymmetric_range_kept_when_zero_point_rounds_to_an_end(low, rng):
    # NNCF's TuneRange quirk, kept: when 0 lies within half a step of one end
    # of the range, both candidate ranges degenerate and the range stays as
    # asked, so 0 is not exactly a grid point of [lo, lo + r]. The forward's
    # own zero-point rounding still maps 0.0 to 0.0.
    lo_t, r_t = asymmetric_range(low, rng, bits=8)
    np.testing.assert_allclose([float(lo_t), float(r_t)], [low, rng], rtol=1e-7)
    y = asymmetric_quantize(jnp.array([0.0, low, low + rng]), low, rng, bits=8)
    assert float(y[0]) == 0.0
    k = np.asarray(y, np.float64) * 255 / rng
    np.testing.assert_allclose(k, np.rint(k), atol=1e-3)


@pytest.mark.parametrize("signed", [True, False])
def test_symmetric_zero_exact(signed):
    x = jnp.zeros((4,))
    for scale in (1e-3, 0.77, 31.0):
        y = symmetric_quantize(x, scale, bits=8, signed=signed, narrow_range=True)
        assert np.all(np.asarray(y) == 0.0)


def test_scale_sign_is_ignored_and_flips_the_gradient():
    x = jnp.asarray(REF_X, jnp.float32)

    def loss(s):
        return jnp.sum(symmetric_quantize(x, s, bits=4, signed=True, narrow_range=False) ** 2)

    np.testing.assert_array_equal(
        symmetric_quantize(x, -0.8, bits=4, signed=True, narrow_range=False),
        symmetric_quantize(x, 0.8, bits=4, signed=True, narrow_range=False),
    )
    np.testing.assert_allclose(jax.grad(loss)(-0.8), -jax.grad(loss)(0.8), rtol=1e-6)
    # As torch's abs in NNCF: a zero scale gets zero gradient.
    assert float(jax.grad(loss)(0.0)) == 0.0


def test_vmap_equals_loop():
    key_x, key_s = jax.random.split(jax.random.key(0))
    xs = jax.random.normal(key_x, (5, 4, 3))
    scales = jax.random.uniform(key_s, (5, 3), minval=0.2, maxval=2.0)
    sym = functools.partial(symmetric_quantize, bits=4, signed=True, narrow_range=True, axis=-1)
    asym = functools.partial(asymmetric_quantize, bits=3, axis=1)

    def loss(x, s):
        return jnp.sum(sym(x, s) ** 2) + jnp.sum(asym(x, -0.5 * s, s) ** 2)

    # Jitted on both sides only to keep the test fast; vmap is what is tested.
    value_and_grad = jax.value_and_grad(loss, argnums=(0, 1))
    batched = jax.jit(jax.vmap(value_and_grad))(xs, scales)
    one = jax.jit(value_and_grad)
    looped = [one(x, s) for x, s in zip(xs, scales, strict=True)]
    looped = jax.tree.map(lambda *leaves: jnp.stack(leaves), *looped)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), batched, looped
    )
    # A shared (unbatched) scale: its gradient is summed over the batch.
    shared = jax.jit(jax.grad(lambda s: jnp.sum(jax.vmap(lambda x: sym(x, s))(xs))))(scales[0])
    whole = jax.jit(jax.grad(lambda s: jnp.sum(sym(xs, s))))(scales[0])
    np.testing.assert_allclose(shared, whole, rtol=1e-5, atol=1e-6)


def test_grad_under_jit_equals_no_jit():
    x = jax.random.normal(jax.random.key(3), (3, 4, 5)) * 2
    args = (x, jnp.linspace(0.3, 2.0, 4), jnp.full((5,), -0.7), jnp.linspace(0.5, 3.0, 5))

    def loss(x, scale, low, rng):
        a = symmetric_quantize(x, scale, bits=5, signed=True, narrow_range=False, axis=1)
        b = asymmetric_quantize(x, low, rng, bits=6, axis=-1)
        return jnp.sum(a * b)

    grad = jax.grad(loss, argnums=(0, 1, 2, 3))
    # Equal up to float32 rounding: XLA fuses the jitted graph differently.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        jax.jit(grad)(*args),
        grad(*args),
    )


def test_jitted_call_makes_no_host_transfers():
    fq = jax.jit(functools.partial(symmetric_quantize, bits=8, signed=True, narrow_range=True))
    x, scale = jax.device_put(jnp.ones((4, 4))), jax.device_put(jnp.float32(0.5))
    fq(x, scale)
    with jax.transfer_guard("disallow"):
        fq(x, scale).block_until_ready()


def test_dtype_of_x_is_kept():
    x = jnp.linspace(-1, 1, 11, dtype=jnp.bfloat16)
    y = symmetric_quantize(x, jnp.float32(1.0), bits=8, signed=True, narrow_range=False)
    assert y.dtype == jnp.bfloat16
    y = asymmetric_quantize(x, -1.0, 2.0, bits=8)
    assert y.dtype == jnp.bfloat16


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda x: symmetric_quantize(x, 1.0, bits=1, signed=True, narrow_range=False), "bits"),
        (lambda x: symmetric_quantize(x, 1.0, bits=9, signed=True, narrow_range=False), "bits"),
        (lambda x: symmetric_quantize(x, 1.0, bits=8.0, signed=True, narrow_range=False), "bits"),
        (lambda x: symmetric_quantize(x, 1.0, bits=True, signed=True, narrow_range=False), "bits"),
        (lambda x: asymmetric_quantize(x, 0.0, 1.0, bits=16), "bits"),
        (lambda x: symmetric_quantize(x, 1.0, bits=8, signed=1, narrow_range=False), "signed"),
        (
            lambda x: symmetric_quantize(x, jnp.ones(1), bits=8, signed=True, narrow_range=False),
            r"scalar.*\(1,\)",
        ),
        (
            lambda x: symmetric_quantize(
                x, jnp.ones(4), bits=8, signed=True, narrow_range=False, axis=1
            ),
            r"scale.*\(5,\).*got shape \(4,\)",
        ),
        (
            lambda x: symmetric_quantize(
                x, jnp.ones(5), bits=8, signed=True, narrow_range=False, axis=2
            ),
            "axis=2 is out of range",
        ),
        (
            lambda x: asymmetric_quantize(x, jnp.zeros(4), jnp.ones(5), bits=8, axis=0),
            "input_range",
        ),
        (lambda x: asymmetric_quantize(x.astype(jnp.int32), 0.0, 1.0, bits=8), "floating-point"),
    ],
)
def test_bad_arguments_raise_usage_error(call, match):
    with pytest.raises(UsageError, match=match):
        call(jnp.ones((4, 5)))


def test_traced_bits_raise_usage_error():
    def fn(x, bits):
        return symmetric_quantize(x, 1.0, bits=bits, signed=True, narrow_range=False)

    with pytest.raises(UsageError, match="bits"):
        jax.jit(fn)(jnp.ones(3), 8)
