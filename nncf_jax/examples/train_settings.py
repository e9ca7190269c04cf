"""The training keys of a digits-job config (``epochs``, ``batch_size``, ``optimizer``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optax

from nncf_jax.errors import ConfigError, UsageError
from nncf_jax.examples.digits_data import IMAGE_SHAPE

__all__ = ["TrainSettings", "sample_shape"]

_DEFAULTS = {"epochs": 30, "batch_size": 128, "type": "adam", "base_lr": 1e-3, "weight_decay": 0.0}
_OPTIMIZER_KEYS = ("type", "base_lr", "weight_decay")
_OPTIMIZER_TYPES = ("adam", "adamw", "sgd")


def _positive_int(value: Any, where: str, error) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise error(where, f"expected a positive integer, got {value!r}")
    return value


def _positive_float(value: Any, where: str, error, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise error(where, f"expected a finite number {bound}, got {value!r}")
    return float(value)


def _argument_error(where: str, message: str) -> UsageError:
    return UsageError(f"{where}: {message}")


@dataclass(frozen=True)
class TrainSettings:
    """The training keys of a config, after keyword overrides.

    Attributes:
      epochs: number of epochs.
      batch_size: images per optimizer step.
      optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
      lr: the (constant) learning rate, ``optimizer.base_lr``.
      weight_decay: ``optimizer.weight_decay`` (decoupled for adamw, L2 otherwise).
    """

    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
    ) -> TrainSettings:
        """Reads ``epochs``, ``batch_size`` and ``optimizer`` from the config root.

        Raises:
          ConfigError: a config key has a bad value (the message names it).
          UsageError: an override has a bad value.
        """
        optimizer = config.get("optimizer", {})
        if not isinstance(optimizer, Mapping):
            raise ConfigError("optimizer", f"expected an object, got {optimizer!r}")
        unknown = sorted(set(optimizer) - set(_OPTIMIZER_KEYS))
        if unknown:
            # Silently dropping e.g. an LR schedule would train something else than asked.
            raise ConfigError(
                f"optimizer.{unknown[0]}",
                f"the digits job does not support this key; supported: {', '.join(_OPTIMIZER_KEYS)}",
            )
        kind = optimizer.get("type", _DEFAULTS["type"])
        if not isinstance(kind, str) or kind.lower() not in _OPTIMIZER_TYPES:
            raise ConfigError(
                "optimizer.type",
                f"expected one of {', '.join(map(repr, _OPTIMIZER_TYPES))}, got {kind!r}",
            )
        return cls(
            epochs=_positive_int(epochs, "epochs", _argument_error)
            if epochs is not None
            else _positive_int(config.get("epochs", _DEFAULTS["epochs"]), "epochs", ConfigError),
            batch_size=_positive_int(batch_size, "batch_size", _argument_error)
            if batch_size is not None
            else _positive_int(
                config.get("batch_size", _DEFAULTS["batch_size"]), "batch_size", ConfigError
            ),
            optimizer=kind.lower(),
            lr=_positive_float(lr, "lr", _argument_error)
            if lr is not None
            else _positive_float(
                optimizer.get("base_lr", _DEFAULTS["base_lr"]), "optimizer.base_lr", ConfigError
            ),
            weight_decay=_positive_float(
                optimizer.get("weight_decay", _DEFAULTS["weight_decay"]),
                "optimizer.weight_decay",
                ConfigError,
                allow_zero=True,
            ),
        )

    def make_optimizer(self, lr_scale: float = 1.0) -> optax.GradientTransformation:
        """The optax optimizer these settings describe, with the learning rate times ``lr_scale``."""
        lr = self.lr * lr_scale
        if self.optimizer == "adamw":
            return optax.adamw(lr, weight_decay=self.weight_decay)
        base = optax.adam(lr) if self.optimizer == "adam" else optax.sgd(lr, momentum=0.9)
        if self.weight_decay:
            return optax.chain(optax.add_decayed_weights(self.weight_decay), base)
        return base

    def to_config(self) -> dict[str, Any]:
        """The training keys as they go into a config."""
        optimizer = {"type": self.optimizer, "base_lr": self.lr}
        if self.weight_decay:
            optimizer["weight_decay"] = self.weight_decay
        return {"epochs": self.epochs, "batch_size": self.batch_size, "optimizer": optimizer}


def sample_shape(config: Mapping[str, Any], *, digits_cnn: bool = True) -> tuple[int, ...]:
    """The config's ``input_info.sample_size`` as a tuple (default ``(1, 8, 8, 1)``).

    Args:
      config: the config.
      digits_cnn: whether the model is the digits CNN, whose input must be
        ``[N, 8, 8, 1]``; other models may take any shape with 64 values per
        image (the images are reshaped to it).

    Raises:
      ConfigError: several inputs, or a sample size the images cannot take.
    """
    info = config.get("input_info", {"sample_size": [1, *IMAGE_SHAPE]})
    if isinstance(info, list):
        if len(info) != 1:
            raise ConfigError("input_info", f"the digits job has one input, got {len(info)}")
        info, where = info[0], "input_info[0].sample_size"
    else:
        where = "input_info.sample_size"
    shape = tuple(info["sample_size"])
    if digits_cnn and shape[1:] != IMAGE_SHAPE:
        raise ConfigError(
            where,
            f"the digits images are {list(IMAGE_SHAPE)} (height, width, channels), so the "
            f"sample size must be [N, {', '.join(map(str, IMAGE_SHAPE))}]; got {list(shape)}",
        )
    if math.prod(shape[1:]) != math.prod(IMAGE_SHAPE) or len(shape) < 2:
        raise ConfigError(
            where,
            f"the digits images have {math.prod(IMAGE_SHAPE)} values each, so the sample size "
            f"must be [N, ...] with {math.prod(IMAGE_SHAPE)} values per image; got {list(shape)}",
        )
    return shape
