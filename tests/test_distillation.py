"""knowledge_distillation: NNCF's KD losses (REFERENCE.md section 2) through the controller."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_trees_equal

import nncf_jax as nj
from nncf_jax.checkpoint import CheckpointManager
from nncf_jax.distillation import DistillationState, distillation_loss
from nncf_jax.errors import ConfigError, UsageError

KD = "knowledge_distillation"
SPARSITY = {
    "algorithm": "magnitude_sparsity",
    "sparsity_init": 0.5,
    "params": {"steps_per_epoch": 4},
}


def _config(*sections):
    return {"input_info": {"sample_size": [1, 8, 8, 1]}, "compression": list(sections)}


def _kd(kind="softmax", **extra):
    return {"algorithm": KD, "type": kind, **extra}


def _perturbed(variables, seed=3, size=0.3):
    leaves, tree = jax.tree_util.tree_flatten(variables["params"])
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [w + size * jax.random.normal(k, w.shape) for w, k in zip(leaves, keys, strict=True)]
    return {**variables, "params": jax.tree_util.tree_unflatten(tree, noisy)}


def _numpy_kd(student, teacher, kind, scale, temperature):
    """NNCF 2.x's KnowledgeDistillationLoss, written as NNCF writes it, in float64."""
    s, t = np.asarray(student, np.float64), np.asarray(teacher, np.float64)
    if kind == "mse":
        return scale * np.mean((t - s) ** 2)
    s, t = s / temperature, t / temperature
    log_q = s - s.max(1, keepdims=True)
    log_q = log_q - np.log(np.exp(log_q).sum(1, keepdims=True))
    p = np.exp(t - t.max(1, keepdims=True))
    p = p / p.sum(1, keepdims=True)
    return scale * -(log_q * p).mean() * (s.shape[1] * temperature**2)


def _step_loss(ctrl, jit):
    def f(variables, cstate, x):
        out = ctrl.apply(variables, cstate, x)
        return out, ctrl.loss(variables["params"], cstate)

    return jax.jit(f) if jit else f


# --- the loss numbers --------------------------------------------------------------


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("kind, temperature", [("mse", None), ("softmax", 1.0), ("softmax", 3.0)])
def test_loss_matches_nncf_formula(kind, temperature, jit, cnn):
    model, variables, x, _ = cnn
    extra = {} if temperature is None else {"temperature": temperature}
    ctrl, cstate = nj.create_compressed_model(
        model, variables, _config(_kd(kind, scale=0.5, **extra))
    )
    student = _perturbed(variables)  # the teacher stays the variables given above
    out, loss = _step_loss(ctrl, jit)(student, cstate, x)
    assert loss.dtype == jnp.float32 and loss.shape == ()
    np.testing.assert_allclose(out, model.apply(student, x), rtol=1e-5, atol=1e-6)
    expected = _numpy_kd(
        model.apply(student, x), model.apply(variables, x), kind, 0.5, temperature or 1.0
    )
    assert expected > 1e-3
    np.testing.assert_allclose(loss, expected, rtol=2e-5)


