"""TensorFlow SavedModel export: the StableHLO module inside an ``XlaCallModule`` op.

The folder loads with plain TensorFlow (no JAX, no nncf_jax)::

    serve = tf.saved_model.load(path).signatures["serving_default"]
    outputs = serve(image=x)  # {"logits": ...}, keyed by the output names

The serving signature's inputs and outputs carry ``input_names`` and
``output_names``; the weights are constants inside the module.

Batch polymorphism and TensorFlow's StableHLO version: ``jax2tf.convert``
serializes the module for StableHLO consumers at most 4 weeks old (1.18 for
jax 0.12), while TensorFlow 2.21 reads StableHLO 1.13. A static module happens
to use nothing newer, but a symbolic batch adds a ``shape_assertion`` custom
call that 1.18 writes as ``vhlo.custom_call_v2``, which TensorFlow 2.21 cannot
read. So, like ``jax2tf`` but with the target version chosen for the
TensorFlow that is installed, this module exports with ``jax.export``,
re-serializes the portable artifact for the older of TensorFlow's StableHLO
version and JAX's own target (StableHLO's documented forward-compatibility
mechanism: the newer library writes the older version's opset), and calls it
through ``XlaCallModule``, the op ``jax2tf`` emits. The function is run once in
TensorFlow before anything is written. If any of this fails, the export falls
back to ``jax2tf.convert`` with a static batch (the example inputs' batch
size), warns why, and records ``"batch_polymorphic": false`` and the reason
in the sidecar.

TensorFlow is the optional ``tf`` extra: ``pip install 'nncf-jax[tf]'``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from nncf_jax.errors import ExportError
from nncf_jax.export.model_args import ExampleInputs
from nncf_jax.export.stablehlo import (
    ExportedArtefact,
    _describe,
    _names,
    _specs,
    split_inputs,
)

__all__ = ["export_saved_model", "publish_atomically"]

SIGNATURE_KEY = "serving_default"
# TensorFlow's rule for signature input/output names.
_TF_NAME = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\-/]*$")


def _import_tensorflow():
    try:
        import tensorflow as tf
    except ImportError:
        raise ExportError(
            "save_format='saved_model' needs TensorFlow, which is not installed: "
            "pip install 'nncf-jax[tf]'"
        ) from None
    return tf


def _first_missing_ancestor(path: Path) -> Path | None:
    """The topmost folder of ``path``'s ancestry that does not exist yet (None if all do)."""
    missing = None
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing = p
    return missing


def _remove_created(created: Path | None, up_to: Path) -> None:
    """Removes the empty folders ``mkdir(parents=True)`` created, from ``up_to`` to ``created``."""
    if created is None:
        return
    p = up_to
    while True:
        try:
            p.rmdir()
        except OSError:
            return
        if p == created:
            return
        p = p.parent


def publish_atomically(
    build: Callable[[Path], dict[Path, Path]], sidecar: tuple[Path, bytes], what: str
) -> None:
    """Builds an artefact in a temporary folder next to its target, then renames it into place.

    Args:
      build: writes the artefact into the (empty) temporary folder it is given
        and returns ``{built path: final path}``; a built folder replaces an
        existing folder at its final path.
      sidecar: the JSON sidecar's path and content, renamed into place last.
      what: the artefact's description for error messages.

    Raises:
      ExportError: building or writing failed; nothing is left behind (not
        the temporary folder, nor folders created for it, nor half the files).
    """
    sidecar_path, sidecar_data = sidecar
    parent = sidecar_path.parent
    created = _first_missing_ancestor(parent)
    tmp: Path | None = None
    placed: list[Path] = []
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{sidecar_path.stem}.", suffix=".tmp", dir=parent))
        moves = build(tmp / "build")
        (tmp / "sidecar.json").write_bytes(sidecar_data)
        for src, dst in moves.items():
            if src.is_dir() and dst.is_dir():
                # A folder cannot replace a non-empty folder in one rename:
                # move the old one aside, put the new one in, then drop the old.
                old = tmp / "old"
                os.replace(dst, old)
                os.replace(src, dst)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(src, dst)
            placed.append(dst)
        os.replace(tmp / "sidecar.json", sidecar_path)
    except Exception as e:
        for p in placed:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        _remove_created(created, parent)
        if isinstance(e, ExportError):
            raise
        if isinstance(e, OSError):
            raise ExportError(f"cannot write {what}: {e}") from None
        raise ExportError(f"cannot write {what}: {type(e).__name__}: {e}") from e
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _tf_dtype(tf, dtype: Any):
    return tf.as_dtype(np.dtype(dtype).name)


def _tf_shape(shape: Sequence[Any]) -> list[int | None]:
    return [d if isinstance(d, int) else None for d in shape]


