"""JSON schemas of the NNCF config, one per compression algorithm.

The schemas are plain dicts for ``jsonschema`` (draft 2020-12). Defaults are
NNCF 2.x's (REFERENCE.md section 2) and sit under ``"default"``. Every object
inside an algorithm section is closed (``additionalProperties: false``); the
config root is open, because NNCF example configs carry training keys such as
``model``, ``epochs`` or ``optimizer`` beside the compression keys.

Keywords starting with ``x-`` are nncf-jax extensions. ``jsonschema`` itself
ignores them; `nncf_jax.config.nncf_config` gives them meaning:

- validators: ``x-object-or-list`` (``{"single": s, "item": t}``: an object
  validated by ``s`` or a list whose items are validated by ``t``),
  ``x-algorithm`` (dispatch on ``algorithm``), ``x-unique-algorithms``,
  ``x-scope`` (a ``{re}`` string, or every key of an object, must
  compile), ``x-not-both``, ``x-exactly-one``, ``x-aliases``,
  ``x-ordered`` (pairs ``[a, b]`` with ``a < b``), ``x-multistep``,
  ``x-params-by-mode``;
- annotations: ``x-level`` (a compression level in [0, 1)), ``x-expected``
  (wording of "expected ..." in messages), ``x-why`` (reason a key is
  required), ``x-optional-block`` (never created from defaults: its presence
  switches a feature on), ``x-default-unless`` (no default when the named
  sibling is set), ``x-default-by`` (default chosen by a sibling's value),
  ``x-default-by-target-device``.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = [
    "ACCURACY_AWARE_SCHEMA",
    "ALGORITHM_SCHEMAS",
    "KNOWN_ALGORITHMS",
    "ROOT_SCHEMA",
    "TARGET_DEVICES",
]

TARGET_DEVICES = ("ANY", "CPU", "GPU", "NPU", "TPU", "TRIAL", "CPU_SPR")


# --- building blocks ----------------------------------------------------------


def _number(**kw: Any) -> dict[str, Any]:
    return {"type": "number", **kw}


def _integer(**kw: Any) -> dict[str, Any]:
    return {"type": "integer", **kw}


def _boolean(default: bool | None = None) -> dict[str, Any]:
    return {"type": "boolean"} if default is None else {"type": "boolean", "default": default}


def _string(**kw: Any) -> dict[str, Any]:
    return {"type": "string", **kw}


def _enum(values: list[str], default: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "string", "enum": list(values)}
    if default is not None:
        out["default"] = default
    return out


def _level(default: float | None = None) -> dict[str, Any]:
    """A compression level: a fraction in [0, 1)."""
    out = _number(minimum=0, exclusiveMaximum=1, **{"x-level": True})
    if default is not None:
        out["default"] = default
    return out


def _obj(properties: dict[str, Any], required: tuple[str, ...] = (), **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        out["required"] = list(required)
    out.update(kw)
    return out


def _object_or_list(single: dict, item: dict, expected: str, **kw: Any) -> dict[str, Any]:
    return {
        "type": ["object", "array"],
        "x-object-or-list": {"single": single, "item": item},
        "x-expected": expected,
        **kw,
    }


def _without_defaults(schema: Any) -> Any:
    """A deep copy of ``schema`` with every default removed."""
    if isinstance(schema, dict):
        return {
            k: _without_defaults(v)
            for k, v in schema.items()
            if k not in ("default", "x-default-by", "x-default-unless")
        }
    if isinstance(schema, list):
        return [_without_defaults(v) for v in schema]
    return copy.deepcopy(schema)


SCOPE = _string(**{"x-scope": True})
SCOPES = {
    "type": ["string", "array"],
    "items": SCOPE,
    "x-scope": True,
    "x-expected": "a scope string or a list of scope strings",
}
SCOPING = {"ignored_scopes": SCOPES, "target_scopes": SCOPES, "validate_scopes": _boolean()}
LR_MULTIPLIER = {"compression_lr_multiplier": _number(minimum=0)}
ALGORITHM_KEY = {"algorithm": _string()}

BATCHNORM_ADAPTATION = _obj({"num_bn_adaptation_samples": _integer(minimum=0, default=2000)})
GENERIC_INITIALIZER = _obj({"batchnorm_adaptation": BATCHNORM_ADAPTATION})


# --- sparsity -----------------------------------------------------------------


def _sparsity_params(schedules: list[str], default_schedule: str, extra: dict) -> dict:
    properties = {
        "schedule": _enum(schedules, default_schedule),
        "sparsity_target": _level(0.5),
        "sparsity_target_epoch": _number(minimum=0, default=90),
        "sparsity_freeze_epoch": _number(minimum=0, default=100),
        "power": _number(exclusiveMinimum=0, default=0.9),
        "concave": _boolean(True),
        "update_per_optimizer_step": _boolean(False),
        "steps_per_epoch": _integer(minimum=1),
        "multistep_steps": {"type": "array", "items": _number(minimum=0), "default": [90]},
        "multistep_sparsity_levels": {
            "type": "array",
            "items": _level(),
            "minItems": 1,
            "default": [0.1, 0.5],
        },
        "sparsity_level_setting_mode": _enum(["global", "local"], "global"),
        **extra,
    }
    return _obj(properties, **{"x-multistep": True})


MAGNITUDE_SPARSITY = _obj(
    {
        **ALGORITHM_KEY,
        "sparsity_init": _level(0.0),
        "params": _sparsity_params(
            ["polynomial", "exponential", "multistep"],
            "polynomial",
            {"weight_importance": _enum(["abs", "normed_abs"], "normed_abs")},
        ),
        "initializer": GENERIC_INITIALIZER,
        **SCOPING,
    }
)

RB_SPARSITY = _obj(
    {
        **ALGORITHM_KEY,
        "sparsity_init": _level(0.0),
        "params": _sparsity_params(
            ["polynomial", "exponential", "adaptive", "multistep"],
            "exponential",
            {
                "step": _number(exclusiveMinimum=0, default=0.05),
                "eps": _number(minimum=0, default=0.03),
                "patience": _integer(minimum=1, default=1),
            },
        ),
        **SCOPING,
        **LR_MULTIPLIER,
    }
)

CONST_SPARSITY = _obj({**ALGORITHM_KEY, **SCOPING})

SPARSE_STRUCTURE = _obj(
    {
        "mode": _enum(["fine", "block", "per_dim"]),
        "sparse_factors": {
            "type": "array",
            "items": _integer(minimum=1),
            "minItems": 2,
            "maxItems": 2,
            "x-expected": "a list of two positive integers [rows, columns]",
        },
        "axis": _integer(minimum=0),
        "target_scopes": SCOPES,
    },
    required=("mode", "target_scopes"),
    allOf=[
        {
            "if": {"properties": {"mode": {"const": "block"}}, "required": ["mode"]},
            "then": {"required": ["sparse_factors"], "x-why": "mode 'block' needs it"},
        },
        {
            "if": {"properties": {"mode": {"const": "per_dim"}}, "required": ["mode"]},
            "then": {"required": ["axis"], "x-why": "mode 'per_dim' needs it"},
        },
    ],
)

MOVEMENT_SPARSITY = _obj(
    {
        **ALGORITHM_KEY,
        "params": _obj(
            {
                "warmup_start_epoch": _integer(minimum=0),
                "warmup_end_epoch": _integer(minimum=0),
                "importance_regularization_factor": _number(minimum=0),
                "power": _number(exclusiveMinimum=0, default=3.0),
                "init_importance_threshold": _number(),
                "final_importance_threshold": _number(default=0.0),
                "steps_per_epoch": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "x-expected": "a positive integer or null",
                },
                "enable_structured_masking": _boolean(True),
            },
            required=("warmup_start_epoch", "warmup_end_epoch", "importance_regularization_factor"),
            **{"x-ordered": [["warmup_start_epoch", "warmup_end_epoch"]]},
        ),
        "sparse_structure_by_scopes": {"type": "array", "items": SPARSE_STRUCTURE},
        **SCOPING,
        **LR_MULTIPLIER,
    },
    required=("params",),
)


# --- filter pruning -----------------------------------------------------------

_FILTER_IMPORTANCE = ["L2", "L1", "geometric_median"]
_RANKING_TYPES = ["unweighted_ranking", "learned_ranking"]

FILTER_PRUNING = _obj(
    {
        **ALGORITHM_KEY,
        "pruning_init": _level(0.0),
        "params": _obj(
            {
                "schedule": _enum(
                    ["exponential", "exponential_with_bias", "baseline"], "exponential"
                ),
                "pruning_target": _level(0.5) | {"x-default-unless": "pruning_flops_target"},
                "pruning_flops_target": _level(),
                "pruning_steps": _integer(minimum=1, default=100),
                "num_init_steps": _integer(minimum=0, default=0),
                "filter_importance": _enum(_FILTER_IMPORTANCE, "L2"),
                "weight_importance": _enum(_FILTER_IMPORTANCE),
                "interlayer_ranking_type": _enum(_RANKING_TYPES, "unweighted_ranking"),
                "interlayered_ranking_type": _enum(_RANKING_TYPES),
                "all_weights": _boolean(False),
                "prune_first_conv": _boolean(False),
                "prune_downsample_convs": _boolean(False),
                "prune_batch_norms": _boolean(True),
                "zero_grad": _boolean(True),
                "legr_params": _obj(
                    {
                        "generations": _integer(minimum=1, default=400),
                        "train_steps": _integer(minimum=1, default=200),
                        "max_pruning": _level(0.8),
                        "random_seed": _integer(minimum=0, default=42),
                    },
                    **{"x-optional-block": True},
                ),
                "save_ranking_coeffs_path": _string(),
                "load_ranking_coeffs_path": _string(),
            },
            **{
                "x-not-both": [["pruning_target", "pruning_flops_target"]],
                # NNCF's docs also spell these two keys this way.
                "x-aliases": {
                    "weight_importance": "filter_importance",
                    "interlayered_ranking_type": "interlayer_ranking_type",
                },
            },
        ),
        "initializer": GENERIC_INITIALIZER,
        **SCOPING,
    }
)


# --- quantization -------------------------------------------------------------

_BITS = _integer(minimum=2, maximum=8)


def _quantizer_group(per_channel_default: bool, extra: dict) -> dict:
    return _obj(
        {
            "mode": _enum(["symmetric", "asymmetric"]),
            "bits": _BITS | {"default": 8},
            "signed": _boolean(),
            "per_channel": _boolean(per_channel_default),
            "logarithm_scale": _boolean(False),
            **SCOPING,
            **extra,
        }
    )


_RANGE_PROPERTIES = {
    "num_init_samples": _integer(minimum=0, default=256),
    "type": _enum(
        ["mixed_min_max", "min_max", "mean_min_max", "threesigma", "percentile", "mean_percentile"],
        "mixed_min_max",
    ),
    "params": _obj(
        {
            "min_percentile": _number(minimum=0, maximum=100, default=0.1),
            "max_percentile": _number(minimum=0, maximum=100, default=99.9),
        },
        **{"x-ordered": [["min_percentile", "max_percentile"]]},
    ),
}
RANGE_INIT = _obj(_RANGE_PROPERTIES)
RANGE_INIT_PER_LAYER = _obj(
    {
        **_RANGE_PROPERTIES,
        "target_scopes": SCOPES,
        "ignored_scopes": SCOPES,
        "target_quantizer_group": _enum(["weights", "activations"]),
    }
)
RANGE_INIT_ANY = _object_or_list(
    RANGE_INIT, RANGE_INIT_PER_LAYER, "a range initializer (an object) or a list of them"
)


def _by_type(**defaults: Any) -> dict[str, Any]:
    """Defaults that depend on the precision initializer's ``type``."""
    return {"x-default-by": {"key": "type", "values": defaults}}


