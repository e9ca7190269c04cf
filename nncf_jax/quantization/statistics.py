"""NNCF's ``QuantizationStatistics``: quantizer counts by kind, and the bit widths."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from nncf_jax.core.statistics import make_table, render_tables
from nncf_jax.quantization.setup import WEIGHTS, QuantizerSpec

__all__ = ["QuantizationStatistics", "QuantizersCounter"]


@dataclass(frozen=True)
class QuantizersCounter:
    """Counts of one group of quantizers (NNCF's ``QuantizersCounter``).

    Attributes:
      num_symmetric, num_asymmetric: by mode.
      num_signed, num_unsigned: by signedness (asymmetric ones count as unsigned).
      num_per_tensor, num_per_channel: by granularity.
      num_enabled: quantizers in force now.
      total_count: all quantizers of the group.
      bits: ``{bits: count}``.
    """

    num_symmetric: int
    num_asymmetric: int
    num_signed: int
    num_unsigned: int
    num_per_tensor: int
    num_per_channel: int
    num_enabled: int
    total_count: int
    bits: dict[int, int]

    @classmethod
    def of(cls, specs: Sequence[QuantizerSpec]) -> QuantizersCounter:
        """Counts ``specs`` (all enabled: nncf-jax has no staged quantization)."""
        return cls(
            num_symmetric=sum(s.mode == "symmetric" for s in specs),
            num_asymmetric=sum(s.mode == "asymmetric" for s in specs),
            num_signed=sum(s.mode == "symmetric" and bool(s.signed) for s in specs),
            num_unsigned=sum(not (s.mode == "symmetric" and bool(s.signed)) for s in specs),
            num_per_tensor=sum(not s.per_channel for s in specs),
            num_per_channel=sum(s.per_channel for s in specs),
            num_enabled=len(specs),
            total_count=len(specs),
            bits=dict(sorted(Counter(s.bits for s in specs).items())),
        )


@dataclass(frozen=True)
class QuantizationStatistics:
    """What ``ctrl.statistics().quantization`` holds.

    Attributes:
      wq_counter: weight quantizers.
      aq_counter: activation quantizers.
      num_wq_per_bitwidth, num_aq_per_bitwidth: ``{bits: count}`` (NNCF names).
      ratio_of_enabled_quantizations: enabled / all quantizers, in [0, 1].
      bitwidths: ``{quantizer name: bits}`` of every quantizer.
    """

    wq_counter: QuantizersCounter
    aq_counter: QuantizersCounter
    num_wq_per_bitwidth: dict[int, int]
    num_aq_per_bitwidth: dict[int, int]
    ratio_of_enabled_quantizations: float
    bitwidths: dict[str, int]

    @classmethod
    def of(cls, specs: Sequence[QuantizerSpec]) -> QuantizationStatistics:
        weights = [s for s in specs if s.group == WEIGHTS]
        activations = [s for s in specs if s.group != WEIGHTS]
        wq, aq = QuantizersCounter.of(weights), QuantizersCounter.of(activations)
        total = wq.total_count + aq.total_count
        return cls(
            wq_counter=wq,
            aq_counter=aq,
            num_wq_per_bitwidth=wq.bits,
            num_aq_per_bitwidth=aq.bits,
            ratio_of_enabled_quantizations=(
                (wq.num_enabled + aq.num_enabled) / total if total else 0.0
            ),
            bitwidths={s.name: s.bits for s in specs},
        )

    def tables(self):
        header = ["", "Weights", "Activations"]
        rows = []
        for label, attr in (
            ("Symmetric", "num_symmetric"),
            ("Asymmetric", "num_asymmetric"),
            ("Signed", "num_signed"),
            ("Unsigned", "num_unsigned"),
            ("Per-tensor", "num_per_tensor"),
            ("Per-channel", "num_per_channel"),
            ("Enabled", "num_enabled"),
            ("Total", "total_count"),
        ):
            rows.append((label, getattr(self.wq_counter, attr), getattr(self.aq_counter, attr)))
        bit_rows = [
            (
                f"{bits}-bit",
                self.num_wq_per_bitwidth.get(bits, 0),
                self.num_aq_per_bitwidth.get(bits, 0),
            )
            for bits in sorted(set(self.num_wq_per_bitwidth) | set(self.num_aq_per_bitwidth))
        ]
        return [
            make_table("Quantization: quantizers", header, rows + bit_rows),
            make_table(
                "Quantization",
                ["Statistic's name", "Value"],
                [("Ratio of enabled quantizations", self.ratio_of_enabled_quantizations)],
            ),
        ]

    def to_str(self) -> str:
        return render_tables(self.tables())
