"""The quantization section of ``scripts/bench.py``: INT8 QAT overhead.

On the same digits CNN, batch and optimizer as the sparsity goals, it times
the DESIGN.md train step with 8-bit weight (symmetric, per output channel)
and activation (symmetric, per tensor) fake-quantization against the float
step, interleaved in rounds like the sparsity step ratio, and compares their
compile times (fresh functions each repeat). Goal: QAT step / float step
<= 1.3; the compile ratio is reported beside it.
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

QAT_GOAL = 1.3
BATCH = 128


def int8_config() -> dict[str, Any]:
    """INT8 weights and activations, NNCF's defaults (performance preset)."""
    return {
        "input_info": {"sample_size": [1, 8, 8, 1]},
        "compression": {
            "algorithm": "quantization",
            "initializer": {"range": {"num_init_samples": BATCH}},
        },
    }


def _timed(fn: Callable, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def bench_quantization(
    sizes: Any,
    model: Any,
    make_dense_step: Callable,
    make_compressed_step: Callable,
) -> dict[str, Any]:
    """Interleaved float/QAT step timing and compile times (seconds).

    Args:
      sizes: `bench.Sizes` (rounds, steps_per_round, warmup_steps, compile_repeats).
      model: the digits CNN module.
      make_dense_step, make_compressed_step: bench.py's step factories.
    """
    kx, ky, kinit = jax.random.split(jax.random.key(1), 3)
    x = jax.random.uniform(kx, (BATCH, 8, 8, 1), jnp.float32)
    y = jax.random.randint(ky, (BATCH,), 0, 10)
    variables = model.init(kinit, x)
    ctrl, cstate = nj.create_compressed_model(
        model, variables, int8_config(), init_data=[x], steps_per_epoch=20
    )
    tx = optax.adam(1e-3)
    dense = jax.jit(make_dense_step(model, tx))
    qat = jax.jit(make_compressed_step(ctrl, tx))
    dense_state = (variables, tx.init(variables["params"]))
    qat_state = (variables, tx.init(variables["params"]), cstate)
    for _ in range(sizes.warmup_steps):
        dense_state = jax.block_until_ready(dense(*dense_state, x, y))
        qat_state = jax.block_until_ready(qat(*qat_state, x, y))

    ratios, dense_all, qat_all = [], [], []
    for r in range(sizes.rounds):
        d_times, q_times = [], []

        def run_dense(d_times=d_times):
            nonlocal dense_state
            for _ in range(sizes.steps_per_round):
                dense_state, dt = _timed(dense, *dense_state, x, y)
                d_times.append(dt)

        def run_qat(q_times=q_times):
            nonlocal qat_state
            for _ in range(sizes.steps_per_round):
                qat_state, dt = _timed(qat, *qat_state, x, y)
                q_times.append(dt)

        for run in (run_dense, run_qat) if r % 2 == 0 else (run_qat, run_dense):
            run()
        ratios.append(statistics.median(q_times) / statistics.median(d_times))
        dense_all += d_times
        qat_all += q_times

    dense_c, qat_c = [], []
    for _ in range(sizes.compile_repeats):
        start = time.perf_counter()
        jax.jit(make_dense_step(model, tx)).lower(*dense_state, x, y).compile()
        dense_c.append(time.perf_counter() - start)
        start = time.perf_counter()
        jax.jit(make_compressed_step(ctrl, tx)).lower(*qat_state, x, y).compile()
        qat_c.append(time.perf_counter() - start)
    stats = ctrl.statistics().quantization
    return {
        "weight_quantizers": stats.wq_counter.total_count,
        "activation_quantizers": stats.aq_counter.total_count,
        "float_step_s": statistics.median(dense_all),
        "qat_step_s": statistics.median(qat_all),
        "qat_step_ratio": statistics.median(ratios),
        "qat_step_ratio_pooled": statistics.median(qat_all) / statistics.median(dense_all),
        "float_compile_s": statistics.median(dense_c),
        "qat_compile_s": statistics.median(qat_c),
        "qat_compile_ratio": statistics.median(qat_c) / statistics.median(dense_c),
        "goal": QAT_GOAL,
    }


def report_quantization(quant: dict[str, Any], console: Any) -> None:
    """Prints the INT8 QAT table."""
    from rich.table import Table

    table = Table(title="INT8 QAT (weights + activations) vs float, digits CNN, batch 128")
    for column in ("metric", "value", "goal"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    verdict = "pass" if quant["qat_step_ratio"] <= quant["goal"] else "FAIL"
    table.add_row(
        "QAT step / float step",
        f"{quant['qat_step_ratio']:.3f}",
        f"<= {quant['goal']:g} ({verdict})",
    )
    table.add_row("compile: QAT step / float step", f"{quant['qat_compile_ratio']:.3f}", "-")
    table.add_row(
        "steps (medians)",
        f"{quant['qat_step_s'] * 1e3:.2f} / {quant['float_step_s'] * 1e3:.2f} ms",
        "",
    )
    table.add_row(
        "compiles (medians)",
        f"{quant['qat_compile_s'] * 1e3:.0f} / {quant['float_compile_s'] * 1e3:.0f} ms",
        "",
    )
    table.add_row(
        "quantizers (weights / activations)",
        f"{quant['weight_quantizers']} / {quant['activation_quantizers']}",
        "",
    )
    console.print(table)
