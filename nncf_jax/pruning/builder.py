"""Config -> `FilterPruning` builder (``filter_pruning``)."""

from __future__ import annotations

from typing import Any

from nncf_jax.core.init_data import example_call
from nncf_jax.core.paths import ScopeRules
from nncf_jax.core.registry import BuildContext, register_algorithm
from nncf_jax.errors import ConfigError
from nncf_jax.pruning.algorithm import FilterPruning, PruningSchedule
from nncf_jax.pruning.graph import build_pruning_graph

__all__ = ["build_filter_pruning", "example_input"]


def example_input(context: BuildContext, path: str) -> Any:
    """The first positional input: the first ``init_data`` batch, else ``input_info``."""
    call = example_call(context.init_data, context.config.get("input_info"))
    if call is None:
        raise ConfigError(
            "input_info",
            f"{path} (filter_pruning) traces the model to find its channel groups: give "
            "input_info (e.g. {'sample_size': [1, 8, 8, 1]}) or pass init_data",
        )
    return call[0][0]


def _check(params: dict[str, Any], path: str) -> None:
    if "pruning_target" in params and "pruning_flops_target" in params:
        raise ConfigError(
            f"{path}.params.pruning_flops_target",
            "give pruning_target or pruning_flops_target, not both",
        )
    for key in ("pruning_target", "pruning_flops_target"):
        if key in params and not 0.0 <= float(params[key]) < 1.0:
            raise ConfigError(
                f"{path}.params.{key}", f"expected a value in [0, 1), got {params[key]!r}"
            )


@register_algorithm("filter_pruning")
def build_filter_pruning(section, context: BuildContext) -> FilterPruning:
    """Builds `FilterPruning` from a ``filter_pruning`` section.

    Raises:
      ConfigError: both targets, a target outside [0, 1), an unknown
        importance or schedule, or no input to trace the model with.
    """
    path = section.path
    given = section.section.get("params", {}) or {}
    _check(given, path)
    resolved = section.resolved
    params = resolved.get("params", {})
    flops_mode = "pruning_flops_target" in given
    target = float(params["pruning_flops_target" if flops_mode else "pruning_target"])
    schedule = PruningSchedule(
        kind=params.get("schedule", "exponential"),
        init=float(resolved.get("pruning_init", 0.0)),
        target=target,
        num_init_steps=int(params.get("num_init_steps", 0)),
        pruning_steps=int(params.get("pruning_steps", 100)),
    )
    rules = ScopeRules.from_config(context.config, section.section, path)
    targeted = set(rules.select(context.param_names))
    variables = context.variables if context.variables is not None else {"params": context.params}
    graph = build_pruning_graph(
        context.apply_fn,
        variables,
        example_input(context, path),
        targeted=lambda p: p.removeprefix("params/") in targeted,
        prune_first_conv=bool(params.get("prune_first_conv", False)),
        prune_downsample_convs=bool(params.get("prune_downsample_convs", False)),
    )
    return FilterPruning(
        graph,
        schedule,
        importance=params.get("filter_importance", "L2"),
        all_weights=bool(params.get("all_weights", False)),
        prune_batch_norms=bool(params.get("prune_batch_norms", True)),
        flops_mode=flops_mode,
        config_path=path,
        apply_fn=context.apply_fn,
    )