def test_untrained_student_gives_zero_mse_and_the_teacher_entropy(cnn):
    model, variables, x, _ = cnn
    for kind in ("mse", "softmax"):
        ctrl, cstate = nj.create_compressed_model(model, variables, _config(_kd(kind)))
        _, loss = _step_loss(ctrl, True)(variables, cstate, x)
        # softmax: the cross-entropy of the teacher with itself, its entropy
        t = np.asarray(model.apply(variables, x), np.float64)
        p = np.exp(t - t.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        entropy = -(p * np.log(p)).sum(1).mean()
        np.testing.assert_allclose(loss, 0.0 if kind == "mse" else entropy, rtol=1e-5, atol=1e-7)


def test_pure_loss_on_output_pytrees():
    s = {"logits": jnp.array([[1.0, 2.0, 0.5]]), "feat": jnp.ones((1, 2, 2)), "n": jnp.int32(3)}
    t = {"logits": jnp.array([[0.0, 1.0, 2.0]]), "feat": jnp.zeros((1, 2, 2)), "n": jnp.int32(4)}
    mse = distillation_loss(s, t, kind="mse", scale=2.0)
    np.testing.assert_allclose(mse, 2.0 * (np.mean([1, 1, 2.25]) + 1.0), rtol=1e-6)
    # softmax takes rank-2 leaves only, leaving the rest out with a warning (NNCF skips them)
    with pytest.warns(UserWarning, match=r"\['feat'\] \(1, 2, 2\)"):
        soft = distillation_loss(s, t, kind="softmax", temperature=2.0)
    np.testing.assert_allclose(soft, _numpy_kd(s["logits"], t["logits"], "softmax", 1, 2), 1e-6)
    with pytest.raises(UsageError, match=r"no model output fits: softmax needs .* rank 2"):
        distillation_loss(jnp.ones(3), jnp.ones(3), kind="softmax")
    with pytest.raises(UsageError, match="differ in structure"):
        distillation_loss((s["logits"],), s["logits"], kind="mse")


# --- gradients and the frozen teacher ----------------------------------------------


def test_gradient_reaches_the_student_only(cnn):
    model, variables, x, _ = cnn
    ctrl, cstate = nj.create_compressed_model(model, variables, _config(_kd("softmax")))
    student = _perturbed(variables)

    def loss_fn(params, teacher):
        cs = cstate.replace(algorithms={KD: DistillationState(teacher=teacher)})
        ctrl.apply({**student, "params": params}, cs, x)
        return ctrl.loss(params, cs)

    teacher = cstate.algorithms[KD].teacher
    g_student, g_teacher = jax.jit(jax.grad(loss_fn, argnums=(0, 1)))(student["params"], teacher)
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree_util.tree_leaves(g_teacher))

    def direct(params):
        t = jax.lax.stop_gradient(model.apply(variables, x))
        return distillation_loss(model.apply({"params": params}, x), t, kind="softmax")

    expected = jax.grad(direct)(student["params"])
    assert_trees_equal(g_student, expected, rtol=1e-4, atol=1e-7)
    assert float(optax.tree.norm(g_student)) > 1e-3


def _train_step(ctrl, tx, kd_only=False):
    def step(variables, opt_state, cstate, x, y):
        def loss_fn(params):
            logits = ctrl.apply({**variables, "params": params}, cstate, x)
            xent = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return (0.0 if kd_only else xent) + ctrl.loss(params, cstate)

        params = variables["params"]
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        updates, cstate = ctrl.transform.update(updates, cstate, params)
        params = optax.apply_updates(params, updates)
        return {**variables, "params": params}, opt_state, cstate, loss

    return jax.jit(step)


def test_design_train_step_compiles_once_and_keeps_the_teacher(cnn):
    model, variables, x, y = cnn
    original = jax.tree_util.tree_map(np.asarray, variables)
    ctrl, cstate = nj.create_compressed_model(
        model, variables, _config(SPARSITY, _kd("mse", scale=10.0))
    )
    tx = optax.adam(1e-2)
    step = _train_step(ctrl, tx)
    opt_state = tx.init(variables["params"])
    # The teacher is a copy: deleting the variables given (as a donating step would) keeps it.
    variables = jax.tree_util.tree_map(jnp.copy, variables)
    for leaf in jax.tree_util.tree_leaves(ctrl.params):
        leaf.delete()
    variables, opt_state, cstate, _ = step(variables, opt_state, cstate, x, y)
    with jax.transfer_guard("disallow"):
        for _ in range(4):
            variables, opt_state, cstate, _ = step(variables, opt_state, cstate, x, y)
    assert step._cache_size() == 1
    assert_trees_equal(cstate.algorithms[KD].teacher, original)
    moved = optax.tree.norm(
        jax.tree_util.tree_map(jnp.subtract, variables["params"], original["params"])
    )
    assert float(moved) > 1e-2


def test_kd_alone_pulls_the_student_to_the_teacher(cnn):
    model, variables, x, y = cnn
    # ctrl.transform needs steps_per_epoch even with nothing scheduled
    ctrl, cstate = nj.create_compressed_model(
        model, variables, _config(_kd("mse")), steps_per_epoch=1
    )
    tx = optax.adam(3e-3)
    step = _train_step(ctrl, tx, kd_only=True)
    student = _perturbed(variables, size=0.1)
    opt_state = tx.init(student["params"])
    losses = []
    for _ in range(30):
        student, opt_state, cstate, loss = step(student, opt_state, cstate, x, y)
        losses.append(float(loss))
    assert losses[-1] < 0.2 * losses[0]


