"""RB sparsity through the controller: REFERENCE.md sections 3-4 numbers, masks, keys, resume."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nncf_jax as nj
from nncf_jax.core.stage import CompressionStage
from nncf_jax.sparsity.rb import RB_INITIAL_LOGIT
from nncf_jax.sparsity.rb_algorithm import eval_state, train_state
from nncf_jax.sparsity.schedule import adaptive_sparsity_level

TARGETS = ["Conv_0/kernel", "Conv_1/kernel", "Dense_0/kernel", "Dense_1/kernel"]


def rb_config(sparsity_init=0.0, **params):
    return {
        "input_info": {"sample_size": [1, 8, 8, 1]},
        "compression": {
            "algorithm": "rb_sparsity",
            "sparsity_init": sparsity_init,
            "params": params,
        },
    }


def _xent(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_rb_step(ctrl, tx, *, tick=True):
    """DESIGN.md's step, training the logits too (``ctrl.trainable``); one optimizer for both."""

    def step(variables, opt_state, cstate, x, y):
        def loss_fn(params, trainable):
            cs = ctrl.with_trainable(cstate, trainable)
            return _xent(ctrl.apply({**variables, "params": params}, cs, x), y) + ctrl.loss(
                params, cs
            )

        params, trainable = variables["params"], ctrl.trainable(cstate)
        grads, t_grads = jax.grad(loss_fn, argnums=(0, 1))(params, trainable)
        tree = {"params": params, "compression": trainable}
        updates, opt_state = tx.update({"params": grads, "compression": t_grads}, opt_state, tree)
        cstate = ctrl.with_trainable(cstate, optax.apply_updates(trainable, updates["compression"]))
        p_updates = updates["params"]
        if tick:
            p_updates, cstate = ctrl.transform.update(p_updates, cstate, params)
        return {**variables, "params": optax.apply_updates(params, p_updates)}, opt_state, cstate

    return step


def _opt_init(tx, ctrl, variables, cstate):
    return tx.init({"params": variables["params"], "compression": ctrl.trainable(cstate)})


def _rb(cstate):
    return cstate.algorithms["rb_sparsity"]


def _set_logits(ctrl, cstate, fn):
    """``cstate`` with the logits replaced by ``fn(name, logits)``."""
    trainable = ctrl.trainable(cstate)
    flat = nj.core.paths.flatten_params(trainable["rb_sparsity"])
    new = {n: jnp.asarray(fn(n, v), jnp.float32) for n, v in flat.items()}
    return ctrl.with_trainable(
        cstate, {**trainable, "rb_sparsity": nj.core.paths.unflatten_params(new)}
    )


# --- REFERENCE.md section 4: the loss ---------------------------------------


@pytest.mark.parametrize(("level", "loss"), [(0.2, 16.0), (0.4, 64.0), (0.6, 144.0)])
@pytest.mark.parametrize("jit", [False, True])
def test_reference_loss_values_through_the_controller(cnn, level, loss, jit):
    model, variables, *_ = cnn
    params = variables["params"]
    # The level before the first epoch_step is sparsity_init; all initial masks are 1.
    ctrl, cstate = nj.create_compressed_model(model, variables, rb_config(sparsity_init=level))
    fn = jax.jit(ctrl.loss) if jit else ctrl.loss
    assert float(fn(params, cstate)) == pytest.approx(loss, rel=1e-5)
    # Set by hand through the facade: the same number from ctrl.loss().
    ctrl, _ = nj.create_compressed_model(model, variables, rb_config())
    assert float(ctrl.loss()) == 0.0
    ctrl.compression_rate = level
    assert float(ctrl.loss()) == pytest.approx(loss, rel=1e-5)
    # Local mode: one term per weight tensor, four tensors.
    ctrl, cstate = nj.create_compressed_model(
        model, variables, rb_config(level, sparsity_level_setting_mode="local")
    )
    local = jax.jit(ctrl.loss) if jit else ctrl.loss
    assert float(local(params, cstate)) == pytest.approx(4 * loss, rel=1e-5)


