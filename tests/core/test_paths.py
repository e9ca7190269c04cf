"""Param names and NNCF scopes: exact and {re} matching, global + per-algorithm rules."""

from __future__ import annotations

import pytest

import nncf_jax as nj
from nncf_jax.core.paths import ScopeRules, flatten_params, unflatten_params
from nncf_jax.errors import ScopeError

NAMES = [
    "Conv_0/kernel",
    "Conv_0/bias",
    "ResBlock_1/Dense_0/kernel",
    "ResBlock_1/Dense_0/bias",
    "Dense_1/kernel",
]


def test_param_paths_round_trip(cnn):
    _, variables, *_ = cnn
    flat = flatten_params(variables["params"])
    assert list(flat)[:2] == ["Conv_0/bias", "Conv_0/kernel"]
    assert flatten_params(unflatten_params(flat)).keys() == flat.keys()


def test_exact_regex_and_module_matching():
    rules = ScopeRules.from_config({"ignored_scopes": ["Conv_0", "{re}bias$"]})
    assert rules.select(NAMES) == ["ResBlock_1/Dense_0/kernel", "Dense_1/kernel"]
    rules = ScopeRules.from_config({"target_scopes": "{re}^ResBlock_\\d+/"})
    assert rules.select(NAMES) == ["ResBlock_1/Dense_0/kernel", "ResBlock_1/Dense_0/bias"]
    # An exact name must match the whole path or module path, not a prefix of it.
    rules = ScopeRules.from_config({"target_scopes": ["Dense_1/kernel"]})
    assert rules.select(NAMES) == ["Dense_1/kernel"]


def test_algorithm_scopes_combine_as_nncf():
    root = {"ignored_scopes": ["Conv_0"], "target_scopes": ["{re}Dense"]}
    # Algorithm ignored_scopes add to the global ones; its target_scopes replace them.
    rules = ScopeRules.from_config(root, {"ignored_scopes": ["Dense_1"]}, "compression[0]")
    assert rules.select(NAMES) == ["ResBlock_1/Dense_0/kernel", "ResBlock_1/Dense_0/bias"]
    rules = ScopeRules.from_config(root, {"target_scopes": ["{re}kernel"]}, "compression[0]")
    assert rules.select(NAMES) == ["ResBlock_1/Dense_0/kernel", "Dense_1/kernel"]


def test_unmatched_scope_is_an_error_with_close_names():
    rules = ScopeRules.from_config(
        {}, {"ignored_scopes": ["Dense_0", "ResBlok_1/Dense_0"]}, "compression[1]"
    )
    with pytest.raises(ScopeError) as info:
        rules.select(NAMES)
    message = str(info.value)
    assert message.startswith("compression[1].ignored_scopes[0]: scope 'Dense_0' matches no")
    assert "ResBlock_1/Dense_0" in message and "validate_scopes" in message
    relaxed = ScopeRules.from_config({"validate_scopes": False}, {"ignored_scopes": ["Dense_0"]})
    assert relaxed.select(NAMES) == NAMES


def test_scopes_through_create_compressed_model(cnn):
    model, variables, *_ = cnn
    config = {"compression": {"algorithm": "magnitude_sparsity", "target_scopes": ["{re}^Dense_"]}}
    _ctrl, cstate = nj.create_compressed_model(model, variables, config)
    masks = flatten_params(cstate.algorithms["magnitude_sparsity"].masks)
    assert list(masks) == ["Dense_0/kernel", "Dense_1/kernel"]
    with pytest.raises(ScopeError, match=r"compression.ignored_scopes\[0\]: scope 'Conv_9'"):
        nj.create_compressed_model(
            model,
            variables,
            {"compression": {"algorithm": "magnitude_sparsity", "ignored_scopes": ["Conv_9"]}},
        )
    with pytest.raises(ScopeError, match="no weight left to compress"):
        nj.create_compressed_model(
            model,
            variables,
            {"compression": {"algorithm": "magnitude_sparsity", "target_scopes": ["{re}bias"]}},
        )
