"""Sharded compressed training on 8 simulated CPU devices (run by test_sharding.py).

Usage: python sharding_job.py OUT_DIR

Sets ``XLA_FLAGS`` before importing jax (this process only), then for 1x8
and 2x4 meshes (data x model): builds magnitude sparsity + INT8 on params
sharded along the model axis, checks every state leaf's sharding against its
param's, trains jitted steps with the batch sharded along the data axis,
compares masks and ranges with a one-device run of the same steps, and
saves with orbax and restores onto the other mesh and onto one device.
Prints ``OK <n checks>`` at the end; any failed check raises.
"""

from __future__ import annotations

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import flax.linen as nn
import jax
import numpy as np
import optax
from design_step import design_train_step
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import nncf_jax as nj
from nncf_jax.checkpoint import CheckpointManager
from nncf_jax.core.paths import flatten_params

CHECKS = 0


def check(condition: bool, what: str) -> None:
    global CHECKS
    if not condition:
        raise AssertionError(what)
    CHECKS += 1


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(64)(x))
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(8)(x)


CONFIG = {
    "input_info": {"sample_size": [1, 16]},
    "compression": [
        {
            "algorithm": "magnitude_sparsity",
            "sparsity_init": 0.3,
            "params": {
                "sparsity_target": 0.6,
                "sparsity_target_epoch": 2,
                "update_per_optimizer_step": True,
            },
        },
        {"algorithm": "quantization"},
    ],
}
STEPS_PER_EPOCH = 3
STEPS = 7


def shardings_for(variables, mesh):
    """Kernels split along the model axis (columns), everything else replicated."""

    def one(_, leaf):
        spec = P(None, "model") if leaf.ndim == 2 else P()
        return NamedSharding(mesh, spec)

    return jax.tree_util.tree_map_with_path(one, variables)


def param_sharding_of(variables, path: str):
    node = variables["params"]
    for part in path.split("/"):
        node = node[part]
    return node.sharding


def make_step(ctrl, tx):
    return jax.jit(design_train_step(ctrl, tx))


def train(variables, x, y, data_sharding=None):
    ctrl, cstate = nj.create_compressed_model(
        MLP(), variables, CONFIG, init_data=[x], steps_per_epoch=STEPS_PER_EPOCH
    )
    tx = optax.sgd(0.05)
    opt_state = tx.init(variables["params"])
    step = make_step(ctrl, tx)
    if data_sharding is not None:
        x, y = jax.device_put(x, data_sharding), jax.device_put(y, data_sharding)
    for _ in range(STEPS):
        variables, opt_state, cstate = step(variables, opt_state, cstate, x, y)
    return ctrl, variables, opt_state, cstate


def check_state_shardings(cstate, variables, mesh, where: str) -> None:
    masks = flatten_params(cstate.algorithms["magnitude_sparsity"].masks)
    for path, mask in masks.items():
        check(
            mask.sharding.is_equivalent_to(param_sharding_of(variables, path), mask.ndim),
            f"{where}: mask {path} sharded {mask.sharding}, param differently",
        )
    q = cstate.algorithms["quantization"]
    for path, leaf in flatten_params(q.weights).items():
        kernel = path.rsplit("/", 1)[0]
        expected = NamedSharding(mesh, P(param_sharding_of(variables, kernel).spec[-1]))
        check(
            leaf.sharding.is_equivalent_to(expected, leaf.ndim),
            f"{where}: weight range {path} sharded {leaf.sharding}, expected {expected}",
        )
    for path, leaf in flatten_params(q.activations).items():
        check(
            leaf.sharding.is_equivalent_to(NamedSharding(mesh, P()), leaf.ndim),
            f"{where}: activation range {path} not replicated: {leaf.sharding}",
        )


def same(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(u), np.asarray(v))
        for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


def main(out_dir: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (32, 16)).astype(np.float32)
    y = rng.integers(0, 8, 32).astype(np.int32)
    variables = MLP().init(jax.random.key(0), x[:1])
    _, _, _, single = train(variables, x, y)
    check(len(jax.devices()) == 8, "8 simulated devices")

    meshes = {
        "1x8": Mesh(np.array(jax.devices()).reshape(1, 8), ("data", "model")),
        "2x4": Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model")),
    }
    for name, mesh in meshes.items():
        sharded = jax.device_put(variables, shardings_for(variables, mesh))
        ctrl, cstate0 = nj.create_compressed_model(
            MLP(), sharded, CONFIG, init_data=[x], steps_per_epoch=STEPS_PER_EPOCH
        )
        check_state_shardings(cstate0, sharded, mesh, f"{name} initial")
        ctrl, trained, opt_state, cstate = train(sharded, x, y, NamedSharding(mesh, P("data")))
        check_state_shardings(cstate, trained, mesh, f"{name} after {STEPS} steps")
        # Exact global threshold and ranges: the same masks as on one device.
        check(
            same(
                cstate.algorithms["magnitude_sparsity"].masks,
                single.algorithms["magnitude_sparsity"].masks,
            ),
            f"{name}: masks differ from the one-device run",
        )
        q, q1 = cstate.algorithms["quantization"], single.algorithms["quantization"]
        check(same(q.weights, q1.weights), f"{name}: weight ranges differ from one device")
        # Activation ranges come from forwards whose matmuls are split
        # differently: equal up to float summation order.
        for a, b in zip(
            jax.tree_util.tree_leaves(q.activations),
            jax.tree_util.tree_leaves(q1.activations),
            strict=True,
        ):
            check(
                np.allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=0),
                f"{name}: activation range {np.asarray(a)} vs one device {np.asarray(b)}",
            )
        # Save sharded; restore onto the other mesh and onto one device.
        root = os.path.join(out_dir, name)
        with CheckpointManager(root) as manager:
            manager.save(STEPS, ctrl=ctrl, variables=trained, opt_state=opt_state, cstate=cstate)
        other = meshes["2x4" if name == "1x8" else "1x8"]
        targets = {
            "other mesh": shardings_for(variables, other),
            "one device": jax.tree_util.tree_map(lambda _: jax.devices()[0], variables),
        }
        for target_name, placement in targets.items():
            template_vars = jax.device_put(variables, placement)
            ctrl_t, cstate_t = nj.create_compressed_model(
                MLP(), template_vars, CONFIG, init_data=[x], steps_per_epoch=STEPS_PER_EPOCH
            )
            template_opt = optax.sgd(0.05).init(template_vars["params"])
            with CheckpointManager(root) as manager:
                restored = manager.restore(
                    variables=template_vars, opt_state=template_opt, cstate=cstate_t, ctrl=ctrl_t
                )
            check(same(restored.cstate, cstate), f"{name} -> {target_name}: state differs")
            check(same(restored.variables, trained), f"{name} -> {target_name}: params differ")
            if target_name == "other mesh":
                check_state_shardings(
                    restored.cstate, restored.variables, other, f"{name} -> other"
                )
            else:
                leaves = jax.tree_util.tree_leaves(restored.cstate)
                check(
                    all(len(leaf.sharding.device_set) == 1 for leaf in leaves),
                    f"{name} -> one device: leaves on several devices",
                )
    print(f"OK {CHECKS}")


if __name__ == "__main__":
    main(sys.argv[1])
