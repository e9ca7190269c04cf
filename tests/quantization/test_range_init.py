"""Range init statistics (REFERENCE.md section 6) against hand values and independent numpy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nncf_jax.errors import UsageError
from nncf_jax.quantization import range_init as ri
from nncf_jax.quantization.range_init import (
    RangeInitSpec,
    accumulate,
    asymmetric_range_from_minmax,
    finalize,
    init_accumulator,
    is_signed,
    symmetric_scale_from_minmax,
    weight_range,
)

SIGMA = 1.4826230


def collect(spec, batches):
    """Eager init / accumulate / finalize over the batches, as numpy."""
    acc = init_accumulator(spec, batches[0].shape, batches[0].dtype)
    for x in batches:
        acc = accumulate(spec, acc, jnp.asarray(x))
    lo, hi = finalize(spec, acc)
    return np.asarray(lo), np.asarray(hi)


def random_batches(sizes, sample_shape, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0.5, 2.0, (n, *sample_shape)).astype(np.float32) for n in sizes]


def truncate(batches, limit):
    """The batches as the statistic should see them: first `limit` rows, empty batches dropped."""
    out, left = [], limit
    for x in batches:
        if left > 0:
            out.append(x[:left])
            left -= len(x[:left])
    return out


def channel_rows(x, axis):
    """``x`` -> ``(x.shape[axis], everything else)``, an independent per-channel view."""
    return np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)


# Two batches of 2 and 1 samples, 2 values each; the per-unit statistics by hand:
# samples [-1, 2], [0, 4], [-3, 1]: mins -1, 0, -3; maxes 2, 4, 1; |max| 2, 4, 3.
# batches: mins -1, -3; maxes 4, 1; |max| 4, 3.
HAND = [np.array([[-1.0, 2.0], [0.0, 4.0]], np.float32), np.array([[-3.0, 1.0]], np.float32)]


@pytest.mark.parametrize(
    ("kind", "symmetric", "expected"),
    [
        ("min_max", True, (-3.0, 4.0)),
        ("min_max", False, (-3.0, 4.0)),
        ("mean_min_max", True, ((-1 - 3) / 2, (4 + 3) / 2)),
        ("mean_min_max", False, ((-1 - 3) / 2, (4 + 1) / 2)),
        ("mixed_min_max", True, (-3.0, (2 + 4 + 3) / 3)),
        ("mixed_min_max", False, ((-1 + 0 - 3) / 3, (2 + 4 + 1) / 3)),
    ],
)
def test_min_max_types_by_hand(kind, symmetric, expected):
    lo, hi = collect(RangeInitSpec(kind, num_init_samples=100, symmetric=symmetric), HAND)
    np.testing.assert_allclose([lo, hi], expected, rtol=1e-6)
    assert lo.shape == () and hi.shape == ()


def test_threesigma_by_hand_ignores_zeros():
    # median 3, |x - 3| = [2, 1, 0, 1, 97] -> MAD 1; the zeros are left out.
    x = np.array([[1.0, 0.0, 2.0, 3.0], [0.0, 4.0, 100.0, 0.0]], np.float32)
    lo, hi = collect(RangeInitSpec("threesigma", num_init_samples=8), [x])
    np.testing.assert_allclose([lo, hi], [3 - 3 * SIGMA, 3 + 3 * SIGMA], rtol=1e-6)


def test_percentile_by_hand():
    # 0, 1, ..., 100 in batches of 40 and 61 samples: the p-th percentile is p.
    values = np.arange(101, dtype=np.float32)[:, None]
    batches = [values[:40], values[40:]]
    spec = RangeInitSpec("percentile", num_init_samples=101, min_percentile=5, max_percentile=90)
    np.testing.assert_allclose(collect(spec, batches), [5.0, 90.0], rtol=1e-6)
    np.testing.assert_allclose(
        collect(RangeInitSpec("percentile", num_init_samples=101), batches), [0.1, 99.9], rtol=1e-5
    )
    # mean_percentile: batch percentiles [0.05 * 39, 0.95 * 39] = [1.95, 37.05] and [43, 97], averaged.
    spec = RangeInitSpec(
        "mean_percentile", num_init_samples=101, min_percentile=5, max_percentile=95
    )
    np.testing.assert_allclose(collect(spec, batches), [22.475, 67.025], rtol=1e-6)


SIZES = (4, 4, 4)  # num_init_samples 10 uses 4, 4 and 2 rows


def expected_stats(spec, batches, axis):
    """Independent numpy expression of each statistic over the truncated batches."""
    used = truncate(batches, spec.num_init_samples)
    everything = np.concatenate(used)
    if axis is None:
        per_channel = lambda x: x.reshape(1, -1)  # noqa: E731
    else:
        per_channel = lambda x: channel_rows(x, axis)  # noqa: E731
    mag = np.abs if spec.symmetric else (lambda v: v)
    allv = per_channel(everything)
    p = [spec.min_percentile, spec.max_percentile]
    if spec.type == "min_max" or (spec.type == "mixed_min_max" and axis is not None):
        lo, hi = allv.min(1), mag(allv).max(1)
    elif spec.type == "mean_min_max":
        lo = np.mean([per_channel(b).min(1) for b in used], axis=0)
        hi = np.mean([mag(per_channel(b)).max(1) for b in used], axis=0)
    elif spec.type == "mixed_min_max":
        samples = [per_channel(s[None]) for s in everything]
        hi = np.mean([mag(s).max(1) for s in samples], axis=0)
        if spec.symmetric:
            lo = allv.min(1)
        else:
            lo = np.mean([s.min(1) for s in samples], axis=0)
    elif spec.type == "percentile":
        lo, hi = np.percentile(allv, p, axis=1)
    elif spec.type == "mean_percentile":
        lo, hi = np.mean([np.percentile(per_channel(b), p, axis=1) for b in used], axis=0)
    else:  # threesigma
        lo, hi = [], []
        for row in allv:
            row = row[row != 0]
            med = np.median(row)
            sigma = SIGMA * np.median(np.abs(row - med))
            lo.append(med - 3 * sigma)
            hi.append(med + 3 * sigma)
        lo, hi = np.array(lo), np.array(hi)
    if axis is None:
        return lo[0], hi[0]
    return lo, hi


# Symmetry changes only the min/max types (their max is of |x| when symmetric).
KINDS = [(kind, True) for kind in ri.RANGE_INIT_TYPES] + [
    ("min_max", False),
    ("mean_min_max", False),
    ("mixed_min_max", False),
]


# Per tensor, per channel on the last axis and on axis 1; asymmetric per channel once.
CASES = [
    (kind, symmetric, sample_shape, axis)
    for sample_shape, axis in [((3, 5), None), ((6, 5), -1), ((3, 2, 5), 1)]
    for kind, symmetric in KINDS
    if symmetric or axis != -1
]


@pytest.mark.parametrize(("kind", "symmetric", "sample_shape", "axis"), CASES)
def test_each_type_matches_numpy_with_truncation(kind, symmetric, sample_shape, axis):
    batches = random_batches(SIZES, sample_shape, seed=ri.RANGE_INIT_TYPES.index(kind))
    # Outliers in the two rows past the limit must not reach the statistic.
    batches[2][2:] = 1e6
    spec = RangeInitSpec(kind, num_init_samples=10, symmetric=symmetric, axis=axis)
    lo, hi = collect(spec, batches)
    ndim = len(sample_shape) + 1
    exp_lo, exp_hi = expected_stats(spec, batches, None if axis is None else axis % ndim)
    np.testing.assert_allclose(lo, exp_lo, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hi, exp_hi, rtol=1e-5, atol=1e-6)
    assert hi.max() < 1e5
    channels = () if axis is None else ((1, *sample_shape)[axis],)
    assert lo.shape == channels and hi.shape == channels


def test_batches_of_different_sizes_and_a_batch_after_the_limit():
    batches = random_batches((5, 3, 5, 3), (7,), seed=3)  # uses 5, 3 and 2 rows
    # The types whose result depends on where batches start and end.
    for kind in ("mean_min_max", "mixed_min_max", "mean_percentile", "percentile"):
        spec = RangeInitSpec(kind, num_init_samples=10, symmetric=False)
        exp = expected_stats(spec, batches, None)
        np.testing.assert_allclose(collect(spec, batches), exp, rtol=1e-5, err_msg=kind)
    # The fourth batch lies wholly past the limit: same result without it.
    spec = RangeInitSpec("mean_min_max", num_init_samples=10)
    np.testing.assert_allclose(collect(spec, batches[:3]), collect(spec, batches), rtol=1e-6)


def test_mean_min_max_counts_batches_and_mixed_counts_samples():
    # Same rows, split differently: mixed (per sample) does not care, mean_min_max does.
    rows = random_batches((6,), (4,), seed=5)[0]
    one, three = [rows], [rows[:1], rows[1:2], rows[2:]]
    mixed = RangeInitSpec("mixed_min_max", num_init_samples=6)
    mean = RangeInitSpec("mean_min_max", num_init_samples=6)
    assert mixed.per_sample and not mean.per_sample
    np.testing.assert_allclose(collect(mixed, one), collect(mixed, three), rtol=1e-6)
    np.testing.assert_allclose(collect(mean, one), collect(RangeInitSpec("min_max", 6), one))
    assert not np.allclose(collect(mean, one), collect(mean, three))


# One type per code path of accumulate: per sample, per batch, batch percentiles, buffer.
@pytest.mark.parametrize("kind", ["mixed_min_max", "mean_min_max", "mean_percentile", "percentile"])
def test_jit_matches_eager_and_compiles_once(kind):
    # The third batch crosses the limit: truncation happens inside the compiled step.
    batches = random_batches((4, 4, 4), (2, 6), seed=7)
    spec = RangeInitSpec(kind, num_init_samples=9, axis=-1)
    traces = []

    def counted(spec, acc, x):
        traces.append(x.shape)
        return accumulate(spec, acc, x)

    step = jax.jit(counted, static_argnums=0)
    acc = init_accumulator(spec, batches[0].shape, jnp.float32)
    for x in batches:
        acc = step(spec, acc, jnp.asarray(x))
    assert traces == [(4, 2, 6)]  # traced once, reused for the next batches
    np.testing.assert_allclose(finalize(spec, acc), collect(spec, batches), rtol=1e-6)


def test_jitted_accumulate_makes_no_host_transfers():
    spec = RangeInitSpec("percentile", num_init_samples=8)
    x = jax.device_put(jnp.ones((4, 3)))
    acc = init_accumulator(spec, x.shape, x.dtype)
    step = jax.jit(accumulate, static_argnums=0)
    step(spec, acc, x)  # compile outside the guard
    with jax.transfer_guard("disallow"):
        acc = step(spec, acc, x)
        acc = step(spec, acc, x)
    assert int(acc.seen) == 8


def test_accumulator_is_a_stable_pytree():
    spec = RangeInitSpec("threesigma", num_init_samples=5, axis=1)
    acc = init_accumulator(spec, (2, 3, 4), jnp.bfloat16)
    new = accumulate(spec, acc, jnp.ones((2, 3, 4), jnp.bfloat16))
    assert jax.tree.structure(acc) == jax.tree.structure(new)
    for a, b in zip(jax.tree.leaves(acc), jax.tree.leaves(new), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
    assert acc.buffer.shape == (5, 3, 4) and acc.buffer.dtype == jnp.bfloat16
    assert acc.lo.dtype == jnp.float32 and acc.seen.dtype == jnp.int32


def test_buffer_is_capped_by_subsampling(monkeypatch):
    monkeypatch.setattr(ri, "MAX_BUFFER_VALUES", 400)
    batches = random_batches((8, 8), (500,), seed=11)
    spec = RangeInitSpec("percentile", num_init_samples=16, min_percentile=10, max_percentile=90)
    acc = init_accumulator(spec, batches[0].shape, jnp.float32)
    assert acc.buffer.shape == (16, 1, 25)  # 400 // 16 positions per sample
    for x in batches:
        acc = accumulate(spec, acc, x)
    lo, hi = finalize(spec, acc)
    exp_lo, exp_hi = np.percentile(np.concatenate(batches), [10, 90])
    # 400 of 8000 values from N(0.5, 2): the 10/90% quantiles within ~0.5.
    assert abs(float(lo) - exp_lo) < 0.5 and abs(float(hi) - exp_hi) < 0.5
    three = RangeInitSpec("threesigma", num_init_samples=16)
    assert init_accumulator(three, (1, 2, 500), jnp.float32).buffer.shape == (16, 1, 25)


def test_weight_range_per_tensor_and_per_channel():
    w = np.random.default_rng(2).normal(size=(3, 4, 5)).astype(np.float32)
    w[0, 0, :] = 0  # zeros are left out by threesigma
    for kind in ri.RANGE_INIT_TYPES:
        for axis in (None, 0):  # axis -1 is checked by hand below
            spec = RangeInitSpec(kind, axis=axis, symmetric=False, min_percentile=2)
            # One weight is one sample, so the activation statistic gives the same numbers.
            exp = expected_stats(
                RangeInitSpec(kind, num_init_samples=1, symmetric=False, min_percentile=2),
                [w[None]],
                None if axis is None else axis % 3 + 1,
            )
            np.testing.assert_allclose(weight_range(spec, w), exp, rtol=1e-5, err_msg=kind)
    lo, hi = weight_range(RangeInitSpec("min_max", axis=-1), w)
    np.testing.assert_allclose(hi, np.abs(w).max(axis=(0, 1)))
    np.testing.assert_allclose(lo, w.min(axis=(0, 1)))


def test_all_zero_channel_threesigma_is_zero():
    x = np.zeros((2, 3), np.float32)
    x[:, 1] = [1.0, 5.0]
    lo, hi = collect(RangeInitSpec("threesigma", num_init_samples=2, axis=1), [x])
    np.testing.assert_array_equal(lo[[0, 2]], 0)
    np.testing.assert_array_equal(hi[[0, 2]], 0)
    np.testing.assert_allclose([lo[1], hi[1]], [3 - 6 * SIGMA, 3 + 6 * SIGMA], rtol=1e-6)


def test_symmetric_scale_floor():
    scale = symmetric_scale_from_minmax(
        jnp.array([-3.0, 0.0, -0.05, 0.0]), jnp.array([1.0, 0.05, 0.02, 0.1])
    )
    np.testing.assert_allclose(scale, [3.0, 0.1, 0.1, 0.1])
    np.testing.assert_allclose(symmetric_scale_from_minmax(-0.5, 0.2, floor=1.0), 1.0)
    np.testing.assert_allclose(symmetric_scale_from_minmax(-0.5, 0.7), 0.7)


def test_asymmetric_widening_to_one_percent_of_the_widest_channel():
    lo = jnp.array([0.0, 1.0, -2.0, 3.0])
    hi = jnp.array([10.0, 1.0, -1.99, 8.0])
    low, width = asymmetric_range_from_minmax(lo, hi)
    # Widest range 10: channels narrower than 0.1 grow to 0.1 about their middle.
    np.testing.assert_allclose(width, [10.0, 0.1, 0.1, 5.0], rtol=1e-5)
    np.testing.assert_allclose(low, [0.0, 0.95, -2.045, 3.0], rtol=1e-5)
    low, width = asymmetric_range_from_minmax(jnp.float32(-1.0), jnp.float32(3.0))
    assert float(low) == -1.0 and float(width) == 4.0


def test_signedness():
    assert is_signed(jnp.array([0.0, -1e-6]))
    assert not is_signed(jnp.array([0.0, 2.0]))
    lo, _ = collect(RangeInitSpec("min_max", 8), [np.abs(random_batches((4,), (3,))[0])])
    assert not is_signed(lo)
    lo, _ = collect(RangeInitSpec("mixed_min_max", 8), HAND)
    assert is_signed(lo)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"type": "minmax"}, "'minmax'"),
        ({"type": "min_max", "min_percentile": -1}, "min_percentile"),
        ({"type": "percentile", "max_percentile": 100.5}, "100.5"),
        ({"type": "percentile", "min_percentile": 50, "max_percentile": 40}, "50"),
        ({"type": "percentile", "min_percentile": 5, "max_percentile": 5}, "min_percentile"),
        ({"num_init_samples": 0}, "num_init_samples"),
        ({"num_init_samples": 2.5}, "2.5"),
        ({"axis": 1.0}, "axis"),
        ({"symmetric": "yes"}, "'yes'"),
    ],
)
def test_bad_spec_raises_usage_error_naming_the_value(kwargs, named):
    with pytest.raises(UsageError, match=named):
        RangeInitSpec(**kwargs)


def test_bad_calls_raise_usage_error():
    with pytest.raises(UsageError, match="batch axis"):
        init_accumulator(RangeInitSpec(axis=0), (4, 3), jnp.float32)
    with pytest.raises(UsageError, match="rank-2"):
        init_accumulator(RangeInitSpec(axis=2), (4, 3), jnp.float32)
    with pytest.raises(UsageError, match="floating"):
        init_accumulator(RangeInitSpec(), (4, 3), jnp.int32)
    spec = RangeInitSpec("min_max", 4)
    acc = init_accumulator(spec, (4, 3), jnp.float32)
    with pytest.raises(UsageError, match=r"\(2, 4\)"):
        accumulate(spec, acc, jnp.ones((2, 4)))
    with pytest.raises(UsageError, match="no calibration samples"):
        finalize(spec, acc)
    with pytest.raises(UsageError, match="rank-2"):
        weight_range(RangeInitSpec(axis=-3), jnp.ones((2, 2)))
