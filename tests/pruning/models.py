"""Small models for the filter pruning tests."""

import flax.linen as nn
import jax
import jax.numpy as jnp


class Block(nn.Module):
    """conv-bn-relu-conv-bn + identity: a residual block."""

    features: int

    @nn.compact
    def __call__(self, x):
        y = nn.relu(
            nn.BatchNorm(use_running_average=True, name="bn0")(
                nn.Conv(self.features, (3, 3), name="conv0")(x)
            )
        )
        y = nn.BatchNorm(use_running_average=True, name="bn1")(
            nn.Conv(self.features, (3, 3), name="conv1")(y)
        )
        return nn.relu(x + y)


class TinyResNet(nn.Module):
    """stem, two residual stages joined by a strided downsample conv, a
    depthwise-separable block, a concatenation, global pooling, dense head."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(16, (3, 3), name="stem")(x))
        x = Block(16, name="stage1")(x)
        x = nn.relu(nn.Conv(32, (3, 3), strides=(2, 2), name="down")(x))
        x = Block(32, name="stage2")(x)
        d = nn.Conv(32, (3, 3), feature_group_count=32, use_bias=False, name="dw")(x)
        d = nn.relu(nn.Conv(24, (1, 1), name="pw")(d))
        c = nn.relu(nn.Conv(8, (1, 1), name="side")(x))
        x = jnp.concatenate([d, c], axis=-1)
        x = nn.relu(nn.Conv(16, (1, 1), name="mix")(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(10, name="head")(x)


def tiny_resnet(seed: int = 0):
    model = TinyResNet()
    x = jnp.zeros((2, 8, 8, 1), jnp.float32)
    variables = model.init(jax.random.key(seed), x)
    # Non-trivial batch statistics, so masking/shrinking them is tested.
    keys = iter(jax.random.split(jax.random.key(seed + 1), 64))
    variables = {
        **variables,
        "batch_stats": jax.tree.map(
            lambda a: a + jax.random.uniform(next(keys), a.shape, minval=0.1, maxval=0.5),
            variables["batch_stats"],
        ),
    }
    return model, variables, x
