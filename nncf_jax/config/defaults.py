"""Defaults resolution: a config section with its schema's defaults filled in.

The defaults sit in the schemas of `nncf_jax.config.schema`, under
``"default"`` and the annotations ``x-default-unless``, ``x-default-by``,
``x-default-by-target-device``, ``x-optional-block`` and ``x-aliases``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from nncf_jax.config.schema import ALGORITHM_SCHEMAS
from nncf_jax.config.validation import unknown_algorithm
from nncf_jax.errors import UnknownAlgorithmError

__all__ = ["algorithm_defaults", "algorithm_schema", "fill_defaults"]

_MISSING = object()


def _default(schema: Mapping[str, Any], siblings: Mapping[str, Any], target_device: str) -> Any:
    if schema.get("x-default-unless") in siblings:
        return _MISSING
    if "x-default-by" in schema:
        rule = schema["x-default-by"]
        chooser = siblings.get(rule["key"])
        return rule["values"].get(chooser, _MISSING) if isinstance(chooser, str) else _MISSING
    if "x-default-by-target-device" in schema:
        by_device = schema["x-default-by-target-device"]
        return by_device.get(target_device, by_device["*"])
    return schema.get("default", _MISSING)


def _creatable(schema: Mapping[str, Any]) -> bool:
    """Whether an absent object is created to hold its defaults."""
    if schema.get("x-optional-block"):
        return False
    return "x-object-or-list" in schema or (
        schema.get("type") == "object" and "properties" in schema
    )


def fill_defaults(schema: Any, value: Any, target_device: str) -> Any:
    """``value`` (not modified) with the schema's defaults filled in, recursively."""
    if not isinstance(schema, Mapping):
        return value
    if "x-object-or-list" in schema:
        spec = schema["x-object-or-list"]
        if isinstance(value, list):
            return [fill_defaults(spec["item"], v, target_device) for v in value]
        return fill_defaults(spec["single"], value, target_device)
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [fill_defaults(schema["items"], v, target_device) for v in value]
    props = schema.get("properties")
    if not isinstance(value, dict) or props is None:
        return value
    aliases = schema.get("x-aliases", {})
    out = {aliases.get(k, k): v for k, v in value.items()}
    for key, sub in props.items():
        if key in aliases:
            continue
        if key in out:
            out[key] = fill_defaults(sub, out[key], target_device)
            continue
        default = _default(sub, out, target_device)
        if default is not _MISSING:
            out[key] = copy.deepcopy(default)
        elif _creatable(sub):
            created = fill_defaults(sub, {}, target_device)
            if created:
                out[key] = created
    return out


def algorithm_schema(name: str, path: str) -> Mapping[str, Any]:
    if name not in ALGORITHM_SCHEMAS:
        raise UnknownAlgorithmError(path, unknown_algorithm(name))
    return ALGORITHM_SCHEMAS[name]


def algorithm_defaults(name: str, target_device: str = "ANY") -> dict[str, Any]:
    """The nested defaults of one algorithm's config section.

    Args:
      name: a registered algorithm name, e.g. ``"magnitude_sparsity"``.
      target_device: the config's ``target_device``; only ``overflow_fix``
        of quantization depends on it.

    Returns:
      A new dict holding every key that has a default, e.g. for
      ``magnitude_sparsity``: ``{"sparsity_init": 0.0, "params": {"schedule":
      "polynomial", "sparsity_target": 0.5, ...}, "initializer": {...}}``.

    Raises:
      UnknownAlgorithmError: ``name`` is not one of `KNOWN_ALGORITHMS`.
    """
    return fill_defaults(algorithm_schema(name, ""), {}, target_device)
