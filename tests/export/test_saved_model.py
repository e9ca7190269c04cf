"""SavedModel export: written, loaded by plain TensorFlow in a fresh process, equal outputs."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest

import nncf_jax as nj
from nncf_jax.errors import ExportError

LOADER = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf
    path, inputs_path, out_path = sys.argv[1:4]
    serve = tf.saved_model.load(path).signatures["serving_default"]
    data = np.load(inputs_path)
    result = {name: serve(image=tf.constant(data[name]))["logits"].numpy() for name in data.files}
    np.savez(out_path, **result)
    assert not any(m.startswith("nncf_jax") for m in sys.modules), "loader imported nncf_jax"
    """
)


@pytest.fixture
def tf():
    return pytest.importorskip("tensorflow")


def test_saved_model_loads_without_nncf_jax_and_matches(
    tf, sparse_model, tmp_path, batches, load_in_fresh_process
):
    ctrl, variables = sparse_model
    artefact = ctrl.export_model(
        str(tmp_path / "model_tf"),
        save_format="saved_model",
        input_names=["image"],
        output_names=["logits"],
    )
    sidecar = json.loads((tmp_path / "model_tf.json").read_text())
    assert artefact.metadata == sidecar
    assert sidecar["format"] == "saved_model"
    assert sidecar["batch_polymorphic"] is True
    assert sidecar["static_batch_reason"] is None
    assert sidecar["inputs"] == [{"name": "image", "shape": ["b", 8, 8, 1], "dtype": "float32"}]
    assert sidecar["outputs"] == [{"name": "logits", "shape": ["b", 10], "dtype": "float32"}]
    assert sidecar["compression"]["algorithms"] == ["magnitude_sparsity"]
    assert sidecar["nncf_jax_version"] == nj.__version__
    assert sidecar["tensorflow_version"] == tf.__version__
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_tf", "model_tf.json"]

    inputs = batches
    out = load_in_fresh_process(LOADER, tmp_path / "model_tf", inputs)
    for name, x in inputs.items():
        expected = np.asarray(ctrl.apply(variables, ctrl.state, x))
        assert out[name].shape == expected.shape
        np.testing.assert_allclose(out[name], expected, rtol=0, atol=1e-5)


def test_static_batch_fallback_warns_and_says_why(tf, sparse_model, tmp_path, batches):
    # StableHLO newer than the installed TensorFlow reads: the polymorphic
    # module cannot run there (this is what plain jax2tf.convert hits with
    # jax 0.12 and TF 2.21), so the export falls back to the static batch.
    from jax.extend.mlir.dialects import stablehlo
    from tensorflow.compiler.mlir.stablehlo import stablehlo as tf_stablehlo

    newest = stablehlo.get_current_version()
    if stablehlo.get_smaller_version(newest, tf_stablehlo.get_current_version()) == newest:
        pytest.skip("the installed TensorFlow reads JAX's newest StableHLO")
    ctrl, variables = sparse_model
    with pytest.warns(UserWarning, match="cannot run the batch-polymorphic module.*static batch"):
        artefact = ctrl.export_model(
            str(tmp_path / "m_tf"),
            save_format="saved_model",
            input_names=["image"],
            output_names=["logits"],
            stablehlo_version=newest,
        )
    sidecar = json.loads((tmp_path / "m_tf.json").read_text())
    assert sidecar["batch_polymorphic"] is False
    assert "deserialize" in sidecar["static_batch_reason"]
    assert sidecar["inputs"][0]["shape"] == [1, 8, 8, 1]
    serve = tf.saved_model.load(str(artefact.path)).signatures["serving_default"]
    x1 = batches["b1"]
    np.testing.assert_allclose(
        serve(image=tf.constant(x1))["logits"].numpy(),
        np.asarray(ctrl.apply(variables, ctrl.state, x1)),
        rtol=0,
        atol=1e-5,
    )
    # The documented limitation of the fallback: only the example batch size.
    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError)):
        serve(image=tf.constant(batches["b7"]))


def test_static_batch_when_asked(tf, sparse_model, tmp_path):
    ctrl, _ = sparse_model
    artefact = ctrl.export_model(
        str(tmp_path / "m_tf"), save_format="saved_model", batch_polymorphic=False
    )
    assert artefact.metadata["batch_polymorphic"] is False
    assert artefact.metadata["inputs"] == [
        {"name": "input_0", "shape": [1, 8, 8, 1], "dtype": "float32"}
    ]
    assert artefact.metadata["outputs"][0]["name"] == "output_0"


def test_missing_tensorflow_gives_install_hint(sparse_model, tmp_path, monkeypatch):
    ctrl, _ = sparse_model
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow -> ImportError
    with pytest.raises(ExportError, match=r"pip install 'nncf-jax\[tf\]'"):
        ctrl.export_model(str(tmp_path / "m_tf"), save_format="saved_model")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_path_and_bad_names_leave_nothing(tf, sparse_model, tmp_path):
    ctrl, _ = sparse_model
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ExportError, match="cannot write the SavedModel"):
        ctrl.export_model(str(blocker / "sub" / "m_tf"), save_format="saved_model")
    with pytest.raises(ExportError, match="not valid TensorFlow signature names"):
        ctrl.export_model(
            str(tmp_path / "m_tf"), save_format="saved_model", input_names=["an image"]
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_export_replaces_an_old_folder(tf, sparse_model, tmp_path):
    ctrl, _ = sparse_model
    old = tmp_path / "m_tf"
    old.mkdir()
    (old / "stale.txt").write_text("old")
    ctrl.export_model(str(old), save_format="saved_model")
    assert not (old / "stale.txt").exists()
    assert (old / "saved_model.pb").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m_tf", "m_tf.json"]
