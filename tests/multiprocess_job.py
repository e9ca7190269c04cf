"""One of two processes training a compressed model over a global mesh.

Usage: python multiprocess_job.py PROCESS_ID PORT OUT_DIR LAYOUT

Two processes on localhost, joined by ``jax.distributed.initialize`` (CPU
collectives over gloo), with 4 simulated CPU devices each, form a mesh: LAYOUT ``within`` is 2x4 (data axis across the processes,
model axis inside each), ``across`` is 4x2 with the model axis spanning
both processes (kernel columns live in two processes; ranges and
statistics are then gathered across processes). They build
magnitude sparsity + INT8 on params sharded along the model axis, train a
few jitted steps on batches sharded along the data axis, save with orbax,
restore into fresh templates and check the restored state equals the
trained one. Each process prints ``OK <process id> <checksum>``; the test
compares the checksums of the two processes (the state is global, so they
must agree).
"""

from __future__ import annotations

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax

PROCESS_ID, PORT, OUT_DIR, LAYOUT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(
    coordinator_address=f"localhost:{PORT}", num_processes=2, process_id=PROCESS_ID
)

import flax.linen as nn  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from design_step import design_train_step  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import nncf_jax as nj  # noqa: E402
from nncf_jax.checkpoint import CheckpointManager  # noqa: E402


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(32)(x))
        return nn.Dense(8)(x)


CONFIG = {
    "input_info": {"sample_size": [1, 16]},
    "compression": [
        {"algorithm": "magnitude_sparsity", "sparsity_init": 0.5},
        {"algorithm": "quantization"},
    ],
}


def main() -> None:
    assert jax.process_count() == 2 and len(jax.devices()) == 8, jax.devices()
    devices = np.array(jax.devices()).reshape(2, 4)  # one row per process
    mesh = Mesh(devices if LAYOUT == "within" else devices.T, ("data", "model"))
    rng = np.random.default_rng(0)  # the same data in both processes
    x_host = rng.uniform(0, 1, (16, 16)).astype(np.float32)
    y_host = rng.integers(0, 8, 16).astype(np.int32)
    host_vars = MLP().init(jax.random.key(0), x_host[:1])

    def place(tree):
        def one(_, leaf):
            spec = P(None, "model") if leaf.ndim == 2 else P()
            sharding = NamedSharding(mesh, spec)
            return jax.make_array_from_callback(leaf.shape, sharding, lambda i: leaf[i])

        return jax.tree_util.tree_map_with_path(one, tree)

    variables = place(host_vars)
    ctrl, cstate = nj.create_compressed_model(
        MLP(), variables, CONFIG, init_data=[x_host], steps_per_epoch=2
    )
    data = NamedSharding(mesh, P("data"))
    x = jax.make_array_from_callback(x_host.shape, data, lambda i: x_host[i])
    y = jax.make_array_from_callback(y_host.shape, data, lambda i: y_host[i])
    tx = optax.sgd(0.1)
    opt_state = tx.init(variables["params"])

    step = jax.jit(design_train_step(ctrl, tx))

    for _ in range(4):
        variables, opt_state, cstate = step(variables, opt_state, cstate, x, y)

    ctrl.sync(variables, cstate)
    stats = ctrl.statistics()
    level = stats.magnitude_sparsity.model_statistics.sparsity_level_for_layers
    assert abs(level - 0.5) < 0.02, level
    assert stats.quantization.wq_counter.total_count == 2
    with CheckpointManager(os.path.join(OUT_DIR, "ckpt")) as manager:
        manager.save(4, ctrl=ctrl, variables=variables, opt_state=opt_state, cstate=cstate)
    template_vars = place(host_vars)
    ctrl_t, cstate_t = nj.create_compressed_model(
        MLP(), template_vars, CONFIG, init_data=[x_host], steps_per_epoch=2
    )
    with CheckpointManager(os.path.join(OUT_DIR, "ckpt")) as manager:
        restored = manager.restore(
            variables=template_vars,
            opt_state=tx.init(template_vars["params"]),
            cstate=cstate_t,
            ctrl=ctrl_t,
        )

    gathered = multihost_utils.process_allgather(
        (cstate, variables, restored.cstate, restored.variables), tiled=True
    )
    trained_state, trained_vars, back_state, back_vars = gathered
    for a, b in zip(
        jax.tree_util.tree_leaves((trained_state, trained_vars)),
        jax.tree_util.tree_leaves((back_state, back_vars)),
        strict=True,
    ):
        assert np.array_equal(np.asarray(a), np.asarray(b)), "restored state differs"
    masks = trained_state.algorithms["magnitude_sparsity"].masks
    sparsity = float(np.mean([np.mean(~np.asarray(m)) for m in jax.tree_util.tree_leaves(masks)]))
    assert 0.4 < sparsity < 0.6, sparsity
    checksum = sum(
        float(np.sum(np.asarray(leaf, np.float64)))
        for leaf in jax.tree_util.tree_leaves(trained_vars)
    )
    print(f"OK {PROCESS_ID} {checksum:.10e}", flush=True)


if __name__ == "__main__":
    main()