def test_loss_gradient_reaches_the_logits_and_not_the_weights(cnn):
    model, variables, *_ = cnn
    ctrl, cstate = nj.create_compressed_model(model, variables, rb_config(0.5))
    params = variables["params"]
    g_params, g_logits = jax.jit(
        jax.grad(lambda p, t: ctrl.loss(p, ctrl.with_trainable(cstate, t)), argnums=(0, 1))
    )(params, ctrl.trainable(cstate))
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(g_params))
    # d/dm of ((kept/N - 0.5) / p)^2 straight through sigmoid: positive (push logits down).
    n = sum(np.prod(np.shape(v)) for v in jax.tree.leaves(g_logits))
    s = 1 / (1 + np.exp(-RB_INITIAL_LOGIT))
    expected = 2 * (1.0 - 0.5) / 0.05**2 / n * s * (1 - s)
    for g in jax.tree.leaves(g_logits):
        np.testing.assert_allclose(np.asarray(g), expected, rtol=1e-4)


# --- masks and keys -----------------------------------------------------------


def test_masks_are_a_function_of_the_state_and_eval_masks_are_the_logit_signs(cnn, trees_equal):
    model, variables, x, _ = cnn
    params = variables["params"]
    ctrl, cstate = nj.create_compressed_model(model, variables, rb_config())
    # Logits around 0: the stochastic masks drop about half of the weights.
    cstate = _set_logits(
        ctrl, cstate, lambda n, v: jax.random.normal(jax.random.key(len(n)), v.shape)
    )
    compress = jax.jit(ctrl.compress_params)
    a = compress(params, cstate)
    trees_equal(compress(params, cstate), a)  # same state: same masks
    kept = np.mean(np.asarray(a["Dense_0"]["kernel"]) != 0)
    assert 0.4 < kept < 0.6

    # The key is that of max(step, 0): the initial state (step -1) stands for
    # iteration 0, whose step() gives step 0 and the same masks.
    ctrl.sync(variables, cstate)
    ctrl.scheduler.step()
    trees_equal(compress(params, ctrl.state), a)
    # The next step has another key, hence other masks; the logits did not move.
    ctrl.scheduler.step()
    moved = ctrl.state
    assert not np.array_equal(np.asarray(_rb(moved).key), np.asarray(_rb(cstate).key))
    c = compress(params, moved)
    assert not np.array_equal(
        np.asarray(c["Dense_0"]["kernel"]), np.asarray(a["Dense_0"]["kernel"])
    )

    # Eval masks: m > 0, the same in ctrl.apply, strip and whatever the key.
    logits = nj.core.paths.flatten_params(ctrl.trainable(cstate)["rb_sparsity"])
    expected = {
        n: np.where(np.asarray(logits[n]) > 0, np.asarray(w), 0.0)
        for n, w in nj.core.paths.flatten_params(params).items()
        if n in logits
    }
    strip = jax.jit(ctrl.strip)
    for state in (cstate, moved):
        compressed = nj.core.paths.flatten_params(compress(params, eval_state(state)))
        stripped = nj.core.paths.flatten_params(strip(variables, state)["params"])
        for n, e in expected.items():
            np.testing.assert_array_equal(np.asarray(compressed[n]), e)
            np.testing.assert_array_equal(np.asarray(stripped[n]), e)
    # The flag is a leaf: eval and train states share one compiled forward.
    fwd = jax.jit(ctrl.apply)
    out = fwd(variables, eval_state(cstate), x)
    np.testing.assert_allclose(
        np.asarray(out), np.asarray(model.apply(strip(variables, cstate), x)), atol=1e-5
    )
    fwd(variables, train_state(cstate), x)
    assert fwd._cache_size() == 1


