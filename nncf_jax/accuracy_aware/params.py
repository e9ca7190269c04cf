"""The ``accuracy_aware_training`` config section, parsed: `AccuracyAwareParams`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nncf_jax.config import NNCFConfig
from nncf_jax.config.schema import ACCURACY_AWARE_SCHEMA
from nncf_jax.errors import ConfigError

__all__ = ["AccuracyAwareParams"]

SECTION = "accuracy_aware_training"


def _schema_default(key: str) -> Any:
    return ACCURACY_AWARE_SCHEMA["properties"]["params"]["properties"][key].get("default")


@dataclass(frozen=True)
class AccuracyAwareParams:
    """The ``accuracy_aware_training`` section, parsed, with its defaults.

    Exactly one of the two degradations is set. Keys of the adaptive mode keep
    their schema defaults in ``early_exit``, where they are unused.

    Attributes:
      mode: ``"early_exit"`` or ``"adaptive_compression_level"``.
      maximal_relative_accuracy_degradation: allowed drop in percent of the
        uncompressed accuracy, or None.
      maximal_absolute_accuracy_degradation: allowed drop in accuracy units, or None.
      maximal_total_epochs: epochs trained at most, over all phases.
      initial_training_phase_epochs: epochs with the scheduler before the search.
      patience_epochs: epochs a rate may train to get within tolerance.
      initial_compression_rate_step: the first step of the rate search.
      compression_rate_step_reduction_factor: step multiplier on a direction flip.
      lr_reduction_factor: learning-rate-scale multiplier on a direction flip.
      minimal_compression_rate_step: the search stops below this step.
    """

    mode: str
    maximal_relative_accuracy_degradation: float | None
    maximal_absolute_accuracy_degradation: float | None
    maximal_total_epochs: int
    initial_training_phase_epochs: int
    patience_epochs: int
    initial_compression_rate_step: float
    compression_rate_step_reduction_factor: float
    lr_reduction_factor: float
    minimal_compression_rate_step: float

    @classmethod
    def from_config(cls, config: NNCFConfig | Mapping[str, Any]) -> AccuracyAwareParams:
        """Parses ``config["accuracy_aware_training"]``.

        Args:
          config: an `NNCFConfig` or a config dict (validated here).

        Raises:
          ConfigError: the section is missing or invalid (the message names
            its JSON path).
        """
        if not isinstance(config, NNCFConfig):
            config = NNCFConfig.from_dict(config)
        else:
            config.validate()
        section = config.resolved_accuracy_aware_training()
        if section is None:
            raise ConfigError(
                SECTION,
                "accuracy-aware training needs this section: "
                '{"mode": "early_exit" | "adaptive_compression_level", '
                '"params": {"maximal_relative_accuracy_degradation": 1.0}}',
            )
        params = section["params"]

        def get(key: str) -> Any:
            return params.get(key, _schema_default(key))

        def number(key: str) -> float | None:
            value = params.get(key)
            return None if value is None else float(value)

        return cls(
            mode=section["mode"],
            maximal_relative_accuracy_degradation=number("maximal_relative_accuracy_degradation"),
            maximal_absolute_accuracy_degradation=number("maximal_absolute_accuracy_degradation"),
            maximal_total_epochs=int(get("maximal_total_epochs")),
            initial_training_phase_epochs=int(get("initial_training_phase_epochs")),
            patience_epochs=int(get("patience_epochs")),
            initial_compression_rate_step=float(get("initial_compression_rate_step")),
            compression_rate_step_reduction_factor=float(
                get("compression_rate_step_reduction_factor")
            ),
            lr_reduction_factor=float(get("lr_reduction_factor")),
            minimal_compression_rate_step=float(get("minimal_compression_rate_step")),
        )

    def minimal_tolerable_accuracy(self, uncompressed_accuracy: float) -> float:
        r"""The lowest accuracy within tolerance.

        :math:`a_0 - \delta_{abs}` with an absolute degradation, else
        :math:`a_0 (1 - \delta_{rel} / 100)`.
        """
        if self.maximal_absolute_accuracy_degradation is not None:
            return uncompressed_accuracy - self.maximal_absolute_accuracy_degradation
        relative = self.maximal_relative_accuracy_degradation or 0.0
        return uncompressed_accuracy * (1.0 - 0.01 * relative)
