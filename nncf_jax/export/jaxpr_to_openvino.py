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

Quantization: a fake quantizer's named call (see
`nncf_jax.quantization.fake_quant.FAKE_QUANTIZE_CALL`) becomes one
``FakeQuantize`` with constant ranges (`Translator.fake_quantize`), and int8
weight codes divided by their scale become ``Multiply(1 / s)`` where the
layer's other input is quantized (`use_int8_weights`): together the pattern
OpenVINO runs on int8 kernels. Constant inputs' values are computed on demand
(`Translator.value`) for that; the graph itself keeps constant subgraphs as
they are (OpenVINO folds them when it compiles).

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
from nncf_jax.quantization.fake_quant import fake_quantize_call_levels

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


class _Folded:
    """The outputs of an equation whose inputs are all constants, computed on first use.

    The translator keeps one for every such equation so that a rule can ask
    for a small constant's value (a quantizer's range, a weight's scale)
    without folding everything: most constant subgraphs (int8 weight codes
    converted to float) must stay in the graph as they are.
    """

    __slots__ = ("_args", "_eqn", "_values")

    def __init__(self, eqn: Any = None, args: Sequence[Any] = (), values: Any = None):
        self._eqn, self._args, self._values = eqn, args, values

    @classmethod
    def of(cls, value: Any) -> tuple[_Folded, int]:
        return cls(values=[np.asarray(value)]), 0

    def value(self, i: int) -> np.ndarray:
        if self._values is None:
            args = [folded.value(j) for folded, j in self._args]
            out = self._eqn.primitive.bind(*args, **self._eqn.params)
            out = out if self._eqn.primitive.multiple_results else [out]
            self._values, self._args = [np.asarray(v) for v in out], ()
        return self._values[i]


class Translator:
    """Maps jaxpr variables to OpenVINO outputs, equation by equation.

    Beside each variable's OpenVINO output it keeps its source: a `_Folded`
    output when the variable depends on constants only, None when it depends
    on a model input. Rules read constant inputs' values with `value`.
    """

    def __init__(self, ov, ops):
        self.ov = ov
        self.ops = ops
        self.dims: dict[str, Any] = {}  # symbolic dimension name -> i64[1] node
        self._sources: Sequence[Any] = ()  # of the equation being translated
        # (codes / s output, Convert(codes) output, s) of signed integer weight
        # codes divided by a constant scale; see `use_int8_weights`.
        self.weight_codes: list[tuple[Any, Any, np.ndarray]] = []

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

    def value(self, i: int) -> np.ndarray | None:
        """The value of input ``i`` of the equation being translated, or None.

        None when the input depends on a model input, or when it cannot be
        computed here (e.g. its shape depends on the symbolic batch).
        """
        return _fold(self._sources[i])

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

    def run(
        self,
        jaxpr: Any,
        consts: Sequence[Any],
        args: Sequence[Any],
        sources: Sequence[Any] | None = None,
    ) -> tuple[list[Any], list[Any]]:
        """``(outputs, sources)`` of ``jaxpr``; ``sources`` of ``args`` default to None."""
        env: dict[Any, Any] = {}
        src: dict[Any, Any] = {}

        def read(v):
            if isinstance(v, Literal):
                return self.const(v.val, v.aval.dtype)
            return env[v]

        def source(v):
            if isinstance(v, Literal):
                return _Folded.of(np.asarray(v.val, v.aval.dtype))
            return src[v]

        for v, c in zip(jaxpr.constvars, consts, strict=True):
            env[v] = self.const(np.asarray(c), v.aval.dtype)
            src[v] = _Folded.of(np.asarray(c, v.aval.dtype))
        sources = [None] * len(args) if sources is None else sources
        for v, a, s in zip(jaxpr.invars, args, sources, strict=True):
            env[v], src[v] = a, s
        for eqn in jaxpr.eqns:
            outs, out_sources = self.eqn(
                eqn, [read(v) for v in eqn.invars], [source(v) for v in eqn.invars]
            )
            for v, o, s in zip(eqn.outvars, outs, out_sources, strict=True):
                env[v], src[v] = o, s
        return [read(v) for v in jaxpr.outvars], [source(v) for v in jaxpr.outvars]

    def eqn(self, eqn: Any, xs: list[Any], sources: list[Any]) -> tuple[list[Any], list[Any]]:
        """``(outputs, sources)`` of one equation."""
        name = eqn.primitive.name
        if name in CALLS:
            levels = fake_quantize_call_levels(str(eqn.params.get("name", "")))
            if levels is not None and sources[0] is None:
                return [self.fake_quantize(xs, sources, levels)], [None]
            sub = next(
                (eqn.params[k] for k in ("jaxpr", "call_jaxpr", "fun_jaxpr") if k in eqn.params),
                None,
            )
            if sub is None:
                raise Unsupported(f"{name} (no inner jaxpr)")
            if hasattr(sub, "consts"):  # ClosedJaxpr
                return self.run(sub.jaxpr, sub.consts, xs, sources)
            return self.run(sub, [], xs, sources)
        if name in IDENTITY:
            return list(xs), list(sources)
        rule = RULES.get(name)
        if rule is None:
            raise Unsupported(name)
        self._sources = sources
        out = rule(self, eqn, *xs)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        if any(s is None for s in sources):
            return outs, [None] * len(outs)
        folded = _Folded(eqn, sources)
        return outs, [(folded, i) for i in range(len(outs))]

    def fake_quantize(self, xs: Sequence[Any], sources: Sequence[Any], levels: int):
        """OpenVINO's ``FakeQuantize`` for a fake quantizer's call ``(x, input_low, input_range)``.

        ``FakeQuantize(x, lo, hi, lo, hi, levels)`` with ``hi = lo + r``
        computes ``round((clip(x, lo, hi) - lo) * (levels - 1) / (hi - lo))``
        ``* (hi - lo) / (levels - 1) + lo``: the grid of
        `nncf_jax.quantization.fake_quant` (``lo`` is a grid point), rounded
        half to even as ``jnp.round``; only the float operation order differs.
        The range becomes constants when it is one, which OpenVINO's
        low-precision transformations need to run the next layer in int8.
        Per-channel ranges already have ``x``'s rank.
        """
        x, low, width = xs
        low_value, width_value = _fold(sources[1]), _fold(sources[2])
        if low_value is not None and width_value is not None:
            # lo + r in x's dtype, as the clip in `_fq_forward` computes it.
            high = self.const(low_value + width_value)
            low = self.const(low_value)
        else:
            high = self.ops.add(low, width).output(0)
        return self.ops.fake_quantize(x, low, high, low, high, levels).output(0)


