"""The digits example with a Flax NNX model: the same compression, NNX-style.

``python -m nncf_jax.examples.digits_nnx configs/digits_sparsity_int8.json``

A compact version of the main job for NNX users: the digits CNN written with
``flax.nnx`` layers, wrapped in `nncf_jax.NNXModel`, compressed from an NNCF
config with DESIGN.md's train step (``ctrl.apply`` / ``ctrl.loss`` /
``ctrl.transform``), evaluated compressed and after writing the stripped
weights back into the NNX module. No checkpoints, plots or export: the main
job (`nncf_jax.examples.digits`) has those for linen models.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import nncf_jax as nj
from nncf_jax.examples.digits_data import NUM_CLASSES, calibration_batches, load_digits_data

__all__ = ["NNXDigitsCNN", "NNXRunResult", "run"]


class NNXDigitsCNN(nnx.Module):
    """conv3×3(32)-relu, conv3×3(64)-relu, avgpool 2×2, dense(128)-relu, dense(10).

    The NNX twin of `nncf_jax.examples.digits_data.CNN` (151,306 params).
    """

    def __init__(self, rngs: nnx.Rngs):
        self.conv0 = nnx.Conv(1, 32, (3, 3), rngs=rngs)
        self.conv1 = nnx.Conv(32, 64, (3, 3), rngs=rngs)
        self.dense0 = nnx.Linear(4 * 4 * 64, 128, rngs=rngs)
        self.dense1 = nnx.Linear(128, NUM_CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.conv0(x))
        x = nnx.relu(self.conv1(x))
        x = nnx.avg_pool(x, (2, 2), strides=(2, 2))
        x = nnx.relu(self.dense0(x.reshape(x.shape[0], -1)))
        return self.dense1(x)


@dataclass(frozen=True)
class NNXRunResult:
    """What `run` measured.

    Attributes:
      test_accuracy: the compressed forward on the test images, a fraction.
      nnx_test_accuracy: the NNX module itself after ``NNXModel.update``
        with the stripped variables (no activation quantizers: weights only).
      statistics: ``ctrl.statistics().to_str()`` at the end.
      seconds: wall time of the training loop.
    """

    test_accuracy: float
    nnx_test_accuracy: float
    statistics: str
    seconds: float


def run(config_path: str, *, epochs: int | None = None, seed: int = 0) -> NNXRunResult:
    """Trains the NNX digits CNN with the config's compression.

    Args:
      config_path: an NNCF JSON config (its ``epochs``, ``batch_size`` and
        ``optimizer.base_lr`` are used when present).
      epochs: overrides the config's ``epochs``.
      seed: initialisation and batch order.
    """
    config = nj.NNCFConfig.from_json(config_path)
    epochs = int(epochs if epochs is not None else config.get("epochs", 10))
    batch = int(config.get("batch_size", 128))
    lr = float(config.get("optimizer", {}).get("base_lr", 2e-3))
    data = load_digits_data()
    model = NNXDigitsCNN(nnx.Rngs(seed))
    wrapped = nj.NNXModel(model)
    steps = len(data.x_train) // batch
    ctrl, cstate = nj.create_compressed_model(
        model,
        wrapped.variables,
        config,
        init_data=calibration_batches(data.x_train, batch),
        steps_per_epoch=steps,
    )
    tx = optax.adam(lr)
    variables = wrapped.variables
    opt_state = tx.init(variables["params"])

    @jax.jit
    def step(variables: Any, opt_state: Any, cstate: Any, x: jax.Array, y: jax.Array):
        def loss_fn(params):
            logits = ctrl.apply({**variables, "params": params}, cstate, x)
            task = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return task + ctrl.loss(params, cstate)

        params = variables["params"]
        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        updates, cstate = ctrl.transform.update(updates, cstate, params)
        return {**variables, "params": optax.apply_updates(params, updates)}, opt_state, cstate

    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for _ in range(epochs):
        order = rng.permutation(len(data.x_train))
        for i in range(steps):
            index = order[i * batch : (i + 1) * batch]
            variables, opt_state, cstate = step(
                variables, opt_state, cstate, data.x_train[index], data.y_train[index]
            )
    jax.block_until_ready(variables)
    seconds = time.perf_counter() - started
    x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    logits = jax.jit(ctrl.apply)(variables, cstate, x_test)
    accuracy = float(jnp.mean(jnp.argmax(logits, -1) == y_test))
    wrapped.update(model, ctrl.strip(variables, cstate))
    nnx_accuracy = float(jnp.mean(jnp.argmax(model(x_test), -1) == y_test))
    ctrl.sync(variables, cstate)
    return NNXRunResult(accuracy, nnx_accuracy, ctrl.statistics().to_str(), seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="an NNCF JSON config, e.g. configs/digits_int8.json")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(args.config, epochs=args.epochs, seed=args.seed)
    print(result.statistics)
    print(
        f"test accuracy: compressed {result.test_accuracy:.2%}, NNX module with stripped "
        f"weights {result.nnx_test_accuracy:.2%} ({result.seconds:.1f} s of training)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