def test_initial_training_masks_keep_99_percent(cnn, trees_equal):
    model, variables, *_ = cnn
    ctrl, cstate = nj.create_compressed_model(model, variables, rb_config())
    compressed = ctrl.compress_params(variables["params"], cstate)
    trees_equal(jax.jit(ctrl.compress_params)(variables["params"], cstate), compressed)
    dense = np.asarray(compressed["Dense_0"]["kernel"])
    # 8192 weights kept each with p = 0.99: 1% +- 4.5 sigma.
    assert abs(np.mean(dense == 0) - 0.01) < 0.005
    np.testing.assert_array_equal(  # eval: every weight kept
        np.asarray(
            ctrl.compress_params(variables["params"], eval_state(cstate))["Dense_0"]["kernel"]
        ),
        np.asarray(variables["params"]["Dense_0"]["kernel"]),
    )


def test_freeze_disables_the_loss_and_fixes_the_masks(cnn):
    model, variables, *_ = cnn
    params = variables["params"]
    ctrl, _ = nj.create_compressed_model(
        model, variables, rb_config(0.3, sparsity_target_epoch=2, sparsity_freeze_epoch=1)
    )
    ctrl.scheduler.epoch_step()  # epoch 0: level set, not frozen
    assert float(ctrl.loss()) > 0 and not bool(_rb(ctrl.state).frozen)
    ctrl.scheduler.epoch_step()  # epoch 1: frozen before its level is applied
    frozen = ctrl.state
    assert bool(_rb(frozen).frozen) and float(ctrl.loss()) == 0.0
    # Frozen masks are the deterministic ones, even in a training state ...
    np.testing.assert_array_equal(
        np.asarray(ctrl.compress_params(params, frozen)["Dense_0"]["kernel"]),
        np.asarray(params["Dense_0"]["kernel"]),
    )
    # ... and new logits are ignored: the optimizer cannot move them any more.
    moved = _set_logits(ctrl, frozen, lambda n, v: -v)
    np.testing.assert_array_equal(
        np.asarray(ctrl.trainable(moved)["rb_sparsity"]["Dense_0"]["kernel"]),
        np.asarray(ctrl.trainable(frozen)["rb_sparsity"]["Dense_0"]["kernel"]),
    )
    g = jax.grad(lambda t: ctrl.loss(params, ctrl.with_trainable(frozen, t)))(
        ctrl.trainable(frozen)
    )
    assert all(float(jnp.abs(v).max()) == 0.0 for v in jax.tree.leaves(g))


# --- rate, stage, statistics, state dicts ---------------------------------------


