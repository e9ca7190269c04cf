"""A small ResNet-style CNN for the digits job, for filter pruning.

``nncf-jax train configs/digits_filter_pruning.json --model nncf_jax.examples.digits_resnet:resnet``

8x8x1 input; a 32-channel stem, a residual stage at 32 channels, a strided
downsample to 64 channels, a residual stage at 64 channels, a
depthwise-separable block, global average pooling and a dense head. No batch
statistics (the factory protocol of `nncf_jax.examples.digits_model`). The
inner convolution of each residual block and the pointwise convolution are
prunable with the default ``filter_pruning`` settings; the stem and the
downsample groups join them with ``prune_first_conv`` /
``prune_downsample_convs``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nncf_jax.examples.digits_data import NUM_CLASSES

__all__ = ["DigitsResNet", "resnet"]


class _Block(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.relu(nn.Conv(self.features, (3, 3), name="conv0")(x))
        y = nn.Conv(self.features, (3, 3), name="conv1")(y)
        return nn.relu(x + y)


class DigitsResNet(nn.Module):
    """Residual CNN for 8x8x1 digits (116,618 params)."""

    width: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], 8, 8, 1))
        x = nn.relu(nn.Conv(self.width, (3, 3), name="stem")(x))
        x = _Block(self.width, name="stage1")(x)
        x = nn.relu(nn.Conv(2 * self.width, (3, 3), strides=(2, 2), name="down")(x))
        x = _Block(2 * self.width, name="stage2")(x)
        x = nn.Conv(2 * self.width, (3, 3), feature_group_count=2 * self.width, name="dw")(x)
        x = nn.relu(nn.Conv(2 * self.width, (1, 1), name="pw")(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(NUM_CLASSES, name="head")(x)


def resnet() -> DigitsResNet:
    """The factory: ``--model nncf_jax.examples.digits_resnet:resnet``."""
    return DigitsResNet()
