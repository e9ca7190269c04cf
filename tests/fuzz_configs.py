"""Hypothesis strategies of the config fuzz tests.

Scopes and regular expressions, algorithm sections, whole configs, JSON
texts, and valid magnitude sparsity sections, built on the values of
``fuzz_support.py``. ``test_config_fuzz.py`` loads this module by path.
"""

from __future__ import annotations

import copy
import json

import fuzz_support as _support
from hypothesis import strategies as st

from nncf_jax.config import KNOWN_ALGORITHMS, algorithm_defaults

INT32_MAX, KERNELS, NAMES, WORDS = (
    _support.INT32_MAX,
    _support.KERNELS,
    _support.NAMES,
    _support.WORDS,
)
anything, garbage, keys = _support.anything, _support.garbage, _support.keys
levels, bad_levels, epochs = _support.levels, _support.bad_levels, _support.epochs
good_or_bad, _weighted = _support.good_or_bad, _support._weighted

# --- scopes and regular expressions ------------------------------------------------

REGEX_FRAGMENTS = [
    "Conv",
    "Dense",
    "_0",
    "_1",
    "/kernel",
    "/bias",
    "kernel",
    ".",
    ".*",
    ".+",
    ".?",
    "*",
    "+",
    "?",
    "{2}",
    "{30}",
    "{0,}",
    "{4294967296}",
    "(",
    ")",
    "(?:",
    "(?=",
    "(?!",
    "(?<=a)",
    "(?P<g>",
    "(?P=g)",
    "\\1",
    "(?>",
    "*+",
    "|",
    "[",
    "]",
    "[a-z]",
    "[^/]",
    "\\d",
    "\\w",
    "\\s",
    "\\b",
    "^",
    "$",
    "\\",
    "a",
    "x",
    "y",
    "(?i)",
    "(?m)",
    "é",
    "🙂",
    "\x00",
]
PATHOLOGICAL_REGEXES = [
    "(a+)+$",
    "(x|x)*y",
    "(.*)*y",
    "(.+)+y",
    "(.*.*)*y",
    "(.?){30}z",
    ".*.*.*.*.*.*.*.*z",
    "(\\w+\\s?)+$",
    "(.*){12}z",
    "([a-z]+)*\\d$",
    "(?:a|){65535}",
    "(?:){65535}",
    "(?=(.+)+y)",
    "(.|.)*y",
    "(x|x|x)*y",
    "((.)*)*y",
    "(?P<a>.)(?P=a)*z",
    "a{4294967296}",
    "a{99999999999999999999}",
    "(" * 3000 + ")" * 3000,
    "(" * 400 + ")" * 400,
    "x" * 5000,
    "[" * 50,
]
regex_bodies = st.one_of(
    st.lists(st.sampled_from(REGEX_FRAGMENTS), max_size=12).map("".join),
    st.lists(st.sampled_from(REGEX_FRAGMENTS), max_size=40).map("".join),
    st.text(max_size=20),
    st.sampled_from(PATHOLOGICAL_REGEXES),
)
scope = st.one_of(
    st.sampled_from(NAMES),
    st.sampled_from(NAMES),
    st.sampled_from(["{re}kernel$", "{re}^Dense_\\d+/", "{re}(Conv|Dense)_0"]),
    regex_bodies.map(lambda body: "{re}" + body),
    st.text(max_size=15),
    st.sampled_from(["", "{re}", "Conv_0/", "conv_0", "Conv_0\x00", "Dense_0/kernel\u200b", "ф"]),
)
scopes = good_or_bad(st.one_of(scope, st.lists(scope, max_size=3)))

# --- algorithm sections ---------------------------------------------------------------


def _multistep():
    return st.integers(0, 3).flatmap(
        lambda n: st.fixed_dictionaries(
            {
                "multistep_steps": st.lists(
                    st.integers(0, 50), min_size=n, max_size=n, unique=True
                ).map(sorted),
                "multistep_sparsity_levels": st.lists(levels, min_size=n + 1, max_size=n + 1),
            }
        )
    )


MAGNITUDE_PARAMS = {
    "schedule": good_or_bad(st.sampled_from(["polynomial", "exponential", "multistep"])),
    "sparsity_target": good_or_bad(levels, bad_levels),
    "sparsity_target_epoch": good_or_bad(epochs),
    "sparsity_freeze_epoch": good_or_bad(epochs),
    "power": good_or_bad(st.floats(1e-3, 10) | st.sampled_from([1e308, 5e-324])),
    "concave": good_or_bad(st.booleans()),
    "update_per_optimizer_step": good_or_bad(st.booleans()),
    "steps_per_epoch": good_or_bad(st.integers(1, 100) | st.just(INT32_MAX)),
    "multistep_steps": good_or_bad(st.lists(epochs, max_size=3)),
    "multistep_sparsity_levels": good_or_bad(st.lists(levels, max_size=4)),
    "weight_importance": good_or_bad(st.sampled_from(["abs", "normed_abs"])),
    "sparsity_level_setting_mode": good_or_bad(st.sampled_from(["global", "local"])),
}


