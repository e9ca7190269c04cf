"""RB sparsity building blocks: REFERENCE.md section 4 loss values and mask rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nncf_jax.sparsity.rb import RB_INITIAL_LOGIT, rb_eval_mask, rb_sparsity_loss, rb_training_mask


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
