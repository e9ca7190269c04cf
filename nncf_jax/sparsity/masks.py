"""Binary weight masks shared by the sparsity algorithms, and their statistics.

Masks are bool arrays shaped like the weights they cover, stored at the
weight's path (``{"Conv_0": {"kernel": mask}}``); untargeted params have no
mask. Weights are used as ``where(mask, w, 0)``: a pruned weight gets zero
gradient, and a pruned NaN or Inf weight really is 0 (``NaN * 0`` is NaN).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nncf_jax.core.paths import flatten_params, param_path
from nncf_jax.core.statistics import make_table, render_tables
from nncf_jax.errors import StateMismatchError

__all__ = [
    "LayerSparsity",
    "SparsifiedModelStatistics",
    "apply_masks",
    "eligible_weights",
    "mask_updates",
    "model_sparsity_statistics",
    "warn_non_finite_weights",
]


def eligible_weights(params: Any) -> list[str]:
    """Paths of the params a sparsity algorithm may target.

    Non-empty floating-point leaves of rank >= 2: convolution, dense, einsum
    and embedding kernels. Biases, norm scales, scalars, empty arrays and
    integer leaves are never sparsified (NNCF sparsifies the weights of
    conv/linear/embedding layers).
    """
    return [
        name
        for name, leaf in flatten_params(params).items()
        if jnp.ndim(leaf) >= 2
        and jnp.size(leaf) > 0
        and jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
    ]


def apply_masks(params: Any, masks: Any) -> Any:
    """``where(mask, w, 0)`` for every masked weight; other leaves unchanged.

    Args:
      params: params pytree.
      masks: nested dict of bool masks at weight paths (a sub-tree of params).
    """
    flat_masks = flatten_params(masks)
    _check_masks_fit(flat_masks, params)

    def one(path, w):
        mask = flat_masks.get(param_path(path))
        return w if mask is None else jnp.where(mask, w, jnp.zeros((), w.dtype))

    return jax.tree_util.tree_map_with_path(one, params)


def _check_masks_fit(flat_masks: Mapping[str, Any], params: Any) -> None:
    # Shapes are static: this runs at trace time and costs nothing per step.
    flat = flatten_params(params)
    missing = [n for n in flat_masks if n not in flat]
    reshaped = [
        f"{n}: mask {tuple(np.shape(m))}, param {tuple(np.shape(flat[n]))}"
        for n, m in flat_masks.items()
        if n in flat and np.shape(m) != np.shape(flat[n])
    ]
    if missing or reshaped:
        raise StateMismatchError(
            "the compression state does not fit these params (was the model changed since "
            f"create_compressed_model?); masks for params that are gone: {missing or 'none'}; "
            f"shape changes: {reshaped or 'none'}"
        )


def mask_updates(updates: Any, masks: Any) -> Any:
    """Zeroes optimizer updates of masked-out weights, so they stay where they are."""
    return apply_masks(updates, masks)


@dataclass(frozen=True)
class LayerSparsity:
    """One sparsified weight.

    Attributes:
      name: param path, e.g. ``Conv_0/kernel``.
      weight_shape: the weight's shape.
      sparsity_level: fraction of zeros in ``w * mask``.
      weight_percentage: this weight's share (in %) of all targeted weights.
    """

    name: str
    weight_shape: tuple[int, ...]
    sparsity_level: float
    weight_percentage: float


@dataclass(frozen=True)
class SparsifiedModelStatistics:
    """NNCF's ``model_statistics`` of a sparsity algorithm.

    Attributes:
      sparsity_level: fraction of zeros over all model parameters (biases and
        untargeted params included).
      sparsity_level_for_layers: fraction of zeros over the targeted weights.
      sparsified_layers_summary: one `LayerSparsity` per targeted weight.
    """

    sparsity_level: float
    sparsity_level_for_layers: float
    sparsified_layers_summary: tuple[LayerSparsity, ...]

    def tables(self, title: str, extra_rows=(), thresholds: Mapping[str, float] | None = None):
        """The model table and the per-layer table (rich)."""
        model_rows = [
            ("Sparsity level of the whole model", self.sparsity_level),
            ("Sparsity level of all sparsified layers", self.sparsity_level_for_layers),
            *extra_rows,
        ]
        header = ["Layer", "Weight shape", "Sparsity level", "Weight %"]
        if thresholds is not None:
            header.append("Threshold")
        layer_rows = []
        for layer in self.sparsified_layers_summary:
            row = [
                layer.name,
                str(layer.weight_shape),
                layer.sparsity_level,
                layer.weight_percentage,
            ]
            if thresholds is not None:
                row.append(thresholds[layer.name])
            layer_rows.append(row)
        return [
            make_table(f"{title}: model", ["Statistic", "Value"], model_rows),
            make_table(f"{title}: layers", header, layer_rows),
        ]

    def to_str(self) -> str:
        return render_tables(self.tables("Sparsity"))


@jax.jit
def _zero_counts(params: Any) -> list[jax.Array]:
    return [jnp.sum(leaf == 0) for leaf in jax.tree_util.tree_leaves(params)]


def model_sparsity_statistics(params: Any, masks: Any) -> SparsifiedModelStatistics:
    """Counts zeros in the masked params (runs on the host; for statistics, not steps).

    Args:
      params: the params pytree.
      masks: masks at the targeted weight paths.
    """
    masked = apply_masks(params, masks)
    flat = flatten_params(masked)
    zeros = dict(zip(flat, (int(z) for z in jax.device_get(_zero_counts(masked))), strict=True))
    targets = list(flatten_params(masks))
    sizes = {name: int(np.prod(np.shape(leaf))) for name, leaf in flat.items()}
    total = sum(sizes.values())
    targeted = sum(sizes[n] for n in targets)
    layers = tuple(
        LayerSparsity(
            name=n,
            weight_shape=tuple(np.shape(flat[n])),
            sparsity_level=zeros[n] / max(sizes[n], 1),
            weight_percentage=100.0 * sizes[n] / max(targeted, 1),
        )
        for n in targets
    )
    return SparsifiedModelStatistics(
        sparsity_level=sum(zeros.values()) / max(total, 1),
        sparsity_level_for_layers=sum(zeros[n] for n in targets) / max(targeted, 1),
        sparsified_layers_summary=layers,
    )


@jax.jit
def _non_finite_counts(leaves: list[jax.Array]) -> list[tuple[jax.Array, jax.Array]]:
    return [(jnp.sum(jnp.isnan(x)), jnp.sum(jnp.isinf(x))) for x in leaves]


def warn_non_finite_weights(params: Any, targets: list[str], algorithm: str) -> None:
    """Warns, naming each param, when targeted weights hold NaN or Inf (host side, build time).

    The behaviour is defined (see `weight_importance`): NaN weights rank
    lowest and are pruned first, Inf weights rank highest and are kept.
    """
    flat = flatten_params(params)
    counts = jax.device_get(_non_finite_counts([flat[n] for n in targets]))
    for name, (nans, infs) in zip(targets, counts, strict=True):
        if nans or infs:
            warnings.warn(
                f"{name}: {int(nans)} NaN and {int(infs)} Inf weights under {algorithm}; NaN "
                "weights rank lowest (pruned first at any level above 0, then exactly 0), "
                "Inf weights rank highest (kept)",
                RuntimeWarning,
                stacklevel=3,
            )
