"""The quantizer setup: which quantizers exist and how each one quantizes.

Policy apart from mechanism: this module reads a validated ``quantization``
config section and the model's op sites (`nncf_jax.quantization.placement`)
and returns one frozen `QuantizerSpec` per quantizer. Nothing here touches
arrays; range initialisation and the fake-quantize functions consume the
specs.

Resolution order for one quantizer (later wins): the ``preset``
("performance": symmetric activations, "mixed": asymmetric activations;
weights are symmetric in both), the ``weights`` / ``activations`` section,
then every matching ``scope_overrides`` entry in the order given, then a
precision initializer (``manual`` / ``hawq``) for the bits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from nncf_jax.core.paths import REGEX_PREFIX, ScopeRules, compile_scope_regex
from nncf_jax.errors import ConfigError, NotAvailableError, ScopeError
from nncf_jax.quantization.placement import OpSite

__all__ = ["QuantizerSpec", "RangeSettings", "resolve_quantizers", "scope_matches"]

WEIGHTS, ACTIVATIONS = "weights", "activations"


@dataclass(frozen=True)
class RangeSettings:
    """One range initializer (``initializer.range``) as it applies to a quantizer.

    Attributes:
      type: ``"mixed_min_max"``, ``"min_max"``, ``"mean_min_max"``,
        ``"threesigma"``, ``"percentile"`` or ``"mean_percentile"``.
      num_init_samples: calibration samples (rows of the batch axis) to use.
      min_percentile, max_percentile: percentiles in percent (percentile types).
    """

    type: str = "mixed_min_max"
    num_init_samples: int = 256
    min_percentile: float = 0.1
    max_percentile: float = 99.9


@dataclass(frozen=True)
class QuantizerSpec:
    """Static settings of one quantizer.

    Attributes:
      name: the param path of a weight quantizer (``"Conv_0/kernel"``) or the
        name of an activation quantizer (``"Conv_0/input"``).
      group: ``"weights"`` or ``"activations"``.
      mode: ``"symmetric"`` or ``"asymmetric"``.
      bits: bit width, 2..8.
      signed: symmetric quantizers: whether the grid has negative levels;
        None until range initialisation decides it from data (activations).
      per_channel: one range per channel along `axis` instead of one per tensor.
      axis: the channel axis (the kernel's output axis, -1, for weights; the
        feature axis, -1, for activations); used when `per_channel`.
      narrow_range: symmetric only: drop the lowest signed level (or the top
        unsigned one); on for weights as in NNCF.
      half_range: NNCF's ``overflow_fix``: an 8-bit weight quantizer trains on
        7-bit levels (``[-64, 63]``) and is doubled on export.
      range: the range initializer that sets its initial range.
      stack_axes: leading axes of a weight stacked by ``nn.scan`` (one layer
        per index): the quantizer is applied per layer, its ranges have these
        axes in front.
    """

    name: str
    group: str
    mode: str = "symmetric"
    bits: int = 8
    signed: bool | None = None
    per_channel: bool = False
    axis: int = -1
    narrow_range: bool = False
    half_range: bool = False
    range: RangeSettings = RangeSettings()
    stack_axes: int = 0

    @property
    def effective_bits(self) -> int:
        """Bits of the grid used in training (7 for a half-range 8-bit quantizer)."""
        return self.bits - 1 if self.half_range else self.bits

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the quantizer's part of ``builder_state``)."""
        return {
            "group": self.group,
            "mode": self.mode,
            "bits": self.bits,
            "signed": self.signed,
            "per_channel": self.per_channel,
            "axis": self.axis,
            "narrow_range": self.narrow_range,
            "half_range": self.half_range,
            "stack_axes": self.stack_axes,
        }


