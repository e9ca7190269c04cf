"""Schemas of the sparsity algorithms: magnitude, RB, const, movement and N:M sparsity."""

from __future__ import annotations

from nncf_jax.config.schema_blocks import (
    ALGORITHM_KEY,
    GENERIC_INITIALIZER,
    LR_MULTIPLIER,
    SCOPES,
    SCOPING,
    _boolean,
    _enum,
    _epoch,
    _integer,
    _level,
    _number,
    _obj,
)

__all__ = [
    "CONST_SPARSITY",
    "MAGNITUDE_SPARSITY",
    "MOVEMENT_SPARSITY",
    "NM_SPARSITY",
    "RB_SPARSITY",
]


def _sparsity_params(schedules: list[str], default_schedule: str, extra: dict) -> dict:
    properties = {
        "schedule": _enum(schedules, default_schedule),
        "sparsity_target": _level(0.5),
        "sparsity_target_epoch": _epoch(default=90),
        "sparsity_freeze_epoch": _epoch(default=100),
        "power": _number(exclusiveMinimum=0, default=0.9),
        "concave": _boolean(True),
        "update_per_optimizer_step": _boolean(False),
        "steps_per_epoch": _integer(minimum=1),
        "multistep_steps": {"type": "array", "items": _epoch(), "default": [90]},
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
                    "x-int32": True,
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

# N:M sparsity (an nncf-jax algorithm; NNCF has none). The order checks of
# `x-ordered` see only the keys written, so two `if`/`then` rules compare a
# lone n or m with the other's default (m 4, n 2).
_NM_DEFAULT_N, _NM_DEFAULT_M = 2, 4

NM_SPARSITY = _obj(
    {
        **ALGORITHM_KEY,
        "params": _obj(
            {
                "n": _integer(minimum=1, default=_NM_DEFAULT_N),
                "m": _integer(minimum=2, default=_NM_DEFAULT_M),
                "start_epoch": _integer(minimum=0, default=0),
                "freeze_epoch": _integer(minimum=1),
                "steps_per_epoch": _integer(minimum=1),
            },
            allOf=[
                {
                    "if": {"required": ["n"], "not": {"required": ["m"]}},
                    "then": {
                        "properties": {
                            "n": {
                                "maximum": _NM_DEFAULT_M - 1,
                                "x-expected": f"an integer below m, which is {_NM_DEFAULT_M} "
                                "by default (set params.m as well)",
                            }
                        }
                    },
                },
                {
                    "if": {"required": ["m"], "not": {"required": ["n"]}},
                    "then": {
                        "properties": {
                            "m": {
                                "minimum": _NM_DEFAULT_N + 1,
                                "x-expected": f"an integer above n, which is {_NM_DEFAULT_N} "
                                "by default (set params.n as well)",
                            }
                        }
                    },
                },
            ],
            **{"x-ordered": [["n", "m"], ["start_epoch", "freeze_epoch"]]},
        ),
        **SCOPING,
    }
)