def _merge(parts):
    out = {}
    for part in parts:
        out.update(part)
    return out


_params = st.tuples(
    st.fixed_dictionaries({}, optional=MAGNITUDE_PARAMS),
    _weighted(
        (_multistep(), 1), (st.dictionaries(keys, anything, max_size=2), 1), (st.just({}), 3)
    ),
).map(_merge)
magnitude_params = good_or_bad(_params)
SCOPING = {
    "ignored_scopes": scopes,
    "target_scopes": scopes,
    "validate_scopes": good_or_bad(st.booleans(), odds=6),
}
magnitude_sections = st.fixed_dictionaries(
    {"algorithm": st.just("magnitude_sparsity")},
    optional={
        "sparsity_init": good_or_bad(levels, bad_levels),
        "params": magnitude_params,
        "initializer": good_or_bad(
            st.fixed_dictionaries(
                {},
                optional={
                    "batchnorm_adaptation": st.fixed_dictionaries(
                        {}, optional={"num_bn_adaptation_samples": good_or_bad(st.integers(0, 9))}
                    )
                },
            )
        ),
        **SCOPING,
    },
)
const_sections = st.fixed_dictionaries({"algorithm": st.just("const_sparsity")}, optional=SCOPING)

# Valid bases for every known algorithm (knowledge distillation and movement
# sparsity have required keys), with all their defaults written out.
_REQUIRED = {
    "knowledge_distillation": {"type": "mse"},
    "movement_sparsity": {
        "params": {
            "warmup_start_epoch": 1,
            "warmup_end_epoch": 3,
            "importance_regularization_factor": 0.01,
        }
    },
}


def _deep_merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


BASES = {
    name: {"algorithm": name, **_deep_merge(algorithm_defaults(name), _REQUIRED.get(name, {}))}
    for name in KNOWN_ALGORITHMS
}


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*path, i))


@st.composite
def mutated(draw, base):
    """``base`` with up to three values replaced, keys deleted or unknown keys added."""
    out = copy.deepcopy(base)
    paths = [p for p in _paths(base) if p]  # of the base: new values may be cyclic
    for _ in range(draw(st.integers(0, 3))):
        *parent_path, last = draw(st.sampled_from(paths))
        parent = out
        try:
            for part in parent_path:
                parent = parent[part]
            parent[last]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
        action = draw(st.sampled_from(["replace", "replace", "delete", "add", "wrap"]))
        if action == "replace":
            parent[last] = draw(st.one_of(anything, bad_levels, epochs, st.sampled_from(WORDS)))
        elif action == "delete":
            del parent[last]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(keys)] = draw(anything)
        elif action == "wrap":
            parent[last] = [parent[last]]
    return out


sections = _weighted(
    (const_sections, 2),
    *[(mutated(base), 1) for base in BASES.values()],
    (st.dictionaries(keys, anything, max_size=3), 1),  # mostly no 'algorithm'
    (st.fixed_dictionaries({"algorithm": anything}), 1),
    (magnitude_sections, 5),
)
compressions = _weighted(
    (st.lists(sections, max_size=3), 3),
    (st.just([]), 1),
    (st.just({}), 1),
    (anything, 1),
    (sections, 6),
)

# --- whole configs -----------------------------------------------------------------------

input_infos = good_or_bad(
    st.one_of(
        st.fixed_dictionaries({"sample_size": st.lists(st.integers(1, 8), max_size=4)}),
        st.lists(
            st.fixed_dictionaries({"sample_size": st.lists(st.integers(1, 8), max_size=4)}),
            max_size=2,
        ),
    )
)
ROOT = {
    "input_info": input_infos,
    "ignored_scopes": scopes,
    "target_scopes": scopes,
    "validate_scopes": good_or_bad(odds=8, good=st.booleans()),
    "target_device": good_or_bad(odds=8, good=st.sampled_from(["ANY", "CPU", "GPU", "NPU", "TPU"])),
    "log_dir": good_or_bad(odds=8, good=st.text(max_size=10)),
    "accuracy_aware_training": good_or_bad(
        odds=8,
        good=mutated(
            {"mode": "early_exit", "params": {"maximal_relative_accuracy_degradation": 1.0}}
        ),
    ),
    "compression_lr_multiplier": good_or_bad(odds=8, good=st.floats(0, 10)),
    "disable_shape_matching": good_or_bad(odds=8, good=st.booleans()),
}
roots = st.tuples(
    st.fixed_dictionaries({"compression": compressions}, optional=ROOT),
    st.dictionaries(st.text(max_size=8), good_or_bad(garbage), max_size=2),  # keys nncf-jax ignores
).map(lambda t: {**t[1], **t[0]})
configs = _weighted(
    (st.fixed_dictionaries({}, optional=ROOT), 1),  # no compression at all
    (st.dictionaries(st.integers() | st.none() | keys, anything, max_size=3), 1),
    (anything, 1),
    (roots, 12),
)