def _stablehlo_target() -> str:
    """The older of the installed TensorFlow's StableHLO version and JAX's own target."""
    from jax.extend.mlir.dialects import stablehlo as jax_stablehlo
    from tensorflow.compiler.mlir.stablehlo import stablehlo as tf_stablehlo

    own = jax_stablehlo.get_version_from_compatibility_requirement(
        jax_stablehlo.StablehloCompatibilityRequirement.WEEK_4
    )
    return jax_stablehlo.get_smaller_version(tf_stablehlo.get_current_version(), own)


def _polymorphic_call(
    tf, flat_forward, specs, platforms, stablehlo_version
) -> tuple[Callable, Any, str]:
    """``(tf_call, exported, target)``: ``tf_call(*tensors)`` runs the re-serialized module."""
    import jax.extend.mlir
    from tensorflow.compiler.tf2xla.python import xla as tfxla

    exported = jax.export.export(jax.jit(flat_forward), platforms=platforms)(*specs)
    if exported.ordered_effects or exported.unordered_effects:
        raise RuntimeError(f"the model has side effects {exported.ordered_effects}")
    supported = tfxla.call_module_maximum_supported_version()
    if exported.calling_convention_version > supported:
        raise RuntimeError(
            f"the module needs XlaCallModule version {exported.calling_convention_version}, "
            f"TensorFlow supports up to {supported}"
        )
    target = stablehlo_version or _stablehlo_target()
    module = jax.extend.mlir.serialize_portable_artifact(exported.mlir_module(), target)
    kept = set(exported.module_kept_var_idx)
    attrs = dict(
        version=exported.calling_convention_version,
        module=module,
        Tout=[_tf_dtype(tf, a.dtype) for a in exported.out_avals],
        Sout=[_tf_shape(a.shape) for a in exported.out_avals],
        platforms=[p.upper() for p in exported.platforms],
        disabled_checks=[str(c) for c in exported.disabled_safety_checks],
        use_shardy_partitioner=bool(jax.config.jax_use_shardy_partitioner),
    )

    def tf_call(*tensors):
        args = [
            tf.cast(t, _tf_dtype(tf, a.dtype))
            for i, (t, a) in enumerate(zip(tensors, exported.in_avals, strict=True))
            if i in kept
        ]
        return list(tfxla.call_module(args, **attrs))

    return tf_call, exported, target


def _static_call(flat_forward, specs, platforms) -> tuple[Callable, list[Any]]:
    """``(tf_call, out_avals)`` through ``jax2tf.convert`` with the example shapes."""
    from jax.experimental import jax2tf

    def flat_outputs(*values):
        return tuple(jax.tree.leaves(flat_forward(*values)))

    out_avals = jax.tree.leaves(jax.eval_shape(flat_outputs, *specs))
    converted = jax2tf.convert(
        flat_outputs, with_gradient=False, native_serialization_platforms=platforms
    )
    return lambda *tensors: list(converted(*tensors)), out_avals


