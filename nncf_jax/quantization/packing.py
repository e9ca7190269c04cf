"""Quantized weights as integer codes for exported artefacts.

A fake-quantized weight ``y`` is ``K / s`` for integers ``K`` in the
quantizer's level range, with ``s = n / r`` (``n`` levels minus one, ``r``
the range width) exactly as `nncf_jax.quantization.fake_quant` computes it.
Storing ``K`` (one byte, or half a byte at 4 bits and below) plus ``s`` per
channel, and computing ``K / s`` inside the exported graph, reproduces the
stripped weight bit for bit at a quarter (or an eighth) of the bytes.

Code layouts, chosen per quantizer:

- symmetric signed, 5-8 bits: ``int8`` codes ``K``;
- otherwise, 5-8 bits: ``uint8`` codes ``U = K + zp`` with the zero point
  ``zp = round(-low * s)`` per channel;
- 2-4 bits (any mode): ``U`` as above, two codes per byte (low nibble first)
  over the flattened weight.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from nncf_jax.quantization.fake_quant import (
    asymmetric_range,
    quantization_levels,
    symmetric_range,
)
from nncf_jax.quantization.setup import QuantizerSpec

__all__ = ["pack_weight", "packed_bytes", "unpack_weight"]


def _grid(spec: QuantizerSpec, qparams: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(s, zp)``: steps per unit and zero points, scalars or ``(C,)`` float32."""
    bits = spec.effective_bits
    if spec.mode == "symmetric":
        low_level, high_level = quantization_levels(
            bits, signed=bool(spec.signed), narrow_range=spec.narrow_range, symmetric=True
        )
        low, width = symmetric_range(
            jnp.asarray(qparams["scale"], jnp.float32), low_level, high_level
        )
        n = high_level - low_level
    else:
        low, width = asymmetric_range(
            jnp.asarray(qparams["input_low"], jnp.float32),
            jnp.asarray(qparams["input_range"], jnp.float32),
            bits=bits,
        )
        n = 2**bits - 1
    s = n / width
    return np.asarray(s, np.float32), np.asarray(jnp.round(-low * s), np.float32)


def pack_weight(spec: QuantizerSpec, qparams: Mapping[str, Any], w: Any) -> dict[str, np.ndarray]:
    """Integer codes of a fake-quantized weight.

    Args:
      spec: the weight's quantizer.
      qparams: its range (``{"scale"}`` or ``{"input_low", "input_range"}``).
      w: the stripped (already fake-quantized) float32 weight, channels last.

    Returns:
      ``{"codes": int8 | uint8, "s": float32, "zp": float32}`` (``zp`` absent
      for int8 codes); ``s`` and ``zp`` are scalars or ``(C,)``.
    """
    s, zp = _grid(spec, qparams)
    w = np.asarray(w, np.float32)
    # y = K / s in float32, so y * s is within an ulp of the integer K.
    k = np.round(w * s).astype(np.int32)
    if spec.effective_bits > 4 and spec.mode == "symmetric" and spec.signed:
        return {"codes": k.astype(np.int8), "s": s}
    u = (k + zp.astype(np.int32)).astype(np.uint8)
    if spec.effective_bits > 4:
        return {"codes": u, "s": s, "zp": zp}
    flat = u.reshape(-1)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.uint8)])
    return {"codes": (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8), "s": s, "zp": zp}


def unpack_weight(spec: QuantizerSpec, shape: tuple[int, ...], packed: Mapping[str, Any]):
    """The float32 weight from `pack_weight`'s codes, with jnp ops (traceable).

    Args:
      spec: the weight's quantizer.
      shape: the weight's shape.
      packed: `pack_weight`'s output (arrays or tracers).

    Returns:
      float32 ``shape``: ``K / s``, bit-identical to the stripped weight.
    """
    # jnp, not numpy methods: under a trace the int codes stay constants of
    # the graph and the conversion is staged, instead of being folded to
    # float32 constants on the host.
    codes, s = jnp.asarray(packed["codes"]), jnp.asarray(packed["s"])
    if "zp" not in packed:
        return codes.astype(jnp.float32) / s
    if spec.effective_bits <= 4:
        size = int(np.prod(shape))
        # div/rem rather than shifts: every runtime we export to has them.
        sixteen = jnp.uint8(16)
        low, high = lax.rem(codes, sixteen), lax.div(codes, sixteen)
        nibbles = jnp.concatenate([low[:, None], high[:, None]], axis=1)
        nibbles = nibbles.reshape(-1)[:size]
        codes = nibbles.reshape(shape)
    return (codes.astype(jnp.float32) - jnp.asarray(packed["zp"])) / s


def packed_bytes(packed: Mapping[str, Any]) -> int:
    """Bytes of one packed weight (codes, steps and zero points)."""
    return int(sum(np.asarray(v).nbytes for v in packed.values()))
