r"""Mixed-precision bit widths for weight quantizers (NNCF ``initializer.precision``).

Pure functions, in the order a ``hawq`` precision initializer calls them:

1. `hutchinson_traces` estimates each weight tensor's average Hessian trace
   :math:`\operatorname{tr}(H_w) / |w|` of the calibration loss (Hutchinson's
   estimator, forward-over-reverse Hessian-vector products).
2. `weight_quantization_noise` / `quantization_noise_table` measure
   :math:`\lVert Q_b(w) - w \rVert^2` for each candidate bit width ``b``.
3. `choose_bitwidths` picks one width per quantizer that minimises the
   summed perturbation :math:`\sum_i \bar t_i \lVert Q_{b_i}(w_i) - w_i \rVert^2`
   under the compression-ratio constraint.

``manual`` initialization is `manual_bitwidths` (``bitwidth_per_scope``), and
`format_bitwidths` renders either result for a log.

Differences from NNCF, on purpose:

- Bit complexity is counted as parameters × bits, not FLOPs × bits: it needs
  no model tracing, and for weight quantizers it is the memory the weights
  take. A convolution whose weights are reused over many output positions
  therefore weighs less here than in NNCF.
- A negative trace estimate (saddle curvature, or estimator noise on a flat
  layer) counts as zero: taken at face value it would make more quantization
  noise look *better*.
- The ``bitwidth_assignment_mode`` (``strict`` / ``liberal``) of NNCF is
  ignored: it constrains activation quantizers that share an input with a
  weight quantizer, and here only weight quantizers are chosen.
- The choice is exact (exhaustive search) when there are at most
  `EXHAUSTIVE_LIMIT` combinations and greedy beyond, where NNCF enumerates a
  fixed list of candidate configurations ordered by the traces.
"""

from __future__ import annotations

import difflib
import functools
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from nncf_jax.core.paths import (
    MAX_REGEX_STEPS,
    REGEX_PREFIX,
    compile_scope_regex,
    regex_search_cost,
)
from nncf_jax.errors import ConfigError, ScopeError, UsageError

__all__ = [
    "EXHAUSTIVE_LIMIT",
    "REFERENCE_BITS",
    "choose_bitwidths",
    "format_bitwidths",
    "hutchinson_traces",
    "manual_bitwidths",
    "quantization_noise_table",
    "weight_quantization_noise",
]

# The compression ratio is measured against every weight at 8 bits, as in
# NNCF, whatever the candidate widths are.
REFERENCE_BITS = 8
# Above this many combinations (choices ** quantizers) the exact search gives
# way to the greedy one: 1e5 rows of a few int64 columns is a few MB and
# milliseconds of numpy.
EXHAUSTIVE_LIMIT = 100_000
# Slack on the ratio comparison, so that a configuration that meets the
# ratio exactly is not refused over a rounding error of the division.
_RATIO_SLACK = 1e-9
_MAX_LISTED = 20


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


# --------------------------------------------------------------------------
# Hessian traces
# --------------------------------------------------------------------------