PRECISION_INIT = _obj(
    {
        "type": _enum(["manual", "hawq", "autoq"]),
        "bits": {"type": "array", "items": _BITS, "minItems": 1}
        | _by_type(hawq=[2, 4, 8], autoq=[2, 4, 8]),
        "bitwidth_per_scope": {
            "type": "array",
            "items": {
                "type": "array",
                "prefixItems": [_BITS, SCOPE],
                "minItems": 2,
                "maxItems": 2,
                "x-expected": "a [bits, scope] pair such as [4, 'Conv_0/kernel']",
            },
        },
        "compression_ratio": _number(exclusiveMinimum=0) | _by_type(hawq=1.5, autoq=0.15),
        "num_data_points": _integer(minimum=1) | _by_type(hawq=100),
        "iter_number": _integer(minimum=0) | _by_type(hawq=200, autoq=0),
        "tolerance": _number(exclusiveMinimum=0) | _by_type(hawq=1e-4),
        "eval_subset_ratio": _number(exclusiveMinimum=0, maximum=1) | _by_type(autoq=1.0),
        "warmup_iter_number": _integer(minimum=0) | _by_type(autoq=20),
        "traces_per_layer_path": _string(),
        "dump_init_precision_data": _boolean(False),
        "bitwidth_assignment_mode": _enum(["strict", "liberal"], "liberal"),
    },
    required=("type",),
    **{"x-optional-block": True},
)

