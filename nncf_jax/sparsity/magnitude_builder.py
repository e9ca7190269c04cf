"""Config -> algorithm builders of the mask-based sparsity algorithms."""

from __future__ import annotations

import copy

import numpy as np

from nncf_jax.core.paths import ScopeRules, flatten_params
from nncf_jax.core.registry import BuildContext, register_algorithm
from nncf_jax.core.stacking import stacked_axes_of_context
from nncf_jax.errors import ScopeError
from nncf_jax.sparsity.const import ConstSparsity
from nncf_jax.sparsity.magnitude import MagnitudeSparsity
from nncf_jax.sparsity.masks import eligible_weights, warn_non_finite_weights

__all__ = ["build_const_sparsity", "build_magnitude_sparsity", "select_weights"]


def select_weights(
    section, context: BuildContext, stacks: dict[str, int] | None = None
) -> list[str]:
    """Eligible weights (rank >= 2 floats per layer) inside the section's scopes.

    ``stacks``: leading stacked-layer axes of params (``nn.scan``); a stacked
    bias ``(layers, features)`` is a rank-1 param per layer and not eligible.

    Raises:
      ScopeError: a scope matches nothing (with validation on), or no weight
        is left to compress.
    """
    rules = ScopeRules.from_config(context.config, section.section, section.path)
    flat = flatten_params(context.params)
    stacks = stacks or {}
    eligible = [
        n for n in eligible_weights(context.params) if np.ndim(flat[n]) - stacks.get(n, 0) >= 2
    ]
    targets = rules.select(context.param_names, eligible=eligible)
    if not targets:
        raise ScopeError(
            section.path,
            f"no weight left to compress for {section.name!r} after ignored_scopes/target_scopes "
            f"(eligible weights: {', '.join(eligible_weights(context.params)) or 'none'})",
        )
    warn_non_finite_weights(context.params, targets, f"{section.path} ({section.name})")
    return targets


@register_algorithm("magnitude_sparsity")
def build_magnitude_sparsity(section, context: BuildContext) -> MagnitudeSparsity:
    """Builds `MagnitudeSparsity` from a ``magnitude_sparsity`` section."""
    resolved = copy.deepcopy(section.resolved)
    if context.steps_per_epoch is not None:
        resolved.setdefault("params", {}).setdefault("steps_per_epoch", context.steps_per_epoch)
    stacks = stacked_axes_of_context(context)
    return MagnitudeSparsity.from_config(
        resolved,
        section.path,
        select_weights(section, context, stacks),
        given=section.section,
        stacks=stacks,
    )


@register_algorithm("const_sparsity")
def build_const_sparsity(section, context: BuildContext) -> ConstSparsity:
    """Builds `ConstSparsity` from a ``const_sparsity`` section."""
    return ConstSparsity(select_weights(section, context), config_path=section.path)
