"""Movement sparsity (NNCF ``movement_sparsity``) for Dense / DenseGeneral kernels.

Learned importance scores per weight (or per row, column, block or
attention head), masks ``expand(s) > threshold`` with a straight-through
gradient (`nncf_jax.sparsity.movement`), a threshold and a regularisation
factor that ramp up with a cubic between the warm-up epochs, and masks fixed
(and, with ``enable_structured_masking``, resolved into whole heads and
hidden neurons) once the warm-up ends. The scores are the trainable state
(``ctrl.trainable(cstate)``): a train step that differentiates them trains
the masks.

Score layouts (``MovementSparsity.layouts``, one score shape per kernel)
-----------------------------------------------------------------------
- default: one score per weight (NNCF's ``fine``);
- ``sparse_structure_by_scopes`` on a 2-D kernel ``(in, out)``, with NNCF's
  orientation (a PyTorch weight is ``(out, in)``): ``per_dim`` axis 0 = one
  score per output neuron, shape ``(1, out)``; axis 1 = one per input,
  ``(in, 1)``; ``block`` ``[r, c]`` = one per block of ``r`` outputs x ``c``
  inputs, ``(in / c, out / r)``;
- attention projections (``.../query|key|value/kernel`` ``(in, heads,
  head_dim)`` and ``.../out/kernel`` ``(heads, head_dim, out)`` of a
  ``MultiHeadDotProductAttention``) with ``enable_structured_masking``: one
  score per head, ``(1, heads, 1)`` / ``(heads, 1, 1)`` (a ``fine`` entry of
  ``sparse_structure_by_scopes`` keeps them per weight).

Structured resolution (``enable_structured_masking``) at the warm-up end
-----------------------------------------------------------------------
Groups: the four projections of one attention module (unit: a head), and
the two Dense kernels of a module that holds exactly two targeted 2-D
kernels chained ``(a, h) -> (h, b)`` (an FFN; unit: a hidden neuron). See
`nncf_jax.sparsity.movement.resolve_group`. Other kernels keep their masks.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from nncf_jax.core.algorithm import CompressionAlgorithm
from nncf_jax.core.paths import compile_scope_regex, flatten_params, param_path, unflatten_params
from nncf_jax.core.stage import CompressionStage
from nncf_jax.core.state import Clock
from nncf_jax.core.statistics import render_tables
from nncf_jax.errors import ConfigError, StateMismatchError
from nncf_jax.sparsity.masks import SparsifiedModelStatistics, model_sparsity_statistics
from nncf_jax.sparsity.movement import (
    expand_scores,
    importance_loss,
    kth_smallest_threshold,
    movement_mask,
    movement_schedule,
    resolve_group,
)

__all__ = ["MovementGroup", "MovementSparsity", "MovementSparsityState", "MovementStatistics"]

_QKV = ("query", "key", "value")


class MovementSparsityState(struct.PyTreeNode):
    """State of movement sparsity.

    Attributes:
      scores: float32 importance scores at the targeted kernel paths (shapes
        from ``MovementSparsity.layouts``); the trainable part.
      masks: bool masks shaped like the kernels: all True until the warm-up
        ends, then the fixed (resolved) masks.
      threshold: float32 scalar, the importance threshold now (``-inf``
        before the warm-up).
      factor: float32 scalar, the regularisation factor now.
      init_threshold: float32 scalar, the threshold at the warm-up start.
      init_set: bool scalar; False while the automatic init threshold
        (no ``init_importance_threshold`` in the config) is still to compute.
      stage: int32 scalar: 0 before, 1 during, 2 after the warm-up.
      frozen: bool scalar; True once the masks are fixed.
    """

    scores: dict
    masks: dict
    threshold: jax.Array
    factor: jax.Array
    init_threshold: jax.Array
    init_set: jax.Array
    stage: jax.Array
    frozen: jax.Array


@dataclass(frozen=True)
class MovementGroup:
    """Kernels resolved together: ``kind`` "attention" or "ffn", member paths,
    each member's unit axis and the axes that belong to the unit."""

    kind: str
    members: tuple[str, ...]
    unit_axes: tuple[int, ...]
    inner_axes: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class MovementStatistics:
    """NNCF's ``MovementSparsityStatistics``.

    Attributes:
      model_statistics: `SparsifiedModelStatistics` of the current masks.
      importance_threshold: the threshold now (``-inf`` before the warm-up).
      importance_regularization_factor: the factor now.
      loss: the compression loss now.
    """

    model_statistics: SparsifiedModelStatistics
    importance_threshold: float
    importance_regularization_factor: float
    loss: float

    def tables(self):
        extra = [
            ("Importance threshold", self.importance_threshold),
            ("Importance regularization factor", self.importance_regularization_factor),
            ("Movement loss", self.loss),
        ]
        return self.model_statistics.tables("Movement sparsity", extra)

    def to_str(self) -> str:
        return render_tables(self.tables())