def _json_text(config) -> str | None:
    """``config`` as JSON text when JSON holds exactly it (string keys, JSON types)."""

    budget = [10_000]  # values; shared references would make the walk exponential

    def plain(value) -> bool:
        budget[0] -= 1
        if budget[0] < 0:
            return False
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return value is None or type(value) in (bool, int, float, str)

    try:
        if not plain(config):
            return None
        return json.dumps(config)  # NaN and infinities as NaN / Infinity tokens
    except (ValueError, RecursionError):  # 5000-digit ints, cycles, deep nesting
        return None


# --- JSON texts ------------------------------------------------------------------------

JSON_TOKENS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "9" * 5000,
    "1" + "0" * 400,
    "2147483648",
    "0.5",
    "0",
    "true",
    "null",
    '"\\ud800"',
    '"\\u0000"',
    "[]",
    "{}",
    "[" * 3000 + "]" * 3000,
    '{"a":' * 3000 + "1" + "}" * 3000,
    "[1,]",
    "'single'",
]
JSON_HOLES = [
    '{"compression": {"algorithm": "magnitude_sparsity", "params": {"%s": %s}}}',
    '{"compression": {"algorithm": "magnitude_sparsity", "%s": %s}}',
    '{"compression": [{"algorithm": "const_sparsity"}, {"algorithm": "magnitude_sparsity", "params": {"%s": %s}}]}',
    '{"%s": %s, "compression": {"algorithm": "const_sparsity"}}',
    '{"compression": {"algorithm": "%s", "x": %s}}',
]
json_texts = st.one_of(
    st.builds(
        lambda hole, key, token: hole % (key, token),
        st.sampled_from(JSON_HOLES),
        st.sampled_from(
            [*MAGNITUDE_PARAMS, "sparsity_init", "ignored_scopes", "epochs", "\\ud800"]
        ),
        st.sampled_from(JSON_TOKENS)
        | st.builds(json.dumps, scope)
        | st.builds(json.dumps, st.lists(scope, max_size=3)),
    ),
    st.sampled_from(
        [
            '{"compression": {}, "compression": []}',
            '{"compression": {"algorithm": "const_sparsity", "algorithm": "const_sparsity"}}',
            '\ufeff{"compression": {"algorithm": "const_sparsity"}}',
            "",
            "[]",
            "null",
            '"config"',
            "{" * 100000,
            '{"compression": {"algorithm": "const_sparsity"}',
        ]
    ),
    st.text(max_size=40),
    st.builds(_json_text, configs).map(lambda t: "{}" if t is None else t),
)


# --- valid magnitude sparsity sections ---------------------------------------------------

valid_magnitude = st.fixed_dictionaries(
    {"algorithm": st.just("magnitude_sparsity")},
    optional={
        "sparsity_init": st.floats(0, 0.4),
        "params": st.tuples(
            st.fixed_dictionaries(
                {
                    "sparsity_target": st.floats(0.4, 0.99),
                    "update_per_optimizer_step": st.booleans(),
                    "steps_per_epoch": st.integers(1, 100) | st.just(INT32_MAX),
                },
                optional={
                    "schedule": st.sampled_from(["polynomial", "exponential"]),
                    "sparsity_target_epoch": st.integers(0, 200) | st.just(INT32_MAX),
                    "sparsity_freeze_epoch": st.integers(0, 200) | st.just(INT32_MAX),
                    "power": st.floats(1e-3, 10),
                    "weight_importance": st.sampled_from(["abs", "normed_abs"]),
                    "sparsity_level_setting_mode": st.sampled_from(["global", "local"]),
                },
            ),
            st.just({}) | _multistep().map(lambda m: {"schedule": "multistep", **m}),
        ).map(_merge),
        "target_scopes": st.lists(st.sampled_from([*KERNELS, "Conv_0", "Dense_1"]), min_size=1)
        | st.sampled_from(["{re}kernel$", "{re}^Dense_\\d+/", "{re}(Conv|Dense)_0"]),
    },
)
