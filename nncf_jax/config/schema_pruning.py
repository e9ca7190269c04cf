"""Schema of the filter pruning algorithm."""

from __future__ import annotations

from nncf_jax.config.schema_blocks import (
    ALGORITHM_KEY,
    GENERIC_INITIALIZER,
    SCOPING,
    _boolean,
    _enum,
    _integer,
    _level,
    _obj,
    _string,
)

__all__ = ["FILTER_PRUNING"]

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
