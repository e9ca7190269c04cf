"""nncf-jax: NNCF's training-time compression API for JAX and Flax.

Public API; everything else is internal.
"""

from nncf_jax import accuracy_aware, checkpoint, errors, export, quantization
from nncf_jax.api import create_compressed_model
from nncf_jax.config import NNCFConfig
from nncf_jax.core.controller import CompressionController
from nncf_jax.core.schedules import (
    exponential_sparsity_schedule,
    multistep_schedule,
    polynomial_schedule,
)
from nncf_jax.core.stage import CompressionStage
from nncf_jax.core.state import CompressionState
from nncf_jax.nnx_model import NNXModel

__version__ = "0.1.0"

__all__ = [
    "CompressionController",
    "CompressionStage",
    "CompressionState",
    "NNCFConfig",
    "NNXModel",
    "__version__",
    "accuracy_aware",
    "checkpoint",
    "create_compressed_model",
    "errors",
    "exponential_sparsity_schedule",
    "export",
    "multistep_schedule",
    "polynomial_schedule",
    "quantization",
]
