"""A small Transformer classifier for the digits: ``--model nncf_jax.examples.digits_transformer:transformer``.

Each 8x8 image is 8 tokens (its rows) of 8 features: ``nn.Dense`` embedding
plus a learned position embedding, encoder blocks (pre-norm
``nn.MultiHeadDotProductAttention`` and a two-Dense MLP), mean pooling and a
``Dense(10)`` head. It takes ``(N, 8, 8)`` (config ``input_info.sample_size``
``[1, 8, 8]``) or the job's default ``(N, 8, 8, 1)``. No dropout, no batch
statistics: it follows the factory protocol of `nncf_jax.examples.digits_model`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nncf_jax.examples.digits_data import NUM_CLASSES

__all__ = ["DigitsTransformer", "EncoderBlock", "MlpBlock", "transformer"]


class MlpBlock(nn.Module):
    """Dense(hidden)-gelu-Dense(dim): the FFN movement sparsity resolves by hidden neuron."""

    hidden: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dim = x.shape[-1]
        x = nn.gelu(nn.Dense(self.hidden)(x))
        return nn.Dense(dim)(x)


class EncoderBlock(nn.Module):
    """Pre-norm self-attention and MLP, each with a residual."""

    heads: int
    hidden: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(nn.LayerNorm()(x))
        return x + MlpBlock(self.hidden)(nn.LayerNorm()(x))


class DigitsTransformer(nn.Module):
    """Rows as tokens -> ``layers`` encoder blocks -> mean pool -> logits ``(N, 10)``."""

    dim: int = 32
    heads: int = 4
    hidden: int = 64
    layers: int = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], 8, 8)).astype(jnp.float32)
        x = nn.Dense(self.dim)(x)
        x = x + self.param("pos_embedding", nn.initializers.normal(0.02), (8, self.dim))
        for _ in range(self.layers):
            x = EncoderBlock(self.heads, self.hidden)(x)
        x = nn.LayerNorm()(x).mean(axis=1)
        return nn.Dense(NUM_CLASSES)(x)


def transformer() -> DigitsTransformer:
    """The factory: ``--model nncf_jax.examples.digits_transformer:transformer``."""
    return DigitsTransformer()
