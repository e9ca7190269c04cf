"""Tests of `nncf_jax.config.NNCFConfig`: loading valid configs (dicts and JSON files)."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from nncf_jax.config import AlgorithmSection, NNCFConfig

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


# --- JSON files -----------------------------------------------------------------------


def test_from_json_loads_a_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(NNCF_EXAMPLE, indent=4))
    config = NNCFConfig.from_json(path)
    assert isinstance(config, NNCFConfig)
    assert config == NNCF_EXAMPLE
    assert NNCFConfig.from_json(str(path)) == config