QUANTIZATION_INITIALIZER = _obj(
    {
        "range": RANGE_INIT_ANY,
        "batchnorm_adaptation": BATCHNORM_ADAPTATION,
        "precision": PRECISION_INIT,
    }
)

_OVERRIDE = _without_defaults(
    _obj(
        {
            "mode": _enum(["symmetric", "asymmetric"]),
            "bits": _BITS,
            "signed": _boolean(),
            "per_channel": _boolean(),
            "logarithm_scale": _boolean(),
            "initializer": _obj({"range": RANGE_INIT_ANY}),
        }
    )
)
SCOPE_OVERRIDES = _obj(
    {
        group: {"type": "object", "additionalProperties": _OVERRIDE, "x-scope": True}
        for group in ("weights", "activations")
    },
    **{"x-optional-block": True},
)

STAGED_QUANTIZATION_PARAMS = _obj(
    {
        "batch_multiplier": _integer(minimum=1),
        "activations_quant_start_epoch": _integer(minimum=0, default=1),
        "weights_quant_start_epoch": _integer(minimum=0, default=1),
        "lr_poly_drop_start_epoch": _integer(minimum=0),
        "lr_poly_drop_duration_epochs": _integer(minimum=0, default=30),
        "disable_wd_start_epoch": _integer(minimum=0),
        "base_lr": _number(minimum=0, default=1e-3),
        "base_wd": _number(minimum=0, default=1e-5),
    },
    **{"x-optional-block": True},
)