def scope_matches(scope: str, name: str) -> bool:
    """NNCF scope matching on a quantizer name: exact, or ``{re}`` searched.

    A quantizer ``A/B/input`` is also addressed by its module ``A/B``, as a
    parameter ``A/B/kernel`` is (`nncf_jax.core.paths`).
    """
    candidates = [name, *([name.rsplit("/", 1)[0]] if "/" in name else [])]
    if scope.startswith(REGEX_PREFIX):
        regex = compile_scope_regex(scope)
        return any(regex.search(c) for c in candidates)
    return scope in candidates


def _group_settings(section: Mapping[str, Any], group: str) -> dict[str, Any]:
    preset = section.get("preset", "performance")
    group_section = section.get(group, {})
    mode = group_section.get("mode")
    if mode is None:
        mode = "asymmetric" if (preset == "mixed" and group == ACTIVATIONS) else "symmetric"
    return {
        "mode": mode,
        "bits": group_section.get("bits", 8),
        "signed": group_section.get("signed", True if group == WEIGHTS else None),
        "per_channel": group_section.get("per_channel", group == WEIGHTS),
    }


def _range_settings(entry: Mapping[str, Any]) -> RangeSettings:
    params = entry.get("params", {})
    return RangeSettings(
        type=entry.get("type", "mixed_min_max"),
        num_init_samples=int(entry.get("num_init_samples", 256)),
        min_percentile=float(params.get("min_percentile", 0.1)),
        max_percentile=float(params.get("max_percentile", 99.9)),
    )


def _range_for(
    name: str, group: str, range_config: Any, path: str
) -> tuple[RangeSettings, int | None]:
    """The range settings of a quantizer and the index of the list entry chosen."""
    if range_config is None:
        return RangeSettings(), None
    if isinstance(range_config, Mapping):
        return _range_settings(range_config), None
    for i, entry in enumerate(range_config):
        if entry.get("target_quantizer_group", group) != group:
            continue
        targets = entry.get("target_scopes")
        ignored = entry.get("ignored_scopes") or []
        targets = [targets] if isinstance(targets, str) else targets
        ignored = [ignored] if isinstance(ignored, str) else ignored
        if targets is not None and not any(scope_matches(s, name) for s in targets):
            continue
        if any(scope_matches(s, name) for s in ignored):
            continue
        return _range_settings(entry), i
    raise ConfigError(
        f"{path}.initializer.range",
        f"no range initializer of the list applies to the {group} quantizer {name!r}; "
        "add an entry whose target_scopes (and target_quantizer_group) cover it",
    )


def _apply_overrides(
    specs: list[QuantizerSpec], section: Mapping[str, Any], path: str
) -> list[QuantizerSpec]:
    overrides = section.get("scope_overrides", {})
    out = list(specs)
    for group in (WEIGHTS, ACTIVATIONS):
        for scope, override in overrides.get(group, {}).items():
            where = f"{path}.scope_overrides.{group}[{scope!r}]"
            try:
                hits = [
                    i
                    for i, s in enumerate(out)
                    if s.group == group and scope_matches(scope, s.name)
                ]
            except ScopeError:
                raise
            except Exception as e:  # a regex that does not compile
                raise ScopeError(where, f"scope {scope!r}: {e}") from None
            if not hits:
                names = [s.name for s in out if s.group == group]
                raise ScopeError(
                    where,
                    f"scope {scope!r} matches no {group} quantizer; {group} quantizers: "
                    + (", ".join(names[:20]) + (" ..." if len(names) > 20 else "") or "none"),
                )
            for i in hits:
                changes = {
                    k: override[k]
                    for k in ("mode", "bits", "signed", "per_channel")
                    if k in override
                }
                if "range" in override.get("initializer", {}):
                    rng = override["initializer"]["range"]
                    if not isinstance(rng, Mapping):
                        raise ConfigError(
                            f"{where}.initializer.range",
                            "a scope override takes one range initializer (an object), not a list",
                        )
                    changes["range"] = _range_settings(rng)
                out[i] = replace(out[i], **changes)
    return out


