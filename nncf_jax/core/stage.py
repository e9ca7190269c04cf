"""NNCF's compression stage."""

from __future__ import annotations

import enum
from collections.abc import Iterable

__all__ = ["CompressionStage", "combine_stages"]


class CompressionStage(enum.IntEnum):
    """How far compression has gone; an int so it stores as NNCF stores it (0, 1, 2)."""

    UNCOMPRESSED = 0
    PARTIALLY_COMPRESSED = 1
    FULLY_COMPRESSED = 2


def combine_stages(stages: Iterable[CompressionStage]) -> CompressionStage:
    """NNCF's composite rule: equal stages stay, different stages give PARTIALLY_COMPRESSED."""
    unique = set(stages)
    if not unique:
        return CompressionStage.UNCOMPRESSED
    if len(unique) == 1:
        return unique.pop()
    return CompressionStage.PARTIALLY_COMPRESSED
