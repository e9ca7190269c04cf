"""Const sparsity (NNCF ``const_sparsity``): keep the zeros the weights already have.

The mask is ``w != 0`` at build time and never changes; training cannot
revive a zero weight. Useful to fine-tune a model sparsified elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flax import struct

from nncf_jax.core.algorithm import CompressionAlgorithm
from nncf_jax.core.paths import flatten_params, unflatten_params
from nncf_jax.core.stage import CompressionStage
from nncf_jax.core.statistics import render_tables
from nncf_jax.sparsity.masks import (
    SparsifiedModelStatistics,
    apply_masks,
    mask_updates,
    model_sparsity_statistics,
)

__all__ = ["ConstSparsity", "ConstSparsityState", "ConstSparsityStatistics"]


class ConstSparsityState(struct.PyTreeNode):
    """Attributes: masks: bool masks ``w != 0`` at the targeted weight paths."""

    masks: dict


@dataclass(frozen=True)
class ConstSparsityStatistics:
    """NNCF's ``ConstSparsityStatistics``: only the model statistics."""

    model_statistics: SparsifiedModelStatistics

    def tables(self):
        return self.model_statistics.tables("Const sparsity")

    def to_str(self) -> str:
        return render_tables(self.tables())


class ConstSparsity(CompressionAlgorithm):
    """Keeps the zero pattern of the targeted weights.

    Args:
      targets: param paths of the weights whose zeros are kept.
      config_path: JSON path of the config section.
    """

    name = "const_sparsity"

    def __init__(self, targets: Sequence[str], config_path: str = "compression"):
        self.targets = tuple(targets)
        self.config_path = config_path

    def init_state(self, params: Any) -> ConstSparsityState:
        flat = flatten_params(params)
        return ConstSparsityState(unflatten_params({n: flat[n] != 0 for n in self.targets}))

    def compress_params(self, params, state):
        return apply_masks(params, state.masks)

    def filter_updates(self, updates, state):
        return mask_updates(updates, state.masks)

    def builder_state(self) -> dict[str, Any]:
        return {"target_weights": list(self.targets)}

    def compression_rate(self, state, params) -> float:
        return model_sparsity_statistics(params, state.masks).sparsity_level

    def compression_stage(self, state) -> CompressionStage:
        return CompressionStage.FULLY_COMPRESSED

    def statistics(self, state, params) -> ConstSparsityStatistics:
        return ConstSparsityStatistics(model_sparsity_statistics(params, state.masks))
