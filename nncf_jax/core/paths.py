r"""Parameter path names and NNCF scope matching.

A parameter's name is its path in the variables tree joined with ``/``, e.g.
``Conv_0/kernel`` or ``ResBlock_1/Dense_0/bias``; a module's name is the same
path without the leaf (``ResBlock_1/Dense_0``). Scopes follow NNCF: a plain
string matches a name exactly, a string starting with ``{re}`` is a regular
expression searched in the name (``re.search``). A parameter is in a scope
when the scope matches either its full path or its module path.

Regular expressions are bounded, so that no pattern can hang a run:

- A pattern longer than `MAX_REGEX_CHARS` characters, or one that `re` cannot
  compile (syntax, a repeat count over 4294967295, nesting too deep for the
  parser), is a `ScopeError` naming the config key.
- Python's `re` backtracks and has no timeout, so before a pattern is
  searched, `regex_search_cost` (`nncf_jax.core.regex_cost`, which explains
  the bound, what it refuses and why it is not a timeout) bounds the
  backtracking steps it can take: first for any name as long as the longest
  name of the model (cheap, and enough for most patterns), then, if that
  bound is over `MAX_REGEX_STEPS`, name by name from their actual
  characters. A pattern whose bound on some name is over `MAX_REGEX_STEPS`
  is refused with a `ScopeError` naming that name.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax

from nncf_jax.core.regex_cost import MAX_REGEX_STEPS, regex_search_cost
from nncf_jax.errors import ScopeError

__all__ = [
    "MAX_REGEX_CHARS",
    "MAX_REGEX_STEPS",
    "REGEX_PREFIX",
    "ScopeRules",
    "compile_scope_regex",
    "flatten_params",
    "param_path",
    "regex_search_cost",
    "unflatten_params",
]

REGEX_PREFIX = "{re}"
MAX_REGEX_CHARS = 1000


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def param_path(key_path: Sequence[Any]) -> str:
    """Joins a `jax.tree_util` key path into a name like ``Conv_0/kernel``."""
    return "/".join(_key_name(k) for k in key_path)


def flatten_params(params: Any) -> dict[str, Any]:
    """Maps every leaf of a params pytree to its path name, in tree order.

    Args:
      params: a pytree of arrays (typically ``variables["params"]``).

    Returns:
      An insertion-ordered dict ``{"Conv_0/kernel": leaf, ...}``.
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    return {param_path(path): leaf for path, leaf in flat}


