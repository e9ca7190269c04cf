"""The ``quantization`` algorithm: NNCF's fake-quantizers on weights and activations.

The algorithm object is static: the quantizer specs (`QuantizerSpec`), the
op sites of the model and the initial ranges found at build time. The
quantizer ranges live in a `QuantizationState` pytree inside the
compression state:

- ``weights``: nested like the params, ``{"Conv_0": {"kernel": {"scale": f32[C]}}}``;
- ``activations``: nested by quantizer name, ``{"Conv_0": {"input": {"scale": f32[]}}}``.

A symmetric quantizer holds ``{"scale"}``, an asymmetric one
``{"input_low", "input_range"}``; per-channel ones hold ``(C,)`` arrays, one
per channel along the spec's axis, per-tensor ones scalars.

Ranges are set by range initialisation. DESIGN's train step differentiates
the params only, so there they stay fixed; NNCF trains them with the
optimizer, which ``ctrl.trainable`` / ``ctrl.with_trainable`` allow
(docs/quantization.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec

from nncf_jax.core.algorithm import CompressionAlgorithm
from nncf_jax.core.paths import flatten_params, param_path, unflatten_params
from nncf_jax.core.stage import CompressionStage
from nncf_jax.errors import StateMismatchError
from nncf_jax.quantization.fake_quant import asymmetric_quantize, symmetric_quantize
from nncf_jax.quantization.packing import pack_weight, unpack_weight
from nncf_jax.quantization.placement import OpSite, intercepting, quantizing_interceptor
from nncf_jax.quantization.setup import ACTIVATIONS, WEIGHTS, QuantizerSpec
from nncf_jax.quantization.statistics import QuantizationStatistics

__all__ = ["Quantization", "QuantizationState", "fake_quantize"]


class QuantizationState(struct.PyTreeNode):
    """Quantizer ranges.

    Attributes:
      weights: ``{param path parts...: {"scale"} | {"input_low", "input_range"}}``,
        float32, scalars or ``(C,)``.
      activations: the same, nested by activation quantizer name.
    """

    weights: dict[str, Any]
    activations: dict[str, Any]


def fake_quantize(spec: QuantizerSpec, qparams: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
    """Fake-quantizes ``x`` with one quantizer.

    Args:
      spec: the quantizer's static settings (``signed`` must be decided).
      qparams: ``{"scale"}`` (symmetric) or ``{"input_low", "input_range"}``,
        scalars or ``(x.shape[spec.axis],)`` when ``spec.per_channel``.
      x: the weight or activation, floating.

    Returns:
      ``x`` on the quantizer's grid, same shape and dtype.
    """
    if spec.stack_axes:
        # Layers stacked by nn.scan: one quantizer per layer slice.
        inner = replace(spec, stack_axes=spec.stack_axes - 1)
        return jax.vmap(lambda q, w: fake_quantize(inner, q, w))(dict(qparams), x)
    axis = spec.axis if spec.per_channel else None
    if spec.mode == "symmetric":
        return symmetric_quantize(
            x,
            qparams["scale"],
            bits=spec.effective_bits,
            signed=bool(spec.signed),
            narrow_range=spec.narrow_range,
            axis=axis,
        )
    return asymmetric_quantize(
        x, qparams["input_low"], qparams["input_range"], bits=spec.effective_bits, axis=axis
    )


def _lookup(nested: Mapping[str, Any], name: str) -> Any:
    node: Any = nested
    for part in name.split("/"):
        node = node[part]
    return node


def _channel_sharding(kernel: Any, ndim: int) -> NamedSharding | None:
    """The sharding of a ``(C,)`` range of a kernel sharded along its channel
    (last) axis, or None: the controller replicates every other state leaf on
    the params' mesh (`CompressionController.init_state`)."""
    sharding = getattr(kernel, "sharding", None)
    if ndim == 1 and isinstance(sharding, NamedSharding) and len(sharding.spec) == np.ndim(kernel):
        return NamedSharding(sharding.mesh, PartitionSpec(sharding.spec[-1]))
    return None


