"""Flax NNX models under nncf-jax: an NNX module seen as ``apply(variables, *inputs)``.

nncf-jax works on pure functions of pytrees; an NNX module is an object
graph. `NNXModel` splits it once (``nnx.split``) into a graph definition and
plain nested dicts of arrays, and runs it by merging them back
(``nnx.merge``) inside the traced function, so every algorithm, ``jit``,
checkpoints and export see the same shapes as for a linen model:

- ``variables = {"params": {...}}`` holds the ``nnx.Param`` arrays, nested by
  attribute path (``{"conv": {"kernel": ...}}``, so param paths read
  ``conv/kernel``); other NNX state (batch statistics, RNG counts) is under
  ``"state"``.
- ``NNXModel.apply(variables, *inputs, mutable=False)`` returns the output;
  with ``mutable=True`` it returns ``(output, {"state": new_state})`` like
  linen, for layers that update their state (``nnx.BatchNorm`` in training
  mode).

Interceptors: the quantization algorithm puts activation quantizers on op
inputs with linen's ``nn.intercept_methods``. NNX layers have no such hook,
so while `intercept` is active `NNXModel.apply` routes the calls of
``nnx.Linear``, ``nnx.LinearGeneral``, ``nnx.Conv``, ``nnx.ConvTranspose``
and ``nnx.Einsum`` through the same interceptors, with the module's
attribute path as its name. This patches those classes' ``__call__`` for
the duration of one traced call (and restores them), so do not trace two
NNX models concurrently from several threads.

Example:
  >>> model = CNN(rngs=nnx.Rngs(0))                       # doctest: +SKIP
  >>> wrapped = NNXModel(model)                           # doctest: +SKIP
  >>> ctrl, cstate = nj.create_compressed_model(wrapped, wrapped.variables, config)  # doctest: +SKIP
  >>> wrapped.update(model, ctrl.strip(wrapped.variables, cstate))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from flax import nnx

from nncf_jax.errors import UsageError

__all__ = ["NNX_LAYERS", "NNXModel", "intercept"]

# The NNX layers whose calls interceptors see (kernel + input: quantizable).
NNX_LAYERS: tuple[type, ...] = (
    nnx.Linear,
    nnx.LinearGeneral,
    nnx.Conv,
    nnx.ConvTranspose,
    nnx.Einsum,
)

_INTERCEPTORS: contextvars.ContextVar[tuple[Callable[..., Any], ...]] = contextvars.ContextVar(
    "nncf_jax_nnx_interceptors", default=()
)
_PATHS: contextvars.ContextVar[dict[int, tuple[str, ...]] | None] = contextvars.ContextVar(
    "nncf_jax_nnx_paths", default=None
)


@contextlib.contextmanager
def intercept(interceptor: Callable[..., Any]) -> Iterator[None]:
    """Like ``flax.linen.intercept_methods``, for the layers of `NNXModel` calls.

    ``interceptor(next_fun, args, kwargs, context)`` gets a context with
    ``module`` (an `NNXModuleView`: ``.path``, ``.module``) and
    ``method_name`` (``"__call__"``).
    """
    token = _INTERCEPTORS.set((*_INTERCEPTORS.get(), interceptor))
    try:
        yield
    finally:
        _INTERCEPTORS.reset(token)


@dataclass(frozen=True)
class NNXModuleView:
    """An NNX layer as interceptors see it.

    Attributes:
      module: the NNX module being called.
      path: its attribute path from the model root, e.g. ``("block", "conv")``.
    """

    module: Any
    path: tuple[str, ...]


@dataclass(frozen=True)
class _Context:
    module: NNXModuleView
    method_name: str


def _patched_call(original: Callable[..., Any]) -> Callable[..., Any]:
    def call(self, *args, **kwargs):
        paths = _PATHS.get()
        path = None if paths is None else paths.get(id(self))
        interceptors = _INTERCEPTORS.get()
        if path is None or not interceptors:
            return original(self, *args, **kwargs)
        context = _Context(NNXModuleView(self, path), "__call__")

        def run(index: int, args: tuple, kwargs: dict) -> Any:
            if index < 0:
                return original(self, *args, **kwargs)
            return interceptors[index](
                lambda *a, **kw: run(index - 1, a, kw), args, kwargs, context
            )

        # The innermost interceptor registered last runs first, as in linen.
        return run(len(interceptors) - 1, args, kwargs)

    call.__wrapped__ = original  # type: ignore[attr-defined]
    return call


@contextlib.contextmanager
def _routing(module: Any) -> Iterator[None]:
    if not _INTERCEPTORS.get():
        yield
        return
    paths = {
        id(node): tuple(str(p) for p in path)
        for path, node in nnx.iter_graph(module)
        if isinstance(node, nnx.Module)
    }
    token = _PATHS.set(paths)
    originals = {cls: cls.__dict__["__call__"] for cls in NNX_LAYERS}
    for cls, original in originals.items():
        cls.__call__ = _patched_call(original)
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.__call__ = original
        _PATHS.reset(token)


class NNXModel:
    """An ``nnx.Module`` as a pure ``apply(variables, *inputs)`` function.

    Args:
      module: the NNX model (only read: its graph and current values).

    Attributes:
      variables: ``{"params": ..., "state": ...}`` nested dicts of arrays
        (``"state"`` only when the model has non-param state).
    """

    def __init__(self, module: Any):
        if not isinstance(module, nnx.Module):
            raise UsageError(f"NNXModel wraps a flax.nnx.Module, got {type(module).__name__}")
        self.graphdef, params, rest = nnx.split(module, nnx.Param, ...)
        self._params_template, self._rest_template = params, rest
        self.variables: dict[str, Any] = {"params": nnx.to_pure_dict(params)}
        rest_dict = nnx.to_pure_dict(rest)
        if rest_dict:
            self.variables["state"] = rest_dict

    def _merge(self, variables: Mapping[str, Any]) -> Any:
        if not isinstance(variables, Mapping) or "params" not in variables:
            raise UsageError("NNXModel.apply expects {'params': ..., 'state': ...} variables")
        params = nnx.clone(self._params_template)
        nnx.replace_by_pure_dict(params, variables["params"])
        rest = nnx.clone(self._rest_template)
        if "state" in variables:
            nnx.replace_by_pure_dict(rest, variables["state"])
        return nnx.merge(self.graphdef, params, rest)

    def apply(self, variables: Mapping[str, Any], *args: Any, mutable: Any = False, **kwargs: Any):
        """Runs the model on ``variables``.

        Args:
          variables: ``{"params", "state"}`` as `variables`.
          *args, **kwargs: the model's call arguments.
          mutable: truthy to also return the updated state, linen style.

        Returns:
          The output, or ``(output, {"state": new_state})`` when ``mutable``.
        """
        module = self._merge(variables)
        with _routing(module):
            out = module(*args, **kwargs)
        if mutable:
            _, _, rest = nnx.split(module, nnx.Param, ...)
            return out, {"state": nnx.to_pure_dict(rest)}
        return out

    def update(self, module: Any, variables: Mapping[str, Any]) -> None:
        """Writes ``variables`` (e.g. ``ctrl.strip(...)``) into an NNX module in place."""
        merged = self._merge(variables)
        nnx.update(module, nnx.state(merged))
