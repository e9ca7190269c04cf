"""``export_model(..., shrink=True)``: the filter-pruned model exported without its pruned channels."""

from __future__ import annotations

import importlib.util
import os

import jax
import numpy as np
import pytest

import nncf_jax as nj
from nncf_jax.errors import ExportError
from nncf_jax.examples.digits_resnet import resnet


def _loader(name: str) -> str:
    path = os.path.join(os.path.dirname(__file__), f"test_{name}.py")
    spec = importlib.util.spec_from_file_location(f"_export_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LOADER


def _pruned(compression_extra=()):
    model = resnet()
    variables = model.init(jax.random.key(0), np.zeros((1, 8, 8, 1), np.float32))
    compression = [
        {
            "algorithm": "filter_pruning",
            "pruning_init": 0.4,
            "params": {"prune_downsample_convs": True},
        },
        *compression_extra,
    ]
    config = {"input_info": {"sample_size": [1, 8, 8, 1]}, "compression": compression}
    x = np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 1)).astype(np.float32)
    ctrl, cstate = nj.create_compressed_model(model, variables, config, init_data=[x])
    return ctrl, variables, cstate


def test_shrunk_artefact_is_smaller_and_gives_the_masked_outputs(
    tmp_path, batches, load_in_fresh_process
):
    ctrl, variables, cstate = _pruned()
    full = ctrl.export_model(str(tmp_path / "full.stablehlo"))
    small = ctrl.export_model(str(tmp_path / "small.stablehlo"), shrink=True)
    assert small.path.stat().st_size < 0.75 * full.path.stat().st_size
    batches = {k: np.abs(v) for k, v in batches.items()}
    out = load_in_fresh_process(_loader("stablehlo"), small.path, batches, "0")
    for name, x in batches.items():
        np.testing.assert_allclose(
            out[name], np.asarray(ctrl.apply(variables, cstate, x)), atol=1e-5
        )


def test_shrink_needs_pruning_and_refuses_activation_quantizers(tmp_path):
    ctrl, _, _ = _pruned([{"algorithm": "quantization"}])
    with pytest.raises(ExportError, match="activation quantizers"):
        ctrl.export_model(str(tmp_path / "m.stablehlo"), shrink=True)
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None,
    reason="OpenVINO (the 'openvino' extra) is not installed",
)
def test_shrunk_model_exports_to_openvino(tmp_path, batches, load_in_fresh_process):
    ctrl, variables, cstate = _pruned()
    full = ctrl.export_model(
        str(tmp_path / "full" / "model.xml"),
        save_format="openvino",
        input_names=["image"],
        output_names=["logits"],
    )
    small = ctrl.export_model(
        str(tmp_path / "small" / "model.xml"),
        save_format="openvino",
        input_names=["image"],
        output_names=["logits"],
        shrink=True,
    )
    assert (
        small.path.with_suffix(".bin").stat().st_size
        < 0.75 * full.path.with_suffix(".bin").stat().st_size
    )
    batches = {k: np.abs(v) for k, v in batches.items()}
    out = load_in_fresh_process(_loader("openvino"), small.path, batches)
    for name, x in batches.items():
        np.testing.assert_allclose(
            out[name], np.asarray(ctrl.apply(variables, cstate, x)), atol=1e-4
        )
