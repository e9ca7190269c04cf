"""Tests of bad configs: the error class, JSON path and message of each problem."""

from __future__ import annotations

import re

import pytest

from nncf_jax.config import NNCFConfig
from nncf_jax.errors import ConfigError, ScopeError, UnknownAlgorithmError


def load(config):
    return NNCFConfig.from_dict(config)


MAG = "magnitude_sparsity"
KNOWN = "known algorithms: 'const_sparsity', 'filter_pruning', 'knowledge_distillation', "


def algo(name, **keys):
    """A config with one algorithm section."""
    return {"compression": {"algorithm": name, **keys}}


def params(name, **values):
    return algo(name, params=values)


def aa(mode, **values):
    return {"accuracy_aware_training": {"mode": mode, "params": values}}


# (config, error class, JSON path, part of the message)
BAD_CONFIGS = [
    (algo("magnitude_sparsty"), UnknownAlgorithmError, "compression.algorithm",
     "unknown algorithm 'magnitude_sparsty'; did you mean 'magnitude_sparsity'? " + KNOWN
     + "'magnitude_sparsity', 'movement_sparsity', 'nm_sparsity', 'quantization', 'rb_sparsity'"),
    ({"compression": [{"algorithm": "quantization"}, {"algorithm": "int8"}]},
     UnknownAlgorithmError, "compression[1].algorithm", "unknown algorithm 'int8'; " + KNOWN),
    ({"compression": [{"params": {}}]}, ConfigError, "compression[0].algorithm",
     "missing required key 'algorithm' (one of 'const_sparsity',"),
    (params(MAG, concave="yes"), ConfigError, "compression.params.concave",
     "expected boolean, got 'yes'"),
    ({"compression": [{"algorithm": "quantization"}, params(MAG, sparsity_target=1.2)["compression"]]},
     ConfigError, "compression[1].params.sparsity_target", "expected a number in [0, 1), got 1.2"),
    (algo(MAG, sparsity_init=1), ConfigError, "compression.sparsity_init",
     "got 1 (a compression level must be below 1"),
    (params("filter_pruning", pruning_flops_target=1.0), ConfigError,
     "compression.params.pruning_flops_target", "expected a number in [0, 1), got 1.0"),
    (params(MAG, multistep_sparsity_levels=[0.1, 1.5]), ConfigError,
     "compression.params.multistep_sparsity_levels[1]", "expected a number in [0, 1), got 1.5"),
    (params(MAG, weight_importance="L1"), ConfigError, "compression.params.weight_importance",
     "expected one of 'abs', 'normed_abs', got 'L1'"),
    (params(MAG, sparsity_taget=0.3), ConfigError, "compression.params.sparsity_taget",
     "unknown key 'sparsity_taget'; did you mean 'sparsity_target'? valid keys: 'concave', "),
    (params("const_sparsity"), ConfigError, "compression.params",
     "unknown key 'params'; valid keys: 'algorithm', 'ignored_scopes', 'target_scopes', "
     "'validate_scopes'"),
    (algo(MAG, ignored_scopes=["Dense_0", "{re}conv["]), ScopeError,
     "compression.ignored_scopes[1]",
     "invalid regular expression '{re}conv[': unterminated character set at position 4"),
    ({"target_scopes": "{re}("}, ScopeError, "target_scopes", "invalid regular expression '{re}('"),
    (algo("quantization", scope_overrides={"weights": {"{re}a(": {}}}), ScopeError,
     'compression.scope_overrides.weights["{re}a("]', "invalid regular expression '{re}a('"),
    (params("filter_pruning", pruning_target=0.3, pruning_flops_target=0.2), ConfigError,
     "compression.params.pruning_flops_target",
     "'pruning_target' and 'pruning_flops_target' cannot both be set"),
    (params("filter_pruning", filter_importance="L1", weight_importance="L2"), ConfigError,
     "compression.params.weight_importance",
     "'weight_importance' is another name for 'filter_importance'; set only one of them"),
    (params(MAG, schedule="multistep", multistep_steps=[2, 3], multistep_sparsity_levels=[0.1, 0.2]),
     ConfigError, "compression.params.multistep_sparsity_levels",
     "expected len(multistep_sparsity_levels) == len(multistep_steps) + 1 = 3, "
     "got 2 levels for 2 steps"),
    (params(MAG, schedule="multistep", multistep_steps=[3, 2]), ConfigError,
     "compression.params.multistep_steps", "expected strictly increasing epochs, got [3, 2]"),
    (params("movement_sparsity", warmup_start_epoch=3, warmup_end_epoch=3,
            importance_regularization_factor=0.1), ConfigError,
     "compression.params.warmup_end_epoch",
     "expected warmup_end_epoch > warmup_start_epoch (3), got 3"),
    (params(MAG, steps_per_epoch=0), ConfigError, "compression.params.steps_per_epoch",
     "expected an integer >= 1, got 0"),
    (params(MAG, sparsity_target_epoch=-1), ConfigError,
     "compression.params.sparsity_target_epoch", "expected a number >= 0, got -1"),
    (algo("quantization", weights={"bits": 16}), ConfigError, "compression.weights.bits",
     "expected an integer in [2, 8], got 16"),
    (algo("quantization", activations={"bits": True}), ConfigError,
     "compression.activations.bits", "expected an integer in [2, 8], got true"),
    (algo("quantization", activations={"bits": 8.0}), ConfigError,
     "compression.activations.bits", "expected an integer in [2, 8], got 8.0"),
    (params(MAG, power=False), ConfigError, "compression.params.power",
     "expected a number > 0, got false"),
    (params(MAG, sparsity_target=float("nan")), ConfigError, "compression.params.sparsity_target",
     "got nan (NaN and infinity are not allowed)"),
    (algo("knowledge_distillation", temperature=float("inf"), type="mse"), ConfigError,
     "compression.temperature", "expected a number > 0, got inf"),
    (algo("knowledge_distillation"), ConfigError, "compression.type",
     "missing required key 'type' (one of 'mse', 'softmax')"),
    (algo("movement_sparsity"), ConfigError, "compression.params",
     "missing required key 'params' (an object)"),
    (algo("quantization", initializer={"range": [{"type": "max"}]}), ConfigError,
     "compression.initializer.range[0].type",
     "expected one of 'mixed_min_max', 'min_max', 'mean_min_max', 'threesigma', 'percentile', "
     "'mean_percentile', got 'max'"),
    (algo("quantization", initializer={"range": {"params": {"min_percentile": 50,
                                                            "max_percentile": 10}}}),
     ConfigError, "compression.initializer.range.params.max_percentile",
     "expected max_percentile > min_percentile (50), got 10"),
    (algo("quantization", initializer={"precision": {"bits": [4, 8]}}), ConfigError,
     "compression.initializer.precision.type",
     "missing required key 'type' (one of 'manual', 'hawq', 'autoq')"),
    (algo("quantization", initializer={"precision": {
        "type": "manual", "bitwidth_per_scope": [[4, "a"], [4]]}}), ConfigError,
     "compression.initializer.precision.bitwidth_per_scope[1]",
     "expected a [bits, scope] pair such as [4, 'Conv_0/kernel'], got [4]"),
    ({"compression": [{"algorithm": "quantization"}, {"algorithm": "quantization"}]},
     ConfigError, "compression[1].algorithm",
     "algorithm 'quantization' appears twice (first at index 0)"),
    ({"compression": "quantization"}, ConfigError, "compression",
     "expected an algorithm section (an object) or a list of them, got 'quantization'"),
    ({"compression": [3]}, ConfigError, "compression[0]",
     "expected an algorithm section (an object with an 'algorithm' key), got 3"),
    ({"input_info": []}, ConfigError, "input_info", "or a non-empty list of them, got []"),
    ({"input_info": {"sample_size": [1, 3.5]}}, ConfigError, "input_info.sample_size[1]",
     "expected an integer >= 1, got 3.5"),
    ({"input_info": {"shape": [1]}}, ConfigError, "input_info.shape",
     "unknown key 'shape'; valid keys: 'filler', 'keyword', 'sample_size', 'type'"),
    ({"target_device": "cpu"}, ConfigError, "target_device",
     "expected one of 'ANY', 'CPU', 'GPU', 'NPU', 'TPU', 'TRIAL', 'CPU_SPR', got 'cpu'; "
     "did you mean 'CPU'?"),
    ({"validate_scopes": 1}, ConfigError, "validate_scopes", "expected boolean, got 1"),
    (aa("early_exit", maximal_relative_accuracy_degradation=1,
        maximal_absolute_accuracy_degradation=1), ConfigError,
     "accuracy_aware_training.params.maximal_absolute_accuracy_degradation",
     "'maximal_relative_accuracy_degradation' and 'maximal_absolute_accuracy_degradation' "
     "cannot both be set"),
    (aa("early_exit"), ConfigError, "accuracy_aware_training.params",
     "missing required key: set one of 'maximal_relative_accuracy_degradation', "
     "'maximal_absolute_accuracy_degradation'"),
    (aa("early_exit", maximal_relative_accuracy_degradation=1, patience_epochs=2), ConfigError,
     "accuracy_aware_training.params.patience_epochs",
     "key 'patience_epochs' applies only to mode 'adaptive_compression_level'"),
    (aa("fast"), ConfigError, "accuracy_aware_training.mode",
     "expected one of 'early_exit', 'adaptive_compression_level', got 'fast'"),
]  # fmt: skip


