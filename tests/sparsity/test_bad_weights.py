"""Odd weights and mismatched trees: defined behaviour and clear errors, never a crash."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nncf_jax as nj
from nncf_jax.errors import StateMismatchError

CONFIG = {
    "compression": {
        "algorithm": "magnitude_sparsity",
        "params": {"weight_importance": "abs", "sparsity_level_setting_mode": "local"},
    }
}


def _apply(params, x):
    return x @ params["dense"]["kernel"]


def test_nan_and_inf_weights_warn_by_name_and_have_a_defined_mask():
    kernel = np.arange(1.0, 13.0, dtype=np.float32).reshape(4, 3)
    kernel[0, 0], kernel[1, 1], kernel[3, 2] = np.nan, np.nan, np.inf
    params = {"dense": {"kernel": jnp.asarray(kernel)}}
    with pytest.warns(RuntimeWarning, match=r"dense/kernel: 2 NaN and 1 Inf weights"):
        ctrl, _ = nj.create_compressed_model(_apply, params, CONFIG)
    ctrl.compression_rate = 0.25  # rank int(11 * 0.25) = 2: the two NaNs and the smallest value
    stripped = np.asarray(ctrl.strip()["dense"]["kernel"])
    assert stripped[0, 0] == 0 and stripped[1, 1] == 0  # NaN pruned to an exact 0
    assert np.isinf(stripped[3, 2])  # Inf ranks highest and is kept
    assert np.isfinite(stripped[np.isfinite(kernel)]).all()
    assert int((stripped == 0).sum()) == 3


def test_one_nan_does_not_poison_normed_abs():
    from nncf_jax.sparsity.magnitude import weight_importance

    w = jnp.array([[3.0, 4.0, jnp.nan]])
    np.testing.assert_allclose(np.asarray(weight_importance(w, "normed_abs")), [[0.6, 0.8, 0.0]])


def test_scalar_empty_integer_and_bf16_params():
    params = {
        "dense": {"kernel": jnp.ones((6, 4), jnp.bfloat16) * jnp.arange(1, 5, dtype=jnp.bfloat16)},
        "empty": {"kernel": jnp.zeros((0, 4))},
        "scale": jnp.float32(2.0),
        "table": jnp.arange(12, dtype=jnp.int32).reshape(3, 4),
    }

    def apply(p, x):
        return (x @ p["dense"]["kernel"].astype(jnp.float32)) * p["scale"]

    ctrl, cstate = nj.create_compressed_model(apply, params, CONFIG, steps_per_epoch=2)
    masks = cstate.algorithms["magnitude_sparsity"].masks
    assert list(masks) == ["dense"]  # empty, scalar and integer leaves are not targeted
    ctrl.compression_rate = 0.5
    stripped = ctrl.strip()
    assert stripped["dense"]["kernel"].dtype == jnp.bfloat16
    assert int((np.asarray(stripped["dense"]["kernel"], np.float32) == 0).sum()) == 12
    stats = ctrl.statistics().magnitude_sparsity.model_statistics
    assert stats.sparsity_level_for_layers == pytest.approx(0.5)
    updates, state = jax.jit(ctrl.transform.update)(
        jax.tree.map(jnp.ones_like, params), ctrl.state, params
    )
    assert updates["table"].dtype == jnp.int32 and int(state.step) == 1


def _built(cnn):
    model, variables, x, _ = cnn
    ctrl, cstate = nj.create_compressed_model(model, variables, CONFIG, steps_per_epoch=2)
    return ctrl, cstate, variables, x


def test_params_changed_since_the_state_was_made_are_named(cnn):
    ctrl, cstate, variables, x = _built(cnn)
    params = dict(variables["params"])
    removed = {k: v for k, v in params.items() if k != "Dense_1"}
    with pytest.raises(StateMismatchError, match=r"removed: \['Dense_1/bias', 'Dense_1/kernel'\]"):
        ctrl.apply({"params": removed}, cstate, x)
    added = {**params, "Extra": {"kernel": jnp.ones((3, 3))}}
    with pytest.raises(StateMismatchError, match=r"added: \['Extra/kernel'\]"):
        jax.jit(ctrl.apply)({"params": added}, cstate, x)
    reshaped = {**params, "Dense_1": {"kernel": jnp.ones((32, 7)), "bias": jnp.ones(7)}}
    with pytest.raises(
        StateMismatchError, match=r"Dense_1/kernel: built for \(32, 10\), got \(32, 7\)"
    ):
        ctrl.transform.update(reshaped, cstate, reshaped)


def test_a_state_from_another_controller_is_refused(cnn):
    ctrl, _cstate, variables, x = _built(cnn)
    model = cnn[0]
    other, other_state = nj.create_compressed_model(
        model, variables, {"compression": {"algorithm": "const_sparsity"}}
    )
    with pytest.raises(StateMismatchError, match=r"no entry for \['magnitude_sparsity'\]"):
        ctrl.apply(variables, other_state, x)
    with pytest.raises(StateMismatchError, match="expected the CompressionState"):
        ctrl.loss(variables["params"], {"not": "a state"})
    with pytest.raises(StateMismatchError):
        ctrl.state = other_state
    assert other.name == "const_sparsity"
    # And optax states in place of the compression state are refused too.
    with pytest.raises(StateMismatchError):
        ctrl.transform.update(
            variables["params"], optax.adam(1e-3).init(variables["params"]), variables["params"]
        )