_SHAPE_OPS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze"}
_INT8_LAYERS = {"Convolution", "GroupConvolution", "MatMul"}


def _from_fake_quantize(out: Any) -> bool:
    """Whether ``out`` is a ``FakeQuantize`` output, maybe reshaped or transposed."""
    node = out.get_node()
    while node.get_type_name() in _SHAPE_OPS:
        node = node.input_value(0).get_node()
    return node.get_type_name() == "FakeQuantize"


def _layer_inputs(out: Any) -> list[tuple[Any, int]]:
    """``(node, input index)`` of the consumers of ``out``, looking through shape ops."""
    found = []
    for target in out.get_target_inputs():
        node = target.get_node()
        if node.get_type_name() in _SHAPE_OPS and target.get_index() == 0:
            found.extend(_layer_inputs(node.output(0)))
        else:
            found.append((node, target.get_index()))
    return found


def use_int8_weights(t: Translator) -> int:
    """Turns ``Convert(codes) / s`` into ``Convert(codes) * (1 / s)`` where int8 kernels can use it.

    OpenVINO's low-precision transformations run a convolution or matmul on
    int8 weight codes when its weights are ``Constant(i8) -> Convert ->
    Multiply(Constant)`` (they do not match a Divide) and its other input
    comes from a ``FakeQuantize``. Only such layers get the Multiply: a layer
    whose input is not quantized would get OpenVINO's compressed-weight path,
    which by default quantizes its input on the fly ("dynamic quantization")
    and moves outputs by ~1e-2; with the Divide its weights are folded to
    float32 when compiled, as JAX computes them. ``1 / s`` is rounded once, so
    a weight may move by one ulp.

    Returns:
      The number of weights changed.
    """
    changed = 0
    for out, codes, scale in t.weight_codes:
        layers = _layer_inputs(out)
        if layers and all(
            node.get_type_name() in _INT8_LAYERS
            and index in (0, 1)
            and _from_fake_quantize(node.input_value(1 - index))
            for node, index in layers
        ):
            reciprocal = (1.0 / scale.astype(np.float64)).astype(scale.dtype)
            out.replace(t.ops.multiply(codes, t.const(reciprocal)).output(0))
            changed += 1
    return changed


def _fold(source: Any) -> np.ndarray | None:
    if source is None:
        return None
    folded, i = source
    try:
        return folded.value(i)
    except Exception:  # any failure only means "not a constant here"
        return None


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
    outputs, _ = t.run(closed.jaxpr, closed.consts, [p.output(0) for p in params])
    use_int8_weights(t)
    return params, outputs, out_avals
