"""DESIGN.md's train step (section 2), for the test jobs that run it as scripts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax


def design_train_step(ctrl: Any, tx: optax.GradientTransformation) -> Callable[..., Any]:
    """``step(variables, opt_state, cstate, x, y) -> (variables, opt_state, cstate)``,
    not jitted: cross-entropy + ``ctrl.loss``, ``tx``, then ``ctrl.transform``."""

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
