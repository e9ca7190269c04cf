"""Compression-aware training of a small CNN on scikit-learn's digits.

The README's main job, as a library function: `run` reads an NNCF-style JSON
config, trains an unmodified ``flax.linen`` CNN (or any linen model given by
a factory, see `nncf_jax.examples.digits_model`) with the compression the
config asks for (or none: the float baseline), and writes orbax checkpoints
that carry the compression state, the stripped weights, the exported model,
a TensorBoard log, plots and ``metrics.json``.

The data is ``sklearn.datasets.load_digits``: 1,797 grey 8×8 images of the
digits 0-9, bundled with scikit-learn (no download). They are scaled to
[0, 1] and split once, stratified 80/20 with a fixed seed (1,437 training and
360 test images), so every run is scored on the same test set.

The config carries the training keys NNCF example configs carry beside the
compression keys (all optional; keyword arguments of `run` override them):

- ``epochs``: number of epochs (default 30);
- ``batch_size``: images per optimizer step (default 128); the last partial
  batch of each epoch is dropped so every step has the same shapes and the
  step compiles once;
- ``optimizer``: ``{"type": "adam" | "adamw" | "sgd", "base_lr": 1e-3,
  "weight_decay": 0.0}`` (``sgd`` uses momentum 0.9);
- ``model``: a model spec ``"module:factory"`` (any other value, such as
  NNCF's ``"digits_cnn"``, means the digits CNN);
- ``accuracy_aware_training``: when present, the epochs are driven by
  `nncf_jax.accuracy_aware` (see `nncf_jax.examples.digits_job` for the
  uncompressed reference accuracy: a pre-run of ``epochs`` uncompressed
  epochs, or the ``init_from`` weights); accuracies are fractions (0.98).

Output directory layout::

    OUT/config.json      the config with the training keys and model actually used
    OUT/checkpoints/E/   orbax checkpoint after epoch E (the last 3 are kept;
                         accuracy-aware: only the best state)
    OUT/stripped/        orbax checkpoint of ctrl.strip(...): plain variables
    OUT/model.stablehlo  the exported model (jax.export), with model.stablehlo.json
    OUT/tensorboard/     the metrics log (tensorboard --logdir OUT/tensorboard)
    OUT/plots/*.png      schedule, per-layer sparsity and training history
    OUT/metrics.json     final metrics and per-epoch history
    OUT/history.json     the per-epoch history so far, rewritten (atomically)
                         after each epoch, with the seed: what ``resume`` reads

An interrupted run continues with ``run(..., resume=True)`` (``nncf-jax
train CONFIG --out OUT --resume``) from its latest complete checkpoint and
ends with the same bits as an uninterrupted run; see `run`.

Example:
  >>> from nncf_jax.examples import digits
  >>> metrics = digits.run("configs/digits_magnitude_sparsity.json")  # doctest: +SKIP
  >>> metrics["test_accuracy"], metrics["sparsity_level_for_layers"]  # doctest: +SKIP
  (0.98..., 0.5)
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import nncf_jax as nj
from nncf_jax.errors import ConfigError, UsageError
from nncf_jax.examples.digits_data import CNN, DigitsData, calibration_batches, load_digits_data
from nncf_jax.examples.digits_job import (
    HISTORY_FILE,
    Job,
    Outcome,
    Resume,
    read_history,
    sparsity_summary,
    train_accuracy_aware,
    train_epochs,
)
from nncf_jax.examples.digits_model import resolve_model
from nncf_jax.examples.digits_restore import (
    init_variables,
    latest_statistics,
    load_variables,
    reshape_images,
)
from nncf_jax.examples.train_settings import TrainSettings
from nncf_jax.examples.train_settings import sample_shape as config_sample_shape
from nncf_jax.metrics_log import MetricsLog

__all__ = [
    "CNN",
    "DigitsData",
    "TrainSettings",
    "latest_statistics",
    "load_digits_data",
    "run",
]

DEFAULT_OUT_ROOT = Path("runs") / "digits"
# What marks a directory as holding a run, and what `overwrite` removes.
_RUN_FILES = ("checkpoints", "stripped", "metrics.json", "model.stablehlo", "model.stablehlo.json")
_ALSO_REPLACED = ("tensorboard", "plots", "export", HISTORY_FILE)
# What the end of a run writes; a resumed run removes them first (stale).
_FINAL_FILES = ("stripped", "metrics.json", "model.stablehlo", "model.stablehlo.json")


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    if any((out / p).exists() for p in _RUN_FILES):
        if not overwrite:
            raise UsageError(
                f"{out} already holds a run (checkpoints/, stripped/ or metrics.json); "
                "choose another output directory or pass overwrite=True (--overwrite)"
            )
    for name in (*_RUN_FILES, *_ALSO_REPLACED) if overwrite else ():
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _differing_keys(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    keys = (set(saved) | set(current)) - {"epochs"}
    return sorted(k for k in keys if saved.get(k) != current.get(k))


def _prepare_resume(
    out: Path,
    *,
    epochs: int,
    stored_config: Mapping[str, Any],
    seed: int,
    init_from: str | None,
) -> tuple[Resume, str | None]:
    """Checks that ``out`` holds a run this call continues; returns where, and a note.

    Raises:
      UsageError: nothing to resume, or the run was trained with another
        config, seed or ``init_from``, or past ``epochs``.
    """
    checkpoints = out / "checkpoints"
    steps = sorted(ocp.path.step.checkpoint_steps(checkpoints)) if checkpoints.is_dir() else []
    if not steps:
        raise UsageError(
            f"nothing to resume in {out}: no complete checkpoint in {checkpoints}; "
            "start the run without resume (--resume)"
            + (" and with overwrite (--overwrite) to replace what is there" if out.exists() else "")
        )
    latest = steps[-1]
    if latest > epochs:
        raise UsageError(
            f"cannot resume {out} to {epochs} epoch(s): its latest checkpoint is of epoch "
            f"{latest}; ask for {latest} or more epochs (--epochs)"
        )
    config_file = out / "config.json"
    if config_file.is_file():
        try:
            saved = json.loads(config_file.read_text())
        except ValueError as e:
            raise UsageError(f"cannot resume {out}: {config_file} is not valid JSON ({e})") from e
        current = json.loads(json.dumps(stored_config))
        differing = _differing_keys(saved, current)
        if differing:
            raise UsageError(
                f"cannot resume {out}: it was trained with another config or override "
                f"(differs in {', '.join(differing)}); resume with the config, --batch-size, "
                "--lr and --model it was started with (only --epochs may change)"
            )
    record = read_history(out)
    if record is not None:
        if record.get("seed") != seed:
            raise UsageError(
                f"cannot resume {out}: it was trained with seed {record.get('seed')}, not "
                f"{seed}; resume with --seed {record.get('seed')}"
            )
        if record.get("init_from") != init_from:
            raise UsageError(
                f"cannot resume {out}: it was started from init_from={record.get('init_from')!r}, "
                f"not {init_from!r}; resume with the same --init-from"
            )
    earlier = [r for r in (record or {}).get("history", []) if r["epoch"] <= latest]
    note = None
    if [r["epoch"] for r in earlier] != list(range(1, latest + 1)):
        earlier = []
        note = (
            f"{out / HISTORY_FILE} does not hold epochs 1-{latest}; the history in "
            f"metrics.json starts at epoch {latest + 1}"
        )
    return Resume(latest, earlier), note


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UsageError(f"{name}: expected a positive integer, got {value!r}")
    return value


def run(
    config_path: str | os.PathLike,
    *,
    epochs: int | None = None,
    out_dir: str | os.PathLike | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    lr: float | None = None,
    init_from: str | os.PathLike | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    model: str | None = None,
    pretrain_epochs: int | None = None,
    tensorboard: bool = True,
    plots: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Trains the digits CNN with the compression of a config; see the module docstring.

    Each epoch: a progress bar over the batches, then the test loss and
    accuracy of the compressed forward (``ctrl.apply``), the compression
    statistics (``ctrl.statistics().to_str()``, when the config has
    algorithms) and an orbax checkpoint. With an ``accuracy_aware_training``
    section, `nncf_jax.accuracy_aware` drives the epochs instead and the best
    state is kept. At the end the stripped variables (``ctrl.strip``) are run
    through plain ``model.apply``, which must give the compressed forward's
    predictions, saved and exported; plots and the TensorBoard log are written.

    Args:
      config_path: NNCF JSON config (``compression`` may be an empty list).
      epochs, batch_size, lr: override the config's training keys
        (accuracy-aware: ``epochs`` is the uncompressed pre-run).
      out_dir: output directory; default ``runs/digits/<config file stem>``.
      seed: seeds the weight initialisation and the batch order.
      init_from: a previous run's directory (or its ``stripped/``) to start
        from instead of random weights, e.g. to fine-tune a sparse model with
        ``const_sparsity``; accuracy-aware: the uncompressed model.
      overwrite: replace an earlier run in ``out_dir`` (without it, such a
        directory is an error).
      quiet: print nothing.
      model: a model spec (``"module:factory"``), overriding the config's
        ``model``; see `nncf_jax.examples.digits_model`.
      pretrain_epochs: accuracy-aware without ``init_from``: uncompressed
        epochs before compression (default: ``epochs``).
      tensorboard: write ``OUT/tensorboard`` (skipped with a note when
        tensorboardX is missing).
      plots: write ``OUT/plots/*.png`` (skipped with a note when matplotlib
        is missing).
      resume: continue the run in ``out_dir`` from its latest complete
        checkpoint (variables, optimizer state, compression state) to
        ``epochs``; see "Resuming" below.

    Resuming:
      The run must have been started with the same config, ``seed``,
      ``batch_size``, ``lr``, ``model`` and ``init_from`` (checked against
      ``OUT/config.json`` and ``OUT/history.json``); only ``epochs`` may
      differ, so a finished run can also be extended. The batch order of the
      completed epochs is replayed (drawn and discarded), so the final
      weights, compression state and metrics are bit for bit those of an
      uninterrupted run with the same seed. ``history`` holds every epoch
      (the earlier ones from ``OUT/history.json``, rewritten atomically after
      each epoch); the timings (``compile_seconds``, ``train_seconds``,
      ``step_ms``, ``total_seconds``) cover the resumed process only, and
      ``resumed_from_epoch`` names the checkpoint it started from (None for
      a run that was not resumed). The TensorBoard log gets a further event
      file; the per-step scalars of an epoch the interruption cut short then
      appear twice. Accuracy-aware configs cannot be resumed (their
      checkpoints hold the best state, not the latest): a `UsageError`.

    Returns:
      The metrics also written to ``out_dir/metrics.json``:
      ``test_accuracy`` / ``test_loss`` (compressed forward, final state),
      ``stripped_test_accuracy`` (plain model on stripped variables, with the
      activation quantizers of ``ctrl.forward_context`` where there are any),
      ``float_test_accuracy`` (plain model on the trained variables with no
      compression applied), ``stripped_matches`` (same predictions as the
      compressed forward), ``sparsity`` (per algorithm, from
      ``ctrl.statistics()``), ``sparsity_level`` / ``sparsity_level_for_layers``
      (the first sparsity algorithm's, 0.0 without one), ``compile_seconds``,
      ``train_seconds`` (the epochs' step loops), ``total_seconds``,
      ``history`` (one entry per epoch), ``accuracy_aware`` (the loop's
      result, or None), ``tensorboard_dir`` / ``plots`` (None / [] when
      skipped) and the settings used.

    Raises:
      ConfigError, UnknownAlgorithmError, ScopeError, NotAvailableError: bad config.
      UsageError: bad argument or model, an earlier run in ``out_dir``, or no
        scikit-learn; with ``resume``: nothing to resume in ``out_dir``, a run
        started otherwise, ``overwrite`` too, or an accuracy-aware config.
      CheckpointError: ``init_from`` holds no usable variables.
    """
    started = time.perf_counter()
    console = Console(quiet=quiet, highlight=False)
    if resume and overwrite:
        raise UsageError(
            "resume (--resume) continues the run in the output directory, overwrite "
            "(--overwrite) replaces it: pass one of them"
        )
    config = nj.NNCFConfig.from_json(config_path)
    if resume and config.get("accuracy_aware_training") is not None:
        raise UsageError(
            "resume (--resume) is not supported for accuracy-aware configs (their checkpoints "
            "hold the best state, not the latest); rerun with --overwrite"
        )
    settings = TrainSettings.from_config(config, epochs=epochs, batch_size=batch_size, lr=lr)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed: expected a non-negative integer, got {seed!r}")
    pretrain = (
        settings.epochs
        if pretrain_epochs is None
        else _positive(pretrain_epochs, "pretrain_epochs")
    )
    spec = resolve_model(model if model is not None else config.get("model"))
    shape = config_sample_shape(config, digits_cnn=spec.is_default)
    data = reshape_images(load_digits_data(), shape)
    n_train = len(data.x_train)
    steps_per_epoch = n_train // settings.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            "batch_size",
            f"{settings.batch_size} is more than the {n_train} training images; "
            f"use at most {n_train}",
        )
    out = Path(out_dir) if out_dir is not None else DEFAULT_OUT_ROOT / Path(config_path).stem
    out = out.resolve()
    variables = init_variables(spec.model, seed, shape)
    if init_from is not None:
        variables = load_variables(init_from, variables)
    ctrl, cstate = nj.create_compressed_model(
        spec.model,
        variables,
        config,
        init_data=calibration_batches(data.x_train, settings.batch_size),
        steps_per_epoch=steps_per_epoch,
    )
    accuracy_aware = None  # the mode, when the config has the section
    if config.get("accuracy_aware_training") is not None:
        # Refuses a bad section before anything is trained or written.
        loop = nj.accuracy_aware.create_accuracy_aware_training_loop(config, ctrl, verbose=False)
        accuracy_aware = loop.mode
    stored_config = {**config, **settings.to_config(), "model": spec.spec}
    init_from_str = None if init_from is None else str(Path(init_from).resolve())
    resume_point, note = None, None
    if resume:
        resume_point, note = _prepare_resume(
            out,
            epochs=settings.epochs,
            stored_config=stored_config,
            seed=seed,
            init_from=init_from_str,
        )
        for name in _FINAL_FILES:  # stale: written again at the end
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    else:
        # After the config and model are known good, so a bad config leaves no directory.
        _prepare_out_dir(out, overwrite)
    (out / "config.json").write_text(json.dumps(stored_config, indent=2) + "\n")
    log = MetricsLog.create(out / "tensorboard") if tensorboard else None
    algorithms = [a.name for a in ctrl.algorithms]
    console.print(
        f"digits: {n_train} train / {len(data.x_test)} test images, "
        f"{steps_per_epoch} steps × {settings.batch_size} per epoch; model {spec.spec}\n"
        f"compression: {', '.join(algorithms) or 'none (float baseline)'}"
        + (f" (from {init_from})" if init_from is not None else "")
        + (f"; accuracy-aware ({accuracy_aware})" if accuracy_aware else "")
    )
    if log is not None and log.note:
        console.print(f"note: {log.note}")
    if note:
        console.print(f"note: {note}")
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet,
    )
    job = Job(
        config,
        settings,
        spec,
        data,
        seed,
        out,
        console,
        progress,
        log,
        quiet,
        plots,
        init_from=init_from_str,
    )
    try:
        with progress:
            if accuracy_aware:
                outcome = train_accuracy_aware(
                    job, ctrl, variables, cstate, pretrain_epochs=pretrain, init_from=init_from
                )
            else:
                outcome = train_epochs(job, ctrl, variables, cstate, resume=resume_point)
        resumed_from = None if resume_point is None else resume_point.epoch
        metrics = _finish(job, outcome, config_path, init_from, started, resumed_from)
    finally:
        if log is not None:
            log.close()
    console.print(_summary_table(metrics))
    if not metrics["stripped_matches"]:
        console.print(
            "[bold red]warning:[/] the stripped model's predictions differ from the "
            "compressed forward's; this is a bug in nncf-jax"
        )
    return metrics


