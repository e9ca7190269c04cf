"""`create_compressed_model`: config + model -> controller + compression state."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from nncf_jax.config import NNCFConfig
from nncf_jax.config.validation import INT32_MAX
from nncf_jax.core.controller import CompressionController
from nncf_jax.core.init_data import ReplayableBatches
from nncf_jax.core.paths import flatten_params
from nncf_jax.core.registry import BuildContext, get_builder
from nncf_jax.core.state import CompressionState
from nncf_jax.errors import ConfigError, StateMismatchError, UsageError

__all__ = ["create_compressed_model"]


def _wrap_nnx(model: Any) -> Any:
    from flax import nnx

    from nncf_jax.nnx_model import NNXModel

    return NNXModel(model) if isinstance(model, nnx.Module) else model


def _apply_fn_of(model: Any):
    apply = getattr(model, "apply", None)
    if callable(apply):
        return apply
    if callable(model):
        return model
    raise UsageError(
        f"model must be a flax.linen.Module or a function apply(variables, *inputs), "
        f"got {type(model).__name__}"
    )


def _steps_per_epoch(sections, given: int | None) -> int | None:
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or not 0 < given <= INT32_MAX:
            shown = given if isinstance(given, (int, float)) and abs(given) < 1e30 else None
            raise ConfigError(
                "steps_per_epoch",
                f"expected a positive integer <= {INT32_MAX}, got "
                + (repr(shown) if shown is not None else f"a {type(given).__name__}"),
            )
        return given
    found = {}
    for section in sections:
        value = section.section.get("params", {}).get("steps_per_epoch")
        if value is not None:
            found[f"{section.path}.params.steps_per_epoch"] = value
    if len(set(found.values())) > 1:
        raise ConfigError(next(iter(found)), f"algorithms disagree on steps_per_epoch: {found}")
    return next(iter(found.values()), None)


def create_compressed_model(
    model: Any,
    variables: Any,
    config: NNCFConfig | Mapping[str, Any],
    *,
    init_data: Iterable[Any] | None = None,
    compression_state: Mapping[str, Any] | None = None,
    steps_per_epoch: int | None = None,
) -> tuple[CompressionController, CompressionState]:
    """Builds the compression controller and the initial compression state.

    Args:
      model: an unmodified ``flax.linen.Module`` (its ``apply`` is used), a
        ``flax.nnx.Module`` (wrapped in `nncf_jax.NNXModel`; pass
        ``NNXModel(model).variables`` as ``variables``), or a function
        ``apply(variables, *inputs, **kwargs)``.
      variables: ``model.init(...)`` output (``{"params": ..., ...}``), or a
        bare params pytree for a plain function.
      config: an `NNCFConfig` or a dict (validated here).
      init_data: iterable of input batches for initialisers (quantizer range
        init, HAWQ); each item is the model's input array, or a tuple of its
        positional inputs. Unused by the sparsity algorithms.
      compression_state: ``ctrl.get_compression_state()`` of an earlier run:
        builder states are checked against this build, then the controller
        state (counters, levels) is loaded and masks re-derived at the saved
        level. For bit-exact resume restore the full state pytree with
        `nncf_jax.checkpoint` instead.
      steps_per_epoch: optimizer steps per epoch; needed by ``ctrl.transform``
        and per-step schedules unless the config's ``params`` give it.

    Returns:
      ``(ctrl, cstate)``: the controller (its facade handles ``ctrl.state`` /
      ``ctrl.params`` set to these) and the `CompressionState` pytree.

    Raises:
      ConfigError, UnknownAlgorithmError, ScopeError: bad config.
      NotAvailableError: an NNCF algorithm this version does not build yet.
      StateMismatchError: ``compression_state`` does not fit.

    Example:
      >>> ctrl, cstate = create_compressed_model(model, variables, config)  # doctest: +SKIP
      >>> logits = ctrl.apply(variables, cstate, x)  # doctest: +SKIP
    """
    if not isinstance(config, NNCFConfig):
        config = NNCFConfig.from_dict(config)
    model = _wrap_nnx(model)
    apply_fn = _apply_fn_of(model)
    has_collections = isinstance(variables, Mapping) and "params" in variables
    params = variables["params"] if has_collections else variables
    sections = config.algorithm_sections()
    seen: dict[str, str] = {}
    for section in sections:
        if section.name in seen:
            raise ConfigError(
                f"{section.path}.algorithm",
                f"{section.name!r} appears twice (also at {seen[section.name]}); "
                "each algorithm may be configured once",
            )
        seen[section.name] = section.path
    context = BuildContext(
        config=config,
        params=params,
        param_names=tuple(flatten_params(params)),
        # Several builders read it: a generator is read once and replayed.
        init_data=None if init_data is None else ReplayableBatches(init_data),
        steps_per_epoch=_steps_per_epoch(sections, steps_per_epoch),
        model=model,
        apply_fn=apply_fn,
        variables=variables,
        saved_builder_state=(
            compression_state.get("builder_state")
            if isinstance(compression_state, Mapping)
            else None
        ),
    )
    algorithms = [get_builder(s.name, s.path)(s, context) for s in sections]
    ctrl = CompressionController(
        algorithms,
        apply_fn,
        has_collections=has_collections,
        steps_per_epoch=context.steps_per_epoch,
        param_shapes={n: tuple(np.shape(v)) for n, v in flatten_params(params).items()},
        input_info=config.get("input_info"),
    )
    ctrl.bn_adaptation_samples = _bn_adaptation_samples(sections)
    ctrl.params = params
    ctrl.state = ctrl.init_state(params)
    if compression_state is not None:
        _resume(ctrl, compression_state)
    return ctrl, ctrl.state


def _bn_adaptation_samples(sections) -> int:
    """The largest ``num_bn_adaptation_samples`` any section sets (2000 by default)."""
    given = [
        s.section.get("initializer", {})
        .get("batchnorm_adaptation", {})
        .get("num_bn_adaptation_samples")
        for s in sections
        if isinstance(s.section.get("initializer"), Mapping)
    ]
    given = [int(g) for g in given if g is not None]
    return max(given) if given else 2000


def _resume(ctrl: CompressionController, compression_state: Mapping[str, Any]) -> None:
    if not isinstance(compression_state, Mapping) or not {
        "builder_state",
        "ctrl_state",
    } <= set(compression_state):
        raise StateMismatchError(
            "compression_state must be the dict from ctrl.get_compression_state(), with keys "
            "'builder_state' and 'ctrl_state'"
        )
    builder_state = compression_state["builder_state"]
    names = {a.name for a in ctrl.algorithms}
    if not isinstance(builder_state, Mapping) or set(builder_state) != names:
        saved = sorted(builder_state) if isinstance(builder_state, Mapping) else builder_state
        raise StateMismatchError(
            f"compression_state was made for algorithms {saved}, this config has {sorted(names)}"
        )
    for a in ctrl.algorithms:
        a.check_builder_state(builder_state[a.name])
    ctrl.load_state(compression_state["ctrl_state"])