@pytest.mark.parametrize(("config", "cls", "path", "message"), BAD_CONFIGS)
def test_bad_config_messages(config, cls, path, message):
    with pytest.raises(cls) as info:
        load(config)
    assert type(info.value) is cls
    assert info.value.path == path
    assert message in str(info.value)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("root", [[{"compression": []}], "config.json", 3, None])
def test_non_dict_root(root):
    with pytest.raises(ConfigError, match="expected the config to be an object") as info:
        load(root)
    assert info.value.path == ""
    assert str(info.value).startswith("<config root>: ")


def test_first_error_in_document_order_wins():
    params = {"sparsity_target": 2.0, "power": "x"}
    with pytest.raises(ConfigError) as info:
        load({"compression": {"algorithm": MAG, "params": params}})
    assert info.value.path == "compression.params.sparsity_target"
    params = {"power": "x", "sparsity_target": 2.0}
    with pytest.raises(ConfigError) as info:
        load({"compression": {"algorithm": MAG, "params": params}})
    assert info.value.path == "compression.params.power"


def test_validate_after_mutation():
    config = load({"compression": {"algorithm": MAG}})
    config["compression"]["sparsity_init"] = 1.5
    with pytest.raises(ConfigError, match=re.escape("compression.sparsity_init: expected")):
        config.validate()
    with pytest.raises(ConfigError):
        config.algorithm_sections()


