"""When the sparsity level changes: NNCF's sparsity scheduler as pure functions.

`SparsitySchedule` is the parsed ``params`` block of a sparsity section.
`SparsitySchedule.advance` is the whole of NNCF's timing (REFERENCE.md
section 3): the level is set at each ``epoch_step`` (or at each ``step`` with
``update_per_optimizer_step``), the freeze check comes first, and the freeze
epoch's own level is never applied. RB sparsity's ``adaptive`` schedule, which
reads the sparsity the model has reached, is `adaptive_sparsity_level` /
`SparsitySchedule.advance_adaptive`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp

from nncf_jax.core import schedules
from nncf_jax.core.state import Clock
from nncf_jax.errors import ConfigError, UsageError

__all__ = ["SparsitySchedule", "adaptive_sparsity_level"]

_SCHEDULES = ("polynomial", "exponential", "multistep")
ADAPTIVE = "adaptive"


def adaptive_sparsity_level(
    level: jnp.ndarray,
    bad_epochs: jnp.ndarray,
    observed: jnp.ndarray,
    *,
    step: float,
    eps: float,
    patience: int,
    target: float,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """One epoch of NNCF's adaptive sparsity schedule (RB sparsity only).

    An epoch whose observed sparsity has caught up with the level
    (``observed >= level - eps``) counts as a "bad" epoch (NNCF's name); after
    ``patience`` of them the level moves up by ``step`` and the count
    restarts: ``level = min(level + step, target)``.

    Args:
      level: float32 scalar, the level in force.
      bad_epochs: int32 scalar, NNCF's ``num_bad_epochs``.
      observed: float32 scalar, the sparsity the masks have now (fraction of
        zeros over the targeted weights).
      step, eps, patience: the config's ``params.step`` / ``eps`` / ``patience``.
      target: ``params.sparsity_target``.

    Returns:
      ``(level, bad_epochs)``, float32 and int32 scalars.

    Example:
      >>> level, bad = adaptive_sparsity_level(
      ...     jnp.float32(0.0), jnp.int32(0), jnp.float32(0.0),
      ...     step=0.05, eps=0.03, patience=1, target=0.5)
      >>> round(float(level), 4), int(bad)
      (0.05, 0)
    """
    level = jnp.asarray(level, jnp.float32)
    caught_up = jnp.asarray(observed, jnp.float32) >= level - jnp.float32(eps)
    bad = jnp.asarray(bad_epochs, jnp.int32) + caught_up.astype(jnp.int32)
    move = bad >= patience
    level = jnp.where(move, level + jnp.float32(step), level)
    bad = jnp.where(move, 0, bad)
    return jnp.minimum(level, jnp.float32(target)).astype(jnp.float32), bad.astype(jnp.int32)


@dataclass(frozen=True)
class SparsitySchedule:
    """Parsed sparsity schedule settings.

    Attributes:
      kind: "polynomial", "exponential", "multistep" or (RB sparsity) "adaptive".
      init: level before the first epoch step (``sparsity_init``).
      target: final level (``multistep``: the last of its levels).
      target_epoch: epoch at which polynomial/exponential reach ``target``.
      freeze_epoch: from this epoch on the level and masks stop changing.
      power, concave: polynomial shape.
      per_step: NNCF's ``update_per_optimizer_step``.
      steps_per_epoch: optimizer steps per epoch, or None when unknown.
      multistep_steps, multistep_levels: multistep breakpoints.
      adaptive_step, adaptive_eps, patience: the adaptive schedule's
        ``params.step``, ``params.eps`` and ``params.patience``.
    """

    kind: str
    init: float
    target: float
    target_epoch: int
    freeze_epoch: int
    power: float
    concave: bool
    per_step: bool
    steps_per_epoch: int | None
    multistep_steps: tuple[float, ...]
    multistep_levels: tuple[float, ...]
    adaptive_step: float = 0.05
    adaptive_eps: float = 0.03
    patience: int = 1

    @classmethod
    def from_section(
        cls,
        section: dict[str, Any],
        path: str,
        *,
        default_kind: str = "polynomial",
        given: dict[str, Any] | None = None,
        kinds: Sequence[str] = _SCHEDULES,
    ) -> SparsitySchedule:
        """Parses a (defaults-resolved) sparsity config section.

        Args:
          section: the section with schema defaults filled in.
          path: its JSON path, for messages.
          default_kind: the algorithm's default schedule.
          given: the section as the user wrote it (to tell set keys from
            defaults); defaults to ``section``.
          kinds: the schedules the algorithm can run (RB sparsity adds
            "adaptive").

        Raises:
          ConfigError: unsupported schedule, or per-step updates without
            ``steps_per_epoch``.
        """
        params = section.get("params", {})
        kind = params.get("schedule", default_kind)
        if kind not in kinds:
            raise ConfigError(
                f"{path}.params.schedule",
                f"expected one of {', '.join(map(repr, kinds))}, got {kind!r}",
            )
        init = float(section.get("sparsity_init", 0.0))
        levels = tuple(float(v) for v in params.get("multistep_sparsity_levels", (0.1, 0.5)))
        steps = tuple(float(v) for v in params.get("multistep_steps", (90,)))
        target = float(params.get("sparsity_target", 0.5))
        if kind == "multistep":
            if "sparsity_target" in (given if given is not None else section).get("params", {}):
                warnings.warn(
                    f"{path}.params.sparsity_target is ignored with schedule 'multistep': "
                    f"the target is the last multistep level, {levels[-1]}",
                    stacklevel=3,
                )
            target = levels[-1]
        per_step = bool(params.get("update_per_optimizer_step", False))
        steps_per_epoch = params.get("steps_per_epoch")
        if per_step and steps_per_epoch is None:
            raise ConfigError(
                f"{path}.params.steps_per_epoch",
                "update_per_optimizer_step needs steps_per_epoch (the number of optimizer "
                "steps in one epoch, e.g. len(train_loader)); NNCF would spend the first "
                "epoch counting them, nncf-jax asks for it up front",
            )
        return cls(
            kind=kind,
            init=init,
            target=target,
            target_epoch=int(params.get("sparsity_target_epoch", 90)),
            freeze_epoch=int(params.get("sparsity_freeze_epoch", 100)),
            power=float(params.get("power", 0.9)),
            concave=bool(params.get("concave", True)),
            per_step=per_step,
            steps_per_epoch=None if steps_per_epoch is None else int(steps_per_epoch),
            multistep_steps=steps,
            multistep_levels=levels,
            adaptive_step=float(params.get("step", 0.05)),
            adaptive_eps=float(params.get("eps", 0.03)),
            patience=int(params.get("patience", 1)),
        )

    def level_fn(self) -> schedules.Schedule:
        """``epoch -> level`` for this schedule.

        Raises:
          UsageError: the adaptive schedule, whose level depends on the
            sparsity reached, not on the epoch alone.
        """
        if self.kind == ADAPTIVE:
            raise UsageError(
                "the adaptive schedule has no epoch -> level function: its level follows "
                "the sparsity the model reaches (see SparsitySchedule.advance_adaptive)"
            )
        if self.kind == "polynomial":
            return schedules.polynomial_schedule(
                self.init, self.target, self.target_epoch, self.power, self.concave
            )
        if self.kind == "exponential":
            return schedules.exponential_sparsity_schedule(
                self.init, self.target, self.target_epoch
            )
        return schedules.multistep_schedule(self.multistep_steps, self.multistep_levels)

    def position(self, clock: Clock) -> jnp.ndarray:
        """Fractional epoch the level is computed at.

        Per-step mode: ``epoch + max(k - 1, 0) / steps_per_epoch`` with ``k``
        the steps done in this epoch (``step()`` runs before its iteration,
        so the first iteration of an epoch sits at the epoch itself).
        """
        epoch = jnp.asarray(clock.epoch, jnp.float32)
        if not self.per_step:
            return epoch
        local = jnp.maximum(clock.steps_in_epoch - 1, 0).astype(jnp.float32)
        return epoch + local / self.steps_per_epoch

    def advance(
        self,
        level: jnp.ndarray,
        frozen: jnp.ndarray,
        clock: Clock,
        *,
        new_epoch: Any,
        new_step: Any,
    ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
        """One scheduler tick.

        Args:
          level: float32 scalar, the level in force.
          frozen: bool scalar.
          clock: counters after the tick.
          new_epoch, new_step: which NNCF call happened (bools, may be traced).

        Returns:
          ``(level, frozen, refresh)``: the new level, the new freeze flag
          and whether masks must be recomputed now.
        """
        ticks = jnp.asarray(new_step if self.per_step else new_epoch, jnp.bool_)
        frozen = jnp.logical_or(frozen, ticks & (clock.epoch >= self.freeze_epoch))
        refresh = ticks & jnp.logical_not(frozen)
        level = jnp.where(refresh, self.level_fn()(self.position(clock)), level)
        return level.astype(jnp.float32), frozen, refresh

    def advance_adaptive(
        self,
        level: jnp.ndarray,
        frozen: jnp.ndarray,
        bad_epochs: jnp.ndarray,
        observed: jnp.ndarray,
        clock: Clock,
        *,
        new_epoch: Any,
    ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
        """One scheduler tick of the adaptive schedule.

        The level moves at ``epoch_step`` only (NNCF's adaptive scheduler has
        no per-step mode; ``update_per_optimizer_step`` is ignored), after
        the freeze check, with `adaptive_sparsity_level`.

        Args:
          level: float32 scalar, the level in force.
          frozen: bool scalar.
          bad_epochs: int32 scalar.
          observed: float32 scalar, the sparsity the masks have now.
          clock: counters after the tick.
          new_epoch: bool (may be traced): an ``epoch_step`` happened.

        Returns:
          ``(level, frozen, bad_epochs)``.
        """
        ticks = jnp.asarray(new_epoch, jnp.bool_)
        frozen = jnp.logical_or(frozen, ticks & (clock.epoch >= self.freeze_epoch))
        moves = ticks & jnp.logical_not(frozen)
        new_level, new_bad = adaptive_sparsity_level(
            level,
            bad_epochs,
            observed,
            step=self.adaptive_step,
            eps=self.adaptive_eps,
            patience=self.patience,
            target=self.target,
        )
        level = jnp.where(moves, new_level, level).astype(jnp.float32)
        bad_epochs = jnp.where(moves, new_bad, bad_epochs).astype(jnp.int32)
        return level, frozen, bad_epochs
