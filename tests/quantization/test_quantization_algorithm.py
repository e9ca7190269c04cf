"""The quantization algorithm through create_compressed_model: REFERENCE.md sections 2, 6, 7."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nncf_jax as nj
from nncf_jax.checkpoint import CheckpointManager
from nncf_jax.errors import (
    ConfigError,
    NotAvailableError,
    ScopeError,
    StateMismatchError,
    UsageError,
)
from nncf_jax.quantization import asymmetric_quantize, symmetric_quantize

KERNEL = np.array(
    [
        [0.5, -0.2, 0.05],
        [-1.0, 0.3, 0.01],
        [0.25, 0.6, -0.02],
        [0.1, -0.4, 0.03],
        [0.0, 0.1, 0.04],
    ],
    np.float32,
)  # per-channel max |w|: 1.0, 0.6, 0.05 (floored to 0.1)
BIAS = np.array([0.1, -0.2, 0.3], np.float32)


class One(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(x)


class Two(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(6)(x))  # Dense_0: (5, 6)
        return nn.Dense(4)(h)  # Dense_1: (6, 4)


def _one():
    return One(), {
        "params": {"Dense_0": {"kernel": jnp.asarray(KERNEL), "bias": jnp.asarray(BIAS)}}
    }


def _two():
    model = Two()
    return model, model.init(jax.random.key(0), jnp.zeros((1, 5)))


def _config(sections=None, **quantization):
    if sections is None:
        sections = {"algorithm": "quantization", **quantization}
    return {"input_info": {"sample_size": [4, 5]}, "compression": sections}


def _batches(maxima, *, negative=None):
    """Three (4, 5) batches in [0, max_k] whose maxima are exactly ``maxima``."""
    out = []
    for k, top in enumerate(maxima):
        x = np.random.default_rng(10 + k).uniform(0, 0.9 * top, (4, 5)).astype(np.float32)
        x[k % 4, k] = top
        out.append(x)
    if negative is not None:
        out[1][2, 3] = negative
    return [jnp.asarray(x) for x in out]


def _quant_state(cstate):
    return cstate.algorithms["quantization"]


def _assert_bitwise_equal(a, b):
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b
    for u, v in zip(leaves_a, leaves_b, strict=True):
        u, v = np.asarray(u), np.asarray(v)
        assert u.dtype == v.dtype and u.shape == v.shape
        assert u.tobytes() == v.tobytes()


# --- range initialisation numbers ---------------------------------------------


@pytest.mark.parametrize(
    ("range_type", "expected"),
    [
        ("min_max", lambda b: max(float(x.max()) for x in b)),
        ("mean_min_max", lambda b: np.mean([float(x.max()) for x in b])),
        ("mixed_min_max", lambda b: np.mean([float(r.max()) for x in b for r in x])),
    ],
)
def test_activation_scale_from_calibration(range_type, expected):
    model, variables = _one()
    batches = _batches([0.5, 0.7, 0.9])
    config = _config(initializer={"range": {"type": range_type, "num_init_samples": 12}})
    ctrl, cstate = nj.create_compressed_model(model, variables, config, init_data=batches)
    act = _quant_state(cstate).activations["Dense_0"]["input"]
    assert set(act) == {"scale"}
    np.testing.assert_allclose(act["scale"], expected(batches), rtol=1e-6)
    stats = ctrl.statistics().quantization
    assert stats.aq_counter.num_unsigned == 1 and stats.aq_counter.num_signed == 0
    # Weights: per output channel max |w|, floored at 0.1.
    np.testing.assert_allclose(
        _quant_state(cstate).weights["Dense_0"]["kernel"]["scale"], [1.0, 0.6, 0.1], rtol=1e-6
    )


def test_negative_calibration_data_gives_signed_activations():
    model, variables = _one()
    batches = _batches([0.5, 0.7, 0.9], negative=-1.2)
    config = _config(initializer={"range": {"type": "min_max", "num_init_samples": 12}})
    ctrl, cstate = nj.create_compressed_model(model, variables, config, init_data=batches)
    np.testing.assert_allclose(_quant_state(cstate).activations["Dense_0"]["input"]["scale"], 1.2)
    stats = ctrl.statistics().quantization
    assert stats.aq_counter.num_signed == 1 and stats.aq_counter.num_unsigned == 0
    # Signed 8-bit full range: -2.0 clips to the lowest level, -128 steps of 1.2 / 127.
    y = ctrl.apply(variables, cstate, jnp.full((1, 5), -2.0))
    w = symmetric_quantize(
        jnp.asarray(KERNEL),
        jnp.array([1.0, 0.6, 0.1]),
        bits=8,
        signed=True,
        narrow_range=True,
        axis=-1,
    )
    np.testing.assert_allclose(y, jnp.full((1, 5), -1.2 * 128 / 127) @ w + BIAS, rtol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_compressed_forward_equals_hand_computed(jit):
    model, variables = _one()
    batches = _batches([0.5, 0.7, 0.9])
    config = _config(initializer={"range": {"type": "min_max", "num_init_samples": 12}})
    ctrl, cstate = nj.create_compressed_model(model, variables, config, init_data=batches)
    q = _quant_state(cstate)
    x = jnp.linspace(-0.2, 1.1, 20).reshape(4, 5)
    xq = symmetric_quantize(
        x, q.activations["Dense_0"]["input"]["scale"], bits=8, signed=False, narrow_range=False
    )
    wq = symmetric_quantize(
        jnp.asarray(KERNEL),
        q.weights["Dense_0"]["kernel"]["scale"],
        bits=8,
        signed=True,
        narrow_range=True,
        axis=-1,
    )
    # The quantized input: unsigned, 255 steps of 0.9 / 255, clipped to [0, 0.9].
    steps = np.asarray(xq) / (0.9 / 255)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
    assert float(xq.min()) == 0.0 and float(xq.max()) == pytest.approx(0.9)
    expected = xq @ wq + BIAS
    apply = jax.jit(ctrl.apply) if jit else ctrl.apply
    y = apply(variables, cstate, x)
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    assert float(jnp.max(jnp.abs(y - model.apply(variables, x)))) > 1e-2  # clipping shows


# --- asymmetric, statistics ------------------------------------------------------


def test_mixed_preset_asymmetric_state_and_statistics():
    model, variables = _two()
    batches = _batches([0.5, 0.7, 0.9], negative=-0.4)
    config = _config(
        preset="mixed",
        initializer={"range": {"type": "min_max", "num_init_samples": 12}},
        scope_overrides={
            "activations": {"Dense_1": {"mode": "symmetric", "bits": 4}},
            "weights": {"Dense_1": {"per_channel": False, "bits": 6}},
        },
    )
    ctrl, cstate = nj.create_compressed_model(model, variables, config, init_data=batches)
    q = _quant_state(cstate)
    first = q.activations["Dense_0"]["input"]
    assert set(first) == {"input_low", "input_range"}
    np.testing.assert_allclose(first["input_low"], -0.4, rtol=1e-6)
    np.testing.assert_allclose(first["input_range"], 0.9 + 0.4, rtol=1e-6)
    assert set(q.activations["Dense_1"]["input"]) == {"scale"}
    assert q.weights["Dense_0"]["kernel"]["scale"].shape == (6,)
    assert q.weights["Dense_1"]["kernel"]["scale"].shape == ()

    stats = ctrl.statistics().quantization
    wq, aq = stats.wq_counter, stats.aq_counter
    assert (wq.num_symmetric, wq.num_asymmetric) == (2, 0)
    assert (wq.num_signed, wq.num_unsigned) == (2, 0)
    assert (wq.num_per_channel, wq.num_per_tensor) == (1, 1)
    assert (aq.num_symmetric, aq.num_asymmetric) == (1, 1)
    assert (aq.num_signed, aq.num_unsigned) == (0, 2)  # after a ReLU; asymmetric is unsigned
    assert (aq.num_per_channel, aq.num_per_tensor) == (0, 2)
    assert stats.num_wq_per_bitwidth == {6: 1, 8: 1}
    assert stats.num_aq_per_bitwidth == {4: 1, 8: 1}
    assert stats.ratio_of_enabled_quantizations == 1.0
    text = stats.to_str()
    assert "Asymmetric" in text and "6-bit" in text

    # The first layer's input goes through NNCF's asymmetric quantizer.
    x = batches[0]
    h = asymmetric_quantize(x, first["input_low"], first["input_range"], bits=8)
    w0 = symmetric_quantize(
        variables["params"]["Dense_0"]["kernel"],
        q.weights["Dense_0"]["kernel"]["scale"],
        bits=8,
        signed=True,
        narrow_range=True,
        axis=-1,
    )
    h = jax.nn.relu(h @ w0 + variables["params"]["Dense_0"]["bias"])
    h = symmetric_quantize(
        h, q.activations["Dense_1"]["input"]["scale"], bits=4, signed=False, narrow_range=False
    )
    w1 = symmetric_quantize(
        variables["params"]["Dense_1"]["kernel"],
        q.weights["Dense_1"]["kernel"]["scale"],
        bits=6,
        signed=True,
        narrow_range=True,
    )
    expected = h @ w1 + variables["params"]["Dense_1"]["bias"]
    np.testing.assert_allclose(ctrl.apply(variables, cstate, x), expected, rtol=1e-5, atol=1e-6)


# --- resume ------------------------------------------------------------------------


def test_resume_reuses_saved_ranges_without_data():
    model, variables = _two()
    batches = _batches([0.5, 0.7, 0.9], negative=-0.3)
    config = _config(preset="mixed")
    ctrl, cstate = nj.create_compressed_model(model, variables, config, init_data=batches)
    saved = json.loads(json.dumps(ctrl.get_compression_state()))
    resumed, rstate = nj.create_compressed_model(model, variables, config, compression_state=saved)
    _assert_bitwise_equal(cstate, rstate)
    # Other data on resume changes nothing: no range initialisation runs.
    other = [b * 3.0 - 1.0 for b in batches]
    _, ostate = nj.create_compressed_model(
        model, variables, config, init_data=other, compression_state=saved
    )
    _assert_bitwise_equal(cstate, ostate)
    x = batches[0]
    np.testing.assert_array_equal(
        ctrl.apply(variables, cstate, x), resumed.apply(variables, rstate, x)
    )
    assert resumed.get_compression_state() == saved


def test_resume_with_other_bits_names_the_quantizer():
    model, variables = _two()
    ctrl, _ = nj.create_compressed_model(model, variables, _config(), init_data=_batches([1, 1, 1]))
    saved = json.loads(json.dumps(ctrl.get_compression_state()))
    with pytest.raises(StateMismatchError, match=r"'Dense_0/kernel'.*bits=8.*bits=4"):
        nj.create_compressed_model(
            model, variables, _config(weights={"bits": 4}), compression_state=saved
        )
    with pytest.raises(StateMismatchError, match=r"'Dense_1/input'.*mode"):
        nj.create_compressed_model(
            model,
            variables,
            _config(scope_overrides={"activations": {"Dense_1": {"mode": "asymmetric"}}}),
            compression_state=saved,
        )
    with pytest.raises(StateMismatchError, match=r"only in the saved state: \['Dense_1/input'"):
        nj.create_compressed_model(
            model, variables, _config(ignored_scopes=["Dense_1"]), compression_state=saved
        )


# --- composite with magnitude sparsity -----------------------------------------------

SPARSITY = {
    "algorithm": "magnitude_sparsity",
    "sparsity_init": 0.5,
    "params": {"sparsity_target": 0.5, "sparsity_target_epoch": 2},
}


@pytest.mark.parametrize("quantization_first", [False, True])
def test_composite_masks_then_quantizes(quantization_first):
    model, variables = _two()
    params = variables["params"]
    batches = _batches([0.5, 0.7, 0.9])
    sections = [SPARSITY, {"algorithm": "quantization"}]
    if quantization_first:
        sections = sections[::-1]
    ctrl, cstate = nj.create_compressed_model(
        model, variables, _config(sections), init_data=batches
    )
    sparse_ctrl, sparse_state = nj.create_compressed_model(model, variables, _config(SPARSITY))
    masked = sparse_ctrl.compress_params(params, sparse_state)
    q = _quant_state(cstate)
    compressed = jax.jit(ctrl.compress_params)(params, cstate)
    stripped = ctrl.strip(variables, cstate)
    for layer in ("Dense_0", "Dense_1"):
        w = masked[layer]["kernel"]
        assert 0.3 < float(jnp.mean(w == 0)) < 0.7
        scale = q.weights[layer]["kernel"]["scale"]
        expected = symmetric_quantize(w, scale, bits=8, signed=True, narrow_range=True, axis=-1)
        # Bitwise equal up to the ulp XLA's fusion may change under jit.
        np.testing.assert_allclose(compressed[layer]["kernel"], expected, rtol=1e-6, atol=0)
        np.testing.assert_array_equal(stripped["params"][layer]["kernel"], expected)
        steps = np.asarray(stripped["params"][layer]["kernel"]) / (np.asarray(scale) / 127)
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
        assert np.all(steps[np.asarray(w) == 0] == 0)
    x = batches[2]
    with ctrl.forward_context(cstate):
        y_stripped = model.apply(stripped, x)
    np.testing.assert_array_equal(y_stripped, ctrl.apply(variables, cstate, x))


# --- train step ---------------------------------------------------------------------------


def test_jitted_train_step_no_recompile_no_transfers():
    model, variables = _two()
    batches = _batches([0.5, 0.7, 0.9], negative=-0.5)
    ctrl, cstate = nj.create_compressed_model(
        model, variables, _config(preset="mixed"), init_data=batches, steps_per_epoch=10
    )
    tx = optax.adam(1e-2)
    x = jax.device_put(jnp.concatenate(batches))
    y = jax.device_put(jnp.arange(12) % 4)

    def loss_fn(params, cstate, x, y):
        logits = ctrl.apply({**variables, "params": params}, cstate, x)
        xent = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return xent + ctrl.loss(params, cstate)

    grads = jax.grad(loss_fn)(variables["params"], cstate, x, y)
    for layer in ("Dense_0", "Dense_1"):
        assert float(jnp.sum(jnp.abs(grads[layer]["kernel"]))) > 0, layer

    traces = []

    @jax.jit
    def step(variables, opt_state, cstate, x, y):
        traces.append(1)
        params = variables["params"]
        loss, grads = jax.value_and_grad(loss_fn)(params, cstate, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        updates, cstate = ctrl.transform.update(updates, cstate, params)
        params = optax.apply_updates(params, updates)
        return {**variables, "params": params}, opt_state, cstate, loss

    opt_state = tx.init(variables["params"])
    initial_ranges = _quant_state(cstate)
    variables, opt_state, cstate, first = step(variables, opt_state, cstate, x, y)
    losses = [float(first)]
    with jax.transfer_guard("disallow"):
        for _ in range(2):
            variables, opt_state, cstate, loss = step(variables, opt_state, cstate, x, y)
    losses.append(float(loss))
    assert len(traces) == 1 and step._cache_size() == 1
    assert losses[1] < losses[0]
    assert int(cstate.clock.step) == 3
    # Quantizer ranges are not trained by this step: they stay at their initial values.
    _assert_bitwise_equal(_quant_state(cstate), initial_ranges)


# --- precision initializers ---------------------------------------------------------------


def test_manual_precision_sets_bits():
    model, variables = _two()
    precision = {
        "type": "manual",
        "bitwidth_per_scope": [[4, "Dense_0/kernel"], [6, "{re}.*input"]],
    }
    ctrl, cstate = nj.create_compressed_model(
        model,
        variables,
        _config(initializer={"precision": precision}),
        init_data=_batches([1, 1, 1]),
    )
    stats = ctrl.statistics().quantization
    assert stats.bitwidths == {
        "Dense_0/kernel": 4,
        "Dense_1/kernel": 8,
        "Dense_0/input": 6,
        "Dense_1/input": 6,
    }
    kernel = np.asarray(ctrl.compress_params(variables["params"], cstate)["Dense_0"]["kernel"])
    scale = np.asarray(_quant_state(cstate).weights["Dense_0"]["kernel"]["scale"])
    steps = kernel / (scale / 7)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
    assert np.abs(np.round(steps)).max() == 7
    saved = json.loads(json.dumps(ctrl.get_compression_state()))
    assert saved["builder_state"]["quantization"]["precision"] == {
        "type": "manual",
        "bits": stats.bitwidths,
    }
    # Resuming with other manual bits contradicts the saved quantizer.
    precision["bitwidth_per_scope"][0][0] = 2
    with pytest.raises(StateMismatchError, match=r"'Dense_0/kernel'.*bits=4.*bits=2"):
        nj.create_compressed_model(
            model, variables, _config(initializer={"precision": precision}), compression_state=saved
        )


def test_hawq_meets_compression_ratio_and_is_recorded():
    model, variables = _two()
    precision = {"type": "hawq", "compression_ratio": 1.5, "iter_number": 20}
    ctrl, _ = nj.create_compressed_model(
        model,
        variables,
        _config(initializer={"precision": precision}),
        init_data=_batches([0.5, 0.7, 0.9]),
    )
    bits = ctrl.statistics().quantization.bitwidths
    sizes = {"Dense_0/kernel": 5 * 6, "Dense_1/kernel": 6 * 4}
    chosen = {n: bits[n] for n in sizes}
    assert set(chosen.values()) <= {2, 4, 8}
    ratio = sum(8 * n for n in sizes.values()) / sum(chosen[k] * n for k, n in sizes.items())
    assert ratio >= 1.5
    assert min(chosen.values()) < 8
    saved = json.loads(json.dumps(ctrl.get_compression_state()))
    record = saved["builder_state"]["quantization"]["precision"]
    assert record["type"] == "hawq"
    assert record["bits"] == chosen
    # Resume keeps the chosen bits without data (HAWQ does not run again).
    resumed, _ = nj.create_compressed_model(
        model, variables, _config(initializer={"precision": precision}), compression_state=saved
    )
    assert resumed.statistics().quantization.bitwidths == bits


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [0, 9])
def test_bits_out_of_range(bits):
    model, variables = _one()
    with pytest.raises(ConfigError, match=r"compression\.weights\.bits"):
        nj.create_compressed_model(
            model, variables, _config(weights={"bits": bits}), init_data=_batches([1, 1, 1])
        )


@pytest.mark.parametrize(
    ("section", "where"),
    [
        ({"activations": {"mode": "logarithmic"}}, r"compression\.activations\.mode"),
        ({"initializer": {"range": {"type": "max_abs"}}}, r"compression\.initializer\.range\.type"),
    ],
)
def test_unknown_enum_values(section, where):
    model, variables = _one()
    with pytest.raises(ConfigError, match=where):
        nj.create_compressed_model(
            model, variables, _config(**section), init_data=_batches([1, 1, 1])
        )


def test_scope_override_matching_nothing():
    model, variables = _one()
    config = _config(scope_overrides={"weights": {"Conv_7": {"bits": 4}}})
    with pytest.raises(ScopeError, match=r"scope_overrides.*Conv_7"):
        nj.create_compressed_model(model, variables, config, init_data=_batches([1, 1, 1]))


def test_activation_quantizers_need_init_data():
    model, variables = _one()
    with pytest.raises(UsageError, match="init_data"):
        nj.create_compressed_model(model, variables, _config())


def test_logarithm_scale_not_available():
    model, variables = _one()
    with pytest.raises(NotAvailableError, match=r"compression\.weights\.logarithm_scale"):
        nj.create_compressed_model(
            model, variables, _config(weights={"logarithm_scale": True}), init_data=_batches([1])
        )


@pytest.mark.parametrize(("mode", "half"), [("enable", [63, 63]), ("first_layer_only", [63, 127])])
def test_overflow_fix_uses_a_7_bit_grid(mode, half):
    model, variables = _two()
    ctrl, cstate = nj.create_compressed_model(
        model, variables, _config(overflow_fix=mode), init_data=_batches([1, 1, 1])
    )
    compressed = jax.jit(ctrl.compress_params)(variables["params"], cstate)
    for layer, levels in zip(("Dense_0", "Dense_1"), half, strict=True):
        kernel = np.asarray(compressed[layer]["kernel"])
        scale = np.asarray(_quant_state(cstate).weights[layer]["kernel"]["scale"])
        steps = kernel / (scale / levels)
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
        assert np.abs(np.round(steps)).max() == levels
    # The config's bits stay 8 (the 7-bit grid is a training-time detail).
    assert ctrl.statistics().quantization.num_wq_per_bitwidth == {8: 2}


# --- checkpoint ----------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path):
    model, variables = _two()
    batches = _batches([0.5, 0.7, 0.9], negative=-0.3)
    config = _config(preset="mixed")
    ctrl, cstate = nj.create_compressed_model(model, variables, config, init_data=batches)
    # Ranges a user trained: the restore must bring back these, not the initial ones.
    q = _quant_state(cstate)
    trained = q.replace(weights=jax.tree_util.tree_map(lambda s: s * 1.5, q.weights))
    cstate = cstate.replace(algorithms={**cstate.algorithms, "quantization": trained})
    with CheckpointManager(tmp_path / "ck") as manager:
        manager.save(1, ctrl=ctrl, variables=variables, cstate=cstate)
        manager.wait_until_finished()
        saved = manager.read_compression_state()
        ctrl2, template = nj.create_compressed_model(
            model, variables, config, compression_state=saved
        )
        restored = manager.restore(variables=variables, cstate=template, ctrl=ctrl2)
    _assert_bitwise_equal(restored.cstate, cstate)
    _assert_bitwise_equal(restored.variables, variables)
    x = batches[0]
    np.testing.assert_array_equal(
        ctrl2.apply(restored.variables, restored.cstate, x), ctrl.apply(variables, cstate, x)
    )
