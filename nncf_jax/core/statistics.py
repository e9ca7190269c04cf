"""Statistics objects and their rich-rendered tables.

NNCF code reads statistics as ``ctrl.statistics().magnitude_sparsity
.model_statistics.sparsity_level``; `NNCFStatistics` keeps that shape: one
attribute per algorithm, each a dataclass with its own ``to_str()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["NNCFStatistics", "make_table", "render_tables"]


def make_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A rich table with string cells; floats print with 4 decimals."""
    table = Table(title=title, title_justify="left")
    for column in header:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    return table


def render_tables(tables: Sequence[Table], width: int = 110) -> str:
    """Renders rich tables to plain text (no colour codes)."""
    console = Console(width=width, record=True, color_system=None, file=_NullFile())
    for table in tables:
        console.print(table)
    return console.export_text()


class _NullFile:
    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        pass


class NNCFStatistics:
    """Statistics of every algorithm of a controller, by algorithm name.

    Attribute access by name: ``stats.magnitude_sparsity``. Iteration yields
    ``(name, statistics)`` pairs. ``losses`` holds each algorithm's
    compression loss on the facade handles (None for one that needs the
    batch's forward, e.g. distillation); a composite's table shows the parts
    and their sum.
    """

    def __init__(self, by_algorithm: dict[str, Any], losses: dict[str, float | None] | None = None):
        self._by_algorithm = dict(by_algorithm)
        self.losses = dict(losses or {})

    def __getattr__(self, name: str) -> Any:
        by_algorithm = self.__dict__.get("_by_algorithm", {})
        if name in by_algorithm:
            return by_algorithm[name]
        raise AttributeError(
            f"no statistics for {name!r}; this controller has {sorted(by_algorithm)}"
        )

    def __iter__(self):
        return iter(self._by_algorithm.items())

    @property
    def compression_loss(self) -> float | None:
        """The sum of `losses` (None if a part needs a forward to be computed)."""
        if not self.losses or any(v is None for v in self.losses.values()):
            return None
        return float(sum(self.losses.values()))

    def tables(self) -> list[Table]:
        tables = [t for _, s in self for t in s.tables()]
        if len(self.losses) > 1 or any(v for v in self.losses.values()):
            rows = [
                (name, "needs the batch (ctrl.losses in the step)" if v is None else float(v))
                for name, v in self.losses.items()
            ]
            total = self.compression_loss
            rows.append(("total (ctrl.loss)", "-" if total is None else total))
            tables.append(make_table("Compression loss", ["algorithm", "loss"], rows))
        return tables

    def to_str(self) -> str:
        """All algorithms' tables as plain text."""
        return render_tables(self.tables())
