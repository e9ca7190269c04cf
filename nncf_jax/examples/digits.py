"""Compression-aware training of a small CNN on scikit-learn's digits.

The README's main job, as a library function: `run` reads an NNCF-style JSON
config, trains an unmodified ``flax.linen`` CNN with the compression the
config asks for (or none: the float baseline), and writes orbax checkpoints
that carry the compression state, the stripped weights and ``metrics.json``.

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
  "weight_decay": 0.0}`` (``sgd`` uses momentum 0.9).

Output directory layout::

    OUT/config.json      the config with the training keys actually used
    OUT/checkpoints/E/   orbax checkpoint after epoch E (the last 3 are kept)
    OUT/stripped/        orbax checkpoint of ctrl.strip(...): plain variables
    OUT/model.stablehlo  the exported model (jax.export), with model.stablehlo.json
    OUT/metrics.json     final metrics and per-epoch history

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

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import nncf_jax as nj
from nncf_jax.errors import CheckpointError, ConfigError, UsageError
from nncf_jax.examples.digits_data import (
    CNN,
    DigitsData,
    load_digits_data,
)
from nncf_jax.examples.train_settings import TrainSettings
from nncf_jax.examples.train_settings import sample_shape as config_sample_shape

__all__ = [
    "CNN",
    "DigitsData",
    "TrainSettings",
    "latest_statistics",
    "load_digits_data",
    "run",
]

DEFAULT_OUT_ROOT = Path("runs") / "digits"


# --- helpers -------------------------------------------------------------------


def _metrics(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return loss, accuracy


def _sparsity_summary(statistics: Any) -> dict[str, dict[str, float]]:
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


def _init_variables(model: nn.Module, seed: int, sample_shape: tuple[int, ...]) -> Any:
    # One compiled init instead of a compilation per initializer op.
    return jax.jit(model.init)(jax.random.key(seed), jnp.zeros(sample_shape, jnp.float32))


def _default_out_dir(config_path: str | os.PathLike) -> Path:
    return DEFAULT_OUT_ROOT / Path(config_path).stem


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    previous = [
        out / "checkpoints",
        out / "stripped",
        out / "metrics.json",
        out / "model.stablehlo",
        out / "model.stablehlo.json",
    ]
    if any(p.exists() for p in previous):
        if not overwrite:
            raise UsageError(
                f"{out} already holds a run (checkpoints/, stripped/ or metrics.json); "
                "choose another output directory or pass overwrite=True (--overwrite)"
            )
        for p in previous:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _stripped_dir(path: str | os.PathLike) -> Path:
    path = Path(path).resolve()
    return path / "stripped" if (path / "stripped").is_dir() else path


def _load_variables(path: str | os.PathLike, template: Any) -> Any:
    """Variables saved in ``path`` (a run directory or its ``stripped/``), typed like ``template``."""
    directory = _stripped_dir(path)
    if not directory.is_dir():
        raise CheckpointError(f"no stripped variables at {directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            return checkpointer.restore(directory, abstract)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{directory} does not hold variables of the digits CNN: {e}"
        ) from None


# --- the job -------------------------------------------------------------------


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
) -> dict[str, Any]:
    """Trains the digits CNN with the compression of a config; see the module docstring.

    Each epoch: a progress bar over the batches, then the test loss and
    accuracy of the compressed forward (``ctrl.apply``), the compression
    statistics (``ctrl.statistics().to_str()``, when the config has
    algorithms) and an orbax checkpoint. At the end the stripped variables
    (``ctrl.strip``) are run through plain ``model.apply``, which must give
    the compressed forward's predictions, and saved.

    Args:
      config_path: NNCF JSON config (``compression`` may be an empty list).
      epochs, batch_size, lr: override the config's training keys.
      out_dir: output directory; default ``runs/digits/<config file stem>``.
      seed: seeds the weight initialisation and the batch order.
      init_from: a previous run's directory (or its ``stripped/``) to start
        from instead of random weights, e.g. to fine-tune a sparse model with
        ``const_sparsity``.
      overwrite: replace the checkpoints, stripped weights and metrics of an
        earlier run in ``out_dir`` (without it, such a directory is an error).
      quiet: print nothing.

    Returns:
      The metrics also written to ``out_dir/metrics.json``:
      ``test_accuracy`` / ``test_loss`` (compressed forward, last epoch),
      ``stripped_test_accuracy`` (plain model on stripped variables),
      ``float_test_accuracy`` (plain model on the trained variables with no
      compression applied), ``stripped_matches`` (same predictions as the
      compressed forward), ``sparsity`` (per algorithm, from
      ``ctrl.statistics()``), ``sparsity_level`` / ``sparsity_level_for_layers``
      (the first sparsity algorithm's, 0.0 without one), ``compile_seconds``,
      ``train_seconds`` (the epochs' step loops), ``total_seconds``,
      ``history`` (one entry per epoch) and the settings used.

    Raises:
      ConfigError, UnknownAlgorithmError, ScopeError, NotAvailableError: bad config.
      UsageError: bad argument, an earlier run in ``out_dir``, or no scikit-learn.
      CheckpointError: ``init_from`` holds no usable variables.
    """
    started = time.perf_counter()
    console = Console(quiet=quiet, highlight=False)
    config = nj.NNCFConfig.from_json(config_path)
    settings = TrainSettings.from_config(config, epochs=epochs, batch_size=batch_size, lr=lr)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed: expected a non-negative integer, got {seed!r}")
    sample_shape = config_sample_shape(config)
    data = load_digits_data()
    n_train = len(data.x_train)
    steps_per_epoch = n_train // settings.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            "batch_size",
            f"{settings.batch_size} is more than the {n_train} training images; "
            f"use at most {n_train}",
        )
    out = Path(out_dir) if out_dir is not None else _default_out_dir(config_path)
    out = out.resolve()

    model = CNN()
    variables = _init_variables(model, seed, sample_shape)
    if init_from is not None:
        variables = _load_variables(init_from, variables)
    ctrl, cstate = nj.create_compressed_model(
        model, variables, config, steps_per_epoch=steps_per_epoch
    )
    has_algorithms = bool(ctrl.algorithms)
    # After the config and model are known good, so a bad config leaves no directory.
    _prepare_out_dir(out, overwrite)
    tx = settings.make_optimizer()
    opt_state = tx.init(variables["params"])

    def train_step(variables, opt_state, cstate, x, y):
        def loss_fn(params):
            logits = ctrl.apply({**variables, "params": params}, cstate, x)
            task_loss, _ = _metrics(logits, y)
            return task_loss + ctrl.loss(params, cstate), task_loss

        params = variables["params"]
        (_, task_loss), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        updates, cstate = ctrl.transform.update(updates, cstate, params)  # scheduler tick
        params = optax.apply_updates(params, updates)
        return {**variables, "params": params}, opt_state, cstate, task_loss

    def eval_compressed(variables, cstate, x, y):
        logits = ctrl.apply(variables, cstate, x)
        return logits, *_metrics(logits, y)

    def eval_plain(variables, x, y):
        logits = model.apply(variables, x)
        return logits, *_metrics(logits, y)

    x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    x0 = data.x_train[: settings.batch_size]
    y0 = data.y_train[: settings.batch_size]
    # Ahead-of-time compilation: the compile time is measured on its own and a
    # shape or dtype drift in the state would raise instead of recompiling.
    compile_started = time.perf_counter()
    step_fn = jax.jit(train_step).lower(variables, opt_state, cstate, x0, y0).compile()
    eval_fn = jax.jit(eval_compressed).lower(variables, cstate, x_test, y_test).compile()
    plain_fn = jax.jit(eval_plain).lower(variables, x_test, y_test).compile()
    compile_seconds = time.perf_counter() - compile_started

    stored_config = {**config, **settings.to_config()}
    (out / "config.json").write_text(json.dumps(stored_config, indent=2) + "\n")
    algorithms = [a.name for a in ctrl.algorithms]
    console.print(
        f"digits: {n_train} train / {len(data.x_test)} test images, "
        f"{steps_per_epoch} steps × {settings.batch_size} per epoch; "
        f"compile {compile_seconds:.2f} s\n"
        f"compression: {', '.join(algorithms) or 'none (float baseline)'}"
        + (f" (from {init_from})" if init_from is not None else "")
    )

    rng = np.random.default_rng(seed)
    history: list[dict[str, Any]] = []
    train_seconds = 0.0
    progress = Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet,
    )
    checkpoints = nj.checkpoint.CheckpointManager(out / "checkpoints", max_to_keep=3)
    with checkpoints, progress:
        for epoch in range(1, settings.epochs + 1):
            order = rng.permutation(n_train)[: steps_per_epoch * settings.batch_size]
            batches = order.reshape(steps_per_epoch, settings.batch_size)
            task = progress.add_task("train", total=steps_per_epoch, epoch=f"{epoch}")
            epoch_started = time.perf_counter()
            losses = []
            for index in batches:
                variables, opt_state, cstate, loss = step_fn(
                    variables, opt_state, cstate, data.x_train[index], data.y_train[index]
                )
                losses.append(loss)
                progress.advance(task)
            train_loss = float(jnp.mean(jnp.stack(losses)))  # one host sync per epoch
            epoch_seconds = time.perf_counter() - epoch_started
            train_seconds += epoch_seconds
            progress.remove_task(task)

            # `ctrl.transform` has already ticked into the next epoch: when the
            # schedule raised the level, the masks evaluated and reported here
            # are the ones the next epoch trains with.
            ctrl.sync(variables, cstate)
            _, test_loss, test_accuracy = eval_fn(variables, cstate, x_test, y_test)
            record = {
                "epoch": epoch,
                "train_loss": train_loss,
                "test_loss": float(test_loss),
                "test_accuracy": float(test_accuracy),
                "seconds": epoch_seconds,
            }
            # Short enough for an 80-column log.
            line = (
                f"epoch {epoch}/{settings.epochs}  loss {train_loss:.4f}  "
                f"test loss {record['test_loss']:.4f}  test acc {record['test_accuracy']:.2%}"
            )
            statistics = ctrl.statistics() if has_algorithms else None
            if statistics is not None:
                record["sparsity"] = _sparsity_summary(statistics)
                rates = [s["sparsity_level_for_layers"] for s in record["sparsity"].values()]
                if rates:
                    line += f"  sparsity {rates[0]:.4f}"
            history.append(record)
            console.print(line)
            if statistics is not None:
                console.out(statistics.to_str(), end="")
            checkpoints.save(
                epoch, ctrl=ctrl, variables=variables, opt_state=opt_state, cstate=cstate
            )

    ctrl.sync(variables, cstate)
    logits, test_loss, test_accuracy = eval_fn(variables, cstate, x_test, y_test)
    stripped = ctrl.strip(variables, cstate)
    stripped_logits, _, stripped_accuracy = plain_fn(stripped, x_test, y_test)
    _, _, float_accuracy = plain_fn(variables, x_test, y_test)
    stripped_matches = bool(
        jnp.array_equal(jnp.argmax(logits, -1), jnp.argmax(stripped_logits, -1))
    ) and float(stripped_accuracy) == float(test_accuracy)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(out / "stripped", stripped)
        checkpointer.wait_until_finished()
    # The deployable artefact: StableHLO with a symbolic batch, loaded back
    # with plain jax.export to check it predicts what the compressed model does.
    artefact = ctrl.export_model(
        str(out / "model.stablehlo"), input_names=["image"], output_names=["logits"]
    )
    exported = jax.export.deserialize(bytearray(artefact.path.read_bytes()))
    exported_accuracy = float(jnp.mean(jnp.argmax(exported.call(x_test), -1) == y_test))

    sparsity = _sparsity_summary(ctrl.statistics()) if has_algorithms else {}
    first = next(iter(sparsity.values()), {})
    metrics = {
        "config": str(config_path),
        "out_dir": str(out),
        "algorithms": algorithms,
        **asdict(settings),
        "seed": seed,
        "init_from": None if init_from is None else str(init_from),
        "steps_per_epoch": steps_per_epoch,
        "train_examples": n_train,
        "test_examples": len(data.x_test),
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "stripped_test_accuracy": float(stripped_accuracy),
        "float_test_accuracy": float(float_accuracy),
        "stripped_matches": stripped_matches,
        "stripped_max_abs_logit_diff": float(jnp.max(jnp.abs(logits - stripped_logits))),
        "sparsity": sparsity,
        "sparsity_level": first.get("sparsity_level", 0.0),
        "sparsity_level_for_layers": first.get("sparsity_level_for_layers", 0.0),
        "compile_seconds": compile_seconds,
        "train_seconds": train_seconds,
        "step_ms": 1000.0 * train_seconds / (settings.epochs * steps_per_epoch),
        "total_seconds": time.perf_counter() - started,
        "checkpoint_dir": str(out / "checkpoints"),
        "stripped_dir": str(out / "stripped"),
        "exported_model": str(artefact.path),
        "exported_bytes": artefact.path.stat().st_size,
        "exported_test_accuracy": exported_accuracy,
        "history": history,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    console.print(_summary_table(metrics))
    if not stripped_matches:
        console.print(
            "[bold red]warning:[/] the stripped model's predictions differ from the "
            "compressed forward's; this is a bug in nncf-jax"
        )
    return metrics


def _summary_table(metrics: Mapping[str, Any]) -> Table:
    table = Table(title=f"digits: {Path(metrics['config']).name}", title_justify="left")
    table.add_column("Result")
    table.add_column("Value", justify="right")
    rows = [
        ("Compression", ", ".join(metrics["algorithms"]) or "none (float baseline)"),
        (
            "Epochs × steps (batch)",
            f"{metrics['epochs']} × {metrics['steps_per_epoch']} ({metrics['batch_size']})",
        ),
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
        ("Output", metrics["out_dir"]),
    ]
    for row in rows:
        table.add_row(*row)
    return table


def latest_statistics(run_dir: str | os.PathLike) -> tuple[int, str]:
    """The statistics tables of a run's latest checkpoint.

    Args:
      run_dir: a directory written by `run` (or its ``checkpoints/``).

    Returns:
      ``(epoch, text)``: the checkpoint's epoch and ``ctrl.statistics().to_str()``
      (a one-line note when the run had no compression).

    Raises:
      CheckpointError: not a run directory, or no complete checkpoint in it.
    """
    path = Path(run_dir).resolve()
    if path.name == "checkpoints" and not (path / "config.json").exists():
        path = path.parent
    config_file = path / "config.json"
    if not config_file.is_file() or not (path / "checkpoints").is_dir():
        raise CheckpointError(
            f"{path} is not a digits run directory (expected config.json and checkpoints/ "
            "written by `nncf-jax train`)"
        )
    config = nj.NNCFConfig.from_json(config_file)
    settings = TrainSettings.from_config(config)
    model = CNN()
    variables = _init_variables(model, 0, config_sample_shape(config))
    steps_per_epoch = len(load_digits_data().x_train) // settings.batch_size
    ctrl, cstate = nj.create_compressed_model(
        model, variables, config, steps_per_epoch=steps_per_epoch
    )
    opt_state = settings.make_optimizer().init(variables["params"])
    with nj.checkpoint.CheckpointManager(path / "checkpoints") as checkpoints:
        restored = checkpoints.restore(
            variables=variables, opt_state=opt_state, cstate=cstate, ctrl=ctrl
        )
    if not ctrl.algorithms:
        return restored.step, "no compression algorithms in this run (float baseline)\n"
    return restored.step, ctrl.statistics().to_str()