def _finish(
    job: Job, outcome: Outcome, config_path, init_from, started: float, resumed_from: int | None
) -> dict[str, Any]:
    """Strips, checks, saves and exports the final state; writes plots and metrics.json."""
    out, ctrl, trainer = job.out, outcome.ctrl, outcome.trainers[-1]
    variables, cstate = outcome.state["variables"], outcome.state["cstate"]
    ctrl.sync(variables, cstate)
    logits, test_loss, test_accuracy = trainer.evaluate(outcome.state)
    stripped = ctrl.strip(variables, cstate)
    stripped_logits, _, stripped_accuracy = trainer.evaluate_stripped(stripped, cstate)
    _, _, float_accuracy = trainer.evaluate_plain(variables)
    stripped_matches = (
        bool(jnp.array_equal(jnp.argmax(logits, -1), jnp.argmax(stripped_logits, -1)))
        and stripped_accuracy == test_accuracy
    )
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(out / "stripped", stripped)
        checkpointer.wait_until_finished()
    # The deployable artefact: StableHLO with a symbolic batch, loaded back
    # with plain jax.export to check it predicts what the compressed model does.
    artefact = ctrl.export_model(
        str(out / "model.stablehlo"), input_names=["image"], output_names=["logits"]
    )
    exported = jax.export.deserialize(bytearray(artefact.path.read_bytes()))
    x_test, y_test = jnp.asarray(job.data.x_test), jnp.asarray(job.data.y_test)
    exported_accuracy = float(jnp.mean(jnp.argmax(exported.call(x_test), -1) == y_test))

    statistics = ctrl.statistics() if ctrl.algorithms else None
    sparsity = sparsity_summary(statistics) if statistics is not None else {}
    first = next(iter(sparsity.values()), {})
    plot_files = _plots(job, outcome, statistics) if job.plots else []
    train_seconds = sum(t.train_seconds for t in outcome.trainers)
    total_steps = max(sum(t.steps_trained for t in outcome.trainers), 1)
    metrics = {
        "config": str(config_path),
        "out_dir": str(out),
        "model": job.model.spec,
        "algorithms": [a.name for a in ctrl.algorithms],
        **asdict(job.settings),
        "epochs": outcome.epochs,
        "seed": job.seed,
        "init_from": None if init_from is None else str(init_from),
        "steps_per_epoch": trainer.steps_per_epoch,
        "train_examples": len(job.data.x_train),
        "test_examples": len(job.data.x_test),
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "stripped_test_accuracy": stripped_accuracy,
        "float_test_accuracy": float_accuracy,
        "stripped_matches": stripped_matches,
        "stripped_max_abs_logit_diff": float(jnp.max(jnp.abs(logits - stripped_logits))),
        "sparsity": sparsity,
        "sparsity_level": first.get("sparsity_level", 0.0),
        "sparsity_level_for_layers": first.get("sparsity_level_for_layers", 0.0),
        "compile_seconds": sum(t.compile_seconds for t in outcome.trainers),
        "train_seconds": train_seconds,
        "step_ms": 1000.0 * train_seconds / total_steps,
        "total_seconds": time.perf_counter() - started,
        "checkpoint_dir": str(out / "checkpoints"),
        "stripped_dir": str(out / "stripped"),
        "exported_model": str(artefact.path),
        "exported_bytes": artefact.path.stat().st_size,
        "exported_test_accuracy": exported_accuracy,
        "tensorboard_dir": str(job.log.logdir) if job.log is not None and job.log.enabled else None,
        "plots": [str(p) for p in plot_files],
        "accuracy_aware": outcome.accuracy_aware,
        "resumed_from_epoch": resumed_from,
        "history": outcome.history,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _plots(job: Job, outcome: Outcome, statistics: Any) -> list[Path]:
    from nncf_jax import plots

    try:
        return plots.write_plots(
            job.out / "plots",
            config=job.config,
            epochs=max(outcome.epochs, 1),
            steps_per_epoch=outcome.trainers[-1].steps_per_epoch,
            statistics=statistics,
            history=outcome.history,
        )
    except UsageError as e:  # no matplotlib
        job.console.print(f"note: {e}; no plots written")
        return []


def _summary_table(metrics: Mapping[str, Any]) -> Table:
    table = Table(title=f"digits: {Path(metrics['config']).name}", title_justify="left")
    table.add_column("Result")
    table.add_column("Value", justify="right")
    rows = [
        ("Model", metrics["model"]),
        ("Compression", ", ".join(metrics["algorithms"]) or "none (float baseline)"),
        (
            "Epochs × steps (batch)",
            f"{metrics['epochs']} × {metrics['steps_per_epoch']} ({metrics['batch_size']})",
        ),
    ]
    aa = metrics["accuracy_aware"]
    if aa is not None:
        rows += [
            (
                f"Accuracy-aware ({aa['mode']})",
                f"best epoch {aa['best_epoch']}, criterion {'met' if aa['criterion_met'] else 'NOT met'}",
            ),
            ("Test accuracy, uncompressed reference", f"{aa['uncompressed_accuracy']:.2%}"),
        ]
    rows += [
        ("Test accuracy, compressed forward", f"{metrics['test_accuracy']:.2%}"),
        ("Test accuracy, stripped model", f"{metrics['stripped_test_accuracy']:.2%}"),
        ("Test accuracy, exported StableHLO", f"{metrics['exported_test_accuracy']:.2%}"),
        ("Test accuracy, float weights uncompressed", f"{metrics['float_test_accuracy']:.2%}"),
    ]
    if metrics["sparsity"]:
        rows += [
            ("Sparsity, whole model", f"{metrics['sparsity_level']:.4f}"),
            ("Sparsity, sparsified layers", f"{metrics['sparsity_level_for_layers']:.4f}"),
        ]
    rows += [
        ("Compile time", f"{metrics['compile_seconds']:.2f} s"),
        ("Training time", f"{metrics['train_seconds']:.2f} s ({metrics['step_ms']:.2f} ms/step)"),
        ("Total time", f"{metrics['total_seconds']:.2f} s"),
        ("Exported model", f"{metrics['exported_model']} ({metrics['exported_bytes']:,} B)"),
    ]
    if metrics["tensorboard_dir"]:
        rows.append(("TensorBoard log", metrics["tensorboard_dir"]))
    if metrics["plots"]:
        rows.append(("Plots", str(Path(metrics["plots"][0]).parent)))
    rows.append(("Output", metrics["out_dir"]))
    for row in rows:
        table.add_row(*row)
    return table
