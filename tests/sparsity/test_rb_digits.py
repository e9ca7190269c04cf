"""The digits trainer with RB sparsity: logits trained by the same optimizer, resumable."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import SmallCNN

import nncf_jax as nj
from nncf_jax.examples.digits_data import DigitsData
from nncf_jax.examples.digits_trainer import (
    DigitsTrainer,
    init_optimizer_state,
    trained_compression,
)
from nncf_jax.examples.train_settings import TrainSettings
from nncf_jax.sparsity.rb import RB_INITIAL_LOGIT

CONFIG = {
    "input_info": {"sample_size": [1, 8, 8, 1]},
    "compression": [
        {
            "algorithm": "rb_sparsity",
            "compression_lr_multiplier": 10,
            "params": {"sparsity_target": 0.5, "sparsity_target_epoch": 2},
        },
        {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 0}}},
    ],
}


@pytest.fixture
def setup():
    rng = np.random.default_rng(0)
    data = DigitsData(
        rng.random((64, 8, 8, 1), np.float32),
        rng.integers(0, 10, 64).astype(np.int32),
        rng.random((32, 8, 8, 1), np.float32),
        rng.integers(0, 10, 32).astype(np.int32),
    )
    model = SmallCNN()
    variables = model.init(jax.random.key(0), data.x_train[:1])
    settings = TrainSettings(epochs=2, batch_size=16, optimizer="adam", lr=1e-3, weight_decay=0.0)
    ctrl, cstate = nj.create_compressed_model(model, variables, CONFIG, steps_per_epoch=4)
    return model, variables, ctrl, cstate, settings, data


def test_trainer_trains_the_logits_with_the_params_and_resumes_exactly(setup, trees_equal):
    model, variables, ctrl, cstate, settings, data = setup
    # Only RB's logits are trained; quantizer ranges stay as initialised.
    assert list(trained_compression(ctrl, cstate)) == ["rb_sparsity"]
    tx = settings.make_optimizer()
    trees_equal(
        init_optimizer_state(tx, variables["params"], ctrl, cstate),
        tx.init({"params": variables["params"], "compression": trained_compression(ctrl, cstate)}),
    )

    trainer = DigitsTrainer(model, ctrl, settings, data, seed=0)
    state = trainer.init_state(variables, cstate)
    state = trainer.train_epoch(state, 0)
    after_one = state
    state = trainer.train_epoch(state, 1)
    trainer.evaluate(state)  # deterministic masks
    rb = state["cstate"].algorithms["rb_sparsity"]
    logits = np.asarray(rb.logits["Dense_0"]["kernel"])
    # Pushed down by the loss in epoch 1 (level 0.29) at 10x the learning rate:
    # Adam moves a logit by up to 1e-2 per step, so more than 8 steps at 1e-3 could.
    moved = RB_INITIAL_LOGIT - float(logits.mean())
    assert 0.01 < moved < 0.08
    q_before = ctrl.trainable(cstate)["quantization"]
    q_after = ctrl.trainable(state["cstate"])["quantization"]
    trees_equal(q_after, q_before)
    assert int(state["cstate"].step) == 8

    # The second epoch again from the state after the first: the same bits.
    again = DigitsTrainer(model, ctrl, settings, data, seed=0)
    again.init_state(variables, cstate)
    again.skip_epochs(1)
    trees_equal(again.train_epoch(after_one, 1), state)
