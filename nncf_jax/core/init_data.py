"""``init_data``: the calibration batches builders read, and example calls.

Each item of ``init_data`` is the model's input array, or a tuple of its
positional inputs. Several builders read it (range initialisation, HAWQ,
the traces that find quantizer sites, channel groups, stacked layers), so
`ReplayableBatches` keeps the items it has handed out: a generator given by
the user is read once, and every reader starts from its first item.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import jax
import numpy as np

__all__ = ["ReplayableBatches", "as_call", "example_call", "num_samples"]


class ReplayableBatches:
    """An iterable over ``source`` that can be iterated again from the start.

    Items are pulled from ``source`` only as far as some reader goes, and
    kept; nothing is read ahead.
    """

    def __init__(self, source: Iterable[Any]):
        self._source: Iterator[Any] | None = iter(source)
        self._seen: list[Any] = []

    def __iter__(self) -> Iterator[Any]:
        index = 0
        while True:
            if index < len(self._seen):
                yield self._seen[index]
                index += 1
                continue
            if self._source is None:
                return
            try:
                item = next(self._source)
            except StopIteration:
                self._source = None
                return
            self._seen.append(item)


def as_call(batch: Any) -> tuple[Any, ...]:
    """One ``init_data`` item as positional model inputs."""
    return tuple(batch) if isinstance(batch, tuple | list) else (batch,)


def num_samples(args: Any) -> int:
    """Samples in one call: the leading axis of its first array (1 for a scalar)."""
    leaves = jax.tree_util.tree_leaves(args)
    return int(np.shape(leaves[0])[0]) if leaves and np.ndim(leaves[0]) else 1


def example_call(
    init_data: Iterable[Any] | None, input_info: Any
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """``(args, kwargs)`` to trace a model with: the first ``init_data`` item,
    else ``input_info`` dummies; None when neither is given."""
    first = None if init_data is None else next(iter(init_data), None)
    if first is not None:
        return as_call(first), {}
    if input_info is None:
        return None
    from nncf_jax.export.model_args import example_inputs

    example = example_inputs(input_info, None)
    return tuple(example.args), dict(example.kwargs)
