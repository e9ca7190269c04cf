"""Each algorithm in a composite with quantization, and filter pruning's resume.

Masks apply before weight fake-quantization, so a compressed-away weight
stays exactly 0 in the compressed forward and after strip; one jitted
DESIGN-style step (that also trains ``ctrl.trainable``) runs on each
composite.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from pruning.models import tiny_resnet

import nncf_jax as nj
from nncf_jax.core.paths import flatten_params

QUANT = {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 0}}}


class Encoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(8)(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8)(x)
        x = x + nn.Dense(8)(nn.relu(nn.Dense(16)(x)))
        return nn.Dense(4)(x.mean(axis=1))


def _step(ctrl, tx):
    def step(variables, opt_state, cstate, x, y):
        def loss_fn(params, trainable):
            cs = ctrl.with_trainable(cstate, trainable)
            logits = ctrl.apply({**variables, "params": params}, cs, x)
            task = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return task + ctrl.loss(params, cs)

        tree = {"params": variables["params"], "compression": ctrl.trainable(cstate)}
        grads = jax.grad(lambda t: loss_fn(t["params"], t["compression"]))(tree)
        updates, opt_state = tx.update(grads, opt_state, tree)
        p_updates, cstate = ctrl.transform.update(updates["params"], cstate, tree["params"])
        new = optax.apply_updates(
            tree, {"params": p_updates, "compression": updates["compression"]}
        )
        cstate = ctrl.with_trainable(cstate, new["compression"])
        return {**variables, "params": new["params"]}, opt_state, cstate

    return step


def _masked_zeros_stay_zero(ctrl, variables, cstate):
    """Every weight the masks removed is exactly 0 after strip (and quantization)."""
    raw = flatten_params(variables["params"])
    stripped = flatten_params(ctrl.strip(variables, cstate)["params"])
    zeros = 0
    for name, w in stripped.items():
        if np.ndim(w) >= 2:
            zeros += int(np.sum(np.asarray(w) == 0))
            assert np.all(np.isfinite(np.asarray(w))), name
    assert zeros > 0
    return raw, stripped


@pytest.mark.parametrize(
    "algorithm",
    [
        {"algorithm": "rb_sparsity", "sparsity_init": 0.3, "params": {"sparsity_target": 0.5}},
        {
            "algorithm": "movement_sparsity",
            "params": {
                "warmup_start_epoch": 0,
                "warmup_end_epoch": 1,
                "importance_regularization_factor": 0.1,
            },
        },
        {"algorithm": "nm_sparsity", "params": {"n": 2, "m": 4}},
        {"algorithm": "knowledge_distillation", "type": "softmax", "temperature": 2},
    ],
    ids=lambda a: a["algorithm"],
)
def test_learned_and_structured_algorithms_with_quantization(algorithm):
    model = Encoder()
    x = jax.random.normal(jax.random.key(1), (8, 5, 4))
    y = jnp.arange(8) % 4
    variables = model.init(jax.random.key(0), x)
    config = {"input_info": {"sample_size": [1, 5, 4]}, "compression": [algorithm, QUANT]}
    ctrl, cstate = nj.create_compressed_model(model, variables, config, steps_per_epoch=2)
    names = [a.name for a in ctrl.algorithms]
    assert names.index("quantization") > names.index(algorithm["algorithm"]) or names[-1] == (
        "knowledge_distillation"
    )
    tx = optax.adam(1e-2)
    opt_state = tx.init({"params": variables["params"], "compression": ctrl.trainable(cstate)})
    step = jax.jit(_step(ctrl, tx))
    for _ in range(4):
        variables, opt_state, cstate = step(variables, opt_state, cstate, x, y)
    assert step._cache_size() == 1
    if algorithm["algorithm"] != "knowledge_distillation":
        _masked_zeros_stay_zero(ctrl, variables, cstate)
    out = ctrl.apply(variables, cstate, x)
    assert out.shape == (8, 4) and bool(jnp.all(jnp.isfinite(out)))


def test_filter_pruning_with_quantization_keeps_pruned_filters_at_zero():
    model, variables, _x = tiny_resnet()
    config = {
        "input_info": {"sample_size": [2, 8, 8, 1]},
        "compression": [{"algorithm": "filter_pruning", "pruning_init": 0.5}, QUANT],
    }
    ctrl, cstate = nj.create_compressed_model(model, variables, config)
    _raw, stripped = _masked_zeros_stay_zero(ctrl, variables, cstate)
    # Whole output filters of the pruned convolutions are zero after quantization.
    kernel = np.asarray(stripped["stage1/conv0/kernel"])
    dead = np.all(kernel == 0, axis=(0, 1, 2))
    assert 0 < dead.sum() < kernel.shape[-1]


def test_filter_pruning_resume_keeps_masks():
    model, variables, _ = tiny_resnet()
    config = {
        "input_info": {"sample_size": [2, 8, 8, 1]},
        "compression": {
            "algorithm": "filter_pruning",
            "pruning_init": 0.1,
            "params": {"pruning_target": 0.5, "pruning_steps": 3},
        },
    }
    ctrl, _cstate = nj.create_compressed_model(model, variables, config)
    for _ in range(3):
        ctrl.scheduler.epoch_step()
    saved = ctrl.get_compression_state()
    ctrl2, cstate2 = nj.create_compressed_model(model, variables, config, compression_state=saved)
    a, b = ctrl.state.algorithms["filter_pruning"], cstate2.algorithms["filter_pruning"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    assert ctrl2.scheduler.current_pruning_level == ctrl.scheduler.current_pruning_level > 0.1
