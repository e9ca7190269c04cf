"""Fuzzed configs: every one builds, or raises nncf-jax's own error, within a time bound.

Hypothesis generates NNCF configs, valid and invalid: wrong types, levels out
of [0, 1), unknown keys, empty lists, huge numbers (ints past int32, past
float range, of 5000 digits), NaN and infinities (Python floats through
`NNCFConfig.from_dict`, ``NaN`` / ``Infinity`` tokens in `NNCFConfig.from_json`
files), unicode and control characters in scope names, regular expressions
that do not compile or that backtrack catastrophically, nested garbage
(thousands of levels deep, or containing itself), a missing ``algorithm``,
``compression`` as a list, object or scalar, for every known algorithm
(those not built yet raise `NotAvailableError`, an `NNCFJaxError`). Each
config goes through ``from_dict``, ``create_compressed_model`` on a tiny Flax
CNN and, when JSON can hold it, ``from_json``; each call must return or raise
an `NNCFJaxError` (never ``KeyError``, ``TypeError``, ``RecursionError``,
``OverflowError``, ``re.error``, jsonschema errors, ...) within
`PARSE_BOUND_S` / `BUILD_BOUND_S`. A build that succeeds must give a
JSON-serialisable ``get_compression_state()``.

Configs fuzzed per run: 200 config dicts (each also written as a JSON file
when JSON can hold it) + 150 JSON texts + 1000 scope regexes + 6 valid
magnitude sparsity configs that must build and step = 1356 configs, about
40 s on 2 cores (most of it compiling the mask program of the configs that
build). The runs are derandomized: CI sees the same configs every time.
``NNCF_JAX_FUZZ_SCALE=10`` runs ten times as many; ``NNCF_JAX_FUZZ_RANDOM=1``
draws new ones each run (``--hypothesis-seed=N`` replays a run). While this
file was written, 16,000 configs at scale 10 and 32,000 more under four
random seeds at scale 5 passed.

The plain tests at the end pin each bug the fuzzing found.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import threading
import time
from datetime import timedelta

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import nncf_jax as nj
from nncf_jax.config import KNOWN_ALGORITHMS, algorithm_defaults
from nncf_jax.core.paths import ScopeRules
from nncf_jax.errors import ConfigError, NNCFJaxError, ScopeError

pytestmark = [
    # The fuzzed regexes include ones re warns about; the warning is the user's to see.
    pytest.mark.filterwarnings("ignore:Possible .* at position:FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*sparsity_target is ignored with schedule 'multistep'"),
]

# --- the model and the bounds ----------------------------------------------------


class TinyCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(2, (3, 3))(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(4)(x))
        return nn.Dense(2)(x)


MODEL = TinyCNN()
X = jnp.ones((1, 4, 4, 1))
VARIABLES = MODEL.init(jax.random.key(0), X)
KERNELS = ["Conv_0/kernel", "Dense_0/kernel", "Dense_1/kernel"]
NAMES = [*KERNELS, "Conv_0/bias", "Dense_0/bias", "Dense_1/bias", "Conv_0", "Dense_0", "Dense_1"]

# Parsing and validating a config is milliseconds; a build that succeeds with
# magnitude sparsity also compiles its mask program once (about 1 s on 2
# cores). The hangs these bounds catch are unbounded; the margin is for slow
# CI machines.
PARSE_BOUND_S = 2.0
BUILD_BOUND_S = 4.0
INT32_MAX = 2**31 - 1

_SCALE = int(os.environ.get("NNCF_JAX_FUZZ_SCALE", "1"))
settings.register_profile(
    "nncf_jax_fuzz",
    # NNCF_JAX_FUZZ_RANDOM=1: new configs each run (--hypothesis-seed=N replays one).
    derandomize="NNCF_JAX_FUZZ_RANDOM" not in os.environ,
    database=None,
    # A case runs up to four timed calls; each is bounded by the asserts above.
    deadline=timedelta(seconds=2 * PARSE_BOUND_S + 2 * BUILD_BOUND_S),
    # Cases that build magnitude sparsity compile for about a second.
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
FUZZ = settings.get_profile("nncf_jax_fuzz")


def _examples(n: int) -> settings:
    return settings(FUZZ, max_examples=n * _SCALE)


def _timed(fn, bound_s: float):
    """``fn()`` or the `NNCFJaxError` it raised; any other exception propagates."""
    start = time.perf_counter()
    try:
        out = fn()
    except NNCFJaxError as e:
        out = e
    elapsed = time.perf_counter() - start
    assert elapsed < bound_s, f"took {elapsed:.2f} s (bound {bound_s} s)"
    return out


def _check_built(built) -> None:
    """A successful build: its compression state survives a JSON round trip."""
    if isinstance(built, NNCFJaxError):
        event(f"build: {type(built).__name__}")
        return
    event("build: ok")
    ctrl, _cstate = built
    state = ctrl.get_compression_state()
    text = json.dumps(state, allow_nan=False)
    assert json.loads(text) == state


# --- values ----------------------------------------------------------------------

NAN, INF = math.nan, math.inf
HUGE_INTS = [INT32_MAX, INT32_MAX + 1, -(2**31) - 1, 2**63, 10**30, -(10**30), 10**400]
SPECIAL_FLOATS = [NAN, INF, -INF, 1e308, -1e308, 5e-324, -0.0, 1.0, 1.0 - 2**-53, 2.5e9]
WORDS = [
    *KNOWN_ALGORITHMS,
    "magnitude_sparsty",
    "MAGNITUDE_SPARSITY",
    "",
    " ",
    "polynomial",
    "exponential",
    "multistep",
    "adaptive",
    "abs",
    "normed_abs",
    "global",
    "local",
    "L2",
    "ANY",
    "CPU",
    "\x00",
    "é",
    "🙂",
    "\ud800",
    "Conv_0/kernel",
]
KEYS = [
    "algorithm",
    "params",
    "compression",
    "sparsity_target",
    "schedule",
    "ignored_scopes",
    "target_scopes",
    "steps_per_epoch",
    "initializer",
    "sample_size",
    "mode",
    "type",
    "",
    "🙂",
]


class _Opaque:
    """An object that refuses to be copied, as a user object under an unknown key might."""

    def __deepcopy__(self, memo):
        raise RuntimeError("no copies")


def _nested(depth: int, kind: str):
    out: object = 1
    for _ in range(depth):
        out = [out] if kind == "list" else {"a": out}
    return out


def _cycle():
    d: dict = {"algorithm": "const_sparsity"}
    d["self"] = d
    return d


def _wide_dag(depth: int = 40):
    # Shared references: a tree walk of this is 2**40 values, its memory 40 lists.
    x: list = [1]
    for _ in range(depth):
        x = [x, x]
    return x


# 10**5000 is built, not listed: repr() of it raises, and hypothesis reprs its strategies.
huge_ints = st.sampled_from(HUGE_INTS) | st.just(5000).map(lambda n: 10**n)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 1000),
    huge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(SPECIAL_FLOATS),
    st.text(max_size=12),
    st.sampled_from(WORDS),
)
odd_values = (
    st.sampled_from(
        [
            b"bytes",
            1j,
            {1, 2},
            np.float32(0.25),
            np.float64(NAN),
            np.int64(3),
            np.array([0.1, 0.2]),
            np.bool_(True),
        ]
    )
    | st.builds(object)
    | st.builds(threading.Lock)
    | st.builds(_Opaque)
)
keys = st.text(max_size=8) | st.sampled_from(KEYS)
garbage = st.recursive(
    leaves,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.dictionaries(keys, kids, max_size=4),
        st.tuples(kids, kids),
    ),
    max_leaves=10,
)
deep = st.one_of(
    st.builds(_nested, st.integers(60, 3000), st.sampled_from(["list", "dict"])),
    st.builds(_cycle),
    st.builds(_wide_dag),
)


def _branch(strategy):
    """``strategy`` as one new branch of a one_of.

    ``st.one_of`` flattens nested one_ofs (through maps and filters) into its
    own branches and drops repeated ones: a strategy would weigh as much as
    its number of alternatives, and listing one twice would not count. A new
    tuple strategy is opaque to both.
    """
    return st.tuples(strategy).map(lambda t: t[0])


def _weighted(*pairs):
    """``st.one_of`` choosing each strategy about in proportion to its weight."""
    branches = [_branch(s) for s, weight in pairs for _ in range(weight)]
    # Hypothesis favours the first and last branches: put the heaviest there.
    return st.one_of(branches[-1], *branches[:-1]) if len(pairs) > 1 else branches[0]


anything = _weighted((odd_values, 1), (deep, 1), (garbage, 6))


def good_or_bad(good, bad=anything, odds=3):
    """Valid values ``odds`` times as often as anything at all."""
    return _weighted((bad, 1), (good, odds))


levels = st.floats(0, 1, exclude_max=True)
bad_levels = st.one_of(
    st.floats(1, 10),
    st.floats(-10, -1e-12),
    st.sampled_from(SPECIAL_FLOATS),
    huge_ints,
    anything,
)
epochs = st.one_of(
    st.integers(0, 200),
    st.floats(0, 200),
    st.sampled_from([INT32_MAX, INT32_MAX + 1, 1e10, 2**63]),
)

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


@pytest.fixture(scope="module")
def json_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz_json")


# --- the fuzz tests ----------------------------------------------------------------------


@_examples(200)
@given(config=configs)
def test_fuzzed_configs_build_or_raise_library_errors(config, json_dir):
    parsed = _timed(lambda: nj.NNCFConfig.from_dict(config), PARSE_BOUND_S)
    built = _timed(lambda: nj.create_compressed_model(MODEL, VARIABLES, config), BUILD_BOUND_S)
    if isinstance(parsed, NNCFJaxError):
        event(f"from_dict: {type(parsed).__name__}")
        # create_compressed_model validates the same way.
        assert type(built) is type(parsed) and str(built) == str(parsed)
    else:
        event("from_dict: ok")
        assert isinstance(parsed, nj.NNCFConfig)
        _check_built(built)

    text = _json_text(config)
    if text is not None:
        path = json_dir / "config.json"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        from_file = _timed(lambda: nj.NNCFConfig.from_json(path), PARSE_BOUND_S)
        if isinstance(parsed, NNCFJaxError):
            assert type(from_file) is type(parsed)
            assert str(from_file) == f"{parsed} (in {str(path)!r})"
        else:
            assert json.dumps(from_file) == json.dumps(parsed)  # NaN != NaN under ==


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


@_examples(150)
@given(text=json_texts, raw=st.booleans())
def test_fuzzed_json_files_load_or_raise_library_errors(text, raw, json_dir):
    path = json_dir / "raw.json"
    data = text.encode("utf-8", errors="surrogatepass")
    if raw:
        data = data[:-1] + b"\xff" if data else b"\xff\xfe"  # invalid UTF-8
    path.write_bytes(data)
    loaded = _timed(lambda: nj.NNCFConfig.from_json(path), PARSE_BOUND_S)
    if isinstance(loaded, NNCFJaxError):
        event(f"from_json: {type(loaded).__name__}")
        return
    event("from_json: ok")
    _check_built(
        _timed(lambda: nj.create_compressed_model(MODEL, VARIABLES, loaded), BUILD_BOUND_S)
    )


@_examples(1000)
@given(
    body=regex_bodies,
    key=st.sampled_from(["ignored_scopes", "target_scopes"]),
    in_section=st.booleans(),
    validate=st.booleans(),
)
def test_fuzzed_scope_regexes_match_or_raise_quickly(body, key, in_section, validate):
    # const_sparsity builds without compiling, so many patterns fit in the time.
    section = {"algorithm": "const_sparsity", "validate_scopes": validate}
    config = {"compression": section}
    (section if in_section else config)[key] = ["{re}" + body]
    parsed = _timed(lambda: nj.NNCFConfig.from_dict(config), PARSE_BOUND_S)
    event(f"from_dict: {type(parsed).__name__}")
    built = _timed(lambda: nj.create_compressed_model(MODEL, VARIABLES, config), PARSE_BOUND_S)
    _check_built(built)


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


@_examples(6)
@given(config=valid_magnitude)
def test_valid_magnitude_configs_build_and_step(config):
    config = {"compression": config}
    ctrl, cstate = _timed(
        lambda: nj.create_compressed_model(MODEL, VARIABLES, config), BUILD_BOUND_S
    )
    _check_built((ctrl, cstate))
    ctrl.scheduler.epoch_step()
    ctrl.scheduler.step()
    assert 0.0 <= ctrl.compression_rate < 1.0
    json.dumps(ctrl.get_compression_state(), allow_nan=False)


# --- regressions: one plain example per bug the fuzzing found -------------------------------


def _magnitude(**params):
    return {"compression": {"algorithm": "magnitude_sparsity", "params": params}}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        # validation.py: math.isfinite(int) raised OverflowError past float range.
        (
            10**400,
            r"expected a number in \[0, 1\), got an integer of about 401 digits \(too large\)",
        ),
        # validation.py and jsonschema: repr() of an int of over 4300 digits raised ValueError.
        (10**5000, r"got an integer of about 5001 digits: too large to be any setting"),
    ],
    ids=["401-digits", "5001-digits"],
)
def test_ints_past_float_range_are_config_errors(value, message):
    with pytest.raises(ConfigError, match=r"compression.params.sparsity_target: " + message):
        nj.NNCFConfig.from_dict(_magnitude(sparsity_target=value))
    with pytest.raises(ConfigError, match=r"compression.params.multistep_steps\[0\]"):
        nj.NNCFConfig.from_dict(_magnitude(multistep_steps=[value]))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("sparsity_freeze_epoch", INT32_MAX + 1),
        ("sparsity_target_epoch", 1e10),
        ("steps_per_epoch", 2**40),
        ("multistep_steps", [2**63]),
    ],
)
def test_epochs_and_steps_past_int32_are_config_errors(key, value):
    # The first three used to build, then raise OverflowError at the first scheduler
    # step (int32 counters); multistep epochs are bounded alike.
    with pytest.raises(ConfigError, match=rf"compression.params.{key}.*<= 2147483647"):
        nj.create_compressed_model(MODEL, VARIABLES, _magnitude(**{key: value}))


def test_steps_per_epoch_argument_past_int32_is_a_config_error():
    # api.py accepted it; the jitted transform then raised OverflowError.
    with pytest.raises(ConfigError, match=r"^steps_per_epoch: .*<= 2147483647, got 1099511627776"):
        nj.create_compressed_model(MODEL, VARIABLES, _magnitude(), steps_per_epoch=2**40)


def test_int32_extremes_build_and_step():
    config = _magnitude(
        sparsity_target_epoch=INT32_MAX,
        sparsity_freeze_epoch=INT32_MAX,
        steps_per_epoch=INT32_MAX,
        update_per_optimizer_step=True,
    )
    ctrl, _ = nj.create_compressed_model(MODEL, VARIABLES, config)
    ctrl.scheduler.epoch_step()
    ctrl.scheduler.step()
    json.dumps(ctrl.get_compression_state(), allow_nan=False)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # re.compile raised OverflowError for a repeat count past 2**32 - 1.
        ("a{4294967296}", "the repetition number is too large"),
        # re.compile raised RecursionError for deeply nested groups.
        ("(" * 3000 + ")" * 3000, "too long|nest too deeply"),
        ("(" * 499 + ")" * 499, "nest too deeply"),
        ("x" * 5000, "too long: at most 1000 characters"),
    ],
    ids=["repeat-count", "3000-groups", "499-groups", "5000-chars"],
)
def test_regexes_re_refuses_are_scope_errors(body, message):
    config = {"ignored_scopes": ["{re}" + body], "compression": {"algorithm": "const_sparsity"}}
    with pytest.raises(ScopeError, match=rf"^ignored_scopes\[0\]: .*({message})"):
        nj.create_compressed_model(MODEL, VARIABLES, config)


@pytest.mark.parametrize(
    "body",
    ["(.?){30}z", "(.*.*)*y", "(.*){12}z", "(?:a|){65535}z"],
)
def test_catastrophic_regexes_are_refused_before_matching(body):
    # re.search takes from half a second to hours with each of these on these names.
    config = {"compression": {"algorithm": "const_sparsity", "target_scopes": "{re}" + body}}
    start = time.perf_counter()
    with pytest.raises(ScopeError, match=r"^compression.target_scopes: .*could backtrack"):
        nj.create_compressed_model(MODEL, VARIABLES, config)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    "body",
    ["^Conv_\\d+/kernel$", ".*kernel.*", "(Conv|Dense)_0", "(a+)+$", "(x|x)*y", "[a-z_]+[0-9]+"],
)
def test_regexes_fast_on_short_names_are_kept(body):
    # (a+)+$ and (x|x)*y are exponential, but names of 14 characters bound them.
    rules = ScopeRules.from_config({"target_scopes": "{re}" + body, "validate_scopes": False})
    expected = [n for n in NAMES[:6] if re.search(body, n) or re.search(body, n.split("/")[0])]
    assert rules.select(NAMES[:6]) == expected


def test_wildcard_patterns_are_kept_on_long_names():
    # The bound for any 63-character name refuses .*a.*b.*c.*d; the bound on the
    # actual names, whose a, b, c and d are few, keeps it.
    names = [
        "TransformerBlock_11/MultiHeadDotProductAttention_0/query/kernel",
        "TransformerBlock_11/MultiHeadDotProductAttention_0/key/kernel",
    ]
    for body in [".*a.*b.*c.*d", ".*Attention.*(query|key).*kernel$", "(?i).*block.*query"]:
        rules = ScopeRules.from_config({"target_scopes": "{re}" + body, "validate_scopes": False})
        assert rules.select(names) == [n for n in names if re.search(body, n)]
    rules = ScopeRules.from_config({"target_scopes": "{re}(.*){5}z"})
    with pytest.raises(ScopeError, match=r"could backtrack .* on 'TransformerBlock_11/Multi"):
        rules.select(names)


def test_non_json_values_under_known_keys_are_config_errors():
    # jsonschema's enum check compared a numpy array to each choice: ValueError.
    config = {"accuracy_aware_training": {"mode": np.array([0.1, 0.2]), "params": {}}}
    with pytest.raises(ConfigError, match=r"^accuracy_aware_training.mode: expected a JSON value"):
        nj.NNCFConfig.from_dict(config)
    # Under keys nncf-jax does not read, anything is kept as it is.
    assert nj.NNCFConfig.from_dict({"data": np.arange(3)})["data"].tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "config",
    [
        {"compression": {"algorithm": "const_sparsity"}, "junk": _nested(5000, "dict")},
        {"compression": _nested(5000, "list")},
        _cycle(),
        {"compression": {"algorithm": "const_sparsity"}, "junk": _wide_dag()},
    ],
    ids=["deep-dict", "deep-list", "cycle", "shared-refs"],
)
def test_configs_too_deep_or_self_containing_are_config_errors(config):
    # _plain / jsonschema / deepcopy recursed: RecursionError (or 2**40 steps for shared refs).
    error = _timed(lambda: nj.NNCFConfig.from_dict(config), PARSE_BOUND_S)
    assert isinstance(error, ConfigError)
    assert re.search(r"nests more than 64 levels|more than 100000 values", str(error))


def test_uncopyable_value_under_an_unknown_key_is_a_config_error():
    # copy.deepcopy raised TypeError (a lock) or whatever the object raised.
    config = {"compression": {"algorithm": "const_sparsity"}, "lock": threading.Lock()}
    with pytest.raises(ConfigError, match=r"^lock: cannot copy a value of type lock"):
        nj.NNCFConfig.from_dict(config)
    with pytest.raises(ConfigError, match=r"^x\[0\]: cannot copy a value of type _Opaque"):
        nj.NNCFConfig.from_dict({"x": [_Opaque()]})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100000 + "]" * 100000, "nested too deeply to read"),
        ('{"epochs": ' + "9" * 5000 + "}", "Exceeds the limit"),
    ],
    ids=["deep", "5000-digits"],
)
def test_json_files_json_cannot_read_are_config_errors(tmp_path, text, message):
    # json.loads raised RecursionError / ValueError.
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"invalid JSON in .*{message}"):
        nj.NNCFConfig.from_json(path)


def test_from_json_with_a_bad_path_is_a_config_error(tmp_path):
    # os.fspath raised TypeError; open() raised ValueError for a NUL.
    with pytest.raises(ConfigError, match="expected a file path"):
        nj.NNCFConfig.from_json(42)
    with pytest.raises(ConfigError, match="cannot read config file"):
        nj.NNCFConfig.from_json(str(tmp_path / "a\x00b.json"))


def test_nan_tokens_in_json_files_are_refused_where_read(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(
        '{"epochs": NaN, "compression": {"algorithm": "magnitude_sparsity", '
        '"params": {"sparsity_target": Infinity}}}'
    )
    with pytest.raises(
        ConfigError, match=r"compression.params.sparsity_target: .*got inf \(NaN and infinity"
    ):
        nj.NNCFConfig.from_json(path)
