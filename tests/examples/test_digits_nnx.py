"""The NNX digits example trains a compressed NNX model and writes it back."""

from __future__ import annotations

import pathlib

from nncf_jax.examples import digits_nnx

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def test_one_epoch_of_sparsity_and_int8_on_the_nnx_cnn():
    result = digits_nnx.run(str(CONFIGS / "digits_sparsity_int8.json"), epochs=1)
    # After one epoch both are far above chance (10%); the NNX module holds
    # the stripped weights but has no activation quantizers, so it differs a
    # little from the compressed forward (30 epochs: 98.06% both).
    assert result.test_accuracy > 0.5 and result.nnx_test_accuracy > 0.5
    assert "Magnitude sparsity" in result.statistics and "Quantization" in result.statistics
