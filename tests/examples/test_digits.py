"""Tests of the digits job (`nncf_jax.examples.digits`) and the ``nncf-jax`` CLI."""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import nncf_jax as nj
from nncf_jax import cli
from nncf_jax.errors import ConfigError, UsageError
from nncf_jax.examples import digits

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def _write_config(path: pathlib.Path, compression, **training) -> pathlib.Path:
    config = {
        "input_info": {"sample_size": [1, 8, 8, 1]},
        "epochs": 2,
        "batch_size": 128,
        "optimizer": {"type": "adam", "base_lr": 0.002},
        "compression": compression,
        **training,
    }
    path.write_text(json.dumps(config))
    return path


MAGNITUDE = {
    "algorithm": "magnitude_sparsity",
    "params": {
        "schedule": "polynomial",
        "sparsity_target": 0.5,
        "sparsity_target_epoch": 1,
        "sparsity_freeze_epoch": 2,
    },
}


def _restore(run_dir: pathlib.Path, config_path: pathlib.Path):
    """The latest checkpoint of a run, through the public API only."""
    config = nj.NNCFConfig.from_json(config_path)
    settings = digits.TrainSettings.from_config(config)
    model = digits.CNN()
    variables = model.init(jax.random.key(1), jnp.zeros((1, 8, 8, 1)))
    steps = len(digits.load_digits_data().x_train) // settings.batch_size
    ctrl, cstate = nj.create_compressed_model(model, variables, config, steps_per_epoch=steps)
    opt_state = settings.make_optimizer().init(variables["params"])
    with nj.checkpoint.CheckpointManager(run_dir / "checkpoints") as manager:
        steps_saved = manager.all_steps()
        restored = manager.restore(
            variables=variables, opt_state=opt_state, cstate=cstate, ctrl=ctrl
        )
    return ctrl, restored, steps_saved


def _zero_fraction(params) -> float:
    kernels = [np.asarray(leaf) for leaf in jax.tree.leaves(params) if np.ndim(leaf) >= 2]
    return sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory):
    """Two epochs of 50% magnitude sparsity (level 0.5 from epoch 1 on)."""
    root = tmp_path_factory.mktemp("sparse")
    config = _write_config(root / "magnitude.json", MAGNITUDE)
    return config, root / "run"


@pytest.fixture(scope="module")
def sparse_output(sparse_run):
    """``(metrics, stdout)`` of the two-epoch sparse run."""
    config, out = sparse_run
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        metrics = digits.run(config, out_dir=out, seed=0)
    return metrics, printed.getvalue()


@pytest.fixture(scope="module")
def sparse_metrics(sparse_output):
    return sparse_output[0]


def test_data_split_is_fixed_and_scaled():
    a, b = digits.load_digits_data(), digits.load_digits_data()
    assert a.x_train.shape == (1437, 8, 8, 1) and a.x_test.shape == (360, 8, 8, 1)
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int32
    assert 0.0 == a.x_train.min() and a.x_train.max() == 1.0
    np.testing.assert_array_equal(a.y_test, b.y_test)
    # Stratified: every class has 36 or 37 test images.
    assert set(np.bincount(a.y_test, minlength=10)) <= {35, 36, 37}


def test_missing_sklearn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(UsageError, match=r"pip install 'nncf-jax\[examples\]'"):
        digits.load_digits_data()