QUANTIZATION = _obj(
    {
        **ALGORITHM_KEY,
        "preset": _enum(["performance", "mixed"], "performance"),
        "weights": _quantizer_group(True, {}),
        "activations": _quantizer_group(
            False,
            {
                "unified_scale_ops": {
                    "type": "array",
                    "items": {"type": "array", "items": SCOPE},
                    "x-expected": "a list of lists of scope strings",
                }
            },
        ),
        "quantize_inputs": _boolean(True),
        "quantize_outputs": _boolean(False),
        "export_to_onnx_standard_ops": _boolean(False),
        "overflow_fix": _enum(["enable", "disable", "first_layer_only"])
        | {"x-default-by-target-device": {"CPU": "enable", "*": "disable"}},
        "scope_overrides": SCOPE_OVERRIDES,
        "initializer": QUANTIZATION_INITIALIZER,
        "params": STAGED_QUANTIZATION_PARAMS,
        **SCOPING,
        **LR_MULTIPLIER,
    }
)


# --- knowledge distillation ---------------------------------------------------

KNOWLEDGE_DISTILLATION = _obj(
    {
        **ALGORITHM_KEY,
        "type": _enum(["mse", "softmax"]),
        "scale": _number(minimum=0, default=1.0),
        "temperature": _number(exclusiveMinimum=0, default=1.0),
    },
    required=("type",),
)