def _matches(scope: str, name: str) -> bool:
    candidates = [name, name.rsplit("/", 1)[0]] if "/" in name else [name]
    if scope.startswith("{re}"):
        regex = compile_scope_regex(scope)
        return any(regex.search(c) for c in candidates)
    return scope in candidates


def _attention_role(name: str, shape: tuple[int, ...]) -> str | None:
    parts = name.split("/")
    if len(shape) != 3 or len(parts) < 3 or parts[-1] != "kernel":
        return None
    return parts[-2] if parts[-2] in (*_QKV, "out") else None


def plan_layouts(
    shapes: dict[str, tuple[int, ...]],
    structures: Sequence[dict[str, Any]],
    *,
    structured: bool,
    config_path: str,
) -> dict[str, tuple[int, ...]]:
    """The score shape of every targeted kernel (see the module docstring).

    Raises:
      ConfigError: a ``sparse_structure_by_scopes`` entry that does not fit
        the kernel it matches.
    """
    layouts = {}
    for name, shape in shapes.items():
        entry, where = None, None
        for i, s in enumerate(structures):
            if any(_matches(scope, name) for scope in _as_list(s.get("target_scopes"))):
                entry, where = s, f"{config_path}.sparse_structure_by_scopes[{i}]"
                break
        role = _attention_role(name, shape)
        if entry is None or entry["mode"] == "fine":
            if entry is None and structured and role is not None:
                layouts[name] = (1, shape[1], 1) if role in _QKV else (shape[0], 1, 1)
            else:
                layouts[name] = tuple(shape)
            continue
        if len(shape) != 2:
            raise ConfigError(
                f"{where}.mode",
                f"{name}: mode {entry['mode']!r} needs a 2-D Dense kernel, got shape "
                f"{tuple(shape)} (attention projections get one score per head with "
                "enable_structured_masking)",
            )
        n_in, n_out = shape
        if entry["mode"] == "per_dim":
            axis = entry["axis"]
            if axis not in (0, 1):
                raise ConfigError(f"{where}.axis", f"{name}: expected 0 or 1, got {axis}")
            layouts[name] = (1, n_out) if axis == 0 else (n_in, 1)
        else:
            r, c = entry["sparse_factors"]
            if n_out % r or n_in % c:
                raise ConfigError(
                    f"{where}.sparse_factors",
                    f"{name}: block [{r}, {c}] (outputs, inputs) does not divide the "
                    f"kernel (in {n_in}, out {n_out})",
                )
            layouts[name] = (n_in // c, n_out // r)
    return layouts


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def find_groups(shapes: dict[str, tuple[int, ...]]) -> list[MovementGroup]:
    """Attention and FFN groups among the targeted kernels (module docstring)."""
    groups: list[MovementGroup] = []
    attention: dict[str, dict[str, str]] = {}
    by_parent: dict[str, list[str]] = {}
    for name, shape in shapes.items():
        role = _attention_role(name, shape)
        if role is not None:
            attention.setdefault(name.rsplit("/", 2)[0], {})[role] = name
        elif len(shape) == 2 and name.endswith("/kernel") and name.count("/") >= 2:
            by_parent.setdefault(name.rsplit("/", 2)[0], []).append(name)
    for members in attention.values():
        heads = {shapes[n][1] if r in _QKV else shapes[n][0] for r, n in members.items()}
        if len(heads) != 1:
            continue
        names = tuple(members[r] for r in (*_QKV, "out") if r in members)
        unit = tuple(1 if n.split("/")[-2] in _QKV else 0 for n in names)
        inner = tuple((2,) if u == 1 else (1,) for u in unit)
        groups.append(MovementGroup("attention", names, unit, inner))
    for kernels in by_parent.values():
        if len(kernels) != 2:
            continue
        # Creation order (Dense_0 before Dense_1) decides when both chain.
        a, b = sorted(kernels, key=_natural)
        if shapes[a][1] != shapes[b][0]:
            a, b = b, a
        if shapes[a][1] == shapes[b][0]:
            groups.append(MovementGroup("ffn", (a, b), (1, 0), ((), ())))
    return groups


@functools.lru_cache(maxsize=64)
def _jitted_summary(algorithm: MovementSparsity):
    def summary(state):
        masks = algorithm.current_masks(state)
        return unflatten_params(masks), algorithm.loss(None, state)

    return jax.jit(summary)


class MovementSparsity(CompressionAlgorithm):
    """Movement sparsity over a fixed set of kernels.

    Args:
      shapes: ``{kernel path: shape}`` of the targets.
      warmup_start_epoch, warmup_end_epoch: the warm-up epochs (end excluded).
      importance_regularization_factor: the factor's final value.
      power: the cubic's power.
      init_importance_threshold: the warm-up's first threshold, or None to
        compute it at the warm-up start (~0.1 % of the weights below it).
      final_importance_threshold: the warm-up's last threshold.
      enable_structured_masking: per-head scores for attention projections
        and structured resolution at the warm-up end.
      steps_per_epoch: optimizer steps per epoch; None: the schedule moves
        at ``epoch_step`` only (epoch granularity).
      structures: the ``sparse_structure_by_scopes`` entries.
      lr_multiplier: ``compression_lr_multiplier`` (static, for the train step).
      config_path: JSON path of the section.
    """

    name = "movement_sparsity"

    def __init__(
        self,
        shapes: dict[str, tuple[int, ...]],
        *,
        warmup_start_epoch: int,
        warmup_end_epoch: int,
        importance_regularization_factor: float,
        power: float = 3.0,
        init_importance_threshold: float | None = None,
        final_importance_threshold: float = 0.0,
        enable_structured_masking: bool = True,
        steps_per_epoch: int | None = None,
        structures: Sequence[dict[str, Any]] = (),
        lr_multiplier: float | None = None,
        config_path: str = "compression",
    ):
        if warmup_end_epoch <= warmup_start_epoch:
            raise ConfigError(
                f"{config_path}.params.warmup_end_epoch",
                f"expected a value greater than warmup_start_epoch ({warmup_start_epoch}), "
                f"got {warmup_end_epoch}",
            )
        self.config_path = config_path
        self.shapes = {n: tuple(int(d) for d in s) for n, s in shapes.items()}
        self.targets = tuple(self.shapes)
        self.start_epoch = int(warmup_start_epoch)
        self.end_epoch = int(warmup_end_epoch)
        self.factor = float(importance_regularization_factor)
        self.power = float(power)
        self.init_threshold = (
            None if init_importance_threshold is None else float(init_importance_threshold)
        )
        self.final_threshold = float(final_importance_threshold)
        self.structured = bool(enable_structured_masking)
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        self.lr_multiplier = None if lr_multiplier is None else float(lr_multiplier)
        self.layouts = plan_layouts(
            self.shapes, structures, structured=self.structured, config_path=config_path
        )
        self.groups = tuple(find_groups(self.shapes)) if self.structured else ()

    @classmethod
    def from_config(
        cls,
        section: dict[str, Any],
        config_path: str,
        shapes: dict[str, tuple[int, ...]],
        *,
        steps_per_epoch: int | None = None,
        lr_multiplier: float | None = None,
    ) -> MovementSparsity:
        """Builds from a defaults-resolved ``movement_sparsity`` section."""
        params = section.get("params", {})
        spe = params.get("steps_per_epoch") or steps_per_epoch
        return cls(
            shapes,
            warmup_start_epoch=params["warmup_start_epoch"],
            warmup_end_epoch=params["warmup_end_epoch"],
            importance_regularization_factor=params["importance_regularization_factor"],
            power=params.get("power", 3.0),
            init_importance_threshold=params.get("init_importance_threshold"),
            final_importance_threshold=params.get("final_importance_threshold", 0.0),
            enable_structured_masking=params.get("enable_structured_masking", True),
            steps_per_epoch=spe,
            structures=section.get("sparse_structure_by_scopes", ()),
            lr_multiplier=lr_multiplier,
            config_path=config_path,
        )

    # The controller caches jitted summaries per algorithm object.
    __hash__ = object.__hash__

    # --- schedule ----------------------------------------------------------

    def _unit(self) -> int:
        return self.steps_per_epoch or 1

    def _bounds(self) -> tuple[int, int]:
        u = self._unit()
        return int(self.start_epoch * u), int(self.end_epoch * u)

    def position(self, clock: Clock) -> jax.Array:
        """The scheduler position: ``current_step`` (per-step) or ``current_epoch``."""
        return clock.step if self.steps_per_epoch else clock.epoch

    def schedule(self, position, init_threshold) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(threshold, factor, stage)`` at ``position`` (see `movement_schedule`)."""
        start, end = self._bounds()
        return movement_schedule(
            position,
            start,
            end,
            power=self.power,
            init_threshold=init_threshold,
            final_threshold=self.final_threshold,
            factor=self.factor,
        )

    # --- pure functions ----------------------------------------------------

    def init_state(self, params: Any) -> MovementSparsityState:
        flat = flatten_params(params)
        scores = {n: jnp.zeros(self.layouts[n], jnp.float32) for n in self.targets}
        masks = {n: jnp.ones_like(flat[n], jnp.bool_) for n in self.targets}
        init = self.init_threshold
        return MovementSparsityState(
            scores=unflatten_params(scores),
            masks=unflatten_params(masks),
            threshold=jnp.float32(-jnp.inf),
            factor=jnp.float32(0.0),
            init_threshold=jnp.float32(0.0 if init is None else init),
            init_set=jnp.bool_(init is not None),
            stage=jnp.int32(0),
            frozen=jnp.bool_(False),
        )

    def _flat(self, tree: Any, what: str) -> list[jax.Array]:
        flat = flatten_params(tree)
        missing = [n for n in self.targets if n not in flat]
        if missing:
            raise StateMismatchError(
                f"{self.config_path} ({self.name}): the compression state has no {what} for "
                f"{missing}; it has {sorted(flat)}"
            )
        return [flat[n] for n in self.targets]

    def _live_masks(self, state: MovementSparsityState, threshold=None) -> list[jax.Array]:
        threshold = state.threshold if threshold is None else threshold
        return [
            movement_mask(s, self.shapes[n], threshold)
            for n, s in zip(self.targets, self._flat(state.scores, "scores"), strict=True)
        ]

    def training_masks(self, state: MovementSparsityState) -> list[jax.Array]:
        """The float32 masks the forward uses (straight-through to the scores)."""
        stored = self._flat(state.masks, "masks")
        return [
            jnp.where(state.frozen, s.astype(jnp.float32), m)
            for s, m in zip(stored, self._live_masks(state), strict=True)
        ]

    def current_masks(self, state: MovementSparsityState) -> dict[str, jax.Array]:
        """``{path: bool mask}`` now (no gradient): what strip and statistics use."""
        masks = [jax.lax.stop_gradient(m) > 0 for m in self.training_masks(state)]
        return dict(zip(self.targets, masks, strict=True))

    def compress_params(self, params: Any, state: MovementSparsityState) -> Any:
        by_name = dict(zip(self.targets, self.training_masks(state), strict=True))

        def one(path, w):
            mask = by_name.get(param_path(path))
            # w * mask: the scores' gradient is grad * w (the movement).
            return w if mask is None else (w * mask.astype(w.dtype)).astype(w.dtype)

        return jax.tree_util.tree_map_with_path(one, params)

    def strip_params(self, params: Any, state: MovementSparsityState) -> Any:
        by_name = self.current_masks(state)

        def one(path, w):
            mask = by_name.get(param_path(path))
            return w if mask is None else jnp.where(mask, w, jnp.zeros((), w.dtype))

        return jax.tree_util.tree_map_with_path(one, params)

    def loss(self, params: Any, state: MovementSparsityState) -> jax.Array:
        del params
        loss = importance_loss(self._flat(state.scores, "scores"), state.factor)
        return jnp.where(state.frozen, jnp.float32(0.0), loss)

    def trainable_state(self, state: MovementSparsityState) -> Any:
        return state.scores

    def with_trainable_state(self, state: MovementSparsityState, trainable: Any):
        new = jax.tree.map(lambda t: jnp.asarray(t, jnp.float32), trainable)
        # After the warm-up the scores stop (NNCF: requires_grad False).
        scores = jax.lax.cond(state.frozen, lambda: state.scores, lambda: new)
        return state.replace(scores=scores)

    def _final_masks(self, state: MovementSparsityState) -> dict:
        live = [
            jax.lax.stop_gradient(m) > 0
            for m in self._live_masks(state, jnp.float32(self.final_threshold))
        ]
        by_name = dict(zip(self.targets, live, strict=True))
        for g in self.groups:
            resolved = resolve_group([by_name[n] for n in g.members], g.unit_axes, g.inner_axes)
            by_name.update(zip(g.members, resolved, strict=True))
        return unflatten_params(by_name)

    def advance(self, state, params_fn, clock: Clock, *, new_epoch, new_step):
        del params_fn  # the masks come from the scores
        ticks = jnp.asarray(new_step if self.steps_per_epoch else new_epoch, jnp.bool_)
        position = self.position(clock)
        _, _, stage = self.schedule(position, state.init_threshold)
        compute_init = ticks & jnp.logical_not(state.init_set) & (stage >= 1)
        init = jax.lax.cond(
            compute_init,
            lambda: kth_smallest_threshold(
                [
                    expand_scores(s, self.shapes[n])
                    for n, s in zip(self.targets, self._flat(state.scores, "scores"), strict=True)
                ]
            ),
            lambda: state.init_threshold,
        )
        threshold, factor, stage = self.schedule(position, init)
        freeze = ticks & (stage == 2) & jnp.logical_not(state.frozen)
        masks = jax.lax.cond(freeze, lambda: self._final_masks(state), lambda: state.masks)
        return state.replace(
            masks=masks,
            threshold=jnp.where(ticks, threshold, state.threshold),
            factor=jnp.where(ticks, factor, state.factor),
            init_threshold=init,
            init_set=state.init_set | compute_init,
            stage=jnp.where(ticks, stage, state.stage),
            frozen=state.frozen | freeze,
        )

    # --- host side ---------------------------------------------------------

    def builder_state(self) -> dict[str, Any]:
        return {
            "target_weights": list(self.targets),
            "score_shapes": {n: list(self.layouts[n]) for n in self.targets},
        }

    def scheduler_state(self, state: MovementSparsityState) -> dict[str, Any]:
        threshold = float(state.threshold)
        return {
            # NNCF's key; None until computed.
            "_init_importance_threshold": (
                float(state.init_threshold) if bool(state.init_set) else None
            ),
            "_steps_per_epoch": self.steps_per_epoch,
            "importance_threshold": threshold if math.isfinite(threshold) else None,
            "importance_regularization_factor": float(state.factor),
            "frozen": bool(state.frozen),
        }

    def load_scheduler_state(self, state, params, clock: Clock, saved: dict[str, Any]):
        del params
        init = saved.get("_init_importance_threshold")
        init_set = init is not None or self.init_threshold is not None
        init_value = jnp.float32(init if init is not None else (self.init_threshold or 0.0))
        position = self.position(clock)
        threshold, factor, stage = self.schedule(position, init_value)
        # The fixed masks are not in the dict: the next tick past the warm-up
        # fixes them again from the scores restored with ``ctrl.with_trainable``.
        return state.replace(
            threshold=threshold,
            factor=factor,
            init_threshold=init_value,
            init_set=jnp.bool_(init_set),
            stage=jnp.where(stage == 2, jnp.int32(1), stage),
            frozen=jnp.bool_(False),
        )

    def _summary(self, state):
        return jax.device_get(_jitted_summary(self)(state))

    def compression_rate(self, state, params) -> float:
        return model_sparsity_statistics(params, self._summary(state)[0]).sparsity_level

    def compression_stage(self, state) -> CompressionStage:
        stage = int(state.stage)
        if stage == 0:
            return CompressionStage.UNCOMPRESSED
        if stage == 1:
            return CompressionStage.PARTIALLY_COMPRESSED
        return CompressionStage.FULLY_COMPRESSED

    def statistics(self, state, params) -> MovementStatistics:
        masks, loss = self._summary(state)
        return MovementStatistics(
            model_statistics=model_sparsity_statistics(params, masks),
            importance_threshold=float(state.threshold),
            importance_regularization_factor=float(state.factor),
            loss=float(loss),
        )
