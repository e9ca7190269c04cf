"""The NNCF JSON config: loading, validation and per-algorithm defaults."""

from nncf_jax.config.nncf_config import AlgorithmSection, NNCFConfig, algorithm_defaults
from nncf_jax.config.schema import KNOWN_ALGORITHMS

__all__ = [
    "KNOWN_ALGORITHMS",
    "AlgorithmSection",
    "NNCFConfig",
    "algorithm_defaults",
]
