"""Deployable artefacts of a compressed model: StableHLO, SavedModel, OpenVINO IR.

`export_model` is what ``ctrl.export_model`` calls: it strips the model
(masks baked into the weights), binds the stripped variables into the
forward, and hands it to the format's writer. Every writer leaves either the
complete artefact with its JSON sidecar or nothing.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any

from nncf_jax.errors import ExportError
from nncf_jax.export.model_args import ExampleInputs, example_inputs
from nncf_jax.export.stablehlo import ExportedArtefact, export_stablehlo

__all__ = ["FORMATS", "ExampleInputs", "ExportedArtefact", "example_inputs", "export_forward"]

FORMATS = ("stablehlo", "saved_model", "openvino")


def export_forward(
    forward: Callable[..., Any],
    inputs: ExampleInputs,
    save_path: str | os.PathLike,
    *,
    save_format: str | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
    **options: Any,
) -> ExportedArtefact:
    """Writes ``forward`` (weights closed over) in ``save_format``.

    Args:
      forward: ``forward(*args, **kwargs)`` of the stripped model.
      inputs: example arguments (see `example_inputs`).
      save_path: where the artefact goes.
      save_format: "stablehlo" (default), "saved_model" or "openvino".
      input_names, output_names: names of the inputs and outputs.
      metadata: JSON compression summary for the sidecar.
      **options: format options. stablehlo: ``batch_polymorphic``,
        ``vjp_order``, ``platforms``; saved_model: ``batch_polymorphic``,
        ``platforms``, ``stablehlo_version``; openvino: ``batch_polymorphic``,
        ``verify``.

    Raises:
      ExportError: unknown format, missing optional dependency, bad
        arguments, or the write failed (nothing is left behind).
    """
    save_format = "stablehlo" if save_format is None else save_format
    if save_format not in FORMATS:
        raise ExportError(
            f"save_format: unknown format {save_format!r}; supported: {', '.join(FORMATS)}"
        )
    if not isinstance(save_path, (str, os.PathLike)) or not str(save_path):
        raise ExportError(f"save_path: expected a file path, got {save_path!r}")
    common = dict(input_names=input_names, output_names=output_names, metadata=metadata)
    writer = _writer(save_format)
    accepted = set(inspect.signature(writer).parameters) - {"forward", "fn", "inputs", "save_path"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ExportError(
            f"save_format {save_format!r} does not take {', '.join(unknown)}; its options: "
            f"{', '.join(sorted(accepted - set(common)))}"
        )
    return writer(forward, inputs, save_path, **common, **options)


def _writer(save_format: str) -> Callable[..., ExportedArtefact]:
    if save_format == "stablehlo":
        return export_stablehlo
    if save_format == "saved_model":
        from nncf_jax.export.saved_model import export_saved_model

        return export_saved_model
    from nncf_jax.export.openvino import export_openvino

    return export_openvino
