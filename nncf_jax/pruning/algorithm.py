"""Filter pruning (NNCF ``filter_pruning``) over the channel groups of `graph`.

One bool mask per prunable group, shape ``(N,)``. The masks multiply (by
``where``) every member of the group: the output filters of its producer
kernels, their biases, batch-norm scale/bias (``prune_batch_norms``) and the
input channels of the kernels that read it. A kernel reading a
concatenation along channels gets, on its input-channel axis, the
concatenation of its segments' group masks (all-true for segments of
unprunable groups). Masks are recomputed at each
``epoch_step`` until the schedule freezes, inside the jitted step under
``lax.cond``; pruned weights get zero updates.

Schedules (REFERENCE.md section 3, ``w = num_init_steps``, ``S = pruning_steps``):
``baseline`` (target from epoch ``w``, frozen there), ``exponential`` and
``exponential_with_bias`` (frozen from epoch ``w + S``). The level is set at
the epoch step, then the freeze is checked, so the freeze epoch's level is
applied (NNCF's pruning order, unlike sparsity's).

With ``pruning_flops_target`` the schedule runs on the FLOPs reduction, and
each scheduled FLOPs level becomes the smallest uniform pruning level that
reaches it (a table over levels 0, 0.001, ..., 0.999 computed at build time
from the jaxpr's FLOPs; it is exact for uniform ranking, and used as is with
``all_weights``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from nncf_jax.core import schedules
from nncf_jax.core.algorithm import CompressionAlgorithm
from nncf_jax.core.paths import flatten_params
from nncf_jax.core.stage import CompressionStage
from nncf_jax.core.state import Clock
from nncf_jax.core.statistics import make_table, render_tables
from nncf_jax.errors import ConfigError
from nncf_jax.pruning.graph import ChannelGroup, PruningGraph
from nncf_jax.pruning.importance import (
    IMPORTANCES,
    global_masks,
    group_importance,
    kept_count,
    level_mask,
)

__all__ = ["FilterPruning", "FilterPruningState", "FilterPruningStatistics", "PruningSchedule"]

_SCHEDULES = ("exponential", "exponential_with_bias", "baseline")
_PREFIX = "params/"


@dataclass(frozen=True)
class PruningSchedule:
    """Parsed pruning schedule.

    Attributes:
      kind: "exponential", "exponential_with_bias" or "baseline".
      init: ``pruning_init``; the level before the first epoch step.
      target: ``pruning_target`` or ``pruning_flops_target``.
      num_init_steps: warm-up epochs at level 0.
      pruning_steps: epochs to reach the target.
    """

    kind: str
    init: float
    target: float
    num_init_steps: int
    pruning_steps: int

    @property
    def freeze_epoch(self) -> int:
        if self.kind == "baseline":
            return self.num_init_steps
        return self.num_init_steps + self.pruning_steps

    def level_fn(self) -> schedules.Schedule:
        if self.kind == "baseline":
            return schedules.baseline_pruning_schedule(self.target, self.num_init_steps)
        if self.kind == "exponential":
            return schedules.exponential_pruning_schedule(
                self.init, self.target, self.num_init_steps, self.pruning_steps
            )
        return schedules.exponential_with_bias_pruning_schedule(
            self.init, self.target, self.num_init_steps, self.pruning_steps
        )

    def advance(self, level, frozen, clock: Clock, *, new_epoch):
        """``(level, frozen, refresh)`` after a tick: level first, then the freeze check."""
        tick = jnp.asarray(new_epoch, jnp.bool_)
        refresh = tick & jnp.logical_not(frozen)
        level = jnp.where(refresh, self.level_fn()(clock.epoch), level).astype(jnp.float32)
        frozen = jnp.logical_or(frozen, tick & (clock.epoch >= self.freeze_epoch))
        return level, frozen, refresh


class FilterPruningState(struct.PyTreeNode):
    """State of filter pruning.

    Attributes:
      masks: ``{"group_<i>": bool (N_i,)}``, one per prunable group.
      level: float32 scalar: the scheduled pruning level (FLOPs mode: the
        scheduled FLOPs reduction).
      frozen: bool scalar.
    """

    masks: dict
    level: jax.Array
    frozen: jax.Array


@dataclass(frozen=True)
class FilterPruningStatistics:
    """Filter pruning statistics.

    Attributes:
      full_flops, current_flops: FLOPs (2 * MACs of conv/dense ops) of the
        dense model and with the pruned filters removed.
      full_params, current_params: parameter counts likewise.
      layers: ``(kernel, filters kept, filters total)`` per producer kernel.
      pruned_groups: number of prunable groups.
      unprunable: ``(producer kernels, reason)`` per group left unpruned.
      pruning_level: the scheduled level; target_level: the schedule's target.
    """

    full_flops: int
    current_flops: int
    full_params: int
    current_params: int
    layers: tuple[tuple[str, int, int], ...]
    pruned_groups: int
    unprunable: tuple[tuple[str, str], ...]
    pruning_level: float
    target_level: float

    @property
    def flops_reduction(self) -> float:
        return 1.0 - self.current_flops / max(self.full_flops, 1)

    def tables(self):
        summary = make_table(
            "Filter pruning",
            ["Statistic", "Value"],
            [
                ("FLOPs (full / current)", f"{self.full_flops} / {self.current_flops}"),
                ("Params (full / current)", f"{self.full_params} / {self.current_params}"),
                ("FLOPs reduction", self.flops_reduction),
                ("Scheduled pruning level", self.pruning_level),
                ("Target pruning level", self.target_level),
                ("Prunable groups", self.pruned_groups),
            ],
        )
        layers = make_table(
            "Pruned layers", ["Layer", "Filters kept", "Filters"], [list(r) for r in self.layers]
        )
        skipped = make_table(
            "Groups left unpruned", ["Producers", "Reason"], [list(r) for r in self.unprunable]
        )
        return [summary, layers, skipped]

    def to_str(self) -> str:
        return render_tables(self.tables())


def _name(path: str) -> str:
    return path[len(_PREFIX) :]


def segment_mask(full: int, segments: list[tuple[int, int, jax.Array]]) -> jax.Array:
    """bool ``(full,)``: the segments' masks ``(offset, size, mask)`` concatenated
    in offset order, all-true where no segment lies."""
    pieces, pos = [], 0
    for offset, size, m in sorted(segments, key=lambda t: t[0]):
        if offset > pos:
            pieces.append(jnp.ones((offset - pos,), jnp.bool_))
        pieces.append(m)
        pos = offset + size
    if pos < full:
        pieces.append(jnp.ones((full - pos,), jnp.bool_))
    return jnp.concatenate(pieces)


def _apply_group_masks(params: Any, masks: dict, members: dict[str, list[tuple]]):
    """``where(mask, w, 0)`` along each member axis.

    members: ``name -> [(group, axis, offset, length)]``; ``length`` None: the
    group covers the whole axis, else one segment of a concatenation (the
    axis's segments' masks are concatenated).
    """
    flat = dict(flatten_params(params))
    for name, entries in members.items():
        if name not in flat:
            continue
        w = flat[name]
        axis_masks: list[tuple[int, jax.Array]] = []
        segments: dict[int, list[tuple[int, int, jax.Array]]] = {}
        for group, axis, offset, length in entries:
            m = masks[f"group_{group}"]
            if length is None:
                axis_masks.append((axis, m))
            else:
                segments.setdefault(axis, []).append((offset, length, m))
        for axis, segs in segments.items():
            axis_masks.append((axis, segment_mask(w.shape[axis], segs)))
        for axis, m in axis_masks:
            shape = [1] * w.ndim
            shape[axis] = m.shape[0]
            w = jnp.where(m.reshape(shape), w, jnp.zeros((), w.dtype))
        flat[name] = w
    return _restore(params, flat)


def _restore(params: Any, flat: dict[str, Any]) -> Any:
    leaves = list(flat.values())
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), leaves)


class FilterPruning(CompressionAlgorithm):
    """NNCF filter pruning over the groups of a `PruningGraph`.

    Args:
      graph: the model's `PruningGraph`.
      schedule: the parsed `PruningSchedule`.
      importance: "L2", "L1" or "geometric_median".
      all_weights: one global ranking over all groups.
      prune_batch_norms: mask batch-norm scale/bias too.
      flops_mode: the schedule's target is ``pruning_flops_target``.
      config_path: JSON path of the section.
      apply_fn: the model's forward the graph was traced from (for `shrink`).
    """

    name = "filter_pruning"

    def __init__(
        self,
        graph: PruningGraph,
        schedule: PruningSchedule,
        *,
        importance: str = "L2",
        all_weights: bool = False,
        prune_batch_norms: bool = True,
        flops_mode: bool = False,
        config_path: str = "compression",
        apply_fn: Any = None,
    ):
        if importance not in IMPORTANCES:
            raise ConfigError(
                f"{config_path}.params.filter_importance",
                f"expected one of {', '.join(map(repr, IMPORTANCES))}, got {importance!r}",
            )
        if schedule.kind not in _SCHEDULES:
            raise ConfigError(
                f"{config_path}.params.schedule",
                f"expected one of {', '.join(map(repr, _SCHEDULES))}, got {schedule.kind!r}",
            )
        key = "pruning_flops_target" if flops_mode else "pruning_target"
        if not 0.0 <= schedule.target < 1.0:
            raise ConfigError(
                f"{config_path}.params.{key}",
                f"expected a value in [0, 1), got {schedule.target!r}",
            )
        self.graph = graph
        self.apply_fn = apply_fn
        self.schedule = schedule
        self.importance = importance
        self.all_weights = all_weights
        self.prune_batch_norms = prune_batch_norms
        self.flops_mode = flops_mode
        self.config_path = config_path
        self.groups: tuple[ChannelGroup, ...] = graph.prunable_groups
        bn_modules = {
            p.rsplit("/", 1)[0][len("batch_stats/") :]
            for p in graph.shapes
            if p.startswith("batch_stats/")
        }
        members: dict[str, list[tuple[int, int, int, int | None]]] = {}
        for g in self.groups:
            for m in g.members():
                if not m.path.startswith(_PREFIX):
                    continue
                name = _name(m.path)
                if (
                    not prune_batch_norms
                    and m in g.attached
                    and name.rsplit("/", 1)[0] in bn_modules
                ):
                    continue
                members.setdefault(name, []).append((g.index, m.axis, m.offset, m.length))
        self._members = members
        self.full_flops = graph.flops()
        levels = np.arange(1000) / 1000.0
        self._flops_levels = levels
        self._flops_reductions = np.array(
            [1.0 - graph.flops(self._uniform_kept(lv)) / max(self.full_flops, 1) for lv in levels]
        )

    def _uniform_kept(self, level: float) -> dict[int, int]:
        return {g.index: int(kept_count(g.size, level)) for g in self.groups}

    def pruning_level_for(self, level: jax.Array) -> jax.Array:
        """The uniform pruning level the scheduled level stands for (FLOPs mode: the table)."""
        if not self.flops_mode:
            return jnp.asarray(level, jnp.float32)
        reductions = jnp.asarray(self._flops_reductions, jnp.float32)
        i = jnp.searchsorted(reductions, jnp.asarray(level, jnp.float32) - 1e-6, side="left")
        i = jnp.minimum(i, len(self._flops_levels) - 1)
        return jnp.asarray(self._flops_levels, jnp.float32)[i]

    # --- pure functions ---------------------------------------------------

    def masks(self, params: Any, level: jax.Array | float) -> dict[str, jax.Array]:
        """``{"group_<i>": bool (N,)}`` for these params at a scheduled level."""
        flat = flatten_params(params)
        level = self.pruning_level_for(level)
        scores = [
            group_importance([(flat[_name(m.path)], m.axis) for m in g.producers], self.importance)
            for g in self.groups
        ]
        if self.all_weights:
            masks = global_masks(scores, level)
        else:
            masks = [level_mask(s, level) for s in scores]
        return {f"group_{g.index}": m for g, m in zip(self.groups, masks, strict=True)}

    def init_state(self, params: Any) -> FilterPruningState:
        level = jnp.float32(self.schedule.init)
        return FilterPruningState(self.masks(params, level), level, jnp.bool_(False))

    def compress_params(self, params: Any, state: FilterPruningState) -> Any:
        return _apply_group_masks(params, state.masks, self._members)

    def filter_updates(self, updates: Any, state: FilterPruningState) -> Any:
        return _apply_group_masks(updates, state.masks, self._members)

    def advance(self, state, params_fn, clock: Clock, *, new_epoch, new_step):
        level, frozen, refresh = self.schedule.advance(
            state.level, state.frozen, clock, new_epoch=new_epoch
        )
        masks = jax.lax.cond(
            refresh, lambda: self.masks(params_fn(), level), lambda: dict(state.masks)
        )
        return FilterPruningState(masks, level, frozen)

    # --- host side --------------------------------------------------------

    def kept(self, state: FilterPruningState) -> dict[int, int]:
        """``group index -> kept filters`` under the state's masks."""
        return {
            g.index: int(np.sum(np.asarray(state.masks[f"group_{g.index}"]))) for g in self.groups
        }

    def builder_state(self) -> dict[str, Any]:
        return {
            "groups": [sorted(_name(m.path) for m in g.producers) for g in self.groups],
        }

    def scheduler_state(self, state: FilterPruningState) -> dict[str, Any]:
        return {"current_pruning_level": float(state.level), "frozen": bool(state.frozen)}

    def load_scheduler_state(self, state, params, clock: Clock, saved: dict[str, Any]):
        if "current_pruning_level" in saved:
            level = jnp.float32(saved["current_pruning_level"])
            frozen = jnp.bool_(saved.get("frozen", False))
        elif int(clock.epoch) < 0:
            level, frozen = jnp.float32(self.schedule.init), jnp.bool_(False)
        else:
            epoch = min(int(clock.epoch), self.schedule.freeze_epoch)
            level = self.schedule.level_fn()(epoch)
            frozen = jnp.bool_(int(clock.epoch) >= self.schedule.freeze_epoch)
        return FilterPruningState(self.masks(params, level), jnp.float32(level), frozen)

    def compression_rate(self, state, params) -> float:
        if self.flops_mode:
            return 1.0 - self.graph.flops(self.kept(state)) / max(self.full_flops, 1)
        return float(state.level)

    def set_compression_rate(self, state, params, rate: float):
        if not 0.0 <= float(rate) < 1.0:
            raise ConfigError("compression_rate", f"expected a value in [0, 1), got {rate!r}")
        level = jnp.float32(rate)
        return FilterPruningState(self.masks(params, level), level, jnp.bool_(True))

    def compression_stage(self, state) -> CompressionStage:
        level = float(state.level)
        if level == 0.0:
            return CompressionStage.UNCOMPRESSED
        if level >= float(np.float32(self.schedule.target)):
            return CompressionStage.FULLY_COMPRESSED
        return CompressionStage.PARTIALLY_COMPRESSED

    def statistics(self, state, params) -> FilterPruningStatistics:
        kept = self.kept(state)
        layers = tuple(
            (_name(m.path), kept[g.index], g.size) for g in self.groups for m in g.producers
        )
        unprunable = tuple(
            (", ".join(_name(m.path) for m in g.producers), "; ".join(g.reasons))
            for g in self.graph.groups
            if not g.prunable
        )
        return FilterPruningStatistics(
            full_flops=self.full_flops,
            current_flops=self.graph.flops(kept),
            full_params=self.graph.num_params(),
            current_params=self.graph.num_params(kept),
            layers=layers,
            pruned_groups=len(self.groups),
            unprunable=unprunable,
            pruning_level=float(state.level),
            target_level=self.schedule.target,
        )
