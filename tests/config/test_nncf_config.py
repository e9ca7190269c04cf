"""Tests of `nncf_jax.config`: loading, validation messages and defaults."""

from __future__ import annotations

import copy
import dataclasses
import json
import pathlib
import re

import jsonschema
import pytest

from nncf_jax.config import KNOWN_ALGORITHMS, AlgorithmSection, NNCFConfig, algorithm_defaults
from nncf_jax.config.schema import ACCURACY_AWARE_SCHEMA, ALGORITHM_SCHEMAS, ROOT_SCHEMA
from nncf_jax.errors import ConfigError, ScopeError, UnknownAlgorithmError

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "config.md"

# Every key of REFERENCE.md section 2, written out as a user would.
REFERENCE_SECTIONS = {
    "magnitude_sparsity": {
        "algorithm": "magnitude_sparsity",
        "sparsity_init": 0,
        "params": {
            "schedule": "polynomial",
            "sparsity_target": 0.5,
            "sparsity_target_epoch": 90,
            "sparsity_freeze_epoch": 100,
            "power": 0.9,
            "concave": True,
            "update_per_optimizer_step": False,
            "steps_per_epoch": 500,
            "multistep_steps": [90],
            "multistep_sparsity_levels": [0.1, 0.5],
            "weight_importance": "abs",
            "sparsity_level_setting_mode": "local",
        },
        "initializer": {"batchnorm_adaptation": {"num_bn_adaptation_samples": 2000}},
        "ignored_scopes": ["{re}.*Dense_1.*"],
    },
    "rb_sparsity": {
        "algorithm": "rb_sparsity",
        "sparsity_init": 0.02,
        "params": {
            "schedule": "adaptive",
            "sparsity_target": 0.61,
            "sparsity_target_epoch": 40,
            "sparsity_freeze_epoch": 60,
            "step": 0.05,
            "eps": 0.03,
            "patience": 1,
        },
        "compression_lr_multiplier": 2.0,
    },
    "const_sparsity": {"algorithm": "const_sparsity", "target_scopes": "Conv_0/kernel"},
    "filter_pruning": {
        "algorithm": "filter_pruning",
        "pruning_init": 0.1,
        "params": {
            "schedule": "exponential_with_bias",
            "pruning_target": 0.4,
            "pruning_steps": 15,
            "num_init_steps": 1,
            "filter_importance": "geometric_median",
            "all_weights": False,
            "prune_first_conv": False,
            "prune_downsample_convs": False,
            "prune_batch_norms": True,
        },
    },
    "quantization": {
        "algorithm": "quantization",
        "preset": "mixed",
        "weights": {"mode": "symmetric", "bits": 8, "signed": True, "per_channel": True},
        "activations": {"mode": "asymmetric", "bits": 8, "per_channel": False},
        "quantize_inputs": True,
        "quantize_outputs": False,
        "overflow_fix": "first_layer_only",
        "scope_overrides": {
            "weights": {"Conv_0/kernel": {"bits": 4}},
            "activations": {"{re}.*Dense.*": {"mode": "symmetric"}},
        },
        "initializer": {
            "range": {
                "num_init_samples": 256,
                "type": "mean_percentile",
                "params": {"min_percentile": 0.1, "max_percentile": 99.9},
            },
            "batchnorm_adaptation": {"num_bn_adaptation_samples": 2000},
            "precision": {"type": "hawq", "bits": [2, 4, 8], "compression_ratio": 1.5},
        },
    },
    "knowledge_distillation": {
        "algorithm": "knowledge_distillation",
        "type": "softmax",
        "scale": 1,
        "temperature": 1,
    },
    "movement_sparsity": {
        "algorithm": "movement_sparsity",
        "params": {
            "warmup_start_epoch": 1,
            "warmup_end_epoch": 4,
            "importance_regularization_factor": 0.01,
            "power": 3,
            "final_importance_threshold": 0,
            "enable_structured_masking": True,
        },
        "sparse_structure_by_scopes": [
            {"mode": "block", "sparse_factors": [32, 32], "target_scopes": "{re}.*attention.*"},
            {"mode": "per_dim", "axis": 0, "target_scopes": "{re}.*intermediate.*"},
        ],
    },
}

