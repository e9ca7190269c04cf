"""The two training loops of the digits job: epoch by epoch, and accuracy-aware.

`train_epochs` trains the config's ``epochs`` with a checkpoint, a printed
line and the statistics tables after each. `train_accuracy_aware` hands the
`DigitsTrainer` callbacks to `nncf_jax.accuracy_aware` when the config has an
``accuracy_aware_training`` section. Both return the final state and one
history record per validation, and write per-epoch scalars to the metrics log.

**The uncompressed accuracy** the accuracy-aware loop measures against: with
``init_from`` (a trained model), the plain model's test accuracy on those
weights (``validate_uncompressed_fn``); otherwise the job first trains the
model *uncompressed* for ``pretrain_epochs`` epochs (default: the config's
``epochs``), takes that model's test accuracy as the reference, and builds
the compression on the trained weights, as NNCF expects a trained model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nncf_jax as nj
from nncf_jax.accuracy_aware import create_accuracy_aware_training_loop
from nncf_jax.accuracy_aware.history import STAGE_NAMES
from nncf_jax.examples.digits_data import DigitsData, calibration_batches
from nncf_jax.examples.digits_model import ModelSpec
from nncf_jax.examples.digits_trainer import DigitsTrainer
from nncf_jax.examples.train_settings import TrainSettings

__all__ = [
    "HISTORY_FILE",
    "Job",
    "Outcome",
    "Resume",
    "read_history",
    "sparsity_summary",
    "train_accuracy_aware",
    "train_epochs",
    "write_history",
]

HISTORY_FILE = "history.json"
_HISTORY_FORMAT = "nncf_jax.examples.digits.history/1"


def write_history(
    out: Path, history: list[dict[str, Any]], *, seed: int, init_from: str | None
) -> None:
    """Writes ``OUT/history.json`` atomically (a temporary file renamed over it).

    ``{"format", "seed", "init_from", "history"}``: the per-epoch records so
    far and what a resumed run must match to continue the same batch order.
    """
    record = {"format": _HISTORY_FORMAT, "seed": seed, "init_from": init_from, "history": history}
    path = out / HISTORY_FILE
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(record, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_history(out: Path) -> dict[str, Any] | None:
    """``OUT/history.json`` as `write_history` wrote it, or None when missing or unreadable."""
    try:
        record = json.loads((out / HISTORY_FILE).read_text())
    except (OSError, ValueError):
        return None
    ok = (
        isinstance(record, dict)
        and record.get("format") == _HISTORY_FORMAT
        and isinstance(record.get("history"), list)
        and all(isinstance(r, dict) and isinstance(r.get("epoch"), int) for r in record["history"])
    )
    return record if ok else None


def sparsity_summary(statistics: Any) -> dict[str, dict[str, float]]:
    """``{algorithm: {sparsity_level, sparsity_level_for_layers, ...}}`` of ``ctrl.statistics()``."""
    out = {}
    for name, stats in statistics:
        model_stats = getattr(stats, "model_statistics", None)
        if model_stats is None:
            continue
        entry = {
            "sparsity_level": model_stats.sparsity_level,
            "sparsity_level_for_layers": model_stats.sparsity_level_for_layers,
        }
        for key in ("scheduled_sparsity_level", "target_sparsity_level"):
            if hasattr(stats, key):
                entry[key] = getattr(stats, key)
        out[name] = entry
    return out


@dataclass
class Job:
    """What both loops share: the settings, data and outputs of one run."""

    config: nj.NNCFConfig
    settings: TrainSettings
    model: ModelSpec
    data: DigitsData
    seed: int
    out: Path
    console: Any
    progress: Any
    log: Any
    quiet: bool
    plots: bool = True
    epochs_task: Any = None
    init_from: str | None = None

    def trainer(self, ctrl: Any, log_prefix: str = "train") -> DigitsTrainer:
        return DigitsTrainer(
            self.model.model,
            ctrl,
            self.settings,
            self.data,
            seed=self.seed,
            progress=self.progress,
            log=self.log,
            log_prefix=log_prefix,
        )

    def start_epochs_bar(self, total: int, completed: int = 0) -> None:
        self.epochs_task = self.progress.add_task("all epochs", total=total, completed=completed)

    def epoch_done(self) -> None:
        if self.epochs_task is not None:
            self.progress.advance(self.epochs_task)


@dataclass(frozen=True)
class Resume:
    """Where `train_epochs` continues an interrupted run.

    Attributes:
      epoch: the epoch of the checkpoint to restore (``OUT/checkpoints/<epoch>``).
      history: the records of epochs ``1..epoch`` (from ``OUT/history.json``;
        fewer when that file was missing).
    """

    epoch: int
    history: list[dict[str, Any]]


@dataclass
class Outcome:
    """What a loop returns.

    Attributes:
      state: the state to strip and export (the last, or the accuracy-aware best).
      ctrl: its controller.
      trainers: every trainer used (timings).
      history: one record per validation.
      epochs: compressed epochs trained.
      accuracy_aware: the loop's result, summarised (accuracy-aware only).
    """

    state: dict[str, Any]
    ctrl: Any
    trainers: list[DigitsTrainer]
    history: list[dict[str, Any]] = field(default_factory=list)
    epochs: int = 0
    accuracy_aware: dict[str, Any] | None = None


def _log_epoch(job: Job, record: dict[str, Any], statistics: Any, rate: Any) -> None:
    if job.log is None:
        return
    epoch = record["epoch"]
    job.log.scalar("test/accuracy", record["test_accuracy"], epoch)
    for key, tag in (
        ("test_loss", "test/loss"),
        ("train_loss", "epoch/train_loss"),
        ("compression_loss", "epoch/compression_loss"),
        ("accuracy_budget", "accuracy_aware/accuracy_budget"),
    ):
        if key in record:
            job.log.scalar(tag, record[key], epoch)
    if rate is not None:
        job.log.scalar("compression/rate", rate, epoch)
    if statistics is not None:
        job.log.statistics(statistics, epoch)


def _statistics(ctrl: Any, record: dict[str, Any]) -> tuple[Any, Any]:
    """Adds the sparsity summary to ``record``; returns ``(statistics, compression rate)``."""
    if not ctrl.algorithms:
        return None, None
    statistics = ctrl.statistics()
    rate = ctrl.compression_rate
    record["sparsity"] = sparsity_summary(statistics)
    if rate is not None:
        record["compression_rate"] = rate
    return statistics, rate


def train_epochs(
    job: Job, ctrl: Any, variables: Any, cstate: Any, *, resume: Resume | None = None
) -> Outcome:
    """The config's ``epochs``, each followed by evaluation, statistics and a checkpoint.

    After each epoch ``OUT/history.json`` is rewritten (`write_history`)
    before the checkpoint is saved, so it always covers the latest complete
    checkpoint. With ``resume``, the checkpoint of ``resume.epoch`` is
    restored into the freshly built state (``variables`` and ``cstate`` are
    then only templates), the batch order is replayed past the completed
    epochs (`DigitsTrainer.skip_epochs`) and training continues with the
    next epoch: the result is bit for bit that of an uninterrupted run.
    """
    trainer = job.trainer(ctrl)
    state = trainer.init_state(variables, cstate)
    job.console.print(f"train step compiled in {trainer.compile_seconds:.2f} s")
    epochs = job.settings.epochs
    outcome = Outcome(state, ctrl, [trainer], epochs=epochs)
    checkpoints = nj.checkpoint.CheckpointManager(job.out / "checkpoints", max_to_keep=3)
    with checkpoints:
        done = 0
        if resume is not None:
            restored = checkpoints.restore(
                resume.epoch,
                variables=state["variables"],
                opt_state=state["opt_state"],
                cstate=state["cstate"],
                ctrl=ctrl,
            )
            state = {
                "variables": restored.variables,
                "opt_state": restored.opt_state,
                "cstate": restored.cstate,
            }
            done = restored.step
            trainer.skip_epochs(done)
            outcome.history = list(resume.history)
            left = f"epochs {done + 1}-{epochs} to go" if done < epochs else "no epoch to go"
            job.console.print(f"resumed from the checkpoint of epoch {done}; {left}")
        job.start_epochs_bar(epochs, completed=done)
        for epoch in range(done + 1, epochs + 1):
            state = trainer.train_epoch(state, epoch - 1)
            job.epoch_done()
            # `ctrl.transform` has already ticked into the next epoch: when the
            # schedule raised the level, the masks evaluated and reported here
            # are the ones the next epoch trains with.
            ctrl.sync(state["variables"], state["cstate"])
            _, test_loss, test_accuracy = trainer.evaluate(state)
            last = trainer.last
            record = {
                "epoch": epoch,
                "train_loss": last.train_loss,
                "compression_loss": last.compression_loss,
                "test_loss": test_loss,
                "test_accuracy": test_accuracy,
                "seconds": last.seconds,
            }
            statistics, rate = _statistics(ctrl, record)
            # Short enough for an 80-column log.
            line = (
                f"epoch {epoch}/{epochs}  loss {last.train_loss:.4f}  "
                f"test loss {test_loss:.4f}  test acc {test_accuracy:.2%}"
            )
            rates = [s["sparsity_level_for_layers"] for s in record.get("sparsity", {}).values()]
            if rates:
                line += f"  sparsity {rates[0]:.4f}"
            outcome.history.append(record)
            _log_epoch(job, record, statistics, rate)
            job.console.print(line)
            if statistics is not None:
                job.console.out(statistics.to_str(), end="")
            write_history(job.out, outcome.history, seed=job.seed, init_from=job.init_from)
            checkpoints.save(
                epoch,
                ctrl=ctrl,
                variables=state["variables"],
                opt_state=state["opt_state"],
                cstate=state["cstate"],
            )
    outcome.state = state
    return outcome


def _pretrain(job: Job, variables: Any, epochs: int) -> tuple[Any, float, DigitsTrainer]:
    """Trains the model uncompressed; returns its variables, test accuracy and trainer."""
    dense_config = nj.NNCFConfig.from_dict({**job.config, "compression": []})
    spe = len(job.data.x_train) // job.settings.batch_size
    ctrl, cstate = nj.create_compressed_model(
        job.model.model, variables, dense_config, steps_per_epoch=spe
    )
    trainer = job.trainer(ctrl, log_prefix="pretrain")
    state = trainer.init_state(variables, cstate)
    for epoch in range(epochs):
        state = trainer.train_epoch(state, epoch)
        job.epoch_done()
        accuracy = trainer.validate_uncompressed(state)
        if job.log is not None:
            job.log.scalar("pretrain/test_accuracy", accuracy, epoch + 1)
    accuracy = trainer.validate_uncompressed(state)
    job.console.print(
        f"uncompressed model: {epochs} epoch(s) without compression, test acc {accuracy:.2%} "
        "(the reference of accuracy-aware training)"
    )
    return state["variables"], accuracy, trainer


def train_accuracy_aware(
    job: Job,
    ctrl: Any,
    variables: Any,
    cstate: Any,
    *,
    pretrain_epochs: int,
    init_from: Any,
) -> Outcome:
    """`nncf_jax.accuracy_aware` driving the trainer's callbacks; see the module doc.

    The best state goes to ``OUT/checkpoints`` (the loop's ``checkpoint_dir``),
    so ``nncf-jax stats/export/plot`` read the best state.
    """
    params = nj.accuracy_aware.AccuracyAwareParams.from_config(job.config)
    trainers: list[DigitsTrainer] = []
    reference = None
    pretrain = 0 if init_from is not None else pretrain_epochs
    job.start_epochs_bar(pretrain + params.maximal_total_epochs)
    if init_from is None:
        variables, reference, pre = _pretrain(job, variables, pretrain_epochs)
        trainers.append(pre)
        spe = pre.steps_per_epoch
        # Compression is built on the trained weights (magnitude masks, ...).
        ctrl, cstate = nj.create_compressed_model(
            job.model.model,
            variables,
            job.config,
            init_data=calibration_batches(job.data.x_train, job.settings.batch_size),
            steps_per_epoch=spe,
        )
    trainer = job.trainer(ctrl)
    trainer.global_step = trainers[-1].global_step if trainers else 0
    trainers.append(trainer)
    state = trainer.init_state(variables, cstate)
    loop = create_accuracy_aware_training_loop(
        job.config,
        ctrl,
        uncompressed_model_accuracy=reference,
        verbose=not job.quiet,
        console=job.console,
    )
    history: list[dict[str, Any]] = []

    def train_epoch(state, epoch):
        state = trainer.train_epoch(state, epoch)
        job.epoch_done()
        return state

    def dump(state, record):
        entry = {
            "epoch": record.epoch,
            "phase": record.phase,
            "test_accuracy": record.accuracy,
            "level": record.compression_rate,
            "accuracy_budget": record.accuracy_budget,
            "stage": STAGE_NAMES[record.stage],
            "action": record.action,
            "best": record.best,
        }
        if record.epoch > 0 and trainer.last is not None:
            entry["train_loss"] = trainer.last.train_loss
            entry["compression_loss"] = trainer.last.compression_loss
        statistics, rate = _statistics(ctrl, entry)
        history.append(entry)
        _log_epoch(job, entry, statistics, rate)
        if job.log is not None and record.compression_rate is not None:
            job.log.scalar("accuracy_aware/level", record.compression_rate, record.epoch)

    result = loop.run(
        state,
        train_epoch_fn=train_epoch,
        validate_fn=trainer.validate,
        configure_optimizers_fn=trainer.configure_optimizers,
        dump_checkpoint_fn=dump,
        checkpoint_dir=job.out / "checkpoints",
        validate_uncompressed_fn=trainer.validate_uncompressed,
    )
    summary = {
        "mode": params.mode,
        "pretrain_epochs": pretrain,
        "uncompressed_accuracy": result.uncompressed_accuracy,
        "minimal_tolerable_accuracy": result.minimal_tolerable_accuracy,
        "best_epoch": result.epoch,
        "accuracy": result.accuracy,
        "level": result.compression_rate,
        "criterion_met": result.criterion_met,
        "stop_reason": result.stop_reason,
    }
    epochs = max(r.epoch for r in result.history)
    return Outcome(result.state, ctrl, trainers, history, epochs, summary)
