"""Shared fixtures: a small Flax CNN, its variables, and a tree comparison helper."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest


class SmallCNN(nn.Module):
    """conv8 -> conv16 -> dense32 -> dense10 on 8x8x1 inputs (about 35k params)."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.relu(nn.Conv(16, (3, 3), strides=2)(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(32)(x))
        return nn.Dense(10)(x)


@pytest.fixture
def cnn():
    model = SmallCNN()
    x = jax.random.normal(jax.random.key(1), (16, 8, 8, 1))
    variables = model.init(jax.random.key(0), x)
    y = jax.random.randint(jax.random.key(2), (16,), 0, 10)
    return model, variables, x, y


def assert_trees_equal(a, b, *, rtol=0.0, atol=0.0):
    """Same structure and values (exact by default)."""
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b, f"structures differ:\n{tree_a}\n{tree_b}"
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.fixture
def trees_equal():
    return assert_trees_equal


def magnitude_config(sparsity_init=0.0, **params):
    base = {"schedule": "polynomial", "sparsity_target": 0.5, "sparsity_target_epoch": 3}
    base.update(params)
    return {
        "input_info": {"sample_size": [1, 8, 8, 1]},
        "compression": {
            "algorithm": "magnitude_sparsity",
            "sparsity_init": sparsity_init,
            "params": base,
        },
    }


@pytest.fixture
def make_magnitude_config():
    return magnitude_config


def make_train_step(ctrl, tx):
    """DESIGN.md section 2's train step, verbatim."""

    def xent(logits, y):
        return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    def train_step(variables, opt_state, cstate, x, y):
        def loss_fn(params):
            logits = ctrl.apply({**variables, "params": params}, cstate, x)
            return xent(logits, y) + ctrl.loss(params, cstate)

        params = variables["params"]
        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        updates, cstate = ctrl.transform.update(updates, cstate, params)
        params = optax.apply_updates(params, updates)
        return {**variables, "params": params}, opt_state, cstate

    return train_step


@pytest.fixture
def train_step_factory():
    return make_train_step
