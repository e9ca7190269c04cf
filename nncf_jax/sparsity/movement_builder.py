"""Config -> algorithm builder of movement sparsity."""

from __future__ import annotations

import numpy as np

from nncf_jax.core.paths import flatten_params
from nncf_jax.core.registry import BuildContext, register_algorithm
from nncf_jax.errors import ScopeError
from nncf_jax.sparsity.magnitude_builder import select_weights
from nncf_jax.sparsity.movement_algorithm import MovementSparsity

__all__ = ["build_movement_sparsity"]


@register_algorithm("movement_sparsity")
def build_movement_sparsity(section, context: BuildContext) -> MovementSparsity:
    """Builds `MovementSparsity` from a ``movement_sparsity`` section.

    Targets: the eligible params named ``kernel`` (rank >= 2) inside the section's scopes.
    ``steps_per_epoch`` is the section's, else the caller's; without either
    the schedule moves at ``epoch_step`` only. ``compression_lr_multiplier``
    is the section's, else the config's global one.
    """
    flat = flatten_params(context.params)
    # Dense / DenseGeneral kernels only (NNCF sparsifies Linear weights, not biases).
    targets = [n for n in select_weights(section, context) if n.rsplit("/", 1)[-1] == "kernel"]
    if not targets:
        raise ScopeError(section.path, "movement_sparsity found no kernel to sparsify")
    shapes = {n: tuple(np.shape(flat[n])) for n in targets}
    multiplier = section.section.get("compression_lr_multiplier")
    if multiplier is None:
        multiplier = context.config.get("compression_lr_multiplier")
    return MovementSparsity.from_config(
        section.resolved,
        section.path,
        shapes,
        steps_per_epoch=context.steps_per_epoch,
        lr_multiplier=multiplier,
    )
