"""StableHLO export through ``jax.export``, with a JSON sidecar.

The artefact is ``jax.export.Exported.serialize()`` bytes: load it with
plain JAX (``jax.export.deserialize(open(path, "rb").read()).call(*inputs)``),
no nncf_jax needed. The weights are constants inside the module, so the
file is the whole model. With ``batch_polymorphic`` the leading dimension
shared by all inputs is symbolic (``b``): one artefact serves every batch
size. ``<path>.json`` lists input and output names, shapes (``"b"`` for the
symbolic batch) and dtypes, the compression summary and the nncf-jax and
jax versions.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from nncf_jax.errors import ExportError
from nncf_jax.export.model_args import ExampleInputs

__all__ = ["ExportedArtefact", "export_stablehlo", "write_atomically"]


@dataclass(frozen=True)
class ExportedArtefact:
    """What an export wrote.

    Attributes:
      path: the artefact (file or directory).
      sidecar: the JSON description next to it.
      metadata: the sidecar's content.
    """

    path: Path
    sidecar: Path
    metadata: dict[str, Any]


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def split_inputs(inputs: ExampleInputs) -> tuple[list[tuple[str, Any]], Callable[..., tuple]]:
    """Array inputs (with default names) and a function rebuilding ``(args, kwargs)`` from them."""
    arrays: list[tuple[str, Any]] = []
    slots: list[tuple[str, Any]] = []  # ("arg", i) / ("kw", key)
    for i, a in enumerate(inputs.args):
        if _is_array(a):
            arrays.append((f"input_{i}", a))
            slots.append(("arg", i))
    for key in sorted(inputs.kwargs):
        if _is_array(inputs.kwargs[key]):
            arrays.append((key, inputs.kwargs[key]))
            slots.append(("kw", key))

    def rebuild(*values):
        args = list(inputs.args)
        kwargs = dict(inputs.kwargs)
        for (kind, where), v in zip(slots, values, strict=True):
            if kind == "arg":
                args[where] = v
            else:
                kwargs[where] = v
        return tuple(args), kwargs

    return arrays, rebuild


def _names(given: Sequence[str] | None, default: list[str], what: str) -> list[str]:
    if given is None:
        return default
    given = list(given)
    if len(given) != len(default) or not all(isinstance(n, str) and n for n in given):
        raise ExportError(
            f"{what}: expected {len(default)} non-empty names (one per model {what[:-6]}), "
            f"got {given!r}"
        )
    if len(set(given)) != len(given):
        raise ExportError(f"{what}: names must be unique, got {given!r}")
    return given


def _specs(arrays: list[tuple[str, Any]], batch_polymorphic: bool):
    shapes = [tuple(np.shape(a)) for _, a in arrays]
    polymorphic = (
        batch_polymorphic
        and bool(shapes)
        and all(len(s) >= 1 for s in shapes)
        and len({s[0] for s in shapes}) == 1
    )
    if not polymorphic:
        return [
            jax.ShapeDtypeStruct(s, np.asarray(a).dtype)
            for s, (_, a) in zip(shapes, arrays, strict=True)
        ], False
    scope = jax.export.SymbolicScope()
    specs = []
    for s, (_, a) in zip(shapes, arrays, strict=True):
        text = ", ".join(["b", *map(str, s[1:])])
        specs.append(
            jax.ShapeDtypeStruct(jax.export.symbolic_shape(text, scope=scope), np.asarray(a).dtype)
        )
    return specs, True


def _describe(name: str, aval: Any) -> dict[str, Any]:
    shape = [d if isinstance(d, int) else str(d) for d in aval.shape]
    return {"name": name, "shape": shape, "dtype": str(aval.dtype)}


def write_atomically(files: dict[Path, bytes]) -> None:
    """Writes all files or none: temporaries in the target folder, then renames.

    Raises:
      ExportError: a folder cannot be created or written; nothing is left behind.
    """
    temporaries: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temporaries.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        for tmp, path in temporaries:
            os.replace(tmp, path)
    except OSError as e:
        for tmp, _ in temporaries:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise ExportError(f"cannot write {', '.join(str(p) for p in files)}: {e}") from None


def export_stablehlo(
    fn: Callable[..., Any],
    inputs: ExampleInputs,
    save_path: str | os.PathLike,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    batch_polymorphic: bool = True,
    vjp_order: int = 0,
    platforms: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> ExportedArtefact:
    """Exports ``fn(*args, **kwargs)`` to a serialized StableHLO file and its sidecar.

    Args:
      fn: the (stripped) forward, closing over its weights.
      inputs: example arguments; arrays become inputs, other values are static.
      save_path: the artefact's file path; the sidecar is ``save_path + ".json"``.
      input_names, output_names: names for the sidecar (defaults ``input_i``,
        keyword names, ``output_i``).
      batch_polymorphic: make the shared leading dimension symbolic.
      vjp_order: how many orders of gradients to serialize (0: inference only).
      platforms: lowering platforms, e.g. ``("cpu", "cuda")``; default: this backend.
      metadata: extra JSON for the sidecar (the compression summary).

    Returns:
      An `ExportedArtefact`.

    Raises:
      ExportError: bad names, a forward that cannot be exported, or an
        unwritable path (no partial files are left).
    """
    if isinstance(vjp_order, bool) or not isinstance(vjp_order, int) or vjp_order < 0:
        raise ExportError(f"vjp_order: expected a non-negative int, got {vjp_order!r}")
    arrays, rebuild = split_inputs(inputs)
    names_in = _names(input_names, [n for n, _ in arrays], "input_names")
    specs, polymorphic = _specs(arrays, batch_polymorphic)

    def flat_forward(*values):
        args, kwargs = rebuild(*values)
        return fn(*args, **kwargs)

    try:
        exported = jax.export.export(jax.jit(flat_forward), platforms=platforms)(*specs)
        data = bytes(exported.serialize(vjp_order=vjp_order))
    except ExportError:
        raise
    except Exception as e:  # jax raises many types here; the user needs one message
        raise ExportError(
            f"the model cannot be exported to StableHLO: {type(e).__name__}: {e}"
        ) from e
    out_avals = list(exported.out_avals)
    names_out = _names(output_names, [f"output_{i}" for i in range(len(out_avals))], "output_names")
    from nncf_jax import __version__

    sidecar = {
        "format": "stablehlo",
        "loader": "jax.export.deserialize(open(path, 'rb').read()).call(*inputs)",
        "nncf_jax_version": __version__,
        "jax_version": jax.__version__,
        "platforms": list(exported.platforms),
        "batch_polymorphic": polymorphic,
        "vjp_order": vjp_order,
        "inputs": [_describe(n, a) for n, a in zip(names_in, exported.in_avals, strict=True)],
        "outputs": [_describe(n, a) for n, a in zip(names_out, out_avals, strict=True)],
        "compression": metadata or {},
    }
    path = Path(save_path)
    sidecar_path = path.with_name(path.name + ".json")
    write_atomically({path: data, sidecar_path: json.dumps(sidecar, indent=2).encode()})
    return ExportedArtefact(path, sidecar_path, sidecar)
