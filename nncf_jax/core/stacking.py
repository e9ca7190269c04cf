"""Which params hold several layers stacked on leading axes (``nn.scan``).

A linen model that runs a block with ``nn.scan(..., variable_axes={"params": 0})``
stores each of the block's params once, with a leading layer axis: the
kernel of a scanned ``Dense(16)`` over 3 layers is stored ``(3, in, 16)``
and seen ``(in, 16)`` by each layer. Per-tensor statistics (local sparsity
thresholds, weight importance norms, per-channel quantizer ranges) must
then be taken per layer slice, as for the unrolled model.

`stacked_param_axes` finds those params by running the model once under
``flax.linen.intercept_methods`` (shapes only) and comparing each module's
params as it sees them with the stored ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax

from nncf_jax.core.init_data import example_call

__all__ = ["layer_slices", "stacked_axes_of_context", "stacked_param_axes"]


def _stored(params: Any, path: Sequence[str]) -> Any:
    node = params
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node if hasattr(node, "shape") else None


def stacked_param_axes(
    apply_fn: Any, variables: Any, args: Sequence[Any], kwargs: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """``{param path: number of leading stacked axes}`` for params stored stacked.

    Args:
      apply_fn: a linen model's ``apply``.
      variables: its variables (arrays or ``ShapeDtypeStruct``).
      args, kwargs: example call arguments (only shapes matter).

    Returns:
      Only params with at least one stacked axis; ``{}`` for a model without
      ``nn.scan``.
    """
    params = variables.get("params", {}) if isinstance(variables, Mapping) else {}
    found: dict[str, int] = {}

    def interceptor(next_fun, call_args, call_kwargs, context):
        seen = context.module.variables.get("params", {})
        for name, leaf in seen.items():
            if not hasattr(leaf, "shape"):
                continue
            path = (*(str(p) for p in context.module.path), str(name))
            stored = _stored(params, path)
            if stored is not None and len(stored.shape) > len(leaf.shape):
                found["/".join(path)] = len(stored.shape) - len(leaf.shape)
        return next_fun(*call_args, **call_kwargs)

    kwargs = dict(kwargs or {})
    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda v: apply_fn(v, *args, mutable=True, **kwargs), variables)
    return found


def layer_slices(w: jax.Array, stack_axes: int) -> list[jax.Array]:
    """The per-layer slices of a stacked param, in layer order (``[w]`` if not stacked)."""
    if stack_axes <= 0:
        return [w]
    return [s for i in range(w.shape[0]) for s in layer_slices(w[i], stack_axes - 1)]


def stacked_axes_of_context(context: Any) -> dict[str, int]:
    """`stacked_param_axes` for a builder's `BuildContext`: the model is run on
    the first ``init_data`` item, else on ``input_info`` dummies; ``{}`` for a
    model that is not a linen module or has neither."""
    if not isinstance(context.model, nn.Module):
        return {}
    call = example_call(context.init_data, context.config.get("input_info"))
    if call is None:
        return {}
    args, kwargs = call
    try:
        return stacked_param_axes(context.apply_fn, context.variables, args, kwargs)
    except Exception:
        # The dummies may not fit the model (input_info for one of several
        # inputs, ...): the algorithm then treats every param as one tensor,
        # as before this analysis existed; a scan model needs init_data or a
        # fitting input_info.
        return {}
