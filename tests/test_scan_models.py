"""nn.scan / nn.remat models compress per layer, with the unrolled model's numbers."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest

import nncf_jax as nj
from nncf_jax.errors import UsageError

LAYERS = 3


class Block(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        return nn.relu(nn.Dense(16, name="dense")(x)), None


class ScanNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(16, name="embed")(x)
        stack = nn.scan(
            Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=LAYERS
        )
        x, _ = stack(name="layers")(x, None)
        return nn.Dense(4, name="head")(x)


class UnrolledNet(nn.Module):
    remat: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(16, name="embed")(x)
        block = nn.remat(Block) if self.remat else Block
        for i in range(LAYERS):
            x, _ = block(name=f"layers_{i}")(x, None)
        return nn.Dense(4, name="head")(x)


@pytest.fixture
def twins():
    x = np.random.default_rng(0).uniform(0, 1, (16, 8)).astype(np.float32)
    scan_vars = ScanNet().init(jax.random.key(0), x[:1])
    p = scan_vars["params"]
    unrolled = {
        "params": {
            "embed": p["embed"],
            "head": p["head"],
            **{
                f"layers_{i}": {
                    "dense": jax.tree_util.tree_map(lambda a, i=i: a[i], p["layers"]["dense"])
                }
                for i in range(LAYERS)
            },
        }
    }
    return x, scan_vars, unrolled


def _config(compression):
    return {"input_info": {"sample_size": [1, 8]}, "compression": compression}


@pytest.mark.parametrize("mode", ["local", "global"])
def test_magnitude_masks_per_layer_slice(twins, mode):
    x, scan_vars, unrolled = twins
    compression = {
        "algorithm": "magnitude_sparsity",
        "sparsity_init": 0.5,
        "params": {"sparsity_level_setting_mode": mode, "weight_importance": "normed_abs"},
    }
    ctrl_s, cs_s = nj.create_compressed_model(ScanNet(), scan_vars, _config(compression))
    ctrl_u, cs_u = nj.create_compressed_model(UnrolledNet(), unrolled, _config(compression))
    stacked = cs_s.algorithms["magnitude_sparsity"].masks["layers"]["dense"]["kernel"]
    for i in range(LAYERS):
        np.testing.assert_array_equal(
            stacked[i],
            cs_u.algorithms["magnitude_sparsity"].masks[f"layers_{i}"]["dense"]["kernel"],
        )
        if mode == "local":  # each layer slice exactly at the level
            assert float(np.mean(~np.asarray(stacked[i]))) == 0.5
    np.testing.assert_allclose(
        ctrl_s.apply(scan_vars, cs_s, x), ctrl_u.apply(unrolled, cs_u, x), atol=1e-6
    )
    thresholds = ctrl_s.statistics().magnitude_sparsity.thresholds
    assert [n for n in thresholds if n.startswith("layers/")] == [
        f"layers/dense/kernel[{i}]" for i in range(LAYERS)
    ]


def test_weight_quantizers_per_layer_slice(twins):
    x, scan_vars, unrolled = twins
    # Activation quantizers inside a scan body cannot be calibrated (see the
    # error test below); weights-only here, on both twins.
    compression = {
        "algorithm": "quantization",
        "weights": {"bits": 4},
        "activations": {"ignored_scopes": ["{re}.*"]},
    }
    ctrl_s, cs_s = nj.create_compressed_model(ScanNet(), scan_vars, _config(compression))
    ctrl_u, cs_u = nj.create_compressed_model(UnrolledNet(), unrolled, _config(compression))
    scale = cs_s.algorithms["quantization"].weights["layers"]["dense"]["kernel"]["scale"]
    assert scale.shape == (LAYERS, 16)
    for i in range(LAYERS):
        np.testing.assert_array_equal(
            scale[i],
            cs_u.algorithms["quantization"].weights[f"layers_{i}"]["dense"]["kernel"]["scale"],
        )
    for apply in (ctrl_s.apply, jax.jit(ctrl_s.apply)):
        np.testing.assert_allclose(
            apply(scan_vars, cs_s, x), ctrl_u.apply(unrolled, cs_u, x), atol=1e-6
        )


def test_activation_quantizers_inside_scan_are_shared_or_explained(twins):
    """flax 0.12.12's scan forbids collecting values from its body: the build
    then says how to proceed. Where values can be collected (older flax, host
    callbacks), a scanned op's input quantizer gets one range for all layers."""
    x, scan_vars, _ = twins
    config = _config({"algorithm": "quantization"})
    try:
        ctrl, cstate = nj.create_compressed_model(ScanNet(), scan_vars, config, init_data=[x])
    except UsageError as e:
        assert "activations.ignored_scopes" in str(e) and "num_init_samples 0" in str(e)
        return
    scale = cstate.algorithms["quantization"].activations["layers"]["dense"]["input"]["scale"]
    assert scale.shape == () and float(scale) > 0.1
    assert bool(np.all(np.isfinite(np.asarray(ctrl.apply(scan_vars, cstate, x)))))


def test_remat_model_calibrates_and_matches_the_plain_one(twins):
    x, _, unrolled = twins
    config = _config({"algorithm": "quantization"})
    ctrl_r, cs_r = nj.create_compressed_model(
        UnrolledNet(remat=True), unrolled, config, init_data=[x]
    )
    ctrl_p, cs_p = nj.create_compressed_model(UnrolledNet(), unrolled, config, init_data=[x])
    assert sorted(ctrl_r.statistics().quantization.bitwidths) == sorted(
        ctrl_p.statistics().quantization.bitwidths
    )
    jax.tree_util.tree_map(np.testing.assert_array_equal, cs_r.algorithms, cs_p.algorithms)
    np.testing.assert_allclose(
        ctrl_r.apply(unrolled, cs_r, x), ctrl_p.apply(unrolled, cs_p, x), atol=1e-6
    )
