"""OpenVINO IR export: the stripped forward's jaxpr rebuilt from OpenVINO ops.

The ``.xml``/``.bin`` pair loads with plain OpenVINO (no JAX, no nncf_jax)::

    compiled = openvino.Core().compile_model(xml_path, "CPU")
    logits = compiled({"image": x})["logits"]

The forward is traced to a jaxpr and each primitive mapped to OpenVINO's
public op set (``openvino.opset13``) by `nncf_jax.export.jaxpr_to_openvino`,
which says why (``openvino.convert_model`` and a SavedModel do not work) and
what it supports. An unsupported primitive is an `ExportError` naming it.

With ``batch_polymorphic`` the shared leading dimension is dynamic (``-1``)
in the IR: one model serves every batch size. Sizes that depend on it are
computed from the input's ``ShapeOf`` at run time. If the model uses the
batch size in a way the translator cannot express, the export warns and
uses the example inputs' batch size (``"batch_polymorphic": false`` and the
reason in the sidecar).

Quantized models run on int8 kernels. Each fake quantizer becomes one
``FakeQuantize(x, lo, hi, lo, hi, levels)`` (NNCF's mapping; same grid and
half-to-even rounding as `nncf_jax.quantization.fake_quant`), and int8
weight codes stay ``Constant(i8) -> Convert -> Multiply(1 / s)`` where the
layer's input is quantized, which is the pattern OpenVINO's low-precision
transformations turn into int8 convolutions and matmuls; `int8_layers`
lists the layers a compiled model runs that way. Other integer codes (4-bit,
zero points) and layers with a float input get float32 weights at compile time.

Before anything is written the IR is compiled for OpenVINO's CPU (with
``INFERENCE_PRECISION_HINT=f32``) and its outputs on random inputs of the
example shapes are compared with JAX's: a mismatch is an `ExportError`, not a
silent artefact (see `_verify` for the bound with quantizers). The sidecar
records the largest difference and how many layers ran on int8 kernels.
Float weights are stored as float32 (``compress_to_fp16=False``).

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

from nncf_jax.errors import ExportError
from nncf_jax.export.jaxpr_to_openvino import (
    SymbolicShape,
    Unsupported,
    supported_primitives,
    translate,
)
from nncf_jax.export.model_args import ExampleInputs
from nncf_jax.export.saved_model import publish_atomically
from nncf_jax.export.stablehlo import ExportedArtefact, _describe, _names, _specs, split_inputs

__all__ = ["export_openvino", "int8_layers"]


_MATMUL_LAYERS = {"Convolution", "Deconvolution", "FullyConnected", "MatMul"}


def int8_layers(compiled: Any) -> list[str]:
    """The convolutions and matmuls a compiled OpenVINO model runs on 8-bit integer kernels.

    Reads OpenVINO's executed graph (``compiled.get_runtime_model()``): each
    node's ``rt_info`` names its ``layerType``, ``runtimePrecision`` and the
    kernel (``primitiveType``, e.g. ``brgconv_avx512_amx_I8``). A layer counts
    when both its precision and its kernel are ``i8``/``u8``: a layer with
    int8 weights but float compute (OpenVINO's compressed-weight path) reports
    an int8 precision with a float kernel and does not count.

    Args:
      compiled: an ``openvino.CompiledModel``.

    Returns:
      The layers' original names (``originalLayersNames``), in execution order.

    Example:
      >>> compiled = openvino.Core().compile_model("model.xml", "CPU")
      >>> int8_layers(compiled)  # e.g. ['Convolution_88,Multiply_4422', 'MatMul_160']
    """
    found = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = {k: v.astype(str) for k, v in op.get_rt_info().items()}
        kernel = info.get("primitiveType", "").lower()
        if (
            info.get("layerType") in _MATMUL_LAYERS
            and info.get("runtimePrecision") in ("i8", "u8")
            and kernel.endswith(("_i8", "_u8"))
        ):
            found.append(info.get("originalLayersNames", op.get_friendly_name()))
    return found


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


FLOAT_TOLERANCE = 1e-4
"""Verification bound for float graphs: |OpenVINO - JAX| <= FLOAT_TOLERANCE·(1 + max|y|)."""
QUANTIZED_TOLERANCE = 1e-2
"""Bound on every output value of a graph with ``FakeQuantize`` ops, in the same units."""


def _verification_inputs(arrays, polymorphic: bool, quantized: bool) -> list[list[np.ndarray]]:
    """Input sets to compare OpenVINO with JAX on.

    Float inputs are drawn from N(0, 1) (``input_info`` dummies are zeros or
    ones, which would hide most mistakes); other inputs are the examples.
    With a dynamic batch, a second set has two more rows. A quantized graph
    gets more rows (a third set with six more, or four sets of the static
    batch), so that the share of values that agree (see `_verify`) means
    something.
    """
    rng = np.random.default_rng(0)
    extras = (0, 2) if polymorphic else (0,)
    if quantized:
        extras = (0, 2, 6) if polymorphic else (0, 0, 0, 0)
    sets = []
    for extra in extras:
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


def _has_fake_quantize(model) -> bool:
    return any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


def _verify(ov, model, flat_forward, input_sets, names_out, quantized: bool) -> tuple[float, int]:
    """``(largest |OpenVINO - JAX| over input_sets, int8 layers)``; raises on a mismatch.

    A float graph must agree everywhere within ``FLOAT_TOLERANCE·(1 + max|y|)``.
    With ``FakeQuantize`` ops OpenVINO runs int8 kernels and rescales their
    integer results in its own order, so a value within float rounding of a
    rounding tie can land one level away from JAX's and move the outputs
    downstream of it by a fraction of a level: then every value must agree
    within ``QUANTIZED_TOLERANCE·(1 + max|y|)`` and at least half of them
    within the float bound. A wrong range, level count, zero point or layout
    moves most values by a level or more and fails the second test.
    """
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    reference = jax.jit(flat_forward)  # one compilation, not one per eager op
    bound = QUANTIZED_TOLERANCE if quantized else FLOAT_TOLERANCE
    worst = 0.0
    agree: list[np.ndarray] = []  # per float output value: within the float bound
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
                scale = 1.0 + float(np.max(np.abs(ref64[np.isfinite(ref64)]), initial=0))
                tol = bound * scale
                close = np.isclose(got64, ref64, rtol=0, atol=tol, equal_nan=True)
                finite = np.isfinite(ref64) & np.isfinite(got64)
                diffs = np.abs(got64 - ref64)[finite]
                diff = float(np.max(diffs, initial=0))
                if not close.all():
                    raise ExportError(
                        f"OpenVINO output {name!r} differs from JAX's by {diff:.3g} (> {tol:.3g}) "
                        "on random inputs (a bug in nncf_jax's OpenVINO translator)"
                    )
                worst = max(worst, diff)
                agree.append(diffs <= FLOAT_TOLERANCE * scale)
            elif not np.array_equal(got, ref):
                raise ExportError(
                    f"OpenVINO output {name!r} differs from JAX's on the example inputs "
                    "(a bug in nncf_jax's OpenVINO translator)"
                )
    if quantized and agree:
        share = float(np.mean(np.concatenate(agree)))
        if share < 0.5:
            raise ExportError(
                f"only {share:.0%} of the OpenVINO outputs agree with JAX's within "
                f"{FLOAT_TOLERANCE:g}·(1 + max|y|) on random inputs, fewer than rounding ties "
                "explain (a bug in nncf_jax's OpenVINO translator)"
            )
    return worst, len(int8_layers(compiled))


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
        dynamic): |diff| ≤ 1e-4·(1 + max|y|). With ``FakeQuantize`` ops (more
        rows then), |diff| ≤ 1e-2·(1 + max|y|) and at least half of the values
        within 1e-4·(1 + max|y|): int8 kernels round a few values near a
        rounding tie to the neighbouring level.

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
            params, outputs, out_avals = translate(ov, ops, flat_forward, specs, names_in)
        except SymbolicShape as e:
            if not polymorphic:
                raise Unsupported(str(e)) from None
            reason = f"the OpenVINO translator cannot express a batch-dependent size: {e}"
            warnings.warn(
                f"openvino export: {reason}; exporting with the static batch size "
                f"{np.shape(arrays[0][1])[0]} of the example inputs instead",
                UserWarning,
                stacklevel=2,
            )
            polymorphic = False
            specs, _ = _specs(arrays, False)
            params, outputs, out_avals = translate(ov, ops, flat_forward, specs, names_in)
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
        max_diff = int8_count = None
        if verify:
            quantized = _has_fake_quantize(model)
            input_sets = _verification_inputs(arrays, polymorphic, quantized)
            max_diff, int8_count = _verify(
                ov, model, flat_forward, input_sets, names_out, quantized
            )
    except ExportError:
        raise
    except Unsupported as e:
        raise ExportError(
            f"the model cannot be exported to OpenVINO: the translator does not support {e}; "
            "supported primitives: " + ", ".join(supported_primitives())
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
        "verified_int8_layers": int8_count,
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
