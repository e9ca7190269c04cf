"""The model-size suite of `scripts/bench.py`: how the overheads grow with the model.

For three models, an MLP (~1.1M params), the digits CNN of the goals
(~0.54M) and a ResNet-style CNN (~11M, four stages of two residual blocks,
32x32x3 inputs), it times the DESIGN.md train step four ways: dense,
magnitude sparsity (50%), INT8 weights + activations, and sparsity + INT8.
Per model: each compressed step / the dense step (medians over interleaved
rounds), compile time of each / dense, and compression-state bytes / param
bytes. Also the global mask refresh at 25M and 100M params over one read of
them (``--quick``: 1M and 4M).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import nncf_jax as nj
from nncf_jax.sparsity.magnitude import magnitude_masks

VARIANTS = ("dense", "sparsity", "int8", "sparsity+int8")


@dataclass(frozen=True)
class SuiteSizes:
    """Work per measurement: rounds of interleaved steps, compiles, refresh sizes."""

    rounds: int
    steps_per_round: int
    compile_repeats: int
    refresh_params: tuple[int, ...]
    resnet_batch: int


FULL = SuiteSizes(
    rounds=8,
    steps_per_round=3,
    compile_repeats=2,
    refresh_params=(25_000_000, 100_000_000),
    resnet_batch=32,
)
QUICK = SuiteSizes(
    rounds=2,
    steps_per_round=1,
    compile_repeats=1,
    refresh_params=(1_000_000, 2_000_000),
    resnet_batch=2,
)


class MLP(nn.Module):
    """784-1024-256-10: 1,068,810 params."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(1024)(x))
        x = nn.relu(nn.Dense(256)(x))
        return nn.Dense(10)(x)


class DigitsCNN(nn.Module):
    """The digits CNN of NOTES.md and of bench.py's goals: conv32-conv64-dense128-dense10
    on 8x8x1 (no pooling), 544,522 params."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(32, (3, 3))(x))
        x = nn.relu(nn.Conv(64, (3, 3))(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(10)(x)


class ResBlock(nn.Module):
    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        y = nn.relu(nn.Conv(self.features, (3, 3), strides=self.stride)(x))
        y = nn.Conv(self.features, (3, 3))(y)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1), strides=self.stride)(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """ResNet-18-style on 32x32x3: 64-128-256-512, two blocks per stage (~11.2M params)."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(64, (3, 3))(x))
        for i, features in enumerate((64, 128, 256, 512)):
            x = ResBlock(features, stride=1 if i == 0 else 2)(x)
            x = ResBlock(features)(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(10)(x)


def _configs(sample: tuple[int, ...]) -> dict[str, list[dict[str, Any]]]:
    sparsity = {"algorithm": "magnitude_sparsity", "sparsity_init": 0.5}
    int8 = {"algorithm": "quantization"}
    return {
        "dense": [],
        "sparsity": [sparsity],
        "int8": [int8],
        "sparsity+int8": [sparsity, int8],
    }


def _step(model: nn.Module, ctrl: Any, tx: Any) -> Callable:
    def step(variables, opt_state, cstate, x, y):
        def loss_fn(params):
            logits = ctrl.apply({**variables, "params": params}, cstate, x)
            task = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return task + ctrl.loss(params, cstate)

        params = variables["params"]
        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        updates, cstate = ctrl.transform.update(updates, cstate, params)
        return {**variables, "params": optax.apply_updates(params, updates)}, opt_state, cstate

    return step


def _bytes(tree: Any) -> int:
    return sum(int(np.asarray(leaf).nbytes) for leaf in jax.tree_util.tree_leaves(tree))


def bench_model(
    name: str, model: nn.Module, shape: tuple[int, ...], batch: int, sizes: SuiteSizes
) -> dict[str, Any]:
    """Step, compile and state-bytes ratios of the four variants on one model."""
    kx, ky, kinit = jax.random.split(jax.random.key(0), 3)
    x = jax.random.uniform(kx, (batch, *shape), jnp.float32)
    y = jax.random.randint(ky, (batch,), 0, 10)
    variables = model.init(kinit, x[:1])
    tx = optax.adam(1e-3)
    runs = {}
    for variant, compression in _configs(shape).items():
        config = {"input_info": {"sample_size": [1, *shape]}, "compression": compression}
        # Masks refresh once per epoch: a long epoch keeps refreshes out of the timed steps.
        ctrl, cstate = nj.create_compressed_model(
            model, variables, config, init_data=[x], steps_per_epoch=10_000
        )
        step = _step(model, ctrl, tx)
        state = (variables, tx.init(variables["params"]), cstate)
        started = time.perf_counter()
        compiled = jax.jit(step).lower(*state, x, y).compile()
        first_compile = time.perf_counter() - started
        compiles = [first_compile]
        for _ in range(sizes.compile_repeats - 1):
            started = time.perf_counter()
            jax.jit(_step(model, ctrl, tx)).lower(*state, x, y).compile()
            compiles.append(time.perf_counter() - started)
        state = jax.block_until_ready(compiled(*state, x, y))  # warm-up, and the first tick
        runs[variant] = {
            "fn": compiled,
            "state": state,
            "compile_s": statistics.median(compiles),
            "state_bytes": _bytes(cstate),
            "times": [],
        }
    per_round: dict[str, list[float]] = {v: [] for v in VARIANTS if v != "dense"}
    for r in range(sizes.rounds):
        order = list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]
        medians = {}
        for variant in order:
            run = runs[variant]
            times = []
            for _ in range(sizes.steps_per_round):
                started = time.perf_counter()
                run["state"] = jax.block_until_ready(run["fn"](*run["state"], x, y))
                times.append(time.perf_counter() - started)
            run["times"] += times
            medians[variant] = statistics.median(times)
        for variant in per_round:
            per_round[variant].append(medians[variant] / medians["dense"])
    param_bytes = _bytes(variables["params"])
    out: dict[str, Any] = {
        "model": name,
        "params": sum(int(np.size(p)) for p in jax.tree_util.tree_leaves(variables["params"])),
        "batch": batch,
        "dense_step_s": statistics.median(runs["dense"]["times"]),
        "dense_compile_s": runs["dense"]["compile_s"],
    }
    for variant in per_round:
        key = variant.replace("+", "_")
        out[f"{key}_step_s"] = statistics.median(runs[variant]["times"])
        out[f"{key}_step_ratio"] = statistics.median(per_round[variant])
        out[f"{key}_compile_ratio"] = runs[variant]["compile_s"] / runs["dense"]["compile_s"]
        out[f"{key}_state_bytes_ratio"] = runs[variant]["state_bytes"] / param_bytes
    return out