# Shaped like NNCF's examples/torch/classification/configs/sparsity_quantization/
# resnet50_imagenet_magnitude_sparsity_int8.json: training keys beside the compression ones.
NNCF_EXAMPLE = {
    "model": "resnet50",
    "pretrained": True,
    "input_info": {"sample_size": [1, 3, 224, 224]},
    "num_classes": 1000,
    "batch_size": 256,
    "epochs": 100,
    "multiprocessing_distributed": True,
    "optimizer": {
        "type": "Adam",
        "base_lr": 0.0001,
        "schedule_type": "multistep",
        "steps": [20, 40, 60, 80],
    },
    "compression": [
        {
            "algorithm": "magnitude_sparsity",
            "params": {
                "schedule": "multistep",
                "multistep_steps": [5, 10, 20, 30, 40],
                "multistep_sparsity_levels": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            },
        },
        {
            "algorithm": "quantization",
            "initializer": {
                "range": {"num_init_samples": 1280, "type": "min_max"},
                "batchnorm_adaptation": {"num_bn_adaptation_samples": 2560},
            },
        },
    ],
}


def load(config):
    return NNCFConfig.from_dict(config)


def with_section(section):
    return {"input_info": {"sample_size": [1, 3, 32, 32]}, "compression": [section]}


# --- loading valid configs --------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REFERENCE_SECTIONS))
def test_reference_sections_load_unchanged(name):
    raw = with_section(REFERENCE_SECTIONS[name])
    config = load(raw)
    assert config == raw
    assert isinstance(config, dict)
    (section,) = config.algorithm_sections()
    assert section == AlgorithmSection(name, 0, "compression[0]", raw["compression"][0])


def test_reference_schedule_check_configs_load():
    for params in (
        {"schedule": "polynomial", "sparsity_target": 0.6, "sparsity_target_epoch": 2, "power": 1},
        {"schedule": "exponential", "sparsity_target": 0.6, "sparsity_target_epoch": 2},
        {"schedule": "multistep", "multistep_steps": [2, 3, 4]}
        | {"multistep_sparsity_levels": [0.2, 0.4, 0.5, 0.6]},
    ):
        section = {"algorithm": "magnitude_sparsity", "sparsity_init": 0.2, "params": params}
        assert load({"compression": section})["compression"] == section


def test_nncf_example_config_loads_unchanged():
    config = load(NNCF_EXAMPLE)
    assert config == NNCF_EXAMPLE
    names = [s.name for s in config.algorithm_sections()]
    assert names == ["magnitude_sparsity", "quantization"]
    quant = config.algorithm_sections()[1].resolved
    assert quant["initializer"]["range"] == {
        "num_init_samples": 1280,
        "type": "min_max",
        "params": {"min_percentile": 0.1, "max_percentile": 99.9},
    }
    assert quant["initializer"]["batchnorm_adaptation"] == {"num_bn_adaptation_samples": 2560}


def test_from_dict_copies_and_accepts_tuples():
    raw = {"input_info": {"sample_size": (1, 8)}, "compression": {"algorithm": "const_sparsity"}}
    before = copy.deepcopy(raw)
    config = load(raw)
    assert raw == before
    assert config["input_info"]["sample_size"] == [1, 8]
    config["compression"]["algorithm"] = "quantization"
    assert raw["compression"]["algorithm"] == "const_sparsity"


def test_compression_as_object_and_as_list():
    section = {"algorithm": "magnitude_sparsity"}
    (single,) = load({"compression": section}).algorithm_sections()
    assert (single.name, single.index, single.path) == ("magnitude_sparsity", None, "compression")
    listed = load({"compression": [section, {"algorithm": "quantization"}]}).algorithm_sections()
    assert [(s.name, s.index, s.path) for s in listed] == [
        ("magnitude_sparsity", 0, "compression[0]"),
        ("quantization", 1, "compression[1]"),
    ]


@pytest.mark.parametrize("config", [{}, {"compression": []}, {"model": "resnet18"}])
def test_no_compression_gives_no_sections(config):
    assert load(config).algorithm_sections() == []


def test_algorithm_section_is_frozen_and_its_section_a_copy():
    config = load({"compression": {"algorithm": "const_sparsity"}})
    (section,) = config.algorithm_sections()
    with pytest.raises(dataclasses.FrozenInstanceError):
        section.name = "rb_sparsity"
    section.section["algorithm"] = "changed"
    assert config["compression"]["algorithm"] == "const_sparsity"


def test_multistep_with_sparsity_target_is_not_an_error():
    params = {"schedule": "multistep", "sparsity_target": 0.9}
    assert load({"compression": {"algorithm": "rb_sparsity", "params": params}})


