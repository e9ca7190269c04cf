"""OpenVINO IR export: the stripped forward's jaxpr rebuilt from OpenVINO ops.

The ``.xml``/``.bin`` pair loads with plain OpenVINO (no JAX, no nncf_jax)::

    compiled = openvino.Core().compile_model(xml_path, "CPU")
    logits = compiled({"image": x})["logits"]

Why a translator of our own: with jax 0.12 and OpenVINO 2026.4,
``openvino.convert_model`` on a jaxpr fails (its JAX frontend reads
``ClosedJaxpr.literals``, which jax 0.12 no longer has; past that, it fails on
jax 0.12's literals with "'numpy.float32' has no attribute 'f'"), and a
SavedModel (`nncf_jax.export.saved_model`) holds one ``XlaCallModule`` op,
which OpenVINO's TensorFlow frontend cannot convert ("No conversion rule
found for operations: XlaCallModule"). So this module traces the
forward to a jaxpr and maps each primitive to OpenVINO's public op set
(``openvino.opset13``): elementwise arithmetic, comparisons and selects,
``dot_general`` (MatMul), ``conv_general_dilated`` (Convolution /
GroupConvolution), reductions, ``argmax``, pooling (``reduce_window_*``),
reshapes, broadcasts, transposes, slices, one-axis gathers (``jnp.take``,
embeddings), pads and concatenations, with calls
(``jit``, ``custom_jvp_call``, ``custom_vjp_call``, ``remat``) inlined. An
unsupported primitive is an `ExportError` naming it.

With ``batch_polymorphic`` the shared leading dimension is dynamic (``-1``)
in the IR: one model serves every batch size. Sizes that depend on it are
computed from the input's ``ShapeOf`` at run time. If the model uses the
batch size in a way the translator cannot express, the export warns and
uses the example inputs' batch size (``"batch_polymorphic": false`` and the
reason in the sidecar).

Before anything is written the IR is compiled for OpenVINO's CPU (with
``INFERENCE_PRECISION_HINT=f32``) and its outputs on random inputs of the
example shapes are compared with JAX's: a mismatch is an `ExportError`, not a
silent artefact.
Weights are stored as float32 (``compress_to_fp16=False``).

OpenVINO is the optional ``openvino`` extra: ``pip install 'nncf-jax[openvino]'``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.extend.core import Literal

from nncf_jax.errors import ExportError
from nncf_jax.export.model_args import ExampleInputs
from nncf_jax.export.saved_model import publish_atomically
from nncf_jax.export.stablehlo import ExportedArtefact, _describe, _names, _specs, split_inputs

__all__ = ["export_openvino"]

_INT64_MAX = np.iinfo(np.int64).max


def _import_openvino():
    try:
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError:
        raise ExportError(
            "save_format='openvino' needs OpenVINO, which is not installed: "
            "pip install 'nncf-jax[openvino]'"
        ) from None
    return ov, ops


_OV_TYPES = {
    "float32": "f32",
    "float16": "f16",
    "bfloat16": "bf16",
    "float64": "f64",
    "int8": "i8",
    "int16": "i16",
    "int32": "i32",
    "int64": "i64",
    "uint8": "u8",
    "uint16": "u16",
    "uint32": "u32",
    "uint64": "u64",
    "bool": "boolean",
}


class _Unsupported(Exception):
    """The jaxpr uses a primitive (or parameter) the translator does not handle."""


class _SymbolicShape(Exception):
    """A size depends on the symbolic batch in a way the translator cannot express."""


def _is_int(d: Any) -> bool:
    return isinstance(d, (int, np.integer))


class _Translator:
    """Maps jaxpr variables to OpenVINO outputs, equation by equation."""

    def __init__(self, ov, ops):
        self.ov = ov
        self.ops = ops
        self.dims: dict[str, Any] = {}  # symbolic dimension name -> i64[1] node

    # --- helpers -------------------------------------------------------------

    def const(self, value: Any, dtype: Any = None):
        arr = np.asarray(value, dtype=dtype)
        if arr.dtype.name == "bfloat16":
            return self.ops.convert(self.ops.constant(arr.astype(np.float32)), "bf16").output(0)
        # np.ascontiguousarray would turn a 0-d array into shape (1,).
        return self.ops.constant(arr if arr.flags.c_contiguous else arr.copy()).output(0)

    def ov_type(self, dtype: Any) -> str:
        """OpenVINO's name for ``dtype`` ("f32", "i32", "boolean", ...)."""
        name = np.dtype(dtype).name
        if name not in _OV_TYPES:
            raise _Unsupported(f"dtype {name}")
        return _OV_TYPES[name]

    def dim(self, d: Any):
        """An i64[1] node holding dimension ``d``."""
        if _is_int(d):
            return self.const([int(d)], np.int64)
        key = str(d)
        if key not in self.dims:
            raise _SymbolicShape(f"dimension {key!r} is not an input dimension")
        return self.dims[key]

    def shape(self, dims: Sequence[Any]):
        """An i64[rank] node holding ``dims`` (ints or input dimension symbols)."""
        if all(_is_int(d) for d in dims):
            return self.const([int(d) for d in dims], np.int64)
        return self.ops.concat([self.dim(d) for d in dims], 0).output(0)

    def bind_inputs(self, params: Sequence[Any], avals: Sequence[Any]) -> None:
        for p, aval in zip(params, avals, strict=True):
            for axis, d in enumerate(aval.shape):
                if not _is_int(d) and str(d) not in self.dims:
                    shape = self.ops.shape_of(p, "i64")
                    self.dims[str(d)] = self.ops.gather(
                        shape, self.const([axis], np.int64), self.const(0, np.int64)
                    ).output(0)

    # --- jaxpr walk ----------------------------------------------------------

    def run(self, jaxpr: Any, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
        env: dict[Any, Any] = {}

        def read(v):
            if isinstance(v, Literal):
                return self.const(v.val, v.aval.dtype)
            return env[v]

        for v, c in zip(jaxpr.constvars, consts, strict=True):
            env[v] = self.const(np.asarray(c), v.aval.dtype)
        for v, a in zip(jaxpr.invars, args, strict=True):
            env[v] = a
        for eqn in jaxpr.eqns:
            outs = self.eqn(eqn, [read(v) for v in eqn.invars])
            for v, o in zip(eqn.outvars, outs, strict=True):
                env[v] = o
        return [read(v) for v in jaxpr.outvars]

    def eqn(self, eqn: Any, xs: list[Any]) -> list[Any]:
        name = eqn.primitive.name
        if name in _CALLS:
            sub = next(
                (eqn.params[k] for k in ("jaxpr", "call_jaxpr", "fun_jaxpr") if k in eqn.params),
                None,
            )
            if sub is None:
                raise _Unsupported(f"{name} (no inner jaxpr)")
            if hasattr(sub, "consts"):  # ClosedJaxpr
                return self.run(sub.jaxpr, sub.consts, xs)
            return self.run(sub, [], xs)
        if name in _IDENTITY:
            return list(xs)
        rule = _RULES.get(name)
        if rule is None:
            raise _Unsupported(name)
        out = rule(self, eqn, *xs)
        return list(out) if isinstance(out, (list, tuple)) else [out]


# --- rules --------------------------------------------------------------------

_CALLS = {
    "jit",
    "pjit",
    "closed_call",
    "core_call",
    "custom_jvp_call",
    "custom_vjp_call",
    "custom_vjp_call_jaxpr",
    "checkpoint",
    "remat",
}
_IDENTITY = {
    "stop_gradient",
    "copy",
    "copy_p",
    "device_put",
    "optimization_barrier",
    "sharding_constraint",
    "mesh_cast",
    "reshard",
    "pvary",
}

_BINARY = {
    "add": "add",
    "sub": "subtract",
    "mul": "multiply",
    "max": "maximum",
    "min": "minimum",
    "rem": "mod",
    "eq": "equal",
    "ne": "not_equal",
    "lt": "less",
    "le": "less_equal",
    "gt": "greater",
    "ge": "greater_equal",
}
_UNARY = {
    "neg": "negative",
    "exp": "exp",
    "log": "log",
    "tanh": "tanh",
    "logistic": "sigmoid",
    "sqrt": "sqrt",
    "abs": "absolute",
    "sign": "sign",
    "floor": "floor",
    "ceil": "ceiling",
    "sin": "sin",
    "cos": "cos",
    "tan": "tan",
    "erf": "erf",
    "asin": "asin",
    "acos": "acos",
    "atan": "atan",
    "sinh": "sinh",
    "cosh": "cosh",
    "asinh": "asinh",
    "acosh": "acosh",
    "atanh": "atanh",
}


def _dtype_of(eqn: Any, i: int = 0, out: bool = False) -> np.dtype:
    v = eqn.outvars[i] if out else eqn.invars[i]
    return np.dtype(v.aval.dtype)


def _binary(ov_name):
    def rule(t, eqn, a, b):
        return getattr(t.ops, ov_name)(a, b).output(0)

    return rule


def _unary(ov_name):
    def rule(t, eqn, x):
        return getattr(t.ops, ov_name)(x).output(0)

    return rule


def _div(t, eqn, a, b):
    if np.issubdtype(_dtype_of(eqn), np.integer):
        # lax.div rounds integers toward zero; OpenVINO's Divide floors.
        q = t.ops.divide(t.ops.absolute(a), t.ops.absolute(b))
        neg = t.ops.not_equal(
            t.ops.less(a, t.const(0, _dtype_of(eqn))), t.ops.less(b, t.const(0, _dtype_of(eqn)))
        )
        return t.ops.select(neg, t.ops.negative(q), q).output(0)
    return t.ops.divide(a, b).output(0)


def _logical(bool_name, int_name):
    def rule(t, eqn, *xs):
        fn = bool_name if _dtype_of(eqn) == np.bool_ else int_name
        return getattr(t.ops, fn)(*xs).output(0)

    return rule


def _pow(t, eqn, x, y):
    if _dtype_of(eqn, 1) != _dtype_of(eqn):  # lax.pow allows an integer exponent
        y = t.ops.convert(y, t.ov_type(_dtype_of(eqn))).output(0)
    return t.ops.power(x, y).output(0)


def _rsqrt(t, eqn, x):
    return t.ops.divide(t.const(1, _dtype_of(eqn)), t.ops.sqrt(x)).output(0)


def _log1p(t, eqn, x):
    return t.ops.log(t.ops.add(x, t.const(1, _dtype_of(eqn)))).output(0)


def _expm1(t, eqn, x):
    return t.ops.subtract(t.ops.exp(x), t.const(1, _dtype_of(eqn))).output(0)


def _exp2(t, eqn, x):
    return t.ops.power(t.const(2, _dtype_of(eqn)), x).output(0)


def _square(t, eqn, x):
    return t.ops.multiply(x, x).output(0)


def _integer_pow(t, eqn, x):
    y = int(eqn.params["y"])
    if y == 0:
        return t.ops.broadcast(t.const(1, _dtype_of(eqn)), t.ops.shape_of(x, "i64")).output(0)
    result, base, n = None, x, abs(y)
    while n:  # exact products, as XLA computes them, not exp(y·log x)
        if n & 1:
            result = base if result is None else t.ops.multiply(result, base)
        n >>= 1
        if n:
            base = t.ops.multiply(base, base)
    if y < 0:
        result = t.ops.divide(t.const(1, _dtype_of(eqn)), result)
    return result.output(0) if hasattr(result, "output") else result


def _round(t, eqn, x):
    method = eqn.params.get("rounding_method", 0)
    mode = "half_to_even" if int(method) == 1 else "half_away_from_zero"
    return t.ops.round(x, mode).output(0)


def _is_finite(t, eqn, x):
    from openvino import opset10

    bad = t.ops.logical_or(opset10.is_inf(x), opset10.is_nan(x))
    return t.ops.logical_not(bad).output(0)


def _convert(t, eqn, x):
    src, dst = _dtype_of(eqn), _dtype_of(eqn, out=True)
    if dst == np.bool_ and src != np.bool_:
        return t.ops.not_equal(x, t.const(0, src)).output(0)
    return t.ops.convert(x, t.ov_type(dst)).output(0)


def _select_n(t, eqn, pred, *cases):
    if len(cases) == 1:
        return cases[0]
    if _dtype_of(eqn) == np.bool_:
        return t.ops.select(pred, cases[1], cases[0]).output(0)
    result = cases[0]
    for i, c in enumerate(cases[1:], start=1):
        result = t.ops.select(t.ops.equal(pred, t.const(i, _dtype_of(eqn))), c, result).output(0)
    return result


def _clamp(t, eqn, lo, x, hi):
    return t.ops.minimum(t.ops.maximum(x, lo), hi).output(0)


def _reshape(t, eqn, x):
    if eqn.params.get("dimensions") is not None:
        x = t.ops.transpose(x, t.const(list(eqn.params["dimensions"]), np.int64)).output(0)
    sizes = list(eqn.params["new_sizes"])
    symbolic = [i for i, d in enumerate(sizes) if not _is_int(d)]
    if len(symbolic) == 1:
        target = t.const([-1 if i in symbolic else int(d) for i, d in enumerate(sizes)], np.int64)
    else:
        target = t.shape(sizes)
    return t.ops.reshape(x, target, False).output(0)


def _broadcast_in_dim(t, eqn, x, *dyn):
    if dyn:
        raise _Unsupported("broadcast_in_dim with dynamic shape operands")
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
    if not all(_is_int(s) for s in sizes):
        raise _SymbolicShape("split sizes depend on the batch")
    node = t.ops.variadic_split(
        x, t.const(int(eqn.params["axis"]), np.int64), t.const(sizes, np.int64)
    )
    return [node.output(i) for i in range(len(sizes))]


def _pad(t, eqn, x, value):
    config = list(eqn.params["padding_config"])
    if any(interior for _, _, interior in config):
        raise _Unsupported("pad with interior padding")
    lo = t.const([lo for lo, _, _ in config], np.int64)
    hi = t.const([hi for _, hi, _ in config], np.int64)
    from openvino import opset12

    return opset12.pad(x, lo, hi, "constant", value).output(0)


def _slice(t, eqn, x):
    shape = eqn.invars[0].aval.shape
    starts = list(eqn.params["start_indices"])
    limits = list(eqn.params["limit_indices"])
    strides = eqn.params.get("strides") or [1] * len(starts)
    if not all(_is_int(s) for s in starts):
        raise _SymbolicShape("slice start depends on the batch")
    stops = []
    for lim, full in zip(limits, shape, strict=True):
        if _is_int(lim):
            stops.append(t.dim(lim))
        elif str(lim) == str(full):
            stops.append(t.const([_INT64_MAX], np.int64))
        else:
            stops.append(t.dim(lim))
    return t.ops.slice(
        x,
        t.const([int(s) for s in starts], np.int64),
        t.ops.concat(stops, 0),
        t.const([int(s) for s in strides], np.int64),
    ).output(0)


def _same_dim(a: Any, b: Any) -> bool:
    return (int(a) == int(b)) if _is_int(a) and _is_int(b) else str(a) == str(b)


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
        raise _Unsupported("gather over more than one axis or with batching dimensions")
    a = int(dn.start_index_map[0])
    collapsed = set(dn.collapsed_slice_dims)
    if collapsed - {a} or any(
        not _same_dim(sizes[d], shape[d]) for d in range(len(shape)) if d != a
    ):
        raise _Unsupported("gather of partial slices on the non-indexed axes")
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
    sizes = [int(s) if _is_int(s) else s for s in eqn.params["slice_sizes"]]
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
            raise _Unsupported(f"arg{mode} over {len(axes)} axes")
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
    return t.ops.convert(d, t.ov_type(_dtype_of(eqn, out=True))).output(0)


def _dot_general(t, eqn, lhs, rhs):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lc, rc, lb, rb = map(list, (lc, rc, lb, rb))
    preferred = eqn.params.get("preferred_element_type")
    out_dtype = _dtype_of(eqn, out=True)
    if preferred is not None and np.dtype(preferred) != _dtype_of(eqn):
        lhs = t.ops.convert(lhs, t.ov_type(preferred)).output(0)
        rhs = t.ops.convert(rhs, t.ov_type(preferred)).output(0)
    ls, rs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    lf = [i for i in range(len(ls)) if i not in lc and i not in lb]
    rf = [i for i in range(len(rs)) if i not in rc and i not in rb]
    if not all(_is_int(rs[i]) for i in rc):
        raise _SymbolicShape("dot_general contracts over a symbolic dimension")
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
    if out_dtype != (np.dtype(preferred) if preferred is not None else _dtype_of(eqn)):
        out = t.ops.convert(out, t.ov_type(out_dtype)).output(0)
    return out


def _conv(t, eqn, lhs, rhs):
    p = eqn.params
    if p["batch_group_count"] != 1:
        raise _Unsupported("conv_general_dilated with batch_group_count > 1")
    if any(d != 1 for d in p["lhs_dilation"]):
        raise _Unsupported("conv_general_dilated with lhs_dilation (transposed convolution)")
    padding = p["padding"]
    if isinstance(padding, str) or any(lo < 0 or hi < 0 for lo, hi in padding):
        raise _Unsupported(f"conv_general_dilated padding {padding!r}")
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
            raise _Unsupported(f"reduce_window_{kind} with base_dilation")
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
            raise _Unsupported(f"reduce_window_{kind} over {len(spatial)} of {rank} dimensions")
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
                raise _Unsupported("reduce_window_sum with window_dilation")
            y = t.ops.avg_pool(y, st, lo, hi, ks, False)
            y = t.ops.multiply(y, t.const(int(np.prod(ks)), _dtype_of(eqn)))
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


_RULES: dict[str, Callable[..., Any]] = {
    **{k: _binary(v) for k, v in _BINARY.items()},
    **{k: _unary(v) for k, v in _UNARY.items()},
    "div": _div,
    "pow": _pow,
    "and": _logical("logical_and", "bitwise_and"),
    "or": _logical("logical_or", "bitwise_or"),
    "xor": _logical("logical_xor", "bitwise_xor"),
    "not": _logical("logical_not", "bitwise_not"),
    "rsqrt": _rsqrt,
    "log1p": _log1p,
    "expm1": _expm1,
    "exp2": _exp2,
    "square": _square,
    "integer_pow": _integer_pow,
    "round": _round,
    "is_finite": _is_finite,
    "convert_element_type": _convert,
    "select_n": _select_n,
    "clamp": _clamp,
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
    "iota": _iota,
    "dim_as_value": _dim_as_value,
    "dot_general": _dot_general,
    "conv_general_dilated": _conv,
    "reduce_window_sum": _pool("sum"),
    "reduce_window_max": _pool("max"),
    "reduce_window_min": _pool("min"),
}


def _translate(ov, ops, flat_forward, specs, names_in):
    """``(ov.Model, out_avals)`` for ``flat_forward`` traced at ``specs``."""
    closed, out_shapes = jax.make_jaxpr(flat_forward, return_shape=True)(*specs)
    out_avals = jax.tree.leaves(out_shapes)
    t = _Translator(ov, ops)
    params = []
    for name, spec in zip(names_in, specs, strict=True):
        shape = [int(d) if _is_int(d) else -1 for d in spec.shape]
        ov_type = getattr(ov.Type, t.ov_type(spec.dtype))
        param = ops.parameter(ov.PartialShape(shape), ov_type, name=name)
        param.output(0).get_tensor().set_names({name})
        params.append(param)
    t.bind_inputs([p.output(0) for p in params], specs)
    outputs = t.run(closed.jaxpr, closed.consts, [p.output(0) for p in params])
    return params, outputs, out_avals


def _verification_inputs(arrays, polymorphic: bool) -> list[list[np.ndarray]]:
    """Input sets to compare OpenVINO with JAX on.

    Float inputs are drawn from N(0, 1) (``input_info`` dummies are zeros or
    ones, which would hide most mistakes); other inputs are the examples.
    With a dynamic batch, a second set has two more rows.
    """
    rng = np.random.default_rng(0)
    sets = []
    for extra in (0, 2) if polymorphic else (0,):
        values = []
        for _, a in arrays:
            a = np.asarray(a)
            if extra:
                a = np.take(a, np.arange(a.shape[0] + extra) % a.shape[0], axis=0)
            if a.dtype.kind == "f":
                a = rng.standard_normal(a.shape).astype(a.dtype)
            values.append(a)
        sets.append(values)
    return sets


def _verify(ov, model, flat_forward, input_sets, names_out) -> float:
    """Largest |OpenVINO - JAX| over ``input_sets``; raises if beyond 1e-4·(1 + max|y|)."""
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    reference = jax.jit(flat_forward)  # one compilation, not one per eager op
    worst = 0.0
    for values in input_sets:
        result = compiled(list(values))
        expected = jax.tree.leaves(reference(*values))
        for name, ref in zip(names_out, expected, strict=True):
            got = np.asarray(result[compiled.output(name)])
            ref = np.asarray(ref)
            if got.shape != ref.shape:
                raise ExportError(
                    f"OpenVINO output {name!r} has shape {got.shape}, JAX's {ref.shape} "
                    "(a bug in nncf_jax's OpenVINO translator)"
                )
            if ref.dtype.kind in "fc":
                ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
                tol = 1e-4 * (1.0 + float(np.max(np.abs(ref64[np.isfinite(ref64)]), initial=0)))
                close = np.isclose(got64, ref64, rtol=0, atol=tol, equal_nan=True)
                finite = np.isfinite(ref64) & np.isfinite(got64)
                diff = float(np.max(np.abs(got64 - ref64)[finite], initial=0))
                if not close.all():
                    raise ExportError(
                        f"OpenVINO output {name!r} differs from JAX's by {diff:.3g} (> {tol:.3g}) "
                        "on random inputs (a bug in nncf_jax's OpenVINO translator)"
                    )
                worst = max(worst, diff)
            elif not np.array_equal(got, ref):
                raise ExportError(
                    f"OpenVINO output {name!r} differs from JAX's on the example inputs "
                    "(a bug in nncf_jax's OpenVINO translator)"
                )
    return worst


def export_openvino(
    fn: Callable[..., Any],
    inputs: ExampleInputs,
    save_path: str | os.PathLike,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
    batch_polymorphic: bool = True,
    verify: bool = True,
) -> ExportedArtefact:
    """Exports ``fn(*args, **kwargs)`` to an OpenVINO IR (``.xml`` + ``.bin``) and its sidecar.

    Args:
      fn: the (stripped) forward, closing over its weights.
      inputs: example arguments; arrays become the model's inputs, other
        values are static.
      save_path: the ``.xml`` path; the weights go to the same name with
        ``.bin``, the sidecar to ``save_path + ".json"``.
      input_names, output_names: the IR's input and output tensor names
        (defaults ``input_i`` / keyword names, ``output_i``), outputs in the
        order of the forward's flattened outputs.
      metadata: extra JSON for the sidecar (the compression summary).
      batch_polymorphic: make the shared leading dimension of the inputs
        dynamic (``-1``); if the translator cannot, it warns and uses the
        example inputs' batch size.
      verify: compile the IR on OpenVINO's CPU (``INFERENCE_PRECISION_HINT=f32``)
        before writing it and check its outputs against JAX's on random float
        inputs of the example shapes (and two more rows when the batch is
        dynamic): |diff| ≤ 1e-4·(1 + max|y|).

    Returns:
      An `ExportedArtefact` (``path`` is the ``.xml``).

    Raises:
      ExportError: OpenVINO is not installed (``pip install 'nncf-jax[openvino]'``),
        ``save_path`` does not end in ``.xml``, bad names, a primitive the
        translator does not support, outputs that differ from JAX's, or an
        unwritable path (no partial files are left).

    Example:
      >>> ctrl.export_model("model.xml", save_format="openvino",
      ...                   input_names=["image"], output_names=["logits"])
    """
    ov, ops = _import_openvino()
    if not isinstance(save_path, (str, os.PathLike)) or not str(save_path):
        raise ExportError(f"save_path: expected an .xml file path, got {save_path!r}")
    path = Path(save_path)
    if path.suffix != ".xml":
        raise ExportError(
            f"save_path: an OpenVINO IR path ends in .xml (the weights go next to it in .bin), "
            f"got {str(save_path)!r}"
        )
    arrays, rebuild = split_inputs(inputs)
    names_in = _names(input_names, [n for n, _ in arrays], "input_names")

    def flat_forward(*values):
        args, kwargs = rebuild(*values)
        return fn(*args, **kwargs)

    specs, polymorphic = _specs(arrays, batch_polymorphic)
    reason = None
    if batch_polymorphic and not polymorphic:
        reason = "the inputs do not share a leading (batch) dimension"
    try:
        try:
            params, outputs, out_avals = _translate(ov, ops, flat_forward, specs, names_in)
        except _SymbolicShape as e:
            if not polymorphic:
                raise _Unsupported(str(e)) from None
            reason = f"the OpenVINO translator cannot express a batch-dependent size: {e}"
            warnings.warn(
                f"openvino export: {reason}; exporting with the static batch size "
                f"{np.shape(arrays[0][1])[0]} of the example inputs instead",
                UserWarning,
                stacklevel=2,
            )
            polymorphic = False
            specs, _ = _specs(arrays, False)
            params, outputs, out_avals = _translate(ov, ops, flat_forward, specs, names_in)
        names_out = _names(
            output_names, [f"output_{i}" for i in range(len(out_avals))], "output_names"
        )
        results = []
        for name, out in zip(names_out, outputs, strict=True):
            out.get_tensor().add_names({name})
            result = ops.result(out)
            result.set_friendly_name(name)
            results.append(result)
        model = ov.Model(results, params, "nncf_jax")
        max_diff = None
        if verify:
            input_sets = _verification_inputs(arrays, polymorphic)
            max_diff = _verify(ov, model, flat_forward, input_sets, names_out)
    except ExportError:
        raise
    except _Unsupported as e:
        raise ExportError(
            f"the model cannot be exported to OpenVINO: the translator does not support {e}; "
            "supported primitives: " + ", ".join(sorted({*_RULES, *_CALLS, *_IDENTITY}))
        ) from None
    except Exception as e:  # OpenVINO raises RuntimeError subclasses; the user needs one message
        raise ExportError(
            f"the model cannot be exported to OpenVINO: {type(e).__name__}: {e}"
        ) from e
    from nncf_jax import __version__

    sidecar = {
        "format": "openvino",
        "loader": "openvino.Core().compile_model(path, 'CPU')(inputs) -> outputs by name",
        "nncf_jax_version": __version__,
        "jax_version": jax.__version__,
        "openvino_version": ov.get_version(),
        "weights": path.with_suffix(".bin").name,
        "batch_polymorphic": polymorphic,
        "static_batch_reason": None if polymorphic else reason,
        "verified_max_abs_diff": max_diff,
        "vjp_order": 0,
        "inputs": [_describe(n, a) for n, a in zip(names_in, specs, strict=True)],
        "outputs": [_describe(n, a) for n, a in zip(names_out, out_avals, strict=True)],
        "compression": metadata or {},
    }
    sidecar_path = path.with_name(path.name + ".json")

    def build(folder: Path) -> dict[Path, Path]:
        folder.mkdir()
        xml = folder / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        return {xml: path, xml.with_suffix(".bin"): path.with_suffix(".bin")}

    publish_atomically(
        build, (sidecar_path, json.dumps(sidecar, indent=2).encode()), f"the OpenVINO IR {path}"
    )
    return ExportedArtefact(path, sidecar_path, sidecar)