def bench_refresh_sizes(sizes: SuiteSizes) -> list[dict[str, Any]]:
    """Global magnitude mask computation over one read, at each size."""
    out = []
    for n in sizes.refresh_params:
        cols = 4096
        rows = max(1, n // (3 * cols))
        keys = jax.random.split(jax.random.key(1), 3)
        weights = [jax.random.normal(k, (rows, cols), jnp.float32) for k in keys]
        read = jax.jit(lambda ws: sum(jnp.sum(w) for w in ws))
        masks = jax.jit(
            lambda ws: magnitude_masks(ws, jnp.float32(0.5), importance="normed_abs")[0]
        )
        jax.block_until_ready(read(weights))
        jax.block_until_ready(masks(weights))
        reads, refreshes = [], []
        for _ in range(3):
            started = time.perf_counter()
            jax.block_until_ready(read(weights))
            reads.append(time.perf_counter() - started)
            started = time.perf_counter()
            jax.block_until_ready(masks(weights))
            refreshes.append(time.perf_counter() - started)
        read_s, refresh_s = statistics.median(reads), statistics.median(refreshes)
        out.append(
            {
                "params": 3 * rows * cols,
                "read_s": read_s,
                "refresh_s": refresh_s,
                "refresh_ratio": refresh_s / read_s,
            }
        )
        del weights
    return out


def bench_suite(quick: bool) -> dict[str, Any]:
    """Runs the suite; see the module docstring."""
    sizes = QUICK if quick else FULL
    models = [
        ("MLP", MLP(), (784,), 128),
        ("digits CNN", DigitsCNN(), (8, 8, 1), 128),
        ("ResNet-style CNN", ResNet(), (32, 32, 3), sizes.resnet_batch),
    ]
    return {
        "models": [
            bench_model(name, model, shape, batch, sizes) for name, model, shape, batch in models
        ],
        "refresh": bench_refresh_sizes(sizes),
    }


def report_suite(suite: dict[str, Any], console: Any) -> None:
    """Prints the suite's two tables."""
    from rich.table import Table

    table = Table(
        title="model-size suite: compressed step / dense step (compile ratio; state bytes / params)"
    )
    table.add_column("model")
    table.add_column("params", justify="right")
    table.add_column("dense step", justify="right")
    for variant in VARIANTS[1:]:
        table.add_column(variant, justify="right")
    for m in suite["models"]:
        cells = []
        for variant in VARIANTS[1:]:
            key = variant.replace("+", "_")
            cells.append(
                f"{m[f'{key}_step_ratio']:.3f} ({m[f'{key}_compile_ratio']:.2f}; "
                f"{m[f'{key}_state_bytes_ratio']:.3f})"
            )
        table.add_row(
            m["model"],
            f"{m['params']:,}",
            f"{m['dense_step_s'] * 1e3:.2f} ms (b{m['batch']})",
            *cells,
        )
    console.print(table)
    refresh = Table(title="global mask refresh / one read of the params")
    for column in ("params", "one read", "refresh", "ratio"):
        refresh.add_column(column, justify="right")
    for r in suite["refresh"]:
        refresh.add_row(
            f"{r['params']:,}",
            f"{r['read_s'] * 1e3:.2f} ms",
            f"{r['refresh_s'] * 1e3:.1f} ms",
            f"{r['refresh_ratio']:.1f}",
        )
    console.print(refresh)
