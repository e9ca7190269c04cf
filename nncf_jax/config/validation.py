"""Validation of the NNCF config: the JSON schema checks and their messages.

`first_issue` runs the JSON schemas of `nncf_jax.config.schema`, with the
``x-...`` validators defined here, and turns every problem into an `Issue`
whose `Issue.exception` is a `ConfigError` (or `UnknownAlgorithmError`,
`ScopeError`) that names the JSON path of the offending value, e.g.
``compression[1].params.sparsity_target: expected a number in [0, 1), got 1.2``.
When a config has several problems, the first one in document order is
reported, so the same config always gives the same message.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
import numbers
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators

from nncf_jax.config.schema import ALGORITHM_SCHEMAS, KNOWN_ALGORITHMS, ROOT_SCHEMA
from nncf_jax.core.paths import compile_scope_regex
from nncf_jax.errors import ConfigError, ScopeError, UnknownAlgorithmError

__all__ = [
    "INT32_MAX",
    "MAX_DEPTH",
    "MAX_VALUES",
    "Issue",
    "first_issue",
    "format_path",
    "shape_issue",
    "unknown_algorithm",
]

_REGEX_PREFIX = "{re}"
INT32_MAX = 2**31 - 1
MAX_DEPTH = 64
MAX_VALUES = 100_000
_MAX_INT_BITS = 13_000  # about 3900 decimal digits
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --- formatting -----------------------------------------------------------------


def _fmt(value: Any) -> str:
    """Renders a config value for a message, JSON-style and short."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return (
            repr(value) if len(value) <= 80 else repr(value[:60]) + f"... ({len(value)} characters)"
        )
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, numbers.Integral) and abs(value) >= 10**30:
        # repr() of an int of over 4300 digits raises; the digits say nothing anyway.
        digits = int(int(abs(value)).bit_length() * math.log10(2)) + 1
        return f"{'-' if value < 0 else ''}an integer of about {digits} digits"
    if isinstance(value, numbers.Number):
        return repr(value)
    if isinstance(value, Mapping):
        parts = (f"{_fmt(k)}: {_fmt(v)}" for k, v in value.items())
        opening, closing = "{", "}"
    elif isinstance(value, (list, tuple)):
        parts = (_fmt(v) for v in value)
        opening, closing = "[", "]"
    else:
        return f"a {type(value).__name__}"
    # Stop rendering once the text is too long to be shown whole.
    text = opening
    for i, part in enumerate(parts):
        text += (", " if i else "") + part
        if len(text) > 80:
            return text[:76] + " ..." + closing
    return text + closing


def _quote_all(values: Any) -> str:
    return ", ".join(repr(v) for v in values)