def _refuse_unbuilt(section: Mapping[str, Any], path: str) -> None:
    for group in (WEIGHTS, ACTIVATIONS):
        if section.get(group, {}).get("logarithm_scale"):
            raise NotAvailableError(
                f"{path}.{group}.logarithm_scale: log-parametrised scales are not built in "
                "nncf-jax (ranges are stored as plain scales); remove the key or set it false"
            )
    if section.get(ACTIVATIONS, {}).get("unified_scale_ops"):
        raise NotAvailableError(
            f"{path}.activations.unified_scale_ops: shared activation scales are not built "
            "in nncf-jax yet"
        )
    if "params" in section:
        raise NotAvailableError(
            f"{path}.params: staged quantization (quantizers enabled from an epoch, LR/WD "
            "schedules) is not built in nncf-jax yet; remove the 'params' block"
        )
    precision = section.get("initializer", {}).get("precision", {})
    if precision.get("type") == "autoq":
        raise NotAvailableError(
            f"{path}.initializer.precision.type: 'autoq' (reinforcement-learning search) is "
            "not built in nncf-jax; use 'manual' or 'hawq'"
        )


def resolve_quantizers(
    section: Mapping[str, Any],
    path: str,
    config: Mapping[str, Any],
    sites: Sequence[OpSite],
    weight_names: Sequence[str],
    all_names: Sequence[str],
) -> list[QuantizerSpec]:
    """Quantizer specs from a resolved ``quantization`` section.

    Args:
      section: the section with schema defaults filled in.
      path: its JSON path (``"compression[1]"``), for messages.
      config: the whole config (global scopes, ``target_device``).
      sites: the model's quantizable ops (empty for a plain apply function).
      weight_names: the weights that may get a weight quantizer (the kernels
        of ``sites``; for a plain function, every float param of rank >= 2).
      all_names: every param path and activation quantizer name of the
        model, to validate scopes against.

    Returns:
      Weight quantizers (in ``weight_names`` order), then activation
      quantizers (in call order); ``signed`` of activations is still None
      where data has to decide.

    Raises:
      ConfigError, ScopeError: a scope or override that matches nothing, a
        range initializer list that leaves a quantizer uncovered.
      NotAvailableError: an NNCF option nncf-jax does not build.
    """
    _refuse_unbuilt(section, path)
    rules = ScopeRules.from_config(config, section, path)
    activation_names = [
        name
        for site in sites
        for name in site.inputs
        if section.get("quantize_inputs", True) or not site.takes_model_input
    ]
    if section.get("quantize_outputs", False):
        activation_names += [site.output for site in sites]
    chosen = set(rules.select(all_names, eligible=[*weight_names, *activation_names]))
    specs: list[QuantizerSpec] = []
    range_config = section.get("initializer", {}).get("range")
    for group, names in ((WEIGHTS, weight_names), (ACTIVATIONS, activation_names)):
        group_rules = ScopeRules.from_config({}, section.get(group, {}), f"{path}.{group}")
        names = [n for n in names if n in chosen]
        kept = set(group_rules.select(all_names, eligible=names))
        settings = _group_settings(section, group)
        for name in names:
            if name not in kept:
                continue
            rng, _ = _range_for(name, group, range_config, path)
            specs.append(
                QuantizerSpec(
                    name=name,
                    group=group,
                    mode=settings["mode"],
                    bits=settings["bits"],
                    signed=settings["signed"],
                    per_channel=settings["per_channel"],
                    narrow_range=group == WEIGHTS,
                    range=rng,
                )
            )
    specs = _apply_overrides(specs, section, path)
    overflow_fix = section.get("overflow_fix", "disable")
    first_weight = next((s.name for s in specs if s.group == WEIGHTS), None)
    out = []
    for s in specs:
        if s.mode == "asymmetric":
            s = replace(s, narrow_range=False)
        half = (
            s.group == WEIGHTS
            and s.bits == 8
            and (
                overflow_fix == "enable"
                or (overflow_fix == "first_layer_only" and s.name == first_weight)
            )
        )
        out.append(replace(s, half_range=half))
    return out
