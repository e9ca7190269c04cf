"""Config -> algorithm builder of N:M structured sparsity (``nm_sparsity``)."""

from __future__ import annotations

from nncf_jax.core.paths import ScopeRules
from nncf_jax.core.registry import BuildContext, register_algorithm
from nncf_jax.errors import ScopeError
from nncf_jax.sparsity.masks import eligible_weights, warn_non_finite_weights
from nncf_jax.sparsity.nm import NMSettings, NMSparsity

__all__ = ["build_nm_sparsity"]


@register_algorithm("nm_sparsity")
def build_nm_sparsity(section, context: BuildContext) -> NMSparsity:
    """Builds `NMSparsity` from an ``nm_sparsity`` section.

    Targets the eligible weights (floating-point, rank >= 2) inside the
    section's scopes.

    Raises:
      ConfigError: bad ``params`` (see `NMSettings.from_section`).
      ScopeError: a scope matches nothing (with validation on), or no weight
        is left to compress.
    """
    settings = NMSettings.from_section(section.resolved, section.path)
    eligible = eligible_weights(context.params)
    rules = ScopeRules.from_config(context.config, section.section, section.path)
    targets = rules.select(context.param_names, eligible=eligible)
    if not targets:
        raise ScopeError(
            section.path,
            f"no weight left to compress for {section.name!r} after ignored_scopes/target_scopes "
            f"(eligible weights: {', '.join(eligible) or 'none'})",
        )
    warn_non_finite_weights(context.params, targets, f"{section.path} ({section.name})")
    return NMSparsity(targets, settings, config_path=section.path)
