"""jaxpr → OpenVINO rules for reductions and layers: ``reduce_*``, ``argmax``/``argmin``,
``top_k``, ``cumsum``, ``dot_general`` (MatMul), ``conv_general_dilated``
(Convolution / GroupConvolution) and pooling (``reduce_window_*``).

Each rule is ``rule(translator, eqn, *inputs) -> output(s)``; `RULES` maps
primitive names to them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nncf_jax.export.jaxpr_to_openvino_common import SymbolicShape, Unsupported, dtype_of, is_int

__all__ = ["RULES"]


def _reduce(ov_name):
    def rule(t, eqn, x):
        axes = list(eqn.params["axes"])
        if not axes:
            return x
        return getattr(t.ops, ov_name)(x, t.const(axes, np.int64), False).output(0)

    return rule


def _argminmax(mode):
    def rule(t, eqn, x):
        axes = list(eqn.params["axes"])
        if len(axes) != 1:
            raise Unsupported(f"arg{mode} over {len(axes)} axes")
        index_type = t.ov_type(eqn.params["index_dtype"])
        # Stable: ties give the first index, as jnp.argmax does.
        node = t.ops.topk(x, t.const(1, np.int64), axes[0], mode, "value", index_type, stable=True)
        return t.ops.squeeze(node.output(1), t.const(axes, np.int64)).output(0)

    return rule


def _top_k(t, eqn, x):
    k = eqn.params["k"]
    axis = len(eqn.invars[0].aval.shape) - 1
    node = t.ops.topk(x, t.const(int(k), np.int64), axis, "max", "value", "i32", stable=True)
    return [node.output(0), node.output(1)]


def _cumsum(t, eqn, x):
    axis = t.const(int(eqn.params["axis"]), np.int64)
    return t.ops.cum_sum(x, axis, False, bool(eqn.params.get("reverse", False))).output(0)


def _dot_general(t, eqn, lhs, rhs):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lc, rc, lb, rb = map(list, (lc, rc, lb, rb))
    preferred = eqn.params.get("preferred_element_type")
    out_dtype = dtype_of(eqn, out=True)
    if preferred is not None and np.dtype(preferred) != dtype_of(eqn):
        lhs = t.ops.convert(lhs, t.ov_type(preferred)).output(0)
        rhs = t.ops.convert(rhs, t.ov_type(preferred)).output(0)
    ls, rs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    lf = [i for i in range(len(ls)) if i not in lc and i not in lb]
    rf = [i for i in range(len(rs)) if i not in rc and i not in rb]
    if not all(is_int(rs[i]) for i in rc):
        raise SymbolicShape("dot_general contracts over a symbolic dimension")
    if not lb and len(lc) == 1 and len(rc) == 1 and len(rs) == 2 and lc[0] == len(ls) - 1:
        # The dense-layer case: x[..., k] @ w[k, n] (or w[n, k]).
        out = t.ops.matmul(lhs, rhs, False, rc[0] == 1).output(0)
    else:
        # General case: lhs -> [batch, free, contract], rhs -> [batch, contract, free],
        # flatten free and contract groups, batched MatMul, reshape to the result.
        lhs_t = t.ops.transpose(lhs, t.const(lb + lf + lc, np.int64))
        rhs_t = t.ops.transpose(rhs, t.const(rb + rc + rf, np.int64))
        k = int(np.prod([int(rs[i]) for i in rc]))
        nb = len(lb)
        lhs_r = t.ops.reshape(lhs_t, t.const([0] * nb + [-1, k], np.int64), True)
        rhs_r = t.ops.reshape(rhs_t, t.const([0] * nb + [k, -1], np.int64), True)
        out = t.ops.matmul(lhs_r, rhs_r, False, False)
        out = t.ops.reshape(out, t.shape(list(eqn.outvars[0].aval.shape)), False).output(0)
    if out_dtype != (np.dtype(preferred) if preferred is not None else dtype_of(eqn)):
        out = t.ops.convert(out, t.ov_type(out_dtype)).output(0)
    return out


def _conv(t, eqn, lhs, rhs):
    p = eqn.params
    if p["batch_group_count"] != 1:
        raise Unsupported("conv_general_dilated with batch_group_count > 1")
    if any(d != 1 for d in p["lhs_dilation"]):
        raise Unsupported("conv_general_dilated with lhs_dilation (transposed convolution)")
    padding = p["padding"]
    if isinstance(padding, str) or any(lo < 0 or hi < 0 for lo, hi in padding):
        raise Unsupported(f"conv_general_dilated padding {padding!r}")
    dn = p["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = (list(s) for s in (dn.lhs_spec, dn.rhs_spec, dn.out_spec))
    x = t.ops.transpose(lhs, t.const(lhs_spec, np.int64))  # -> N, C, spatial...
    w = t.ops.transpose(rhs, t.const(rhs_spec, np.int64))  # -> O, I, spatial...
    strides = [int(s) for s in p["window_strides"]]
    dil = [int(d) for d in p["rhs_dilation"]]
    lo = [int(a) for a, _ in padding]
    hi = [int(b) for _, b in padding]
    groups = int(p["feature_group_count"])
    if groups == 1:
        y = t.ops.convolution(x, w, strides, lo, hi, dil)
    else:
        rshape = eqn.invars[1].aval.shape
        o, i = int(rshape[rhs_spec[0]]), int(rshape[rhs_spec[1]])
        spatial = [int(rshape[d]) for d in rhs_spec[2:]]
        w = t.ops.reshape(w, t.const([groups, o // groups, i, *spatial], np.int64), False)
        y = t.ops.group_convolution(x, w, strides, lo, hi, dil)
    # y is N, C, spatial...; out_spec says where each of those goes in the result.
    inverse = list(np.argsort(out_spec))
    return t.ops.transpose(y, t.const(inverse, np.int64)).output(0)


def _pool(kind):
    def rule(t, eqn, x):
        p = eqn.params
        window = [int(w) for w in p["window_dimensions"]]
        strides = [int(s) for s in p["window_strides"]]
        padding = [(int(a), int(b)) for a, b in p["padding"]]
        if any(d != 1 for d in p["base_dilation"]):
            raise Unsupported(f"reduce_window_{kind} with base_dilation")
        wdil = [int(d) for d in p["window_dilation"]]
        rank = len(window)
        spatial = [
            i
            for i in range(rank)
            if window[i] != 1 or strides[i] != 1 or padding[i] != (0, 0) or wdil[i] != 1
        ]
        if not spatial:
            return x
        other = [i for i in range(rank) if i not in spatial]
        if len(spatial) > 3 or len(other) > 2:
            raise Unsupported(f"reduce_window_{kind} over {len(spatial)} of {rank} dimensions")
        perm = other + spatial
        y = t.ops.transpose(x, t.const(perm, np.int64))
        if len(other) < 2:
            y = t.ops.unsqueeze(y, t.const(list(range(2 - len(other))), np.int64))
        ks = [window[i] for i in spatial]
        st = [strides[i] for i in spatial]
        lo = [padding[i][0] for i in spatial]
        hi = [padding[i][1] for i in spatial]
        if kind == "sum":
            if any(wdil[i] != 1 for i in spatial):
                raise Unsupported("reduce_window_sum with window_dilation")
            y = t.ops.avg_pool(y, st, lo, hi, ks, False)
            y = t.ops.multiply(y, t.const(int(np.prod(ks)), dtype_of(eqn)))
        else:
            dl = [wdil[i] for i in spatial]
            sign = 1 if kind == "max" else -1
            if sign < 0:
                y = t.ops.negative(y)
            y = t.ops.max_pool(y, st, dl, lo, hi, ks).output(0)
            if sign < 0:
                y = t.ops.negative(y)
        if len(other) < 2:
            y = t.ops.squeeze(y, t.const(list(range(2 - len(other))), np.int64))
        return t.ops.transpose(y, t.const(list(np.argsort(perm)), np.int64)).output(0)

    return rule


RULES: dict[str, Callable[..., Any]] = {
    "reduce_sum": _reduce("reduce_sum"),
    "reduce_max": _reduce("reduce_max"),
    "reduce_min": _reduce("reduce_min"),
    "reduce_prod": _reduce("reduce_prod"),
    "reduce_and": _reduce("reduce_logical_and"),
    "reduce_or": _reduce("reduce_logical_or"),
    "argmax": _argminmax("max"),
    "argmin": _argminmax("min"),
    "top_k": _top_k,
    "cumsum": _cumsum,
    "dot_general": _dot_general,
    "conv_general_dilated": _conv,
    "reduce_window_sum": _pool("sum"),
    "reduce_window_max": _pool("max"),
    "reduce_window_min": _pool("min"),
}
