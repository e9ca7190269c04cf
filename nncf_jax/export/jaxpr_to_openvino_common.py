"""What the jaxpr → OpenVINO rules share: the translator's two failures and small helpers."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["INT64_MAX", "SymbolicShape", "Unsupported", "dtype_of", "is_int"]

INT64_MAX = np.iinfo(np.int64).max


class Unsupported(Exception):
    """The jaxpr uses a primitive (or parameter) the translator does not handle."""


class SymbolicShape(Exception):
    """A size depends on the symbolic batch in a way the translator cannot express."""


def is_int(d: Any) -> bool:
    return isinstance(d, (int, np.integer))


def dtype_of(eqn: Any, i: int = 0, out: bool = False) -> np.dtype:
    v = eqn.outvars[i] if out else eqn.invars[i]
    return np.dtype(v.aval.dtype)
