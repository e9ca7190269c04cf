"""N:M structured sparsity (``nm_sparsity``): N kept in every M consecutive input weights.

The pattern. A kernel's *group axis* is its input-feature axis, the second to
last: axis 0 of a Dense kernel ``(in, out)``, axis 2 of a Conv or
ConvTranspose kernel ``(h, w, in, out)``. Along it, the weights of each
output column (of each ``(h, w, out)`` position for a convolution) are cut
into groups of M consecutive entries, ``[0, M), [M, 2M), ...``. In each group
the N weights of largest magnitude ``|w|`` are kept and the other ``M - N``
are masked to zero: the layout that sparse matrix units read (2:4 along the
reduction dimension). Precisely:

- Ties: among equal magnitudes the lower index along the group axis is kept.
- A last, partial group of ``r < M`` weights (the input size is not a
  multiple of M) keeps its ``min(N, r)`` largest. That is the rule for the
  kernel zero-padded along the group axis to a multiple of M, so the padded
  kernel is exactly N:M. A layer with at most N inputs (e.g. the first
  convolution of a grayscale model under 2:4) stays dense.
- NaN weights rank below every number (masked first; a masked weight is an
  exact 0 in the forward) and +-Inf above every number.

When. ``start_epoch`` S and ``freeze_epoch`` F (default S + 1): before epoch
S every weight is kept; at the start of each epoch ``e`` with
``S <= e < F`` the masks are recomputed from the current weights; from F
they stay. With S = 0 the initial state already has the pattern (it stands
for the first iteration of epoch 0, as ``ctrl.transform`` uses it). Once on,
the pattern stays on. Pruned weights are held still between refreshes, so a
refresh can bring one back only if a kept weight of its group fell below it.

NNCF 2.x has no N:M sparsity; the config keys follow its sparsity sections.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from nncf_jax.core.algorithm import CompressionAlgorithm
from nncf_jax.core.paths import flatten_params, unflatten_params
from nncf_jax.core.stage import CompressionStage
from nncf_jax.core.state import Clock
from nncf_jax.core.statistics import make_table, render_tables
from nncf_jax.errors import ConfigError, UsageError
from nncf_jax.sparsity.masks import (
    SparsifiedModelStatistics,
    apply_masks,
    mask_updates,
    model_sparsity_statistics,
)

__all__ = [
    "NMLayer",
    "NMSettings",
    "NMSparsity",
    "NMSparsityState",
    "NMSparsityStatistics",
    "nm_mask",
    "nm_pattern_holds",
]

GROUP_AXIS = -2
# Sort keys below every magnitude (which is >= 0): NaN weights, then the
# padding of a partial group, which must never take a kept place.
_NAN_RANK = -1.0
_PAD_RANK = -2.0


def _check_pattern(n: int, m: int) -> None:
    for name, value in (("n", n), ("m", m)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise UsageError(f"{name}: expected an integer, got {value!r}")
    if not 1 <= n < m:
        raise UsageError(f"expected 1 <= n < m, got n={n}, m={m}")


def _effective_group(n: int, m: int, length: int) -> tuple[int, int]:
    """``(n, m)`` for an axis of ``length``: a group longer than the axis is
    the whole axis (same mask, no padding to a huge M)."""
    m_eff = min(m, length)
    return min(n, m_eff), m_eff


def _grouped(x: jax.Array, m: int, axis: int, pad_value: Any) -> jax.Array:
    """``x`` with ``axis`` moved last, padded to a multiple of ``m`` and split:
    shape ``(*other axes, groups, m)``."""
    x = jnp.moveaxis(x, axis, -1)
    length = x.shape[-1]
    groups = -(-length // m)
    pad = groups * m - length
    if pad:
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)], constant_values=pad_value)
    return x.reshape(*x.shape[:-1], groups, m)


def nm_mask(w: jax.Array, n: int, m: int, *, axis: int = GROUP_AXIS) -> jax.Array:
    """The N:M mask of one weight: N kept of every M consecutive entries along ``axis``.

    Args:
      w: a float array of rank >= 1, e.g. a Dense kernel ``(in, out)`` or a
        Conv kernel ``(h, w, in, out)``.
      n: weights kept per group, ``1 <= n < m``.
      m: group size.
      axis: the group axis; the kernels' input axis (-2) by default.

    Returns:
      A bool array shaped like ``w``. With ``g`` a group of ``|w|`` along
      ``axis``, entry ``i`` of ``g`` is kept iff
      ``#{j : g_j > g_i or (g_j == g_i and j < i)} < n``; a partial last group
      of ``r`` entries keeps ``min(n, r)``; NaN counts as below every number.

    Raises:
      UsageError: ``n``/``m`` are not integers with ``1 <= n < m``, or ``w``
        has no such axis.

    Example:
      >>> w = jnp.array([[0.1], [-3.0], [2.0], [0.5], [1.0], [1.0], [-1.0], [0.0]])
      >>> nm_mask(w, 2, 4)[:, 0].astype(int).tolist()
      [0, 1, 1, 0, 1, 1, 0, 0]
    """
    _check_pattern(n, m)
    if not -w.ndim <= axis < w.ndim:
        raise UsageError(f"axis {axis} is out of range for a weight of shape {tuple(w.shape)}")
    axis %= w.ndim
    n_eff, m_eff = _effective_group(n, m, w.shape[axis])
    if n_eff >= m_eff:
        return jnp.ones(w.shape, jnp.bool_)
    magnitude = jnp.abs(w.astype(jnp.float32))
    magnitude = jnp.where(jnp.isnan(magnitude), _NAN_RANK, magnitude)
    groups = _grouped(magnitude, m_eff, axis, _PAD_RANK)
    # A stable sort of -|w| puts the larger magnitude first and, among equal
    # ones, the lower index first; the second argsort inverts the permutation
    # into each entry's rank inside its group.
    order = jnp.argsort(-groups, axis=-1, stable=True)
    rank = jnp.argsort(order, axis=-1, stable=True)
    keep = (rank < n_eff).reshape(*groups.shape[:-2], -1)[..., : w.shape[axis]]
    return jnp.moveaxis(keep, -1, axis)


def nm_pattern_holds(w: jax.Array, n: int, m: int, *, axis: int = GROUP_AXIS) -> jax.Array:
    """Whether ``w`` is N:M along ``axis``: at most ``n`` non-zeros in every group of ``m``.

    Groups are those of `nm_mask`; the kernel is read zero-padded to a
    multiple of ``m``, so a partial group may hold ``min(n, r)`` non-zeros.

    Returns:
      A bool scalar (jnp), True iff every group has at most ``n`` non-zeros.

    Example:
      >>> nm_pattern_holds(jnp.array([[1.0], [0.0], [2.0], [0.0]]), 2, 4).item()
      True
    """
    _check_pattern(n, m)
    if not -w.ndim <= axis < w.ndim:
        raise UsageError(f"axis {axis} is out of range for a weight of shape {tuple(w.shape)}")
    axis %= w.ndim
    n_eff, m_eff = _effective_group(n, m, w.shape[axis])
    if n_eff >= m_eff:
        return jnp.bool_(True)
    counts = jnp.sum(_grouped(w != 0, m_eff, axis, False), axis=-1)
    return jnp.all(counts <= n_eff)


@dataclass(frozen=True)
class NMSettings:
    """The parsed ``params`` of an ``nm_sparsity`` section.

    Attributes:
      n: weights kept per group.
      m: group size (``n < m``).
      start_epoch: the first epoch with the pattern on.
      freeze_epoch: masks are recomputed at the start of epochs
        ``start_epoch .. freeze_epoch - 1``, then kept; None means
        ``start_epoch + 1`` (computed once).
    """

    n: int = 2
    m: int = 4
    start_epoch: int = 0
    freeze_epoch: int | None = None

    @classmethod
    def from_section(cls, section: Mapping[str, Any], path: str) -> NMSettings:
        """Reads a defaults-resolved ``nm_sparsity`` section.

        Raises:
          ConfigError: ``n >= m`` or ``freeze_epoch <= start_epoch`` (the
            schema catches both; this guards sections built by hand).
        """
        params = section.get("params", {})
        n, m = int(params.get("n", 2)), int(params.get("m", 4))
        if not 1 <= n < m:
            raise ConfigError(f"{path}.params.n", f"expected 1 <= n < m ({m}), got {n}")
        start = int(params.get("start_epoch", 0))
        freeze = params.get("freeze_epoch")
        if freeze is not None and not int(freeze) > start:
            raise ConfigError(
                f"{path}.params.freeze_epoch",
                f"expected freeze_epoch > start_epoch ({start}), got {freeze}",
            )
        return cls(n, m, start, None if freeze is None else int(freeze))

    @property
    def rate(self) -> float:
        """``1 - n / m``: the fraction masked in every full group."""
        return 1.0 - self.n / self.m

    @property
    def last_refresh_epoch(self) -> int:
        """The last epoch whose start recomputes the masks (fits int32)."""
        return self.start_epoch if self.freeze_epoch is None else self.freeze_epoch - 1

    @property
    def pattern(self) -> str:
        return f"{self.n}:{self.m}"


@functools.lru_cache(maxsize=64)
def _jitted_masks(targets: tuple[str, ...], n: int, m: int):
    """Jitted ``params -> nested masks`` for one target set and pattern."""

    def compute(params: Any) -> dict:
        flat = flatten_params(params)
        return unflatten_params({t: nm_mask(flat[t], n, m) for t in targets})

    return jax.jit(compute)


class NMSparsityState(struct.PyTreeNode):
    """State of N:M sparsity.

    Attributes:
      masks: bool masks at the targeted weight paths, shaped like each weight
        (all True while the pattern is off).
      level: float32 scalar: 0 while the pattern is off, ``1 - n/m`` once on
        (what ``scheduler.current_sparsity_level`` reports).
    """

    masks: dict
    level: jax.Array


@dataclass(frozen=True)
class NMLayer:
    """One targeted weight under N:M sparsity.

    Attributes:
      name: param path, e.g. ``Conv_1/kernel``.
      weight_shape: the weight's shape.
      group_axis: the axis the groups run along (``ndim - 2``).
      full_groups: complete groups of ``m`` per output column.
      partial_group: length of the last, partial group (0: none).
      pattern_sparsity: fraction of the weight the mask removes.
      sparsity_level: fraction of zeros in ``w * mask``.
    """

    name: str
    weight_shape: tuple[int, ...]
    group_axis: int
    full_groups: int
    partial_group: int
    pattern_sparsity: float
    sparsity_level: float


@dataclass(frozen=True)
class NMSparsityStatistics:
    """Statistics of N:M sparsity.

    Attributes:
      model_statistics: `SparsifiedModelStatistics` (zeros over all params
        and over the targeted weights).
      pattern: ``"n:m"``.
      active: whether the pattern is on.
      layers: one `NMLayer` per targeted weight.
      scheduled_sparsity_level: the level in force (0 or ``1 - n/m``).
      target_sparsity_level: ``1 - n/m``.
    """

    model_statistics: SparsifiedModelStatistics
    pattern: str
    active: bool
    layers: tuple[NMLayer, ...]
    scheduled_sparsity_level: float
    target_sparsity_level: float

    def tables(self):
        extra = [
            ("Pattern", f"{self.pattern} along the input axis"),
            ("Pattern on", str(self.active)),
            ("Scheduled sparsity level", self.scheduled_sparsity_level),
            ("Target sparsity level", self.target_sparsity_level),
        ]
        model_table = self.model_statistics.tables("N:M sparsity", extra)[0]
        header = ["Layer", "Weight shape", "Group axis", "Full groups", "Partial group"]
        header += ["Pattern sparsity", "Sparsity level"]
        rows = [
            [
                layer.name,
                str(layer.weight_shape),
                layer.group_axis,
                layer.full_groups,
                layer.partial_group or "-",
                layer.pattern_sparsity,
                layer.sparsity_level,
            ]
            for layer in self.layers
        ]
        return [model_table, make_table("N:M sparsity: layers", header, rows)]

    def to_str(self) -> str:
        return render_tables(self.tables())


@jax.jit
def _kept_counts(masks: list[jax.Array]) -> list[jax.Array]:
    return [jnp.sum(mask) for mask in masks]


class NMSparsity(CompressionAlgorithm):
    """N:M structured sparsity over a fixed set of weight paths.

    Args:
      targets: param paths of the weights to sparsify (rank >= 2).
      settings: the parsed `NMSettings`.
      config_path: JSON path of the config section.
    """

    name = "nm_sparsity"

    def __init__(
        self, targets: Sequence[str], settings: NMSettings, config_path: str = "compression"
    ):
        _check_pattern(settings.n, settings.m)
        self.targets = tuple(targets)
        self.settings = settings
        self.config_path = config_path
        self.maximal_compression_rate = settings.rate

    @property
    def _masks(self):
        # One compiled program, shared by controllers with the same targets
        # and pattern; inside a caller's jit it inlines.
        return _jitted_masks(self.targets, self.settings.n, self.settings.m)

    def _state(self, params: Any, active: bool) -> NMSparsityState:
        if active:
            masks = self._masks(params)
        else:
            flat = flatten_params(params)
            masks = unflatten_params(
                {t: jnp.ones(np.shape(flat[t]), jnp.bool_) for t in self.targets}
            )
        return NMSparsityState(masks, jnp.float32(self.settings.rate if active else 0.0))

    # --- pure functions ---------------------------------------------------

    def init_state(self, params: Any) -> NMSparsityState:
        return self._state(params, self.settings.start_epoch == 0)

    def compress_params(self, params: Any, state: NMSparsityState) -> Any:
        return apply_masks(params, state.masks)

    def filter_updates(self, updates: Any, state: NMSparsityState) -> Any:
        return mask_updates(updates, state.masks)

    def advance(self, state, params_fn, clock: Clock, *, new_epoch, new_step):
        del new_step  # masks move at epoch starts only
        epoch = clock.epoch
        active = state.level > 0
        refresh = (
            jnp.asarray(new_epoch, jnp.bool_)
            & (epoch >= self.settings.start_epoch)
            & ((epoch <= self.settings.last_refresh_epoch) | ~active)
        )
        masks = jax.lax.cond(refresh, lambda: self._masks(params_fn()), lambda: state.masks)
        level = jnp.where(refresh, jnp.float32(self.settings.rate), state.level)
        return NMSparsityState(masks, level.astype(jnp.float32))

    # --- host side --------------------------------------------------------

    def builder_state(self) -> dict[str, Any]:
        return {"target_weights": list(self.targets), "n": self.settings.n, "m": self.settings.m}

    def scheduler_state(self, state: NMSparsityState) -> dict[str, Any]:
        return {"current_sparsity_level": float(state.level)}

    def load_scheduler_state(self, state, params, clock: Clock, saved: dict[str, Any]):
        if "current_sparsity_level" in saved:
            active = float(saved["current_sparsity_level"]) > 0
        else:
            # Only counters (e.g. scheduler.load_state): replay the schedule.
            active = self.settings.start_epoch == 0 or int(clock.epoch) >= self.settings.start_epoch
        # Masks are recomputed from the params, as the magnitude sparsity
        # resume does; the orbax checkpoint restores them bit for bit.
        return self._state(params, active)

    def compression_rate(self, state, params) -> float:
        """Fraction of the targeted weights the masks remove (``1 - n/m`` when
        every group axis is a multiple of ``m``; 0 while the pattern is off)."""
        masks = list(flatten_params(state.masks).values())
        total = sum(int(np.prod(np.shape(mask))) for mask in masks)
        kept = sum(int(k) for k in jax.device_get(_kept_counts(masks)))
        return 1.0 - kept / max(total, 1)

    def compression_stage(self, state) -> CompressionStage:
        if float(state.level) > 0:
            return CompressionStage.FULLY_COMPRESSED
        return CompressionStage.UNCOMPRESSED

    def statistics(self, state, params) -> NMSparsityStatistics:
        model_statistics = model_sparsity_statistics(params, state.masks)
        flat_masks = flatten_params(state.masks)
        kept = dict(
            zip(flat_masks, jax.device_get(_kept_counts(list(flat_masks.values()))), strict=True)
        )
        zeros = {s.name: s.sparsity_level for s in model_statistics.sparsified_layers_summary}
        m = self.settings.m
        layers = []
        for name, mask in flat_masks.items():
            shape = tuple(np.shape(mask))
            axis = len(shape) + GROUP_AXIS
            length = shape[axis]
            layers.append(
                NMLayer(
                    name=name,
                    weight_shape=shape,
                    group_axis=axis,
                    full_groups=length // m,
                    partial_group=length % m,
                    pattern_sparsity=1.0 - int(kept[name]) / max(int(np.prod(shape)), 1),
                    sparsity_level=zeros[name],
                )
            )
        level = float(state.level)
        return NMSparsityStatistics(
            model_statistics=model_statistics,
            pattern=self.settings.pattern,
            active=level > 0,
            layers=tuple(layers),
            scheduled_sparsity_level=level,
            target_sparsity_level=self.settings.rate,
        )
