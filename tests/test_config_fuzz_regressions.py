"""Regressions of the config fuzzing: one plain example per bug ``test_config_fuzz.py`` found."""

from __future__ import annotations

import json
import re
import threading
import time

import fuzz_support as _support
import numpy as np
import pytest

import nncf_jax as nj
from nncf_jax.core.paths import ScopeRules
from nncf_jax.errors import ConfigError, ScopeError

MODEL, VARIABLES, NAMES = _support.MODEL, _support.VARIABLES, _support.NAMES
INT32_MAX, PARSE_BOUND_S, _timed = _support.INT32_MAX, _support.PARSE_BOUND_S, _support._timed
_Opaque, _nested, _cycle, _wide_dag = (
    _support._Opaque,
    _support._nested,
    _support._cycle,
    _support._wide_dag,
)


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
