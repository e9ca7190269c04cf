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

__all__ = ["export_openvino"]


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
        max_diff = None
        if verify:
            input_sets = _verification_inputs(arrays, polymorphic)
            max_diff = _verify(ov, model, flat_forward, input_sets, names_out)
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
