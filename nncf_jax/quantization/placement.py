"""Where quantizers go in an unmodified Flax linen model, and how they get there.

Placement is found by running the model once under
``flax.linen.intercept_methods`` (shapes only, `jax.eval_shape`) and noting
every call of a quantizable op:

- ``Dense``, ``DenseGeneral``, ``Conv``, ``ConvTranspose``, ``Einsum``: a
  weight quantizer on the module's ``kernel``, an activation quantizer on the
  op's input (``<module>/input``) and, with ``quantize_outputs``, one on its
  output (``<module>/output``);
- ``MultiHeadDotProductAttention`` (and its subclasses) with flax's default
  ``dot_product_attention``: activation quantizers on the inputs of its two
  matmuls, ``<module>/qk_matmul/query``, ``<module>/qk_matmul/key``,
  ``<module>/av_matmul/weights`` and ``<module>/av_matmul/value``. Its
  query/key/value/out projections are ``DenseGeneral`` modules and get
  their own quantizers as above.

At step time `quantizing_interceptor` puts fake-quantization on those same
inputs and outputs while the model's own code runs, so the model is never
edited. The attention matmuls are reached through the
``qk_attn_weights_einsum`` / ``attn_weights_value_einsum`` hooks of
``flax.linen.dot_product_attention``.

Names follow the module paths (``Block_0/Conv_1/input``), so NNCF scopes
address them like parameters: ``Block_0/Conv_1`` covers the module's kernel
and its activation quantizers.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from nncf_jax import nnx_model

__all__ = [
    "OpSite",
    "find_op_sites",
    "intercepting",
    "quantizing_interceptor",
]

# Most specific classes first: isinstance decides.
_OP_KINDS: tuple[tuple[type, str], ...] = (
    (nn.ConvTranspose, "conv_transpose"),
    (nn.Conv, "conv"),
    (nn.DenseGeneral, "dense_general"),
    (nn.Dense, "dense"),
    (nn.Einsum, "einsum"),
    (nn.MultiHeadDotProductAttention, "attention"),
)
_NNX_KINDS: tuple[tuple[type, str], ...] = (
    (nnx.ConvTranspose, "conv_transpose"),
    (nnx.Conv, "conv"),
    (nnx.LinearGeneral, "dense_general"),
    (nnx.Linear, "dense"),
    (nnx.Einsum, "einsum"),
)
_ATTENTION_INPUTS = ("qk_matmul/query", "qk_matmul/key", "av_matmul/weights", "av_matmul/value")

Quantize = Callable[[str, jax.Array], jax.Array]


@dataclass(frozen=True)
class OpSite:
    """One quantizable op of the model.

    Attributes:
      module: the module path, ``"Block_0/Conv_1"``.
      kind: ``"dense"``, ``"dense_general"``, ``"conv"``, ``"conv_transpose"``,
        ``"einsum"`` or ``"attention"``.
      kernel: the param path of its kernel (``"Block_0/Conv_1/kernel"``), or
        None (attention; a kernel passed in from outside).
      inputs: names of the activation quantizers on its inputs.
      output: name of the activation quantizer its output would get.
      input_shapes: shapes of those inputs in the traced call.
      takes_model_input: whether its (first) input is one of the model's own
        inputs, untouched (NNCF's ``quantize_inputs`` decides whether that
        input gets a quantizer).
      kernel_stack_axes: leading axes of the stored kernel that the op does
        not see: layers stacked by ``nn.scan`` (``(L, in, out)`` stored,
        ``(in, out)`` per call); 0 for an ordinary kernel.
    """

    module: str
    kind: str
    kernel: str | None
    inputs: tuple[str, ...]
    output: str
    input_shapes: tuple[tuple[int, ...], ...]
    takes_model_input: bool = False
    kernel_stack_axes: int = 0


def _kind(module: Any) -> str | None:
    if isinstance(module, nnx_model.NNXModuleView):
        return next((k for cls, k in _NNX_KINDS if isinstance(module.module, cls)), None)
    for cls, kind in _OP_KINDS:
        if isinstance(module, cls):
            return kind
    return None


@contextlib.contextmanager
def intercepting(interceptor: Callable[..., Any]) -> Iterator[None]:
    """``interceptor`` on the calls of linen modules and of `NNXModel` layers."""
    with nn.intercept_methods(interceptor), nnx_model.intercept(interceptor):
        yield


def _module_name(module: nn.Module) -> str:
    return "/".join(str(p) for p in module.path)


def _first_input(args: tuple, kwargs: dict) -> tuple[Any, Callable[[Any], tuple[tuple, dict]]]:
    """The op's input array and a function that rebuilds the call with a new one."""
    if args:
        return args[0], lambda x: ((x, *args[1:]), kwargs)
    key = "inputs" if "inputs" in kwargs else next(iter(kwargs))
    return kwargs[key], lambda x: (args, {**kwargs, key: x})


