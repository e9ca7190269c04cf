"""Soak: thousands of jitted steps with schedule changes, a freeze, checkpoints and restores.

Asserts that nothing recompiles after warm-up (XLA backend compilations are
counted through `jax.monitoring`) and that host memory does not grow.
Bounded: about 4,000 steps of a small MLP, well under a minute on 2 cores.
"""

from __future__ import annotations

import gc
import resource

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nncf_jax as nj
from nncf_jax.checkpoint import CheckpointManager

STEPS_PER_EPOCH = 40
EPOCHS = 100
CONFIG = {
    "compression": {
        "algorithm": "magnitude_sparsity",
        "sparsity_init": 0.05,
        "params": {
            "schedule": "polynomial",
            "sparsity_target": 0.7,
            "sparsity_target_epoch": 40,
            "sparsity_freeze_epoch": 60,
            "update_per_optimizer_step": True,
            "steps_per_epoch": STEPS_PER_EPOCH,
        },
    }
}

_compiles: list[str] = []


def _on_event(event: str, duration: float, **_: object) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _compiles.append(event)


jax.monitoring.register_event_duration_secs_listener(_on_event)


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(64)(x))
        x = nn.relu(nn.Dense(64)(x))
        return nn.Dense(4)(x)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # pragma: no cover


@pytest.mark.slow
def test_soak_no_recompilation_no_memory_growth(tmp_path):
    model = MLP()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 16)))
    ctrl, cstate = nj.create_compressed_model(model, variables, CONFIG)
    tx = optax.adam(1e-3)
    opt_state = tx.init(variables["params"])
    # Orbax restores arrays committed to their device, and jit keys its cache
    # on committed-ness: commit everything up front, as a multi-device user
    # does, so an in-process restore does not cost one more compilation.
    device = jax.devices()[0]
    variables, opt_state, cstate = jax.device_put((variables, opt_state, cstate), device)

    @jax.jit
    def train_step(variables, opt_state, cstate, x, y):
        def loss_fn(params):
            logits = ctrl.apply({**variables, "params": params}, cstate, x)
            xent = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return xent + ctrl.loss(params, cstate)

        params = variables["params"]
        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        updates, cstate = ctrl.transform.update(updates, cstate, params)
        return {**variables, "params": optax.apply_updates(params, updates)}, opt_state, cstate

    rng = np.random.default_rng(0)
    data_x = jax.device_put(jnp.asarray(rng.standard_normal((64, 8, 16)), jnp.float32), device)
    data_y = jax.device_put(jnp.asarray(rng.integers(0, 4, (64, 8)), jnp.int32), device)
    levels = []
    rss = {}
    warm_up_steps = 2 * STEPS_PER_EPOCH
    with CheckpointManager(tmp_path / "ckpt", max_to_keep=2) as manager:
        for step in range(STEPS_PER_EPOCH * EPOCHS):
            i = step % 64
            variables, opt_state, cstate = train_step(
                variables, opt_state, cstate, data_x[i], data_y[i]
            )
            if (step + 1) % (10 * STEPS_PER_EPOCH) == 0:
                # Every 10 epochs: statistics through the facade, a checkpoint,
                # and a restore that the run continues from.
                ctrl.sync(variables, cstate)
                levels.append(ctrl.scheduler.current_sparsity_level)
                ctrl.statistics()
                manager.save(
                    step + 1, ctrl=ctrl, variables=variables, opt_state=opt_state, cstate=cstate
                )
                restored = manager.restore(variables=variables, opt_state=opt_state, cstate=cstate)
                for a, b in zip(
                    jax.tree.leaves((variables, opt_state, cstate)),
                    jax.tree.leaves((restored.variables, restored.opt_state, restored.cstate)),
                    strict=True,
                ):
                    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
                variables, opt_state, cstate = (
                    restored.variables,
                    restored.opt_state,
                    restored.cstate,
                )
            if step + 1 == warm_up_steps:
                jax.block_until_ready(cstate)
                compiles_after_warm_up = len(_compiles)
            if step + 1 == 10 * STEPS_PER_EPOCH:
                compiles_after_first_round = len(_compiles)
            if (step + 1) in (20 * STEPS_PER_EPOCH, EPOCHS * STEPS_PER_EPOCH):
                gc.collect()
                rss[step + 1] = _rss_mb()
    # The train step never recompiles; the first statistics/checkpoint round
    # (epoch 10) compiles its small host-side helpers once, later rounds none.
    assert train_step._cache_size() == 1
    assert compiles_after_first_round - compiles_after_warm_up <= 8
    assert len(_compiles) == compiles_after_first_round, (
        f"{len(_compiles) - compiles_after_first_round} compilations after the first round"
    )
    # The schedule moved and then froze at epoch 60 (level of epoch 59.975).
    assert levels[0] < levels[2] < levels[3]
    assert levels[5] == levels[6] == levels[-1]
    assert levels[-1] == pytest.approx(0.7, abs=1e-6)
    growth = rss[EPOCHS * STEPS_PER_EPOCH] - rss[20 * STEPS_PER_EPOCH]
    assert growth < 40, f"host memory grew by {growth:.1f} MB over the run"
