"""A TensorBoard metrics log for compressed training, written with ``tensorboardX``.

`MetricsLog` wraps a ``tensorboardX.SummaryWriter``: plain scalars by tag,
and `MetricsLog.statistics`, which logs every number of an `NNCFStatistics`
under a tag made of the names that lead to it, so a new algorithm's
statistics are logged without code here. `statistics_scalars` is that
flattening on its own; `read_scalars` reads an event log back (no
TensorBoard needed).

``tensorboardX`` is optional (``pip install 'nncf-jax[tensorboard]'``):
`MetricsLog.create` returns a disabled log, whose methods do nothing, and
says why in `MetricsLog.note`.

Example:
  >>> with MetricsLog.create("runs/x/tensorboard") as log:  # doctest: +SKIP
  ...     log.scalar("train/loss", 0.31, step=12)
  ...     log.statistics(ctrl.statistics(), step=1)
  >>> read_scalars("runs/x/tensorboard")["train/loss"]  # doctest: +SKIP
  [(12, 0.31)]

Open the log with ``tensorboard --logdir runs/x/tensorboard``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nncf_jax.errors import UsageError

__all__ = ["MetricsLog", "read_scalars", "statistics_scalars"]

_MISSING = (
    "tensorboardX is not installed, so no TensorBoard log is written: "
    "pip install 'nncf-jax[tensorboard]'"
)


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None for anything else (bools and flags included)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if getattr(value, "ndim", 0) != 0 or not math.isfinite(number):
        return None
    return number


def _walk(value: Any, tag: str, out: dict[str, float]) -> None:
    number = None if isinstance(value, str) else _number(value)
    if number is not None:
        out[tag] = number
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            _walk(getattr(value, field.name), f"{tag}/{field.name}", out)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _walk(item, f"{tag}/{key}", out)
    elif isinstance(value, (list, tuple)):
        # Only sequences of named entries (per-layer summaries); shapes are skipped.
        for item in value:
            name = getattr(item, "name", None)
            if isinstance(name, str):
                _walk(item, f"{tag}/{name}", out)


def statistics_scalars(statistics: Any, prefix: str = "compression") -> dict[str, float]:
    """Every number of ``ctrl.statistics()``, by tag.

    The tag is ``prefix/<algorithm>/<field>/...``: dataclass fields and
    mapping keys by name, entries of a sequence by their ``name`` attribute
    (e.g. a layer's param path). Bools, strings, shapes and non-finite values
    are left out.

    Args:
      statistics: an `NNCFStatistics` (iterates ``(algorithm, statistics)``
        pairs), or any such iterable of pairs.
      prefix: the first tag segment.

    Returns:
      ``{tag: value}``, e.g.
      ``{"compression/magnitude_sparsity/model_statistics/sparsity_level": 0.49,
      "compression/magnitude_sparsity/model_statistics/sparsified_layers_summary/Conv_0/kernel/sparsity_level": 0.2,
      ...}``.
    """
    out: dict[str, float] = {}
    for name, stats in statistics:
        _walk(stats, f"{prefix}/{name}", out)
    return out


class MetricsLog:
    """A TensorBoard event log (``tensorboardX.SummaryWriter``), or a disabled one.

    Args:
      logdir: the folder of the event files (created).

    Raises:
      UsageError: tensorboardX is not installed (use `create` to get a
        disabled log instead).
    """

    def __init__(self, logdir: str | os.PathLike):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise UsageError(_MISSING) from None
        self.logdir: Path | None = Path(logdir)
        self.note: str | None = None
        self._writer = SummaryWriter(str(logdir), flush_secs=30)

    @classmethod
    def create(cls, logdir: str | os.PathLike) -> MetricsLog:
        """A log in ``logdir``; a disabled one (with a `note`) without tensorboardX."""
        try:
            return cls(logdir)
        except UsageError as e:
            log = cls.__new__(cls)
            log.logdir, log.note, log._writer = None, str(e), None
            return log

    @property
    def enabled(self) -> bool:
        """Whether anything is written."""
        return self._writer is not None

    def scalar(self, tag: str, value: Any, step: int) -> None:
        """Logs one number (skipped when it is not a finite number)."""
        number = _number(value)
        if self._writer is not None and number is not None:
            self._writer.add_scalar(tag, number, global_step=int(step))

    def scalars(self, values: Mapping[str, Any], step: int, prefix: str = "") -> None:
        """Logs ``{tag: value}``, each tag under ``prefix/`` when a prefix is given."""
        for tag, value in values.items():
            self.scalar(f"{prefix}/{tag}" if prefix else tag, value, step)

    def series(self, tag: str, values: Iterable[Any], first_step: int) -> None:
        """Logs consecutive values at ``first_step``, ``first_step + 1``, ..."""
        for i, value in enumerate(values):
            self.scalar(tag, value, first_step + i)

    def statistics(self, statistics: Any, step: int, prefix: str = "compression") -> None:
        """Logs every number of ``ctrl.statistics()``; see `statistics_scalars`."""
        if self._writer is not None:
            self.scalars(statistics_scalars(statistics, prefix), step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Writes what is pending and closes the event file; later calls do nothing."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _records(path: Path) -> Iterable[bytes]:
    """The records of a TFRecord file: ``u64 length, u32 crc, data, u32 crc``."""
    data = path.read_bytes()
    offset = 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        start = offset + 12
        if start + length + 4 > len(data):
            break  # a record still being written
        yield data[start : start + length]
        offset = start + length + 4


def read_scalars(logdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """The scalars of every event file in ``logdir``, by tag, in write order.

    Args:
      logdir: a folder written by `MetricsLog` (or any TensorBoard writer).

    Returns:
      ``{tag: [(step, value), ...]}``.

    Raises:
      UsageError: tensorboardX (which has the event format) is not installed,
        or ``logdir`` holds no event file.
    """
    try:
        from tensorboardX.proto import event_pb2
    except ImportError:
        raise UsageError(_MISSING.replace("no TensorBoard log is written", "cannot read")) from None
    files = sorted(Path(logdir).glob("events.out.tfevents.*"))
    if not files:
        raise UsageError(f"no TensorBoard event file in {logdir}")
    out: dict[str, list[tuple[int, float]]] = {}
    for path in files:
        for record in _records(path):
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out