def test_rate_stage_statistics_and_state_dicts(cnn):
    model, variables, *_ = cnn
    params = variables["params"]
    ctrl, cstate = nj.create_compressed_model(
        model, variables, rb_config(sparsity_target=0.4, sparsity_target_epoch=2)
    )
    assert ctrl.compression_stage() == CompressionStage.UNCOMPRESSED
    assert ctrl.get_compression_state()["builder_state"] == {
        "rb_sparsity": {"target_weights": TARGETS}
    }
    # Prune the last dense kernel: compression_rate counts zeros over all params.
    cstate = _set_logits(ctrl, cstate, lambda n, v: -v if n == "Dense_1/kernel" else v)
    ctrl.sync(variables, cstate)
    flat = nj.core.paths.flatten_params(params)
    zeros = sum(int(np.sum(np.asarray(v) == 0)) for n, v in flat.items() if n != "Dense_1/kernel")
    total = sum(np.size(v) for v in flat.values())
    assert ctrl.compression_rate == pytest.approx((zeros + 320) / total)
    stats = ctrl.statistics().rb_sparsity
    targeted = sum(np.size(flat[n]) for n in TARGETS)
    assert stats.model_statistics.sparsity_level_for_layers == pytest.approx(320 / targeted)
    sigmoid = 1 / (1 + np.exp(-RB_INITIAL_LOGIT))
    expected_prob = ((targeted - 320) * (1 - sigmoid) + 320 * sigmoid) / targeted
    assert stats.mean_sparse_prob == pytest.approx(expected_prob, rel=1e-4)
    assert stats.target_sparsity_level == pytest.approx(0.4)
    assert stats.loss == pytest.approx(float(ctrl.loss()), rel=1e-5)
    assert "RB loss" in stats.to_str() and "Dense_1/kernel" in stats.to_str()

    ctrl.scheduler.epoch_step()
    ctrl.scheduler.epoch_step()  # exponential: epoch 1 of 2
    assert ctrl.compression_stage() == CompressionStage.PARTIALLY_COMPRESSED
    for _ in range(3):
        ctrl.scheduler.step()
    ctrl.scheduler.epoch_step()
    assert ctrl.scheduler.current_sparsity_level == pytest.approx(0.4)
    assert ctrl.compression_stage() == CompressionStage.FULLY_COMPRESSED

    # get_state / load_state round trip (JSON), into a fresh controller.
    saved = json.loads(json.dumps(ctrl.get_state()))
    scheduler_state = saved["rb_sparsity"]["scheduler_state"]
    assert scheduler_state["current_step"] == 2 and scheduler_state["current_epoch"] == 2
    assert scheduler_state["current_sparsity_level"] == pytest.approx(0.4)
    other, _ = nj.create_compressed_model(
        model, variables, rb_config(sparsity_target=0.4, sparsity_target_epoch=2)
    )
    other.load_state(saved)
    mine, theirs = _rb(ctrl.state), _rb(other.state)
    for field in ("level", "frozen", "bad_epochs", "pinned", "seed", "key"):
        np.testing.assert_array_equal(
            np.asarray(getattr(theirs, field)), np.asarray(getattr(mine, field))
        )

    # The rate setter pins the level: the schedule no longer moves it.
    other.compression_rate = 0.3
    for _ in range(3):
        other.scheduler.epoch_step()
    assert other.scheduler.current_sparsity_level == pytest.approx(0.3)
    assert float(other.loss()) == pytest.approx((0.3 / 0.05) ** 2, rel=1e-5)
    with pytest.raises(
        nj.errors.ConfigError, match=r"compression_rate: expected a value in \[0, 1\)"
    ):
        other.compression_rate = 1.0


def test_lr_multiplier_and_bad_settings_from_the_config(cnn):
    model, variables, *_ = cnn
    config = rb_config()
    config["compression"]["compression_lr_multiplier"] = 7
    ctrl, _ = nj.create_compressed_model(model, variables, config)
    assert ctrl.algorithms[0].lr_multiplier == 7.0
    config = {**rb_config(), "compression_lr_multiplier": 3}  # the global one
    assert nj.create_compressed_model(model, variables, config)[0].algorithms[0].lr_multiplier == 3
    with pytest.raises(nj.errors.ConfigError, match="steps_per_epoch"):
        nj.create_compressed_model(model, variables, rb_config(update_per_optimizer_step=True))


# --- adaptive schedule ------------------------------------------------------------


def _nncf_adaptive(observed, *, init, step, eps, patience, target):
    """NNCF's AdaptiveSparsityScheduler.epoch_step in float64, for a scripted sequence."""
    level, bad, levels = init, 0, []
    for seen in observed:
        if seen >= level - eps:
            bad += 1
        if bad >= patience:
            bad, level = 0, level + step
        level = min(level, target)
        levels.append(level)
    return levels


def test_adaptive_level_function_follows_nncf_on_a_script():
    observed = [0.0, 0.0, 0.02, 0.1, 0.1, 0.12, 0.25, 0.26, 0.4, 0.5, 0.5, 0.5]
    settings = {"step": 0.1, "eps": 0.03, "patience": 2, "target": 0.45}
    expected = _nncf_adaptive(observed, init=0.0, **settings)
    update = jax.jit(lambda lv, b, o: adaptive_sparsity_level(lv, b, o, **settings))
    level, bad, got = jnp.float32(0.0), jnp.int32(0), []
    for seen in observed:
        level, bad = update(level, bad, jnp.float32(seen))
        got.append(float(level))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert expected[-1] == 0.45 and len(set(expected)) > 3