def test_unknown_root_keys_are_kept():
    config = load({"dataset": "imagenet", "epochs": 3, "weird": {"anything": [1, None]}})
    assert config["weird"] == {"anything": [1, None]}


# --- defaults -----------------------------------------------------------------------


def resolved(section, **root):
    (s,) = load({"compression": section, **root}).algorithm_sections()
    return s.resolved


def test_magnitude_defaults():
    out = resolved({"algorithm": "magnitude_sparsity"})
    assert out["sparsity_init"] == 0
    assert out["params"]["sparsity_target"] == 0.5
    assert out["params"]["schedule"] == "polynomial"
    assert out["params"]["sparsity_target_epoch"] == 90
    assert out["params"]["sparsity_freeze_epoch"] == 100
    assert out["params"]["power"] == 0.9
    assert out["params"]["concave"] is True
    assert out["params"]["update_per_optimizer_step"] is False
    assert out["params"]["multistep_steps"] == [90]
    assert out["params"]["multistep_sparsity_levels"] == [0.1, 0.5]
    assert out["params"]["weight_importance"] == "normed_abs"
    assert out["params"]["sparsity_level_setting_mode"] == "global"
    assert "steps_per_epoch" not in out["params"]
    assert out["initializer"]["batchnorm_adaptation"]["num_bn_adaptation_samples"] == 2000


def test_rb_defaults():
    params = resolved({"algorithm": "rb_sparsity"})["params"]
    assert params["schedule"] == "exponential"
    assert (params["step"], params["eps"], params["patience"]) == (0.05, 0.03, 1)


def test_filter_pruning_defaults():
    out = resolved({"algorithm": "filter_pruning"})
    assert out["pruning_init"] == 0
    params = out["params"]
    assert params["filter_importance"] == "L2"
    assert params["schedule"] == "exponential"
    assert params["pruning_target"] == 0.5
    assert (params["pruning_steps"], params["num_init_steps"]) == (100, 0)
    assert params["all_weights"] is params["prune_first_conv"] is False
    assert params["prune_downsample_convs"] is False and params["prune_batch_norms"] is True


def test_filter_pruning_flops_target_gets_no_pruning_target_default():
    params = resolved({"algorithm": "filter_pruning", "params": {"pruning_flops_target": 0.3}})[
        "params"
    ]
    assert params["pruning_flops_target"] == 0.3
    assert "pruning_target" not in params


def test_filter_pruning_aliases_are_renamed():
    params = {
        "weight_importance": "geometric_median",
        "interlayered_ranking_type": "learned_ranking",
    }
    out = resolved({"algorithm": "filter_pruning", "params": params})["params"]
    assert out["filter_importance"] == "geometric_median"
    assert out["interlayer_ranking_type"] == "learned_ranking"
    assert "weight_importance" not in out and "interlayered_ranking_type" not in out


def test_quantization_defaults():
    out = resolved({"algorithm": "quantization"})
    assert out["preset"] == "performance"
    assert out["weights"] == {"bits": 8, "per_channel": True, "logarithm_scale": False}
    assert out["activations"] == {"bits": 8, "per_channel": False, "logarithm_scale": False}
    assert (out["quantize_inputs"], out["quantize_outputs"]) == (True, False)
    assert out["overflow_fix"] == "disable"
    assert out["initializer"]["range"] == {
        "num_init_samples": 256,
        "type": "mixed_min_max",
        "params": {"min_percentile": 0.1, "max_percentile": 99.9},
    }
    assert out["initializer"]["batchnorm_adaptation"] == {"num_bn_adaptation_samples": 2000}
    # Blocks whose presence switches a feature on are not created.
    assert "precision" not in out["initializer"]
    assert "scope_overrides" not in out and "params" not in out


def test_quantization_device_and_type_dependent_defaults():
    out = resolved({"algorithm": "quantization"}, target_device="CPU")
    assert out["overflow_fix"] == "enable"
    hawq = {"algorithm": "quantization", "initializer": {"precision": {"type": "hawq"}}}
    precision = resolved(hawq)["initializer"]["precision"]
    assert precision["bits"] == [2, 4, 8]
    assert precision["compression_ratio"] == 1.5
    manual = {"type": "manual", "bitwidth_per_scope": [[4, "Conv_0/kernel"]]}
    precision = resolved({"algorithm": "quantization", "initializer": {"precision": manual}})
    assert "compression_ratio" not in precision["initializer"]["precision"]


