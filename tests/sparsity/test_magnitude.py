"""Magnitude sparsity: REFERENCE.md section 4 masks, modes, rates, jit and no-jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nncf_jax as nj
from nncf_jax.sparsity.magnitude import magnitude_masks, weight_importance
from nncf_jax.sparsity.threshold import kth_smallest

W1 = np.array([[10.0, 9.0], [9.0, 10.0]], np.float32)
W2 = np.array([[-9.0, -10.0, -10.0], [-10.0, -9.0, -10.0], [-10.0, -10.0, -9.0]], np.float32)
M1 = [[1, 0], [0, 1]]
M2 = [[0, 1, 1], [1, 0, 1], [1, 1, 0]]


@pytest.mark.parametrize("jit", [False, True])
def test_reference_check_masks_abs_global_level_0_3(jit):
    fn = lambda ws, level: magnitude_masks(ws, level, importance="abs", mode="global")  # noqa: E731
    if jit:
        fn = jax.jit(fn)
    masks, thresholds = fn([jnp.asarray(W1), jnp.asarray(W2)], 0.3)
    assert np.asarray(masks[0]).astype(int).tolist() == M1
    assert np.asarray(masks[1]).astype(int).tolist() == M2
    np.testing.assert_array_equal(np.asarray(thresholds), [9.0, 9.0])


def _two_layer_model():
    def apply(params, x):
        return x @ params["a"]["kernel"][:, :1] + jnp.sum(params["b"]["kernel"])

    params = {
        "a": {"kernel": jnp.asarray(W1)},
        "b": {"kernel": jnp.asarray(W2), "bias": jnp.ones(3)},
    }
    return apply, params


def test_reference_check_through_controller_rate_setter():
    apply, params = _two_layer_model()
    config = {
        "compression": {
            "algorithm": "magnitude_sparsity",
            "params": {"weight_importance": "abs", "sparsity_level_setting_mode": "global"},
        }
    }
    ctrl, _ = nj.create_compressed_model(apply, params, config)
    ctrl.compression_rate = 0.3
    stripped = ctrl.strip()
    assert (np.asarray(stripped["a"]["kernel"]) != 0).astype(int).tolist() == M1
    assert (np.asarray(stripped["b"]["kernel"]) != 0).astype(int).tolist() == M2
    # compression_rate counts zeros over *all* params (bias included): 2 + 3 zeros of 16.
    assert ctrl.compression_rate == pytest.approx(5 / 16)
    stats = ctrl.statistics().magnitude_sparsity
    assert stats.model_statistics.sparsity_level_for_layers == pytest.approx(5 / 13)
    assert stats.thresholds == {"a/kernel": 9.0, "b/kernel": 9.0}
    # The rate setter freezes the level: the schedule no longer moves it.
    for _ in range(5):
        ctrl.scheduler.epoch_step()
    assert ctrl.scheduler.current_sparsity_level == pytest.approx(0.3)


def test_local_mode_uses_one_threshold_per_tensor():
    a = jnp.arange(1.0, 11.0).reshape(2, 5)  # 1..10
    b = jnp.arange(100.0, 104.0).reshape(2, 2)  # 100..103
    masks, thresholds = magnitude_masks([a, b], 0.5, importance="abs", mode="local")
    # a: rank int(9 * 0.5) = 4 -> threshold 5; b: rank int(3 * 0.5) = 1 -> threshold 101.
    np.testing.assert_array_equal(np.asarray(thresholds), [5.0, 101.0])
    assert int(masks[0].sum()) == 5 and int(masks[1].sum()) == 2
    # Global mode on the same tensors prunes only from `a`.
    masks_g, _ = magnitude_masks([a, b], 0.5, importance="abs", mode="global")
    assert int(masks_g[1].sum()) == 4


def test_normed_abs_divides_by_the_l2_norm_per_tensor():
    w = jnp.array([[3.0, -4.0]])
    np.testing.assert_allclose(np.asarray(weight_importance(w, "normed_abs")), [[0.6, 0.8]])
    assert np.all(np.asarray(weight_importance(jnp.zeros((2, 2)), "normed_abs")) == 0)
    # normed_abs ranks a small-scale tensor's big entries above a large-scale tensor's small ones.
    small = jnp.array([[0.1, 0.01]])
    big = jnp.array([[10.0, 9.0]])
    masks, _ = magnitude_masks([small, big], 0.4, importance="normed_abs")
    assert np.asarray(masks[0]).tolist() == [[True, False]]


def test_level_zero_keeps_every_weight():
    masks, _ = magnitude_masks([jnp.asarray(W1), jnp.asarray(W2)], 0.0, importance="abs")
    assert all(bool(m.all()) for m in masks)


def test_float32_level_rank_matches_float64_rank():
    # 0.7 is 0.69999999 in float32; NNCF's int((N - 1) * 0.7) with N = 11 is 7.
    w = jnp.arange(1.0, 12.0).reshape(1, 11)
    _, thresholds = magnitude_masks([w], 0.7, importance="abs")
    assert float(thresholds[0]) == 8.0


def test_kth_smallest_is_exact_against_sort():
    rng = np.random.default_rng(0)
    fn = jax.jit(kth_smallest)
    for trial in range(50):
        arrays = [
            (
                np.abs(rng.standard_normal(rng.integers(1, 40, size=2)))
                * rng.choice([1e-4, 1.0, 1e3])
            ).astype(np.float32)
            for _ in range(rng.integers(1, 4))
        ]
        if trial % 2:
            arrays = [np.round(a) for a in arrays]  # many ties and exact zeros
        flat = np.sort(np.concatenate([a.ravel() for a in arrays]))
        k = int(rng.integers(0, flat.size))
        assert float(fn([jnp.asarray(a) for a in arrays], k)) == flat[k]


def test_masked_weights_get_zero_gradient_and_do_not_move(
    cnn, train_step_factory, make_magnitude_config
):
    import optax

    model, variables, x, y = cnn
    ctrl, _ = nj.create_compressed_model(
        model,
        variables,
        make_magnitude_config(sparsity_level_setting_mode="local"),
        steps_per_epoch=2,
    )
    ctrl.compression_rate = 0.5  # set now and frozen: no refresh during the run
    cstate = ctrl.state
    tx = optax.adam(1e-2)
    opt_state = tx.init(variables["params"])
    step = jax.jit(train_step_factory(ctrl, tx))
    mask = np.asarray(cstate.algorithms["magnitude_sparsity"].masks["Dense_0"]["kernel"])
    before = np.asarray(variables["params"]["Dense_0"]["kernel"])
    for _ in range(4):
        variables, opt_state, cstate = step(variables, opt_state, cstate, x, y)
    after = np.asarray(variables["params"]["Dense_0"]["kernel"])
    assert mask.mean() == pytest.approx(0.5, abs=0.01)
    np.testing.assert_array_equal(
        np.asarray(cstate.algorithms["magnitude_sparsity"].masks["Dense_0"]["kernel"]), mask
    )
    # Pruned weights stay exactly where they were (Adam's momentum alone would
    # move them otherwise); kept ones train.
    np.testing.assert_array_equal(after[~mask], before[~mask])
    assert np.any(after[mask] != before[mask])
