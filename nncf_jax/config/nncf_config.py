"""`NNCFConfig`: the NNCF JSON config, validated once when it is loaded.

Loading (`NNCFConfig.from_dict`, `NNCFConfig.from_json`) and the view of its
``compression`` entries (`AlgorithmSection`) live here; the schema checks and
their messages are in `nncf_jax.config.validation`, the filling in of defaults
in `nncf_jax.config.defaults`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from nncf_jax.config.defaults import algorithm_defaults, algorithm_schema, fill_defaults
from nncf_jax.config.schema import ACCURACY_AWARE_SCHEMA
from nncf_jax.config.validation import first_issue, format_path, shape_issue
from nncf_jax.errors import ConfigError

__all__ = ["AlgorithmSection", "NNCFConfig", "algorithm_defaults"]


@dataclasses.dataclass(frozen=True)
class AlgorithmSection:
    """One entry of ``compression``, as the user wrote it.

    Attributes:
      name: the algorithm, e.g. ``"quantization"``.
      index: position in the ``compression`` list; None when ``compression``
        is a single object.
      path: JSON path of the section, ``"compression"`` or ``"compression[1]"``.
      section: a copy of the raw section.
      target_device: the config's ``target_device`` (device-dependent defaults).
    """

    name: str
    index: int | None
    path: str
    section: dict[str, Any] = dataclasses.field(hash=False)
    target_device: str = "ANY"

    @property
    def resolved(self) -> dict[str, Any]:
        """A deep copy of `section` with every schema default filled in.

        Nested objects are created to hold their defaults (``params``,
        ``initializer.range``, ...), except blocks whose presence switches a
        feature on (``initializer.precision``, ``scope_overrides``,
        quantization ``params``, ``legr_params``). Aliases are renamed to
        their canonical keys (filter pruning ``weight_importance`` ->
        ``filter_importance``). Example: for ``{"algorithm":
        "magnitude_sparsity"}``, ``resolved["params"]["sparsity_target"]`` is
        0.5.

        Raises:
          UnknownAlgorithmError: `name` is not a registered algorithm.
        """
        schema = algorithm_schema(self.name, f"{self.path}.algorithm")
        return fill_defaults(schema, copy.deepcopy(self.section), self.target_device)


def _plain(value: Any, path: tuple) -> Any:
    """A deep copy made of dicts and lists only (mappings and tuples are converted).

    ``value`` has passed `shape_issue`: it contains no cycle, nests at most
    `MAX_DEPTH` levels and has string keys only.
    """
    if isinstance(value, Mapping):
        return {key: _plain(item, (*path, key)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, (*path, i)) for i, item in enumerate(value)]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    try:
        return copy.deepcopy(value)
    except Exception as e:  # any object may sit under a key nncf-jax does not read
        raise ConfigError(
            format_path(path), f"cannot copy a value of type {type(value).__name__}: {e}"
        ) from None


class _DuplicateKeyError(Exception):
    pass


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(key)
        out[key] = value
    return out


class NNCFConfig(dict):
    """The NNCF config: a dict, validated when made by `from_dict` or `from_json`.

    Keys at the root that nncf-jax does not know (``model``, ``epochs``,
    ``optimizer``, ...) are kept as they are; everything inside
    ``compression``, ``input_info`` and ``accuracy_aware_training`` is checked
    strictly. Mutating the dict afterwards skips validation: call `validate`.

    Example::

        config = NNCFConfig.from_dict({
            "input_info": {"sample_size": [1, 3, 32, 32]},
            "compression": {"algorithm": "magnitude_sparsity",
                            "params": {"sparsity_target": 0.7}},
        })
        (section,) = config.algorithm_sections()
        section.resolved["params"]["schedule"]  # "polynomial"
    """

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> NNCFConfig:
        """Validates a deep copy of ``config``.

        Args:
          config: the config as a mapping (tuples are accepted for lists).

        Returns:
          A new `NNCFConfig`; ``config`` itself is not kept or modified.

        Raises:
          ConfigError: the config is not a mapping, nests deeper than 64
            levels (or contains itself), holds more than 100000 values, has
            a key that is not a string, or a value is invalid (the first
            problem in document order, with its JSON path).
          UnknownAlgorithmError: a ``compression`` entry names no known algorithm.
          ScopeError: a ``{re}`` scope is not a valid regular expression.
        """
        if not isinstance(config, Mapping):
            raise first_issue(config).exception()
        shape = shape_issue(config)
        if shape is not None:
            raise shape.exception()
        out = cls(_plain(config, ()))
        out.validate()
        return out

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> NNCFConfig:
        """Reads and validates a JSON config file.

        Args:
          path: the file to read (UTF-8 JSON).

        Returns:
          The validated `NNCFConfig`.

        Raises:
          ConfigError: ``path`` is not a path, the file is missing or
            unreadable, is not valid JSON (the message gives line, column and
            character offset; also for nesting too deep to read and integers
            of over 4300 digits), repeats a key inside one object, or fails
            validation (the message names the file). ``NaN``, ``Infinity``
            and ``-Infinity`` are read, and refused wherever nncf-jax reads a
            number.
          UnknownAlgorithmError, ScopeError: as for `from_dict`.
        """
        try:
            name = os.fspath(path)
        except TypeError:
            raise ConfigError(
                "", f"expected a file path (str or os.PathLike), got {type(path).__name__}"
            ) from None
        try:
            with open(name, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise ConfigError("", f"config file {name!r} does not exist", file_level=True) from None
        except (OSError, UnicodeDecodeError, ValueError) as e:  # ValueError: a NUL in the path
            raise ConfigError(
                "", f"cannot read config file {name!r}: {e}", file_level=True
            ) from None
        try:
            data = json.loads(text, object_pairs_hook=_reject_duplicates)
        except json.JSONDecodeError as e:
            raise ConfigError(
                "",
                f"invalid JSON in {name!r}: {e.msg} at line {e.lineno}, column {e.colno} "
                f"(char {e.pos})",
            ) from None
        except _DuplicateKeyError as e:
            raise ConfigError(
                "", f"key {e.args[0]!r} appears twice in one object in {name!r}"
            ) from None
        except RecursionError:
            raise ConfigError(
                "", f"invalid JSON in {name!r}: nested too deeply to read", file_level=True
            ) from None
        except ValueError as e:  # e.g. an integer of more than 4300 digits
            raise ConfigError("", f"invalid JSON in {name!r}: {e}", file_level=True) from None
        issue = first_issue(data)
        if issue is not None:
            raise issue.exception(f" (in {name!r})")
        return cls(data)

    def validate(self) -> None:
        """Checks the config again (after it was modified).

        Raises:
          ConfigError, UnknownAlgorithmError, ScopeError: as for `from_dict`.
        """
        issue = first_issue(self)
        if issue is not None:
            raise issue.exception()

    def algorithm_sections(self) -> list[AlgorithmSection]:
        """The ``compression`` entries, in order.

        Returns:
          One `AlgorithmSection` per entry; ``[]`` when ``compression`` is
          absent or an empty list.

        Raises:
          ConfigError: the config was modified into an invalid one.
        """
        self.validate()
        compression = self.get("compression")
        device = self.get("target_device", "ANY")
        if compression is None:
            return []
        if isinstance(compression, dict):
            entries = [(None, "compression", compression)]
        else:
            entries = [(i, f"compression[{i}]", s) for i, s in enumerate(compression)]
        return [
            AlgorithmSection(s["algorithm"], i, path, copy.deepcopy(s), device)
            for i, path, s in entries
        ]

    def resolved_accuracy_aware_training(self) -> dict[str, Any] | None:
        """``accuracy_aware_training`` with the defaults of its mode filled in.

        Returns:
          None when the key is absent; otherwise a new dict whose ``params``
          hold only the keys that apply to the mode.
        """
        section = self.get("accuracy_aware_training")
        if section is None:
            return None
        out = fill_defaults(ACCURACY_AWARE_SCHEMA, copy.deepcopy(section), "ANY")
        allowed = ACCURACY_AWARE_SCHEMA["x-params-by-mode"][out["mode"]]
        out["params"] = {k: v for k, v in out["params"].items() if k in allowed}
        return out
