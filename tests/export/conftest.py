"""Shared by the export tests: a magnitude-sparse Flax CNN and example batches."""

from __future__ import annotations

import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nncf_jax as nj


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(10)(x)


@pytest.fixture
def sparse_model():
    """``(ctrl, variables)``: the CNN at 50% magnitude sparsity, set and frozen."""
    model = CNN()
    variables = model.init(jax.random.key(0), jnp.ones((1, 8, 8, 1)))
    config = {
        "input_info": {"sample_size": [1, 8, 8, 1]},
        "compression": {"algorithm": "magnitude_sparsity"},
    }
    ctrl, _ = nj.create_compressed_model(model, variables, config)
    ctrl.compression_rate = 0.5
    return ctrl, variables


@pytest.fixture
def batches():
    """Random images at batch sizes 1 and 7."""
    return {
        "b1": np.asarray(jax.random.normal(jax.random.key(1), (1, 8, 8, 1))),
        "b7": np.asarray(jax.random.normal(jax.random.key(2), (7, 8, 8, 1))),
    }


@pytest.fixture
def load_in_fresh_process(tmp_path):
    """Runs a loader script on an artefact in a new Python process; returns its outputs.

    The loader gets ``ARTEFACT INPUTS.npz OUT.npz *extra`` and writes one
    output per input name to ``OUT.npz``.
    """

    def run(loader: str, artefact, inputs, *extra: str, timeout: int = 300):
        np.savez(tmp_path / "inputs.npz", **inputs)
        script = tmp_path / "load.py"
        script.write_text(loader)
        args = [str(artefact), str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz"), *extra]
        result = subprocess.run(
            [sys.executable, str(script), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return np.load(tmp_path / "out.npz")

    return run
