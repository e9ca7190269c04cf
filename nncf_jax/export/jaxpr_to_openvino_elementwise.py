"""jaxpr → OpenVINO rules for elementwise primitives: arithmetic, comparisons,
logic, conversions, selects and clamps.

Each rule is ``rule(translator, eqn, *inputs) -> output(s)``; `RULES` maps
primitive names to them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nncf_jax.export.jaxpr_to_openvino_common import dtype_of

__all__ = ["RULES"]

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


def _binary(ov_name):
    def rule(t, eqn, a, b):
        return getattr(t.ops, ov_name)(a, b).output(0)

    return rule


def _unary(ov_name):
    def rule(t, eqn, x):
        return getattr(t.ops, ov_name)(x).output(0)

    return rule


def _int_codes(x: Any) -> bool:
    """Whether ``x`` is ``Convert(Constant)`` of a signed integer type (int8 weight codes)."""
    node = x.get_node()
    if node.get_type_name() != "Convert":
        return False
    codes = node.input_value(0).get_node()
    source_type = node.get_input_element_type(0)
    return (
        codes.get_type_name() == "Constant"
        and source_type.is_integral_number()
        and source_type.is_signed()
    )


def _div(t, eqn, a, b):
    dtype = dtype_of(eqn)
    if np.issubdtype(dtype, np.integer):
        # OpenVINO 2026.4's Divide rounds 8-bit integers (u8 14 / 16 gives 1,
        # at run time and when folded), so narrow integers divide as int32.
        # Constants are widened here: its CPU plugin drops the Abs in
        # Abs(Convert(Constant(i8))).
        wide = np.dtype(np.int32) if dtype.itemsize < 4 else dtype
        if wide != dtype:
            a, b = (
                t.ops.convert(v, t.ov_type(wide)).output(0)
                if t.value(i) is None
                else t.const(t.value(i).astype(wide))
                for i, v in enumerate((a, b))
            )
        if np.issubdtype(dtype, np.unsignedinteger):
            q = t.ops.divide(a, b)  # floor is truncation here
        else:
            # lax.div rounds toward zero; OpenVINO's Divide floors.
            q = t.ops.divide(t.ops.absolute(a), t.ops.absolute(b))
            neg = t.ops.not_equal(t.ops.less(a, t.const(0, wide)), t.ops.less(b, t.const(0, wide)))
            q = t.ops.select(neg, t.ops.negative(q), q)
        if wide != dtype:
            q = t.ops.convert(q, t.ov_type(dtype))
        return q.output(0)
    out = t.ops.divide(a, b).output(0)
    scale = t.value(1)
    if scale is not None and _int_codes(a):
        # Signed weight codes / s: int8 kernels may use them (`Translator.weight_codes`).
        t.weight_codes.append((out, a, scale))
    return out


def _logical(bool_name, int_name):
    def rule(t, eqn, *xs):
        fn = bool_name if dtype_of(eqn) == np.bool_ else int_name
        return getattr(t.ops, fn)(*xs).output(0)

    return rule


def _pow(t, eqn, x, y):
    if dtype_of(eqn, 1) != dtype_of(eqn):  # lax.pow allows an integer exponent
        y = t.ops.convert(y, t.ov_type(dtype_of(eqn))).output(0)
    return t.ops.power(x, y).output(0)


def _rsqrt(t, eqn, x):
    return t.ops.divide(t.const(1, dtype_of(eqn)), t.ops.sqrt(x)).output(0)


def _log1p(t, eqn, x):
    return t.ops.log(t.ops.add(x, t.const(1, dtype_of(eqn)))).output(0)


def _expm1(t, eqn, x):
    return t.ops.subtract(t.ops.exp(x), t.const(1, dtype_of(eqn))).output(0)


def _exp2(t, eqn, x):
    return t.ops.power(t.const(2, dtype_of(eqn)), x).output(0)


def _square(t, eqn, x):
    return t.ops.multiply(x, x).output(0)


def _integer_pow(t, eqn, x):
    y = int(eqn.params["y"])
    if y == 0:
        return t.ops.broadcast(t.const(1, dtype_of(eqn)), t.ops.shape_of(x, "i64")).output(0)
    result, base, n = None, x, abs(y)
    while n:  # exact products, as XLA computes them, not exp(y·log x)
        if n & 1:
            result = base if result is None else t.ops.multiply(result, base)
        n >>= 1
        if n:
            base = t.ops.multiply(base, base)
    if y < 0:
        result = t.ops.divide(t.const(1, dtype_of(eqn)), result)
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
    src, dst = dtype_of(eqn), dtype_of(eqn, out=True)
    if dst == np.bool_ and src != np.bool_:
        return t.ops.not_equal(x, t.const(0, src)).output(0)
    return t.ops.convert(x, t.ov_type(dst)).output(0)


def _select_n(t, eqn, pred, *cases):
    if len(cases) == 1:
        return cases[0]
    if dtype_of(eqn) == np.bool_:
        return t.ops.select(pred, cases[1], cases[0]).output(0)
    result = cases[0]
    for i, c in enumerate(cases[1:], start=1):
        result = t.ops.select(t.ops.equal(pred, t.const(i, dtype_of(eqn))), c, result).output(0)
    return result


def _clamp(t, eqn, lo, x, hi):
    return t.ops.minimum(t.ops.maximum(x, lo), hi).output(0)


RULES: dict[str, Callable[..., Any]] = {
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
}
