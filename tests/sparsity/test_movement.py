"""Movement sparsity: NNCF's warm-up ramps, the straight-through movement gradient,
structured scores and resolution, a jitted step that trains the scores, resume."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nncf_jax as nj
from nncf_jax.core.paths import flatten_params, unflatten_params
from nncf_jax.core.stage import CompressionStage
from nncf_jax.sparsity.movement import movement_mask, resolve_group

NAME = "movement_sparsity"


class Mlp(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(12)(x))
        return nn.Dense(6)(x)


class Tiny(nn.Module):
    """Dense embed, one attention, an MLP block, Dense head."""

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(6)(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=3, qkv_features=6)(x)
        x = x + Mlp()(x)
        return nn.Dense(4)(x.mean(axis=1))


def config(**params):
    base = {
        "warmup_start_epoch": 1,
        "warmup_end_epoch": 3,
        "importance_regularization_factor": 0.5,
        "steps_per_epoch": 2,
    }
    return {
        "input_info": {"sample_size": [1, 5, 4]},
        "compression": {"algorithm": NAME, "params": {**base, **params}},
    }


@pytest.fixture(scope="module")
def tiny():
    model = Tiny()
    x = jax.random.normal(jax.random.key(1), (8, 5, 4))
    y = jnp.arange(8) % 4
    return model, model.init(jax.random.key(0), x), x, y


def _state(cstate):
    return cstate.algorithms[NAME]


def _xent(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_step(ctrl, tx, *, tick=True):
    def step(variables, opt_state, cstate, x, y):
        def loss_fn(params, trainable):
            cs = ctrl.with_trainable(cstate, trainable)
            logits = ctrl.apply({**variables, "params": params}, cs, x)
            return _xent(logits, y) + ctrl.loss(params, cs)

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


def _nncf_values(step, *, spe=2, start=1, end=3, power=3.0, init=-1.0, final=0.0, lam=0.5):
    """NNCF's scheduler, written out: (threshold, factor) at ``current_step``."""
    a, b = int(start * spe), int(end * spe)
    if step < a:
        return -np.inf, 0.0
    if step < b:
        scale = 1 - (1 - (step - a) / (b - a)) ** power
        return init + scale * (final - init), scale * lam
    return final, lam


@pytest.mark.parametrize("jit", [False, True])
def test_threshold_and_factor_ramps_follow_the_cubic(tiny, jit):
    model, variables, *_ = tiny
    ctrl, cstate = nj.create_compressed_model(
        model, variables, config(init_importance_threshold=-1.0)
    )
    update = jax.jit(ctrl.transform.update) if jit else ctrl.transform.update
    params = variables["params"]
    seen = []
    for _ in range(8):  # steps 0..7: before (0, 1), inside (2..5), after (6, 7)
        _, cstate = update(params, cstate, params)
        s, i = _state(cstate), int(cstate.step)
        thr, lam = _nncf_values(i)
        assert float(s.threshold) == pytest.approx(thr, rel=1e-6), i
        assert float(s.factor) == pytest.approx(lam, rel=1e-6), i
        seen.append(int(s.stage))
    assert seen == [0, 1, 1, 1, 1, 2, 2, 2]
    assert bool(_state(cstate).frozen)


def test_automatic_init_threshold_is_the_0_1_percent_score(tiny):
    model, variables, *_ = tiny
    ctrl, cstate = nj.create_compressed_model(model, variables, config())
    scores = flatten_params(ctrl.trainable(cstate)[NAME])
    new = {n: jnp.asarray(np.linspace(-2, 2, v.size).reshape(v.shape)) for n, v in scores.items()}
    cstate = ctrl.with_trainable(cstate, {NAME: unflatten_params(new)})
    ctrl.sync(variables, cstate)
    for _ in range(3):
        ctrl.scheduler.step()
    expanded = np.concatenate(
        [
            np.broadcast_to(np.asarray(new[n]), np.shape(flatten_params(variables["params"])[n]))
            .repeat(1)
            .ravel()
            for n in ctrl.get_compression_state()["builder_state"][NAME]["target_weights"]
        ]
    )
    k = int(expanded.size * 0.001) + 1
    assert float(_state(ctrl.state).init_threshold) == pytest.approx(np.sort(expanded)[k - 1])


