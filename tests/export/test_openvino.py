"""OpenVINO IR export: written, run by plain OpenVINO in a fresh process, equal outputs."""

from __future__ import annotations

import json
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from nncf_jax.errors import ExportError
from nncf_jax.export import ExampleInputs, example_inputs, export_forward

LOADER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import openvino as ov
    path, inputs_path, out_path = sys.argv[1:4]
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    data = np.load(inputs_path)
    result = {name: compiled({"image": data[name]})["logits"] for name in data.files}
    np.savez(out_path, **result)
    imported = [m for m in sys.modules if m.split(".")[0] in ("jax", "nncf_jax")]
    assert not imported, f"loader imported {imported[:3]}"
    """
)


@pytest.fixture
def ov():
    return pytest.importorskip("openvino")


def _compile(ov, path):
    return ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def test_openvino_ir_runs_without_jax_and_matches(
    ov, sparse_model, tmp_path, batches, load_in_fresh_process
):
    ctrl, variables = sparse_model
    artefact = ctrl.export_model(
        str(tmp_path / "model.xml"),
        save_format="openvino",
        input_names=["image"],
        output_names=["logits"],
    )
    sidecar = json.loads((tmp_path / "model.xml.json").read_text())
    assert artefact.metadata == sidecar
    assert sidecar["format"] == "openvino"
    assert sidecar["batch_polymorphic"] is True
    assert sidecar["static_batch_reason"] is None
    assert sidecar["inputs"] == [{"name": "image", "shape": ["b", 8, 8, 1], "dtype": "float32"}]
    assert sidecar["outputs"] == [{"name": "logits", "shape": ["b", 10], "dtype": "float32"}]
    assert sidecar["compression"]["algorithms"] == ["magnitude_sparsity"]
    assert sidecar["verified_max_abs_diff"] <= 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.bin",
        "model.xml",
        "model.xml.json",
    ]

    inputs = batches
    out = load_in_fresh_process(LOADER, tmp_path / "model.xml", inputs)
    for name, x in inputs.items():
        expected = np.asarray(ctrl.apply(variables, ctrl.state, x))
        assert out[name].shape == expected.shape
        np.testing.assert_allclose(out[name], expected, rtol=0, atol=1e-5)


def test_sparse_weights_are_stored_as_zeros(ov, sparse_model, tmp_path):
    ctrl, _ = sparse_model
    ctrl.export_model(str(tmp_path / "m.xml"), save_format="openvino")
    model = ov.Core().read_model(str(tmp_path / "m.xml"))
    kernels = [
        op.get_data()
        for op in model.get_ops()
        if op.get_type_name() == "Constant"
        and op.get_output_size() == 1
        and op.get_data().size > 64
    ]
    assert kernels
    assert all(k.dtype == np.float32 for k in kernels)  # no fp16 compression
    zeros = sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)
    assert abs(zeros - 0.5) < 0.02  # magnitude sparsity's global 50%, baked in as zeros


class Mixed(nn.Module):
    """Strided/depthwise/dilated convolutions, batch norm, layer norm, pooling,
    attention, a dict of outputs and an integer argmax."""

    @nn.compact
    def __call__(self, x):
        y = nn.Conv(8, (3, 3), strides=(2, 2), padding="SAME")(x)
        y = nn.BatchNorm(use_running_average=True)(y)
        y = nn.gelu(y)
        y = nn.Conv(8, (3, 3), feature_group_count=8, kernel_dilation=(2, 2))(y)
        y = nn.max_pool(y, (2, 2), strides=(1, 1), padding="SAME")
        y = nn.avg_pool(y, (2, 2))
        y = nn.LayerNorm()(y)
        y = y.reshape(y.shape[0], -1, 8)
        y = nn.MultiHeadDotProductAttention(num_heads=2)(y)
        z = jnp.mean(y, axis=1)
        return {"logits": nn.Dense(5)(z), "probs": jax.nn.softmax(z), "label": jnp.argmax(z, -1)}


def test_translator_covers_common_layers_at_any_batch(ov, tmp_path):
    model = Mixed()

    @jax.jit
    def init(key):
        variables = model.init(key, jnp.zeros((1, 8, 8, 3)))
        noise = jax.random.key(3)
        return jax.tree.map(lambda a: a + 0.1 * jax.random.normal(noise, a.shape), variables)

    variables = init(jax.random.key(0))
    forward = jax.jit(lambda x: model.apply(variables, x))

    artefact = export_forward(
        forward,
        example_inputs({"sample_size": [2, 8, 8, 3]}, None),
        tmp_path / "mixed.xml",
        save_format="openvino",
        input_names=["image"],
        output_names=["label", "logits", "probs"],  # jax.tree order: sorted dict keys
        verify=False,  # compared below at batch 1 and 7 (saves two XLA compilations)
    )
    assert artefact.metadata["batch_polymorphic"] is True
    compiled = _compile(ov, artefact.path)
    for batch in (1, 7):
        x = np.asarray(jax.random.normal(jax.random.key(batch), (batch, 8, 8, 3)))
        got = compiled({"image": x})
        want = forward(x)
        np.testing.assert_array_equal(got["label"], np.asarray(want["label"]))
        for name in ("logits", "probs"):
            np.testing.assert_allclose(got[name], np.asarray(want[name]), rtol=0, atol=1e-5)


def test_static_batch_fallback_warns_and_says_why(ov, tmp_path):
    w = np.arange(64 * 3, dtype=np.float32).reshape(64, 3) / 100

    def forward(x):
        # A size that is twice the batch: the translator only knows the batch itself.
        doubled = jnp.zeros((2 * x.shape[0], 3)) + 1.0
        return (x.reshape(x.shape[0], -1) @ w) + doubled[: x.shape[0]]

    with pytest.warns(UserWarning, match="cannot express a batch-dependent size.*static batch"):
        artefact = export_forward(
            forward,
            example_inputs({"sample_size": [1, 8, 8, 1]}, None),
            tmp_path / "m.xml",
            save_format="openvino",
            input_names=["image"],
        )
    sidecar = json.loads((tmp_path / "m.xml.json").read_text())
    assert sidecar["batch_polymorphic"] is False
    assert "batch-dependent size" in sidecar["static_batch_reason"]
    assert sidecar["inputs"][0]["shape"] == [1, 8, 8, 1]
    compiled = _compile(ov, artefact.path)
    x = np.asarray(jax.random.normal(jax.random.key(1), (1, 8, 8, 1)))
    np.testing.assert_allclose(
        compiled({"image": x})["output_0"], np.asarray(forward(x)), rtol=0, atol=1e-5
    )
    # The documented limitation of the fallback: only the example batch size.
    with pytest.raises(RuntimeError):
        compiled({"image": np.zeros((7, 8, 8, 1), np.float32)})


def test_missing_openvino_gives_install_hint(sparse_model, tmp_path, monkeypatch):
    ctrl, _ = sparse_model
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(ExportError, match=r"pip install 'nncf-jax\[openvino\]'"):
        ctrl.export_model(str(tmp_path / "m.xml"), save_format="openvino")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_leave_nothing(ov, sparse_model, tmp_path):
    ctrl, _ = sparse_model
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ExportError, match="cannot write the OpenVINO IR"):
        ctrl.export_model(str(blocker / "sub" / "m.xml"), save_format="openvino")
    with pytest.raises(ExportError, match=r"ends in \.xml"):
        ctrl.export_model(str(tmp_path / "m.onnx"), save_format="openvino")
    with pytest.raises(ExportError, match="does not support sort"):
        export_forward(
            lambda x: jnp.sort(x, axis=-1),
            example_inputs({"sample_size": [2, 5]}, None),
            tmp_path / "sorted.xml",
            save_format="openvino",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_export_replaces_old_files(ov, sparse_model, tmp_path):
    ctrl, _ = sparse_model
    (tmp_path / "m.xml").write_text("old")
    (tmp_path / "m.bin").write_bytes(b"old")
    ctrl.export_model(str(tmp_path / "m.xml"), save_format="openvino")
    assert (tmp_path / "m.bin").read_bytes() != b"old"
    assert _compile(ov, tmp_path / "m.xml") is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml", "m.xml.json"]


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32, np.uint32])
def test_integer_division_truncates_like_lax(ov, dtype, tmp_path):
    # OpenVINO 2026.4 rounds 8-bit Divide (u8 14 / 16 gives 1) and drops the
    # Abs in Abs(Convert(Constant(i8))). Both operands constant (as 4-bit
    # weight unpacking, codes // 16) or an input, negative divisors included.
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    a = rng.integers(max(info.min, -30000), min(info.max, 30000), 64).astype(dtype)
    b = rng.integers(1, 20, 64).astype(dtype)
    if info.min < 0:
        b = (b * rng.choice([-1, 1], 64)).astype(dtype)

    def forward(x):
        return lax.div(x, jnp.asarray(b)), lax.div(jnp.asarray(a), jnp.asarray(b)) + x * 0

    artefact = export_forward(
        forward,
        ExampleInputs((a,), {}),
        tmp_path / "div.xml",
        save_format="openvino",
        batch_polymorphic=False,
    )
    got = _compile(ov, artefact.path)(a)
    want = np.asarray(lax.div(a, b))
    np.testing.assert_array_equal(got[0], want)
    np.testing.assert_array_equal(got[1], want)