def test_per_layer_range_items_get_defaults_and_overrides_do_not():
    section = {
        "algorithm": "quantization",
        "initializer": {"range": [{"type": "min_max", "target_quantizer_group": "weights"}]},
        "scope_overrides": {"weights": {"Conv_0/kernel": {"mode": "asymmetric"}}},
    }
    out = resolved(section)
    assert out["initializer"]["range"][0]["num_init_samples"] == 256
    assert out["scope_overrides"] == section["scope_overrides"]


def test_knowledge_distillation_and_movement_defaults():
    kd = resolved({"algorithm": "knowledge_distillation", "type": "mse"})
    assert (kd["scale"], kd["temperature"]) == (1, 1)
    params = {"warmup_start_epoch": 1, "warmup_end_epoch": 3, "importance_regularization_factor": 1}
    movement = resolved({"algorithm": "movement_sparsity", "params": params})["params"]
    assert movement["power"] == 3
    assert movement["final_importance_threshold"] == 0
    assert movement["enable_structured_masking"] is True


def test_resolved_keeps_user_values_and_does_not_touch_the_section():
    section = {"algorithm": "magnitude_sparsity", "params": {"sparsity_target": 0.7}}
    (s,) = load({"compression": section}).algorithm_sections()
    out = s.resolved
    assert out["params"]["sparsity_target"] == 0.7
    assert s.section == section
    out["params"]["power"] = 5
    assert s.resolved["params"]["power"] == 0.9


@pytest.mark.parametrize("name", KNOWN_ALGORITHMS)
def test_algorithm_defaults_equal_resolved_of_a_bare_section(name):
    section = {"algorithm": name, **({"type": "mse"} if name == "knowledge_distillation" else {})}
    if name == "movement_sparsity":
        return  # its params are required
    expected = resolved(section)
    del expected["algorithm"]
    expected.pop("type", None)
    assert algorithm_defaults(name) == expected


def test_algorithm_defaults_unknown_name():
    with pytest.raises(UnknownAlgorithmError, match="known algorithms: 'const_sparsity'"):
        algorithm_defaults("magnitude")


def test_accuracy_aware_defaults_follow_the_mode():
    config = load(aa("early_exit", maximal_absolute_accuracy_degradation=0.5))
    assert config.resolved_accuracy_aware_training()["params"] == {
        "maximal_absolute_accuracy_degradation": 0.5,
        "maximal_total_epochs": 10000,
    }
    config = load(aa("adaptive_compression_level", maximal_relative_accuracy_degradation=1))
    params = config.resolved_accuracy_aware_training()["params"]
    assert params["initial_training_phase_epochs"] == 5
    assert params["patience_epochs"] == 3
    assert params["initial_compression_rate_step"] == 0.1
    assert params["compression_rate_step_reduction_factor"] == 0.5
    assert params["minimal_compression_rate_step"] == 0.025
    assert load({}).resolved_accuracy_aware_training() is None


# --- errors -------------------------------------------------------------------------

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
     + "'magnitude_sparsity', 'movement_sparsity', 'quantization', 'rb_sparsity'"),
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


def test_from_json_loads_a_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(NNCF_EXAMPLE, indent=4))
    config = NNCFConfig.from_json(path)
    assert isinstance(config, NNCFConfig)
    assert config == NNCF_EXAMPLE
    assert NNCFConfig.from_json(str(path)) == config


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


# --- the schemas themselves and the docs ---------------------------------------------


def test_schemas_are_valid_json_schemas():
    for schema in [ROOT_SCHEMA, ACCURACY_AWARE_SCHEMA, *ALGORITHM_SCHEMAS.values()]:
        jsonschema.Draft202012Validator.check_schema(schema)
    assert tuple(sorted(KNOWN_ALGORITHMS)) == tuple(sorted(ALGORITHM_SCHEMAS))


def _property_names(schema, out):
    if isinstance(schema, dict):
        out.update(schema.get("properties", {}))
        for value in schema.values():
            _property_names(value, out)
    elif isinstance(schema, list):
        for value in schema:
            _property_names(value, out)
    return out


def test_docs_mention_every_key():
    text = re.sub(r"```.*?```", "", DOCS.read_text(), flags=re.S)
    names = _property_names(ROOT_SCHEMA, set()) | _property_names(ALGORITHM_SCHEMAS, set())
    quoted = set(re.findall(r"[A-Za-z_]+", " ".join(re.findall(r"`([^`]+)`", text))))
    missing = sorted(names - quoted)
    assert not missing, f"docs/config.md does not describe {missing}"
    for name in KNOWN_ALGORITHMS:
        assert f"## `{name}`" in text