def test_ste_gradient_of_scores_is_grad_times_weight():
    model = nn.Dense(3)
    x = jax.random.normal(jax.random.key(2), (5, 4))
    variables = model.init(jax.random.key(0), x)
    cfg = {
        "input_info": {"sample_size": [1, 4]},
        "compression": {
            "algorithm": NAME,
            "params": {
                "warmup_start_epoch": 0,
                "warmup_end_epoch": 2,
                "importance_regularization_factor": 0.0,
                "steps_per_epoch": 1,
            },
        },
    }
    ctrl, cstate = nj.create_compressed_model(model, variables, cfg)
    w = variables["params"]["kernel"]
    scores = jax.random.normal(jax.random.key(3), w.shape)
    cstate = ctrl.with_trainable(cstate, {NAME: {"kernel": scores}})
    _, cstate = ctrl.transform.update(variables["params"], cstate, variables["params"])

    def task(params, trainable):
        out = ctrl.apply({"params": params}, ctrl.with_trainable(cstate, trainable), x)
        return jnp.sum(out**2)

    g_w, g_s = jax.grad(task, argnums=(0, 1))(variables["params"], ctrl.trainable(cstate))
    mask = np.asarray(ctrl.strip(variables, cstate)["params"]["kernel"]) != 0
    # d/dw_eff: the weight gradient is it times the mask; the scores get it times w.
    w_eff = np.where(mask, np.asarray(w), 0.0)
    g_eff = jax.grad(
        lambda k: jnp.sum(model.apply({"params": {**variables["params"], "kernel": k}}, x) ** 2)
    )(jnp.asarray(w_eff))
    np.testing.assert_allclose(
        np.asarray(g_s[NAME]["kernel"]), np.asarray(g_eff) * np.asarray(w), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(g_w["kernel"]), np.asarray(g_eff) * mask, rtol=1e-5, atol=1e-6
    )


def test_structured_score_shapes_and_masks(tiny):
    model, variables, *_ = tiny
    cfg = config()
    cfg["compression"]["sparse_structure_by_scopes"] = [
        {"mode": "per_dim", "axis": 0, "target_scopes": ["Mlp_0/Dense_0"]},
        {"mode": "per_dim", "axis": 1, "target_scopes": ["Dense_0"]},
        {"mode": "block", "sparse_factors": [2, 3], "target_scopes": ["Mlp_0/Dense_1"]},
    ]
    ctrl, _ = nj.create_compressed_model(model, variables, cfg)
    shapes = ctrl.get_compression_state()["builder_state"][NAME]["score_shapes"]
    assert shapes == {
        "Dense_0/kernel": [4, 1],  # one score per input (NNCF axis 1)
        "Dense_1/kernel": [6, 4],  # fine
        "Mlp_0/Dense_0/kernel": [1, 12],  # one per output neuron (NNCF axis 0)
        "Mlp_0/Dense_1/kernel": [4, 3],  # blocks of 2 outputs x 3 inputs
        "MultiHeadDotProductAttention_0/key/kernel": [1, 3, 1],  # one per head
        "MultiHeadDotProductAttention_0/out/kernel": [3, 1, 1],
        "MultiHeadDotProductAttention_0/query/kernel": [1, 3, 1],
        "MultiHeadDotProductAttention_0/value/kernel": [1, 3, 1],
    }
    # Masks from the shared scores: whole columns / rows / heads.
    thr = jnp.float32(0.0)
    col = movement_mask(jnp.array([[-1.0, 1.0, 1.0, -1.0]]), (3, 4), thr)
    np.testing.assert_array_equal(np.asarray(col), np.tile([0, 1, 1, 0], (3, 1)))
    row = movement_mask(jnp.array([[1.0], [-1.0], [1.0]]), (3, 4), thr)
    np.testing.assert_array_equal(np.asarray(row), np.repeat([[1], [0], [1]], 4, axis=1))
    head = movement_mask(jnp.array([1.0, -1.0, 1.0]).reshape(1, 3, 1), (6, 3, 2), thr)
    np.testing.assert_array_equal(np.asarray(head).any(axis=(0, 2)), [True, False, True])
    assert np.asarray(head).reshape(6, 3, 2)[:, 1].sum() == 0
    with pytest.raises(
        nj.errors.ConfigError, match=r"sparse_structure_by_scopes\[0\].sparse_factors"
    ):
        bad = config()
        bad["compression"]["sparse_structure_by_scopes"] = [
            {"mode": "block", "sparse_factors": [5, 1], "target_scopes": ["Dense_1"]}
        ]
        nj.create_compressed_model(model, variables, bad)


