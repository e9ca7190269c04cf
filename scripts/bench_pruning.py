"""Filter pruning overhead and the shrunk model's speed (issue 4).

On `nncf_jax.examples.digits_resnet` (8x8x1 inputs, Adam):

1. **step ratio** (goal <= 1.05): a jitted filter-pruning train step
   (``ctrl.apply`` with group masks, ``ctrl.transform.update``) over the same
   step without compression, batch 128, on a steady (non-refreshing) tick.
2. **shrunk inference ratio** (goal <= 0.7): ``jax.jit`` of the forward of
   `nncf_jax.pruning.shrink` at pruning level 0.4 (stem and downsample groups
   pruned too) over the dense model's jitted forward, batch 512.

Dense and compressed calls alternate so both see the same machine load;
numbers are medians. Run: ``python scripts/bench_pruning.py [--quick]``.
Not wired into ``scripts/bench.py``: call ``bench_pruning(quick)`` and
``report_pruning(result, print)`` from there.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import nncf_jax as nj
from nncf_jax.examples.digits_resnet import resnet
from nncf_jax.pruning import shrink

__all__ = ["bench_pruning", "report_pruning"]


def _config(level: float) -> dict[str, Any]:
    return {
        "input_info": {"sample_size": [1, 8, 8, 1]},
        "compression": {
            "algorithm": "filter_pruning",
            "params": {
                "schedule": "baseline",
                "pruning_target": level,
                "prune_first_conv": True,
                "prune_downsample_convs": True,
            },
        },
    }


def _xent(logits, y):
    return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def _time(fn: Callable[..., Any], *args: Any) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def bench_pruning(quick: bool = False) -> dict[str, Any]:
    """Medians of the pruning/dense train step and shrunk/dense inference."""
    repeats = 10 if quick else 40
    model = resnet()
    x = jax.random.normal(jax.random.key(0), (128, 8, 8, 1))
    y = jnp.arange(128) % 10
    variables = model.init(jax.random.key(1), x[:1])
    tx = optax.adam(1e-3)
    ctrl, cstate = nj.create_compressed_model(model, variables, _config(0.4), steps_per_epoch=10**6)

    @jax.jit
    def dense_step(params, opt_state):
        grads = jax.grad(lambda p: _xent(model.apply({"params": p}, x), y))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    @jax.jit
    def pruned_step(params, opt_state, cstate):
        grads = jax.grad(lambda p: _xent(ctrl.apply({"params": p}, cstate, x), y))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        updates, cstate = ctrl.transform.update(updates, cstate, params)
        return optax.apply_updates(params, updates), opt_state, cstate

    params, opt = variables["params"], tx.init(variables["params"])
    p_params, p_opt, p_state = params, opt, cstate
    dense_times, pruned_times = [], []
    for i in range(repeats + 3):
        d = _time(dense_step, params, opt)
        out = pruned_step(p_params, p_opt, p_state)  # first tick refreshes: keep it out
        p_params, p_opt, p_state = jax.block_until_ready(out)
        p = _time(pruned_step, p_params, p_opt, p_state)
        if i >= 3:
            dense_times.append(d)
            pruned_times.append(p)

    ctrl.scheduler.epoch_step()
    xb = jax.random.normal(jax.random.key(2), (512, 8, 8, 1))
    small, forward = shrink(ctrl, variables, ctrl.state)
    dense_fwd = jax.jit(model.apply)
    small_fwd = jax.jit(forward)
    dense_inf, small_inf = [], []
    for i in range(repeats + 3):
        d = _time(dense_fwd, variables, xb)
        s = _time(small_fwd, small, xb)
        if i >= 3:
            dense_inf.append(d)
            small_inf.append(s)
    stats = ctrl.statistics().filter_pruning
    med = statistics.median
    return {
        "dense_step_ms": 1e3 * med(dense_times),
        "pruning_step_ms": 1e3 * med(pruned_times),
        "step_ratio": med(pruned_times) / med(dense_times),
        "dense_inference_ms": 1e3 * med(dense_inf),
        "shrunk_inference_ms": 1e3 * med(small_inf),
        "inference_ratio": med(small_inf) / med(dense_inf),
        "flops": (stats.full_flops, stats.current_flops),
        "params": (stats.full_params, stats.current_params),
    }


def report_pruning(result: dict[str, Any], out: Callable[[str], Any] = print) -> None:
    """Prints the result of `bench_pruning` with the goals."""
    out("filter pruning (digits_resnet)")
    out(
        f"  train step: dense {result['dense_step_ms']:.2f} ms, pruning "
        f"{result['pruning_step_ms']:.2f} ms, ratio {result['step_ratio']:.3f} (goal <= 1.05)"
    )
    out(
        f"  inference at 0.4: dense {result['dense_inference_ms']:.2f} ms, shrunk "
        f"{result['shrunk_inference_ms']:.2f} ms, ratio {result['inference_ratio']:.3f} "
        "(goal <= 0.7)"
    )
    out(f"  FLOPs full/current {result['flops']}, params full/current {result['params']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    report_pruning(bench_pruning(parser.parse_args().quick))