# --- JSON files -----------------------------------------------------------------------


def test_from_json_missing_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(ConfigError, match=re.escape(f"config file {str(path)!r} does not exist")):
        NNCFConfig.from_json(path)


def test_from_json_invalid_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "compression": {\n    "algorithm": "quantization",\n  }\n}\n')
    with pytest.raises(ConfigError) as info:
        NNCFConfig.from_json(path)
    message = str(info.value)
    assert str(path) in message
    assert "invalid JSON" in message
    assert "line 4, column 3 (char 56)" in message


def test_from_json_duplicate_key(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text('{"compression": {"algorithm": "quantization", "algorithm": "rb_sparsity"}}')
    with pytest.raises(ConfigError, match="key 'algorithm' appears twice"):
        NNCFConfig.from_json(path)


def test_from_json_validation_error_names_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"compression": {"algorithm": "rb_sparsity", "params": {"eps": -1}}}')
    with pytest.raises(ConfigError) as info:
        NNCFConfig.from_json(path)
    assert info.value.path == "compression.params.eps"
    assert str(info.value).endswith(f"expected a number >= 0, got -1 (in {str(path)!r})")


def test_from_json_rejects_nan_literal(tmp_path):
    path = tmp_path / "nan.json"
    path.write_text('{"compression": {"algorithm": "rb_sparsity", "sparsity_init": NaN}}')
    with pytest.raises(
        ConfigError, match=re.escape("compression.sparsity_init: expected a number")
    ):
        NNCFConfig.from_json(path)
