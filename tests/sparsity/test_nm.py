"""N:M sparsity: hand-made patterns, ties, partial groups, schedule, train step, composite."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nncf_jax as nj
from nncf_jax.config import algorithm_defaults
from nncf_jax.core.paths import flatten_params
from nncf_jax.errors import ConfigError, StateMismatchError, UsageError
from nncf_jax.sparsity.nm import nm_mask, nm_pattern_holds

# Dense kernel (in=8, out=2): groups are rows 0-3 and 4-7 of each column.
DENSE = np.array(
    [
        [0.1, 4.0],
        [-3.0, 3.0],
        [2.0, 2.0],
        [0.5, 1.0],
        [1.0, 0.0],
        [1.0, 0.0],
        [-1.0, 0.0],
        [0.0, 0.0],
    ],
    np.float32,
)
DENSE_MASKS = {  # (n, m) -> mask (columns as written above)
    (2, 4): [[0, 1], [1, 1], [1, 0], [0, 0], [1, 1], [1, 1], [0, 0], [0, 0]],
    (1, 4): [[0, 1], [1, 0], [0, 0], [0, 0], [1, 1], [0, 0], [0, 0], [0, 0]],
    (3, 4): [[0, 1], [1, 1], [1, 1], [1, 0], [1, 1], [1, 1], [1, 1], [0, 0]],
    (1, 2): [[0, 1], [1, 0], [1, 1], [0, 0], [1, 1], [0, 0], [1, 1], [0, 0]],
}


def _mask(w, n, m, jit):
    fn = jax.jit(nm_mask, static_argnums=(1, 2)) if jit else nm_mask
    return np.asarray(fn(jnp.asarray(w, jnp.float32), n, m)).astype(int)


def _reference(w, n, m):
    """Loop version: groups of m along axis -2, kept = n largest |w|, lower index on ties,
    NaN lowest; a partial group of r keeps min(n, r)."""
    w = np.asarray(w, np.float64)
    moved = np.moveaxis(w, -2, -1)
    out = np.zeros(moved.shape, bool)
    for idx in np.ndindex(moved.shape[:-1]):
        row = moved[idx]
        for start in range(0, row.size, m):
            group = np.abs(row[start : start + m])
            key = np.where(np.isnan(group), -1.0, group)
            ranked = sorted(range(group.size), key=lambda i: (-key[i], i))
            for i in ranked[: min(n, group.size)]:
                out[idx][start + i] = True
    return np.moveaxis(out, -1, -2).astype(int)


# --- the pattern on hand-made weights ---------------------------------------------


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("pattern", sorted(DENSE_MASKS))
def test_dense_kernel_patterns(pattern, jit):
    n, m = pattern
    assert _mask(DENSE, n, m, jit).tolist() == DENSE_MASKS[pattern]


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize(
    ("column", "n", "expected"),
    [
        ([5, 5, 5, 5], 2, [1, 1, 0, 0]),  # all equal: the lower indices
        ([-2, 2, 2, -2], 2, [1, 1, 0, 0]),  # equal magnitudes, any sign
        ([1, 3, 3, 3], 2, [0, 1, 1, 0]),
        ([3, 1, 3, 1], 1, [1, 0, 0, 0]),
        ([0, 0, 0, 0], 3, [1, 1, 1, 0]),
        ([1, 3, -3, 3], 3, [0, 1, 1, 1]),
    ],
)
def test_ties_keep_the_lower_index(column, n, expected, jit):
    w = np.array(column, np.float32)[:, None]
    assert _mask(w, n, 4, jit)[:, 0].tolist() == expected


@pytest.mark.parametrize("jit", [False, True])
def test_conv_kernel_groups_run_along_input_channels(jit):
    # (h=1, w=2, in=4, out=1): one group of 4 input channels per (h, w, out).
    w = np.zeros((1, 2, 4, 1), np.float32)
    w[0, 0, :, 0] = [1.0, -5.0, 3.0, 2.0]
    w[0, 1, :, 0] = [2.0, 2.0, -2.0, 0.0]
    mask = _mask(w, 2, 4, jit)
    assert mask[0, 0, :, 0].tolist() == [0, 1, 1, 0]
    assert mask[0, 1, :, 0].tolist() == [1, 1, 0, 0]
    # Along w or out there is no grouping: each (h, w, out) is its own column.
    wide = np.concatenate([w, -w[..., ::-1, :]], axis=-1)  # out=2, channels reversed
    mask = _mask(wide, 2, 4, jit)
    assert mask[0, 0, :, 1].tolist() == [0, 1, 1, 0][::-1]


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize(
    ("column", "n", "m", "expected"),
    [
        ([1, 2, 3, 4, 5, 6], 2, 4, [0, 0, 1, 1, 1, 1]),  # tail of 2 keeps min(2, 2)
        ([7, 1, 2, 3, 0, 5, 4], 2, 4, [1, 0, 0, 1, 0, 1, 1]),  # tail of 3 keeps 2
        ([7, 1, 2, 3, 0, 5, 4], 1, 4, [1, 0, 0, 0, 0, 1, 0]),  # tail of 3 keeps 1
        ([3], 2, 4, [1]),  # fewer inputs than n: dense
        ([1, 5, 2, 4, 3], 2, 8, [0, 1, 0, 1, 0]),  # m longer than the axis: one group
        ([1, 2], 3, 4, [1, 1]),
    ],
)
def test_partial_group_keeps_min_n_r(column, n, m, expected, jit):
    w = np.array(column, np.float32)[:, None]
    mask = _mask(w, n, m, jit)
    assert mask[:, 0].tolist() == expected
    # The kernel zero-padded to a multiple of m is exactly n:m.
    padded = np.zeros((-(-len(column) // m) * m, 1), np.float32)
    padded[: len(column)] = w * mask
    assert bool(nm_pattern_holds(jnp.asarray(padded), n, m))


def test_matches_a_loop_reference_on_random_kernels():
    rng = np.random.default_rng(0)
    fn = jax.jit(nm_mask, static_argnums=(1, 2))
    for shape, n, m in [
        ((3, 3, 8, 5), 2, 4),
        ((2, 2, 11, 3), 2, 4),
        ((12, 7), 1, 4),
        ((16, 4), 4, 8),
        ((9, 6), 3, 8),
        ((10, 2), 1, 2),
    ]:
        w = rng.standard_normal(shape).astype(np.float32)
        w[rng.random(shape) < 0.3] = 0.5  # many ties
        got = np.asarray(fn(jnp.asarray(w), n, m)).astype(int)
        np.testing.assert_array_equal(got, _reference(w, n, m), err_msg=f"{shape} {n}:{m}")
        np.testing.assert_array_equal(np.asarray(nm_mask(jnp.asarray(w), n, m)), got)
        assert bool(nm_pattern_holds(jnp.asarray(w * got), n, m))


def test_nan_ranks_lowest_and_inf_highest():
    w = np.array([[np.nan, 1.0, np.inf, 0.0], [np.nan, np.nan, 0.0, 0.0]], np.float32).T
    mask = _mask(w, 2, 4, jit=False)
    assert mask[:, 0].tolist() == [0, 1, 1, 0]
    assert mask[:, 1].tolist() == [0, 0, 1, 1]  # a zero outranks NaN
    # A partial group keeps min(n, r) entries even when they are NaN.
    tail = np.array([1, 2, 3, 4, np.nan, np.nan], np.float32)[:, None]
    assert _mask(tail, 2, 4, jit=False)[:, 0].tolist() == [0, 0, 1, 1, 1, 1]


def test_nm_pattern_holds():
    group = lambda *v: jnp.asarray(np.array(v, np.float32)[:, None])  # noqa: E731
    assert bool(nm_pattern_holds(group(1, 0, 2, 0, 0, 0, 0, 3), 2, 4))
    assert not bool(nm_pattern_holds(group(1, 2, 3, 0, 0, 0, 0, 0), 2, 4))
    assert bool(nm_pattern_holds(group(1, 2, 3, 0), 3, 4))
    assert bool(nm_pattern_holds(group(0, 0, 0, 0, 1, 2), 2, 4))  # tail of 2 may be full
    assert not bool(nm_pattern_holds(group(0, 0, 0, 0, 1, 2, 3), 2, 4))
    conv = jnp.zeros((1, 1, 4, 2)).at[0, 0, :3, 1].set(1.0)  # 3 of 4 input channels
    assert not bool(nm_pattern_holds(conv, 2, 4))
    assert bool(jax.jit(nm_pattern_holds, static_argnums=(1, 2))(conv, 3, 4))


@pytest.mark.parametrize(("n", "m"), [(2, 2), (0, 4), (3, 2), (2.0, 4), (True, 4)])
def test_bad_patterns_raise(n, m):
    with pytest.raises(UsageError, match="n"):
        nm_mask(jnp.ones((4, 1)), n, m)


# --- config ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n": 4, "m": 4}, r"compression\.params\.m: expected m > n \(4\), got 4"),
        ({"n": 4}, r"compression\.params\.n: expected an integer below m, which is 4 by default"),
        ({"m": 2}, r"compression\.params\.m: expected an integer above n, which is 2 by default"),
        ({"n": 0, "m": 4}, r"compression\.params\.n: expected an integer >= 1, got 0"),
        ({"m": 1, "n": 1}, r"compression\.params\.m: expected an integer >= 2, got 1"),
        ({"n": 2.0}, r"compression\.params\.n: expected an integer >= 1, got 2\.0"),
        (
            {"start_epoch": 3, "freeze_epoch": 3},
            r"compression\.params\.freeze_epoch: expected freeze_epoch > start_epoch \(3\), got 3",
        ),
        ({"start_epoch": -1}, r"compression\.params\.start_epoch: expected an integer >= 0"),
        ({"sparsity_target": 0.5}, r"compression\.params\.sparsity_target: unknown key"),
    ],
)
def test_config_errors_name_the_key(params, message):
    config = {"compression": {"algorithm": "nm_sparsity", "params": params}}
    with pytest.raises(ConfigError, match=message):
        nj.NNCFConfig.from_dict(config)


def test_defaults():
    assert algorithm_defaults("nm_sparsity") == {"params": {"n": 2, "m": 4, "start_epoch": 0}}
    nj.NNCFConfig.from_dict({"compression": {"algorithm": "nm_sparsity", "params": {"n": 3}}})


# --- through create_compressed_model --------------------------------------------------

CONV = np.zeros((1, 2, 4, 1), np.float32)
CONV[0, 0, :, 0] = [1.0, -5.0, 3.0, 2.0]
CONV[0, 1, :, 0] = [2.0, 2.0, -2.0, 0.0]
TAIL = np.array([[7.0], [1.0], [2.0], [3.0], [0.5], [5.0], [4.0]], np.float32)  # in=7


def _params(scale=1.0):
    return {
        "dense": {"kernel": jnp.asarray(DENSE * scale), "bias": jnp.zeros(2)},
        "conv": {"kernel": jnp.asarray(CONV * scale)},
        "tail": {"kernel": jnp.asarray(TAIL * scale)},
    }


def _apply(params, x):
    return x @ params["dense"]["kernel"] + params["dense"]["bias"]


def _config(**params):
    return {"compression": {"algorithm": "nm_sparsity", "params": params}}


def _nm_state(cstate):
    return cstate.algorithms["nm_sparsity"]


def _masks(state):
    return {k: np.asarray(v).astype(int) for k, v in flatten_params(state).items()}


def test_controller_numbers_on_hand_made_weights():
    ctrl, cstate = nj.create_compressed_model(_apply, _params(), _config())
    masks = _masks(_nm_state(cstate).masks)
    assert sorted(masks) == ["conv/kernel", "dense/kernel", "tail/kernel"]  # no bias
    assert masks["dense/kernel"].tolist() == DENSE_MASKS[(2, 4)]
    assert masks["conv/kernel"][0, :, :, 0].tolist() == [[0, 1, 1, 0], [1, 1, 0, 0]]
    assert masks["tail/kernel"][:, 0].tolist() == [1, 0, 0, 1, 0, 1, 1]
    # 8 of 16 + 4 of 8 + 3 of 7 targeted weights are masked.
    assert ctrl.compression_rate == pytest.approx(15 / 31)
    assert ctrl.maximal_compression_rate == 0.5
    assert ctrl.compression_stage() == nj.CompressionStage.FULLY_COMPRESSED
    assert ctrl.scheduler.current_sparsity_level == 0.5
    stripped = ctrl.strip()
    for name in masks:
        w = flatten_params(stripped)[name]
        assert bool(nm_pattern_holds(w, 2, 4)), name
    np.testing.assert_array_equal(stripped["dense"]["kernel"], DENSE * masks["dense/kernel"])

    stats = ctrl.statistics().nm_sparsity
    assert (stats.pattern, stats.active, stats.target_sparsity_level) == ("2:4", True, 0.5)
    layers = {layer.name: layer for layer in stats.layers}
    assert (layers["conv/kernel"].group_axis, layers["conv/kernel"].full_groups) == (2, 1)
    assert (layers["tail/kernel"].full_groups, layers["tail/kernel"].partial_group) == (1, 3)
    assert layers["tail/kernel"].pattern_sparsity == pytest.approx(3 / 7)
    assert layers["dense/kernel"].pattern_sparsity == 0.5
    # Zeros of w * mask: dense also keeps two zeros of its own, and the bias is zero.
    assert layers["dense/kernel"].sparsity_level == pytest.approx(10 / 16)
    assert stats.model_statistics.sparsity_level_for_layers == pytest.approx(17 / 31)
    assert stats.model_statistics.sparsity_level == pytest.approx(19 / 33)
    text = stats.to_str()
    assert "2:4 along the input axis" in text and "tail/kernel" in text

    state = ctrl.get_compression_state()
    assert state["builder_state"]["nm_sparsity"] == {
        "target_weights": ["conv/kernel", "dense/kernel", "tail/kernel"],
        "n": 2,
        "m": 4,
    }
    json.dumps(state, allow_nan=False)
    with pytest.raises(StateMismatchError, match=r"builder_state\.m: saved 4, this build has 8"):
        nj.create_compressed_model(_apply, _params(), _config(m=8), compression_state=state)


def test_scopes_select_the_targets():
    _, cstate = nj.create_compressed_model(
        _apply, _params(), {**_config(), "ignored_scopes": ["conv"]}
    )
    assert sorted(_masks(_nm_state(cstate).masks)) == ["dense/kernel", "tail/kernel"]
    config = _config()
    config["compression"]["target_scopes"] = "{re}^tail"
    _, cstate = nj.create_compressed_model(_apply, _params(), config)
    assert sorted(_masks(_nm_state(cstate).masks)) == ["tail/kernel"]


def test_start_and_freeze_epochs_through_the_facade():
    ctrl, _ = nj.create_compressed_model(_apply, _params(), _config(start_epoch=2, freeze_epoch=4))
    dense_masks = lambda: _masks(_nm_state(ctrl.state).masks)["dense/kernel"]  # noqa: E731
    assert dense_masks().all() and ctrl.compression_rate == 0.0
    assert ctrl.compression_stage() == nj.CompressionStage.UNCOMPRESSED
    np.testing.assert_array_equal(ctrl.strip()["dense"]["kernel"], DENSE)
    for _ in range(2):  # epochs 0, 1: every weight kept
        ctrl.scheduler.epoch_step()
        assert dense_masks().all() and ctrl.scheduler.current_sparsity_level == 0.0
    ctrl.scheduler.epoch_step()  # epoch 2: the pattern turns on
    assert dense_masks().tolist() == DENSE_MASKS[(2, 4)]
    assert ctrl.compression_stage() == nj.CompressionStage.FULLY_COMPRESSED
    # Epoch 3 recomputes from the current weights: reversed magnitudes.
    flipped = _params()
    flipped["dense"]["kernel"] = jnp.asarray(1.0 / (np.abs(DENSE) + 1.0))
    ctrl.sync(flipped)
    ctrl.scheduler.epoch_step()
    assert dense_masks()[:, 1].tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    ctrl.sync(_params())
    for _ in range(3):  # frozen from epoch 4
        ctrl.scheduler.epoch_step()
        ctrl.scheduler.step()
        assert dense_masks()[:, 1].tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    assert ctrl.scheduler.current_epoch == 6

    # Default freeze: computed once, at start_epoch.
    ctrl, _ = nj.create_compressed_model(_apply, _params(), _config(start_epoch=1))
    ctrl.scheduler.epoch_step()
    assert dense_masks().all()
    ctrl.scheduler.epoch_step()
    assert dense_masks().tolist() == DENSE_MASKS[(2, 4)]
    ctrl.sync(flipped)
    ctrl.scheduler.epoch_step()
    assert dense_masks().tolist() == DENSE_MASKS[(2, 4)]


def test_a_jump_past_the_freeze_epoch_still_turns_the_pattern_on():
    ctrl, _ = nj.create_compressed_model(_apply, _params(), _config(start_epoch=1))
    ctrl.scheduler.epoch_step(5)
    assert ctrl.compression_stage() == nj.CompressionStage.FULLY_COMPRESSED


def test_state_dict_resume():
    ctrl, _ = nj.create_compressed_model(_apply, _params(), _config(start_epoch=1))
    ctrl.scheduler.epoch_step()
    ctrl.scheduler.epoch_step()
    saved = ctrl.get_compression_state()
    assert saved["ctrl_state"]["nm_sparsity"]["scheduler_state"]["current_sparsity_level"] == 0.5
    assert saved["ctrl_state"]["nm_sparsity"]["compression_stage"] == 2
    resumed, cstate = nj.create_compressed_model(
        _apply, _params(), _config(start_epoch=1), compression_state=saved
    )
    assert _masks(_nm_state(cstate).masks)["dense/kernel"].tolist() == DENSE_MASKS[(2, 4)]
    assert resumed.scheduler.current_epoch == 1
    # Counters only (NNCF's scheduler state): the schedule is replayed.
    fresh, _ = nj.create_compressed_model(_apply, _params(), _config(start_epoch=3))
    fresh.scheduler.load_state({"current_step": 10, "current_epoch": 3})
    assert fresh.compression_stage() == nj.CompressionStage.FULLY_COMPRESSED
    fresh.scheduler.load_state({"current_step": 10, "current_epoch": 2})
    assert fresh.compression_stage() == nj.CompressionStage.UNCOMPRESSED


def test_transform_turns_the_pattern_on_at_the_start_epoch():
    params = _params()
    ctrl, cstate = nj.create_compressed_model(
        _apply, params, _config(start_epoch=1, steps_per_epoch=2)
    )
    update = jax.jit(ctrl.transform.update)
    zeros = jax.tree.map(jnp.zeros_like, params)
    levels = []
    for _ in range(4):
        updates, cstate = update(zeros, cstate, params)
        levels.append(float(_nm_state(cstate).level))
    # The state after iteration k is that of iteration k + 1: epoch 1 starts at iteration 2.
    assert levels == [0.0, 0.5, 0.5, 0.5]
    assert update._cache_size() == 1
    np.testing.assert_array_equal(
        np.asarray(updates["dense"]["kernel"]), np.zeros((8, 2))
    )  # zero grads stay zero
    assert _masks(_nm_state(cstate).masks)["dense/kernel"].tolist() == DENSE_MASKS[(2, 4)]


# --- the DESIGN.md train step -----------------------------------------------------------


def test_jitted_train_step_keeps_the_pattern_and_compiles_once(cnn, train_step_factory):
    model, variables, x, y = cnn
    config = {
        "compression": {
            "algorithm": "nm_sparsity",
            "params": {"start_epoch": 1, "freeze_epoch": 3},
        }
    }
    ctrl, cstate = nj.create_compressed_model(model, variables, config, steps_per_epoch=2)
    tx = optax.adam(1e-2)
    opt_state = tx.init(variables["params"])
    step = jax.jit(train_step_factory(ctrl, tx))
    history = []
    variables, opt_state, cstate = step(variables, opt_state, cstate, x, y)
    with jax.transfer_guard("disallow"):
        for _ in range(7):  # epochs 1-4: turn on, refresh, freeze
            history.append((variables["params"], cstate))
            variables, opt_state, cstate = step(variables, opt_state, cstate, x, y)
    history.append((variables["params"], cstate))
    assert step._cache_size() == 1
    assert int(cstate.epoch) == 4
    dtypes = [leaf.dtype for leaf in jax.tree.leaves(ctrl.init_state(variables["params"]))]
    assert [leaf.dtype for leaf in jax.tree.leaves(cstate)] == dtypes

    # After step 2 (epoch 1 starts) the masks are those of the weights it returned.
    params, state = history[1]
    masks = flatten_params(_nm_state(state).masks)
    flat = flatten_params(params)
    assert sorted(masks) == ["Conv_0/kernel", "Conv_1/kernel", "Dense_0/kernel", "Dense_1/kernel"]
    for name, mask in masks.items():
        np.testing.assert_array_equal(np.asarray(mask), np.asarray(nm_mask(flat[name], 2, 4)))
    assert bool(np.asarray(masks["Conv_0/kernel"]).all())  # one input channel: dense
    assert float(np.asarray(masks["Dense_0/kernel"]).mean()) == 0.5

    # Frozen from epoch 3 (after step 6): pruned weights never move, kept ones train.
    frozen_params, frozen_state = history[5]
    masks = flatten_params(_nm_state(frozen_state).masks)
    final_masks = flatten_params(_nm_state(cstate).masks)
    before = flatten_params(frozen_params)
    after = flatten_params(variables["params"])
    compressed = flatten_params(ctrl.compress_params(variables["params"], cstate))
    for name, mask in masks.items():
        mask = np.asarray(mask)
        np.testing.assert_array_equal(np.asarray(final_masks[name]), mask)
        np.testing.assert_array_equal(
            np.asarray(after[name])[~mask], np.asarray(before[name])[~mask]
        )
        assert bool(nm_pattern_holds(compressed[name], 2, 4)), name
    assert np.any(np.asarray(after["Dense_0/kernel"]) != np.asarray(before["Dense_0/kernel"]))


# --- composite with quantization -----------------------------------------------------------


class Two(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(6)(x))  # Dense_0: (8, 6)
        return nn.Dense(4)(h)  # Dense_1: (6, 4): one group of 4 and a tail of 2


@pytest.mark.parametrize(
    ("quantization_first", "mode"), [(False, "symmetric"), (True, "asymmetric")]
)
def test_composite_with_quantization_keeps_the_pattern(quantization_first, mode):
    model = Two()
    x = jax.random.normal(jax.random.key(3), (5, 8))
    variables = model.init(jax.random.key(0), x)
    sections = [
        {"algorithm": "nm_sparsity"},
        {
            "algorithm": "quantization",
            "weights": {"mode": mode},
            "initializer": {"range": {"num_init_samples": 0}},
        },
    ]
    if quantization_first:
        sections = sections[::-1]
    config = {"input_info": {"sample_size": [1, 8]}, "compression": sections}
    ctrl, cstate = nj.create_compressed_model(model, variables, config)
    assert [a.name for a in ctrl.algorithms] == ["nm_sparsity", "quantization"]
    params = variables["params"]
    masks = flatten_params(_nm_state(cstate).masks)
    compressed = flatten_params(jax.jit(ctrl.compress_params)(params, cstate))
    stripped = flatten_params(ctrl.strip(variables, cstate)["params"])
    for name in ("Dense_0/kernel", "Dense_1/kernel"):
        mask = np.asarray(masks[name])
        for w in (compressed[name], stripped[name]):
            w = np.asarray(w)
            assert bool(nm_pattern_holds(jnp.asarray(w), 2, 4)), name
            assert np.all(w[~mask] == 0)
            assert np.all(w[mask] != 0)  # random weights survive 8-bit quantization
    # The composite's rate is the N:M one (quantization has none).
    assert ctrl.compression_rate == pytest.approx((24 + 8) / (48 + 24))
    assert ctrl.compression_stage() == nj.CompressionStage.FULLY_COMPRESSED
    stats = ctrl.statistics()
    assert stats.nm_sparsity.pattern == "2:4"
    y = ctrl.apply(variables, cstate, x)
    with ctrl.forward_context(cstate):
        np.testing.assert_array_equal(model.apply(ctrl.strip(variables, cstate), x), y)
