"""Quantized weights in artefacts: integer codes + scales, unpacked in the graph.

For a model with 50% magnitude sparsity + quantization, each format is
written, loaded in a fresh process that never imports nncf_jax, and compared
with the compressed model in JAX at batch 1 and 7.
"""

from __future__ import annotations

import importlib.util
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

import nncf_jax as nj

HAS_TF = importlib.util.find_spec("tensorflow") is not None
HAS_OV = importlib.util.find_spec("openvino") is not None


def _loader(name):
    # The format tests' loaders: same checks, one copy.
    path = os.path.join(os.path.dirname(__file__), f"test_{name}.py")
    spec = importlib.util.spec_from_file_location(f"_export_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LOADER


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(16, (3, 3))(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(10)(x)


def _build(bits: int | None):
    model = Net()
    x = np.asarray(jax.random.uniform(jax.random.key(3), (32, 8, 8, 1)))
    variables = model.init(jax.random.key(0), x[:1])
    compression = [{"algorithm": "magnitude_sparsity", "sparsity_init": 0.5}]
    if bits is not None:
        compression.append({"algorithm": "quantization", "weights": {"bits": bits}})
    config = {"input_info": {"sample_size": [1, 8, 8, 1]}, "compression": compression}
    ctrl, cstate = nj.create_compressed_model(model, variables, config, init_data=[x])
    return ctrl, variables, cstate


def _export(ctrl, path, save_format="stablehlo"):
    return ctrl.export_model(
        str(path), save_format=save_format, input_names=["image"], output_names=["logits"]
    )


@pytest.mark.parametrize("bits", [8, 4])
def test_pack_unpack_gives_the_stripped_weights_bit_for_bit(bits):
    ctrl, variables, cstate = _build(bits)
    stripped = ctrl.strip(variables, cstate)["params"]
    stored, unpack = ctrl.pack_params(stripped, cstate)
    codes = [p["codes"] for p in stored["packed"].values()]
    assert len(codes) == 3
    assert all(c.dtype == (np.int8 if bits == 8 else np.uint8) for c in codes)
    for fn in (unpack, jax.jit(unpack)):
        jax.tree_util.tree_map(np.testing.assert_array_equal, fn(stored), stripped)


def test_stablehlo_stores_int8_and_shrinks(tmp_path, batches, load_in_fresh_process):
    sizes = {}
    for bits in (None, 8, 4):
        ctrl, variables, cstate = _build(bits)
        path = tmp_path / f"model_{bits}.stablehlo"
        _export(ctrl, path)
        sizes[bits] = path.stat().st_size
        out = load_in_fresh_process(_loader("stablehlo"), path, batches, "0")
        for name, x in batches.items():
            np.testing.assert_array_equal(out[name], np.asarray(ctrl.apply(variables, cstate, x)))
        text = jax.export.deserialize(bytearray(path.read_bytes())).mlir_module()
        if bits == 8:
            assert "xi8>" in text
        if bits == 4:
            assert "xui8>" in text
    # 134k weights: int8 codes are a quarter of float32, 4-bit an eighth.
    assert sizes[8] < 0.3 * sizes[None], sizes
    assert sizes[4] < 0.6 * sizes[8], sizes


@pytest.mark.skipif(not HAS_TF, reason="TensorFlow (the 'tf' extra) is not installed")
def test_saved_model_with_int8_weights_matches(tmp_path, batches, load_in_fresh_process):
    ctrl, variables, cstate = _build(8)
    _export(ctrl, tmp_path / "model_tf", "saved_model")
    out = load_in_fresh_process(_loader("saved_model"), tmp_path / "model_tf", batches)
    for name, x in batches.items():
        expected = np.asarray(ctrl.apply(variables, cstate, x))
        np.testing.assert_allclose(out[name], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not HAS_OV, reason="OpenVINO (the 'openvino' extra) is not installed")
def test_openvino_with_int8_weights_runs_and_keeps_int8_constants(
    tmp_path, batches, load_in_fresh_process
):
    bins = {}
    for bits in (None, 8):
        ctrl, variables, cstate = _build(bits)
        _export(ctrl, tmp_path / f"m{bits}" / "model.xml", "openvino")
        bins[bits] = (tmp_path / f"m{bits}" / "model.bin").stat().st_size
    out = load_in_fresh_process(_loader("openvino"), tmp_path / "m8" / "model.xml", batches)
    steps = []
    for name, x in batches.items():
        expected = np.asarray(ctrl.apply(variables, cstate, x))
        steps.append(np.max(np.abs(out[name] - expected)))
    # OpenVINO runs this model on int8 kernels (tests/export/test_openvino_int8.py),
    # which rescale integer sums in another order than JAX: a value within
    # float rounding of a rounding tie can land one level away, which changes
    # a logit by a fraction of one level.
    assert max(steps) < 1e-2, steps
    assert bins[8] < 0.3 * bins[None], bins
