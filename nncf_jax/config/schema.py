"""JSON schemas of the NNCF config, one per compression algorithm.

The schemas are plain dicts for ``jsonschema`` (draft 2020-12). Defaults are
NNCF 2.x's (REFERENCE.md section 2) and sit under ``"default"``. Every object
inside an algorithm section is closed (``additionalProperties: false``); the
config root is open, because NNCF example configs carry training keys such as
``model``, ``epochs`` or ``optimizer`` beside the compression keys.

The algorithm schemas are built in one module per family
(`nncf_jax.config.schema_sparsity`, `nncf_jax.config.schema_pruning`,
`nncf_jax.config.schema_quantization`, from the building blocks of
`nncf_jax.config.schema_blocks`); this module assembles them into
`ALGORITHM_SCHEMAS` and defines the knowledge distillation, accuracy-aware
training, ``input_info`` and root schemas.

Keywords starting with ``x-`` are nncf-jax extensions. ``jsonschema`` itself
ignores them; `nncf_jax.config.validation` and `nncf_jax.config.defaults` give
them meaning:

- validators: ``x-object-or-list`` (``{"single": s, "item": t}``: an object
  validated by ``s`` or a list whose items are validated by ``t``),
  ``x-algorithm`` (dispatch on ``algorithm``), ``x-unique-algorithms``,
  ``x-scope`` (a ``{re}`` string, or every key of an object, must
  compile), ``x-not-both``, ``x-exactly-one``, ``x-aliases``,
  ``x-ordered`` (pairs ``[a, b]`` with ``a < b``), ``x-multistep``,
  ``x-params-by-mode``, ``x-int32`` (a number that must fit an int32: steps,
  epochs and counts, which end up in int32 arrays; every ``integer`` has it);
- annotations: ``x-level`` (a compression level in [0, 1)), ``x-expected``
  (wording of "expected ..." in messages), ``x-why`` (reason a key is
  required), ``x-optional-block`` (never created from defaults: its presence
  switches a feature on), ``x-default-unless`` (no default when the named
  sibling is set), ``x-default-by`` (default chosen by a sibling's value),
  ``x-default-by-target-device``.
"""

from __future__ import annotations

from typing import Any

from nncf_jax.config.schema_blocks import (
    ALGORITHM_KEY,
    SCOPES,
    _boolean,
    _enum,
    _integer,
    _number,
    _obj,
    _object_or_list,
    _string,
)
from nncf_jax.config.schema_pruning import FILTER_PRUNING
from nncf_jax.config.schema_quantization import QUANTIZATION
from nncf_jax.config.schema_sparsity import (
    CONST_SPARSITY,
    MAGNITUDE_SPARSITY,
    MOVEMENT_SPARSITY,
    NM_SPARSITY,
    RB_SPARSITY,
)

__all__ = [
    "ACCURACY_AWARE_SCHEMA",
    "ALGORITHM_SCHEMAS",
    "KNOWN_ALGORITHMS",
    "ROOT_SCHEMA",
    "TARGET_DEVICES",
]

TARGET_DEVICES = ("ANY", "CPU", "GPU", "NPU", "TPU", "TRIAL", "CPU_SPR")


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
    "nm_sparsity": NM_SPARSITY,
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
