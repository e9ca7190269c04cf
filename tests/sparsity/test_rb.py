"""RB sparsity building blocks: REFERENCE.md section 4 loss values and mask rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nncf_jax.sparsity.rb import (
    RB_INITIAL_LOGIT,
    rb_binary_mask,
    rb_eval_mask,
    rb_local_sparsity_loss,
    rb_masked_weight,
    rb_sparsity_loss,
    rb_training_mask,
    rb_uniform,
)


@pytest.mark.parametrize(("level", "loss"), [(0.2, 16.0), (0.4, 64.0), (0.6, 144.0)])
@pytest.mark.parametrize("jit", [False, True])
def test_rb_loss_with_all_masks_at_one(level, loss, jit):
    fn = jax.jit(rb_sparsity_loss) if jit else rb_sparsity_loss
    masks = [jnp.ones((3, 3, 2, 4)), jnp.ones((10, 5))]
    assert float(fn(masks, level)) == pytest.approx(loss, rel=1e-5)


def test_rb_masks_eval_and_training():
    logits = jnp.array([RB_INITIAL_LOGIT, -3.0, 0.5, -0.5])
    np.testing.assert_array_equal(np.asarray(rb_eval_mask(logits)), [1, 0, 1, 0])
    key = jax.random.key(0)
    m1 = rb_training_mask(jnp.full((1000,), RB_INITIAL_LOGIT), key)
    m2 = rb_training_mask(jnp.full((1000,), RB_INITIAL_LOGIT), key)
    np.testing.assert_array_equal(np.asarray(m1), np.asarray(m2))  # same key, same mask
    assert set(np.unique(np.asarray(m1))) <= {0.0, 1.0}
    assert 0.97 < float(m1.mean()) < 1.0  # P(keep) = 0.99 at the initial logit
    # Straight-through: the gradient is that of the soft mask, not zero.
    g = jax.grad(lambda m: rb_training_mask(m, key).sum())(jnp.zeros(8))
    assert np.all(np.asarray(g) > 0)


def test_local_loss_is_one_term_per_layer():
    masks = [jnp.ones((3, 3, 2, 4)), jnp.ones((10, 5))]
    assert float(rb_local_sparsity_loss(masks, 0.2)) == pytest.approx(32.0, rel=1e-5)
    half = jnp.concatenate([jnp.ones(25), jnp.zeros(25)]).reshape(10, 5)
    # Layer 2 at its target (half kept at level 0.5), layer 1 at (1 - 0.5)^2 / p^2.
    assert float(rb_local_sparsity_loss([masks[0], half], 0.5)) == pytest.approx(100.0, rel=1e-5)


def test_binary_mask_is_straight_through_sigmoid():
    logits = jnp.array([-2.0, -0.1, 0.1, 3.0])
    np.testing.assert_array_equal(np.asarray(rb_binary_mask(logits)), [0, 0, 1, 1])
    g = jax.grad(lambda m: rb_binary_mask(m).sum())(logits)
    s = jax.nn.sigmoid(logits)
    np.testing.assert_allclose(np.asarray(g), np.asarray(s * (1 - s)), rtol=1e-6)


def test_uniform_noise_is_uniform_and_keyed():
    u = rb_uniform(jax.random.key(3), (200, 500))
    assert u.dtype == jnp.float32 and float(u.min()) >= 1e-6 and float(u.max()) <= 1 - 1e-6
    counts, _ = np.histogram(np.asarray(u), bins=10, range=(0, 1))
    np.testing.assert_allclose(counts / u.size, 0.1, atol=0.005)
    # Neighbours are not correlated.
    flat = np.asarray(u).ravel()
    assert abs(np.corrcoef(flat[:-1], flat[1:])[0, 1]) < 0.01
    np.testing.assert_array_equal(
        np.asarray(u), np.asarray(rb_uniform(jax.random.key(3), (200, 500)))
    )
    other = rb_uniform(jax.random.key(4), (200, 500))
    assert abs(np.corrcoef(flat, np.asarray(other).ravel())[0, 1]) < 0.01


def test_training_mask_keeps_each_weight_with_probability_sigmoid_m():
    logits = jnp.repeat(jnp.array([-2.0, 0.0, 1.0]), 20000).reshape(3, 20000)
    mask = rb_training_mask(logits, jax.random.key(5))
    np.testing.assert_allclose(
        np.asarray(mask.mean(axis=1)), np.asarray(jax.nn.sigmoid(logits[:, 0])), atol=0.01
    )


def test_masked_weight_gradients():
    w = jnp.array([2.0, -3.0, 0.5])
    mask = jnp.array([1.0, 0.0, 1.0])
    np.testing.assert_array_equal(np.asarray(rb_masked_weight(w, mask)), [2.0, 0.0, 0.5])
    gw, gm = jax.grad(lambda w, m: jnp.sum(rb_masked_weight(w, m)), argnums=(0, 1))(w, mask)
    # A pruned weight gets no gradient, its mask gets grad * w (it can come back).
    np.testing.assert_array_equal(np.asarray(gw), [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(np.asarray(gm), [2.0, -3.0, 0.5])