def hutchinson_traces(
    loss_fn: Callable[[dict[str, jax.Array], Any], jax.Array],
    weights: Mapping[str, jax.Array],
    batches: Iterable[Any],
    key: jax.Array,
    *,
    num_iters: int,
    tolerance: float = 1e-4,
) -> dict[str, float]:
    r"""Average Hessian trace of the loss per weight tensor (HAWQ sensitivity).

    For each tensor :math:`w` it estimates
    :math:`\bar t_w = \operatorname{tr}(H_w) / |w|`, where :math:`H_w` is the
    Hessian block of the mean calibration loss
    :math:`\frac{1}{B}\sum_b L(W, x_b)` with respect to :math:`w`, using
    Hutchinson's estimator :math:`\operatorname{tr}(H) = E[v^\top H v]` with
    Rademacher :math:`v`. Each iteration draws one :math:`v` for every tensor
    at once and computes one Hessian-vector product of the whole dict per
    batch (forward-over-reverse: ``jax.jvp`` of ``jax.grad``), so an
    iteration costs about ``len(batches)`` × (2 backward passes).

    The estimate is the running mean over iterations. Iteration stops after
    ``num_iters``, or earlier (from the second iteration on) when the
    relative change of the sum of the running means,
    :math:`|S_i - S_{i-1}| / |S_{i-1}|`, is below ``tolerance`` — NNCF's
    stopping rule on the total trace.

    The HVP function is jitted once per call: batches of the same shapes and
    dtypes share one compilation. Passing the batch as an argument (rather
    than closing ``loss_fn`` over it) keeps it out of the compiled constants.

    Args:
      loss_fn: ``loss_fn(weights, batch) -> scalar``, a real scalar loss of a
        dict shaped like ``weights`` and one element of ``batches``; it must
        be twice differentiable and traceable by ``jax.jit``. A loss already
        closed over its data takes ``lambda w, _: loss(w)`` with
        ``batches=[None]``.
      weights: ``{path: array}`` of floating tensors (e.g. from
        `nncf_jax.core.paths.flatten_params`, restricted to the quantized
        kernels), the point at which the Hessian is taken. Other parameters
        the loss needs belong in its closure or the batch.
      batches: the calibration batches (pytrees of arrays, or None); read
        once and kept for every iteration. NNCF's ``num_data_points`` is the
        caller's choice of how many samples these hold.
      key: a PRNG key; iteration ``i`` uses ``jax.random.fold_in(key, i)``,
        so the first ``n`` iterations do not depend on ``num_iters``.
      num_iters: the most iterations (NNCF ``iter_number``), at least 1.
      tolerance: relative change of the total trace below which iteration
        stops (NNCF ``tolerance``); 0 runs all ``num_iters``.

    Returns:
      ``{path: average trace}`` as Python floats, in the order of
      ``weights``. Traces can be negative where the loss is not convex.

    Raises:
      UsageError: no weights or no batches, a tensor that is empty or not
        floating, ``num_iters`` < 1, a negative or non-finite ``tolerance``,
        or a ``loss_fn`` whose result is not a real scalar.

    Example:
      >>> a = jnp.array([1.0, 2.0, 3.0])
      >>> loss = lambda w, _: 0.5 * jnp.sum(a * w["k"] ** 2)
      >>> hutchinson_traces(loss, {"k": jnp.ones(3)}, [None], jax.random.key(0), num_iters=5)
      {'k': 2.0}
    """
    names = list(weights)
    if not names:
        raise UsageError("hutchinson_traces: weights is empty; nothing to estimate")
    for name in names:
        w = weights[name]
        dtype = getattr(w, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise UsageError(
                f"hutchinson_traces: weights[{name!r}] must be a floating array, got "
                f"{type(w).__name__} of dtype {dtype}"
            )
        if w.size == 0:
            raise UsageError(f"hutchinson_traces: weights[{name!r}] is empty (shape {w.shape})")
    batches = list(batches)
    if not batches:
        raise UsageError("hutchinson_traces: batches is empty; pass at least one batch")
    if not _is_int(num_iters) or num_iters < 1:
        raise UsageError(f"hutchinson_traces: num_iters must be an int >= 1, got {num_iters!r}")
    if not isinstance(tolerance, numbers.Real) or not (0 <= tolerance < math.inf):
        raise UsageError(
            f"hutchinson_traces: tolerance must be a finite number >= 0, got {tolerance!r}"
        )
    weights = {name: weights[name] for name in names}
    out = jax.eval_shape(loss_fn, weights, batches[0])
    if (
        getattr(out, "shape", None) != ()
        or not jnp.issubdtype(out.dtype, jnp.floating)
        or jnp.issubdtype(out.dtype, jnp.complexfloating)
    ):
        raise UsageError(f"hutchinson_traces: loss_fn must return a real scalar, got {out!r}")

    @jax.jit
    def quadratic_forms(
        w: dict[str, jax.Array], batch: Any, key: jax.Array, iteration: jax.Array
    ) -> jax.Array:
        # The probe is drawn from the iteration key inside the jitted function,
        # so every batch of one iteration sees the same v without a host trip.
        keys = jax.random.split(jax.random.fold_in(key, iteration), len(names))
        v = {
            n: jax.random.rademacher(k, w[n].shape, w[n].dtype)
            for n, k in zip(names, keys, strict=True)
        }
        grad = jax.grad(loss_fn)
        _, hv = jax.jvp(lambda p: grad(p, batch), (w,), (v,))
        return jnp.stack(
            [jnp.sum(v[n].astype(jnp.float32) * hv[n].astype(jnp.float32)) for n in names]
        )

    numel = np.array([weights[n].size for n in names], np.float64)
    total = np.zeros(len(names), np.float64)
    previous = None
    for i in range(num_iters):
        iteration = np.int32(i)  # an array argument: one compilation for every i
        batch_sum = sum(quadratic_forms(weights, batch, key, iteration) for batch in batches)
        # One host read per iteration: the stopping rule needs the value.
        total += np.asarray(batch_sum, np.float64) / len(batches)
        mean = total / (i + 1) / numel
        current = float(np.sum(mean))
        if previous is not None:
            change = abs(current - previous) / max(abs(previous), np.finfo(np.float64).tiny)
            if change < tolerance:
                break
        previous = current
    return {name: float(t) for name, t in zip(names, mean, strict=True)}


# --------------------------------------------------------------------------
# Quantization noise
# --------------------------------------------------------------------------


def _check_bits(bits: Any, where: str) -> int:
    if not _is_int(bits) or bits < 2:
        raise UsageError(f"{where}: bits must be an int >= 2, got {bits!r}")
    return int(bits)


@functools.partial(jax.jit, static_argnames=("bits", "axis"))
def _noise(w: jax.Array, bits: int, axis: int | None) -> jax.Array:
    w = w.astype(jnp.float32)
    levels = 2 ** (bits - 1) - 1
    reduce = None if axis is None else tuple(d for d in range(w.ndim) if d != axis)
    scale = jnp.max(jnp.abs(w), axis=reduce, keepdims=True)
    # An all-zero channel quantizes to itself; a unit scale avoids 0 / 0.
    scale = jnp.where(scale > 0, scale, 1.0)
    # r / levels is exactly ±1 at the largest magnitude, so the channel
    # maximum is reproduced exactly (levels * (scale / levels) may not be).
    q = jnp.clip(jnp.round(w / scale * levels), -levels, levels) / levels * scale
    return jnp.sum(jnp.square(q - w))


def weight_quantization_noise(w: jax.Array, bits: int, *, axis: int | None = -1) -> jax.Array:
    r"""Squared error of symmetric, signed, narrow-range fake quantization.

    With :math:`n = 2^{b-1} - 1` levels per sign and per-channel scale
    :math:`s = \max |w|` over every axis but ``axis``,

    .. math::
       Q_b(w) = \operatorname{clip}(\operatorname{round}(w n / s), -n, n)\, s / n,
       \qquad \text{noise} = \lVert Q_b(w) - w \rVert_2^2 .

    Computed in float32 whatever the dtype of ``w``; ``round`` is half to
    even. A channel of zeros has zero noise.

    Args:
      w: a weight tensor of any shape and floating dtype.
      bits: the bit width ``b``, an int >= 2 (static under ``jit``).
      axis: the output-channel axis (-1 for Flax ``Dense`` and ``Conv``
        kernels), or None for one scale for the whole tensor.

    Returns:
      A float32 scalar array.

    Raises:
      UsageError: ``bits`` is not an int >= 2, or ``axis`` is not an axis
        of ``w``.

    Example:
      >>> float(weight_quantization_noise(jnp.array([[1.0, 0.5, 0.25]]), 2, axis=None))
      0.3125
    """
    bits = _check_bits(bits, "weight_quantization_noise")
    ndim = jnp.ndim(w)
    if axis is not None:
        if not _is_int(axis) or not -ndim <= axis < ndim:
            raise UsageError(
                f"weight_quantization_noise: axis {axis!r} is not an axis of a {ndim}-d "
                "tensor; pass None for a per-tensor scale"
            )
        axis = int(axis) % ndim
    return _noise(jnp.asarray(w), bits, axis)


def quantization_noise_table(
    weights: Mapping[str, jax.Array], bits: Sequence[int], *, axis: int | None = -1
) -> dict[str, dict[int, float]]:
    """`weight_quantization_noise` of every tensor at every width, for `choose_bitwidths`.

    Args:
      weights: ``{path: array}``.
      bits: the candidate widths.
      axis: the output-channel axis of every tensor, or None (per tensor).

    Returns:
      ``{path: {bits: noise}}`` with Python float noise.

    Raises:
      UsageError: as `weight_quantization_noise`; the message names the path.
    """
    table: dict[str, dict[int, float]] = {}
    for name, w in weights.items():
        try:
            table[name] = {b: float(weight_quantization_noise(w, b, axis=axis)) for b in bits}
        except UsageError as e:
            raise UsageError(f"{name}: {e}") from None
    return table


# --------------------------------------------------------------------------
# Automatic choice (HAWQ)
# --------------------------------------------------------------------------


def _numel(value: Any, name: str) -> int:
    if _is_int(value):
        n = int(value)
    elif hasattr(value, "shape"):
        n = math.prod(value.shape)
    else:
        raise UsageError(
            f"choose_bitwidths: sizes[{name!r}] must be a parameter count or an array, got "
            f"{type(value).__name__}"
        )
    if n < 1:
        raise UsageError(f"choose_bitwidths: sizes[{name!r}] must be at least 1, got {n}")
    return n


def _config_error(config_path: str | None, key: str, message: str) -> Exception:
    """A `ConfigError` at ``config_path.key``, or a `UsageError` when there is no config."""
    if config_path is None:
        return UsageError(f"choose_bitwidths: {key}: {message}")
    return ConfigError(f"{config_path}.{key}", message)


def _exhaustive(pert: np.ndarray, cost: np.ndarray, budget: float) -> np.ndarray:
    num_layers, num_choices = pert.shape
    # Row r of `choice` is the r-th configuration, in mixed radix num_choices.
    choice = np.indices((num_choices,) * num_layers).reshape(num_layers, -1).T
    rows = np.arange(num_layers)
    total_pert = pert[rows, choice].sum(axis=1)
    total_cost = cost[rows, choice].sum(axis=1)
    feasible = np.nonzero(total_cost <= budget)[0]
    # Least perturbation; among equals the most bits (least compression),
    # since a tie usually means the traces could not tell the layers apart.
    order = np.lexsort((-total_cost[feasible], total_pert[feasible]))
    return choice[feasible[order[0]]]


def _greedy(pert: np.ndarray, cost: np.ndarray, budget: float) -> np.ndarray:
    num_layers, num_choices = pert.shape
    level = np.full(num_layers, num_choices - 1)
    rows = np.arange(num_layers)
    used = cost[rows, level].sum()
    while used > budget:
        lowerable = np.nonzero(level > 0)[0]
        added = pert[lowerable, level[lowerable] - 1] - pert[lowerable, level[lowerable]]
        saved = cost[lowerable, level[lowerable]] - cost[lowerable, level[lowerable] - 1]
        layer = lowerable[np.argmin(added / saved)]
        level[layer] -= 1
        used -= cost[layer, level[layer] + 1] - cost[layer, level[layer]]
    # The last step may overshoot the budget; spend what it left on the
    # layers that gain most per bit, each raise strictly lowering the sum.
    while True:
        raisable = np.nonzero(level < num_choices - 1)[0]
        if raisable.size == 0:
            break
        removed = pert[raisable, level[raisable]] - pert[raisable, level[raisable] + 1]
        extra = cost[raisable, level[raisable] + 1] - cost[raisable, level[raisable]]
        fits = (used + extra <= budget) & (removed > 0)
        if not fits.any():
            break
        gain = np.where(fits, removed / extra, -np.inf)
        pick = int(np.argmax(gain))
        level[raisable[pick]] += 1
        used += extra[pick]
    return level


def choose_bitwidths(
    traces: Mapping[str, float],
    sizes: Mapping[str, int | jax.Array],
    noise: Mapping[str, Mapping[int, float]] | Callable[[str, int], float],
    *,
    bits: Sequence[int] = (2, 4, 8),
    compression_ratio: float = 1.5,
    method: Literal["auto", "exhaustive", "greedy"] = "auto",
    config_path: str | None = None,
) -> dict[str, int]:
    r"""Picks a bit width per weight quantizer, as NNCF's HAWQ initializer.

    It minimises the total perturbation

    .. math::
       \Omega(b) = \sum_i \max(\bar t_i, 0)\, \lVert Q_{b_i}(w_i) - w_i \rVert^2

    over :math:`b_i \in` ``bits``, subject to

    .. math::
       \frac{\sum_i 8\, n_i}{\sum_i b_i\, n_i} \ge \text{compression\_ratio},

    where :math:`n_i` is the parameter count of tensor :math:`i` (bit
    complexity is parameters × bits here; NNCF counts FLOPs × bits).

    This is a multiple-choice knapsack. With ``method="auto"`` it is solved
    exactly by enumeration when ``len(bits) ** len(traces)`` is at most
    `EXHAUSTIVE_LIMIT`; ties go to the configuration with the most bits.
    Otherwise greedily: all quantizers start at the widest width; while the
    ratio is not met, the quantizer whose next narrower width adds the least
    perturbation per bit saved steps down; then, while a step back up fits
    the ratio and lowers the perturbation, the one that removes the most
    perturbation per bit added steps up. The greedy result meets the ratio
    but can be above the optimum when a quantizer's perturbation is not
    convex in its width.

    Args:
      traces: ``{path: average Hessian trace}``, e.g. from
        `hutchinson_traces`; its order is the order of the result.
      sizes: ``{path: parameter count}`` or ``{path: weight array}`` (its
        size is used), for the same paths.
      noise: ``noise[path][b]`` or ``noise(path, b)``: the squared
        quantization error of ``path`` at ``b`` bits, e.g. from
        `quantization_noise_table`.
      bits: the candidate widths (NNCF ``bits``), ints >= 2.
      compression_ratio: the least ratio of the bit complexity of all
        weights at 8 bits to that of the chosen widths, > 0.
      method: ``"auto"``, ``"exhaustive"`` (at most `EXHAUSTIVE_LIMIT`
        combinations) or ``"greedy"``.
      config_path: JSON path of the ``precision`` section (e.g.
        ``"compression.initializer.precision"``); errors in ``bits`` and
        ``compression_ratio`` are `ConfigError`\ s at its ``.bits`` and
        ``.compression_ratio``. None (a call not from a config) makes them
        `UsageError`\ s.

    Returns:
      ``{path: bits}`` in the order of ``traces``; empty for no quantizers.

    Raises:
      ConfigError: (``config_path`` given) ``bits`` is empty or holds a
        value that is not an int >= 2, ``compression_ratio`` is not a finite
        number > 0, or it cannot be met even with every quantizer at the
        narrowest width; the message gives the best ratio reachable.
      UsageError: the same without ``config_path``; or ``sizes`` does not
        have the paths of ``traces``, a trace or noise value is missing or
        not finite, a noise value is negative, ``method`` is unknown, or
        ``"exhaustive"`` would enumerate more than `EXHAUSTIVE_LIMIT`
        combinations.

    Example:
      >>> choose_bitwidths(
      ...     {"a": 10.0, "b": 0.1}, {"a": 100, "b": 900},
      ...     {"a": {4: 1.0, 8: 0.1}, "b": {4: 1.0, 8: 0.1}},
      ...     bits=(4, 8), compression_ratio=1.5)
      {'a': 8, 'b': 4}
    """
    if isinstance(bits, (str, bytes)) or not isinstance(bits, Sequence) or not bits:
        raise _config_error(
            config_path, "bits", f"expected a non-empty list of bit widths, got {bits!r}"
        )
    for b in bits:
        if not _is_int(b) or b < 2:
            raise _config_error(
                config_path, "bits", f"every bit width must be an int >= 2, got {b!r}"
            )
    widths = sorted({int(b) for b in bits})
    if (
        not isinstance(compression_ratio, numbers.Real)
        or isinstance(compression_ratio, bool)
        or not 0 < compression_ratio < math.inf
    ):
        raise _config_error(
            config_path,
            "compression_ratio",
            f"expected a finite number > 0, got {compression_ratio!r}",
        )
    if method not in ("auto", "exhaustive", "greedy"):
        raise UsageError(
            f"choose_bitwidths: method must be 'auto', 'exhaustive' or 'greedy', got {method!r}"
        )
    names = list(traces)
    if set(sizes) != set(names):
        missing = sorted(set(names) - set(sizes))
        extra = sorted(set(sizes) - set(names))
        raise UsageError(
            "choose_bitwidths: sizes must have the paths of traces; "
            f"missing {missing}, not in traces {extra}"
        )
    if not names:
        return {}

    counts = np.array([_numel(sizes[n], n) for n in names], np.int64)
    pert = np.empty((len(names), len(widths)), np.float64)
    for i, name in enumerate(names):
        trace = traces[name]
        if not isinstance(trace, numbers.Real) or not math.isfinite(trace):
            raise UsageError(f"choose_bitwidths: traces[{name!r}] must be finite, got {trace!r}")
        for k, b in enumerate(widths):
            try:
                value = noise(name, b) if callable(noise) else noise[name][b]
            except (KeyError, TypeError):
                raise UsageError(f"choose_bitwidths: no noise for {name!r} at {b} bits") from None
            value = float(value)
            if not 0 <= value < math.inf:
                raise UsageError(
                    f"choose_bitwidths: noise of {name!r} at {b} bits must be finite and "
                    f">= 0, got {value!r}"
                )
            pert[i, k] = max(float(trace), 0.0) * value
    cost = counts[:, None] * np.array(widths, np.int64)[None, :]

    reference = REFERENCE_BITS * int(counts.sum())
    budget = reference / compression_ratio * (1 + _RATIO_SLACK)
    if cost[:, 0].sum() > budget:
        best = REFERENCE_BITS / widths[0]
        raise _config_error(
            config_path,
            "compression_ratio",
            f"{compression_ratio:g} cannot be reached: with every weight quantizer at "
            f"{widths[0]} bits the ratio is {best:.4g} (bit complexity, as parameters × bits, "
            f"of all weights at {REFERENCE_BITS} bits over that of the chosen widths); ask for "
            f"at most {best:.4g} or add narrower widths to bits",
        )

    combinations = len(widths) ** len(names)
    if method == "exhaustive" and combinations > EXHAUSTIVE_LIMIT:
        raise UsageError(
            f"choose_bitwidths: method='exhaustive' would try {len(widths)}**{len(names)} "
            f"configurations, over the limit of {EXHAUSTIVE_LIMIT}; use 'greedy' or 'auto'"
        )
    exact = method == "exhaustive" or (method == "auto" and combinations <= EXHAUSTIVE_LIMIT)
    level = (_exhaustive if exact else _greedy)(pert, cost.astype(np.float64), budget)
    return {name: widths[int(k)] for name, k in zip(names, level, strict=True)}


# --------------------------------------------------------------------------
# Manual choice
# --------------------------------------------------------------------------


def _addresses(name: str) -> list[str]:
    # As for every scope in nncf-jax: a parameter is addressed by its path
    # and by its module's path (``Conv_0/kernel`` and ``Conv_0``).
    return [name, name.rsplit("/", 1)[0]] if "/" in name else [name]


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    more = f", ... ({len(names)} in all)" if len(names) > _MAX_LISTED else ""
    return shown + more if names else "(none)"


def _scope_matcher(scope: str, names: Sequence[str], where: str) -> Callable[[str], bool]:
    if not scope.startswith(REGEX_PREFIX):
        return scope.__eq__
    try:
        regex = compile_scope_regex(scope)
        # Python's re cannot be interrupted: bound the backtracking first, as
        # the scope rules of nncf_jax.core.paths do.
        for name in names:
            if regex_search_cost(regex, name) > MAX_REGEX_STEPS:
                raise ValueError(
                    f"the regular expression could backtrack for more than "
                    f"{MAX_REGEX_STEPS:.0e} steps on {name!r}; avoid nested repeats such as "
                    "(a+)+ or list the names"
                )
    except ValueError as e:
        raise ScopeError(where, f"scope {scope!r}: {e}") from None

    def matches(name: str) -> bool:
        return regex.search(name) is not None

    return matches


def manual_bitwidths(
    bitwidth_per_scope: Sequence[Sequence[Any]] | None,
    quantizer_names: Sequence[str],
    default_bits: int,
    *,
    config_path: str,
) -> dict[str, int]:
    """Bit widths from NNCF's ``manual`` precision initializer (``bitwidth_per_scope``).

    Each ``[bits, scope]`` pair sets ``bits`` for every quantizer the scope
    matches; a quantizer no pair matches keeps ``default_bits``. A scope is
    an exact name, or ``{re}`` and a regular expression searched
    (``re.search``) in the name; as everywhere in nncf-jax it matches a
    quantizer by its path (``Conv_0/kernel``) or its module path
    (``Conv_0``). When several pairs match a quantizer the last one wins (as
    NNCF applies the pairs in order), so a broad ``{re}`` pair can come first
    and exceptions after it.

    Args:
      bitwidth_per_scope: the list of ``[bits, scope]`` pairs, or None.
      quantizer_names: every weight quantizer's name, e.g. its kernel path.
      default_bits: the width of quantizers no pair matches.
      config_path: JSON path of the ``precision`` section, e.g.
        ``"compression.initializer.precision"``; errors name
        ``{config_path}.bitwidth_per_scope[i]``.

    Returns:
      ``{name: bits}`` for every name of ``quantizer_names``, in its order.

    Raises:
      ConfigError: pair ``i`` is not a ``[bits, scope]`` pair with an int
        ``bits`` >= 2 and a string scope.
      ScopeError: (a `ConfigError`) the scope of pair ``i`` matches no
        quantizer (the message lists the quantizers), or is a ``{re}`` scope
        that does not compile or could backtrack without bound.
      UsageError: ``default_bits`` is not an int >= 2.

    Example:
      >>> manual_bitwidths([[4, "{re}Conv"], [8, "Conv_0"]],
      ...                  ["Conv_0/kernel", "Conv_1/kernel", "Dense_0/kernel"], 8,
      ...                  config_path="compression.initializer.precision")
      {'Conv_0/kernel': 8, 'Conv_1/kernel': 4, 'Dense_0/kernel': 8}
    """
    _check_bits(default_bits, "manual_bitwidths: default_bits")
    names = list(quantizer_names)
    result = dict.fromkeys(names, int(default_bits))
    addressable = list(dict.fromkeys(a for n in names for a in _addresses(n)))
    for i, pair in enumerate(bitwidth_per_scope or ()):
        where = f"{config_path}.bitwidth_per_scope[{i}]"
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ConfigError(where, f"expected a [bits, scope] pair, got {pair!r}")
        bits, scope = pair
        if not _is_int(bits) or bits < 2:
            raise ConfigError(where, f"bits must be an int >= 2, got {bits!r}")
        if not isinstance(scope, str):
            raise ConfigError(where, f"scope must be a string, got {type(scope).__name__}")
        matches = _scope_matcher(scope, addressable, where)
        matched = [n for n in names if any(matches(a) for a in _addresses(n))]
        if not matched:
            close = difflib.get_close_matches(
                scope.removeprefix(REGEX_PREFIX), addressable, n=3, cutoff=0.4
            )
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise ScopeError(
                where,
                f"scope {scope!r} matches no quantizer{hint}; quantizers: {_listed(names)}",
            )
        for name in matched:
            result[name] = int(bits)
    return result


def format_bitwidths(choice: Mapping[str, int]) -> str:
    """A small text table of quantizer paths and their widths, for logs.

    Args:
      choice: ``{path: bits}``, e.g. from `choose_bitwidths`.

    Returns:
      Lines ``path  bits``, aligned, in the order of ``choice``, and a last
      line counting quantizers per width (widest first).

    Example:
      >>> print(format_bitwidths({"Conv_0/kernel": 8, "Dense_0/kernel": 4}))
      quantizer       bits
      Conv_0/kernel      8
      Dense_0/kernel     4
      8 bits: 1, 4 bits: 1
    """
    if not choice:
        return "(no weight quantizers)"
    width = max(len("quantizer"), *(len(name) for name in choice))
    lines = [f"{'quantizer':<{width}}  bits"]
    lines += [f"{name:<{width}}  {bits:>4}" for name, bits in choice.items()]
    counts: dict[int, int] = {}
    for bits in choice.values():
        counts[bits] = counts.get(bits, 0) + 1
    lines.append(", ".join(f"{b} bits: {counts[b]}" for b in sorted(counts, reverse=True)))
    return "\n".join(lines)
