"""Example inputs for export: NNCF's ``input_info`` plus the seed's ``model_args``.

``model_args`` follows NNCF's ``export_model`` contract: a tuple of extra
positional arguments followed by one dict of keyword arguments, e.g.
``(a, b, {"x": None, "y": y})``, ``(a, b, {})`` or ``({"x": None},)``. The
inputs described by ``input_info`` come first (positional, or by their
``keyword``); a keyword argument given as ``None`` takes the ``input_info``
entry with that keyword. Array arguments become inputs of the exported
function; any other value is a static argument baked into the artefact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nncf_jax.errors import ExportError

__all__ = ["ExampleInputs", "example_inputs"]

_FILLERS = {"zeros": np.zeros, "ones": np.ones}


@dataclass(frozen=True)
class ExampleInputs:
    """Arguments of the forward to export.

    Attributes:
      args: positional arguments (arrays or static values).
      kwargs: keyword arguments (arrays or static values).
    """

    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def _dummy(info: Mapping[str, Any], where: str) -> np.ndarray:
    shape = info.get("sample_size")
    if not isinstance(shape, Sequence) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise ExportError(f"{where}.sample_size: expected a list of positive ints, got {shape!r}")
    dtype = np.int32 if str(info.get("type", "float")).startswith(("int", "long")) else np.float32
    filler = _FILLERS.get(info.get("filler", "zeros"), np.zeros)
    return filler(tuple(shape), dtype)


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def example_inputs(input_info: Any, model_args: tuple | None) -> ExampleInputs:
    """Combines ``input_info`` dummies and ``model_args`` into call arguments.

    Args:
      input_info: the config's ``input_info`` (a dict or a list of dicts), or None.
      model_args: None, or a tuple ending with a dict of keyword arguments.

    Raises:
      ExportError: ``model_args`` is not a tuple ending with a dict, a
        ``None`` keyword has no ``input_info`` entry, or nothing at all
        describes the inputs.
    """
    infos = (
        []
        if input_info is None
        else (list(input_info) if isinstance(input_info, list) else [input_info])
    )
    positional: list[Any] = []
    by_keyword: dict[str, np.ndarray] = {}
    for i, info in enumerate(infos):
        where = f"input_info[{i}]" if isinstance(input_info, list) else "input_info"
        if not isinstance(info, Mapping):
            raise ExportError(f"{where}: expected an object with sample_size, got {info!r}")
        dummy = _dummy(info, where)
        if info.get("keyword"):
            by_keyword[str(info["keyword"])] = dummy
        else:
            positional.append(dummy)
    kwargs: dict[str, Any] = dict(by_keyword)
    if model_args is not None:
        if (
            not isinstance(model_args, tuple)
            or not model_args
            or not isinstance(model_args[-1], dict)
        ):
            raise ExportError(
                "model_args must be a tuple of positional arguments followed by one dict of "
                "keyword arguments, e.g. (a, b, {'x': None}), (a, {}) or ({'x': None},); "
                f"got {type(model_args).__name__} {model_args!r:.80}"
            )
        positional.extend(model_args[:-1])
        for key, value in model_args[-1].items():
            if value is None:
                if key not in by_keyword:
                    raise ExportError(
                        f"model_args keyword {key!r} is None but input_info has no entry with "
                        f"keyword {key!r} (keywords there: {sorted(by_keyword) or 'none'})"
                    )
                continue
            kwargs[key] = value
    if not positional and not any(_is_array(v) for v in kwargs.values()):
        raise ExportError(
            "no model inputs: give input_info in the config (e.g. {'sample_size': [1, 8, 8, 1]}) "
            "or pass model_args"
        )
    return ExampleInputs(tuple(positional), kwargs)
