"""Filter pruning: importance, the multiple-of-8 rule, schedules, masks, jit, errors, shrink."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from pruning.models import tiny_resnet

import nncf_jax as nj
from nncf_jax.errors import ConfigError
from nncf_jax.pruning import build_pruning_graph, shrink
from nncf_jax.pruning.importance import filter_importance, kept_count, level_mask


@pytest.fixture(scope="module")
def resnet():
    return tiny_resnet()


def config(**params):
    init = params.pop("pruning_init", 0.0)
    section = {"algorithm": "filter_pruning", "pruning_init": init, "params": params}
    return {"input_info": {"sample_size": [2, 8, 8, 1]}, "compression": section}


@pytest.mark.parametrize("jit", [False, True])
def test_importances(jit):
    w = jnp.array([[[3.0, 1.0, 0.0]], [[4.0, -1.0, 0.0]]])  # axis 2: three filters
    fn = jax.jit(filter_importance, static_argnums=(1, 2)) if jit else filter_importance
    np.testing.assert_allclose(fn(w, 2, "L1"), [7.0, 2.0, 0.0])
    np.testing.assert_allclose(fn(w, 2, "L2"), [5.0, np.sqrt(2.0), 0.0], rtol=1e-6)
    # sum_j ||F_i - F_j||: F = (3,4), (1,-1), (0,0)
    d01, d02, d12 = np.sqrt(4 + 25), 5.0, np.sqrt(2.0)
    np.testing.assert_allclose(
        fn(w, 2, "geometric_median"), [d01 + d02, d01 + d12, d02 + d12], rtol=1e-5
    )


def test_multiple_of_8_rule():
    # k = N - ceil(N (1 - l) / 8) * 8
    assert [int(kept_count(n, 0.4)) for n in (8, 16, 32, 64, 100)] == [8, 16, 24, 40, 64]
    assert int(kept_count(16, 0.5)) == 8
    assert int(kept_count(32, 0.0)) == 32
    imp = jnp.arange(32, dtype=jnp.float32)[::-1]
    mask = jax.jit(level_mask)(imp, 0.4)
    assert int(mask.sum()) == 24 and bool(mask[:24].all()) and not bool(mask[24:].any())


def test_exponential_with_bias_check_values(resnet):
    model, variables, _ = resnet
    ctrl, _ = nj.create_compressed_model(
        model,
        variables,
        config(
            pruning_init=0.1,
            schedule="exponential_with_bias",
            pruning_target=0.7,
            num_init_steps=3,
            pruning_steps=5,
        ),
    )
    levels = []  # after iteration i the state is at epoch (i + 1) // 2
    for _ in range(10):
        ctrl.scheduler.epoch_step()
        levels.append(ctrl.scheduler.current_pruning_level)
    expected = [0, 0, 0, 0.1, 0.6489741, 0.6956869, 0.6996617, 0.7, 0.7, 0.7]
    np.testing.assert_allclose(levels, expected, atol=1e-6)
    assert ctrl.compression_stage() == nj.CompressionStage.FULLY_COMPRESSED
    assert ctrl.compression_rate == pytest.approx(0.7)


def test_baseline_masks_every_member(resnet):
    model, variables, _ = resnet
    ctrl, _ = nj.create_compressed_model(
        model, variables, config(schedule="baseline", pruning_target=0.5)
    )
    assert ctrl.compression_stage() == nj.CompressionStage.UNCOMPRESSED
    ctrl.scheduler.epoch_step()
    assert ctrl.compression_stage() == nj.CompressionStage.FULLY_COMPRESSED
    stripped = ctrl.strip(variables)["params"]
    kernel = np.asarray(stripped["stage1"]["conv0"]["kernel"])
    pruned = np.all(kernel == 0, axis=(0, 1, 2))
    assert pruned.sum() == 8  # 16 filters at 0.5 keep 8
    # the surviving filters are the 8 largest by L2
    norms = np.sqrt(
        (np.asarray(variables["params"]["stage1"]["conv0"]["kernel"]) ** 2).sum((0, 1, 2))
    )
    assert set(np.flatnonzero(~pruned)) == set(np.argsort(-norms)[:8])
    for leaf in (
        stripped["stage1"]["conv0"]["bias"],
        stripped["stage1"]["bn0"]["scale"],
        stripped["stage1"]["bn0"]["bias"],
    ):
        assert np.all(np.asarray(leaf)[pruned] == 0)
    consumer = np.asarray(stripped["stage1"]["conv1"]["kernel"])
    assert np.all(consumer[:, :, pruned, :] == 0) and np.any(consumer[:, :, ~pruned, :] != 0)
    stats = ctrl.statistics().filter_pruning
    assert stats.current_flops < stats.full_flops and stats.current_params < stats.full_params
    assert ctrl.get_compression_state()["builder_state"]["filter_pruning"]["groups"] == [
        ["stage1/conv0/kernel"],
        ["stage2/conv0/kernel"],
        ["pw/kernel"],
        ["side/kernel"],
        ["mix/kernel"],
    ]


def test_concatenation_consumer_mask_is_the_segments_masks_concatenated(resnet):
    model, variables, _ = resnet
    ctrl, _ = nj.create_compressed_model(
        model, variables, config(schedule="baseline", pruning_target=0.5)
    )
    ctrl.scheduler.epoch_step()
    algo = ctrl.algorithms[0]
    index = {g.producers[0].path: g.index for g in algo.groups}
    masks = ctrl.state.algorithms["filter_pruning"].masks
    pw = np.asarray(masks[f"group_{index['params/pw/kernel']}"])
    side = np.asarray(masks[f"group_{index['params/side/kernel']}"])
    assert pw.sum() == 16 and side.sum() == 8  # 24 -> 16; 8 channels stay 8 at 0.5
    stripped = ctrl.strip(variables)["params"]
    mix = np.asarray(stripped["mix"]["kernel"])  # (1, 1, 32, 16)
    kept_in = np.any(mix != 0, axis=(0, 1, 3))
    np.testing.assert_array_equal(kept_in, np.concatenate([pw, side]))
    # pw's pruned filters are zero in pw and in mix's first 24 input channels
    assert np.all(np.asarray(stripped["pw"]["kernel"])[..., ~pw] == 0)
    assert np.all(mix[:, :, :24][:, :, ~pw] == 0)


def test_prune_batch_norms_false_leaves_bn_alone(resnet):
    model, variables, _ = resnet
    ctrl, _ = nj.create_compressed_model(
        model,
        variables,
        config(schedule="baseline", pruning_target=0.5, prune_batch_norms=False),
    )
    ctrl.scheduler.epoch_step()
    p = ctrl.strip(variables)["params"]["stage1"]
    assert np.all(np.asarray(p["bn0"]["scale"]) != 0)
    assert np.sum(np.all(np.asarray(p["conv0"]["kernel"]) == 0, axis=(0, 1, 2))) == 8


def test_jitted_train_step_refreshes_masks_without_host_sync(resnet, train_step_factory):
    model, variables, _ = resnet
    ctrl, cstate = nj.create_compressed_model(
        model,
        variables,
        config(schedule="exponential", pruning_target=0.5, pruning_steps=3, filter_importance="L1"),
        steps_per_epoch=2,
    )
    tx = optax.sgd(0.05)
    opt_state = tx.init(variables["params"])
    step = jax.jit(train_step_factory(ctrl, tx))
    xs = jax.random.normal(jax.random.key(1), (8, 8, 8, 1))
    ys = jnp.arange(8) % 10
    levels = []  # after iteration i the state is at epoch (i + 1) // 2
    for _ in range(8):
        with jax.transfer_guard("disallow"):
            variables, opt_state, cstate = step(variables, opt_state, cstate, xs, ys)
        levels.append(float(cstate.algorithms["filter_pruning"].level))
    assert step._cache_size() == 1
    np.testing.assert_allclose(levels[1::2], [1 - 0.5**0.5, 0.5, 0.5, 0.5], atol=1e-6)
    masks = cstate.algorithms["filter_pruning"].masks
    assert sorted(int(m.sum()) for m in masks.values()) == [8, 8, 8, 16, 16]
    # frozen from epoch 3: two more steps leave the pruned weights where they are
    before = variables["params"]
    variables, opt_state, cstate = step(variables, opt_state, cstate, xs, ys)
    kernel, old = (
        variables["params"]["stage1"]["conv0"]["kernel"],
        before["stage1"]["conv0"]["kernel"],
    )
    pruned = ~np.asarray(masks["group_1"])
    np.testing.assert_array_equal(np.asarray(kernel)[..., pruned], np.asarray(old)[..., pruned])
    assert np.any(np.asarray(kernel)[..., ~pruned] != np.asarray(old)[..., ~pruned])


def test_flops_target_meets_it(resnet):
    model, variables, _ = resnet
    ctrl, _ = nj.create_compressed_model(
        model,
        variables,
        config(
            schedule="baseline",
            pruning_flops_target=0.3,
            prune_first_conv=True,
            prune_downsample_convs=True,
        ),
    )
    ctrl.scheduler.epoch_step()
    stats = ctrl.statistics().filter_pruning
    assert stats.flops_reduction >= 0.3
    assert ctrl.compression_rate == pytest.approx(stats.flops_reduction)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"pruning_target": 0.3, "pruning_flops_target": 0.2}, "pruning_flops_target"),
        ({"pruning_target": 1.0}, "pruning_target"),
        ({"filter_importance": "L3"}, "filter_importance"),
    ],
)
def test_bad_configs_name_the_key(resnet, params, key):
    model, variables, _ = resnet
    with pytest.raises(ConfigError, match=rf"compression.params.{key}"):
        nj.create_compressed_model(model, variables, config(**params))


@pytest.mark.parametrize("all_weights", [False, True])
def test_shrunk_model_equals_masked_model(resnet, all_weights):
    model, variables, _ = resnet
    ctrl, _ = nj.create_compressed_model(
        model,
        variables,
        config(
            schedule="baseline",
            pruning_target=0.4,
            prune_first_conv=True,
            prune_downsample_convs=True,
            all_weights=all_weights,
            filter_importance="geometric_median",
        ),
    )
    ctrl.scheduler.epoch_step()
    x = jax.random.normal(jax.random.key(7), (3, 8, 8, 1))
    small, forward = shrink(ctrl, variables, ctrl.state)
    expected = model.apply(ctrl.strip(variables), x)
    np.testing.assert_allclose(jax.jit(forward)(small, x), expected, atol=1e-5)
    np.testing.assert_allclose(forward(small, x), expected, atol=1e-5)
    assert small["params"]["dw"]["kernel"].shape[-1] < 32
    # the concatenated groups are pruned too; mix's input channels follow both
    pw, side = (
        small["params"]["pw"]["kernel"].shape[-1],
        small["params"]["side"]["kernel"].shape[-1],
    )
    assert pw < 24
    assert small["params"]["mix"]["kernel"].shape[2] == pw + side
    stats = ctrl.statistics().filter_pruning
    shrunk_graph = build_pruning_graph(forward, small, x)
    assert shrunk_graph.flops() == build_pruning_graph(model.apply, variables, x).flops(
        {
            g.index: int(ctrl.state.algorithms["filter_pruning"].masks[f"group_{g.index}"].sum())
            for g in ctrl.algorithms[0].groups
        }
    )
    assert shrunk_graph.flops() * 2 // 3 == stats.current_flops  # batch 3 vs the traced batch 2
    assert shrunk_graph.num_params() == stats.current_params


class _TwoConcats(nn.Module):
    """Both segments prunable (16 + 16), two identically segmented concats added."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), name="stem")(x))
        a = nn.relu(nn.Conv(16, (3, 3), name="a")(x))
        b = nn.relu(nn.Conv(16, (3, 3), name="b")(x))
        c = jnp.concatenate([a, b], axis=-1) + jnp.concatenate([b, a], axis=-1)
        c = nn.max_pool(nn.relu(c), (2, 2), strides=(2, 2))
        y = nn.relu(nn.Conv(8, (1, 1), name="mix")(c))
        return nn.Dense(10, name="head")(jnp.mean(y, axis=(1, 2)))


def test_shrunk_concatenation_with_both_segments_pruned():
    model = _TwoConcats()
    x = jax.random.normal(jax.random.key(3), (2, 8, 8, 1))
    variables = model.init(jax.random.key(0), x)
    ctrl, _ = nj.create_compressed_model(
        model, variables, config(schedule="baseline", pruning_target=0.5)
    )
    ctrl.scheduler.epoch_step()
    (ab,) = [g for g in ctrl.algorithms[0].groups if len(g.producers) == 2]
    assert sorted((m.path, m.offset) for m in ab.consumers) == [
        ("params/mix/kernel", 0),
        ("params/mix/kernel", 16),
    ]
    small, forward = shrink(ctrl, variables, ctrl.state)
    assert small["params"]["mix"]["kernel"].shape[2] == 16  # 8 kept in each segment
    expected = model.apply(ctrl.strip(variables), x)
    np.testing.assert_allclose(jax.jit(forward)(small, x), expected, atol=1e-5)
    stats = ctrl.statistics().filter_pruning
    assert build_pruning_graph(forward, small, x).flops() == stats.current_flops
    assert build_pruning_graph(forward, small, x).num_params() == stats.current_params