def _error_summary(e: Exception) -> str:
    """The informative lines of a TensorFlow/XLA error (its first line is often generic)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "error:" in ln or "deserialize" in ln.lower()]
    text = " | ".join(dict.fromkeys(useful[:3])) or (lines[0] if lines else "")
    return text[:500]


def _check_tf_names(names: Sequence[str], what: str) -> None:
    bad = [n for n in names if not _TF_NAME.match(n)]
    if bad:
        raise ExportError(
            f"{what}: {bad!r} are not valid TensorFlow signature names "
            "(letters, digits, '_', '.', '-', '/'; not starting with '_', '-' or '/')"
        )


def _signature_function(tf, tf_call, names_in, names_out, in_specs):
    signature = [
        tf.TensorSpec(_tf_shape(s.shape), _tf_dtype(tf, s.dtype), name=n)
        for n, s in zip(names_in, in_specs, strict=True)
    ]

    def serve(*tensors):
        outputs = tf_call(*tensors)
        return {n: tf.identity(o, name=n) for n, o in zip(names_out, outputs, strict=True)}

    return tf.function(serve, input_signature=signature, autograph=False)


def export_saved_model(
    fn: Callable[..., Any],
    inputs: ExampleInputs,
    save_path: str | os.PathLike,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
    batch_polymorphic: bool = True,
    platforms: Sequence[str] | None = None,
    stablehlo_version: str | None = None,
) -> ExportedArtefact:
    """Exports ``fn(*args, **kwargs)`` to a TensorFlow SavedModel folder and its sidecar.

    Args:
      fn: the (stripped) forward, closing over its weights.
      inputs: example arguments; arrays become the signature's inputs, other
        values are static.
      save_path: the SavedModel folder; the sidecar is ``save_path + ".json"``.
      input_names, output_names: the serving signature's input and output
        names (defaults ``input_i`` / keyword names, ``output_i``); outputs
        come back as a dict keyed by ``output_names``, in the order of the
        forward's flattened outputs.
      metadata: extra JSON for the sidecar (the compression summary).
      batch_polymorphic: give the shared leading dimension of the inputs a
        symbolic size (``None`` in the signature). If TensorFlow cannot run
        that, the export warns and uses the example inputs' batch size.
      platforms: lowering platforms (default ``("cpu",)``, what
        ``tensorflow-cpu`` runs).
      stablehlo_version: the StableHLO version to write the module for, e.g.
        ``"1.13.7"`` for a TensorFlow Serving built on TensorFlow 2.21
        (default: the older of the installed TensorFlow's and JAX's own target).

    Returns:
      An `ExportedArtefact`; ``metadata["batch_polymorphic"]`` says whether
      every batch size works, ``metadata["static_batch_reason"]`` why not.

    Raises:
      ExportError: TensorFlow is not installed (``pip install 'nncf-jax[tf]'``),
        bad names, a forward that cannot be converted, or an unwritable path
        (no partial folder or file is left).

    Example:
      >>> ctrl.export_model("model_tf", save_format="saved_model",
      ...                   input_names=["image"], output_names=["logits"])
    """
    tf = _import_tensorflow()
    if not isinstance(save_path, (str, os.PathLike)) or not str(save_path):
        raise ExportError(f"save_path: expected a folder path, got {save_path!r}")
    arrays, rebuild = split_inputs(inputs)
    names_in = _names(input_names, [n for n, _ in arrays], "input_names")
    _check_tf_names(names_in, "input_names")
    platforms = tuple(platforms) if platforms is not None else ("cpu",)

    def flat_forward(*values):
        args, kwargs = rebuild(*values)
        return fn(*args, **kwargs)

    poly_specs, polymorphic = _specs(arrays, batch_polymorphic)
    reason = None
    if batch_polymorphic and not polymorphic:
        reason = "the inputs do not share a leading (batch) dimension"
    target = None
    serve = None
    examples = [np.asarray(a) for _, a in arrays]
    if polymorphic:
        try:
            tf_call, exported, target = _polymorphic_call(
                tf, flat_forward, poly_specs, platforms, stablehlo_version
            )
            out_avals = list(exported.out_avals)
            names_out = _names(
                output_names, [f"output_{i}" for i in range(len(out_avals))], "output_names"
            )
            _check_tf_names(names_out, "output_names")
            serve = _signature_function(tf, tf_call, names_in, names_out, exported.in_avals)
            serve(*examples)  # TensorFlow deserializes the module here: fail now, not at load
            in_avals = list(exported.in_avals)
        except ExportError:
            raise
        except Exception as e:  # TF and jax raise many types; the fallback handles them all
            reason = (
                f"TensorFlow {tf.__version__} cannot run the batch-polymorphic module "
                f"({type(e).__name__}: {_error_summary(e)})"
            )
            warnings.warn(
                f"saved_model export: {reason}; exporting with the static batch size "
                f"{examples[0].shape[0]} of the example inputs instead",
                UserWarning,
                stacklevel=2,
            )
            polymorphic = False
            serve = None
    if serve is None:
        static_specs, _ = _specs(arrays, False)
        try:
            tf_call, out_avals = _static_call(flat_forward, static_specs, platforms)
            names_out = _names(
                output_names, [f"output_{i}" for i in range(len(out_avals))], "output_names"
            )
            _check_tf_names(names_out, "output_names")
            serve = _signature_function(tf, tf_call, names_in, names_out, static_specs)
            serve(*examples)
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(
                f"the model cannot be exported to a SavedModel: {type(e).__name__}: {e}"
            ) from e
        in_avals = static_specs
    from nncf_jax import __version__

    sidecar = {
        "format": "saved_model",
        "loader": (
            f"tf.saved_model.load(path).signatures[{SIGNATURE_KEY!r}](**inputs) -> dict of outputs"
        ),
        "nncf_jax_version": __version__,
        "jax_version": jax.__version__,
        "tensorflow_version": tf.__version__,
        "stablehlo_version": target,
        "platforms": list(platforms),
        "signature": SIGNATURE_KEY,
        "batch_polymorphic": polymorphic,
        "static_batch_reason": None if polymorphic else reason,
        "vjp_order": 0,
        "inputs": [_describe(n, a) for n, a in zip(names_in, in_avals, strict=True)],
        "outputs": [_describe(n, a) for n, a in zip(names_out, out_avals, strict=True)],
        "compression": metadata or {},
    }
    path = Path(save_path)
    sidecar_path = path.with_name(path.name + ".json")

    def build(folder: Path) -> dict[Path, Path]:
        module = tf.Module()
        module.serve = serve
        tf.saved_model.save(
            module, str(folder), signatures={SIGNATURE_KEY: serve.get_concrete_function()}
        )
        return {folder: path}

    publish_atomically(
        build, (sidecar_path, json.dumps(sidecar, indent=2).encode()), f"the SavedModel {path}"
    )
    return ExportedArtefact(path, sidecar_path, sidecar)
