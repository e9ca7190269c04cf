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
    assert "concatenated" in groups[("pw/kernel",)].reasons[0]
    assert "concatenated" in groups[("side/kernel",)].reasons[0]
    assert groups[("head/kernel",)].reasons == ("model output",)
    assert groups[("mix/kernel",)].prunable
    assert sorted(
        len(g.producers) for g in build_pruning_graph(model.apply, variables, x).prunable_groups
    ) == [1, 1, 1]


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