@contextlib.contextmanager
def _attention_hooks(module: nn.Module, names: Sequence[str], quantize: Quantize) -> Iterator[bool]:
    """Temporarily routes the module's attention matmuls through ``quantize``.

    Yields whether the hooks are in place: only flax's own
    ``dot_product_attention`` offers them; with a custom ``attention_fn``
    only the projections are quantized (and a warning says so).
    """
    original = module.attention_fn
    if original is not nn.dot_product_attention:
        warnings.warn(
            f"{_module_name(module)}: a custom attention_fn has no matmul hooks; its "
            "attention matmuls are not quantized (the q/k/v/out projections are)",
            stacklevel=4,
        )
        yield False
        return

    @functools.wraps(original)
    def attention_fn(query, key, value, *args, **kwargs):
        precision = kwargs.pop("precision", None)
        qk_inner = kwargs.pop("qk_attn_weights_einsum", None) or functools.partial(
            jnp.einsum, precision=precision
        )
        av_inner = kwargs.pop("attn_weights_value_einsum", None) or functools.partial(
            jnp.einsum, precision=precision
        )

        def qk_einsum(subscripts, q, k, *rest, **kw):
            return qk_inner(subscripts, quantize(names[0], q), quantize(names[1], k), *rest, **kw)

        def av_einsum(subscripts, w, v, *rest, **kw):
            return av_inner(subscripts, quantize(names[2], w), quantize(names[3], v), *rest, **kw)

        return original(
            query,
            key,
            value,
            *args,
            qk_attn_weights_einsum=qk_einsum,
            attn_weights_value_einsum=av_einsum,
            **kwargs,
        )

    # Linen modules are frozen dataclasses; this bound clone lives for one
    # traced call, and the attribute is restored right after it.
    object.__setattr__(module, "attention_fn", attention_fn)
    try:
        yield True
    finally:
        object.__setattr__(module, "attention_fn", original)


def quantizing_interceptor(
    sites: Mapping[str, OpSite], quantize: Quantize, *, quantize_outputs: bool = False
) -> Callable[..., Any]:
    """A ``flax.linen.intercept_methods`` interceptor that fake-quantizes op inputs.

    Args:
      sites: ``{module path: OpSite}`` of the ops to intercept.
      quantize: ``quantize(name, x) -> x'`` for an activation quantizer's name;
        it returns ``x`` itself for names without a quantizer (ignored scopes).
      quantize_outputs: also pass op outputs through ``quantize``.

    Returns:
      The interceptor; use as ``with nn.intercept_methods(interceptor): ...``.
    """

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        site = sites.get(_module_name(context.module))
        if site is None:
            return next_fun(*args, **kwargs)
        if site.kind == "attention":
            with _attention_hooks(context.module, site.inputs, quantize):
                out = next_fun(*args, **kwargs)
        else:
            x, rebuild = _first_input(args, kwargs)
            args, kwargs = rebuild(quantize(site.inputs[0], x))
            out = next_fun(*args, **kwargs)
        return quantize(site.output, out) if quantize_outputs else out

    return interceptor


def find_op_sites(
    apply_fn: Callable[..., Any], variables: Any, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> list[OpSite]:
    """The quantizable ops of a linen model, in call order.

    Runs ``apply_fn(variables, *args, **kwargs)`` under `jax.eval_shape`
    (nothing is computed) with a recording interceptor. An op called several
    times (shared weights) is one site.

    Args:
      apply_fn: the model's ``apply``.
      variables: its variables (arrays or ``ShapeDtypeStruct``).
      args, kwargs: example call arguments (only shapes and dtypes matter).

    Returns:
      One `OpSite` per quantizable module, in the order of first call.
    """
    params = variables.get("params", {}) if isinstance(variables, Mapping) else {}
    found: dict[str, OpSite] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    model_inputs: list[Any] = []
    takes_input: set[str] = set()
    stacks: dict[str, int] = {}

    def record(name: str, x: jax.Array) -> jax.Array:
        shapes.setdefault(name, tuple(x.shape))
        return x

    def interceptor(next_fun, call_args, call_kwargs, context):
        module = context.module
        kind = _kind(module) if context.method_name == "__call__" else None
        if kind is None:
            return next_fun(*call_args, **call_kwargs)
        name = _module_name(module)
        if kind == "attention":
            inputs = tuple(f"{name}/{suffix}" for suffix in _ATTENTION_INPUTS)
            with _attention_hooks(module, inputs, record):
                out = next_fun(*call_args, **call_kwargs)
            kernel = None
        else:
            inputs = (f"{name}/input",)
            x = _first_input(call_args, call_kwargs)[0]
            record(inputs[0], x)
            if any(x is m for m in model_inputs):
                takes_input.add(name)
            out = next_fun(*call_args, **call_kwargs)
            kernel = f"{name}/kernel" if _has_param(params, module.path, "kernel") else None
            if kernel is not None and not isinstance(module, nnx_model.NNXModuleView):
                seen = module.variables.get("params", {}).get("kernel")
                stored = _param(params, module.path, "kernel")
                stacks[name] = max(0, len(stored.shape) - len(getattr(seen, "shape", stored.shape)))
        if name not in found:
            found[name] = OpSite(
                module=name,
                kind=kind,
                kernel=kernel,
                inputs=inputs,
                output=f"{name}/output",
                input_shapes=(),
            )
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the step-time interceptor warns, once per trace
        with intercepting(interceptor):
            # Array keyword arguments are traced; the rest (mutable=, flags)
            # are static and closed over.
            traced = {k: v for k, v in kwargs.items() if hasattr(v, "shape")}
            static = {k: v for k, v in kwargs.items() if k not in traced}

            def run(v, a, kw):
                # Tracers of the inputs, to recognise an op fed by one directly.
                model_inputs.extend(jax.tree_util.tree_leaves((a, kw)))
                return apply_fn(v, *a, **kw, **static)

            jax.eval_shape(run, variables, tuple(args), traced)
    return [
        OpSite(
            module=s.module,
            kind=s.kind,
            kernel=s.kernel,
            inputs=tuple(i for i in s.inputs if i in shapes),
            output=s.output,
            input_shapes=tuple(shapes[i] for i in s.inputs if i in shapes),
            takes_model_input=s.module in takes_input,
            kernel_stack_axes=stacks.get(s.module, 0),
        )
        for s in found.values()
    ]


def _param(params: Any, path: Sequence[str], leaf: str) -> Any:
    node = params
    for part in (*path, leaf):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node if hasattr(node, "shape") else None


def _has_param(params: Any, path: Sequence[str], leaf: str) -> bool:
    return _param(params, path, leaf) is not None
