"""ctrl.transform: the functional path, jitted, against the NNCF facade path."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

import nncf_jax as nj


def _config(per_step: bool):
    return {
        "compression": {
            "algorithm": "magnitude_sparsity",
            "sparsity_init": 0.1,
            "params": {
                "sparsity_target": 0.6,
                "sparsity_target_epoch": 2,
                "sparsity_freeze_epoch": 3,
                "update_per_optimizer_step": per_step,
                "steps_per_epoch": 3,
            },
        }
    }


def _masks(cstate):
    return jax.tree.map(np.asarray, cstate.algorithms["magnitude_sparsity"].masks)


@pytest.mark.parametrize("per_step", [False, True])
def test_functional_and_facade_paths_give_identical_masks(
    cnn, train_step_factory, trees_equal, per_step
):
    model, variables0, x, y = cnn
    epochs, steps_per_epoch = 4, 3
    tx = optax.adam(3e-2)

    # Functional: DESIGN.md's step, the tick inside jit.
    ctrl, cstate = nj.create_compressed_model(model, variables0, _config(per_step))
    step = jax.jit(train_step_factory(ctrl, tx))
    variables, opt_state = variables0, tx.init(variables0["params"])
    functional = []
    for _ in range(epochs * steps_per_epoch):
        functional.append((_masks(cstate), int(cstate.step), int(cstate.epoch)))
        variables, opt_state, cstate = step(variables, opt_state, cstate, x, y)
    functional_params = variables["params"]

    # Facade: NNCF's loop, scheduler.epoch_step()/step() at the start of each epoch/iteration.
    fctrl, _ = nj.create_compressed_model(model, variables0, _config(per_step))

    @jax.jit
    def facade_step(variables, opt_state, cstate, x, y):
        def loss_fn(params):
            logits = fctrl.apply({**variables, "params": params}, cstate, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        params = variables["params"]
        updates, opt_state = tx.update(jax.grad(loss_fn)(params), opt_state, params)
        updates = fctrl.filter_updates(updates, cstate)
        return {**variables, "params": optax.apply_updates(params, updates)}, opt_state

    variables, opt_state = variables0, tx.init(variables0["params"])
    facade = []
    for _ in range(epochs):
        fctrl.scheduler.epoch_step()
        for _ in range(steps_per_epoch):
            fctrl.scheduler.step()
            facade.append(
                (_masks(fctrl.state), fctrl.scheduler.current_step, fctrl.scheduler.current_epoch)
            )
            variables, opt_state = facade_step(variables, opt_state, fctrl.state, x, y)
            fctrl.sync(variables)

    # Iteration 0 runs on the initial state in the functional path (counters -1).
    assert functional[0][1:] == (-1, -1)
    for i in range(1, len(facade)):
        assert functional[i][1:] == facade[i][1:], i
        trees_equal(functional[i][0], facade[i][0])
    trees_equal(functional[0][0], facade[0][0])
    # Same trajectory up to float rounding (two differently compiled programs).
    trees_equal(functional_params, variables["params"], rtol=1e-4, atol=1e-6)
    # The masks did change over the run, and froze at epoch 3.
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(functional[0][0]), jax.tree.leaves(functional[-1][0]), strict=True
        )
    )
    trees_equal(functional[-1][0], functional[-3][0])


def test_jitted_step_compiles_once_and_never_transfers(
    cnn, train_step_factory, make_magnitude_config
):
    model, variables, x, y = cnn
    ctrl, cstate = nj.create_compressed_model(
        model, variables, make_magnitude_config(sparsity_target_epoch=2), steps_per_epoch=2
    )
    tx = optax.adam(1e-3)
    opt_state = tx.init(variables["params"])
    step = jax.jit(train_step_factory(ctrl, tx))
    variables, opt_state, cstate = step(variables, opt_state, cstate, x, y)
    with jax.transfer_guard("disallow"):
        for _ in range(7):  # crosses epochs: refresh and no-refresh ticks
            variables, opt_state, cstate = step(variables, opt_state, cstate, x, y)
    assert step._cache_size() == 1
    assert int(cstate.step) == 8 and int(cstate.epoch) == 4
    leaves_dtypes = [leaf.dtype for leaf in jax.tree.leaves(cstate)]
    assert leaves_dtypes == [
        leaf.dtype for leaf in jax.tree.leaves(ctrl.init_state(variables["params"]))
    ]


def test_transform_init_update_jit_and_no_recompile(cnn, make_magnitude_config):
    model, variables, *_ = cnn
    params = variables["params"]
    ctrl, cstate = nj.create_compressed_model(
        model, variables, make_magnitude_config(), steps_per_epoch=2
    )
    init = jax.jit(ctrl.transform.init)
    update = jax.jit(ctrl.transform.update)
    state = init(params)
    jax.tree.map(np.testing.assert_array_equal, state, cstate)
    grads = jax.tree.map(np.ones_like, params)
    for _ in range(3):
        updates, state = update(grads, state, params)
    assert update._cache_size() == 1
    masks = state.algorithms["magnitude_sparsity"].masks
    np.testing.assert_array_equal(
        np.asarray(updates["Dense_0"]["kernel"]), np.asarray(masks["Dense_0"]["kernel"], np.float32)
    )


def test_chains_with_optax(cnn, make_magnitude_config):
    model, variables, x, _y = cnn
    ctrl, _ = nj.create_compressed_model(
        model, variables, make_magnitude_config(sparsity_target_epoch=0), steps_per_epoch=2
    )
    tx = optax.chain(optax.sgd(0.1), ctrl.transform)
    params = variables["params"]
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
        cstate = opt_state[1]
        grads = jax.grad(lambda p: ctrl.apply({"params": p}, cstate, x).sum())(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for _ in range(2):
        params, opt_state = step(params, opt_state)
    cstate = opt_state[1]
    assert isinstance(cstate, nj.CompressionState)
    assert float(cstate.algorithms["magnitude_sparsity"].level) == pytest.approx(0.5)


def test_transform_needs_steps_per_epoch(cnn, make_magnitude_config):
    model, variables, *_ = cnn
    ctrl, _ = nj.create_compressed_model(model, variables, make_magnitude_config())
    with pytest.raises(nj.errors.ConfigError, match="steps_per_epoch"):
        _ = ctrl.transform
    with pytest.raises(nj.errors.ConfigError, match="expected a positive integer"):
        nj.create_compressed_model(model, variables, make_magnitude_config(), steps_per_epoch=0)


def test_update_without_params_is_a_clear_error(cnn, make_magnitude_config):
    model, variables, *_ = cnn
    ctrl, cstate = nj.create_compressed_model(
        model, variables, make_magnitude_config(), steps_per_epoch=2
    )
    with pytest.raises(nj.errors.UsageError, match="needs params"):
        ctrl.transform.update(variables["params"], cstate)


def test_transform_needs_no_steps_per_epoch_when_nothing_follows_epochs():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(x)

    model = Net()
    variables = model.init(jax.random.key(0), np.ones((1, 3), np.float32))
    quant = {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 0}}}
    config = {"input_info": {"sample_size": [1, 3]}, "compression": quant}
    ctrl, cstate = nj.create_compressed_model(model, variables, config)
    params = variables["params"]
    zeros = jax.tree_util.tree_map(np.zeros_like, params)
    for _ in range(3):
        _, cstate = jax.jit(ctrl.transform.update)(zeros, cstate, params)
    assert (int(cstate.clock.step), int(cstate.clock.epoch)) == (3, 0)
    # An epoch-scheduled algorithm still asks for it.
    sparse = {
        "input_info": {"sample_size": [1, 3]},
        "compression": {"algorithm": "magnitude_sparsity"},
    }
    ctrl, _ = nj.create_compressed_model(model, variables, sparse)
    with pytest.raises(nj.errors.ConfigError, match="steps_per_epoch"):
        ctrl.transform  # noqa: B018
