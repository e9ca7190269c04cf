"""jaxpr → OpenVINO rules for shape and indexing primitives: reshapes, broadcasts,
transposes, concatenations, splits, pads, slices, one-axis gathers, ``rev``,
``dynamic_slice``, ``iota`` and ``dim_as_value``.

Each rule is ``rule(translator, eqn, *inputs) -> output(s)``; `RULES` maps
primitive names to them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nncf_jax.export.jaxpr_to_openvino_common import (
    INT64_MAX,
    SymbolicShape,
    Unsupported,
    dtype_of,
    is_int,
)

__all__ = ["RULES"]


def _reshape(t, eqn, x):
    if eqn.params.get("dimensions") is not None:
        x = t.ops.transpose(x, t.const(list(eqn.params["dimensions"]), np.int64)).output(0)
    sizes = list(eqn.params["new_sizes"])
    symbolic = [i for i, d in enumerate(sizes) if not is_int(d)]
    if len(symbolic) == 1:
        target = t.const([-1 if i in symbolic else int(d) for i, d in enumerate(sizes)], np.int64)
    else:
        target = t.shape(sizes)
    return t.ops.reshape(x, target, False).output(0)


def _broadcast_in_dim(t, eqn, x, *dyn):
    if dyn:
        raise Unsupported("broadcast_in_dim with dynamic shape operands")
    shape = t.shape(list(eqn.params["shape"]))
    dims = list(eqn.params["broadcast_dimensions"])
    if not dims:
        return t.ops.broadcast(x, shape).output(0)
    return t.ops.broadcast(x, shape, t.const(dims, np.int64), "EXPLICIT").output(0)


def _transpose(t, eqn, x):
    return t.ops.transpose(x, t.const(list(eqn.params["permutation"]), np.int64)).output(0)


def _squeeze(t, eqn, x):
    return t.ops.squeeze(x, t.const(list(eqn.params["dimensions"]), np.int64)).output(0)


def _concatenate(t, eqn, *xs):
    return t.ops.concat(list(xs), int(eqn.params["dimension"])).output(0)


def _split(t, eqn, x):
    sizes = list(eqn.params["sizes"])
    if not all(is_int(s) for s in sizes):
        raise SymbolicShape("split sizes depend on the batch")
    node = t.ops.variadic_split(
        x, t.const(int(eqn.params["axis"]), np.int64), t.const(sizes, np.int64)
    )
    return [node.output(i) for i in range(len(sizes))]


def _pad(t, eqn, x, value):
    config = list(eqn.params["padding_config"])
    if any(interior for _, _, interior in config):
        raise Unsupported("pad with interior padding")
    lo = t.const([lo for lo, _, _ in config], np.int64)
    hi = t.const([hi for _, hi, _ in config], np.int64)
    from openvino import opset12

    return opset12.pad(x, lo, hi, "constant", value).output(0)


def _slice(t, eqn, x):
    shape = eqn.invars[0].aval.shape
    starts = list(eqn.params["start_indices"])
    limits = list(eqn.params["limit_indices"])
    strides = eqn.params.get("strides") or [1] * len(starts)
    if not all(is_int(s) for s in starts):
        raise SymbolicShape("slice start depends on the batch")
    stops = []
    for lim, full in zip(limits, shape, strict=True):
        if is_int(lim):
            stops.append(t.dim(lim))
        elif str(lim) == str(full):
            stops.append(t.const([INT64_MAX], np.int64))
        else:
            stops.append(t.dim(lim))
    return t.ops.slice(
        x,
        t.const([int(s) for s in starts], np.int64),
        t.ops.concat(stops, 0),
        t.const([int(s) for s in strides], np.int64),
    ).output(0)


def _same_dim(a: Any, b: Any) -> bool:
    return (int(a) == int(b)) if is_int(a) and is_int(b) else str(a) == str(b)


def _gather(t, eqn, operand, indices):
    """``lax.gather`` along one axis (``jnp.take``, embeddings, ``x[:, i:j]``): OpenVINO Gather.

    Supported: one indexed axis ``a``, full slices on every other axis, no
    batching dimensions. Indices are assumed in range (jax clips or fills
    out-of-range ones; OpenVINO does neither).
    """
    dn = eqn.params["dimension_numbers"]
    sizes = list(eqn.params["slice_sizes"])
    shape = eqn.invars[0].aval.shape
    if (
        len(dn.start_index_map) != 1
        or dn.operand_batching_dims
        or dn.start_indices_batching_dims
        or eqn.invars[1].aval.shape[-1] != 1
    ):
        raise Unsupported("gather over more than one axis or with batching dimensions")
    a = int(dn.start_index_map[0])
    collapsed = set(dn.collapsed_slice_dims)
    if collapsed - {a} or any(
        not _same_dim(sizes[d], shape[d]) for d in range(len(shape)) if d != a
    ):
        raise Unsupported("gather of partial slices on the non-indexed axes")
    batch_rank = len(eqn.invars[1].aval.shape) - 1
    idx = t.ops.squeeze(indices, t.const([batch_rank], np.int64))
    labels = [("op", d) for d in range(a)] + [("b", j) for j in range(batch_rank)]
    if a in collapsed:
        gathered = t.ops.gather(operand, idx, t.const(a, np.int64))
    else:
        window = t.ops.range(
            t.const(0, np.int64), t.const(int(sizes[a]), np.int64), t.const(1, np.int64), "i64"
        )
        idx = t.ops.add(
            t.ops.unsqueeze(t.ops.convert(idx, "i64"), t.const([batch_rank], np.int64)), window
        )
        gathered = t.ops.gather(operand, idx, t.const(a, np.int64))
        labels.append(("op", a))
    labels += [("op", d) for d in range(a + 1, len(shape))]
    kept = [("op", d) for d in range(len(shape)) if d not in collapsed]
    out_rank = len(eqn.outvars[0].aval.shape)
    offset = {p: kept[k] for k, p in enumerate(dn.offset_dims)}
    batch = iter(("b", j) for j in range(batch_rank))
    wanted = [offset[p] if p in offset else next(batch) for p in range(out_rank)]
    perm = [labels.index(w) for w in wanted]
    if perm == list(range(out_rank)):
        return gathered.output(0)
    return t.ops.transpose(gathered, t.const(perm, np.int64)).output(0)


def _rev(t, eqn, x):
    dims = list(eqn.params["dimensions"])
    if not dims:
        return x
    n = len(dims)
    return t.ops.slice(
        x,
        t.const([-1] * n, np.int64),
        t.const([np.iinfo(np.int64).min] * n, np.int64),
        t.const([-1] * n, np.int64),
        t.const(dims, np.int64),
    ).output(0)


def _dynamic_slice(t, eqn, x, *starts):
    sizes = [int(s) if is_int(s) else s for s in eqn.params["slice_sizes"]]
    shape = eqn.invars[0].aval.shape
    begin, end = [], []
    for start, size, full in zip(starts, sizes, shape, strict=True):
        # lax.dynamic_slice clamps the start into [0, dim - size].
        start = t.ops.convert(t.ops.reshape(start, t.const([1], np.int64), False), "i64")
        hi = t.ops.subtract(t.dim(full), t.dim(size))
        start = t.ops.minimum(t.ops.maximum(start, t.const([0], np.int64)), hi)
        begin.append(start)
        end.append(t.ops.add(start, t.dim(size)))
    return t.ops.slice(
        x, t.ops.concat(begin, 0), t.ops.concat(end, 0), t.const([1] * len(sizes), np.int64)
    ).output(0)


def _iota(t, eqn):
    shape = list(eqn.params["shape"])
    dim = int(eqn.params["dimension"])
    dtype = eqn.params["dtype"]
    n = t.ops.squeeze(t.dim(shape[dim]), t.const([0], np.int64))
    r = t.ops.range(t.const(0, np.int64), n, t.const(1, np.int64), "i64")
    r = t.ops.convert(r, t.ov_type(dtype))
    return t.ops.broadcast(r, t.shape(shape), t.const([dim], np.int64), "EXPLICIT").output(0)


def _dim_as_value(t, eqn):
    d = t.ops.squeeze(t.dim(eqn.params["dim"]), t.const([0], np.int64))
    return t.ops.convert(d, t.ov_type(dtype_of(eqn, out=True))).output(0)


RULES: dict[str, Callable[..., Any]] = {
    "reshape": _reshape,
    "broadcast_in_dim": _broadcast_in_dim,
    "transpose": _transpose,
    "squeeze": _squeeze,
    "concatenate": _concatenate,
    "split": _split,
    "pad": _pad,
    "slice": _slice,
    "gather": _gather,
    "rev": _rev,
    "dynamic_slice": _dynamic_slice,
    "iota": _iota,
    "dim_as_value": _dim_as_value,
}