def format_path(parts: tuple) -> str:
    """``("compression", 1, "params")`` -> ``"compression[1].params"``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _closest(word: str, choices: Any) -> str | None:
    choices = list(choices)
    for choice in choices:
        if choice.lower() == word.lower():
            return choice
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return matches[0] if matches else None


def _did_you_mean(word: Any, choices: Any) -> str:
    match = _closest(word, choices) if isinstance(word, str) else None
    return f"; did you mean {match!r}?" if match else ""


def unknown_algorithm(name: str) -> str:
    known = sorted(KNOWN_ALGORITHMS)
    hint = _did_you_mean(name, known) or ";"
    return f"unknown algorithm {name!r}{hint} known algorithms: {_quote_all(known)}"


# JSON type -> (one, many), as messages say them.
_TYPE_WORDS = {
    "number": ("a number", "numbers"),
    "integer": ("an integer", "integers"),
    "string": ("a string", "strings"),
    "boolean": ("boolean", "booleans"),
    "object": ("an object", "objects"),
    "array": ("a list", "lists"),
    "null": ("null", "nulls"),
}


def _bounds(schema: Mapping[str, Any]) -> str:
    lo, lo_open = schema.get("exclusiveMinimum"), True
    if lo is None:
        lo, lo_open = schema.get("minimum"), False
    hi, hi_open = schema.get("exclusiveMaximum"), True
    if hi is None:
        hi, hi_open = schema.get("maximum"), False
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


def _describe(schema: Any) -> str:
    """What a schema accepts, in words: ``"a number in [0, 1)"``."""
    if not isinstance(schema, Mapping):
        return "a valid value"
    if "x-expected" in schema:
        return schema["x-expected"]
    if "enum" in schema:
        return "one of " + ", ".join(_fmt(v) for v in schema["enum"])
    types = schema.get("type")
    if types is None:
        return "a valid value"
    words = []
    for kind in [types] if isinstance(types, str) else types:
        if kind in ("number", "integer"):
            words.append(_TYPE_WORDS[kind][0] + _bounds(schema))
        elif kind == "array":
            base = "a non-empty list" if schema.get("minItems", 0) >= 1 else "a list"
            items = schema.get("items")
            simple = (
                isinstance(items, Mapping)
                and items.get("type") in _TYPE_WORDS
                and "enum" not in items
                and "x-expected" not in items
            )
            words.append(
                f"{base} of {_TYPE_WORDS[items['type']][1]}{_bounds(items)}" if simple else base
            )
        else:
            words.append(_TYPE_WORDS.get(kind, (kind,))[0])
    return " or ".join(words)


def _hint(schema: Any, value: Any) -> str:
    """A few words after "got ..." that say why the value is refused."""
    if not isinstance(schema, Mapping):
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return " (NaN and infinity are not allowed)"
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and not _finite(value):
        return " (too large)"
    if schema.get("x-level") and _is_number(None, value) and value >= 1:
        return " (a compression level must be below 1: 1 or more would remove everything)"
    if "enum" in schema:
        return _did_you_mean(value, [v for v in schema["enum"] if isinstance(v, str)])
    return ""


# --- the validator --------------------------------------------------------------


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float: no valid setting either
        return False


def _is_number(checker: Any, value: Any) -> bool:
    # Booleans are not numbers, and NaN / infinity are no valid setting anywhere.
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and _finite(value)


def _is_integer(checker: Any, value: Any) -> bool:
    # 8.0 is refused where an integer is expected: consumers use it as a count.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _error(message: str, path: tuple = (), cls: type[ConfigError] = ConfigError) -> ValidationError:
    error = ValidationError(message, path=path)
    error.nncf_class = cls  # read back by `_issues`
    return error


def _later(instance: Mapping[str, Any], keys: list[str]) -> str:
    """The key among ``keys`` written last in ``instance``."""
    return max(keys, key=list(instance).index)


def _x_object_or_list(validator, spec, instance, schema):
    if isinstance(instance, dict):
        yield from validator.descend(instance, spec["single"])
    elif isinstance(instance, list):
        for i, item in enumerate(instance):
            yield from validator.descend(item, spec["item"], path=i)


def _x_algorithm(validator, _, instance, schema):
    if not isinstance(instance, dict):
        return
    known = _quote_all(sorted(KNOWN_ALGORITHMS))
    if "algorithm" not in instance:
        yield _error(f"missing required key 'algorithm' (one of {known})", ("algorithm",))
        return
    name = instance["algorithm"]
    if not isinstance(name, str):
        yield _error(
            f"expected an algorithm name (one of {known}), got {_fmt(name)}", ("algorithm",)
        )
    elif name not in ALGORITHM_SCHEMAS:
        yield _error(unknown_algorithm(name), ("algorithm",), UnknownAlgorithmError)
    else:
        yield from validator.descend(instance, ALGORITHM_SCHEMAS[name])


def _x_unique_algorithms(validator, _, instance, schema):
    if not isinstance(instance, list):
        return
    seen: dict[str, int] = {}
    for i, item in enumerate(instance):
        name = item.get("algorithm") if isinstance(item, dict) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            yield _error(
                f"algorithm {name!r} appears twice (first at index {seen[name]}); "
                "list each algorithm once",
                (i, "algorithm"),
            )
        seen.setdefault(name, i)


def _regex_problem(text: Any) -> str | None:
    if not isinstance(text, str) or not text.startswith(_REGEX_PREFIX):
        return None
    try:
        compile_scope_regex(text)
    except ValueError as e:
        return str(e)
    return None


def _x_scope(validator, _, instance, schema):
    """A scope string, or (on an object) every key, must be a valid ``{re}`` pattern."""
    for key in instance if isinstance(instance, dict) else [instance]:
        problem = _regex_problem(key)
        if problem:
            yield _error(problem, (key,) if isinstance(instance, dict) else (), ScopeError)


def _conflicts(instance, pairs, template: str):
    if isinstance(instance, dict):
        for a, b in pairs:
            if a in instance and b in instance:
                yield _error(template.format(a=a, b=b), (_later(instance, [a, b]),))


def _x_not_both(validator, pairs, instance, schema):
    yield from _conflicts(instance, pairs, "'{a}' and '{b}' cannot both be set; keep one of them")


def _x_aliases(validator, aliases, instance, schema):
    message = "'{a}' is another name for '{b}'; set only one of them"
    yield from _conflicts(instance, aliases.items(), message)


def _x_exactly_one(validator, keys, instance, schema):
    if not isinstance(instance, dict):
        return
    present = [k for k in keys if k in instance]
    if not present:
        yield _error(f"missing required key: set one of {_quote_all(keys)}")
    elif len(present) > 1:
        message = f"{' and '.join(map(repr, present))} cannot both be set; keep one of them"
        yield _error(message, (_later(instance, present),))


def _x_ordered(validator, pairs, instance, schema):
    if isinstance(instance, dict):
        for a, b in pairs:
            lo, hi = instance.get(a), instance.get(b)
            if _is_number(None, lo) and _is_number(None, hi) and not lo < hi:
                yield _error(f"expected {b} > {a} ({_fmt(lo)}), got {_fmt(hi)}", (b,))


def _x_multistep(validator, _, instance, schema):
    if not isinstance(instance, dict):
        return
    props = schema["properties"]
    given = [k for k in ("multistep_steps", "multistep_sparsity_levels") if k in instance]
    if instance.get("schedule", props["schedule"]["default"]) != "multistep" and len(given) < 2:
        return  # the keys do nothing for other schedules, unless both are given
    steps = instance.get("multistep_steps", props["multistep_steps"]["default"])
    levels = instance.get(
        "multistep_sparsity_levels", props["multistep_sparsity_levels"]["default"]
    )
    if not all(
        isinstance(v, list) and all(_is_number(None, x) for x in v) for v in (steps, levels)
    ):
        return  # wrong types are reported by the schema itself
    if any(b <= a for a, b in itertools.pairwise(steps)):
        yield _error(
            f"expected strictly increasing epochs, got {_fmt(steps)}", ("multistep_steps",)
        )
    if len(levels) != len(steps) + 1:
        where = (
            "multistep_sparsity_levels"
            if "multistep_sparsity_levels" in instance
            else "multistep_steps"
        )
        yield _error(
            f"expected len(multistep_sparsity_levels) == len(multistep_steps) + 1 = {len(steps) + 1}, "
            f"got {len(levels)} levels for {len(steps)} steps",
            (where,),
        )


def _x_int32(validator, _, instance, schema):
    if _is_number(None, instance) and not -INT32_MAX - 1 <= instance <= INT32_MAX:
        yield _error(
            f"expected a value <= {INT32_MAX} (steps and epochs are counted in int32), "
            f"got {_fmt(instance)}"
        )


def _x_params_by_mode(validator, by_mode, instance, schema):
    if not isinstance(instance, dict):
        return
    mode, params = instance.get("mode"), instance.get("params")
    if not isinstance(mode, str) or mode not in by_mode or not isinstance(params, dict):
        return
    for key in params:
        owners = [m for m, keys in by_mode.items() if key in keys]
        if owners and key not in by_mode[mode]:
            yield _error(
                f"key {key!r} applies only to mode {owners[0]!r}; with mode {mode!r} "
                f"the valid keys are: {_quote_all(by_mode[mode])}",
                ("params", key),
            )


_Validator = validators.extend(
    Draft202012Validator,
    validators={
        "x-object-or-list": _x_object_or_list,
        "x-algorithm": _x_algorithm,
        "x-unique-algorithms": _x_unique_algorithms,
        "x-scope": _x_scope,
        "x-not-both": _x_not_both,
        "x-aliases": _x_aliases,
        "x-exactly-one": _x_exactly_one,
        "x-ordered": _x_ordered,
        "x-multistep": _x_multistep,
        "x-params-by-mode": _x_params_by_mode,
        "x-int32": _x_int32,
    },
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"number": _is_number, "integer": _is_integer}
    ),
)
_ROOT_VALIDATOR = _Validator(ROOT_SCHEMA)


# --- issues: schema errors as nncf-jax messages ---------------------------------


@dataclasses.dataclass(frozen=True)
class Issue:
    """One problem of a config: where it is, what to say, and which error to raise."""

    order: tuple[int, ...]
    path: tuple
    message: str
    cls: type[ConfigError] = ConfigError

    def exception(self, suffix: str = "") -> ConfigError:
        return self.cls(format_path(self.path), self.message + suffix)


def _document_order(root: Any, path: tuple) -> tuple[int, ...]:
    """Position of ``path`` in the document; a missing key sorts after its siblings."""
    order, node = [], root
    for part in path:
        if isinstance(node, dict) and part in node:
            order.append(list(node).index(part))
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            order.append(part)
            node = node[part]
        else:
            order.append(sys.maxsize)
            node = None
    return tuple(order)


def _issues(error: ValidationError, root: Any) -> Iterator[Issue]:
    """Turns one jsonschema error into issues with nncf-jax messages."""
    path = tuple(error.absolute_path)
    schema, instance = error.schema, error.instance

    def issue(at: tuple, message: str, cls: type[ConfigError] = ConfigError) -> Issue:
        return Issue(_document_order(root, at), at, message, cls)

    if error.validator == "additionalProperties":
        valid = sorted(schema.get("properties", {}))
        # Only the first unknown key can be the first issue: its siblings come later.
        key = next((k for k in instance if k not in valid), None)
        if key is None:
            return
        suggestion = _did_you_mean(key, valid) or ";"
        message = f"unknown key {_fmt(key)}{suggestion} valid keys: {_quote_all(valid)}"
        yield issue((*path, key), message)
    elif error.validator == "required":
        for key in error.validator_value:
            if isinstance(instance, dict) and key not in instance:
                message = f"missing required key {key!r}"
                if key in schema.get("properties", {}):
                    message += f" ({_describe(schema['properties'][key])})"
                if "x-why" in schema:
                    message += f": {schema['x-why']}"
                yield issue((*path, key), message)
    elif str(error.validator).startswith("x-"):
        yield issue(path, error.message, getattr(error, "nncf_class", ConfigError))
    else:
        message = f"expected {_describe(schema)}, got {_fmt(instance)}{_hint(schema, instance)}"
        yield issue(path, message)


_KNOWN_ROOT_KEYS = frozenset(ROOT_SCHEMA["properties"])


def _json_like(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, numbers.Real))


def shape_issue(config: Any) -> Issue | None:
    """A config nested deeper than `MAX_DEPTH`, with over `MAX_VALUES` values, a key
    that is not a string, an integer of thousands of digits, or a value that is
    no JSON value (a numpy array, a set, an object) under a key nncf-jax reads;
    None otherwise.

    Runs before anything that recurses into the config (copying, the schema
    checks, messages), without recursing itself, so a config that contains
    itself or nests thousands of levels gives a `ConfigError`, not a
    ``RecursionError``. Mappings and lists/tuples are containers.
    """
    stack: list[tuple[Any, tuple]] = [(config, ())]
    count = 0
    while stack:
        value, path = stack.pop()
        count += 1
        if count > MAX_VALUES:
            return Issue((), (), f"the config holds more than {MAX_VALUES} values")
        if isinstance(value, Mapping):
            children = list(value.items())
        elif isinstance(value, (list, tuple)):
            children = list(enumerate(value))
        else:
            if path and path[0] in _KNOWN_ROOT_KEYS and not _json_like(value):
                # Under the keys nncf-jax reads, the schema checks compare values
                # (enum, const): a numpy array or an arbitrary object breaks them.
                return Issue(
                    (),
                    path,
                    "expected a JSON value (object, list, string, number, boolean or null), "
                    f"got {_fmt(value)}",
                )
            if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
                # repr() of it raises past 4300 digits, in our messages and in
                # jsonschema's; json.loads refuses such numbers too.
                return Issue(
                    (), path, f"got {_fmt(value)}: too large to be any setting (over 3900 digits)"
                )
            continue
        if children and len(path) >= MAX_DEPTH:
            return Issue(
                (),
                path[:4],
                f"the value here nests more than {MAX_DEPTH} levels deep "
                "(does a value contain itself?)",
            )
        for key, child in reversed(children):
            if isinstance(value, Mapping) and not isinstance(key, str):
                return Issue((), path, f"expected string keys, got {_fmt(key)}")
            stack.append((child, (*path, key)))
    return None


def first_issue(config: Any) -> Issue | None:
    """The first problem of ``config`` in document order; None when it is valid."""
    if not isinstance(config, dict):
        kind = "a list" if isinstance(config, (list, tuple)) else _fmt(config)
        return Issue((), (), f"expected the config to be an object of keys, got {kind}")
    shape = shape_issue(config)
    if shape is not None:
        return shape
    issues = [i for error in _ROOT_VALIDATOR.iter_errors(config) for i in _issues(error, config)]
    # min() keeps the first of equals, so ties fall back to the validator's own order.
    return min(issues, key=lambda i: i.order, default=None)