def unflatten_params(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Builds a nested dict from ``{"a/b/c": leaf}``; the inverse of `flatten_params` for dicts."""
    tree: dict[str, Any] = {}
    for name, leaf in flat.items():
        node = tree
        *parents, last = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = leaf
    return tree


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


@dataclass(frozen=True)
class _Pattern:
    text: str
    config_path: str
    regex: re.Pattern[str] | None

    def matches(self, name: str) -> bool:
        if self.regex is not None:
            return self.regex.search(name) is not None
        return self.text == name


def _shown(text: str) -> str:
    """``repr(text)``, shortened to its start when it is long."""
    return repr(text) if len(text) <= 80 else f"{text[:60]!r}... ({len(text)} characters)"


def compile_scope_regex(text: str) -> re.Pattern[str]:
    """Compiles the regular expression of a ``{re}`` scope.

    Args:
      text: the scope, starting with ``{re}``.

    Returns:
      The compiled pattern (what follows ``{re}``).

    Raises:
      ValueError: the pattern is longer than `MAX_REGEX_CHARS`, or ``re``
        refuses it; the message quotes the scope and says why (callers wrap
        it in a `ScopeError`).
    """
    source = text[len(REGEX_PREFIX) :]
    if len(source) > MAX_REGEX_CHARS:
        raise ValueError(
            f"regular expression {_shown(text)} is too long: at most {MAX_REGEX_CHARS} "
            "characters after {re}"
        )
    try:
        return re.compile(source)
    except (re.error, OverflowError) as e:  # OverflowError: a repeat count over 2**32 - 1
        raise ValueError(f"invalid regular expression {_shown(text)}: {e}") from None
    except RecursionError:
        raise ValueError(
            f"invalid regular expression {_shown(text)}: groups nest too deeply"
        ) from None


def _compile(text: Any, config_path: str) -> _Pattern:
    if not isinstance(text, str):
        raise ScopeError(config_path, f"expected a scope string, got {type(text).__name__}")
    if text.startswith(REGEX_PREFIX):
        try:
            return _Pattern(text, config_path, compile_scope_regex(text))
        except ValueError as e:
            raise ScopeError(config_path, str(e)) from None
    return _Pattern(text, config_path, None)


def _candidate_names(param_name: str) -> list[str]:
    """A param ``A/B/kernel`` is addressed by ``A/B/kernel`` and by its module ``A/B``."""
    names = [param_name]
    if "/" in param_name:
        names.append(param_name.rsplit("/", 1)[0])
    return names


@dataclass(frozen=True)
class ScopeRules:
    """Which parameter names an algorithm may touch, built once from the config.

    NNCF's combination rule: an algorithm's ``ignored_scopes`` add to the
    global ones; its ``target_scopes``, when given, replace the global ones.
    With no target scopes every name is a target.

    Attributes:
      ignored: patterns that exclude a name.
      targets: patterns of which one must match; empty means "everything".
      validate: whether a pattern that matches no name is an error.
    """

    ignored: tuple[_Pattern, ...] = ()
    targets: tuple[_Pattern, ...] = ()
    validate: bool = True

    @classmethod
    def from_config(
        cls,
        global_section: Mapping[str, Any],
        algo_section: Mapping[str, Any] | None = None,
        algo_path: str = "compression",
    ) -> ScopeRules:
        """Combines the global and per-algorithm scopes of an NNCF config.

        Args:
          global_section: the config root (reads ``ignored_scopes``,
            ``target_scopes``, ``validate_scopes``).
          algo_section: one ``compression`` entry, or None.
          algo_path: JSON path of that entry, for error messages.

        Raises:
          ScopeError: a ``{re}`` pattern does not compile.
        """
        algo_section = algo_section or {}

        def patterns(section: Mapping[str, Any], key: str, prefix: str) -> list[_Pattern]:
            values = section.get(key)
            single = isinstance(values, str)
            out = []
            for i, text in enumerate(_as_list(values)):
                where = f"{prefix}{key}" if single else f"{prefix}{key}[{i}]"
                out.append(_compile(text, where))
            return out

        algo_prefix = f"{algo_path}."
        ignored = patterns(global_section, "ignored_scopes", "") + patterns(
            algo_section, "ignored_scopes", algo_prefix
        )
        if algo_section.get("target_scopes") is not None:
            targets = patterns(algo_section, "target_scopes", algo_prefix)
        else:
            targets = patterns(global_section, "target_scopes", "")
        validate = bool(
            algo_section.get("validate_scopes", global_section.get("validate_scopes", True))
        )
        return cls(tuple(ignored), tuple(targets), validate)

    def select(self, names: Iterable[str], *, eligible: Iterable[str] | None = None) -> list[str]:
        """Returns the names, in order, that are targeted and not ignored.

        Args:
          names: every parameter name of the model (used to validate patterns
            and to suggest close matches).
          eligible: the subset the algorithm could compress at all (e.g. conv
            and dense kernels); defaults to ``names``.

        Raises:
          ScopeError: with validation on, a pattern matched no name; the
            message names the config key and lists the closest names.
        """
        names = list(names)
        eligible = names if eligible is None else list(eligible)
        self._check_costs(names)
        if self.validate:
            self._check_all_match(names)
        chosen = []
        for name in eligible:
            candidates = _candidate_names(name)
            if any(p.matches(c) for p in self.ignored for c in candidates):
                continue
            if self.targets and not any(p.matches(c) for p in self.targets for c in candidates):
                continue
            chosen.append(name)
        return chosen

    def _check_costs(self, names: list[str]) -> None:
        addressable = list(dict.fromkeys(c for n in names for c in _candidate_names(n)))
        longest = max((len(n) for n in addressable), default=0)
        for pattern in (*self.ignored, *self.targets):
            if pattern.regex is None:
                continue
            try:
                # The bound for any name of the longest length is cheap and
                # settles most patterns; the rest are bounded name by name.
                if regex_search_cost(pattern.regex, longest) <= MAX_REGEX_STEPS:
                    continue
                costs = ((regex_search_cost(pattern.regex, n), n) for n in addressable)
                cost, name = next(((c, n) for c, n in costs if c > MAX_REGEX_STEPS), (0, ""))
            except ValueError as e:
                raise ScopeError(
                    pattern.config_path, f"scope {_shown(pattern.text)}: {e}"
                ) from None
            if cost > MAX_REGEX_STEPS:
                bound = "more than 1e9" if cost == float("inf") else f"about {cost:.1g}"
                raise ScopeError(
                    pattern.config_path,
                    f"scope {_shown(pattern.text)}: the regular expression could backtrack for "
                    f"{bound} steps on {name!r} (the limit is {MAX_REGEX_STEPS:.0e}); avoid "
                    "repeats inside repeats such as (a+)+ or (.?){30}, alternatives that match "
                    "the same text such as (x|x)*, and long runs of .*, or list the names",
                )

    def _check_all_match(self, names: list[str]) -> None:
        addressable = []
        for name in names:
            for c in _candidate_names(name):
                if c not in addressable:
                    addressable.append(c)
        for pattern in (*self.ignored, *self.targets):
            if any(pattern.matches(n) for n in addressable):
                continue
            probe = pattern.text.removeprefix(REGEX_PREFIX)
            close = difflib.get_close_matches(probe, addressable, n=5, cutoff=0.4)
            hint = f"; closest names: {', '.join(close)}" if close else ""
            raise ScopeError(
                pattern.config_path,
                f"scope {_shown(pattern.text)} matches no parameter or module of the model{hint} "
                "(set validate_scopes to false to allow this)",
            )
