"""Which model the digits job trains: the digits CNN, or any linen model from a factory.

A *model spec* is a string:

- ``"digits_cnn"`` (or no spec at all): `nncf_jax.examples.digits_data.CNN`;
- ``"package.module:factory"``: ``factory`` imported from an importable
  module (the current directory is searched too);
- ``"path/to/file.py:factory"``: ``factory`` from a Python file.

**The factory protocol.** ``factory()`` takes no argument and returns a
``flax.linen.Module``. The job initialises it with ``model.init(key, x)``,
``x`` float32 zeros of the config's ``input_info.sample_size`` (default
``[1, 8, 8, 1]``), and trains it on the digits images reshaped to that
sample size (any shape with 64 values per image, e.g. ``[1, 64]``). The
module's ``__call__(x)`` must return ``(N, 10)`` logits, and it must have no
mutable collections (batch statistics) and need no RNG: the job calls plain
``model.apply(variables, x)``. `mlp` below is an example:
``nncf-jax train CONFIG --model nncf_jax.examples.digits_model:mlp``.

The spec a run used is stored as the ``model`` key of the run's
``config.json``, so ``nncf-jax stats/export/plot RUN_DIR`` rebuild the same
model. A config's own ``model`` key is used when it names a factory (it
contains ``:``); any other value (NNCF configs carry a model *name*, e.g.
``"digits_cnn"``) means the digits CNN.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import flax.linen as nn
import jax

from nncf_jax.errors import UsageError
from nncf_jax.examples.digits_data import CNN, NUM_CLASSES

__all__ = ["DEFAULT_MODEL", "MLP", "ModelSpec", "mlp", "resolve_model"]

DEFAULT_MODEL = "digits_cnn"


class MLP(nn.Module):
    """flatten, dense(64)-relu, dense(10): a factory-protocol example (4,810 params)."""

    hidden: int = 64

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(NUM_CLASSES)(x)


def mlp() -> MLP:
    """The example factory: ``--model nncf_jax.examples.digits_model:mlp``."""
    return MLP()


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model spec.

    Attributes:
      spec: the spec string (``"digits_cnn"`` for the digits CNN; a file's
        path made absolute).
      model: the linen module.
      is_default: whether it is the digits CNN (its input must be 8×8×1 images).
    """

    spec: str
    model: nn.Module
    is_default: bool


def _is_file(name: str) -> bool:
    return name.endswith(".py") or os.sep in name or "/" in name


def _import_module(name: str, where: str):
    if _is_file(name):
        path = Path(name)
        if not path.is_file():
            raise UsageError(f"{where}: no Python file {name!r}")
        spec = importlib.util.spec_from_file_location(f"_nncf_jax_model_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise UsageError(f"{where}: cannot import {name!r} as a Python file")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        raise UsageError(f"{where}: cannot import module {name!r} ({e})") from None


def resolve_model(spec: str | None) -> ModelSpec:
    """The model a spec names; see the module docstring.

    Args:
      spec: ``None``, ``"digits_cnn"``, another name without ``:`` (the digits
        CNN), ``"module:factory"`` or ``"file.py:factory"``.

    Raises:
      UsageError: the module or factory cannot be found, or the factory does
        not return a ``flax.linen.Module``.
    """
    if not isinstance(spec, str) or ":" not in spec:
        return ModelSpec(DEFAULT_MODEL, CNN(), True)
    where = f"model {spec!r}"
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise UsageError(f"{where}: expected 'module:factory' or 'file.py:factory'")
    module = _import_module(module_name, where)
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UsageError(f"{where}: {module_name!r} has no callable {attr!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise UsageError(
            f"{where}: {attr}() must return a flax.linen.Module, got {type(model).__name__}"
        )
    if _is_file(module_name):  # stored in the run's config.json: valid from any directory
        spec = f"{Path(module_name).resolve()}:{attr}"
    return ModelSpec(spec, model, False)
