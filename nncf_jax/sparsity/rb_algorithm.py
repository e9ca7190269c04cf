"""Regularisation-based sparsity (NNCF ``rb_sparsity``): learned masks and a sparsity loss.

Every targeted weight ``w`` gets a logit ``m`` (state, initialised to
``logit(0.99)``: the first masks keep every weight). The forward uses
``w * mask``; the loss (`rb_sparsity_loss`, `rb_local_sparsity_loss`) pulls
the fraction of kept weights to ``1 - level`` and the task loss pushes back
on the weights that matter, both through straight-through gradients to the
logits. The logits are the algorithm's trainable state
(``ctrl.trainable(cstate)``): a train step that differentiates them trains
the masks. ``level`` follows the schedule (exponential by default, or
NNCF's adaptive schedule, which reads the sparsity reached each epoch).

Train and eval masks
--------------------
The state carries a ``training`` flag (bool scalar, True after
``create_compressed_model``, like a freshly built NNCF model in train
mode). While it is set and the algorithm is not frozen, ``ctrl.apply``
samples the stochastic mask ``sigmoid(m + logit(u)) > 0.5``; otherwise it
uses the deterministic ``m > 0``. Evaluate with `eval_state` (a jit-safe
copy of the state with the flag cleared): ``ctrl.apply(variables,
eval_state(cstate), x)``. ``ctrl.strip``, exported artefacts, statistics
and ``compression_rate`` always use the deterministic masks. Why a state
flag: ``ctrl.apply`` hands its keyword arguments to the model, so a
``train=`` keyword there would clash with the model's own; a flag is one
bool leaf (the state keeps its structure, nothing recompiles) and a mode
carried with the state matches NNCF's ``model.train()`` / ``model.eval()``.

Randomness
----------
The state holds ``seed`` (uint32 key data; ``jax.random.key(0)`` unless
replaced) and ``key``, the key of the current training iteration:
``fold_in(seed, max(step, 0))``, recomputed at every scheduler tick from
NNCF's step counter; layer ``i`` draws its noise from ``fold_in(key, i)``.
So the masks are a pure function of the state: a jitted step is
deterministic, a restored checkpoint continues bit for bit, and the
``ctrl.transform`` path and the ``scheduler.step()`` facade draw the same
masks at the same iteration (iteration 0 runs on the initial state, step
-1, with the key of step 0).

Freezing
--------
From ``sparsity_freeze_epoch`` on the loss is 0, the masks are the
deterministic ones and `with_trainable_state` ignores new logits, so the
masks stay fixed whatever the optimizer still does (momentum, decay).
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
from nncf_jax.core.paths import flatten_params, param_path, unflatten_params
from nncf_jax.core.stage import CompressionStage
from nncf_jax.core.state import Clock, CompressionState
from nncf_jax.core.statistics import render_tables
from nncf_jax.errors import ConfigError, StateMismatchError
from nncf_jax.sparsity.masks import (
    SparsifiedModelStatistics,
    apply_masks,
    model_sparsity_statistics,
)
from nncf_jax.sparsity.rb import (
    RB_INITIAL_LOGIT,
    rb_binary_mask,
    rb_local_sparsity_loss,
    rb_mask,
    rb_masked_weight,
    rb_sparsity_loss,
)
from nncf_jax.sparsity.schedule import ADAPTIVE, SparsitySchedule

__all__ = [
    "RBSparsity",
    "RBSparsityState",
    "RBSparsityStatistics",
    "eval_state",
    "set_training",
    "train_state",
]

_MODES = ("global", "local")
_KINDS = ("polynomial", "exponential", "adaptive", "multistep")
_DEFAULT_SEED = 0


class RBSparsityState(struct.PyTreeNode):
    """State of RB sparsity.

    Attributes:
      logits: float32 logits at the targeted weight paths, each shaped like
        its weight; the trainable part.
      level: float32 scalar, the scheduled sparsity level the loss aims at.
      frozen: bool scalar; True from the freeze epoch on (loss 0, masks fixed).
      training: bool scalar; stochastic masks in the forward while set (and
        not frozen). See `eval_state`.
      seed: uint32 key data (``jax.random.key_data``) the masks are drawn from.
      key: uint32 key data of the current iteration, ``fold_in(seed, max(step, 0))``.
      bad_epochs: int32 scalar, the adaptive schedule's ``num_bad_epochs``.
      pinned: bool scalar; True once ``compression_rate`` was set by hand
        (the schedule no longer moves the level).
    """

    logits: dict
    level: jax.Array
    frozen: jax.Array
    training: jax.Array
    seed: jax.Array
    key: jax.Array
    bad_epochs: jax.Array
    pinned: jax.Array


def set_training(cstate: CompressionState, training: Any) -> CompressionState:
    """``cstate`` with the ``training`` flag of every algorithm that has one set to ``training``.

    Jit-safe (``training`` may be a traced bool); algorithms without the
    flag are left as they are.

    Args:
      cstate: a `CompressionState`.
      training: bool: stochastic (True) or deterministic (False) masks.

    Returns:
      The new `CompressionState` (same structure and dtypes).
    """
    flag = jnp.asarray(training, jnp.bool_)
    algorithms = {
        name: s.replace(training=flag) if isinstance(s, RBSparsityState) else s
        for name, s in cstate.algorithms.items()
    }
    return cstate.replace(algorithms=algorithms)


def eval_state(cstate: CompressionState) -> CompressionState:
    """``cstate`` for evaluation: deterministic RB masks (``m > 0``) in ``ctrl.apply``.

    Example:
      >>> logits = ctrl.apply(variables, eval_state(cstate), x)  # doctest: +SKIP
    """
    return set_training(cstate, False)


def train_state(cstate: CompressionState) -> CompressionState:
    """``cstate`` for training: stochastic RB masks (the state's default)."""
    return set_training(cstate, True)


def _step_key(seed: jax.Array, step: jax.Array) -> jax.Array:
    key = jax.random.fold_in(jax.random.wrap_key_data(seed), jnp.maximum(step, 0))
    return jax.random.key_data(key)


@dataclass(frozen=True)
class RBSparsityStatistics:
    """NNCF's ``RBSparsityStatistics``.

    Attributes:
      model_statistics: `SparsifiedModelStatistics` of the deterministic masks.
      target_sparsity_level: the schedule's final level.
      scheduled_sparsity_level: the level the loss aims at now.
      mean_sparse_prob: mean probability that a targeted weight is zeroed,
        ``1 - mean(sigmoid(m))``.
      loss: the compression loss now (0 once frozen).
    """

    model_statistics: SparsifiedModelStatistics
    target_sparsity_level: float
    scheduled_sparsity_level: float
    mean_sparse_prob: float
    loss: float

    def tables(self):
        extra = [
            ("Scheduled sparsity level", self.scheduled_sparsity_level),
            ("Target sparsity level", self.target_sparsity_level),
            ("Mean sparse probability", self.mean_sparse_prob),
            ("RB loss", self.loss),
        ]
        return self.model_statistics.tables("RB sparsity", extra)

    def to_str(self) -> str:
        return render_tables(self.tables())


@functools.lru_cache(maxsize=64)
def _jitted_summary(targets: tuple[str, ...], mode: str):
    """Jitted ``(logits, level, frozen) -> (bool masks, mean keep probability, loss)``
    for the host-side facade (statistics, compression rate): one compiled
    program instead of dozens of eager ops."""

    def summary(logits: Any, level: jax.Array, frozen: jax.Array):
        flat = flatten_params(logits)
        masks = {n: flat[n] > 0 for n in targets}
        total = sum(flat[n].size for n in targets)
        keep_prob = sum(jnp.sum(jax.nn.sigmoid(flat[n])) for n in targets) / total
        binary = [rb_binary_mask(flat[n]) for n in targets]
        fn = rb_sparsity_loss if mode == "global" else rb_local_sparsity_loss
        loss = jnp.where(frozen, jnp.float32(0.0), fn(binary, level))
        return unflatten_params(masks), keep_prob, loss

    return jax.jit(summary)


class RBSparsity(CompressionAlgorithm):
    """RB sparsity over a fixed set of weight paths.

    Args:
      targets: param paths of the weights to sparsify.
      schedule: the parsed `SparsitySchedule` (any kind, "adaptive" included).
      mode: "global" (one loss over all targeted weights) or "local" (one
        term per weight tensor, each pulled to the level).
      lr_multiplier: the config's ``compression_lr_multiplier`` (None when
        not given): static information for the train step, which multiplies
        the optimizer updates of the logits by it (see docs/algorithms.md).
      config_path: JSON path of the config section.
      seed: the integer the initial ``seed`` key data comes from.
    """

    name = "rb_sparsity"

    def __init__(
        self,
        targets: Sequence[str],
        schedule: SparsitySchedule,
        mode: str = "global",
        *,
        lr_multiplier: float | None = None,
        config_path: str = "compression",
        seed: int = _DEFAULT_SEED,
    ):
        if mode not in _MODES:
            raise ConfigError(
                f"{config_path}.params.sparsity_level_setting_mode",
                f"expected one of {', '.join(map(repr, _MODES))}, got {mode!r}",
            )
        self.targets = tuple(targets)
        self.schedule = schedule
        self.mode = mode
        self.lr_multiplier = None if lr_multiplier is None else float(lr_multiplier)
        self.config_path = config_path
        self.seed = int(seed)

    @classmethod
    def from_config(
        cls,
        section: dict[str, Any],
        config_path: str,
        targets: Sequence[str],
        *,
        given: dict[str, Any] | None = None,
        lr_multiplier: float | None = None,
    ) -> RBSparsity:
        """Builds from a defaults-resolved ``rb_sparsity`` section
        (``given``: the section as written, see `SparsitySchedule.from_section`)."""
        params = section.get("params", {})
        return cls(
            targets,
            SparsitySchedule.from_section(
                section, config_path, default_kind="exponential", given=given, kinds=_KINDS
            ),
            mode=params.get("sparsity_level_setting_mode", "global"),
            lr_multiplier=lr_multiplier,
            config_path=config_path,
        )

    # --- pure functions ---------------------------------------------------

    def init_state(self, params: Any) -> RBSparsityState:
        flat = flatten_params(params)
        # full_like keeps each weight's sharding: the logits live beside it.
        logits = {n: jnp.full_like(flat[n], RB_INITIAL_LOGIT, jnp.float32) for n in self.targets}
        seed = jax.random.key_data(jax.random.key(self.seed))
        return RBSparsityState(
            logits=unflatten_params(logits),
            level=jnp.float32(self.schedule.init),
            frozen=jnp.bool_(False),
            training=jnp.bool_(True),
            seed=seed,
            key=_step_key(seed, jnp.int32(-1)),
            bad_epochs=jnp.int32(0),
            pinned=jnp.bool_(False),
        )

    def _flat_logits(self, state: RBSparsityState) -> list[jax.Array]:
        flat = flatten_params(state.logits)
        missing = [n for n in self.targets if n not in flat]
        if missing:
            raise StateMismatchError(
                f"{self.config_path} ({self.name}): the compression state has no logits for "
                f"{missing}; it has {sorted(flat)}"
            )
        return [flat[n] for n in self.targets]

    def _masks(self, state: RBSparsityState) -> list[jax.Array]:
        """The float32 masks the forward uses now (straight-through to the logits)."""
        # No lax.cond between the two kinds of mask: one elementwise kernel
        # selects, so XLA fuses the mask into the weight it multiplies.
        sample = jnp.logical_and(state.training, jnp.logical_not(state.frozen))
        key = jax.random.wrap_key_data(state.key)
        return [
            rb_mask(m, jax.random.fold_in(key, i), sample)
            for i, m in enumerate(self._flat_logits(state))
        ]

    def _apply(self, params: Any, masks: Sequence[jax.Array], weight_fn) -> Any:
        by_name = dict(zip(self.targets, masks, strict=True))

        def one(path, w):
            mask = by_name.get(param_path(path))
            return w if mask is None else weight_fn(w, mask)

        return jax.tree_util.tree_map_with_path(one, params)

    def compress_params(self, params: Any, state: RBSparsityState) -> Any:
        return self._apply(params, self._masks(state), rb_masked_weight)

    def strip_params(self, params: Any, state: RBSparsityState) -> Any:
        # Always the deterministic masks, whatever the training flag says.
        masks = [m > 0 for m in self._flat_logits(state)]
        return apply_masks(params, unflatten_params(dict(zip(self.targets, masks, strict=True))))

    def loss(self, params: Any, state: RBSparsityState) -> jax.Array:
        masks = [rb_binary_mask(m) for m in self._flat_logits(state)]
        fn = rb_sparsity_loss if self.mode == "global" else rb_local_sparsity_loss
        return jnp.where(state.frozen, jnp.float32(0.0), fn(masks, state.level))

    def trainable_state(self, state: RBSparsityState) -> Any:
        return state.logits

    def with_trainable_state(self, state: RBSparsityState, trainable: Any) -> RBSparsityState:
        new = jax.tree.map(lambda t: jnp.asarray(t, jnp.float32), trainable)
        # Frozen: the masks stay fixed whatever the optimizer still does. One
        # branch for the whole tree, not a select per logit.
        logits = jax.lax.cond(state.frozen, lambda: state.logits, lambda: new)
        return state.replace(logits=logits)

    def _observed(self, state: RBSparsityState) -> jax.Array:
        logits = self._flat_logits(state)
        kept = sum(jnp.sum(m > 0, dtype=jnp.float32) for m in logits)
        return 1.0 - kept / sum(m.size for m in logits)

    def advance(self, state, params_fn, clock: Clock, *, new_epoch, new_step):
        del params_fn  # the masks come from the logits, not the weights
        if self.schedule.kind == ADAPTIVE:
            level, frozen, bad = self.schedule.advance_adaptive(
                state.level,
                state.frozen,
                state.bad_epochs,
                self._observed(state),
                clock,
                new_epoch=new_epoch,
            )
        else:
            level, frozen, _ = self.schedule.advance(
                state.level, state.frozen, clock, new_epoch=new_epoch, new_step=new_step
            )
            bad = state.bad_epochs
        return state.replace(
            level=jnp.where(state.pinned, state.level, level),
            frozen=frozen,
            bad_epochs=bad,
            key=_step_key(state.seed, clock.step),
        )

    # --- host side --------------------------------------------------------

    def builder_state(self) -> dict[str, Any]:
        return {"target_weights": list(self.targets)}

    def scheduler_state(self, state: RBSparsityState) -> dict[str, Any]:
        return {
            "current_sparsity_level": float(state.level),
            "frozen": bool(state.frozen),
            "num_bad_epochs": int(state.bad_epochs),
            "level_pinned": bool(state.pinned),
            "seed": [int(v) for v in np.asarray(jax.device_get(state.seed)).ravel()],
        }

    def load_scheduler_state(self, state, params, clock: Clock, saved: dict[str, Any]):
        del params
        if "current_sparsity_level" in saved:
            level = jnp.float32(saved["current_sparsity_level"])
            frozen = jnp.bool_(saved.get("frozen", False))
        elif int(clock.epoch) < 0 or self.schedule.kind == ADAPTIVE:
            # Nothing to replay (the adaptive level depends on the run).
            level = jnp.float32(self.schedule.init)
            frozen = jnp.bool_(int(clock.epoch) >= self.schedule.freeze_epoch)
        else:
            # A state written by NNCF has only the counters: replay the schedule.
            frozen = int(clock.epoch) >= self.schedule.freeze_epoch
            position = self.schedule.position(clock)
            if frozen:
                position = jnp.minimum(position, self.schedule.freeze_epoch - 1)
            level, frozen = self.schedule.level_fn()(position), jnp.bool_(frozen)
        seed = state.seed
        if "seed" in saved:
            seed = jnp.asarray(np.asarray(saved["seed"], np.uint32).reshape(seed.shape))
        return state.replace(
            level=jnp.asarray(level, jnp.float32),
            frozen=frozen,
            bad_epochs=jnp.int32(saved.get("num_bad_epochs", 0)),
            pinned=jnp.bool_(saved.get("level_pinned", False)),
            seed=seed,
            key=_step_key(seed, clock.step),
        )

    def _summary(self, state: RBSparsityState):
        return _jitted_summary(self.targets, self.mode)(state.logits, state.level, state.frozen)

    def compression_rate(self, state, params) -> float:
        return model_sparsity_statistics(params, self._summary(state)[0]).sparsity_level

    def set_compression_rate(self, state, params, rate: float):
        if not 0.0 <= float(rate) < 1.0:
            raise ConfigError("compression_rate", f"expected a value in [0, 1), got {rate!r}")
        return state.replace(level=jnp.float32(rate), pinned=jnp.bool_(True))

    def compression_stage(self, state) -> CompressionStage:
        level = float(state.level)
        if level == 0.0:
            return CompressionStage.UNCOMPRESSED
        # The level is float32 and the exponential schedule reaches the target
        # up to rounding (1 - 0.6 gives 0.39999998): an ulp or two counts as there.
        if level >= float(np.float32(self.schedule.target)) - 1e-6:
            return CompressionStage.FULLY_COMPRESSED
        return CompressionStage.PARTIALLY_COMPRESSED

    def statistics(self, state, params) -> RBSparsityStatistics:
        masks, keep_prob, loss = jax.device_get(self._summary(state))
        return RBSparsityStatistics(
            model_statistics=model_sparsity_statistics(params, masks),
            target_sparsity_level=self.schedule.target,
            scheduled_sparsity_level=float(state.level),
            mean_sparse_prob=1.0 - float(keep_prob),
            loss=float(loss),
        )