# --- composites: the teacher is the plain original model ---------------------------


def test_composite_with_magnitude_sparsity_teacher_is_unmasked(cnn):
    model, variables, x, _ = cnn
    ctrl, cstate = nj.create_compressed_model(
        model, variables, _config(SPARSITY, _kd("mse", scale=0.5))
    )
    out, loss = _step_loss(ctrl, True)(variables, cstate, x)
    masked = ctrl.compress_params(variables["params"], cstate)
    np.testing.assert_allclose(out, model.apply({"params": masked}, x), rtol=1e-5, atol=1e-6)
    # A masked teacher would give exactly 0: the student is the same masked model.
    expected = _numpy_kd(out, model.apply(variables, x), "mse", 0.5, 1.0)
    assert expected > 1e-4
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_composite_with_quantization_teacher_is_not_quantized(cnn):
    model, variables, x, _ = cnn
    quantization = {
        "algorithm": "quantization",
        "weights": {"bits": 4},
        "activations": {"bits": 4},
        "initializer": {"range": {"num_init_samples": 16}},
    }
    ctrl, cstate = nj.create_compressed_model(
        model, variables, _config(_kd("softmax", temperature=2.0), quantization), init_data=[x]
    )
    out, loss = _step_loss(ctrl, True)(variables, cstate, x)
    plain = model.apply(variables, x)
    assert float(jnp.max(jnp.abs(out - plain))) > 1e-2  # the student is quantized
    expected = _numpy_kd(out, plain, "softmax", 1.0, 2.0)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    # Quantizing the teacher would give the student's own cross-entropy instead.
    self_entropy = _numpy_kd(out, out, "softmax", 1.0, 2.0)
    assert abs(expected - self_entropy) > 1e-3


class _BNNet(nn.Module):
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(16)(x.reshape(x.shape[0], -1))
        h = nn.BatchNorm(use_running_average=not train, momentum=0.5)(h)
        h = nn.Dropout(self.dropout, deterministic=not train)(nn.relu(h))
        return nn.Dense(10)(h)


def test_train_mode_teacher_uses_batch_statistics_and_stays_frozen():
    model = _BNNet()
    x = jax.random.normal(jax.random.key(1), (16, 8, 8, 1))
    variables = model.init(jax.random.key(0), x)
    ctrl, cstate = nj.create_compressed_model(model, variables, _config(_kd("mse")))
    student = _perturbed(variables)

    @jax.jit
    def f(variables, cstate):
        out, updates = ctrl.apply(variables, cstate, x, train=True, mutable=["batch_stats"])
        return out, updates, ctrl.loss(variables["params"], cstate)

    out, updates, loss = f(student, cstate)
    teacher_out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(loss, _numpy_kd(out, teacher_out, "mse", 1, 1), rtol=1e-5)
    assert "batch_stats" in updates
    assert_trees_equal(cstate.algorithms[KD].teacher, variables)


def test_dropout_student_draws_are_unchanged_by_kd():
    model = _BNNet(dropout=0.5)
    x = jax.random.normal(jax.random.key(1), (16, 8, 8, 1))
    variables = model.init(jax.random.key(0), x)
    ctrl, cstate = nj.create_compressed_model(model, variables, _config(_kd("softmax")))
    rngs = {"dropout": jax.random.key(7)}

    @jax.jit
    def f(variables, cstate):
        out, _ = ctrl.apply(variables, cstate, x, train=True, mutable=["batch_stats"], rngs=rngs)
        return out, ctrl.loss(variables["params"], cstate)

    out, loss = f(variables, cstate)
    plain, _ = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
    np.testing.assert_allclose(out, plain, rtol=1e-5, atol=1e-6)  # same dropout mask
    # The teacher draws its own dropout mask: same weights, other units dropped.
    assert np.isfinite(float(loss))
    assert float(loss) > _numpy_kd(out, out, "softmax", 1, 1) + 1e-3


# --- usage errors ------------------------------------------------------------------