def test_adaptive_schedule_reads_the_sparsity_the_masks_reached(cnn):
    model, variables, *_ = cnn
    config = rb_config(
        schedule="adaptive",
        sparsity_target=0.3,
        step=0.1,
        eps=0.02,
        patience=1,
        sparsity_freeze_epoch=7,
    )
    ctrl, _ = nj.create_compressed_model(model, variables, config)
    # Scripted: before each epoch_step, prune exactly this fraction of every kernel.
    observed = [0.0, 0.05, 0.1, 0.1, 0.19, 0.3, 0.3, 0.3]

    def prune(fraction):
        def fn(_, v):
            k = round(fraction * v.size)
            flat = jnp.full((v.size,), 1.0).at[:k].set(-1.0)
            return flat.reshape(v.shape)

        return fn

    levels, bad_epochs = [], []
    for seen in observed:
        ctrl.sync(variables, _set_logits(ctrl, ctrl.state, prune(seen)))
        ctrl.scheduler.epoch_step()
        levels.append(ctrl.scheduler.current_sparsity_level)
        bad_epochs.append(ctrl.get_state()["rb_sparsity"]["scheduler_state"]["num_bad_epochs"])
    # Frozen at epoch 7: its own update never happens.
    expected = _nncf_adaptive(observed[:7], init=0.0, step=0.1, eps=0.02, patience=1, target=0.3)
    np.testing.assert_allclose(levels, [*expected, expected[-1]], atol=1e-6)
    assert levels == sorted(levels) and levels[0] == pytest.approx(0.1)
    assert levels[1] == levels[0]  # 0.05 observed at level 0.1: not caught up, no move
    assert set(bad_epochs) == {0}  # patience 1: every bad epoch moves the level at once
    assert ctrl.compression_stage() == CompressionStage.FULLY_COMPRESSED


# --- jitted training ---------------------------------------------------------------


