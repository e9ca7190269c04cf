"""A physically smaller model: pruned channels removed, not just masked.

`shrink` slices every member of every prunable group (producer kernels'
output filters, biases, batch-norm parameters and statistics, consumer
kernels' input channels) down to the kept channels, and returns a forward
function for the sliced variables. A kernel reading a concatenation along
channels keeps, on its input-channel axis, each segment's kept channels
shifted by the segment's offset (concatenated in order).

How the forward runs (a choice, recorded here): an unmodified linen module
cannot be rebuilt with fewer features without knowing its code, so the
model's jaxpr, traced at full size, is *evaluated* equation by equation on
the sliced variables (`nncf_jax.pruning.graph.evaluate_jaxpr`). Shapes baked
into equations are adjusted from the operands' actual shapes, and depthwise
convolutions get their new group count. The forward is an ordinary jittable
JAX function; under `jax.jit` the evaluation happens once at trace time, and
XLA compiles the smaller convolutions. It is traced per input shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nncf_jax.core.paths import flatten_params
from nncf_jax.errors import UsageError
from nncf_jax.pruning.algorithm import FilterPruning
from nncf_jax.pruning.graph import evaluate_jaxpr, segment_keep

__all__ = ["kept_indices", "shrink", "slice_variables"]


def _algorithm(ctrl: Any) -> FilterPruning:
    if isinstance(ctrl, FilterPruning):
        return ctrl
    for a in getattr(ctrl, "algorithms", ()):
        if isinstance(a, FilterPruning):
            return a
    raise UsageError("shrink needs a controller with a filter_pruning algorithm")


def kept_indices(algorithm: FilterPruning, pruning_state: Any) -> dict[int, np.ndarray]:
    """``group index -> sorted int32 indices`` of the kept channels (host arrays)."""
    return {
        g.index: np.flatnonzero(np.asarray(pruning_state.masks[f"group_{g.index}"])).astype(
            np.int32
        )
        for g in algorithm.groups
    }


def slice_variables(algorithm: FilterPruning, variables: Any, kept: dict[int, np.ndarray]) -> Any:
    """``variables`` with every group member cut to the kept channels along its axis."""
    flat = dict(flatten_params(variables))
    segments: dict[tuple[str, int], list[tuple[int, int, np.ndarray]]] = {}
    for g in algorithm.groups:
        for m in g.members():
            if m.path not in flat:
                continue
            if m.segmented:
                segments.setdefault((m.path, m.axis), []).append(
                    (m.offset, m.length, kept[g.index])
                )
            else:
                flat[m.path] = jnp.take(flat[m.path], kept[g.index], axis=m.axis)
    for (path, axis), segs in segments.items():
        keep = segment_keep(np.shape(flat[path])[axis], segs)
        flat[path] = jnp.take(flat[path], np.flatnonzero(keep).astype(np.int32), axis=axis)
    leaves = list(flat.values())
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(variables), leaves)


def shrink(ctrl: Any, variables: Any, cstate: Any) -> tuple[Any, Callable[[Any, jax.Array], Any]]:
    """Removes the pruned channels.

    Args:
      ctrl: the controller (or the `FilterPruning` algorithm itself).
      variables: the model's variables (``params``, ``batch_stats``, ...).
      cstate: the `CompressionState` (or the filter pruning state).

    Returns:
      ``(small_variables, forward)``: the sliced variables, and
      ``forward(small_variables, x)`` giving the outputs of the masked model
      (with other algorithms' weight compression baked in by ``ctrl.strip``).

    Example:
      >>> small, forward = shrink(ctrl, variables, cstate)  # doctest: +SKIP
      >>> logits = jax.jit(forward)(small, x)  # doctest: +SKIP
    """
    algorithm = _algorithm(ctrl)
    if algorithm.apply_fn is None:
        raise UsageError(
            "shrink needs the model's apply_fn (build through create_compressed_model)"
        )
    state = cstate
    if hasattr(cstate, "algorithms"):
        state = cstate.algorithms[algorithm.name]
    if hasattr(ctrl, "strip") and hasattr(cstate, "algorithms"):
        variables = ctrl.strip(variables, cstate)
    else:
        variables = {**variables, "params": algorithm.strip_params(variables["params"], state)}
    kept = kept_indices(algorithm, state)
    small = slice_variables(algorithm, variables, kept)
    full = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), variables)
    graph, apply_fn = algorithm.graph, algorithm.apply_fn

    def forward(small_variables: Any, x: jax.Array) -> Any:
        return evaluate_jaxpr(graph, apply_fn, full, small_variables, kept, x)

    return small, forward