def test_structured_resolution_unites_heads_and_hidden_neurons(tiny):
    # Heads: q keeps head 0, out keeps head 2 -> both heads kept everywhere.
    q = np.zeros((6, 3, 2), bool)
    q[1, 0, 1] = True
    o = np.zeros((3, 2, 6), bool)
    o[2, 0, 3] = True
    rq, ro = resolve_group([jnp.asarray(q), jnp.asarray(o)], (1, 0), ((2,), (1,)))
    assert np.asarray(rq).any(axis=(0, 2)).tolist() == [True, False, True]
    assert np.asarray(rq)[1, 0].all() and not np.asarray(rq)[0].any()  # input 0 all pruned
    assert np.asarray(ro)[0, :, 3].all() and np.asarray(ro)[2, :, 3].all()

    # End to end: after the warm-up the masks are whole heads and whole hidden neurons.
    model, variables, *_ = tiny
    ctrl, cstate = nj.create_compressed_model(model, variables, config())
    scores = flatten_params(ctrl.trainable(cstate)[NAME])
    rng = np.random.default_rng(0)
    new = {n: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for n, v in scores.items()}
    cstate = ctrl.with_trainable(cstate, {NAME: unflatten_params(new)})
    params = variables["params"]
    for _ in range(7):
        _, cstate = ctrl.transform.update(params, cstate, params)
    assert bool(_state(cstate).frozen)
    masks = flatten_params(_state(cstate).masks)
    a, b = masks["Mlp_0/Dense_0/kernel"], masks["Mlp_0/Dense_1/kernel"]
    hidden = np.asarray(a).any(axis=0)
    np.testing.assert_array_equal(hidden, np.asarray(b).any(axis=1))
    assert np.asarray(a)[:, hidden].any(axis=1).sum() == np.asarray(a).any(axis=1).sum()
    heads = [
        np.asarray(masks[f"MultiHeadDotProductAttention_0/{r}/kernel"]).any(axis=(0, 2))
        for r in ("query", "key", "value")
    ]
    heads.append(np.asarray(masks["MultiHeadDotProductAttention_0/out/kernel"]).any(axis=(1, 2)))
    for h in heads[1:]:
        np.testing.assert_array_equal(h, heads[0])
    # Frozen: new scores are ignored and the loss is 0.
    moved = ctrl.with_trainable(cstate, jax.tree.map(lambda s: s - 5.0, ctrl.trainable(cstate)))
    np.testing.assert_array_equal(
        np.asarray(ctrl.strip(variables, moved)["params"]["Dense_1"]["kernel"]),
        np.asarray(ctrl.strip(variables, cstate)["params"]["Dense_1"]["kernel"]),
    )
    assert float(ctrl.loss(params, cstate)) == 0.0


