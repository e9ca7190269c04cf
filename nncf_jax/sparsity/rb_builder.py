"""Config -> algorithm builder of RB sparsity (``rb_sparsity``)."""

from __future__ import annotations

import copy

from nncf_jax.core.registry import BuildContext, register_algorithm
from nncf_jax.sparsity.magnitude_builder import select_weights
from nncf_jax.sparsity.rb_algorithm import RBSparsity

__all__ = ["build_rb_sparsity"]


@register_algorithm("rb_sparsity")
def build_rb_sparsity(section, context: BuildContext) -> RBSparsity:
    """Builds `RBSparsity` from an ``rb_sparsity`` section.

    ``compression_lr_multiplier`` is the section's, else the config's global
    one (NNCF lets an algorithm redefine the global value).
    """
    resolved = copy.deepcopy(section.resolved)
    if context.steps_per_epoch is not None:
        resolved.setdefault("params", {}).setdefault("steps_per_epoch", context.steps_per_epoch)
    multiplier = section.section.get("compression_lr_multiplier")
    if multiplier is None:
        multiplier = context.config.get("compression_lr_multiplier")
    return RBSparsity.from_config(
        resolved,
        section.path,
        select_weights(section, context),
        given=section.section,
        lr_multiplier=multiplier,
    )
