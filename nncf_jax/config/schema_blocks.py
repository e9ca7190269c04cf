"""Building blocks of the NNCF config schemas, shared by the ``schema_*`` modules.

Small constructors for JSON schema nodes (``_number``, ``_enum``, ``_level``
for a compression level in [0, 1), ``_obj`` for a closed object, ...) and
the pieces that several algorithms share: the scoping keys, the
``compression_lr_multiplier`` and the batch-norm adaptation initializer.
"""

from __future__ import annotations

import copy
from typing import Any


def _number(**kw: Any) -> dict[str, Any]:
    return {"type": "number", **kw}


def _integer(**kw: Any) -> dict[str, Any]:
    # Counts, steps and epochs end up in int32 arrays (`x-int32`).
    return {"type": "integer", "x-int32": True, **kw}


def _epoch(**kw: Any) -> dict[str, Any]:
    """An epoch number, possibly fractional; compared with int32 counters."""
    return {"type": "number", "minimum": 0, "x-int32": True, **kw}


def _boolean(default: bool | None = None) -> dict[str, Any]:
    return {"type": "boolean"} if default is None else {"type": "boolean", "default": default}


def _string(**kw: Any) -> dict[str, Any]:
    return {"type": "string", **kw}


def _enum(values: list[str], default: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "string", "enum": list(values)}
    if default is not None:
        out["default"] = default
    return out


def _level(default: float | None = None) -> dict[str, Any]:
    """A compression level: a fraction in [0, 1)."""
    out = _number(minimum=0, exclusiveMaximum=1, **{"x-level": True})
    if default is not None:
        out["default"] = default
    return out


def _obj(properties: dict[str, Any], required: tuple[str, ...] = (), **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        out["required"] = list(required)
    out.update(kw)
    return out


def _object_or_list(single: dict, item: dict, expected: str, **kw: Any) -> dict[str, Any]:
    return {
        "type": ["object", "array"],
        "x-object-or-list": {"single": single, "item": item},
        "x-expected": expected,
        **kw,
    }


def _without_defaults(schema: Any) -> Any:
    """A deep copy of ``schema`` with every default removed."""
    if isinstance(schema, dict):
        return {
            k: _without_defaults(v)
            for k, v in schema.items()
            if k not in ("default", "x-default-by", "x-default-unless")
        }
    if isinstance(schema, list):
        return [_without_defaults(v) for v in schema]
    return copy.deepcopy(schema)


SCOPE = _string(**{"x-scope": True})
SCOPES = {
    "type": ["string", "array"],
    "items": SCOPE,
    "x-scope": True,
    "x-expected": "a scope string or a list of scope strings",
}
SCOPING = {"ignored_scopes": SCOPES, "target_scopes": SCOPES, "validate_scopes": _boolean()}
LR_MULTIPLIER = {"compression_lr_multiplier": _number(minimum=0)}
ALGORITHM_KEY = {"algorithm": _string()}

BATCHNORM_ADAPTATION = _obj({"num_bn_adaptation_samples": _integer(minimum=0, default=2000)})
GENERIC_INITIALIZER = _obj({"batchnorm_adaptation": BATCHNORM_ADAPTATION})
