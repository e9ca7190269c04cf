"""Tests of defaults resolution: `AlgorithmSection.resolved`, `algorithm_defaults` and
`NNCFConfig.resolved_accuracy_aware_training`.
"""

from __future__ import annotations

import pytest

from nncf_jax.config import KNOWN_ALGORITHMS, NNCFConfig, algorithm_defaults
from nncf_jax.errors import UnknownAlgorithmError


def load(config):
    return NNCFConfig.from_dict(config)


def aa(mode, **values):
    return {"accuracy_aware_training": {"mode": mode, "params": values}}


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
