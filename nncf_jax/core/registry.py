"""Algorithm name -> builder.

A builder turns one config section into a `CompressionAlgorithm`:
``builder(section, context) -> CompressionAlgorithm`` where ``section`` is an
`AlgorithmSection` of the validated config and ``context`` a `BuildContext`.
Built-in algorithms register themselves when their module is imported; the
registry imports them on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from nncf_jax.errors import NotAvailableError, UnknownAlgorithmError

__all__ = ["BuildContext", "get_builder", "register_algorithm", "registered_algorithms"]

_BUILTIN_MODULES = (
    "nncf_jax.sparsity.magnitude_builder",
    "nncf_jax.sparsity.nm_builder",
    "nncf_jax.sparsity.rb_builder",
    "nncf_jax.sparsity.movement_builder",
    "nncf_jax.quantization.builder",
    "nncf_jax.distillation",
    "nncf_jax.pruning.builder",
)

_BUILDERS: dict[str, Callable[..., Any]] = {}


@dataclass(frozen=True)
class BuildContext:
    """What a builder may read besides its own section.

    Attributes:
      config: the whole `NNCFConfig` (global scopes, ``target_device``, ...).
      params: the model's params pytree.
      param_names: every param path, in tree order.
      init_data: iterable of input batches for initialisers, or None.
      steps_per_epoch: optimizer steps per epoch, when the caller knows it.
      model: the model as given (a linen Module, or an apply function).
      apply_fn: its forward, ``apply_fn(variables, *inputs)``.
      variables: the whole variables (params and e.g. ``batch_stats``).
      saved_builder_state: ``compression_state["builder_state"]`` when
        resuming (builders that initialise from data reuse what it records
        instead of initialising again), else None.
    """

    config: Any
    params: Any
    param_names: tuple[str, ...]
    init_data: Iterable[Any] | None
    steps_per_epoch: int | None
    model: Any = None
    apply_fn: Any = None
    variables: Any = None
    saved_builder_state: Any = None


def register_algorithm(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``builder`` under the config name ``name``."""

    def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
        _BUILDERS[name] = builder
        return builder

    return decorator


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def registered_algorithms() -> list[str]:
    """Names that can be built now, sorted."""
    _load_builtins()
    return sorted(_BUILDERS)


def get_builder(name: str, config_path: str) -> Callable[..., Any]:
    """The builder for ``name``.

    Raises:
      NotAvailableError: a known NNCF algorithm that this version does not build yet.
      UnknownAlgorithmError: a name that is not an algorithm at all.
    """
    from nncf_jax.config import KNOWN_ALGORITHMS

    _load_builtins()
    if name in _BUILDERS:
        return _BUILDERS[name]
    if name in KNOWN_ALGORITHMS:
        raise NotAvailableError(
            f"{config_path}.algorithm: {name!r} is an NNCF algorithm that nncf-jax does not "
            f"build yet; available now: {', '.join(registered_algorithms())}"
        )
    raise UnknownAlgorithmError(
        f"{config_path}.algorithm",
        f"unknown algorithm {name!r}; known algorithms: {', '.join(sorted(KNOWN_ALGORITHMS))}",
    )
