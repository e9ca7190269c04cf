"""Training quantizer ranges as NNCF does: ``ctrl.trainable`` / ``ctrl.with_trainable``."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nncf_jax as nj
from nncf_jax.errors import StateMismatchError


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(nn.relu(nn.Dense(16)(x)))


def _build(compression, calibration):
    model = Net()
    variables = model.init(jax.random.key(0), jnp.ones((1, 8)))
    config = {"input_info": {"sample_size": [1, 8]}, "compression": compression}
    ctrl, cstate = nj.create_compressed_model(model, variables, config, init_data=[calibration])
    return model, variables, ctrl, cstate


def test_trainable_holds_the_quantizer_ranges_only():
    calibration = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    compression = [
        {"algorithm": "magnitude_sparsity", "sparsity_init": 0.3},
        {"algorithm": "quantization"},
    ]
    _, _, ctrl, cstate = _build(compression, calibration)
    trainable = ctrl.trainable(cstate)
    assert list(trainable) == ["quantization"]
    q = cstate.algorithms["quantization"]
    assert trainable["quantization"]["weights"] is q.weights
    assert trainable["quantization"]["activations"] is q.activations
    doubled = jax.tree_util.tree_map(lambda a: 2 * a, trainable)
    back = ctrl.with_trainable(cstate, doubled)
    np.testing.assert_array_equal(
        back.algorithms["quantization"].weights["Dense_0"]["kernel"]["scale"],
        2 * q.weights["Dense_0"]["kernel"]["scale"],
    )
    # Other algorithms' state and the counters are untouched.
    assert back.algorithms["magnitude_sparsity"] is cstate.algorithms["magnitude_sparsity"]
    assert back.clock is cstate.clock


def test_with_trainable_refuses_a_tree_of_another_shape():
    calibration = np.ones((4, 8), np.float32)
    _, _, ctrl, cstate = _build({"algorithm": "quantization"}, calibration)
    with pytest.raises(StateMismatchError, match="this controller trains"):
        ctrl.with_trainable(cstate, {"magnitude_sparsity": {}})
    bad = {"quantization": {"weights": {}, "activations": {}}}
    with pytest.raises(StateMismatchError, match="trainable\\['quantization'\\]"):
        ctrl.with_trainable(cstate, bad)


def test_training_the_ranges_fixes_a_badly_calibrated_quantizer():
    """Calibrated on inputs 10x smaller than the real ones, the input
    quantizer clips; training its scale (NNCF's gradient) brings the
    quantized model back towards the float one, and the scale grows."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (256, 8)).astype(np.float32)
    model, variables, ctrl, cstate = _build({"algorithm": "quantization"}, x[:64] * 0.1)
    target = model.apply(variables, x)
    scale_of = lambda cs: cs.algorithms["quantization"].activations["Dense_0"]["input"]["scale"]  # noqa: E731
    before = float(scale_of(cstate))
    assert before < 0.15  # mean of per-sample maxima of inputs scaled by 0.1

    tx = optax.adam(0.05)
    trainable = ctrl.trainable(cstate)
    opt_state = tx.init(trainable)
    traces = []

    def loss_fn(trainable, cstate):
        cs = ctrl.with_trainable(cstate, trainable)
        return jnp.mean((ctrl.apply(variables, cs, x) - target) ** 2)

    @jax.jit
    def step(trainable, opt_state, cstate):
        traces.append(1)
        loss, grads = jax.value_and_grad(loss_fn)(trainable, cstate)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, loss

    losses = []
    for _ in range(60):
        trainable, opt_state, loss = step(trainable, opt_state, cstate)
        losses.append(float(loss))
    cstate = ctrl.with_trainable(cstate, trainable)
    assert len(traces) == 1
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])
    assert float(scale_of(cstate)) > 5 * before