def test_training_keys_and_overrides():
    config = {"epochs": 7, "batch_size": 32, "optimizer": {"type": "Adam", "base_lr": 0.01}}
    settings = digits.TrainSettings.from_config(config)
    assert (settings.epochs, settings.batch_size, settings.optimizer, settings.lr) == (
        7,
        32,
        "adam",
        0.01,
    )
    settings = digits.TrainSettings.from_config(config, epochs=3, batch_size=64, lr=0.5)
    assert (settings.epochs, settings.batch_size, settings.lr) == (3, 64, 0.5)
    assert digits.TrainSettings.from_config({}).to_config() == {
        "epochs": 30,
        "batch_size": 128,
        "optimizer": {"type": "adam", "base_lr": 0.001},
    }
    with pytest.raises(ConfigError, match=r"^epochs: expected a positive integer, got 0"):
        digits.TrainSettings.from_config({"epochs": 0})
    with pytest.raises(ConfigError, match=r"^optimizer\.type: expected one of 'adam'"):
        digits.TrainSettings.from_config({"optimizer": {"type": "lamb"}})
    with pytest.raises(ConfigError, match=r"^optimizer\.schedule_type: the digits job does not"):
        digits.TrainSettings.from_config({"optimizer": {"schedule_type": "multistep"}})
    with pytest.raises(UsageError, match=r"^lr: expected a finite number > 0"):
        digits.TrainSettings.from_config({}, lr=-1.0)


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("digits_*.json")))
def test_shipped_configs_are_valid(name):
    config = nj.NNCFConfig.from_json(CONFIGS / name)
    digits.TrainSettings.from_config(config)
    # 64 pixels per image: the CNNs take 8x8x1, the Transformer 8 tokens of 8.
    sample = config["input_info"]["sample_size"]
    assert sample[0] == 1 and int(np.prod(sample[1:])) == 64
    assert sample == [1, 8, 8, 1] or ":" in config.get("model", "")


def test_run_trains_checkpoints_and_strips(sparse_run, sparse_output):
    config, out = sparse_run
    metrics, printed = sparse_output
    # Per-epoch lines, statistics tables and the final summary table.
    assert "epoch 1/2" in printed and "epoch 2/2" in printed
    assert printed.count("Magnitude sparsity: model") == 2
    assert "Test accuracy, stripped model" in printed

    assert metrics["algorithms"] == ["magnitude_sparsity"]
    assert (metrics["epochs"], metrics["steps_per_epoch"]) == (2, 11)
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert len(metrics["history"]) == 2
    # Level 0.5 from epoch 1 on; the global threshold hits it exactly here.
    assert metrics["sparsity_level_for_layers"] == pytest.approx(0.5, abs=1e-4)
    assert metrics["sparsity"]["magnitude_sparsity"]["scheduled_sparsity_level"] == 0.5
    assert 0.0 < metrics["sparsity_level"] < metrics["sparsity_level_for_layers"]
    assert metrics["test_accuracy"] > 0.6  # two epochs of a 10-class problem
    assert metrics["stripped_matches"] and metrics["stripped_max_abs_logit_diff"] == 0.0
    assert metrics["stripped_test_accuracy"] == metrics["test_accuracy"]
    assert metrics["compile_seconds"] > 0 and metrics["train_seconds"] > 0

    # Orbax checkpoints of both epochs, with the compression state inside.
    ctrl, restored, saved = _restore(out, config)
    assert saved == [1, 2] and restored.step == 2
    stats = ctrl.statistics().magnitude_sparsity
    assert stats.model_statistics.sparsity_level_for_layers == pytest.approx(
        metrics["sparsity_level_for_layers"]
    )
    assert set(restored.compression_state["builder_state"]) == {"magnitude_sparsity"}

    # The stripped variables run in the plain model, without nncf_jax.
    model = digits.CNN()
    template = model.init(jax.random.key(2), jnp.zeros((1, 8, 8, 1)))
    with ocp.StandardCheckpointer() as checkpointer:
        stripped = checkpointer.restore(out / "stripped", template)
    data = digits.load_digits_data()
    logits = model.apply(stripped, data.x_test)
    accuracy = float(jnp.mean(jnp.argmax(logits, -1) == data.y_test))
    assert accuracy == pytest.approx(metrics["stripped_test_accuracy"])
    assert _zero_fraction(stripped["params"]) == pytest.approx(0.5, abs=1e-4)

    # The stored config reproduces the run's training keys.
    stored = json.loads((out / "config.json").read_text())
    assert stored["epochs"] == 2 and stored["compression"] == MAGNITUDE