class Quantization(CompressionAlgorithm):
    """Weight and activation fake-quantization with ranges from calibration.

    Args:
      specs: every quantizer (weights first), ``signed`` decided.
      sites: the model's quantizable ops (empty for a plain apply function).
      initial_ranges: ``{quantizer name: {"scale"} | {"input_low", "input_range"}}``
        of numpy float32 arrays, from range initialisation or a saved
        builder state.
      config_path: JSON path of the config section.
      quantize_outputs: whether op outputs are quantized too.
      precision: how bit widths were chosen (``{"type": ..., ...}``), for
        ``builder_state`` and the printout; None for the config's bits.
    """

    name = "quantization"
    epoch_scheduled = False
    application_order = 10

    def __init__(
        self,
        specs: Sequence[QuantizerSpec],
        sites: Sequence[OpSite],
        initial_ranges: Mapping[str, Mapping[str, np.ndarray]],
        *,
        config_path: str,
        quantize_outputs: bool = False,
        precision: Mapping[str, Any] | None = None,
    ):
        self.specs = tuple(specs)
        self.sites = tuple(sites)
        self.config_path = config_path
        self.quantize_outputs = quantize_outputs
        self.precision = dict(precision) if precision else None
        self._initial = {
            n: {k: np.asarray(v, np.float32) for k, v in r.items()}
            for n, r in initial_ranges.items()
        }
        self._weights = {s.name: s for s in self.specs if s.group == WEIGHTS}
        self._activations = {s.name: s for s in self.specs if s.group == ACTIVATIONS}
        self._sites = {s.module: s for s in self.sites}

    @property
    def weight_quantizers(self) -> dict[str, QuantizerSpec]:
        """``{param path: spec}`` of the weight quantizers."""
        return dict(self._weights)

    @property
    def activation_quantizers(self) -> dict[str, QuantizerSpec]:
        """``{name: spec}`` of the activation quantizers."""
        return dict(self._activations)

    # --- build time -------------------------------------------------------

    def init_state(self, params: Any) -> QuantizationState:
        """Ranges from build time, placed like the params they belong to.

        With params sharded by ``NamedSharding``, a per-channel weight range
        takes the sharding of its kernel's channel axis and every other range
        is replicated on the same mesh (by the controller), so a jitted step
        moves nothing.
        """
        flat = flatten_params(params)

        def place(name: str, value: np.ndarray) -> jax.Array:
            kernel = flat.get(name) if name in self._weights else None
            sharding = _channel_sharding(kernel, value.ndim)
            array = jnp.asarray(value)
            return array if sharding is None else jax.device_put(array, sharding)

        def group(specs):
            return unflatten_params(
                {
                    name: {k: place(name, v) for k, v in self._initial[name].items()}
                    for name in specs
                }
            )

        return QuantizationState(weights=group(self._weights), activations=group(self._activations))

    def builder_state(self) -> dict[str, Any]:
        quantizers = {
            s.name: {
                **s.to_json(),
                "range": {k: np.asarray(v).tolist() for k, v in self._initial[s.name].items()},
            }
            for s in self.specs
        }
        return {"quantizers": quantizers, "precision": self.precision}

    def check_builder_state(self, builder_state: dict[str, Any]) -> None:
        saved = builder_state.get("quantizers") if isinstance(builder_state, Mapping) else None
        if not isinstance(saved, Mapping):
            raise StateMismatchError(
                f"{self.config_path} (quantization): the saved builder_state has no 'quantizers'"
            )
        now = {s.name: s.to_json() for s in self.specs}
        then = {n: {k: v for k, v in q.items() if k != "range"} for n, q in saved.items()}
        only_saved = sorted(set(then) - set(now))
        only_now = sorted(set(now) - set(then))
        if only_saved or only_now:
            raise StateMismatchError(
                f"{self.config_path} (quantization): the saved compression state has other "
                f"quantizers; only in the saved state: {only_saved or 'none'}; only in this "
                f"build: {only_now or 'none'}"
            )
        for name in now:
            if now[name] != then[name]:
                raise StateMismatchError(
                    f"{self.config_path} (quantization): quantizer {name!r} was saved as "
                    f"{then[name]}, this build has {now[name]}"
                )

    # --- step time ----------------------------------------------------------

    def compress_params(self, params: Any, state: QuantizationState) -> Any:
        def one(path, w):
            spec = self._weights.get(param_path(path))
            if spec is None:
                return w
            return fake_quantize(spec, _lookup(state.weights, spec.name), w)

        return jax.tree_util.tree_map_with_path(one, params)

    def forward_context(self, state: QuantizationState) -> contextlib.AbstractContextManager:
        if not self._activations:
            return contextlib.nullcontext()

        def quantize(name: str, x: jax.Array) -> jax.Array:
            spec = self._activations.get(name)
            if spec is None or not jnp.issubdtype(x.dtype, jnp.floating):
                return x
            return fake_quantize(spec, _lookup(state.activations, name), x)

        return intercepting(
            quantizing_interceptor(self._sites, quantize, quantize_outputs=self.quantize_outputs)
        )

    def trainable_state(self, state: QuantizationState) -> dict[str, Any]:
        """Every quantizer's range (scales; asymmetric lows and widths), as NNCF trains them."""
        return {"weights": state.weights, "activations": state.activations}

    def with_trainable_state(self, state: QuantizationState, trainable: Any) -> QuantizationState:
        return QuantizationState(weights=trainable["weights"], activations=trainable["activations"])

    def pack_params(self, params: Any, state: QuantizationState):
        """Quantized kernels as integer codes (`nncf_jax.quantization.packing`);
        ``unpack`` rebuilds the stripped params bit for bit in the graph."""
        leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
        names = [param_path(p) for p, _ in leaves]
        flat = dict(zip(names, (leaf for _, leaf in leaves), strict=True))
        weights = jax.device_get(state.weights)
        # Stacked (nn.scan) kernels stay float in the artefact.
        packed = {
            name: pack_weight(spec, _lookup(weights, name), flat[name])
            for name, spec in self._weights.items()
            if not spec.stack_axes
        }
        shapes = {name: tuple(np.shape(flat[name])) for name in packed}
        stored = {"packed": packed, "rest": {n: v for n, v in flat.items() if n not in packed}}

        def unpack(stored):
            return treedef.unflatten(
                [
                    unpack_weight(self._weights[n], shapes[n], stored["packed"][n])
                    if n in shapes
                    else stored["rest"][n]
                    for n in names
                ]
            )

        return stored, unpack

    # --- host side ----------------------------------------------------------

    def compression_stage(self, state: QuantizationState) -> CompressionStage:
        return CompressionStage.FULLY_COMPRESSED

    def statistics(self, state: QuantizationState, params: Any) -> QuantizationStatistics:
        return QuantizationStatistics.of(self.specs)
