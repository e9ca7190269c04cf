"""Filter pruning (NNCF ``filter_pruning``) for unmodified Flax models."""

from nncf_jax.pruning.algorithm import FilterPruning as FilterPruning
from nncf_jax.pruning.algorithm import FilterPruningState as FilterPruningState
from nncf_jax.pruning.algorithm import FilterPruningStatistics as FilterPruningStatistics
from nncf_jax.pruning.graph import PruningGraph as PruningGraph
from nncf_jax.pruning.graph import build_pruning_graph as build_pruning_graph
from nncf_jax.pruning.shrink import shrink as shrink

__all__ = [
    "FilterPruning",
    "FilterPruningState",
    "FilterPruningStatistics",
    "PruningGraph",
    "build_pruning_graph",
    "shrink",
]
