"""Schedules: REFERENCE.md section 3 check values, as functions and through the NNCF facade."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

import nncf_jax as nj
from nncf_jax.core import schedules


def _facade_levels(cnn, params, epochs):
    model, variables, _, _ = cnn
    config = {
        "compression": {"algorithm": "magnitude_sparsity", "sparsity_init": 0.2, "params": params}
    }
    ctrl, _ = nj.create_compressed_model(model, variables, config)
    levels = []
    for _ in range(epochs):
        ctrl.scheduler.epoch_step()
        levels.append(ctrl.scheduler.current_sparsity_level)
    return levels


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {
                "schedule": "polynomial",
                "sparsity_target": 0.6,
                "sparsity_target_epoch": 2,
                "power": 1,
            },
            [0.2, 0.4, 0.6, 0.6, 0.6, 0.6],
        ),
        (
            {"schedule": "exponential", "sparsity_target": 0.6, "sparsity_target_epoch": 2},
            [0.2, 0.4343145, 0.6, 0.6, 0.6, 0.6],
        ),
        (
            {
                "schedule": "multistep",
                "multistep_steps": [2, 3, 4],
                "multistep_sparsity_levels": [0.2, 0.4, 0.5, 0.6],
            },
            [0.2, 0.2, 0.4, 0.5, 0.6, 0.6],
        ),
    ],
)
def test_sparsity_schedules_after_epoch_steps_match_nncf(cnn, params, expected):
    levels = _facade_levels(cnn, params, 6)
    np.testing.assert_allclose(levels, expected, rtol=1e-6)


def test_level_before_first_epoch_step_is_sparsity_init_whatever_the_schedule(cnn):
    model, variables, _, _ = cnn
    config = {
        "compression": {
            "algorithm": "magnitude_sparsity",
            "sparsity_init": 0.05,
            "params": {
                "schedule": "multistep",
                "multistep_steps": [1],
                "multistep_sparsity_levels": [0.3, 0.5],
            },
        }
    }
    ctrl, _ = nj.create_compressed_model(model, variables, config)
    assert ctrl.scheduler.current_sparsity_level == pytest.approx(0.05)
    assert ctrl.scheduler.current_epoch == -1 and ctrl.scheduler.current_step == -1


@pytest.mark.parametrize(
    ("concave", "expected"),
    [(False, [0.1, 13 / 90, 25 / 90, 0.5, 0.5]), (True, [0.1, 29 / 90, 41 / 90, 0.5, 0.5])],
)
def test_polynomial_power_two(concave, expected):
    f = schedules.polynomial_schedule(0.1, 0.5, 3, power=2, concave=concave)
    np.testing.assert_allclose([float(f(e)) for e in range(5)], expected, rtol=1e-6)
    # Same numbers under jit with a traced epoch.
    np.testing.assert_allclose([float(jax.jit(f)(e)) for e in range(5)], expected, rtol=1e-6)


def test_exponential_with_bias_pruning_schedule():
    f = schedules.exponential_with_bias_pruning_schedule(
        0.1, 0.7, num_init_steps=3, pruning_steps=5
    )
    expected = [0, 0, 0, 0.1, 0.6489741, 0.6956869, 0.6996617, 0.7, 0.7, 0.7]
    np.testing.assert_allclose([float(f(e)) for e in range(10)], expected, rtol=1e-6, atol=1e-7)


def test_exponential_and_baseline_pruning_schedules():
    f = schedules.exponential_pruning_schedule(0.1, 0.5, num_init_steps=2, pruning_steps=3)
    got = [float(f(e)) for e in range(6)]
    ratio = 0.5 / 0.9
    expected = [0, 0, 0.1, 1 - 0.9 * ratio**0.5, 0.5, 0.5]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    g = schedules.baseline_pruning_schedule(0.4, num_init_steps=2)
    assert [float(g(e)) for e in range(4)] == pytest.approx([0, 0, 0.4, 0.4])


def test_target_epoch_zero_gives_target():
    assert float(schedules.polynomial_schedule(0.1, 0.5, 0)(0)) == pytest.approx(0.5)
    assert float(schedules.exponential_sparsity_schedule(0.1, 0.5, 0)(3)) == pytest.approx(0.5)


def test_schedules_drive_optax_and_optax_schedules_are_compatible():
    # Our schedule as an optax learning-rate schedule: optax calls it with an int32 count.
    lr = schedules.polynomial_schedule(1e-3, 1e-4, 10, power=1, concave=False)
    tx = optax.sgd(lr)
    state = tx.init({"w": np.ones(2, np.float32)})
    updates, _ = jax.jit(tx.update)({"w": np.ones(2, np.float32)}, state)
    np.testing.assert_allclose(np.asarray(updates["w"]), -1e-3, rtol=1e-6)


def test_multistep_with_sparsity_target_warns(cnn):
    model, variables, _, _ = cnn
    config = {
        "compression": {
            "algorithm": "magnitude_sparsity",
            "params": {
                "schedule": "multistep",
                "sparsity_target": 0.9,
                "multistep_steps": [1],
                "multistep_sparsity_levels": [0.1, 0.3],
            },
        }
    }
    with pytest.warns(UserWarning, match="sparsity_target is ignored"):
        ctrl, _ = nj.create_compressed_model(model, variables, config)
    for _ in range(3):
        ctrl.scheduler.epoch_step()
    assert ctrl.scheduler.current_sparsity_level == pytest.approx(0.3)
    assert ctrl.compression_stage() == nj.CompressionStage.FULLY_COMPRESSED


def _per_step_levels(cnn, steps_per_epoch, epochs, freeze_epoch=100):
    model, variables, _, _ = cnn
    config = {
        "compression": {
            "algorithm": "magnitude_sparsity",
            "sparsity_init": 0.0,
            "params": {
                "sparsity_target": 0.4,
                "sparsity_target_epoch": 2,
                "power": 1,
                "concave": False,
                "update_per_optimizer_step": True,
                "steps_per_epoch": steps_per_epoch,
                "sparsity_freeze_epoch": freeze_epoch,
            },
        }
    }
    ctrl, _ = nj.create_compressed_model(model, variables, config)
    seen = []
    for _ in range(epochs):
        before = ctrl.scheduler.current_sparsity_level
        ctrl.scheduler.epoch_step()
        # In per-step mode epoch_step only advances the epoch.
        assert ctrl.scheduler.current_sparsity_level == before
        for _ in range(steps_per_epoch):
            ctrl.scheduler.step()
            seen.append(ctrl.scheduler.current_sparsity_level)
    return seen


def test_per_step_schedule_uses_fractional_epochs(cnn):
    levels = _per_step_levels(cnn, steps_per_epoch=4, epochs=3)
    # Iteration i of epoch e sits at e + i/4; linear ramp to 0.4 over 2 epochs.
    expected = [min(0.2 * (e + i / 4), 0.4) for e in range(3) for i in range(4)]
    np.testing.assert_allclose(levels, expected, rtol=1e-6, atol=1e-7)


def test_freeze_epoch_level_is_never_applied(cnn):
    levels = _per_step_levels(cnn, steps_per_epoch=2, epochs=3, freeze_epoch=1)
    # Epoch 0 ramps (0, 0.1); from epoch 1 on the level stays at the last one of epoch 0.
    np.testing.assert_allclose(levels, [0.0, 0.1, 0.1, 0.1, 0.1, 0.1], rtol=1e-6, atol=1e-7)


def test_per_step_without_steps_per_epoch_is_a_config_error(cnn):
    model, variables, _, _ = cnn
    config = {
        "compression": {
            "algorithm": "magnitude_sparsity",
            "params": {"update_per_optimizer_step": True},
        }
    }
    with pytest.raises(nj.errors.ConfigError, match=r"compression\.params\.steps_per_epoch"):
        nj.create_compressed_model(model, variables, config)
