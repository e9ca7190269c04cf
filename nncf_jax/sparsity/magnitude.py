"""Magnitude sparsity (NNCF ``magnitude_sparsity``) and its mask function.

Importance is ``|w|`` (``abs``) or ``|w| / ||w||_2`` per tensor
(``normed_abs``). At level ``l`` the threshold is the element of rank
``k = floor((N - 1) * l)`` of the sorted importances, over all targeted
weights (``global``) or per tensor (``local``), and ``mask = importance > thr``:
ties with the threshold are pruned, as in NNCF.

Differences from NNCF, on purpose:
- Level 0 keeps every weight. NNCF applies its threshold rule at level 0 too,
  which prunes the smallest weight(s) of the model before any sparsity is
  scheduled.
- Local mode always uses one threshold per tensor; NNCF's local mode fell
  back to one global threshold when the level was set for the whole model.
- The threshold is found by an exact radix select (`kth_smallest`), not a
  full sort: same value, linear time.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from nncf_jax.core.algorithm import CompressionAlgorithm
from nncf_jax.core.paths import flatten_params, unflatten_params
from nncf_jax.core.stacking import layer_slices
from nncf_jax.core.stage import CompressionStage
from nncf_jax.core.state import Clock
from nncf_jax.core.statistics import render_tables
from nncf_jax.errors import ConfigError
from nncf_jax.sparsity.masks import (
    SparsifiedModelStatistics,
    apply_masks,
    mask_updates,
    model_sparsity_statistics,
)
from nncf_jax.sparsity.schedule import SparsitySchedule
from nncf_jax.sparsity.threshold import kth_smallest

__all__ = [
    "MagnitudeSparsity",
    "MagnitudeSparsityState",
    "MagnitudeSparsityStatistics",
    "magnitude_masks",
    "weight_importance",
]

_IMPORTANCES = ("abs", "normed_abs")
_MODES = ("global", "local")


def weight_importance(w: jax.Array, kind: str) -> jax.Array:
    """``|w|`` (``abs``) or ``|w| / ||w||_2`` (``normed_abs``), float32, shaped like ``w``.

    Non-finite weights have a defined place: NaN gets importance 0 (it ranks
    lowest, so it is pruned first at any level above 0, and a pruned weight
    is exactly 0 in the forward); +-Inf gets importance +Inf (kept). The norm
    of ``normed_abs`` is taken over the finite entries, so one NaN does not
    poison its tensor. An all-zero tensor has importance 0 everywhere (NNCF
    divides by zero there and gets NaN).
    """
    magnitude = jnp.abs(w.astype(jnp.float32))
    magnitude = jnp.where(jnp.isnan(magnitude), 0.0, magnitude)
    if kind == "abs":
        return magnitude
    finite = jnp.where(jnp.isfinite(magnitude), magnitude, 0.0)
    norm = jnp.sqrt(jnp.sum(finite * finite))
    return jnp.where(norm > 0, magnitude / jnp.where(norm > 0, norm, 1.0), magnitude)


def _rank(count: int, level: jax.Array) -> jax.Array:
    # floor((N - 1) * level). The level is float32 (0.7 is stored as
    # 0.69999999); a few ulps of slack keep exact products such as 10 * 0.7
    # on the integer NNCF computes in float64.
    product = jnp.float32(count - 1) * level
    return jnp.floor(product + product * 2.0**-21).astype(jnp.int32)


def magnitude_masks(
    weights: Sequence[jax.Array],
    level: jax.Array | float,
    *,
    importance: str = "normed_abs",
    mode: str = "global",
) -> tuple[list[jax.Array], jax.Array]:
    """NNCF magnitude masks for a list of weights at one sparsity level.

    Args:
      weights: the targeted weights, any shapes.
      level: float32 scalar in [0, 1).
      importance: "abs" or "normed_abs".
      mode: "global" (one threshold over all weights) or "local" (one per tensor).

    Returns:
      ``(masks, thresholds)``: bool masks shaped like the weights, and a
      float32 vector with each weight's threshold.

    Example:
      >>> w1 = jnp.array([[10.0, 9.0], [9.0, 10.0]])
      >>> masks, _ = magnitude_masks([w1], 0.3, importance="abs")
      >>> masks[0].astype(int).tolist()
      [[1, 0], [0, 1]]
    """
    level = jnp.asarray(level, jnp.float32)
    importances = [weight_importance(w, importance) for w in weights]
    if mode == "global":
        total = sum(int(np.prod(i.shape)) for i in importances)
        threshold = kth_smallest(importances, _rank(total, level))
        thresholds = [threshold] * len(importances)
    else:
        thresholds = [kth_smallest([i], _rank(int(np.prod(i.shape)), level)) for i in importances]
    masks = [
        jnp.where(level > 0, i > t, True) for i, t in zip(importances, thresholds, strict=True)
    ]
    return masks, jnp.stack(thresholds) if thresholds else jnp.zeros((0,), jnp.float32)


@functools.lru_cache(maxsize=64)
def _jitted_masks(
    targets: tuple[str, ...], importance: str, mode: str, stacks: tuple[int, ...] = ()
):
    """Jitted ``(params, level) -> (nested masks, thresholds)`` for one target set.

    ``stacks[i]`` leading axes of target ``i`` hold stacked layers
    (``nn.scan``): each layer slice is its own tensor, as in the unrolled
    model (its own importance norm, its own threshold in local mode).
    """
    stacks = stacks or (0,) * len(targets)

    def compute(params: Any, level: jax.Array) -> tuple[dict, jax.Array]:
        flat = flatten_params(params)
        slices, counts = [], []
        for name, k in zip(targets, stacks, strict=True):
            parts = layer_slices(flat[name], k)
            slices += parts
            counts.append(len(parts))
        slice_masks, thresholds = magnitude_masks(slices, level, importance=importance, mode=mode)
        masks, start = {}, 0
        for name, k, count in zip(targets, stacks, counts, strict=True):
            part = slice_masks[start : start + count]
            start += count
            masks[name] = jnp.stack(part).reshape(flat[name].shape) if k else part[0]
        return unflatten_params(masks), thresholds

    return jax.jit(compute)


class MagnitudeSparsityState(struct.PyTreeNode):
    """State of magnitude sparsity.

    Attributes:
      masks: bool masks at the targeted weight paths (shaped like each weight).
      level: float32 scalar, the scheduled sparsity level in force.
      frozen: bool scalar; True after the freeze epoch or a manual rate.
      thresholds: float32 ``(num_targets,)``, each weight's threshold at the
        last refresh.
    """

    masks: dict
    level: jax.Array
    frozen: jax.Array
    thresholds: jax.Array


@dataclass(frozen=True)
class MagnitudeSparsityStatistics:
    """NNCF's ``MagnitudeSparsityStatistics``.

    Attributes:
      model_statistics: `SparsifiedModelStatistics`.
      thresholds: ``{weight path: threshold}`` of the last refresh.
      target_sparsity_level: the schedule's final level.
      scheduled_sparsity_level: the level in force now.
    """

    model_statistics: SparsifiedModelStatistics
    thresholds: dict[str, float]
    target_sparsity_level: float
    scheduled_sparsity_level: float

    def tables(self):
        extra = [
            ("Scheduled sparsity level", self.scheduled_sparsity_level),
            ("Target sparsity level", self.target_sparsity_level),
        ]
        return self.model_statistics.tables("Magnitude sparsity", extra, self.thresholds)

    def to_str(self) -> str:
        return render_tables(self.tables())


class MagnitudeSparsity(CompressionAlgorithm):
    """Magnitude sparsity over a fixed set of weight paths.

    Args:
      targets: param paths of the weights to sparsify.
      schedule: the parsed `SparsitySchedule`.
      importance: "abs" or "normed_abs".
      mode: "global" or "local".
      config_path: JSON path of the config section.
    """

    name = "magnitude_sparsity"

    def __init__(
        self,
        targets: Sequence[str],
        schedule: SparsitySchedule,
        importance: str = "normed_abs",
        mode: str = "global",
        config_path: str = "compression",
        stacks: dict[str, int] | None = None,
    ):
        if importance not in _IMPORTANCES:
            raise ConfigError(
                f"{config_path}.params.weight_importance",
                f"expected one of {', '.join(map(repr, _IMPORTANCES))}, got {importance!r}",
            )
        if mode not in _MODES:
            raise ConfigError(
                f"{config_path}.params.sparsity_level_setting_mode",
                f"expected one of {', '.join(map(repr, _MODES))}, got {mode!r}",
            )
        self.targets = tuple(targets)
        self.schedule = schedule
        self.importance = importance
        self.mode = mode
        self.config_path = config_path
        stacks = stacks or {}
        self.stacks = tuple(int(stacks.get(t, 0)) for t in self.targets)

    @classmethod
    def from_config(
        cls,
        section: dict[str, Any],
        config_path: str,
        targets: Sequence[str],
        given: dict[str, Any] | None = None,
        stacks: dict[str, int] | None = None,
    ):
        """Builds from a defaults-resolved ``magnitude_sparsity`` section
        (``given``: the section as written, see `SparsitySchedule.from_section`)."""
        params = section.get("params", {})
        return cls(
            targets,
            SparsitySchedule.from_section(
                section, config_path, default_kind="polynomial", given=given
            ),
            importance=params.get("weight_importance", "normed_abs"),
            mode=params.get("sparsity_level_setting_mode", "global"),
            config_path=config_path,
            stacks=stacks,
        )

    # --- pure functions ---------------------------------------------------

    @property
    def _masks(self):
        # One compiled program instead of dozens of small eager ops at build
        # time and in the facade, shared by every controller with the same
        # targets and settings; inside a caller's jit it simply inlines.
        return _jitted_masks(self.targets, self.importance, self.mode, self.stacks)

    def _names_for(self, params: Any) -> list[str]:
        """One name per threshold: a target, or ``target[i]`` per stacked layer."""
        flat = flatten_params(params)
        names = []
        for target, k in zip(self.targets, self.stacks, strict=True):
            if not k:
                names.append(target)
                continue
            count = int(np.prod(np.shape(flat[target])[:k]))
            names += [f"{target}[{i}]" for i in range(count)]
        return names

    def init_state(self, params: Any) -> MagnitudeSparsityState:
        level = jnp.float32(self.schedule.init)
        masks, thresholds = self._masks(params, level)
        return MagnitudeSparsityState(masks, level, jnp.bool_(False), thresholds)

    def compress_params(self, params: Any, state: MagnitudeSparsityState) -> Any:
        return apply_masks(params, state.masks)

    def filter_updates(self, updates: Any, state: MagnitudeSparsityState) -> Any:
        return mask_updates(updates, state.masks)

    def advance(self, state, params_fn, clock: Clock, *, new_epoch, new_step):
        level, frozen, refresh = self.schedule.advance(
            state.level, state.frozen, clock, new_epoch=new_epoch, new_step=new_step
        )
        masks, thresholds = jax.lax.cond(
            refresh,
            lambda: self._masks(params_fn(), level),
            lambda: (state.masks, state.thresholds),
        )
        return MagnitudeSparsityState(masks, level, frozen, thresholds)

    # --- host side --------------------------------------------------------

    def builder_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"target_weights": list(self.targets)}
        stacked = {t: k for t, k in zip(self.targets, self.stacks, strict=True) if k}
        if stacked:
            state["stacked_axes"] = stacked
        return state

    def scheduler_state(self, state: MagnitudeSparsityState) -> dict[str, Any]:
        return {"current_sparsity_level": float(state.level), "frozen": bool(state.frozen)}

    def load_scheduler_state(self, state, params, clock: Clock, saved: dict[str, Any]):
        if "current_sparsity_level" in saved:
            level = jnp.float32(saved["current_sparsity_level"])
            frozen = jnp.bool_(saved.get("frozen", False))
        elif int(clock.epoch) < 0:
            level, frozen = jnp.float32(self.schedule.init), jnp.bool_(False)
        else:
            # A state written by NNCF has only the counters: replay the schedule.
            frozen = int(clock.epoch) >= self.schedule.freeze_epoch
            position = self.schedule.position(clock)
            if frozen:
                position = jnp.minimum(position, self.schedule.freeze_epoch - 1)
            level, frozen = self.schedule.level_fn()(position), jnp.bool_(frozen)
        masks, thresholds = self._masks(params, level)
        return MagnitudeSparsityState(masks, level, frozen, thresholds)

    def compression_rate(self, state, params) -> float:
        return model_sparsity_statistics(params, state.masks).sparsity_level

    def set_compression_rate(self, state, params, rate: float):
        if not 0.0 <= float(rate) < 1.0:
            raise ConfigError("compression_rate", f"expected a value in [0, 1), got {rate!r}")
        level = jnp.float32(rate)
        masks, thresholds = self._masks(params, level)
        return MagnitudeSparsityState(masks, level, jnp.bool_(True), thresholds)

    def compression_stage(self, state) -> CompressionStage:
        level = float(state.level)
        if level == 0.0:
            return CompressionStage.UNCOMPRESSED
        # The level is float32: 0.7 is stored as 0.69999999, so compare in float32.
        if level >= float(np.float32(self.schedule.target)):
            return CompressionStage.FULLY_COMPRESSED
        return CompressionStage.PARTIALLY_COMPRESSED

    def statistics(self, state, params) -> MagnitudeSparsityStatistics:
        thresholds = np.asarray(jax.device_get(state.thresholds)).tolist()
        return MagnitudeSparsityStatistics(
            model_statistics=model_sparsity_statistics(params, state.masks),
            thresholds=dict(zip(self._names_for(params), thresholds, strict=True)),
            target_sparsity_level=self.schedule.target,
            scheduled_sparsity_level=float(state.level),
        )
