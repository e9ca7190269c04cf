"""Reading arrays back to the host, also when they span several processes."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

__all__ = ["fetch"]


def fetch(tree: Any) -> Any:
    """``tree`` with every array leaf as a numpy array holding its global value.

    A ``jax.Array`` sharded over devices of several processes (multi-host
    training) cannot be read with ``np.asarray``; such leaves are gathered
    with ``multihost_utils.process_allgather``, so every process must call
    this together. Other leaves are read directly.
    """

    def one(leaf: Any) -> Any:
        if (
            isinstance(leaf, jax.Array)
            and not leaf.is_fully_addressable
            and not leaf.is_fully_replicated
        ):
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return np.asarray(leaf)

    return jax.tree_util.tree_map(one, tree)
