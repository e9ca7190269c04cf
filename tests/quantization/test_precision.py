"""Mixed-precision bit widths: Hessian traces, quantization noise, HAWQ and manual choice."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nncf_jax.errors import ConfigError, ScopeError, UsageError
from nncf_jax.quantization.precision import (
    EXHAUSTIVE_LIMIT,
    choose_bitwidths,
    format_bitwidths,
    hutchinson_traces,
    manual_bitwidths,
    quantization_noise_table,
    weight_quantization_noise,
)

PRECISION = "compression.initializer.precision"


# --------------------------------------------------------------------------
# hutchinson_traces
# --------------------------------------------------------------------------


def _diagonal_problem():
    a = {
        "Conv_0/kernel": np.linspace(0.5, 3.0, 12, dtype=np.float32).reshape(3, 4),
        "Dense_0/kernel": np.array([10.0, -1.0, 4.0, 0.0, 2.0], np.float32),
    }
    weights = {"Conv_0/kernel": jnp.ones((3, 4)), "Dense_0/kernel": jnp.full((5,), 0.3)}

    def loss(w, scale):
        return 0.5 * scale * sum(jnp.sum(a[n] * w[n] ** 2) for n in w)

    return a, weights, loss


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    # With Rademacher v, v^T diag(a) v = sum(a) for every draw: no variance.
    a, weights, loss = _diagonal_problem()
    traces = hutchinson_traces(loss, weights, [1.0], jax.random.key(0), num_iters=3)
    assert list(traces) == list(weights)
    for name, t in traces.items():
        assert isinstance(t, float)
        np.testing.assert_allclose(t, a[name].mean(), rtol=1e-6)


def test_hutchinson_averages_the_hessian_over_batches():
    a, weights, loss = _diagonal_problem()
    traces = hutchinson_traces(loss, weights, [1.0, 2.0, 6.0], jax.random.key(0), num_iters=2)
    for name, t in traces.items():
        np.testing.assert_allclose(t, 3.0 * a[name].mean(), rtol=1e-6)


def test_hutchinson_estimates_dense_blocks_and_ignores_cross_terms():
    rng = np.random.default_rng(0)

    def spd(n):
        m = rng.normal(size=(n, n)) * 0.3
        return m @ m.T + np.diag(rng.uniform(1, 3, n))

    a1, a2 = spd(8), spd(6)
    coupling = rng.normal(size=(8, 6))  # off-diagonal Hessian block: no part of either trace

    def loss(w, _):
        x1, x2 = w["a"].reshape(-1), w["b"]
        return 0.5 * x1 @ a1 @ x1 + 0.5 * x2 @ a2 @ x2 + x1 @ coupling @ x2

    weights = {"a": jnp.ones((2, 4)), "b": jnp.zeros((6,))}
    traces = hutchinson_traces(
        loss, weights, [None], jax.random.key(0), num_iters=1000, tolerance=0
    )
    np.testing.assert_allclose(traces["a"], np.trace(a1) / 8, rtol=0.02)
    np.testing.assert_allclose(traces["b"], np.trace(a2) / 6, rtol=0.02)


def test_hutchinson_matches_the_exact_hessian_of_a_small_mlp():
    x = jax.random.normal(jax.random.key(1), (32, 3))
    y = jax.random.randint(jax.random.key(2), (32,), 0, 2)

    def loss(w, batch):
        inputs, labels = batch
        logits = jnp.tanh(inputs @ w["l1"]) @ w["l2"]
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(labels.shape[0]), labels])

    w = {
        "l1": jax.random.normal(jax.random.key(3), (3, 4)),
        "l2": jax.random.normal(jax.random.key(4), (4, 2)),
    }
    flat, unravel = jax.flatten_util.ravel_pytree(w)
    hessian = jax.jit(jax.hessian(lambda f: loss(unravel(f), (x, y))))
    diag = np.diag(np.asarray(hessian(flat)))
    exact = {"l1": diag[:12].mean(), "l2": diag[12:].mean()}  # ravel order: sorted keys
    traces = hutchinson_traces(loss, w, [(x, y)], jax.random.key(0), num_iters=1000, tolerance=0)
    for name in w:
        np.testing.assert_allclose(traces[name], exact[name], rtol=0.06)


def _dense_problem():
    a = np.array([[2.0, 1.0, 0.5], [1.0, 3.0, -1.0], [0.5, -1.0, 1.0]], np.float32)

    def loss(w, _):
        return 0.5 * w["k"] @ a @ w["k"]

    return loss, {"k": jnp.ones(3)}


def test_hutchinson_stops_when_the_total_trace_settles():
    loss, weights = _dense_problem()
    key = jax.random.key(7)
    two = hutchinson_traces(loss, weights, [None], key, num_iters=2, tolerance=0)
    three = hutchinson_traces(loss, weights, [None], key, num_iters=3, tolerance=0)
    early = hutchinson_traces(loss, weights, [None], key, num_iters=100, tolerance=1e9)
    assert early == two  # stopped at the second iteration, the earliest allowed
    assert three != two  # the dense A gives a different draw at iteration 3


def test_hutchinson_traces_the_loss_once_whatever_the_iterations_and_batches():
    calls = []
    _, weights, loss = _diagonal_problem()

    def counted(w, scale):
        calls.append(1)  # runs only while JAX traces
        return loss(w, scale)

    def traced(batches, num_iters):
        calls.clear()
        hutchinson_traces(counted, weights, batches, jax.random.key(0), num_iters=num_iters)
        return len(calls)

    traced([1.0], 1)  # warms JAX's cache of the shape check
    assert traced([1.0], 1) == 1
    assert traced([1.0, 2.0, 3.0], 6) == 1


@pytest.mark.parametrize(
    ("weights", "batches", "kwargs", "match"),
    [
        ({}, [None], {"num_iters": 2}, "weights is empty"),
        ({"k": jnp.ones(3, jnp.int32)}, [None], {"num_iters": 2}, "floating"),
        ({"k": jnp.ones((0, 3))}, [None], {"num_iters": 2}, "empty"),
        ({"k": jnp.ones(3)}, [], {"num_iters": 2}, "batches is empty"),
        ({"k": jnp.ones(3)}, [None], {"num_iters": 0}, "num_iters"),
        ({"k": jnp.ones(3)}, [None], {"num_iters": 2, "tolerance": -1.0}, "tolerance"),
    ],
)
def test_hutchinson_rejects_bad_arguments(weights, batches, kwargs, match):
    def loss(w, _):
        return sum(jnp.sum(v.astype(jnp.float32) ** 2) for v in w.values())

    with pytest.raises(UsageError, match=match):
        hutchinson_traces(loss, weights, batches, jax.random.key(0), **kwargs)


def test_hutchinson_rejects_a_non_scalar_loss():
    with pytest.raises(UsageError, match="real scalar"):
        hutchinson_traces(
            lambda w, _: w["k"] ** 2, {"k": jnp.ones(3)}, [None], jax.random.key(0), num_iters=2
        )


# --------------------------------------------------------------------------
# weight_quantization_noise
# --------------------------------------------------------------------------


def test_noise_per_channel_by_hand():
    # Channel 0: [1, 0.5], scale 1, 1 level: q = [1, 0] (0.5 rounds to even), error 0.25.
    # Channel 1: [-2, 1], scale 2: q = [-2, 0], error 1.
    w = jnp.array([[1.0, -2.0], [0.5, 1.0]])
    assert float(weight_quantization_noise(w, 2)) == pytest.approx(1.25)
    # One scale (2) for the tensor: q = [[0, -2], [0, 0]] -> 1 + 0 + 0.25 + 1.
    assert float(weight_quantization_noise(w, 2, axis=None)) == pytest.approx(2.25)
    # Axis 0 (rows): row [1, -2] -> [0, -2], error 1; row [0.5, 1] -> [0, 1], error 0.25.
    assert float(weight_quantization_noise(w, 2, axis=0)) == pytest.approx(1.25)


def test_noise_at_3_bits_by_hand():
    # 3 levels, scale 3: w * 3 / 3 = w, round(1.4) = 1, round(2.6) = 3 -> errors 0.16 + 0.16.
    w = jnp.array([1.4, 2.6, 3.0, -3.0])
    assert float(weight_quantization_noise(w, 3, axis=None)) == pytest.approx(0.32, rel=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_noise_falls_with_bits_and_zero_channels_are_exact(jit):
    w = jax.random.normal(jax.random.key(0), (3, 3, 4, 8)).at[..., 2].set(0.0)
    fn = weight_quantization_noise
    if jit:
        fn = jax.jit(fn, static_argnames=("bits", "axis"))
    noise = [float(fn(w, b)) for b in (2, 4, 8)]
    assert noise[0] > noise[1] > noise[2] > 0
    assert float(fn(w[..., 2:3], 2)) == 0.0
    # bf16 weights are measured in float32, from their (rounded) values.
    w16 = w.astype(jnp.bfloat16)
    assert float(fn(w16, 4)) == pytest.approx(float(fn(w16.astype(jnp.float32), 4)))


def test_noise_rejects_bad_bits_and_axis():
    with pytest.raises(UsageError, match="bits"):
        weight_quantization_noise(jnp.ones(3), 1)
    with pytest.raises(UsageError, match="axis 2"):
        weight_quantization_noise(jnp.ones((2, 2)), 4, axis=2)
    with pytest.raises(UsageError, match=r"^Conv_0/kernel: "):
        quantization_noise_table({"Conv_0/kernel": jnp.ones(3)}, [4], axis=1)


def test_noise_table():
    w = {"a": jnp.array([[1.0, -2.0], [0.5, 1.0]]), "b": jnp.ones((2, 3))}
    table = quantization_noise_table(w, [2, 8])
    assert list(table) == ["a", "b"] and list(table["a"]) == [2, 8]
    assert table["a"][2] == pytest.approx(1.25)
    # All-ones channels sit on the grid: no noise (up to float rounding).
    assert table["b"] == pytest.approx({2: 0.0, 8: 0.0}, abs=1e-12)


# --------------------------------------------------------------------------
# choose_bitwidths
# --------------------------------------------------------------------------


def _ratio(choice, sizes):
    return 8 * sum(sizes.values()) / sum(sizes[n] * b for n, b in choice.items())


def _enumerate(traces, sizes, noise, bits, ratio):
    """The least perturbation over every feasible configuration (test oracle)."""
    names = list(traces)
    best = np.inf
    for config in itertools.product(bits, repeat=len(names)):
        choice = dict(zip(names, config, strict=True))
        if _ratio(choice, sizes) >= ratio * (1 - 1e-12):
            best = min(best, sum(max(traces[n], 0) * noise[n][choice[n]] for n in names))
    return best


def _perturbation(choice, traces, noise):
    return sum(max(traces[n], 0) * noise[n][b] for n, b in choice.items())


def _standard_noise(scale):
    # Quantization noise of a uniform quantizer shrinks ~4x per extra bit.
    return {b: scale * 4.0 ** (-b) for b in (2, 4, 8)}


def test_choice_keeps_the_sensitive_layer_wide_and_squeezes_the_big_flat_one():
    traces = {"conv": 50.0, "mid": 1.0, "big": 0.01}
    sizes = {"conv": 100, "mid": 1000, "big": 10000}
    noise = {n: _standard_noise(1000.0) for n in traces}
    # 8 * 11100 / ratio 2 = 44400 bits; 8*100 + 4*1000 + 2*10000 = 24800 would be
    # ratio 3.6; 8*100 + 8*1000 + 2*10000 = 28800 is ratio 3.08 with mid at 8.
    choice = choose_bitwidths(traces, sizes, noise, compression_ratio=3.0)
    assert choice == {"conv": 8, "mid": 8, "big": 2}
    assert _ratio(choice, sizes) >= 3.0
    # A tighter ratio moves the middle layer, not the sensitive one.
    choice = choose_bitwidths(traces, sizes, noise, compression_ratio=3.5)
    assert choice == {"conv": 8, "mid": 4, "big": 2}
    # Ratio 1 asks nothing: everything stays at 8 bits.
    assert choose_bitwidths(traces, sizes, noise, compression_ratio=1.0) == dict.fromkeys(traces, 8)


@pytest.mark.parametrize("seed", range(6))
def test_exhaustive_choice_is_optimal_and_feasible(seed):
    rng = np.random.default_rng(seed)
    names = [f"layer_{i}" for i in range(6)]
    traces = {n: float(rng.lognormal(0, 2)) for n in names}
    sizes = {n: int(rng.integers(10, 5000)) for n in names}
    noise = {n: {b: float(rng.uniform(0.5, 2) * 4.0 ** (-b)) for b in (2, 4, 8)} for n in names}
    ratio = float(rng.uniform(1.2, 3.5))
    choice = choose_bitwidths(traces, sizes, noise, compression_ratio=ratio, method="exhaustive")
    assert _ratio(choice, sizes) >= ratio
    expected = _enumerate(traces, sizes, noise, (2, 4, 8), ratio)
    assert _perturbation(choice, traces, noise) == pytest.approx(expected, rel=1e-12)
    # Greedy meets the ratio too, never beating the optimum.
    greedy = choose_bitwidths(traces, sizes, noise, compression_ratio=ratio, method="greedy")
    assert _ratio(greedy, sizes) >= ratio
    assert _perturbation(greedy, traces, noise) >= expected * (1 - 1e-12)


@pytest.mark.parametrize(
    ("traces", "ratio"),
    [
        ({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}, 2.0),  # every layer to 4 bits
        ({"a": 1e4, "b": 1.0, "c": 2.0, "d": 3.0}, 1.6),  # the first keeps 8
        ({"a": 5.0, "b": 0.1, "c": 0.2, "d": 50.0}, 2.0),
        ({"a": 5.0, "b": 0.1, "c": 0.2, "d": 50.0}, 4.0),  # all at 2 bits
    ],
)
def test_greedy_equals_exhaustive_when_greedy_is_optimal(traces, ratio):
    # Equal sizes and convex noise (~4^-b): the steps down are taken in order
    # of cost per bit and fill the budget exactly, so greedy is optimal.
    sizes = dict.fromkeys(traces, 256)
    noise = {n: _standard_noise(100.0) for n in traces}
    exact = choose_bitwidths(traces, sizes, noise, compression_ratio=ratio, method="exhaustive")
    greedy = choose_bitwidths(traces, sizes, noise, compression_ratio=ratio, method="greedy")
    assert greedy == exact


def test_greedy_gives_back_what_its_last_step_overshot():
    # "small" costs the least per bit saved, so greedy lowers it first; that
    # is not enough, and lowering "big" then overshoots the budget so far
    # that "small" fits back at 8 bits, which also lowers the perturbation.
    traces = {"small": 1e-6, "big": 0.001}
    sizes = {"small": 10, "big": 1000}
    noise = {n: {4: 1.0, 8: 0.0} for n in traces}
    # Budget 8 * 1010 / 1.05 = 7695 bits: 8 * 10 + 4 * 1000 = 4080 fits.
    kwargs = {"bits": (4, 8), "compression_ratio": 1.05}
    greedy = choose_bitwidths(traces, sizes, noise, method="greedy", **kwargs)
    assert greedy == {"small": 8, "big": 4}
    assert choose_bitwidths(traces, sizes, noise, method="exhaustive", **kwargs) == greedy


def test_auto_uses_greedy_beyond_the_limit():
    names = [f"l{i}" for i in range(12)]  # 3 ** 12 > EXHAUSTIVE_LIMIT
    assert 3 ** len(names) > EXHAUSTIVE_LIMIT
    traces = dict.fromkeys(names, 1.0)
    sizes = dict.fromkeys(names, 64)
    noise = {n: _standard_noise(1.0) for n in names}
    choice = choose_bitwidths(traces, sizes, noise, compression_ratio=2.0)
    assert choice == dict.fromkeys(names, 4)
    with pytest.raises(UsageError, match="over the limit"):
        choose_bitwidths(traces, sizes, noise, compression_ratio=2.0, method="exhaustive")


def test_noise_callable_and_array_sizes_give_the_same_choice():
    traces = {"a": 3.0, "b": 0.5, "c": 0.1}
    arrays = {"a": jnp.ones((4, 8)), "b": jnp.ones((16, 16)), "c": jnp.ones((3, 3, 8, 32))}
    sizes = {n: int(w.size) for n, w in arrays.items()}
    table = quantization_noise_table(
        {
            n: jax.random.normal(jax.random.key(i), w.shape)
            for i, (n, w) in enumerate(arrays.items())
        },
        (2, 4, 8),
    )
    by_table = choose_bitwidths(traces, sizes, table, compression_ratio=2.5)
    by_call = choose_bitwidths(traces, arrays, lambda n, b: table[n][b], compression_ratio=2.5)
    assert by_table == by_call
    assert _ratio(by_table, sizes) >= 2.5


def test_negative_trace_counts_as_zero():
    traces = {"a": -5.0, "b": 1.0}
    sizes = {"a": 100, "b": 100}
    noise = {n: {4: 1.0, 8: 0.1} for n in traces}
    choice = choose_bitwidths(traces, sizes, noise, bits=(4, 8), compression_ratio=1.3)
    assert choice == {"a": 4, "b": 8}


def test_unreachable_ratio_names_the_config_key_and_the_best_ratio():
    traces, sizes = {"a": 1.0}, {"a": 10}
    noise = {"a": {4: 1.0, 8: 0.0}}
    with pytest.raises(ConfigError) as err:
        choose_bitwidths(
            traces, sizes, noise, bits=(4, 8), compression_ratio=2.5, config_path=PRECISION
        )
    assert err.value.path == f"{PRECISION}.compression_ratio"
    assert "with every weight quantizer at 4 bits the ratio is 2" in str(err.value)
    with pytest.raises(UsageError, match=r"compression_ratio: 2\.5 cannot be reached"):
        choose_bitwidths(traces, sizes, noise, bits=(4, 8), compression_ratio=2.5)
    # Exactly the best ratio is reachable.
    assert choose_bitwidths(traces, sizes, noise, bits=(4, 8), compression_ratio=2.0) == {"a": 4}


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"bits": ()}, "bits"),
        ({"bits": (4, 1)}, "bits"),
        ({"bits": (4.0, 8)}, "bits"),
        ({"compression_ratio": 0.0}, "compression_ratio"),
        ({"compression_ratio": float("nan")}, "compression_ratio"),
    ],
)
def test_bad_config_values_name_their_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        choose_bitwidths(
            {"a": 1.0}, {"a": 4}, {"a": {2: 1.0, 4: 1.0, 8: 1.0}}, config_path=PRECISION, **kwargs
        )
    assert err.value.path == f"{PRECISION}.{key}"


@pytest.mark.parametrize(
    ("traces", "sizes", "noise", "match"),
    [
        ({"a": 1.0}, {"b": 4}, {"a": {4: 1.0, 8: 0.0}}, "missing \\['a'\\]"),
        ({"a": float("inf")}, {"a": 4}, {"a": {4: 1.0, 8: 0.0}}, "finite"),
        ({"a": 1.0}, {"a": 4}, {"a": {8: 0.0}}, "no noise for 'a' at 4 bits"),
        ({"a": 1.0}, {"a": 4}, {"a": {4: -1.0, 8: 0.0}}, ">= 0"),
        ({"a": 1.0}, {"a": 0}, {"a": {4: 1.0, 8: 0.0}}, "at least 1"),
    ],
)
def test_bad_inputs_are_usage_errors(traces, sizes, noise, match):
    with pytest.raises(UsageError, match=match):
        choose_bitwidths(traces, sizes, noise, bits=(4, 8))


def test_no_quantizers_is_an_empty_choice():
    assert choose_bitwidths({}, {}, {}) == {}


# --------------------------------------------------------------------------
# manual_bitwidths and format_bitwidths
# --------------------------------------------------------------------------

NAMES = ["Conv_0/kernel", "Conv_1/kernel", "Dense_0/kernel", "Dense_1/kernel"]


def test_manual_exact_module_and_regex_scopes_last_pair_wins():
    pairs = [
        [4, "{re}^Conv"],
        [2, "Dense_1/kernel"],  # exact parameter path
        [8, "Conv_1"],  # module path; overrides the {re} pair before it
    ]
    assert manual_bitwidths(pairs, NAMES, 8, config_path=PRECISION) == {
        "Conv_0/kernel": 4,
        "Conv_1/kernel": 8,
        "Dense_0/kernel": 8,
        "Dense_1/kernel": 2,
    }
    assert manual_bitwidths(None, NAMES, 6, config_path=PRECISION) == dict.fromkeys(NAMES, 6)


def test_manual_scope_matching_nothing_names_its_index():
    with pytest.raises(ConfigError) as err:
        manual_bitwidths(
            [[4, "Conv_0"], [2, "Conv_2/kernel"]], NAMES, 8, config_path="compression[1]"
        )
    assert isinstance(err.value, ScopeError)
    assert err.value.path == "compression[1].bitwidth_per_scope[1]"
    message = str(err.value)
    assert "'Conv_2/kernel' matches no quantizer" in message
    assert "quantizers: Conv_0/kernel, Conv_1/kernel, Dense_0/kernel, Dense_1/kernel" in message
    with pytest.raises(ScopeError, match=r"bitwidth_per_scope\[0\]: scope '\{re\}\^Pool'"):
        manual_bitwidths([[4, "{re}^Pool"]], NAMES, 8, config_path=PRECISION)


@pytest.mark.parametrize(
    ("pair", "match"),
    [
        ([4], "pair"),
        ("4 Conv_0", "pair"),
        ([1, "Conv_0"], "bits must be an int >= 2"),
        ([True, "Conv_0"], "bits must be an int >= 2"),
        ([4, 7], "scope must be a string"),
        ([4, "{re}(unclosed"], "invalid regular expression"),
        ([4, "{re}(.*.*)*Z"], "backtrack"),
    ],
)
def test_manual_bad_pairs(pair, match):
    with pytest.raises(ConfigError, match=match) as err:
        manual_bitwidths([[8, "Conv_0"], pair], NAMES, 8, config_path=PRECISION)
    assert err.value.path == f"{PRECISION}.bitwidth_per_scope[1]"


def test_format_bitwidths():
    text = format_bitwidths({"Conv_0/kernel": 8, "Dense_0/kernel": 4, "Dense_1/kernel": 4})
    assert text.splitlines() == [
        "quantizer       bits",
        "Conv_0/kernel      8",
        "Dense_0/kernel     4",
        "Dense_1/kernel     4",
        "8 bits: 1, 4 bits: 2",
    ]
    assert format_bitwidths({}) == "(no weight quantizers)"
