"""Channel groups from the jaxpr (REFERENCE.md section 5)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from pruning.models import tiny_resnet

from nncf_jax.pruning import build_pruning_graph


def _by_producer(graph):
    return {
        tuple(sorted(m.path.removeprefix("params/") for m in g.producers)): g for g in graph.groups
    }


@pytest.fixture(scope="module")
def resnet():
    return tiny_resnet()


def test_groups_of_the_resnet_defaults(resnet):
    model, variables, x = resnet
    groups = _by_producer(build_pruning_graph(model.apply, variables, x))
    # residual add merges the stem with the block's last conv; first conv stays
    stem = groups[("stage1/conv1/kernel", "stem/kernel")]
    assert not stem.prunable and "first convolution" in stem.reasons[0]
    # depthwise conv joins its producer group (the downsample stage)
    down = groups[("down/kernel", "dw/kernel", "stage2/conv1/kernel")]
    assert any("downsampling" in r for r in down.reasons)
    assert {m.path for m in down.consumers} == {
        "params/stage2/conv0/kernel",
        "params/pw/kernel",
        "params/side/kernel",
    }
    inner = groups[("stage1/conv0/kernel",)]
    assert inner.prunable and inner.size == 16
    assert {m.path for m in inner.attached} == {
        "params/stage1/conv0/bias",
        "params/stage1/bn0/scale",
        "params/stage1/bn0/bias",
        "batch_stats/stage1/bn0/mean",
        "batch_stats/stage1/bn0/var",
    }
    assert [(m.path, m.axis) for m in inner.consumers] == [("params/stage1/conv1/kernel", 2)]
    # concat offsets: both concatenated groups stay prunable, mix reads them side by side
    pw, side = groups[("pw/kernel",)], groups[("side/kernel",)]
    assert pw.prunable and side.prunable
    assert [(m.path, m.axis, m.offset, m.length) for m in pw.consumers] == [
        ("params/mix/kernel", 2, 0, 24)
    ]
    assert [(m.path, m.axis, m.offset, m.length) for m in side.consumers] == [
        ("params/mix/kernel", 2, 24, 8)
    ]
    assert groups[("head/kernel",)].reasons == ("model output",)
    assert groups[("mix/kernel",)].prunable
    assert sorted(
        len(g.producers) for g in build_pruning_graph(model.apply, variables, x).prunable_groups
    ) == [1, 1, 1, 1, 1]


def test_flops_of_a_concatenation_consumer(resnet):
    model, variables, x = resnet
    graph = build_pruning_graph(model.apply, variables, x)
    groups = _by_producer(graph)
    pw, side, mix = groups[("pw/kernel",)], groups[("side/kernel",)], groups[("mix/kernel",)]
    op = next(op for op in graph.ops if op.kernel == "params/mix/kernel")
    assert op.in_group is None and op.in_segments == ((pw.index, 24), (side.index, 8))
    assert op.flops == 2 * 2 * 4 * 4 * 16 * 32
    kept = {pw.index: 16, side.index: 8}
    # mix: 24 of 32 input channels; pw: 16 of 24 output filters
    saved = op.flops * (1 - 24 / 32) + 49152 * (1 - 16 / 24)
    assert graph.flops(kept) == round(graph.flops() - saved)
    shapes = graph.shrunk_shapes({**kept, mix.index: 8})
    assert shapes["params/mix/kernel"] == (1, 1, 24, 8)
    assert shapes["params/pw/kernel"] == (1, 1, 32, 16)


class _Concat(nn.Module):
    """Concatenations the walk cannot follow."""

    mode: str

    @nn.compact
    def __call__(self, x):
        a = nn.relu(nn.Conv(8, (3, 3), name="a")(x))
        b = nn.relu(nn.Conv(8, (3, 3), name="b")(x))
        c = jnp.concatenate([a, b], axis=-1)
        if self.mode == "reshape":
            c = c.reshape((c.shape[0], -1))
        elif self.mode == "bias":
            c = c + self.param("scale", nn.initializers.ones, (16,))
        elif self.mode == "mixed":
            d = nn.Conv(16, (1, 1), name="d")(x)
            c = c + d
        elif self.mode == "other_axis":
            c = jnp.concatenate([c, c], axis=1)
        if self.mode == "reshape":
            return nn.Dense(3, name="head")(c)
        y = jnp.mean(nn.relu(nn.Conv(4, (1, 1), name="mix")(c)), axis=(1, 2))
        return nn.Dense(3, name="head")(y)


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("reshape", "a concatenation along channels reaches reshape"),
        ("bias", "broadcast against concatenated channels"),
        ("mixed", "between a concatenation and a channel space"),
        ("other_axis", "concatenated along another axis"),
    ],
)
def test_concatenations_left_unpruned_with_a_reason(mode, reason):
    model = _Concat(mode)
    x = jnp.zeros((1, 4, 4, 1))
    variables = model.init(jax.random.key(0), x)
    groups = _by_producer(build_pruning_graph(model.apply, variables, x, prune_first_conv=True))
    for name in ("a/kernel", "b/kernel"):
        assert any(reason in r for r in groups[(name,)].reasons), groups[(name,)].reasons


def test_identically_segmented_concatenations_merge_segment_by_segment():
    class Residual(nn.Module):
        @nn.compact
        def __call__(self, x):
            a = nn.relu(nn.Conv(8, (3, 3), name="a")(x))
            b = nn.relu(nn.Conv(8, (3, 3), name="b")(x))
            c = jnp.concatenate([a, b], axis=-1) + jnp.concatenate([b, a], axis=-1)
            return nn.Dense(3, name="head")(jnp.mean(nn.Conv(4, (1, 1), name="mix")(c), (1, 2)))

    model = Residual()
    x = jnp.zeros((1, 4, 4, 1))
    variables = model.init(jax.random.key(0), x)
    graph = build_pruning_graph(model.apply, variables, x, prune_first_conv=True)
    (ab,) = [g for g in graph.groups if len(g.producers) == 2]
    assert ab.prunable and ab.size == 8
    assert sorted((m.path, m.offset) for m in ab.consumers) == [
        ("params/mix/kernel", 0),
        ("params/mix/kernel", 8),
    ]


def test_first_and_downsample_switches_and_scopes(resnet):
    model, variables, x = resnet
    graph = build_pruning_graph(
        model.apply, variables, x, prune_first_conv=True, prune_downsample_convs=True
    )
    groups = _by_producer(graph)
    assert groups[("stage1/conv1/kernel", "stem/kernel")].prunable
    assert groups[("down/kernel", "dw/kernel", "stage2/conv1/kernel")].prunable
    graph = build_pruning_graph(
        model.apply,
        variables,
        x,
        targeted=lambda p: "stage2" not in p,
        prune_downsample_convs=True,
    )
    groups = _by_producer(graph)
    assert "outside the scopes" in groups[("stage2/conv0/kernel",)].reasons[0]


def test_flops_count_conv_and_dense(resnet):
    model, variables, x = resnet
    graph = build_pruning_graph(model.apply, variables, x)
    by_kernel = {op.kernel: op for op in graph.ops}
    # stem: 2 x (2*8*8*16 outputs) x 3*3*1 MACs
    assert by_kernel["params/stem/kernel"].flops == 2 * 2 * 8 * 8 * 16 * 9
    assert by_kernel["params/dw/kernel"].depthwise
    assert by_kernel["params/dw/kernel"].flops == 2 * 2 * 4 * 4 * 32 * 9
    assert by_kernel["params/head/kernel"].flops == 2 * 2 * 10 * 16
    assert graph.flops() == sum(op.flops for op in graph.ops)
    assert graph.num_params() == sum(a.size for a in jax.tree.leaves(variables["params"]))


class _Flatten(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))


def test_flatten_into_dense_is_unprunable_with_a_reason():

    model = _Flatten()
    x = jnp.zeros((1, 4, 4, 1))
    variables = model.init(jax.random.key(0), x)
    graph = build_pruning_graph(model.apply, variables, x)
    (g,) = [g for g in graph.groups if g.producers[0].path == "params/Conv_1/kernel"]
    assert "reshape mixes the channel axis" in g.reasons
