"""StableHLO export: written, loaded by plain JAX in a fresh process, equal outputs."""

from __future__ import annotations

import json
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nncf_jax as nj
from nncf_jax.errors import ExportError

LOADER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import jax
    path, inputs_path, out_path, grad = sys.argv[1:5]
    exported = jax.export.deserialize(bytearray(open(path, "rb").read()))
    data = np.load(inputs_path)
    result = {}
    for name in data.files:
        result[name] = np.asarray(exported.call(data[name]))
    if grad == "1":
        g = jax.grad(lambda x: exported.call(x).sum())(data[data.files[0]])
        result["grad"] = np.asarray(g)
    np.savez(out_path, **result)
    assert not any(m.startswith("nncf_jax") for m in sys.modules), "loader imported nncf_jax"
    """
)


def test_export_loads_without_nncf_jax_and_matches_exactly(
    sparse_model, tmp_path, load_in_fresh_process
):
    ctrl, variables = sparse_model
    artefact = ctrl.export_model(
        str(tmp_path / "model.stablehlo"), input_names=["image"], output_names=["logits"]
    )
    sidecar = json.loads((tmp_path / "model.stablehlo.json").read_text())
    assert sidecar["inputs"] == [{"name": "image", "shape": ["b", 8, 8, 1], "dtype": "float32"}]
    assert sidecar["outputs"] == [{"name": "logits", "shape": ["b", 10], "dtype": "float32"}]
    assert sidecar["batch_polymorphic"] is True
    assert sidecar["compression"]["algorithms"] == ["magnitude_sparsity"]
    assert sidecar["nncf_jax_version"] == nj.__version__
    assert artefact.metadata == sidecar
    inputs = {
        "b1": np.asarray(jax.random.normal(jax.random.key(1), (1, 8, 8, 1))),
        "b7": np.asarray(jax.random.normal(jax.random.key(2), (7, 8, 8, 1))),
    }
    out = load_in_fresh_process(LOADER, tmp_path / "model.stablehlo", inputs, "0")
    for name, x in inputs.items():
        expected = np.asarray(ctrl.apply(variables, ctrl.state, x))
        np.testing.assert_array_equal(out[name], expected)


def test_vjp_order_keeps_gradients(sparse_model, tmp_path, load_in_fresh_process):
    ctrl, variables = sparse_model
    ctrl.export_model(str(tmp_path / "m.stablehlo"), vjp_order=1)
    x = np.asarray(jax.random.normal(jax.random.key(1), (3, 8, 8, 1)))
    out = load_in_fresh_process(LOADER, tmp_path / "m.stablehlo", {"x": x}, "1")
    expected = jax.grad(lambda x: ctrl.apply(variables, ctrl.state, x).sum())(x)
    np.testing.assert_allclose(out["grad"], np.asarray(expected), rtol=1e-5, atol=1e-6)


def test_static_batch_when_asked(sparse_model, tmp_path):
    ctrl, _ = sparse_model
    artefact = ctrl.export_model(str(tmp_path / "m.stablehlo"), batch_polymorphic=False)
    assert artefact.metadata["inputs"][0]["shape"] == [1, 8, 8, 1]
    exported = jax.export.deserialize(bytearray(artefact.path.read_bytes()))
    with pytest.raises(Exception, match="shape"):
        exported.call(np.zeros((2, 8, 8, 1), np.float32))


class TwoInputs(nn.Module):
    @nn.compact
    def __call__(self, x, bias, *, scale=None, train=False):
        y = nn.Dense(4)(x) + bias
        if scale is not None:
            y = y * scale
        return y if not train else y * 0


def test_model_args_positional_keyword_and_none(tmp_path):
    model = TwoInputs()
    x0 = jnp.ones((2, 6))
    variables = model.init(jax.random.key(0), x0, jnp.zeros((2, 4)))
    config = {
        "input_info": [{"sample_size": [2, 6]}, {"sample_size": [2, 4], "keyword": "scale"}],
        "compression": {"algorithm": "magnitude_sparsity"},
    }
    ctrl, _ = nj.create_compressed_model(model, variables, config)
    bias = np.full((2, 4), 0.5, np.float32)
    artefact = ctrl.export_model(
        str(tmp_path / "two.stablehlo"), model_args=(bias, {"scale": None, "train": False})
    )
    names = [i["name"] for i in artefact.metadata["inputs"]]
    assert names == ["input_0", "input_1", "scale"]
    exported = jax.export.deserialize(bytearray(artefact.path.read_bytes()))
    x, s = np.ones((2, 6), np.float32), np.full((2, 4), 2.0, np.float32)
    np.testing.assert_allclose(
        np.asarray(exported.call(x, bias, s)),
        np.asarray(ctrl.apply(variables, ctrl.state, x, bias, scale=s)),
        rtol=1e-6,
    )
    with pytest.raises(ExportError, match="model_args must be a tuple"):
        ctrl.export_model(str(tmp_path / "bad.stablehlo"), model_args=[bias])
    with pytest.raises(ExportError, match="model_args must be a tuple"):
        ctrl.export_model(str(tmp_path / "bad.stablehlo"), model_args=(bias,))
    with pytest.raises(ExportError, match="keyword 'shift' is None but input_info has no entry"):
        ctrl.export_model(str(tmp_path / "bad.stablehlo"), model_args=(bias, {"shift": None}))
    with pytest.raises(ExportError, match="input_names: expected 3"):
        ctrl.export_model(
            str(tmp_path / "bad.stablehlo"), input_names=["x"], model_args=(bias, {"scale": None})
        )
    assert not list(tmp_path.glob("bad*"))


def test_bad_arguments_leave_no_partial_files(sparse_model, tmp_path):
    ctrl, _ = sparse_model
    with pytest.raises(
        ExportError, match="unknown format 'onnx'; supported: stablehlo, saved_model, openvino"
    ):
        ctrl.export_model(str(tmp_path / "m.onnx"), save_format="onnx")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ExportError, match="cannot write"):
        ctrl.export_model(str(blocker / "m.stablehlo"))
    with pytest.raises(ExportError, match="vjp_order"):
        ctrl.export_model(str(tmp_path / "m.stablehlo"), vjp_order=-1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_exported_file_replaces_an_old_one_atomically(sparse_model, tmp_path):
    ctrl, _ = sparse_model
    path = tmp_path / "m.stablehlo"
    path.write_bytes(b"old")
    ctrl.export_model(str(path))
    assert path.read_bytes() != b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.stablehlo", "m.stablehlo.json"]
