"""The ``nncf-jax`` command line, run as a user runs it: in a subprocess, by exit status.

Also the pieces it writes: the TensorBoard log (`nncf_jax.metrics_log`) read
back by tag, and the plots (`nncf_jax.plots`): real PNG files whose figures
have the expected number of series and bars.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nncf_jax as nj
from nncf_jax import cli, plots
from nncf_jax.examples import digits
from nncf_jax.metrics_log import MetricsLog, read_scalars, statistics_scalars

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LAYERS = ("Conv_0/kernel", "Conv_1/kernel", "Dense_0/kernel", "Dense_1/kernel")
_SCRIPT = pathlib.Path(sys.executable).parent / "nncf-jax"
# The installed entry point when there is one (what users run), else the module.
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "nncf_jax.cli"]

MAGNITUDE = {
    "input_info": {"sample_size": [1, 8, 8, 1]},
    "epochs": 1,
    "batch_size": 128,
    "optimizer": {"type": "adam", "base_lr": 0.002},
    "compression": {
        "algorithm": "magnitude_sparsity",
        "params": {"sparsity_target": 0.5, "sparsity_target_epoch": 1, "sparsity_freeze_epoch": 3},
    },
}


class Commands:
    """``nncf-jax`` subprocesses started together (each spends seconds starting JAX)."""

    def __init__(self):
        self._procs: dict[str, subprocess.Popen] = {}
        self._results: dict[str, subprocess.CompletedProcess] = {}

    def start(self, name: str, *args, cwd=None) -> Commands:
        self._procs[name] = subprocess.Popen(
            [*CLI, *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env={**os.environ, "COLUMNS": "120"},
        )
        return self

    def result(self, name: str) -> subprocess.CompletedProcess:
        if name not in self._results:
            proc = self._procs[name]
            stdout, stderr = proc.communicate(timeout=600)
            self._results[name] = subprocess.CompletedProcess(
                proc.args, proc.returncode, stdout, stderr
            )
        return self._results[name]


def _write(path: pathlib.Path, config) -> pathlib.Path:
    path.write_text(json.dumps(config))
    return path


BAD = {"compression": {"algorithm": "magnitude_sparsity", "params": {"sparsity_target": 1.2}}}
SCOPED = {"compression": {"algorithm": "magnitude_sparsity", "ignored_scopes": ["Conv_9"]}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every command, started as soon as what it reads exists.

    ``train``: one epoch of 50% magnitude sparsity; the ``validate-config``
    runs go alongside it; ``stats``, ``export`` and ``plot`` read its run.
    """
    root = tmp_path_factory.mktemp("cli")
    config = _write(root / "magnitude.json", MAGNITUDE)
    bad, scoped = _write(root / "bad.json", BAD), _write(root / "scoped.json", SCOPED)
    commands = Commands()
    commands.start("train", "train", config, "--out", root / "run")
    commands.start("validate", "validate-config", CONFIGS / "digits_accuracy_aware.json")
    commands.start("validate bad", "validate-config", bad)
    commands.start("validate scoped", "validate-config", scoped)
    commands.start("validate missing", "validate-config", root / "missing.json")
    commands.start("validate debug", "--debug", "validate-config", bad)
    commands.start("stats not a run", "stats", root)
    commands.start("plot config", "plot", CONFIGS / "digits_magnitude_sparsity.json", cwd=root)
    commands.start("plot dense", "plot", CONFIGS / "digits_dense.json", cwd=root)
    commands.start("export onnx", "export", root / "run", "--format", "onnx")
    train = commands.result("train")
    assert train.returncode == 0, train.stderr
    run = root / "run"
    commands.start("stats", "stats", run)
    commands.start("export", "export", run, "--out", root / "digits.stablehlo")
    commands.start("plot run", "plot", run, "--out", root / "plots_of_run")
    return SimpleNamespace(root=root, path=run, result=commands.result)


@pytest.fixture(scope="module")
def run_dir(runs):
    return SimpleNamespace(path=runs.path, stdout=runs.result("train").stdout)


