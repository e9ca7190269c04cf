"""Config -> `Quantization`: placement, precision and range initialisation.

The builder runs once, at ``create_compressed_model``:

1. finds the quantizable ops of a linen model (`find_op_sites`, shapes only);
2. resolves every quantizer's settings from the config (`resolve_quantizers`);
3. sets bit widths from ``initializer.precision`` (``manual`` or ``hawq``);
4. initialises ranges: weight quantizers from the weights, activation
   quantizers from ``init_data`` run through the *float* model (no quantizer
   active while statistics are collected, as in NNCF).

When resuming (``compression_state`` given) the saved builder state holds
the exact quantizer setup and initial ranges; they are reused and no data
is read, so a resumed run never re-initialises.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console

from nncf_jax.core.host import fetch
from nncf_jax.core.init_data import as_call, example_call, num_samples
from nncf_jax.core.paths import flatten_params
from nncf_jax.core.registry import BuildContext, register_algorithm
from nncf_jax.errors import ConfigError, NNCFJaxError, StateMismatchError, UsageError
from nncf_jax.nnx_model import NNXModel
from nncf_jax.quantization.algorithm import Quantization
from nncf_jax.quantization.placement import (
    OpSite,
    find_op_sites,
    intercepting,
    quantizing_interceptor,
)
from nncf_jax.quantization.precision import (
    choose_bitwidths,
    format_bitwidths,
    hutchinson_traces,
    manual_bitwidths,
    quantization_noise_table,
)
from nncf_jax.quantization.range_init import (
    RangeInitSpec,
    accumulate,
    asymmetric_range_from_minmax,
    finalize,
    init_accumulator,
    is_signed,
    symmetric_scale_from_minmax,
    weight_range,
)
from nncf_jax.quantization.setup import ACTIVATIONS, WEIGHTS, QuantizerSpec, resolve_quantizers

__all__ = ["build_quantization"]


def _take_batches(init_data: Iterable[Any] | None, samples: int) -> list[tuple[Any, ...]]:
    """The first batches of ``init_data`` holding at least ``samples`` samples.

    Read once, so a generator works; the caller reuses the list.
    """
    if init_data is None or samples <= 0:
        return []
    batches, seen = [], 0
    for batch in init_data:
        args = as_call(batch)
        batches.append(args)
        seen += num_samples(args)
        if seen >= samples:
            break
    return batches


def _range_spec(spec: QuantizerSpec, *, weight: bool) -> RangeInitSpec:
    axis = spec.axis if spec.per_channel else None
    return RangeInitSpec(
        type=spec.range.type,
        num_init_samples=max(1, spec.range.num_init_samples),
        min_percentile=spec.range.min_percentile,
        max_percentile=spec.range.max_percentile,
        axis=axis,
        symmetric=spec.mode == "symmetric",
    )


def _ranges_from_minmax(spec: QuantizerSpec, lo: Any, hi: Any) -> tuple[QuantizerSpec, dict]:
    """The spec (signedness decided) and its quantizer params from min/max statistics."""
    if spec.mode == "symmetric":
        signed = spec.signed if spec.signed is not None else is_signed(lo)
        scale = symmetric_scale_from_minmax(lo, hi)
        return replace(spec, signed=bool(signed)), {"scale": fetch(scale).astype(np.float32)}
    low, width = asymmetric_range_from_minmax(lo, hi)
    return replace(spec, signed=False), {
        "input_low": fetch(low).astype(np.float32),
        "input_range": fetch(width).astype(np.float32),
    }


def _default_ranges(spec: QuantizerSpec, channels: int | None) -> tuple[QuantizerSpec, dict]:
    """Ranges of an activation quantizer that gets no calibration data."""
    shape = () if channels is None else (channels,)
    if spec.mode == "symmetric":
        signed = True if spec.signed is None else spec.signed
        return replace(spec, signed=signed), {"scale": np.ones(shape, np.float32)}
    return replace(spec, signed=False), {
        "input_low": np.zeros(shape, np.float32),
        "input_range": np.ones(shape, np.float32),
    }


def _stacked_ranges(spec: QuantizerSpec, w: Any) -> dict[str, np.ndarray]:
    """Ranges of a kernel stacked by ``nn.scan``: each layer slice on its own."""
    if not spec.stack_axes:
        lo, hi = weight_range(_range_spec(spec, weight=True), w)
        return _ranges_from_minmax(spec, lo, hi)[1]
    inner = replace(spec, stack_axes=spec.stack_axes - 1)
    slices = [_stacked_ranges(inner, w[i]) for i in range(w.shape[0])]
    return {k: np.stack([r[k] for r in slices]) for k in slices[0]}


def _weight_ranges(specs, params) -> dict[str, tuple[QuantizerSpec, dict]]:
    flat = flatten_params(params)
    return {spec.name: (spec, _stacked_ranges(spec, flat[spec.name])) for spec in specs}


def _activation_ranges(
    specs: Sequence[QuantizerSpec],
    sites: Sequence[OpSite],
    apply_fn: Any,
    variables: Any,
    batches: Sequence[tuple[Any, ...]],
    *,
    quantize_outputs: bool,
    path: str,
) -> dict[str, tuple[QuantizerSpec, dict]]:
    """Collects the statistics of every activation quantizer over the batches."""
    range_specs = {s.name: _range_spec(s, weight=False) for s in specs}
    by_module = {s.module: s for s in sites}

    @jax.jit
    def observe(variables, args):
        seen: dict[str, jax.Array] = {}

        def record(name: str, x: jax.Array) -> jax.Array:
            if name in range_specs and name not in seen and jnp.issubdtype(x.dtype, jnp.floating):
                seen[name] = x
            return x

        with intercepting(
            quantizing_interceptor(by_module, record, quantize_outputs=quantize_outputs)
        ):
            # mutable=True: a model whose forward updates collections (e.g.
            # batch norm in training mode) runs too; the updates are dropped.
            apply_fn(variables, *args, mutable=True)
        return seen

    def observe_on_host(variables, args):
        """The same inputs through host callbacks, for ops inside ``nn.scan`` /
        ``nn.remat`` bodies, whose values cannot leave their trace: every call
        is collected (a scanned op once per layer)."""
        calls: dict[str, list[np.ndarray]] = {}
        names = sorted(range_specs)

        def host_record(index, x):
            calls.setdefault(names[int(index)], []).append(np.asarray(x))

        def record(name: str, x: jax.Array) -> jax.Array:
            if name in range_specs and jnp.issubdtype(x.dtype, jnp.floating):
                jax.debug.callback(host_record, names.index(name), x)
            return x

        def run(variables, args):
            with intercepting(
                quantizing_interceptor(by_module, record, quantize_outputs=quantize_outputs)
            ):
                apply_fn(variables, *args)

        jax.jit(run)(variables, args)
        jax.effects_barrier()
        # All calls of one batch count as one batch: a scanned op's range is
        # shared by its layers.
        return {n: np.concatenate(xs, axis=0) for n, xs in calls.items()}, {
            n: len(xs) for n, xs in calls.items()
        }

    def make_step(specs: Mapping[str, RangeInitSpec]):
        return jax.jit(lambda accs, seen: {n: accumulate(specs[n], accs[n], seen[n]) for n in accs})

    step = make_step(range_specs)

    accs = None
    on_host = False
    specs_now = range_specs
    for i, args in enumerate(batches):
        try:
            if not on_host:
                try:
                    seen = observe(variables, args)
                except jax.errors.UnexpectedTracerError:
                    on_host = True
            if on_host:
                try:
                    seen, counts = observe_on_host(variables, args)
                except Exception as e:
                    raise UsageError(
                        f"{path}: some activation quantizers sit inside a transformed body "
                        "(nn.scan) whose values cannot be collected for range "
                        f"initialisation ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); leave them out with "
                        f"{path}.activations.ignored_scopes (e.g. '{{re}}^<scan module>/'), or "
                        f"start them at scale 1 with {path}.initializer.range.num_init_samples 0"
                    ) from e
                scaled = {
                    n: replace(spec, num_init_samples=spec.num_init_samples * counts.get(n, 1))
                    for n, spec in range_specs.items()
                }
                if scaled != specs_now:  # compiled once more, not per batch
                    specs_now, step = scaled, make_step(scaled)
        except NNCFJaxError:
            raise
        except Exception as e:
            raise UsageError(
                f"{path}: running the model on init_data item {i} for range initialisation "
                f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} (each "
                "item must be the model's input array, or a tuple of its positional inputs)"
            ) from e
        missing = sorted(set(range_specs) - set(seen))
        if missing:
            raise UsageError(
                f"{path}: activation quantizers {missing} saw no floating-point input on "
                f"init_data item {i}"
            )
        if accs is None:
            accs = {n: init_accumulator(specs_now[n], seen[n].shape, seen[n].dtype) for n in seen}
        accs = step(accs, {n: seen[n] for n in accs})
    return {
        s.name: _ranges_from_minmax(s, *finalize(specs_now[s.name], accs[s.name])) for s in specs
    }


def _manual_bits(
    precision: Mapping[str, Any], specs: Sequence[QuantizerSpec], path: str
) -> dict[str, int]:
    names = [s.name for s in specs]
    where = f"{path}.initializer.precision"
    # Names no pair matches keep their own bits: they are the ones whose
    # result depends on the default, so two defaults tell them apart.
    high = manual_bitwidths(precision.get("bitwidth_per_scope"), names, 8, config_path=where)
    low = manual_bitwidths(precision.get("bitwidth_per_scope"), names, 2, config_path=where)
    return {n: high[n] for n in names if high[n] == low[n]}


def _hawq_bits(
    precision: Mapping[str, Any],
    specs: Sequence[QuantizerSpec],
    apply_fn: Any,
    variables: Any,
    batches: Sequence[tuple[Any, ...]],
    path: str,
) -> tuple[dict[str, int], dict[str, float]]:
    """HAWQ bit widths of the weight quantizers.

    The loss is label-free: the squared distance of the model's output from
    the float model's output on the calibration batches. Its Hessian at the
    float weights is the Gauss-Newton matrix ``2 JᵀJ`` (the gradient there is
    0), a positive semi-definite sensitivity that needs no targets; NNCF uses
    the task loss with labels instead.
    """
    weights = [s for s in specs if s.group == WEIGHTS]
    where = f"{path}.initializer.precision"
    if not batches:
        raise UsageError(
            f"{where}.type: 'hawq' needs calibration data; pass init_data= to "
            "create_compressed_model"
        )
    params = variables["params"] if isinstance(variables, Mapping) else variables
    flat = flatten_params(params)
    point = {s.name: flat[s.name] for s in weights}

    def with_weights(w):
        from nncf_jax.core.paths import param_path

        def one(p, leaf):
            return w.get(param_path(p), leaf)

        new_params = jax.tree_util.tree_map_with_path(one, params)
        return {**variables, "params": new_params} if isinstance(variables, Mapping) else new_params

    def loss(w, batch):
        args, reference = batch
        out = apply_fn(with_weights(w), *args)
        diffs = jax.tree_util.tree_map(
            lambda a, b: jnp.sum((a - b).astype(jnp.float32) ** 2), out, reference
        )
        return sum(jax.tree_util.tree_leaves(diffs)) / num_samples(args)

    forward = jax.jit(lambda v, args: apply_fn(v, *args))
    data = [(args, forward(variables, args)) for args in batches]
    traces = hutchinson_traces(
        loss,
        point,
        data,
        jax.random.key(0),
        num_iters=int(precision.get("iter_number", 200)),
        tolerance=float(precision.get("tolerance", 1e-4)),
    )
    bits = sorted(int(b) for b in precision.get("bits", [2, 4, 8]))
    noise = quantization_noise_table(point, bits, axis=-1)
    sizes = {n: int(np.size(w)) for n, w in point.items()}
    choice = choose_bitwidths(
        traces,
        sizes,
        noise,
        bits=bits,
        compression_ratio=float(precision.get("compression_ratio", 1.5)),
        config_path=where,
    )
    return choice, traces


def _example_call(context: BuildContext) -> tuple[tuple[Any, ...], dict[str, Any]]:
    call = example_call(context.init_data, context.config.get("input_info"))
    if call is None:
        raise ConfigError(
            "input_info",
            "quantization needs the model's input shape to place activation quantizers: "
            "give input_info (e.g. {'sample_size': [1, 8, 8, 1]}) or pass init_data",
        )
    return call


def _from_saved(saved: Mapping[str, Any], path: str):
    """Specs and initial ranges recorded in a saved builder state."""
    quantizers = saved.get("quantizers") if isinstance(saved, Mapping) else None
    if not isinstance(quantizers, Mapping):
        raise StateMismatchError(
            f"{path} (quantization): the saved builder_state has no 'quantizers'"
        )
    specs, ranges = {}, {}
    for name, q in quantizers.items():
        try:
            specs[name] = QuantizerSpec(
                name=name,
                group=q["group"],
                mode=q["mode"],
                bits=int(q["bits"]),
                signed=q["signed"],
                per_channel=bool(q["per_channel"]),
                axis=int(q["axis"]),
                narrow_range=bool(q["narrow_range"]),
                half_range=bool(q["half_range"]),
                stack_axes=int(q.get("stack_axes", 0)),
            )
            ranges[name] = {k: np.asarray(v, np.float32) for k, v in q["range"].items()}
        except (KeyError, TypeError, ValueError) as e:
            raise StateMismatchError(
                f"{path} (quantization): saved quantizer {name!r} is malformed ({e!r})"
            ) from None
    return specs, ranges


def _check_saved_spec(
    now: QuantizerSpec, then: QuantizerSpec, path: str, *, hawq_bits: list[int] | None
) -> None:
    """Raises `StateMismatchError` if a saved quantizer contradicts this config.

    Settings decided from data at build time are taken from the saved state:
    the signedness of activations (and of asymmetric quantizers, always
    unsigned) and, under ``hawq``, the weight bit widths (which must be among
    the config's ``bits``).
    """
    expected, saved = now.to_json(), then.to_json()
    if now.signed is None or now.mode == "asymmetric" or then.mode == "asymmetric":
        del expected["signed"], saved["signed"]
    if hawq_bits is not None and now.group == WEIGHTS and then.bits in hawq_bits:
        expected["bits"] = then.bits
        expected["half_range"] = now.half_range and then.bits == 8
    if expected != saved:
        diff = {k: (saved[k], expected[k]) for k in expected if expected[k] != saved.get(k)}
        raise StateMismatchError(
            f"{path} (quantization): quantizer {now.name!r} was saved with "
            + ", ".join(f"{k}={a!r}" for k, (a, _) in diff.items())
            + "; this config gives "
            + ", ".join(f"{k}={b!r}" for k, (_, b) in diff.items())
            + " (resume with the config the state was saved with)"
        )


@register_algorithm("quantization")
def build_quantization(section, context: BuildContext) -> Quantization:
    """Builds `Quantization` from a ``quantization`` section."""
    resolved = section.resolved
    path = section.path
    is_linen = isinstance(context.model, nn.Module | NNXModel)
    initializer = resolved.get("initializer", {})
    precision = initializer.get("precision") or {}
    range_config = initializer.get("range", {})
    entries = range_config if isinstance(range_config, list) else [range_config]
    wanted = max([int(e.get("num_init_samples", 256)) for e in entries] or [0])
    if precision.get("type") == "hawq":
        wanted = max(wanted, int(precision.get("num_data_points", 100)))
    batches = _take_batches(context.init_data, wanted)

    sites: list[OpSite] = []
    if is_linen:
        args, kwargs = _example_call(context)
        sites = find_op_sites(
            context.apply_fn, context.variables, args, {**kwargs, "mutable": True}
        )
        float_params = flatten_params(context.params)
        weight_names = list(
            dict.fromkeys(
                s.kernel
                for s in sites
                if s.kernel is not None
                and jnp.issubdtype(jnp.result_type(float_params[s.kernel]), jnp.floating)
                and np.ndim(float_params[s.kernel]) >= 2
            )
        )
    else:
        weight_names = [
            n
            for n, w in flatten_params(context.params).items()
            if jnp.issubdtype(jnp.result_type(w), jnp.floating) and np.ndim(w) >= 2
        ]
    activation_names = [n for s in sites for n in (*s.inputs, s.output)]
    all_names = [*context.param_names, *activation_names]
    specs = resolve_quantizers(resolved, path, context.config, sites, weight_names, all_names)
    stacks = {s.kernel: s.kernel_stack_axes for s in sites if s.kernel is not None}
    specs = [
        replace(s, stack_axes=stacks.get(s.name, 0)) if s.group == WEIGHTS else s for s in specs
    ]
    if not specs:
        raise ConfigError(path, "no quantizer left after ignored_scopes/target_scopes")

    record: dict[str, Any] | None = None
    if precision.get("type") == "manual":
        # Data-free, so it runs on resume too and the saved bits are checked against it.
        bits = _manual_bits(precision, specs, path)
        specs = [replace(s, bits=bits.get(s.name, s.bits)) for s in specs]
        record = {"type": "manual", "bits": {s.name: s.bits for s in specs}}

    saved = (context.saved_builder_state or {}).get("quantization")
    if saved is not None:
        saved_specs, ranges = _from_saved(saved, path)
        if set(ranges) != {s.name for s in specs}:
            only_saved = sorted(set(ranges) - {s.name for s in specs})
            only_now = sorted({s.name for s in specs} - set(ranges))
            raise StateMismatchError(
                f"{path} (quantization): the saved compression state has other quantizers; "
                f"only in the saved state: {only_saved or 'none'}; only in this build: "
                f"{only_now or 'none'}"
            )
        hawq_bits = (
            sorted(int(b) for b in precision.get("bits", [2, 4, 8]))
            if precision.get("type") == "hawq"
            else None
        )
        for s in specs:
            _check_saved_spec(s, saved_specs[s.name], path, hawq_bits=hawq_bits)
        specs = [saved_specs[s.name] for s in specs]
        return Quantization(
            specs,
            sites,
            ranges,
            config_path=path,
            quantize_outputs=bool(resolved.get("quantize_outputs")),
            precision=saved.get("precision"),
        )

    weight_specs = [s for s in specs if s.group == WEIGHTS]
    act_specs = [s for s in specs if s.group == ACTIVATIONS]
    if precision.get("type") == "hawq" and weight_specs:
        hawq_samples = int(precision.get("num_data_points", 100))
        hawq_batches = _limit(batches, hawq_samples)
        choice, traces = _hawq_bits(
            precision, weight_specs, context.apply_fn, context.variables, hawq_batches, path
        )
        weight_specs = [
            replace(s, bits=choice[s.name], half_range=s.half_range and choice[s.name] == 8)
            for s in weight_specs
        ]
        record = {"type": "hawq", "bits": choice, "traces": traces}
        Console(stderr=True).print(
            f"[{path}] HAWQ bit widths (compression_ratio {precision.get('compression_ratio', 1.5)}):\n"
            + format_bitwidths(choice),
            highlight=False,
        )

    initial: dict[str, tuple[QuantizerSpec, dict]] = _weight_ranges(weight_specs, context.params)
    calibrated = [s for s in act_specs if s.range.num_init_samples > 0]
    if calibrated and not batches:
        raise UsageError(
            f"{path}: {len(calibrated)} activation quantizers need calibration data to "
            "initialise their ranges; pass init_data= (input batches) to "
            f"create_compressed_model, or set {path}.initializer.range.num_init_samples to 0 "
            "to start them at scale 1"
        )
    if calibrated:
        initial.update(
            _activation_ranges(
                calibrated,
                sites,
                context.apply_fn,
                context.variables,
                _limit(batches, max(s.range.num_init_samples for s in calibrated)),
                quantize_outputs=bool(resolved.get("quantize_outputs")),
                path=path,
            )
        )
    shapes = {
        n: shape for site in sites for n, shape in zip(site.inputs, site.input_shapes, strict=True)
    }
    for s in act_specs:
        if s.name not in initial:
            channels = shapes.get(s.name, (1,))[-1] if s.per_channel else None
            initial[s.name] = _default_ranges(s, channels)
    ordered = [initial[s.name][0] for s in (*weight_specs, *act_specs)]
    return Quantization(
        ordered,
        sites,
        {name: ranges for name, (_, ranges) in initial.items()},
        config_path=path,
        quantize_outputs=bool(resolved.get("quantize_outputs")),
        precision=record,
    )


def _limit(batches: Sequence[tuple[Any, ...]], samples: int) -> list[tuple[Any, ...]]:
    """The leading batches holding ``samples`` samples (the range accumulators
    truncate the last one; HAWQ takes it whole)."""
    out, seen = [], 0
    for args in itertools.islice(batches, None):
        if seen >= samples:
            break
        out.append(args)
        seen += num_samples(args)
    return out
