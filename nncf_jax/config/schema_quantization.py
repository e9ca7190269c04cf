"""Schema of the quantization algorithm.

It covers the quantizer groups (``weights``, ``activations``), the range and
precision initializers, ``scope_overrides`` and the staged-quantization
``params``.
"""

from __future__ import annotations

from typing import Any

from nncf_jax.config.schema_blocks import (
    ALGORITHM_KEY,
    BATCHNORM_ADAPTATION,
    LR_MULTIPLIER,
    SCOPE,
    SCOPES,
    SCOPING,
    _boolean,
    _enum,
    _integer,
    _number,
    _obj,
    _object_or_list,
    _string,
    _without_defaults,
)

__all__ = ["QUANTIZATION"]

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
