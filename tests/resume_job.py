"""A small training job for the resume test: train, checkpoint, stop, resume.

Usage: python resume_job.py OUT_DIR TOTAL_STEPS [--stop-after K] [--resume]
Writes OUT_DIR/final.npz with every leaf of params, optimizer state and
compression state after TOTAL_STEPS steps.
"""

from __future__ import annotations

import argparse
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import nncf_jax as nj
from nncf_jax.checkpoint import CheckpointManager


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x)).reshape(x.shape[0], -1)
        return nn.Dense(10)(x)


CONFIG = {
    "compression": {
        "algorithm": "magnitude_sparsity",
        "sparsity_init": 0.1,
        "params": {
            "sparsity_target": 0.6,
            "sparsity_target_epoch": 3,
            "update_per_optimizer_step": True,
            "steps_per_epoch": 3,
        },
    }
}


def batch(step):
    key = jax.random.fold_in(jax.random.key(42), step)
    x = jax.random.normal(key, (8, 8, 8, 1))
    y = jax.random.randint(jax.random.fold_in(key, 1), (8,), 0, 10)
    return x, y


def build():
    """The job's model, optimizer and jitted step: ``(ctrl, variables, opt_state, cstate, step)``."""
    model = Net()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    ctrl, cstate = nj.create_compressed_model(model, variables, CONFIG)
    tx = optax.adam(1e-2)
    opt_state = tx.init(variables["params"])

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

    return ctrl, variables, opt_state, cstate, train_step


def save_leaves(path, variables, opt_state, cstate):
    """Every leaf of params, optimizer state and compression state, in tree order."""
    leaves = jax.tree.leaves((variables, opt_state, cstate))
    np.savez(path, *[np.asarray(leaf) for leaf in leaves])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("total", type=int)
    parser.add_argument("--stop-after", type=int)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    out = pathlib.Path(args.out)

    ctrl, variables, opt_state, cstate, train_step = build()
    start = 0
    with CheckpointManager(out / "ckpt", max_to_keep=2) as manager:
        if args.resume:
            restored = manager.restore(
                variables=variables, opt_state=opt_state, cstate=cstate, ctrl=ctrl
            )
            variables, opt_state, cstate = restored.variables, restored.opt_state, restored.cstate
            start = restored.step
        for step in range(start, args.total):
            variables, opt_state, cstate = train_step(variables, opt_state, cstate, *batch(step))
            if args.stop_after is not None and step + 1 == args.stop_after:
                manager.save(
                    step + 1, ctrl=ctrl, variables=variables, opt_state=opt_state, cstate=cstate
                )
                return
    save_leaves(out / "final.npz", variables, opt_state, cstate)


if __name__ == "__main__":
    main()