ALGORITHM_SCHEMAS: dict[str, dict[str, Any]] = {
    "magnitude_sparsity": MAGNITUDE_SPARSITY,
    "rb_sparsity": RB_SPARSITY,
    "const_sparsity": CONST_SPARSITY,
    "movement_sparsity": MOVEMENT_SPARSITY,
    "filter_pruning": FILTER_PRUNING,
    "quantization": QUANTIZATION,
    "knowledge_distillation": KNOWLEDGE_DISTILLATION,
}
KNOWN_ALGORITHMS: tuple[str, ...] = tuple(ALGORITHM_SCHEMAS)


# --- accuracy-aware training and the root -------------------------------------

_AA_COMMON = ["maximal_relative_accuracy_degradation", "maximal_absolute_accuracy_degradation"]
_AA_ADAPTIVE_ONLY = [
    "initial_training_phase_epochs",
    "patience_epochs",
    "initial_compression_rate_step",
    "compression_rate_step_reduction_factor",
    "lr_reduction_factor",
    "minimal_compression_rate_step",
]

ACCURACY_AWARE_SCHEMA = _obj(
    {
        "mode": _enum(["early_exit", "adaptive_compression_level"]),
        "params": _obj(
            {
                "maximal_relative_accuracy_degradation": _number(minimum=0),
                "maximal_absolute_accuracy_degradation": _number(minimum=0),
                "maximal_total_epochs": _integer(minimum=1, default=10000),
                "initial_training_phase_epochs": _integer(minimum=0, default=5),
                "patience_epochs": _integer(minimum=1, default=3),
                "initial_compression_rate_step": _number(exclusiveMinimum=0, default=0.1),
                "compression_rate_step_reduction_factor": _number(
                    exclusiveMinimum=0, exclusiveMaximum=1, default=0.5
                ),
                "lr_reduction_factor": _number(exclusiveMinimum=0, maximum=1, default=0.5),
                "minimal_compression_rate_step": _number(exclusiveMinimum=0, default=0.025),
            },
            **{"x-exactly-one": _AA_COMMON},
        ),
    },
    required=("mode", "params"),
    **{
        "x-params-by-mode": {
            "early_exit": [*_AA_COMMON, "maximal_total_epochs"],
            "adaptive_compression_level": [*_AA_COMMON, "maximal_total_epochs", *_AA_ADAPTIVE_ONLY],
        }
    },
)

INPUT_INFO = _obj(
    {
        "sample_size": {"type": "array", "items": _integer(minimum=1)},
        "type": _string(),
        "filler": _enum(["zeros", "ones", "random"]),
        "keyword": _string(),
    },
    required=("sample_size",),
)

COMPRESSION_ITEM = {
    "type": "object",
    "x-algorithm": True,
    "x-expected": "an algorithm section (an object with an 'algorithm' key)",
}

ROOT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "input_info": _object_or_list(
            INPUT_INFO,
            INPUT_INFO,
            "an input description {'sample_size': [...]} or a non-empty list of them",
            minItems=1,
        ),
        "compression": _object_or_list(
            COMPRESSION_ITEM,
            COMPRESSION_ITEM,
            "an algorithm section (an object) or a list of them",
            **{"x-unique-algorithms": True},
        ),
        "ignored_scopes": SCOPES,
        "target_scopes": SCOPES,
        "validate_scopes": _boolean(True),
        "target_device": _enum(list(TARGET_DEVICES), "ANY"),
        "log_dir": _string(),
        "accuracy_aware_training": ACCURACY_AWARE_SCHEMA,
        "compression_lr_multiplier": _number(minimum=0),
        "disable_shape_matching": _boolean(False),
    },
}