class _Linear(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(8, use_bias=False)(x)


def test_jitted_step_trains_the_logits_to_the_target_and_keeps_the_informative_weights():
    # y = x @ W with half of W's entries zero: RB should find them.
    kx, kw, kmask = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(kx, (256, 32))
    informative = jax.random.bernoulli(kmask, 0.5, (32, 8))
    w_true = jnp.where(
        informative,
        jax.random.normal(kw, (32, 8)) + 2.0 * jnp.sign(jax.random.normal(kw, (32, 8))),
        0.0,
    )
    y = x @ w_true
    model = _Linear()
    variables = model.init(jax.random.key(0), x)
    config = rb_config(
        sparsity_target=0.5, sparsity_target_epoch=4, sparsity_freeze_epoch=12, steps_per_epoch=20
    )
    ctrl, cstate = nj.create_compressed_model(model, variables, config)
    tx = optax.adam(0.05)

    def step(variables, opt_state, cstate):
        def loss_fn(params, trainable):
            cs = ctrl.with_trainable(cstate, trainable)
            pred = ctrl.apply({**variables, "params": params}, cs, x)
            return jnp.mean((pred - y) ** 2) + ctrl.loss(params, cs)

        params, trainable = variables["params"], ctrl.trainable(cstate)
        grads, t_grads = jax.grad(loss_fn, argnums=(0, 1))(params, trainable)
        tree = {"params": params, "compression": trainable}
        updates, opt_state = tx.update({"params": grads, "compression": t_grads}, opt_state, tree)
        cstate = ctrl.with_trainable(cstate, optax.apply_updates(trainable, updates["compression"]))
        p_updates, cstate = ctrl.transform.update(updates["params"], cstate, params)
        return {**variables, "params": optax.apply_updates(params, p_updates)}, opt_state, cstate

    step = jax.jit(step)
    opt_state = _opt_init(tx, ctrl, variables, cstate)
    variables, opt_state, cstate = step(variables, opt_state, cstate)
    with jax.transfer_guard("disallow"):
        for _ in range(14 * 20 - 1):
            variables, opt_state, cstate = step(variables, opt_state, cstate)
    assert step._cache_size() == 1
    assert bool(_rb(cstate).frozen) and float(ctrl.loss(variables["params"], cstate)) == 0.0
    ctrl.sync(variables, cstate)
    layers = ctrl.statistics().rb_sparsity.model_statistics.sparsity_level_for_layers
    assert layers == pytest.approx(0.5, abs=0.03)
    kept = np.asarray(_rb(cstate).logits["Dense_0"]["kernel"]) > 0
    assert np.mean(kept == np.asarray(informative)) > 0.95
    # The masked model fits: the stripped weights recover W.
    stripped = ctrl.strip(variables, cstate)["params"]["Dense_0"]["kernel"]
    assert float(jnp.mean((x @ stripped - y) ** 2)) < 0.05 * float(jnp.mean(y**2))


def test_transform_and_facade_paths_draw_the_same_masks(cnn, trees_equal):
    model, variables0, x, y = cnn
    epochs, spe = 3, 3
    config = rb_config(0.1, sparsity_target=0.5, sparsity_target_epoch=2, steps_per_epoch=spe)
    tx = optax.adam(0.05)

    ctrl, cstate = nj.create_compressed_model(model, variables0, config)
    step = jax.jit(make_rb_step(ctrl, tx))
    variables, opt_state = variables0, _opt_init(tx, ctrl, variables0, cstate)
    functional = []
    for _ in range(epochs * spe):
        functional.append(cstate)
        variables, opt_state, cstate = step(variables, opt_state, cstate, x, y)

    fctrl, fstate = nj.create_compressed_model(model, variables0, config)
    fstep = jax.jit(make_rb_step(fctrl, tx, tick=False))
    fvariables, fopt = variables0, _opt_init(tx, fctrl, variables0, fstate)
    facade = []
    for _ in range(epochs):
        fctrl.scheduler.epoch_step()
        for _ in range(spe):
            fctrl.scheduler.step()
            facade.append(fctrl.state)
            fvariables, fopt, new_state = fstep(fvariables, fopt, fctrl.state, x, y)
            fctrl.sync(fvariables, new_state)

    for i, (a, b) in enumerate(zip(functional, facade, strict=True)):
        for field in ("key", "frozen"):
            np.testing.assert_array_equal(
                np.asarray(getattr(_rb(a), field)),
                np.asarray(getattr(_rb(b), field)),
                err_msg=str(i),
            )
        # Two compilations of the schedule's pow: equal up to an ulp.
        assert float(_rb(a).level) == pytest.approx(float(_rb(b).level), rel=1e-6), i
        if i > 0:
            assert int(a.step) == int(b.step) and int(a.epoch) == int(b.epoch)
        trees_equal(_rb(a).logits, _rb(b).logits, rtol=1e-4, atol=1e-5)
    assert len({float(_rb(s).level) for s in functional}) == 3  # 0.1, then two scheduled levels
    # Logits moved, and the same ones in both paths.
    trees_equal(_rb(cstate).logits, _rb(fctrl.state).logits, rtol=1e-4, atol=1e-5)
    assert float(jnp.min(_rb(cstate).logits["Dense_0"]["kernel"])) < RB_INITIAL_LOGIT - 0.2


# --- resume ----------------------------------------------------------------------------


def test_checkpoint_and_compression_state_resume_bit_for_bit(cnn, trees_equal, tmp_path):
    model, variables0, x, y = cnn
    config = rb_config(sparsity_target=0.5, sparsity_target_epoch=2, steps_per_epoch=2)
    tx = optax.adam(0.05)
    ctrl, cstate = nj.create_compressed_model(model, variables0, config)
    step = jax.jit(make_rb_step(ctrl, tx))
    variables, opt_state = variables0, _opt_init(tx, ctrl, variables0, cstate)
    for _ in range(3):
        variables, opt_state, cstate = step(variables, opt_state, cstate, x, y)
    ctrl.sync(variables, cstate)
    with nj.checkpoint.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.save(3, ctrl=ctrl, variables=variables, opt_state=opt_state, cstate=cstate)
    saved_json = json.loads(json.dumps(ctrl.get_compression_state()))
    saved_cstate = cstate
    whole = (variables, opt_state, cstate)
    for _ in range(3):
        whole = step(*whole, x, y)

    # Orbax: a fresh controller and templates, restore: the exact saved state,
    # which continues exactly (the step is a pure function of it).
    with nj.checkpoint.CheckpointManager(tmp_path / "ckpt") as mngr:
        rctrl, rstate = nj.create_compressed_model(
            model, variables0, config, compression_state=mngr.read_compression_state()
        )
        restored = mngr.restore(
            variables=variables0,
            opt_state=_opt_init(tx, rctrl, variables0, rstate),
            cstate=rstate,
            ctrl=rctrl,
        )
    resumed = (restored.variables, restored.opt_state, restored.cstate)
    trees_equal(resumed, (variables, opt_state, saved_cstate))
    for _ in range(3):
        resumed = step(*resumed, x, y)
    trees_equal(resumed, whole)  # exact

    # NNCF's dict: counters, level, seed and key come back; the logits travel with
    # the weights (like NNCF's mask parameters) and go back with with_trainable.
    jctrl, jstate = nj.create_compressed_model(
        model, variables0, config, compression_state=saved_json
    )
    jstate = jctrl.with_trainable(jstate, ctrl.trainable(saved_cstate))
    trees_equal(jstate, saved_cstate)


# --- composite ----------------------------------------------------------------------------


def test_composite_with_quantization_builds_and_trains(cnn):
    model, variables, x, y = cnn
    config = rb_config(0.3, sparsity_target=0.5, steps_per_epoch=2)
    config["compression"] = [
        config["compression"],
        {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 0}}},
    ]
    ctrl, cstate = nj.create_compressed_model(model, variables, config)
    assert ctrl.name == "composite"
    assert sorted(ctrl.trainable(cstate)) == ["quantization", "rb_sparsity"]
    assert float(ctrl.loss(variables["params"], cstate)) == pytest.approx(36.0, rel=1e-5)
    tx = optax.adam(0.05)
    step = jax.jit(make_rb_step(ctrl, tx))
    opt_state = _opt_init(tx, ctrl, variables, cstate)
    before = ctrl.trainable(cstate)
    for _ in range(4):
        variables, opt_state, cstate = step(variables, opt_state, cstate, x, y)
    after = ctrl.trainable(cstate)
    for name in ("rb_sparsity", "quantization"):  # both trained
        assert any(
            not np.array_equal(np.asarray(a), np.asarray(b))
            for a, b in zip(
                jax.tree.leaves(before[name]), jax.tree.leaves(after[name]), strict=True
            )
        ), name
    # Masks apply before weight fake-quant: a pruned weight is exactly 0 once stripped.
    cstate = _set_logits(ctrl, cstate, lambda n, v: -v if n == "Dense_0/kernel" else v)
    ctrl.sync(variables, cstate)
    assert float(jnp.abs(ctrl.strip()["params"]["Dense_0"]["kernel"]).max()) == 0.0
    rb_ctrl, q_ctrl = ctrl.child_ctrls
    stats = rb_ctrl.statistics().rb_sparsity
    assert stats.model_statistics.sparsity_level_for_layers > 0.8
    assert q_ctrl.name == "quantization" and rb_ctrl.compression_rate == ctrl.compression_rate
    resumed, _ = nj.create_compressed_model(
        model,
        variables,
        config,
        compression_state=json.loads(json.dumps(ctrl.get_compression_state())),
    )
    assert resumed.get_state() == ctrl.get_state()