def _is_png(path: pathlib.Path) -> bool:
    return path.read_bytes()[:8] == PNG_SIGNATURE


# --- train, stats, export, plot ------------------------------------------------


def test_train_writes_the_whole_run(run_dir):
    out = run_dir.path
    assert "epoch 1/1" in run_dir.stdout and "Test accuracy, compressed forward" in run_dir.stdout
    for name in ("config.json", "metrics.json", "model.stablehlo", "stripped", "checkpoints/1"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["stripped_matches"]
    assert metrics["tensorboard_dir"] == str(out / "tensorboard")
    names = sorted(pathlib.Path(p).name for p in metrics["plots"])
    assert names == ["history.png", "schedule.png", "sparsity.png"]
    assert all(_is_png(out / "plots" / n) for n in names)
    # The run records the model it trained, so stats/export/plot rebuild it.
    assert json.loads((out / "config.json").read_text())["model"] == "digits_cnn"


def test_train_logs_scalars_for_tensorboard(run_dir):
    metrics = json.loads((run_dir.path / "metrics.json").read_text())
    scalars = read_scalars(run_dir.path / "tensorboard")
    steps = metrics["steps_per_epoch"]
    for tag in ("train/loss", "train/task_loss", "train/compression_loss"):
        assert [s for s, _ in scalars[tag]] == list(range(steps)), tag
    # Epoch 0 trains at sparsity_init; the compression loss of magnitude sparsity is 0.
    assert [v for _, v in scalars["train/level/magnitude_sparsity"]] == [0.0] * steps
    assert {v for _, v in scalars["train/compression_loss"]} == {0.0}
    np.testing.assert_allclose(
        [v for _, v in scalars["train/loss"]], [v for _, v in scalars["train/task_loss"]]
    )
    record = metrics["history"][0]
    assert scalars["test/accuracy"] == [(1, pytest.approx(record["test_accuracy"]))]
    assert scalars["epoch/train_loss"] == [(1, pytest.approx(record["train_loss"], rel=1e-6))]
    prefix = "compression/magnitude_sparsity"
    assert scalars[f"{prefix}/scheduled_sparsity_level"] == [(1, 0.5)]
    layers_level = scalars[f"{prefix}/model_statistics/sparsity_level_for_layers"]
    assert layers_level == [(1, pytest.approx(metrics["sparsity_level_for_layers"]))]
    assert scalars["compression/rate"] == [(1, pytest.approx(metrics["sparsity_level"]))]
    for layer in LAYERS:
        tag = f"{prefix}/model_statistics/sparsified_layers_summary/{layer}/sparsity_level"
        assert 0.0 < scalars[tag][0][1] < 1.0, tag
    try:  # TensorBoard's own reader, where it is installed, sees the same tags
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return
    accumulator = EventAccumulator(str(run_dir.path / "tensorboard"))
    accumulator.Reload()
    assert set(accumulator.Tags()["scalars"]) == set(scalars)


def test_stats_prints_the_latest_checkpoint(runs):
    proc = runs.result("stats")
    assert proc.returncode == 0, proc.stderr
    assert f"{runs.path}: checkpoint of epoch 1" in proc.stdout
    assert "Magnitude sparsity: layers" in proc.stdout
    assert all(layer in proc.stdout for layer in LAYERS)

    proc = runs.result("stats not a run")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "is not a digits run directory" in proc.stderr


def test_export_rebuilds_the_controller_and_writes_stablehlo(runs):
    proc = runs.result("export")
    out = runs.root / "digits.stablehlo"
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout and "checkpoint of epoch 1" in proc.stdout
    sidecar = json.loads((runs.root / "digits.stablehlo.json").read_text())
    assert sidecar["compression"]["algorithms"] == ["magnitude_sparsity"]
    # The artefact predicts what the trained, compressed model predicted.
    exported = jax.export.deserialize(bytearray(out.read_bytes()))
    data = digits.load_digits_data()
    accuracy = float(jnp.mean(jnp.argmax(exported.call(data.x_test), -1) == data.y_test))
    metrics = json.loads((runs.path / "metrics.json").read_text())
    assert accuracy == pytest.approx(metrics["test_accuracy"])

    bad = runs.result("export onnx")
    assert bad.returncode == 2 and "invalid choice: 'onnx'" in bad.stderr


def test_plot_run_dir_and_config(runs):
    proc = runs.result("plot run")
    assert proc.returncode == 0, proc.stderr
    folder = runs.root / "plots_of_run"
    written = sorted(p.name for p in folder.iterdir())
    assert written == ["history.png", "schedule.png", "sparsity.png"]
    assert all(_is_png(folder / n) for n in written)

    proc = runs.result("plot config")
    assert proc.returncode == 0, proc.stderr
    png = pathlib.Path("plots") / "digits_magnitude_sparsity" / "schedule.png"
    assert proc.stdout == f"wrote {png}\n" and _is_png(runs.root / png)

    proc = runs.result("plot dense")
    assert proc.returncode == 2
    assert proc.stderr.startswith("nncf-jax: error: ")
    assert "no algorithm with a schedule" in proc.stderr


# --- validate-config and errors ------------------------------------------------


def test_validate_config_ok_and_one_line_errors(runs):
    proc = runs.result("validate")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: 1 algorithm(s): magnitude_sparsity; accuracy-aware")

    proc = runs.result("validate bad")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("nncf-jax: error: compression.params.sparsity_target: ")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr

    # A scope that matches no layer of the model is found by building on it.
    proc = runs.result("validate scoped")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "Conv_9" in proc.stderr

    missing = runs.root / "missing.json"
    proc = runs.result("validate missing")
    assert proc.returncode == 2
    assert proc.stderr == (f"nncf-jax: error: config file {str(missing)!r} does not exist\n")

    proc = runs.result("validate debug")
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("nncf-jax: error: compression.params")


def test_help_reads_well(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("train", "stats", "export", "plot", "validate-config", "--debug", "examples:"):
        assert command in text
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--model MODULE:FACTORY" in text and "accuracy_aware_training" in text
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["frobnicate"])
    assert exit_info.value.code == 2


def test_a_failing_model_factory_is_an_unexpected_error(tmp_path, capsys, monkeypatch):
    (tmp_path / "broken_model.py").write_text("def make():\n    raise RuntimeError('boom')\n")
    config = _write(tmp_path / "c.json", MAGNITUDE)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["validate-config", str(config), "--model", "broken_model.py:make"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "nncf-jax: unexpected error: RuntimeError: boom; run with --debug for the traceback\n"
    )
    assert cli.main(["validate-config", str(config), "--model", "broken_model.py:nope"]) == 2
    assert "has no callable 'nope'" in capsys.readouterr().err


# --- the pieces: metrics log and plots --------------------------------------------


def _statistics(level: float):
    config = nj.NNCFConfig.from_dict(MAGNITUDE)
    model = digits.CNN()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    ctrl, _ = nj.create_compressed_model(model, variables, config, steps_per_epoch=11)
    ctrl.compression_rate = level
    return ctrl.statistics()


def test_metrics_log_writes_statistics_by_name(tmp_path):
    statistics = _statistics(0.3)
    flat = statistics_scalars(statistics)
    prefix = "compression/magnitude_sparsity"
    assert flat[f"{prefix}/model_statistics/sparsity_level_for_layers"] == pytest.approx(
        0.3, abs=1e-4
    )
    assert {t.rsplit("/", 3)[1] for t in flat if "/sparsified_layers_summary/" in t} == {
        "Conv_0",
        "Conv_1",
        "Dense_0",
        "Dense_1",
    }
    assert not any("weight_shape" in t for t in flat)  # shapes are not scalars
    with MetricsLog.create(tmp_path / "tb") as log:
        assert log.enabled and log.note is None
        log.statistics(statistics, step=3)
        log.series("train/loss", [1.0, 0.5, float("nan")], first_step=10)
    scalars = read_scalars(tmp_path / "tb")
    assert set(scalars) == {*flat, "train/loss"}
    assert scalars["train/loss"] == [(10, 1.0), (11, 0.5)]  # NaN is skipped


def test_metrics_log_without_tensorboardx_is_a_note(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    log = MetricsLog.create(tmp_path / "tb")
    assert not log.enabled and "pip install 'nncf-jax[tensorboard]'" in log.note
    log.scalar("x", 1.0, 0)
    log.close()
    assert not (tmp_path / "tb").exists()


def test_schedule_curve_is_the_schedule_in_force(tmp_path):
    config = json.loads((CONFIGS / "digits_magnitude_sparsity.json").read_text())
    params = config["compression"]["params"]
    (curve,) = plots.schedule_curves(config, epochs=25, steps_per_epoch=11)
    schedule = nj.polynomial_schedule(0.0, 0.5, params["sparsity_target_epoch"], power=2)
    expected = [float(schedule(e)) for e in range(params["sparsity_freeze_epoch"])]
    np.testing.assert_allclose(curve.epoch_levels[: len(expected)], expected, rtol=1e-6)
    # Frozen from epoch 20 on: the level stays at the last one applied.
    assert set(curve.epoch_levels[20:].tolist()) == {expected[-1]}
    assert not curve.per_step and curve.step_levels.shape == (25 * 11,)
    figure = plots.schedule_figure([curve])
    assert [len(ax.get_lines()) for ax in figure.axes] == [1]
    assert _is_png(plots.save_figure(figure, tmp_path / "schedule.png"))

    # Per step: a second panel over optimizer steps; two algorithms, two lines each.
    params["update_per_optimizer_step"] = True
    config["compression"] = [
        config["compression"],
        {**config["compression"], "algorithm": "rb_sparsity"},
    ]
    config["compression"][1]["params"] = {"schedule": "exponential", "sparsity_target": 0.3}
    curves = plots.schedule_curves(config, epochs=12, steps_per_epoch=11)
    assert [c.name for c in curves] == ["magnitude_sparsity", "rb_sparsity"]
    levels = curves[0].step_levels
    assert levels[0] == 0.0 and 0.0 < levels[1] < levels[2] < levels[11]
    figure = plots.schedule_figure(curves)
    assert [len(ax.get_lines()) for ax in figure.axes] == [2, 2]


def test_sparsity_bitwidth_and_history_figures(tmp_path):
    statistics = _statistics(0.4)
    figure = plots.sparsity_figure(statistics)
    (ax,) = figure.axes
    assert len(ax.patches) == len(LAYERS)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(LAYERS)
    assert plots.bitwidth_figure(statistics) is None  # no quantization statistics

    quantization = SimpleNamespace(layer_bitwidths={"Conv_0/kernel": 8, "Dense_0/kernel": 4})
    figure = plots.bitwidth_figure([("quantization", quantization)])
    assert [p.get_width() for p in figure.axes[0].patches] == [8.0, 4.0]

    history = [
        {
            "epoch": 1,
            "test_accuracy": 0.8,
            "train_loss": 1.0,
            "sparsity": {"m": {"sparsity_level_for_layers": 0.1}},
        },
        {
            "epoch": 2,
            "test_accuracy": 0.9,
            "train_loss": 0.5,
            "sparsity": {"m": {"sparsity_level_for_layers": 0.2}},
        },
    ]
    figure = plots.history_figure(history)
    lines = [len(ax.get_lines()) for ax in figure.axes]
    assert sorted(lines) == [1, 1, 1]  # accuracy, loss (twin axis), sparsity
    written = plots.write_plots(tmp_path, statistics=statistics, history=history)
    assert [p.name for p in written] == ["sparsity.png", "history.png"]
    assert all(_is_png(p) for p in written)


def test_plots_without_matplotlib_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(nj.errors.UsageError, match=r"pip install 'nncf-jax\[plot\]'"):
        plots.require_matplotlib()


def test_adaptive_rb_schedule_has_no_curve_known_in_advance():
    config = {"compression": {"algorithm": "rb_sparsity", "params": {"schedule": "adaptive"}}}
    assert plots.schedule_curves(config, epochs=5, steps_per_epoch=3) == []
