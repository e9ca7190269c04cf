"""The jaxpr → OpenVINO translator: a traced forward rebuilt from OpenVINO's public op set.

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
unsupported primitive raises `Unsupported`; a batch-dependent size the
translator cannot express raises `SymbolicShape`.

The rules live in ``jaxpr_to_openvino_elementwise``, ``jaxpr_to_openvino_shape``
and ``jaxpr_to_openvino_nn``; each is ``rule(translator, eqn, *inputs)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.extend.core import Literal

from nncf_jax.export import (
    jaxpr_to_openvino_elementwise,
    jaxpr_to_openvino_nn,
    jaxpr_to_openvino_shape,
)
from nncf_jax.export.jaxpr_to_openvino_common import SymbolicShape, Unsupported, is_int

__all__ = [
    "CALLS",
    "IDENTITY",
    "RULES",
    "SymbolicShape",
    "Translator",
    "Unsupported",
    "supported_primitives",
    "translate",
]

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


class Translator:
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
            raise Unsupported(f"dtype {name}")
        return _OV_TYPES[name]

    def dim(self, d: Any):
        """An i64[1] node holding dimension ``d``."""
        if is_int(d):
            return self.const([int(d)], np.int64)
        key = str(d)
        if key not in self.dims:
            raise SymbolicShape(f"dimension {key!r} is not an input dimension")
        return self.dims[key]

    def shape(self, dims: Sequence[Any]):
        """An i64[rank] node holding ``dims`` (ints or input dimension symbols)."""
        if all(is_int(d) for d in dims):
            return self.const([int(d) for d in dims], np.int64)
        return self.ops.concat([self.dim(d) for d in dims], 0).output(0)

    def bind_inputs(self, params: Sequence[Any], avals: Sequence[Any]) -> None:
        for p, aval in zip(params, avals, strict=True):
            for axis, d in enumerate(aval.shape):
                if not is_int(d) and str(d) not in self.dims:
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
        if name in CALLS:
            sub = next(
                (eqn.params[k] for k in ("jaxpr", "call_jaxpr", "fun_jaxpr") if k in eqn.params),
                None,
            )
            if sub is None:
                raise Unsupported(f"{name} (no inner jaxpr)")
            if hasattr(sub, "consts"):  # ClosedJaxpr
                return self.run(sub.jaxpr, sub.consts, xs)
            return self.run(sub, [], xs)
        if name in IDENTITY:
            return list(xs)
        rule = RULES.get(name)
        if rule is None:
            raise Unsupported(name)
        out = rule(self, eqn, *xs)
        return list(out) if isinstance(out, (list, tuple)) else [out]


CALLS = {
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
IDENTITY = {
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

RULES: dict[str, Callable[..., Any]] = {
    **jaxpr_to_openvino_elementwise.RULES,
    **jaxpr_to_openvino_shape.RULES,
    **jaxpr_to_openvino_nn.RULES,
}


def supported_primitives() -> list[str]:
    """The primitive names the translator handles, sorted."""
    return sorted({*RULES, *CALLS, *IDENTITY})


def translate(ov, ops, flat_forward, specs, names_in):
    """``(params, outputs, out_avals)`` for ``flat_forward`` traced at ``specs``."""
    closed, out_shapes = jax.make_jaxpr(flat_forward, return_shape=True)(*specs)
    out_avals = jax.tree.leaves(out_shapes)
    t = Translator(ov, ops)
    params = []
    for name, spec in zip(names_in, specs, strict=True):
        shape = [int(d) if is_int(d) else -1 for d in spec.shape]
        ov_type = getattr(ov.Type, t.ov_type(spec.dtype))
        param = ops.parameter(ov.PartialShape(shape), ov_type, name=name)
        param.output(0).get_tensor().set_names({name})
        params.append(param)
    t.bind_inputs([p.output(0) for p in params], specs)
    outputs = t.run(closed.jaxpr, closed.consts, [p.output(0) for p in params])
    return params, outputs, out_avals