def test_const_sparsity_keeps_the_zeros_of_init_from(sparse_run, sparse_metrics, tmp_path):
    _, sparse_out = sparse_run
    config = _write_config(tmp_path / "const.json", {"algorithm": "const_sparsity"})
    metrics = digits.run(
        config, out_dir=tmp_path / "const", epochs=1, init_from=sparse_out, quiet=True
    )
    assert metrics["sparsity_level_for_layers"] == pytest.approx(
        sparse_metrics["sparsity_level_for_layers"]
    )
    assert metrics["stripped_matches"]
    epoch, text = digits.latest_statistics(tmp_path / "const")
    assert epoch == 1 and "Const sparsity: model" in text


def test_dense_config_is_the_float_baseline(tmp_path, capsys):
    config = _write_config(tmp_path / "dense.json", [])
    metrics = digits.run(config, out_dir=tmp_path / "dense", epochs=1)
    printed = capsys.readouterr().out
    assert "epoch 1/1" in printed and "sparsity" not in printed.lower()
    assert metrics["algorithms"] == [] and metrics["sparsity"] == {}
    assert metrics["float_test_accuracy"] == metrics["test_accuracy"]
    assert metrics["stripped_matches"]


def test_run_refuses_to_overwrite_unless_asked(sparse_run, sparse_metrics):
    config, out = sparse_run
    with pytest.raises(UsageError, match="already holds a run"):
        digits.run(config, out_dir=out, epochs=1, quiet=True)


def test_cli_train_stats_and_errors(tmp_path, capsys):
    config = _write_config(tmp_path / "magnitude.json", MAGNITUDE)
    out = tmp_path / "cli"
    assert cli.main(["train", str(config), "--epochs", "1", "--out", str(out), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert (
        "Magnitude sparsity: layers" in printed and "Test accuracy, compressed forward" in printed
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["epochs"], metrics["seed"]) == (1, 3)

    assert cli.main(["stats", str(out / "checkpoints")]) == 0
    printed = capsys.readouterr().out
    assert "checkpoint of epoch 1" in printed and "Magnitude sparsity: model" in printed

    # User mistakes: exit status 2 and one clean line on stderr, no traceback.
    assert cli.main(["train", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nncf-jax: error: ") and "already holds a run" in err
    assert err.count("\n") == 1

    bad = _write_config(
        tmp_path / "bad.json",
        {"algorithm": "magnitude_sparsity", "params": {"sparsity_target": 1.2}},
    )
    assert cli.main(["train", str(bad), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nncf-jax: error: compression.params.sparsity_target")
    assert err.count("\n") == 1 and "Traceback" not in err

    assert cli.main(["stats", str(tmp_path)]) == 2
    assert "is not a digits run directory" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train"])
    assert exit_info.value.code == 2


def test_script_is_the_train_command(tmp_path):
    config = _write_config(tmp_path / "dense.json", [])
    script = CONFIGS.parent / "scripts" / "train_digits.py"
    args = [str(config), "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet"]
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 1
    missing = str(tmp_path / "missing.json")
    proc = subprocess.run(
        [sys.executable, str(script), missing], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"nncf-jax: error: config file {missing!r} does not exist\n"


@pytest.mark.slow
def test_magnitude_sparsity_reaches_95_percent(tmp_path):
    config = CONFIGS / "digits_magnitude_sparsity.json"
    metrics = digits.run(config, out_dir=tmp_path / "run", quiet=True)
    assert metrics["test_accuracy"] >= 0.95
    assert metrics["stripped_test_accuracy"] == metrics["test_accuracy"]
    ctrl, restored, _ = _restore(tmp_path / "run", config)
    assert restored.step == metrics["epochs"]
    stats = ctrl.statistics().magnitude_sparsity.model_statistics
    assert stats.sparsity_level_for_layers >= 0.49
    assert metrics["total_seconds"] < 120
