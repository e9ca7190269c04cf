"""The state the loop carries through the callbacks, and the checks on what they return."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax

from nncf_jax.errors import UsageError

__all__ = ["State"]

State = dict[str, Any]


def finite(value: Any, what: str) -> float:
    """``value`` as a float; a `UsageError` naming ``what`` unless a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{what}: expected a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise UsageError(f"{what}: expected a finite number, got {value!r}")
    return number


def checked_state(state: Any, what: str) -> State:
    """A dict copy of ``state``; a `UsageError` naming ``what`` unless it is a state."""
    if not isinstance(state, Mapping) or "variables" not in state or "cstate" not in state:
        got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
        raise UsageError(
            f"{what}: expected a dict with keys 'variables' and 'cstate' (plus 'opt_state' or "
            f"anything else your train step carries), got {got}"
        )
    return dict(state)


def copy_state(state: State) -> State:
    """A copy whose arrays survive a train step that donates its input buffers."""
    return jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, state)
