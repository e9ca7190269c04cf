"""PNG plots of a config's schedule and of a model's compression, with matplotlib.

- `schedule_curves` / `schedule_figure`: the compression level each
  algorithm's schedule puts in force, epoch by epoch and, for per-step
  schedules (``update_per_optimizer_step``), step by step. The levels come
  from the algorithm's own schedule (`SparsitySchedule.advance` stepped
  through the training iterations as ``ctrl.transform`` steps it), so the
  plot shows what training does, freeze epoch included;
- `sparsity_figure`: the sparsity of each compressed layer, from
  ``ctrl.statistics()``;
- `bitwidth_figure`: the bit width of each quantizer, from any statistics
  that carry a ``layer_bitwidths`` mapping ``{layer: bits}`` (quantization
  statistics will; nothing does yet);
- `history_figure`: test accuracy, training loss and compression level per
  epoch, from the ``history`` of a run's ``metrics.json``;
- `write_plots`: all that apply, as ``<out>/<name>.png``.

matplotlib is optional (``pip install 'nncf-jax[plot]'``); every function
here raises `UsageError` without it. Figures are drawn with the Agg backend
(no display needed) and returned, so their series can be inspected.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nncf_jax.config import NNCFConfig
from nncf_jax.core.state import clock_at_iteration
from nncf_jax.errors import UsageError
from nncf_jax.sparsity.schedule import SparsitySchedule

__all__ = [
    "ScheduleCurve",
    "bitwidth_figure",
    "history_figure",
    "require_matplotlib",
    "save_figure",
    "schedule_curves",
    "schedule_figure",
    "sparsity_figure",
    "write_plots",
]

# Algorithms whose level follows a SparsitySchedule (a pruning schedule reader
# goes here when filter pruning exists).
_SPARSITY_SCHEDULED = ("magnitude_sparsity", "rb_sparsity")


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` on the Agg backend.

    Raises:
      UsageError: matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError:
        raise UsageError(
            "plots need matplotlib, which is not installed: pip install 'nncf-jax[plot]'"
        ) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class ScheduleCurve:
    """The levels one algorithm's schedule puts in force.

    Attributes:
      name: the algorithm, e.g. ``"magnitude_sparsity"``.
      path: its config path, e.g. ``"compression[0]"``.
      per_step: whether the level changes at every optimizer step.
      steps_per_epoch: optimizer steps per epoch.
      step_levels: float32 ``(epochs * steps_per_epoch,)``: the level each
        training iteration runs with (iteration 0 first).
      target: the schedule's final level.
      freeze_epoch: the epoch from which the level stops changing.
    """

    name: str
    path: str
    per_step: bool
    steps_per_epoch: int
    step_levels: np.ndarray
    target: float
    freeze_epoch: int

    @property
    def epoch_levels(self) -> np.ndarray:
        """The level at the first iteration of each epoch, ``(epochs,)``."""
        return self.step_levels[:: self.steps_per_epoch]


def _levels_in_force(schedule: SparsitySchedule, steps_per_epoch: int, steps: int) -> np.ndarray:
    """Steps ``schedule.advance`` through iterations 1..steps-1 as `CompressionController.tick` does."""

    def tick(carry, iteration):
        level, frozen = carry
        clock = clock_at_iteration(iteration, steps_per_epoch)
        new_epoch = clock.epoch != clock_at_iteration(iteration - 1, steps_per_epoch).epoch
        level, frozen, _ = schedule.advance(
            level, frozen, clock, new_epoch=new_epoch, new_step=jnp.bool_(True)
        )
        return (level, frozen), level

    # Iteration 0 runs on the initial state: the level is sparsity_init.
    initial = (jnp.float32(schedule.init), jnp.bool_(False))
    _, levels = jax.lax.scan(tick, initial, jnp.arange(1, steps, dtype=jnp.int32))
    return np.concatenate([[schedule.init], np.asarray(levels)]).astype(np.float32)


def schedule_curves(
    config: NNCFConfig | Mapping[str, Any], *, epochs: int, steps_per_epoch: int
) -> list[ScheduleCurve]:
    """The schedule of every scheduled algorithm of ``config``, over ``epochs`` epochs.

    Args:
      config: an `NNCFConfig` or config dict (validated here).
      epochs: the number of epochs to cover (> 0).
      steps_per_epoch: optimizer steps per epoch (> 0); a section's own
        ``params.steps_per_epoch`` wins, as in training.

    Returns:
      One `ScheduleCurve` per algorithm with a schedule known in advance, in
      config order (``[]`` for e.g. ``const_sparsity``, an ``adaptive`` RB
      schedule or a dense config).

    Raises:
      ConfigError: the config is invalid.
      UsageError: ``epochs`` or ``steps_per_epoch`` is not a positive integer.
    """
    for name, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UsageError(f"{name}: expected a positive integer, got {value!r}")
    if not isinstance(config, NNCFConfig):
        config = NNCFConfig.from_dict(config)
    curves = []
    for section in config.algorithm_sections():
        if section.name not in _SPARSITY_SCHEDULED:
            continue
        resolved = section.resolved
        if resolved.get("params", {}).get("schedule") == "adaptive":
            # Its levels follow the observed sparsity: not known in advance.
            continue
        resolved["params"].setdefault("steps_per_epoch", steps_per_epoch)
        schedule = SparsitySchedule.from_section(resolved, section.path, given=section.section)
        spe = schedule.steps_per_epoch or steps_per_epoch
        curves.append(
            ScheduleCurve(
                name=section.name,
                path=section.path,
                per_step=schedule.per_step,
                steps_per_epoch=spe,
                step_levels=_levels_in_force(schedule, spe, epochs * spe),
                target=schedule.target,
                freeze_epoch=schedule.freeze_epoch,
            )
        )
    return curves


def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _label(curve: ScheduleCurve, several: bool) -> str:
    return f"{curve.name} ({curve.path})" if several else curve.name


def schedule_figure(curves: Sequence[ScheduleCurve], title: str = "Compression schedule") -> Any:
    """The levels over epochs, plus a panel over optimizer steps if a schedule is per-step.

    One line per curve in each panel; the epochs from a freeze epoch on are
    shaded.

    Raises:
      UsageError: no curve, or no matplotlib.
    """
    plt = require_matplotlib()
    if not curves:
        raise UsageError("no algorithm of this config has a schedule to plot")
    per_step = any(c.per_step for c in curves)
    fig, axes = plt.subplots(1, 2 if per_step else 1, figsize=(11 if per_step else 6.5, 4))
    axes = list(np.atleast_1d(axes))
    several = len(curves) > 1
    ax = axes[0]
    for c in curves:
        levels = c.epoch_levels
        ax.plot(
            np.arange(len(levels)),
            levels,
            drawstyle="steps-post",
            marker="o",
            markersize=3,
            label=_label(c, several),
        )
        if c.freeze_epoch < len(levels):
            ax.axvspan(
                c.freeze_epoch,
                len(levels) - 1,
                color="0.9",
                zorder=0,
                label=f"frozen from epoch {c.freeze_epoch}" + (f" ({c.path})" if several else ""),
            )
    ax.set(xlabel="epoch", ylabel="level in force at the epoch's start", title=title)
    _integer_ticks(ax)
    if per_step:
        for c in curves:
            ax_steps = axes[1]
            ax_steps.plot(np.arange(len(c.step_levels)), c.step_levels, label=_label(c, several))
        axes[1].set(xlabel="optimizer step", ylabel="level in force", title="per optimizer step")
    for a in axes:
        a.set_ylim(bottom=0.0)
        a.grid(alpha=0.3)
        a.legend(loc="lower right")
    fig.tight_layout()
    return fig


def _bars(plt, title: str, groups: Sequence[tuple[str, Mapping[str, float]]], xlabel: str, xlim):
    fig, axes = plt.subplots(
        len(groups),
        1,
        figsize=(7, 0.9 + sum(0.35 * len(v) + 0.6 for _, v in groups)),
        squeeze=False,
    )
    for ax, (name, values) in zip(axes[:, 0], groups, strict=True):
        labels = list(values)
        bars = ax.barh(labels, [values[k] for k in labels], color="tab:blue")
        ax.bar_label(bars, fmt="%.3g", padding=2, fontsize=8)
        ax.invert_yaxis()  # first layer on top
        ax.set(title=f"{title}: {name}", xlabel=xlabel, xlim=xlim)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def sparsity_figure(statistics: Any) -> Any | None:
    """Horizontal bars of each sparsified layer's sparsity, one panel per algorithm.

    Args:
      statistics: ``ctrl.statistics()``; algorithms whose statistics have a
        ``model_statistics.sparsified_layers_summary`` are drawn.

    Returns:
      The Figure (one bar per layer), or None when no algorithm has a
      sparsity summary.
    """
    plt = require_matplotlib()
    groups = []
    for name, stats in statistics:
        layers = getattr(getattr(stats, "model_statistics", None), "sparsified_layers_summary", ())
        if layers:
            groups.append((name, {layer.name: layer.sparsity_level for layer in layers}))
    if not groups:
        return None
    return _bars(plt, "Sparsity per layer", groups, "fraction of zeros", (0.0, 1.05))


def bitwidth_figure(statistics: Any) -> Any | None:
    """Horizontal bars of each quantizer's bit width, one panel per algorithm.

    Args:
      statistics: ``ctrl.statistics()``; algorithms whose statistics have a
        ``layer_bitwidths`` mapping ``{quantizer or layer: bits}`` are drawn.

    Returns:
      The Figure (one bar per quantizer), or None when nothing has bit widths.
    """
    plt = require_matplotlib()
    groups = []
    for name, stats in statistics:
        widths = getattr(stats, "layer_bitwidths", None)
        if widths:
            groups.append((name, {str(k): float(v) for k, v in widths.items()}))
    if not groups:
        return None
    top = max(max(v.values()) for _, v in groups)
    return _bars(plt, "Bit width per quantizer", groups, "bits", (0.0, top * 1.15))


def _series(history: Sequence[Mapping[str, Any]], value) -> tuple[list[Any], list[float]]:
    """``(epochs, values)`` of the records for which ``value(record)`` is not None."""
    points = [(r["epoch"], value(r)) for r in history]
    points = [(e, v) for e, v in points if v is not None]
    return [e for e, _ in points], [v for _, v in points]


def _level(name: str):
    def value(record: Mapping[str, Any]) -> float | None:
        return record.get("sparsity", {}).get(name, {}).get("sparsity_level_for_layers")

    return value


def history_figure(history: Sequence[Mapping[str, Any]], title: str = "Training") -> Any | None:
    """Test accuracy and training loss per epoch, and the compression level per epoch.

    Args:
      history: the ``history`` list of a run's ``metrics.json`` (records
        with ``epoch`` and optionally ``test_accuracy``, ``train_loss`` and
        ``sparsity``).

    Returns:
      The Figure, or None for an empty history. Left: test accuracy (and
      the training loss on a second axis); right, when a record has
      sparsity: the sparsity of the compressed layers, one line per algorithm.
    """
    plt = require_matplotlib()
    if not history:
        return None
    names = sorted({n for r in history for n in r.get("sparsity", {})})
    fig, axes = plt.subplots(1, 2 if names else 1, figsize=(11 if names else 6.5, 4))
    axes = list(np.atleast_1d(axes))
    ax = axes[0]
    epochs, accuracy = _series(history, lambda r: r.get("test_accuracy"))
    ax.plot(epochs, accuracy, marker="o", markersize=3, color="tab:green", label="test accuracy")
    ax.set(xlabel="epoch", ylabel="test accuracy", title=title)
    _integer_ticks(ax)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    epochs, loss = _series(history, lambda r: r.get("train_loss"))
    if loss:
        twin = ax.twinx()
        twin.plot(epochs, loss, color="tab:red", alpha=0.7, label="training loss")
        twin.set_ylabel("training loss")
        twin.legend(loc="center right")
    for name in names:
        axes[1].plot(*_series(history, _level(name)), marker="o", markersize=3, label=name)
    if names:
        axes[1].set(xlabel="epoch", ylabel="sparsity of the compressed layers", title="Compression")
        axes[1].set_ylim(bottom=0.0)
        axes[1].grid(alpha=0.3)
        axes[1].legend(loc="lower right")
        _integer_ticks(axes[1])
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Writes ``fig`` as a PNG (folders created) and closes it; returns the path."""
    plt = require_matplotlib()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def write_plots(
    out_dir: str | os.PathLike,
    *,
    config: NNCFConfig | Mapping[str, Any] | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    statistics: Any = None,
    history: Sequence[Mapping[str, Any]] | None = None,
) -> list[Path]:
    """Writes every plot the inputs allow; returns the PNG paths.

    ``schedule.png`` (needs ``config``, ``epochs`` and ``steps_per_epoch``,
    and a scheduled algorithm), ``sparsity.png`` and ``bitwidths.png`` (need
    ``statistics`` of such algorithms), ``history.png`` (needs ``history``).

    Raises:
      UsageError: no matplotlib.
      ConfigError: ``config`` is invalid.
    """
    require_matplotlib()
    out = Path(out_dir)
    figures: dict[str, Any] = {}
    if config is not None and epochs is not None and steps_per_epoch is not None:
        curves = schedule_curves(config, epochs=epochs, steps_per_epoch=steps_per_epoch)
        if curves:
            figures["schedule"] = schedule_figure(curves)
    if statistics is not None:
        figures["sparsity"] = sparsity_figure(statistics)
        figures["bitwidths"] = bitwidth_figure(statistics)
    if history:
        figures["history"] = history_figure(history)
    return [save_figure(f, out / f"{name}.png") for name, f in figures.items() if f is not None]
