"""Flax NNX models: the same compression, the same numbers as the linen twin."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import nncf_jax as nj
from nncf_jax.errors import UsageError


class LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(16, name="hidden")(x))
        return nn.Dense(10, name="out")(x)


class NNXNet(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
        self.hidden = nnx.Linear(256, 16, rngs=rngs)
        self.out = nnx.Linear(16, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.conv(x))
        x = nnx.relu(self.hidden(x.reshape(x.shape[0], -1)))
        return self.out(x)


CONFIG = {
    "input_info": {"sample_size": [1, 8, 8, 1]},
    "compression": [
        {"algorithm": "magnitude_sparsity", "sparsity_init": 0.5},
        {"algorithm": "quantization"},
    ],
}


@pytest.fixture
def twins():
    x = np.random.default_rng(0).uniform(0, 1, (16, 8, 8, 1)).astype(np.float32)
    linen = LinenNet()
    linen_vars = linen.init(jax.random.key(0), x[:1])
    model = NNXNet(nnx.Rngs(1))
    wrapped = nj.NNXModel(model)
    wrapped.update(model, linen_vars)  # same weights in both
    return x, linen, linen_vars, model, nj.NNXModel(model)


def test_nnx_variables_mirror_the_linen_params(twins):
    _, _, linen_vars, _, wrapped = twins
    assert set(wrapped.variables) == {"params"}
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, wrapped.variables["params"], dict(linen_vars["params"])
    )


def test_same_quantizers_masks_and_outputs_as_linen(twins):
    x, linen, linen_vars, model, wrapped = twins
    ctrl_l, cs_l = nj.create_compressed_model(linen, linen_vars, CONFIG, init_data=[x])
    ctrl_n, cs_n = nj.create_compressed_model(model, wrapped.variables, CONFIG, init_data=[x])
    assert ctrl_n.statistics().quantization.bitwidths == ctrl_l.statistics().quantization.bitwidths
    assert sorted(ctrl_n.statistics().quantization.bitwidths) == [
        "conv/input", "conv/kernel", "hidden/input", "hidden/kernel", "out/input", "out/kernel",
    ]  # fmt: skip
    jax.tree_util.tree_map(np.testing.assert_array_equal, cs_n.algorithms, cs_l.algorithms)
    for apply in (ctrl_n.apply, jax.jit(ctrl_n.apply)):
        np.testing.assert_allclose(
            apply(wrapped.variables, cs_n, x), ctrl_l.apply(linen_vars, cs_l, x), atol=1e-6
        )


def test_strip_writes_back_into_the_nnx_module(twins):
    x, _, _, model, wrapped = twins
    config = {**CONFIG, "compression": CONFIG["compression"][:1]}
    ctrl, cstate = nj.create_compressed_model(model, wrapped.variables, config)
    expected = ctrl.apply(wrapped.variables, cstate, x)
    wrapped.update(model, ctrl.strip(wrapped.variables, cstate))
    np.testing.assert_allclose(model(x), expected, atol=1e-6)
    assert float(jnp.mean(model.hidden.kernel[...] == 0)) >= 0.4


def test_train_step_on_an_nnx_model_with_batch_norm():
    class BNNet(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(8, 8, rngs=rngs)
            self.bn = nnx.BatchNorm(8, rngs=rngs)
            self.head = nnx.Linear(8, 2, rngs=rngs)

        def __call__(self, x):
            return self.head(self.bn(self.lin(x)))

    model = BNNet(nnx.Rngs(0))
    wrapped = nj.NNXModel(model)
    assert set(wrapped.variables) == {"params", "state"}
    x = np.random.default_rng(1).normal(size=(32, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    config = {"input_info": {"sample_size": [1, 8]}, "compression": {"algorithm": "quantization"}}
    ctrl, cstate = nj.create_compressed_model(
        model, wrapped.variables, config, init_data=[x], steps_per_epoch=10
    )

    tx = optax.adam(1e-2)
    variables = wrapped.variables
    opt_state = tx.init(variables["params"])

    @jax.jit
    def step(variables, opt_state, cstate):
        def loss_fn(params):
            logits, updates = ctrl.apply({**variables, "params": params}, cstate, x, mutable=True)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss + ctrl.loss(params, cstate), updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        grads, opt_state = tx.update(grads, opt_state)
        grads, cstate = ctrl.transform.update(grads, cstate, variables["params"])
        params = optax.apply_updates(variables["params"], grads)
        return {**variables, **updates, "params": params}, opt_state, cstate, loss

    losses = []
    for _ in range(20):
        variables, opt_state, cstate, loss = step(variables, opt_state, cstate)
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    # The batch statistics moved (NNX BatchNorm trains in this mode).
    assert not np.allclose(variables["state"]["bn"]["mean"], 0.0)


def test_nnx_model_rejects_other_objects():
    with pytest.raises(UsageError, match=r"flax\.nnx\.Module"):
        nj.NNXModel(LinenNet())
