"""The exceptions nncf-jax raises for user mistakes.

Every error a user can cause (a bad config value, a scope that matches
nothing, a compression state from another model, a broken checkpoint) is one
of these classes. Messages name the offending JSON path, scope or parameter
path and say what would be valid. All classes derive from `NNCFJaxError`, so
``except nncf_jax.errors.NNCFJaxError`` catches every one of them.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "ExportError",
    "NNCFJaxError",
    "NotAvailableError",
    "ScopeError",
    "StateMismatchError",
    "UnknownAlgorithmError",
    "UsageError",
]


class NNCFJaxError(Exception):
    """Base class of every error nncf-jax raises on purpose."""


class ConfigError(NNCFJaxError, ValueError):
    """A config value is missing, of the wrong type or out of range.

    Attributes:
      path: JSON path of the offending value, e.g.
        ``"compression[1].params.sparsity_target"`` (``""`` for the root, and
        for errors of the file itself, which print without a path).
    """

    def __init__(self, path: str, message: str, *, file_level: bool = False):
        self.path = path
        if file_level:
            # The file itself is the problem (missing, unreadable, not JSON):
            # no JSON path to name.
            super().__init__(message)
            return
        where = path if path else "<config root>"
        super().__init__(f"{where}: {message}")


class UnknownAlgorithmError(ConfigError):
    """`compression[i].algorithm` names no registered algorithm."""


class ScopeError(ConfigError):
    """An `ignored_scopes` / `target_scopes` pattern matched no name, or is not a valid pattern."""


class StateMismatchError(NNCFJaxError, ValueError):
    """A compression state (dict or pytree) does not fit this model and config."""


class CheckpointError(NNCFJaxError):
    """A checkpoint cannot be written or read back."""


class ExportError(NNCFJaxError):
    """A compressed model cannot be exported as asked."""


class NotAvailableError(NNCFJaxError, NotImplementedError):
    """The feature exists in the API but is not built yet in this version."""


class UsageError(NNCFJaxError, ValueError):
    """An API was called the wrong way, or asked for something the algorithm has no
    meaning for (e.g. setting the compression rate of const sparsity)."""