def test_loss_without_apply_in_the_same_trace_is_refused(cnn):
    model, variables, x, _ = cnn
    ctrl, cstate = nj.create_compressed_model(model, variables, _config(SPARSITY, _kd()))
    params = variables["params"]
    message = r"compression\[1\] \(knowledge_distillation\): ctrl.loss needs ctrl.apply"
    with pytest.raises(UsageError, match=message + r".*none since the last ctrl.loss"):
        ctrl.loss(params, cstate)
    with pytest.raises(UsageError, match=message):
        jax.jit(ctrl.loss)(params, cstate)
    # an eager forward does not feed a jitted loss (nor a later trace's)
    ctrl.apply(variables, cstate, x)
    with pytest.raises(UsageError, match=message + r".*another trace"):
        jax.jit(ctrl.loss)(params, cstate)
    # one loss per forward; the facade works eagerly like NNCF's ctrl.loss()
    ctrl.apply(variables, cstate, x)
    first = ctrl.loss()
    with pytest.raises(UsageError, match=message):
        ctrl.loss()
    _, loss = _step_loss(ctrl, True)(variables, cstate, x)
    np.testing.assert_allclose(first, loss, rtol=1e-6)
    # the loss outside the forward context, or the others' quantizers would act on the teacher
    ctrl.apply(variables, cstate, x)
    with ctrl.forward_context(cstate), pytest.raises(UsageError, match="outside the context"):
        ctrl.loss(params, cstate)


def test_config_and_model_errors(cnn):
    model, variables, _, _ = cnn
    with pytest.raises(ConfigError, match=r"compression\[0\].temperature: .*'softmax' only"):
        nj.create_compressed_model(model, variables, _config(_kd("mse", temperature=2.0)))
    with pytest.raises(UsageError, match=r"needs a flax\.linen\.Module"):
        nj.create_compressed_model(
            lambda p, x: x @ p["w"], {"w": jnp.ones((3, 2))}, _config(_kd("mse"))
        )


# --- statistics, stage, state --------------------------------------------------------


def test_statistics_stage_and_compression_state(cnn):
    model, variables, _, _ = cnn
    ctrl, cstate = nj.create_compressed_model(
        model, variables, _config(_kd("softmax", scale=0.5, temperature=3.0))
    )
    stats = ctrl.statistics().knowledge_distillation
    n = sum(np.size(v) for v in jax.tree_util.tree_leaves(variables))
    assert (stats.type, stats.scale, stats.temperature) == ("softmax", 0.5, 3.0)
    assert stats.teacher_parameters == n and stats.teacher_bytes == 4 * n
    text = ctrl.statistics().to_str()
    assert "Knowledge distillation" in text and "3.0000" in text
    assert ctrl.compression_stage() == nj.CompressionStage.FULLY_COMPRESSED
    assert ctrl.compression_rate is None
    assert_trees_equal(ctrl.strip(variables, cstate), variables)
    saved = json.loads(json.dumps(ctrl.get_compression_state()))
    nj.create_compressed_model(
        model,
        variables,
        _config(_kd("softmax", scale=0.5, temperature=3.0)),
        compression_state=saved,
    )
    mse = nj.create_compressed_model(model, variables, _config(_kd("mse")))[0]
    assert mse.statistics().knowledge_distillation.temperature is None


def test_checkpoint_restores_the_original_teacher(tmp_path, cnn):
    model, variables, x, y = cnn
    config = _config(SPARSITY, _kd("mse"))
    ctrl, cstate = nj.create_compressed_model(model, variables, config)
    tx = optax.adam(1e-2)
    step = _train_step(ctrl, tx)
    trained, _, cstate, _ = step(variables, tx.init(variables["params"]), cstate, x, y)
    with CheckpointManager(tmp_path / "ck") as manager:
        manager.save(1, ctrl=ctrl, variables=trained, cstate=cstate)
        manager.wait_until_finished()
        saved = manager.read_compression_state()
        # Rebuilt from the trained weights, the template's teacher is the student...
        ctrl2, template = nj.create_compressed_model(
            model, trained, config, compression_state=saved
        )
        restored = manager.restore(variables=trained, cstate=template, ctrl=ctrl2)
    # ...and the checkpoint brings the original back.
    assert_trees_equal(restored.cstate.algorithms[KD].teacher, variables)