def test_jitted_step_trains_scores_without_recompiling_and_facade_matches(tiny, trees_equal):
    model, variables0, x, y = tiny
    cfg = config(init_importance_threshold=-0.01)
    tx = optax.adam(0.05)
    ctrl, cstate = nj.create_compressed_model(model, variables0, cfg)
    step = jax.jit(make_step(ctrl, tx))
    variables = variables0
    opt_state = tx.init({"params": variables["params"], "compression": ctrl.trainable(cstate)})
    s0 = ctrl.trainable(cstate)
    variables, opt_state, cstate = step(variables, opt_state, cstate, x, y)
    with jax.transfer_guard("disallow"):
        for _ in range(7):
            variables, opt_state, cstate = step(variables, opt_state, cstate, x, y)
    assert step._cache_size() == 1
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), s0, ctrl.trainable(cstate))
    assert max(jax.tree.leaves(moved)) > 0.05
    assert bool(_state(cstate).frozen)
    ctrl.sync(variables, cstate)
    functional = (ctrl.compression_rate, ctrl.compression_stage())
    assert functional[1] == CompressionStage.FULLY_COMPRESSED and functional[0] > 0

    # Facade: scheduler.step() before each iteration, same numbers.
    fctrl, fstate = nj.create_compressed_model(model, variables0, cfg)
    fstep = jax.jit(make_step(fctrl, tx, tick=False))
    fvars = variables0
    fopt = tx.init({"params": fvars["params"], "compression": fctrl.trainable(fstate)})
    for _ in range(4):
        fctrl.scheduler.epoch_step()
        for _ in range(2):
            fctrl.scheduler.step()
            fvars, fopt, new = fstep(fvars, fopt, fctrl.state, x, y)
            fctrl.sync(fvars, new)
    stats = fctrl.statistics().movement_sparsity
    assert stats.importance_regularization_factor == pytest.approx(0.5)
    assert "Importance threshold" in stats.to_str()
    assert fctrl.compression_stage() == CompressionStage.FULLY_COMPRESSED


def test_functional_and_facade_schedules_agree(tiny):
    model, variables, *_ = tiny
    cfg = config(init_importance_threshold=-1.0)
    ctrl, cstate = nj.create_compressed_model(model, variables, cfg)
    fctrl, _ = nj.create_compressed_model(model, variables, cfg)
    params = variables["params"]
    by_step = {}
    for _ in range(8):
        _, cstate = ctrl.transform.update(params, cstate, params)
        s = _state(cstate)
        by_step[int(cstate.step)] = (float(s.threshold), float(s.factor), int(s.stage))
    compared = 0
    for _ in range(4):
        fctrl.scheduler.epoch_step()
        for _ in range(2):
            fctrl.scheduler.step()
            s, i = _state(fctrl.state), int(fctrl.state.step)
            if i in by_step:
                got = (float(s.threshold), float(s.factor), int(s.stage))
                assert got == pytest.approx(by_step[i], rel=1e-6), i
                compared += 1
    assert compared >= 6


def test_resume_from_the_compression_state_continues_the_schedule(tiny, trees_equal):
    model, variables0, x, y = tiny
    cfg = config()
    tx = optax.adam(0.05)
    ctrl, cstate = nj.create_compressed_model(model, variables0, cfg)
    step = jax.jit(make_step(ctrl, tx))
    variables = variables0
    opt_state = tx.init({"params": variables["params"], "compression": ctrl.trainable(cstate)})
    for _ in range(4):  # into the warm-up: the init threshold is computed
        variables, opt_state, cstate = step(variables, opt_state, cstate, x, y)
    ctrl.sync(variables, cstate)
    saved = json.loads(json.dumps(ctrl.get_compression_state()))
    sched = saved["ctrl_state"][NAME]["scheduler_state"]
    assert sched["_init_importance_threshold"] is not None and sched["current_step"] >= 3

    rctrl, rstate = nj.create_compressed_model(model, variables0, cfg, compression_state=saved)
    rstate = rctrl.with_trainable(rstate, ctrl.trainable(cstate))
    trees_equal(rstate, cstate, rtol=1e-6)
    whole = (variables, opt_state, cstate)
    resumed = (variables, opt_state, rstate)
    rstep = jax.jit(make_step(rctrl, tx))
    for _ in range(4):
        whole = step(*whole, x, y)
        resumed = rstep(*resumed, x, y)
        a, b = _state(whole[2]), _state(resumed[2])
        assert float(a.threshold) == pytest.approx(float(b.threshold))
        assert float(a.factor) == pytest.approx(float(b.factor))
    trees_equal(whole[2], resumed[2], rtol=1e-5, atol=1e-6)

    # A different model layout is refused.
    bad = json.loads(json.dumps(saved))
    bad["builder_state"][NAME]["score_shapes"]["Dense_1/kernel"] = [1, 4]
    with pytest.raises(nj.errors.StateMismatchError, match="score_shapes"):
        nj.create_compressed_model(model, variables0, cfg, compression_state=bad)
