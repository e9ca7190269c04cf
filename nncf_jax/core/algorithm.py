"""The one protocol every compression algorithm implements.

An algorithm object is static: built once from its config section and the
model's parameter tree, it holds parsed settings and the list of targeted
parameter paths, never arrays that change. Everything that changes lives in
the algorithm's slot of `CompressionState.algorithms`, and every method that
runs inside a train step is a pure function of ``(params, state)``.

The controller (`nncf_jax.core.controller`) combines algorithms; algorithms
never import each other.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from nncf_jax.core.stage import CompressionStage
from nncf_jax.core.state import Clock
from nncf_jax.errors import StateMismatchError, UsageError

__all__ = ["CompressionAlgorithm"]


class CompressionAlgorithm(abc.ABC):
    """Pure functions of one algorithm over ``(params, algorithm state)``.

    Attributes:
      name: the registered algorithm name (``"magnitude_sparsity"``, ...).
      config_path: JSON path of the algorithm's config section, for messages.
    """

    name: str
    config_path: str
    # Where the algorithm's compress_params runs among several: weight masks
    # (sparsity, pruning: 0) before weight fake-quantization (10), whatever
    # the order of the config's sections.
    application_order: int = 0
    # Whether the algorithm's state follows epochs (schedules, warm-ups):
    # ``ctrl.transform`` then needs ``steps_per_epoch``.
    epoch_scheduled: bool = True

    # --- build time -------------------------------------------------------

    @abc.abstractmethod
    def init_state(self, params: Any) -> Any:
        """The algorithm's initial state pytree for these params."""

    def builder_state(self) -> dict[str, Any]:
        """JSON-serialisable facts fixed at build time (NNCF's ``builder_state``)."""
        return {}

    def check_builder_state(self, builder_state: dict[str, Any]) -> None:
        """Raises `StateMismatchError` if a saved builder state does not fit this build.

        The default compares it key by key with `builder_state`, and names
        the entries found on one side only.
        """
        current = self.builder_state()
        for key in sorted(set(current) | set(builder_state)):
            saved, now = builder_state.get(key), current.get(key)
            if saved == now:
                continue
            if isinstance(saved, list) and isinstance(now, list):
                only_saved = [v for v in saved if v not in now] or "none"
                only_now = [v for v in now if v not in saved] or "none"
                detail = f"only in the saved state: {only_saved}; only in this build: {only_now}"
            else:
                detail = f"saved {saved!r}, this build has {now!r}"
            raise StateMismatchError(
                f"{self.config_path} ({self.name}): the saved compression state does not fit "
                f"this model and config at builder_state.{key}: {detail}"
            )

    # --- step time: pure, jit-safe ----------------------------------------

    def compress_params(self, params: Any, state: Any) -> Any:
        """The params the compressed forward sees (masked, fake-quantized, ...)."""
        return params

    def forward_context(self, state: Any) -> contextlib.AbstractContextManager:
        """A context the model's forward runs in (e.g. ``nn.intercept_methods``
        putting activation quantizers on op inputs); a no-op by default."""
        return contextlib.nullcontext()

    def loss(self, params: Any, state: Any) -> jnp.ndarray:
        """The algorithm's compression loss, a float32 scalar."""
        return jnp.float32(0.0)

    def advance(
        self,
        state: Any,
        params_fn: Callable[[], Any],
        clock: Clock,
        *,
        new_epoch: Any,
        new_step: Any,
    ) -> Any:
        """Reacts to the scheduler's counters moving.

        Args:
          state: this algorithm's state.
          params_fn: zero-argument function returning the current params.
            Call it only where the params are needed (inside the refresh
            branch of a ``lax.cond``), so a tick that refreshes nothing reads
            no weights.
          clock: the counters after the move.
          new_epoch: bool (Python or traced scalar): an ``epoch_step`` happened.
          new_step: bool (Python or traced scalar): a ``step`` happened.
        """
        return state

    def filter_updates(self, updates: Any, state: Any) -> Any:
        """Optimizer updates with compressed-away weights held still."""
        return updates

    def strip_params(self, params: Any, state: Any) -> Any:
        """Plain params for the original model, compression baked in."""
        return self.compress_params(params, state)

    def trainable_state(self, state: Any) -> Any:
        """The part of the state an optimizer may train (float leaves), or None.

        NNCF trains some compression parameters with the model's optimizer
        (quantizer ranges, RB logits); they live in the compression state, so
        a train step that wants to train them differentiates this part too
        (see `CompressionController.trainable`).
        """
        return None

    def with_trainable_state(self, state: Any, trainable: Any) -> Any:
        """``state`` with its trainable part replaced (inverse of `trainable_state`)."""
        return state

    def pack_params(self, params: Any, state: Any) -> tuple[Any, Callable[[Any], Any]]:
        """What an exported artefact stores for stripped params, and how to unpack it.

        Returns ``(stored, unpack)``: ``stored`` is a pytree of arrays that the
        artefact embeds as constants (e.g. int8 codes and scales instead of
        float weights) and ``unpack(stored)`` rebuilds the stripped params
        with jnp ops, inside the exported graph. The default stores the params
        as they are.
        """
        return params, lambda stored: stored

    # --- host side: the NNCF facade ---------------------------------------

    def scheduler_state(self, state: Any) -> dict[str, Any]:
        """Algorithm-specific scheduler fields for ``get_state`` (JSON)."""
        return {}

    def load_scheduler_state(
        self, state: Any, params: Any, clock: Clock, saved: dict[str, Any]
    ) -> Any:
        """Inverse of `scheduler_state`; ``clock`` already holds the loaded counters."""
        return state

    def compression_rate(self, state: Any, params: Any) -> float | None:
        """NNCF's ``compression_rate``; None where it has no meaning."""
        return None

    def set_compression_rate(self, state: Any, params: Any, rate: float) -> Any:
        raise UsageError(f"{self.name} has no settable compression rate")

    maximal_compression_rate: float = 1.0

    @abc.abstractmethod
    def compression_stage(self, state: Any) -> CompressionStage:
        """UNCOMPRESSED / PARTIALLY_COMPRESSED / FULLY_COMPRESSED for this state."""

    @abc.abstractmethod
    def statistics(self, state: Any, params: Any) -> Any:
        """A statistics dataclass with ``tables()`` and ``to_str()``."""
