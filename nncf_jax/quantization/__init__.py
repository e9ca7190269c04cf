"""NNCF's ``quantization`` algorithm for Flax: fake-quantizers, placement, range and precision init.

Public functions work on plain arrays and can be used without a controller:

- `symmetric_quantize`, `asymmetric_quantize`: NNCF's fake-quantize ops
  (``jax.custom_vjp``, NNCF's straight-through gradients);
- `quantization_levels`: the integer grid of a quantizer;
- `fake_quantize`: one quantizer applied from its `QuantizerSpec`.
"""

from nncf_jax.quantization.algorithm import Quantization, QuantizationState, fake_quantize
from nncf_jax.quantization.fake_quant import (
    asymmetric_quantize,
    quantization_levels,
    symmetric_quantize,
)
from nncf_jax.quantization.placement import OpSite, find_op_sites
from nncf_jax.quantization.setup import QuantizerSpec, RangeSettings
from nncf_jax.quantization.statistics import QuantizationStatistics

__all__ = [
    "OpSite",
    "Quantization",
    "QuantizationState",
    "QuantizationStatistics",
    "QuantizerSpec",
    "RangeSettings",
    "asymmetric_quantize",
    "fake_quantize",
    "find_op_sites",
    "quantization_levels",
    "symmetric_quantize",
]
