"""Reading a digits run back: the controller of its latest checkpoint, its statistics, its export.

`restore_run` rebuilds what ``nncf-jax train`` trained (the model named by
the run's ``config.json``, the controller, the optimizer) and restores the
latest checkpoint into it; ``nncf-jax stats``, ``export`` and ``plot`` use it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

import nncf_jax as nj
from nncf_jax.errors import CheckpointError, UsageError
from nncf_jax.examples.digits_data import TRAIN_SIZE, DigitsData
from nncf_jax.examples.digits_model import ModelSpec, resolve_model
from nncf_jax.examples.digits_trainer import init_optimizer_state
from nncf_jax.examples.train_settings import TrainSettings, sample_shape

__all__ = [
    "RestoredRun",
    "export_run",
    "init_variables",
    "latest_statistics",
    "load_variables",
    "reshape_images",
    "restore_run",
    "run_directory",
]


def init_variables(model: Any, seed: int, shape: tuple[int, ...]) -> Any:
    """``model.init`` on zeros of ``shape``; checks the model returns ``(N, 10)`` logits.

    Raises:
      UsageError: the model's output is not ``(N, 10)`` logits.
    """
    x = jnp.zeros(shape, jnp.float32)
    # One compiled init instead of a compilation per initializer op.
    variables = jax.jit(model.init)(jax.random.key(seed), x)
    out = jax.eval_shape(model.apply, variables, x)
    if getattr(out, "shape", None) != (shape[0], 10):
        got = getattr(out, "shape", type(out).__name__)
        raise UsageError(
            f"the model must map a batch of shape {list(shape)} to (N, 10) logits; "
            f"it returned {got}"
        )
    return variables


def reshape_images(data: DigitsData, shape: tuple[int, ...]) -> DigitsData:
    """The split with the images reshaped to ``(N, *shape[1:])``."""
    inner = tuple(shape[1:])
    return DigitsData(
        data.x_train.reshape((-1, *inner)),
        data.y_train,
        data.x_test.reshape((-1, *inner)),
        data.y_test,
    )


def _stripped_dir(path: str | os.PathLike) -> Path:
    path = Path(path).resolve()
    return path / "stripped" if (path / "stripped").is_dir() else path


def load_variables(path: str | os.PathLike, template: Any) -> Any:
    """Variables saved in ``path`` (a run directory or its ``stripped/``), typed like ``template``.

    Raises:
      CheckpointError: no stripped variables there, or not of this model.
    """
    directory = _stripped_dir(path)
    if not directory.is_dir():
        raise CheckpointError(f"no stripped variables at {directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            return checkpointer.restore(directory, abstract)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{directory} does not hold variables of this model: {e}") from None


def run_directory(path: str | os.PathLike) -> Path:
    """The run directory of ``path`` (the run's ``--out``, or its ``checkpoints/``).

    Raises:
      CheckpointError: not a directory written by ``nncf-jax train``.
    """
    path = Path(path).resolve()
    if path.name == "checkpoints" and not (path / "config.json").exists():
        path = path.parent
    if not (path / "config.json").is_file() or not (path / "checkpoints").is_dir():
        raise CheckpointError(
            f"{path} is not a digits run directory (expected config.json and checkpoints/ "
            "written by `nncf-jax train`)"
        )
    return path


@dataclass(frozen=True)
class RestoredRun:
    """A run's latest checkpoint, restored.

    Attributes:
      path: the run directory.
      config: its ``config.json``.
      model: the model spec it was trained with.
      settings: its training keys.
      steps_per_epoch: optimizer steps per epoch.
      ctrl: the controller, its handles synced to the checkpoint.
      restored: the `nncf_jax.checkpoint.Restored` (``step`` is the epoch).
      metrics: its ``metrics.json``, or None (a run that did not finish).
    """

    path: Path
    config: nj.NNCFConfig
    model: ModelSpec
    settings: TrainSettings
    steps_per_epoch: int
    ctrl: nj.CompressionController
    restored: Any
    metrics: dict[str, Any] | None


def restore_run(run_dir: str | os.PathLike) -> RestoredRun:
    """Rebuilds a run's model and controller and restores its latest checkpoint.

    Raises:
      CheckpointError: not a run directory, or no complete checkpoint in it.
      ConfigError, UsageError: its config or model cannot be rebuilt.
    """
    path = run_directory(run_dir)
    config = nj.NNCFConfig.from_json(path / "config.json")
    settings = TrainSettings.from_config(config)
    spec = resolve_model(config.get("model"))
    shape = sample_shape(config, digits_cnn=spec.is_default)
    variables = init_variables(spec.model, 0, shape)
    steps_per_epoch = max(TRAIN_SIZE // settings.batch_size, 1)
    with nj.checkpoint.CheckpointManager(path / "checkpoints") as checkpoints:
        # The saved builder state rebuilds the controller as trained (e.g. the
        # quantizer setup), with no calibration data.
        ctrl, cstate = nj.create_compressed_model(
            spec.model,
            variables,
            config,
            steps_per_epoch=steps_per_epoch,
            compression_state=checkpoints.read_compression_state()
            if checkpoints.latest_step() is not None
            else None,
        )
        # The optimizer state also covers trained compression parameters (RB).
        opt_state = init_optimizer_state(
            settings.make_optimizer(), variables["params"], ctrl, cstate
        )
        restored = checkpoints.restore(
            variables=variables, opt_state=opt_state, cstate=cstate, ctrl=ctrl
        )
    metrics_file = path / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    return RestoredRun(path, config, spec, settings, steps_per_epoch, ctrl, restored, metrics)


def latest_statistics(run_dir: str | os.PathLike) -> tuple[int, str]:
    """The statistics tables of a run's latest checkpoint.

    Args:
      run_dir: a directory written by `nncf_jax.examples.digits.run` (or its
        ``checkpoints/``).

    Returns:
      ``(epoch, text)``: the checkpoint's epoch and ``ctrl.statistics().to_str()``
      (a one-line note when the run had no compression).

    Raises:
      CheckpointError: not a run directory, or no complete checkpoint in it.
    """
    run = restore_run(run_dir)
    if not run.ctrl.algorithms:
        return run.restored.step, "no compression algorithms in this run (float baseline)\n"
    return run.restored.step, run.ctrl.statistics().to_str()


_DEFAULT_NAMES = {
    "stablehlo": "model.stablehlo",
    "saved_model": "saved_model",
    "openvino": "model.xml",
}


def export_run(
    run_dir: str | os.PathLike, save_format: str = "stablehlo", out: str | os.PathLike | None = None
) -> tuple[RestoredRun, Any]:
    """Exports a run's latest checkpoint with ``ctrl.export_model``.

    Args:
      run_dir: the run directory (or its ``checkpoints/``).
      save_format: ``"stablehlo"``, ``"saved_model"`` or ``"openvino"``.
      out: the artefact's path; default ``RUN_DIR/export/model.stablehlo``,
        ``RUN_DIR/export/saved_model`` or ``RUN_DIR/export/model.xml``.

    Returns:
      ``(run, artefact)``: the `RestoredRun` and the
      `nncf_jax.export.ExportedArtefact`.

    Raises:
      CheckpointError: see `restore_run`.
      ExportError: unknown format, a missing extra (tf, openvino) or an
        unwritable path.
    """
    from nncf_jax.export import FORMATS

    if save_format not in FORMATS:
        raise UsageError(f"--format: expected one of {', '.join(FORMATS)}, got {save_format!r}")
    run = restore_run(run_dir)
    path = Path(out) if out is not None else run.path / "export" / _DEFAULT_NAMES[save_format]
    path.parent.mkdir(parents=True, exist_ok=True)
    artefact = run.ctrl.export_model(
        str(path), save_format=save_format, input_names=["image"], output_names=["logits"]
    )
    return run, artefact
