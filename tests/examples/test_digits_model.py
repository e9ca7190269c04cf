"""The digits job with other models (`digits_model`) and its callbacks (`DigitsTrainer`)."""

from __future__ import annotations

import json
import pathlib

import flax.linen as nn
import pytest

import nncf_jax as nj
from nncf_jax.errors import ConfigError, UsageError
from nncf_jax.examples import digits
from nncf_jax.examples.digits_model import MLP, resolve_model
from nncf_jax.examples.digits_restore import init_variables, reshape_images, restore_run
from nncf_jax.examples.digits_trainer import DigitsTrainer
from nncf_jax.examples.train_settings import sample_shape

FLAT_MODEL = """
import flax.linen as nn

class Flat(nn.Module):
    @nn.compact
    def __call__(self, x):  # (N, 64) -> (N, 10)
        return nn.Dense(10)(x)

def make():
    return Flat()

def three():
    return 3
"""


def _write_config(path: pathlib.Path, **keys) -> pathlib.Path:
    config = {
        "epochs": 1,
        "compression": {"algorithm": "magnitude_sparsity", "params": {"sparsity_target_epoch": 1}},
        **keys,
    }
    path.write_text(json.dumps(config))
    return path


def test_model_specs(tmp_path):
    for spec in (None, "digits_cnn", "resnet50"):  # a name without ':' is the digits CNN
        resolved = resolve_model(spec)
        assert isinstance(resolved.model, digits.CNN) and resolved.is_default
        assert resolved.spec == "digits_cnn"
    resolved = resolve_model("nncf_jax.examples.digits_model:mlp")
    assert isinstance(resolved.model, MLP) and not resolved.is_default
    (tmp_path / "flat.py").write_text(FLAT_MODEL)
    resolved = resolve_model(f"{tmp_path / 'flat.py'}:make")
    assert type(resolved.model).__name__ == "Flat"
    assert resolved.spec == f"{(tmp_path / 'flat.py').resolve()}:make"
    with pytest.raises(UsageError, match=r"cannot import module 'no_such_module'"):
        resolve_model("no_such_module:make")
    with pytest.raises(UsageError, match=r"has no callable 'nope'"):
        resolve_model("nncf_jax.examples.digits_model:nope")
    with pytest.raises(UsageError, match=r"three\(\) must return a flax.linen.Module, got int"):
        resolve_model(f"{tmp_path / 'flat.py'}:three")
    with pytest.raises(UsageError, match=r"no Python file"):
        resolve_model(f"{tmp_path / 'missing.py'}:make")


def test_sample_shape_and_model_output_are_checked():
    assert sample_shape({}) == (1, 8, 8, 1)
    assert sample_shape({"input_info": {"sample_size": [1, 64]}}, digits_cnn=False) == (1, 64)
    with pytest.raises(ConfigError, match=r"^input_info.sample_size: the digits images are"):
        sample_shape({"input_info": {"sample_size": [1, 64]}})
    with pytest.raises(ConfigError, match=r"64 values per image; got \[1, 63\]"):
        sample_shape({"input_info": {"sample_size": [1, 63]}}, digits_cnn=False)

    class ThreeClasses(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(x.reshape((x.shape[0], -1)))

    with pytest.raises(UsageError, match=r"to \(N, 10\) logits; it returned \(1, 3\)"):
        init_variables(ThreeClasses(), 0, (1, 8, 8, 1))


def test_factory_model_trains_and_is_read_back(tmp_path, monkeypatch):
    (tmp_path / "flat.py").write_text(FLAT_MODEL)
    config = _write_config(
        tmp_path / "flat.json",
        input_info={"sample_size": [1, 64]},
        optimizer={"type": "adam", "base_lr": 0.05},
    )
    monkeypatch.chdir(tmp_path)  # the spec is relative; the run stores it absolute
    metrics = digits.run(
        config, model="flat.py:make", out_dir=tmp_path / "run", quiet=True, plots=False
    )
    assert metrics["model"] == f"{tmp_path / 'flat.py'}:make"
    assert metrics["stripped_matches"] and metrics["test_accuracy"] > 0.5
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"] == metrics["model"]
    monkeypatch.chdir(pathlib.Path(__file__).parent)
    run = restore_run(tmp_path / "run")
    assert type(run.model.model).__name__ == "Flat" and run.restored.step == 1
    stats = run.ctrl.statistics().magnitude_sparsity.model_statistics
    assert [layer.name for layer in stats.sparsified_layers_summary] == ["Dense_0/kernel"]
    assert stats.sparsity_level_for_layers == pytest.approx(metrics["sparsity_level_for_layers"])


def test_trainer_callbacks(tmp_path):
    config = nj.NNCFConfig.from_json(_write_config(tmp_path / "c.json"))
    settings = digits.TrainSettings.from_config(config)
    data = reshape_images(digits.load_digits_data(), (1, 8, 8, 1))
    model = MLP()
    variables = init_variables(model, 0, (1, 8, 8, 1))
    ctrl, cstate = nj.create_compressed_model(model, variables, config, steps_per_epoch=11)
    trainer = DigitsTrainer(model, ctrl, settings, data, seed=0)
    state = trainer.init_state(variables, cstate)
    assert set(state) == {"variables", "opt_state", "cstate"}
    before = trainer.validate(state)
    assert before == trainer.validate_uncompressed(state)  # level 0: no weight masked yet
    state = trainer.train_epoch(state, 0)
    assert trainer.steps_trained == trainer.global_step == 11
    assert int(state["cstate"].step) == 11 and trainer.last.epoch == 0
    assert trainer.validate(state) > before
    # A learning-rate scale is a fresh optimizer state and one more compiled step.
    compiled = trainer.compile_seconds
    state = trainer.configure_optimizers(state, 0.5)
    assert trainer.compile_seconds > compiled
    assert int(state["opt_state"][0].count) == 0
    state = trainer.train_epoch(state, 1)
    assert trainer.global_step == 22
    ctrl.sync(state["variables"], state["cstate"])
    assert ctrl.statistics().magnitude_sparsity.scheduled_sparsity_level == 0.5
