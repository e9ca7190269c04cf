"""init_data read by several builders: a generator is read once and replayed."""

from __future__ import annotations

import jax
import numpy as np
from pruning.models import tiny_resnet

import nncf_jax as nj
from nncf_jax.core.init_data import ReplayableBatches, example_call


def test_replayable_batches_read_lazily_and_replay():
    pulled = []

    def source():
        for i in range(3):
            pulled.append(i)
            yield i

    batches = ReplayableBatches(source())
    assert next(iter(batches)) == 0 and pulled == [0]
    assert list(batches) == [0, 1, 2] and list(batches) == [0, 1, 2]
    assert pulled == [0, 1, 2]
    assert example_call(batches, None) == ((0,), {})
    assert example_call(None, None) is None


def test_a_generator_serves_every_builder():
    """filter_pruning traces the model on the first item, quantization then
    calibrates on all of them: from a generator as from a list."""
    model, variables, _ = tiny_resnet()
    x = np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 1)).astype(np.float32)
    quant = {"algorithm": "quantization", "initializer": {"range": {"type": "min_max"}}}
    config = {"compression": [{"algorithm": "filter_pruning", "pruning_init": 0.5}, quant]}
    from_list = nj.create_compressed_model(model, variables, config, init_data=[x[:4], x[4:]])[1]
    from_gen = nj.create_compressed_model(
        model, variables, config, init_data=(b for b in (x[:4], x[4:]))
    )[1]
    jax.tree_util.tree_map(np.testing.assert_array_equal, from_gen.algorithms, from_list.algorithms)
