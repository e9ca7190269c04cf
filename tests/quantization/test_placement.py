"""Quantizer placement on a linen model: names, counts, scopes, overrides (REFERENCE.md 2, 6)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nncf_jax as nj

MHA = "MultiHeadDotProductAttention_0"


def _custom_attention(query, key, value, **kwargs):
    return nn.dot_product_attention(query, key, value, **kwargs)


class Net(nn.Module):
    """Dense -> attention -> DenseGeneral (2, 4) -> Conv -> BatchNorm -> Einsum on (B, 4, 6)."""

    attention_fn: object = nn.dot_product_attention

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(8)(x)
        h = nn.MultiHeadDotProductAttention(
            num_heads=2, qkv_features=8, attention_fn=self.attention_fn
        )(h)
        h = nn.DenseGeneral((2, 4))(h)  # (B, 4, 2, 4)
        h = h.reshape(h.shape[0], 4, 8, 1)
        h = nn.Conv(3, (3, 3))(h)
        h = nn.BatchNorm(use_running_average=True)(h)
        h = h.reshape(h.shape[0], -1)
        return nn.Einsum((96, 5), "bi,io->bo")(h)


KERNELS = [
    "Conv_0/kernel",
    "DenseGeneral_0/kernel",
    "Dense_0/kernel",
    "Einsum_0/kernel",
    f"{MHA}/key/kernel",
    f"{MHA}/out/kernel",
    f"{MHA}/query/kernel",
    f"{MHA}/value/kernel",
]
OP_INPUTS = [
    "Conv_0/input",
    "DenseGeneral_0/input",
    "Dense_0/input",
    "Einsum_0/input",
    f"{MHA}/key/input",
    f"{MHA}/out/input",
    f"{MHA}/query/input",
    f"{MHA}/value/input",
]
MATMUL_INPUTS = [
    f"{MHA}/av_matmul/value",
    f"{MHA}/av_matmul/weights",
    f"{MHA}/qk_matmul/key",
    f"{MHA}/qk_matmul/query",
]


@pytest.fixture(scope="module")
def net():
    model = Net()
    x = jax.random.uniform(jax.random.key(1), (4, 4, 6))  # in [0, 1): unsigned model input
    variables = model.init(jax.random.key(0), x)
    return model, variables, x


def _build(net, **section):
    model, variables, x = net
    config = {
        "input_info": {"sample_size": [4, 4, 6]},
        "compression": {"algorithm": "quantization", **section},
    }
    return nj.create_compressed_model(model, variables, config, init_data=[x])


def _names(tree):
    """``{"A": {"B": {"scale": ...}}}`` -> sorted ``["A/B"]`` (a quantizer is a dict of arrays)."""
    out = []

    def walk(node, prefix):
        if any(not isinstance(v, dict) for v in node.values()):
            out.append("/".join(prefix))
            return
        for k, v in node.items():
            walk(v, (*prefix, k))

    walk(tree, ())
    return sorted(out)


def _split(ctrl):
    """Weight and activation quantizer names from the statistics, sorted."""
    bitwidths = ctrl.statistics().quantization.bitwidths
    weights = sorted(n for n in bitwidths if n.endswith("/kernel"))
    return weights, sorted(set(bitwidths) - set(weights))


def test_default_placement_names_counts_and_shapes(net):
    _, variables, _ = net
    ctrl, cstate = _build(net)
    qstate = cstate.algorithms["quantization"]
    weights, activations = _split(ctrl)
    assert weights == KERNELS
    assert activations == sorted(OP_INPUTS + MATMUL_INPUTS)
    assert _names(qstate.weights) == KERNELS
    assert _names(qstate.activations) == activations
    stats = ctrl.statistics().quantization
    assert (stats.wq_counter.total_count, stats.aq_counter.total_count) == (8, 12)
    # BatchNorm has params but is not a quantizable op.
    assert not any(n.startswith("BatchNorm") for n in weights + activations)
    assert "BatchNorm_0" not in qstate.weights

    # Weights: per output channel (the kernel's last axis); activations: per tensor.
    params = variables["params"]
    for name in KERNELS:
        kernel = params
        scale = qstate.weights
        for part in name.split("/"):
            kernel, scale = kernel[part], scale[part]
        assert set(scale) == {"scale"}
        assert scale["scale"].shape == (kernel.shape[-1],), name
        np.testing.assert_allclose(
            scale["scale"],
            np.maximum(np.abs(np.asarray(kernel)).reshape(-1, kernel.shape[-1]).max(0), 0.1),
            rtol=1e-6,
            err_msg=name,
        )
    for name in activations:
        node = qstate.activations
        for part in name.split("/"):
            node = node[part]
        assert node["scale"].shape == (), name

    # The model input is in [0, 1) and the softmax weights are >= 0: unsigned.
    assert stats.aq_counter.num_unsigned == 2
    assert stats.aq_counter.num_signed == 10


def test_quantize_inputs_false_drops_only_the_input_fed_op(net):
    ctrl, _ = _build(net, quantize_inputs=False)
    weights, activations = _split(ctrl)
    assert weights == KERNELS
    assert activations == sorted(set(OP_INPUTS + MATMUL_INPUTS) - {"Dense_0/input"})


def test_quantize_outputs_adds_output_quantizers(net):
    ctrl, cstate = _build(net, quantize_outputs=True)
    _, activations = _split(ctrl)
    outputs = sorted(n for n in activations if n.endswith("/output"))
    ops = ["Conv_0", "DenseGeneral_0", "Dense_0", "Einsum_0", MHA]
    ops += [f"{MHA}/{p}" for p in ("key", "out", "query", "value")]
    assert outputs == sorted(f"{op}/output" for op in ops)
    assert sorted(set(activations) - set(outputs)) == sorted(OP_INPUTS + MATMUL_INPUTS)
    # The output quantizers act: the model output (Einsum's output) is on its grid.
    _, variables, x = net
    y = np.asarray(jax.jit(ctrl.apply)(variables, cstate, x))
    scale = float(cstate.algorithms["quantization"].activations["Einsum_0"]["output"]["scale"])
    steps = y / (scale / 127)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
    assert np.abs(steps).max() > 20  # a real grid, not a collapsed one


def test_ignored_scope_on_module_removes_kernel_and_input(net):
    ctrl, _ = _build(net, ignored_scopes=["Conv_0", f"{MHA}/query"])
    weights, activations = _split(ctrl)
    gone = {"Conv_0/kernel", f"{MHA}/query/kernel"}
    assert weights == sorted(set(KERNELS) - gone)
    assert activations == sorted(
        set(OP_INPUTS + MATMUL_INPUTS) - {"Conv_0/input", f"{MHA}/query/input"}
    )


def test_scope_overrides_change_bits_and_grid(net):
    _, variables, _ = net
    ctrl, cstate = _build(
        net,
        scope_overrides={
            "activations": {"{re}Conv": {"bits": 4}},
            "weights": {"Conv_0": {"bits": 4}},
        },
    )
    stats = ctrl.statistics().quantization
    assert stats.bitwidths["Conv_0/input"] == 4
    assert stats.bitwidths["Conv_0/kernel"] == 4
    assert stats.num_aq_per_bitwidth == {4: 1, 8: 11}
    assert stats.num_wq_per_bitwidth == {4: 1, 8: 7}
    # 4-bit narrow signed weights: levels -7..7 in steps of scale / 7.
    for jit in (False, True):
        compress = jax.jit(ctrl.compress_params) if jit else ctrl.compress_params
        kernel = np.asarray(compress(variables["params"], cstate)["Conv_0"]["kernel"])
        scale = np.asarray(cstate.algorithms["quantization"].weights["Conv_0"]["kernel"]["scale"])
        steps = kernel / (scale / 7)
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
        assert np.abs(np.round(steps)).max() == 7
        assert len(np.unique(np.round(steps))) <= 15


def test_attention_matmul_quantizers_act(net):
    """2-bit quantizers on the softmax weights change the forward; 8-bit is close to float."""
    model, variables, x = net
    ctrl8, cstate8 = _build(net)
    ctrl2, cstate2 = _build(
        net, scope_overrides={"activations": {f"{MHA}/av_matmul/weights": {"bits": 2}}}
    )
    y_float = model.apply(variables, x)
    y8 = ctrl8.apply(variables, cstate8, x)
    y2 = ctrl2.apply(variables, cstate2, x)
    err8 = float(jnp.max(jnp.abs(y8 - y_float)))
    err2 = float(jnp.max(jnp.abs(y2 - y_float)))
    assert 0 < err8 < err2
    assert ctrl2.statistics().quantization.num_aq_per_bitwidth == {2: 1, 8: 11}


def test_custom_attention_fn_warns_and_keeps_projections(net):
    _, _, x = net
    model = Net(attention_fn=_custom_attention)
    variables = model.init(jax.random.key(0), x)
    with pytest.warns(UserWarning, match=f"{MHA}: a custom attention_fn"):
        ctrl, cstate = _build((model, variables, x))
    weights, activations = _split(ctrl)
    assert weights == KERNELS
    assert activations == OP_INPUTS  # no qk_matmul / av_matmul quantizers
    with pytest.warns(UserWarning, match="custom attention_fn"):
        y = ctrl.apply(variables, cstate, x)
    # The same as flax's attention with its matmul quantizers ignored: every
    # projection is quantized with the same ranges.
    ctrl_ref, cstate_ref = _build(net, ignored_scopes=MATMUL_INPUTS)
    np.testing.assert_array_equal(y, ctrl_ref.apply(variables, cstate_ref, x))
    assert float(jnp.max(jnp.abs(y - model.apply(variables, x)))) > 1e-4
