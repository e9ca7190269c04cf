"""The RB sparsity section of ``scripts/bench.py``: the cost of learned masks.

On the same digits CNN, batch and optimizer as the sparsity goals, it times
an RB-sparsity train step against the dense step, interleaved in rounds like
the magnitude step ratio. The RB step is the one RB needs (docs/algorithms.md):
it differentiates the params and the logits (``ctrl.trainable``), updates
both with one Adam over ``{"params", "compression"}``, samples fresh
stochastic masks each step and adds the RB loss. Goal: RB step / dense step
<= 1.1; the compile ratio is reported beside it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import nncf_jax as nj

RB_GOAL = 1.1
BATCH = 128
STEPS_PER_EPOCH = 20


def rb_config() -> dict[str, Any]:
    """RB sparsity towards 50% (NNCF's default exponential schedule), never frozen here."""
    return {
        "input_info": {"sample_size": [1, 8, 8, 1]},
        "compression": {
            "algorithm": "rb_sparsity",
            "params": {
                "sparsity_target": 0.5,
                "sparsity_target_epoch": 10,
                "sparsity_freeze_epoch": 1_000_000,
                "steps_per_epoch": STEPS_PER_EPOCH,
            },
        },
    }


def _xent(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_rb_step(ctrl: nj.CompressionController, tx: optax.GradientTransformation) -> Callable:
    """The RB train step: params and logits differentiated, one optimizer (a new function each call)."""

    def rb_step(variables, opt_state, cstate, x, y):
        def loss_fn(params, trainable):
            cs = ctrl.with_trainable(cstate, trainable)
            logits = ctrl.apply({**variables, "params": params}, cs, x)
            return _xent(logits, y) + ctrl.loss(params, cs)

        params, trainable = variables["params"], ctrl.trainable(cstate)
        grads, t_grads = jax.grad(loss_fn, argnums=(0, 1))(params, trainable)
        tree = {"params": params, "compression": trainable}
        updates, opt_state = tx.update({"params": grads, "compression": t_grads}, opt_state, tree)
        cstate = ctrl.with_trainable(cstate, optax.apply_updates(trainable, updates["compression"]))
        p_updates, cstate = ctrl.transform.update(updates["params"], cstate, params)
        return {**variables, "params": optax.apply_updates(params, p_updates)}, opt_state, cstate

    return rb_step


def _timed(fn: Callable, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def bench_rb(sizes: Any, model: Any, make_dense_step: Callable) -> dict[str, Any]:
    """Interleaved dense/RB step timing and compile times (seconds).

    Args:
      sizes: `bench.Sizes` (rounds, steps_per_round, warmup_steps, compile_repeats).
      model: the digits CNN module.
      make_dense_step: bench.py's dense step factory.
    """
    kx, ky, kinit = jax.random.split(jax.random.key(2), 3)
    x = jax.random.normal(kx, (BATCH, 8, 8, 1), jnp.float32)
    y = jax.random.randint(ky, (BATCH,), 0, 10)
    variables = model.init(kinit, x)
    ctrl, cstate = nj.create_compressed_model(model, variables, rb_config())
    tx = optax.adam(1e-3)
    dense = jax.jit(make_dense_step(model, tx))
    rb = jax.jit(make_rb_step(ctrl, tx))
    dense_state = (variables, tx.init(variables["params"]))
    opt_state = tx.init({"params": variables["params"], "compression": ctrl.trainable(cstate)})
    rb_state = (variables, opt_state, cstate)
    for _ in range(sizes.warmup_steps):
        dense_state = jax.block_until_ready(dense(*dense_state, x, y))
        rb_state = jax.block_until_ready(rb(*rb_state, x, y))

    ratios, dense_all, rb_all = [], [], []
    for r in range(sizes.rounds):
        d_times, s_times = [], []

        def run_dense(d_times=d_times):
            nonlocal dense_state
            for _ in range(sizes.steps_per_round):
                dense_state, dt = _timed(dense, *dense_state, x, y)
                d_times.append(dt)

        def run_rb(s_times=s_times):
            nonlocal rb_state
            for _ in range(sizes.steps_per_round):
                rb_state, dt = _timed(rb, *rb_state, x, y)
                s_times.append(dt)

        for run in (run_dense, run_rb) if r % 2 == 0 else (run_rb, run_dense):
            run()
        ratios.append(statistics.median(s_times) / statistics.median(d_times))
        dense_all += d_times
        rb_all += s_times

    dense_c, rb_c = [], []
    for _ in range(sizes.compile_repeats):
        start = time.perf_counter()
        jax.jit(make_dense_step(model, tx)).lower(*dense_state, x, y).compile()
        dense_c.append(time.perf_counter() - start)
        start = time.perf_counter()
        jax.jit(make_rb_step(ctrl, tx)).lower(*rb_state, x, y).compile()
        rb_c.append(time.perf_counter() - start)
    ctrl.sync(rb_state[0], rb_state[2])
    return {
        "targeted_weights": len(ctrl.algorithms[0].targets),
        "dense_step_s": statistics.median(dense_all),
        "rb_step_s": statistics.median(rb_all),
        "rb_step_ratio": statistics.median(ratios),
        "rb_step_ratio_pooled": statistics.median(rb_all) / statistics.median(dense_all),
        "dense_compile_s": statistics.median(dense_c),
        "rb_compile_s": statistics.median(rb_c),
        "rb_compile_ratio": statistics.median(rb_c) / statistics.median(dense_c),
        "steps_trained": int(rb_state[2].step) + 1,
        "goal": RB_GOAL,
    }


def report_rb(result: dict[str, Any], console: Any) -> None:
    """Prints the RB sparsity table."""
    from rich.table import Table

    table = Table(title="RB sparsity (logits trained, stochastic masks) vs dense, digits CNN")
    for column in ("metric", "value", "goal"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    verdict = "pass" if result["rb_step_ratio"] <= result["goal"] else "FAIL"
    table.add_row(
        "RB step / dense step",
        f"{result['rb_step_ratio']:.3f}",
        f"<= {result['goal']:g} ({verdict})",
    )
    table.add_row("compile: RB step / dense step", f"{result['rb_compile_ratio']:.3f}", "-")
    table.add_row(
        "steps (medians)",
        f"{result['rb_step_s'] * 1e3:.2f} / {result['dense_step_s'] * 1e3:.2f} ms",
        "",
    )
    table.add_row(
        "compiles (medians)",
        f"{result['rb_compile_s'] * 1e3:.0f} / {result['dense_compile_s'] * 1e3:.0f} ms",
        "",
    )
    console.print(table)


if __name__ == "__main__":
    # Standalone: the RB section alone, full or --quick sizes of bench.py.
    import sys

    from bench import FULL, QUICK, DigitsCNN, make_dense_step
    from rich.console import Console

    sizes = QUICK if "--quick" in sys.argv[1:] else FULL
    report_rb(bench_rb(sizes, DigitsCNN(), make_dense_step), Console(width=120))
