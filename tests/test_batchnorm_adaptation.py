"""Batch-norm adaptation re-estimates batch_stats through the compressed forward."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nncf_jax as nj
from nncf_jax.errors import UsageError


class Net(nn.Module):
    train: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.BatchNorm(use_running_average=not self.train)(x)
        x = nn.Dense(6)(x)
        x = nn.BatchNorm(use_running_average=not self.train, name="bn_after_dense")(x)
        return nn.Dense(3)(x)


def _setup(compression, model=None):
    model = model or Net()
    rng = np.random.default_rng(0)
    batches = [rng.normal(2.0, 3.0, (16, 5)).astype(np.float32) for _ in range(4)]
    variables = model.init(jax.random.key(0), batches[0])
    config = {
        "input_info": {"sample_size": [1, 5]},
        "compression": compression,
    }
    ctrl, cstate = nj.create_compressed_model(model, variables, config, init_data=batches)
    return model, variables, ctrl, cstate, batches


def test_statistics_are_the_average_of_the_batch_statistics():
    _, variables, ctrl, cstate, batches = _setup({"algorithm": "quantization"})
    adapted = ctrl.adapt_batchnorm(variables, cstate, batches, num_samples=48)
    stats = adapted["batch_stats"]["BatchNorm_0"]
    used = batches[:3]  # 48 samples = three whole batches of 16
    np.testing.assert_allclose(stats["mean"], np.mean([b.mean(0) for b in used], 0), rtol=1e-5)
    np.testing.assert_allclose(stats["var"], np.mean([b.var(0) for b in used], 0), rtol=1e-4)
    jax.tree_util.tree_map(np.testing.assert_array_equal, adapted["params"], variables["params"])


def test_later_layers_see_the_compressed_forward():
    """The second BatchNorm normalises a quantized Dense's output: its statistics
    come from the compressed forward in training mode, not from the float one."""
    compression = {"algorithm": "quantization", "weights": {"bits": 4}}
    _, variables, ctrl, cstate, batches = _setup(compression)
    adapted = ctrl.adapt_batchnorm(variables, cstate, batches[:1], num_samples=16)
    stats = adapted["batch_stats"]["bn_after_dense"]
    # By hand: the same quantizers on the model built in training mode.
    train_model = Net(train=True)
    train_ctrl, _ = nj.create_compressed_model(
        train_model,
        variables,
        {"input_info": {"sample_size": [1, 5]}, "compression": compression},
        compression_state=ctrl.get_compression_state(),
    )
    mutable = ["batch_stats", "intermediates"]
    _, state = train_ctrl.apply(
        variables, cstate, batches[0], capture_intermediates=True, mutable=mutable
    )
    dense_out = state["intermediates"]["Dense_0"]["__call__"][0]
    np.testing.assert_allclose(stats["mean"], dense_out.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], dense_out.var(0), rtol=1e-4, atol=1e-6)
    float_state = train_model.apply(
        variables, batches[0], capture_intermediates=True, mutable=mutable
    )[1]
    float_out = float_state["intermediates"]["Dense_0"]["__call__"][0]
    assert np.max(np.abs(stats["var"] - float_out.var(0))) > 1e-3


def test_default_sample_count_comes_from_the_config():
    compression = {
        "algorithm": "quantization",
        "initializer": {"batchnorm_adaptation": {"num_bn_adaptation_samples": 16}},
    }
    _, variables, ctrl, cstate, batches = _setup(compression)
    assert ctrl.bn_adaptation_samples == 16
    adapted = ctrl.adapt_batchnorm(variables, cstate, batches)
    np.testing.assert_allclose(
        adapted["batch_stats"]["BatchNorm_0"]["mean"], batches[0].mean(0), rtol=1e-5
    )
    assert ctrl.adapt_batchnorm(variables, cstate, batches, num_samples=0) == dict(variables)


def test_clear_errors():
    _, variables, ctrl, cstate, batches = _setup({"algorithm": "quantization"})
    with pytest.raises(UsageError, match="batch_stats"):
        ctrl.adapt_batchnorm({"params": variables["params"]}, cstate, batches)
    with pytest.raises(UsageError, match="empty"):
        ctrl.adapt_batchnorm(variables, cstate, [])
    with pytest.raises(UsageError, match="failed on batch 0"):
        ctrl.adapt_batchnorm(variables, cstate, [jnp.ones((4, 7))])
