"""`DigitsTrainer`: the digits job's train step and evaluations, as callbacks.

The trainer carries the state `nncf_jax.accuracy_aware` carries, a dict
``{"variables", "opt_state", "cstate"}``, and exposes the loop's callbacks:
`DigitsTrainer.train_epoch` (``(state, epoch) -> state``),
`DigitsTrainer.validate` (compressed test accuracy, a fraction),
`DigitsTrainer.validate_uncompressed` (plain ``model.apply``) and
`DigitsTrainer.configure_optimizers` (``(state, lr_scale) -> state``). The
plain epoch loop of `nncf_jax.examples.digits.run` uses the same methods.

Each step returns its task loss, compression loss and the scheduled levels
it ran with as arrays; they are fetched once per epoch (no host sync per
step) and written to the metrics log per step.

Compression parameters that must be trained for the algorithm to work at all
(RB sparsity's logits, see `trained_compression`) are differentiated with the
params and updated by the same optimizer, whose state then covers
``{"params": params, "compression": trained}`` (`init_optimizer_state`); their
updates are multiplied by the algorithm's ``compression_lr_multiplier``.
Quantizer ranges stay as initialised, as in the published digits INT8 runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nncf_jax.examples.digits_data import DigitsData
from nncf_jax.examples.train_settings import TrainSettings
from nncf_jax.sparsity.rb_algorithm import eval_state

__all__ = ["DigitsTrainer", "EpochStats", "init_optimizer_state", "trained_compression"]

State = dict[str, Any]

# Algorithms whose compression parameters the digits job trains: RB and
# movement sparsity learn their masks and do nothing without it. Quantizer
# ranges are left out so that the INT8 runs keep training the params only.
_TRAINED_ALGORITHMS = ("rb_sparsity", "movement_sparsity")


def trained_compression(ctrl: Any, cstate: Any) -> dict[str, Any]:
    """The part of ``ctrl.trainable(cstate)`` the digits job trains, ``{algorithm: pytree}``."""
    return {k: v for k, v in ctrl.trainable(cstate).items() if k in _TRAINED_ALGORITHMS}


def init_optimizer_state(tx: optax.GradientTransformation, params: Any, ctrl: Any, cstate: Any):
    """The optimizer state the digits train step carries (and checkpoints).

    ``tx.init(params)`` when nothing else is trained, else
    ``tx.init({"params": params, "compression": trained_compression(ctrl, cstate)})``.
    """
    trained = trained_compression(ctrl, cstate)
    if not trained:
        return tx.init(params)
    return tx.init({"params": params, "compression": trained})


def _lr_multipliers(ctrl: Any) -> dict[str, float]:
    return {
        a.name: float(getattr(a, "lr_multiplier", None) or 1.0)
        for a in ctrl.algorithms
        if a.name in _TRAINED_ALGORITHMS
    }


def _metrics(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return loss, accuracy


@dataclass(frozen=True)
class EpochStats:
    """What `DigitsTrainer.train_epoch` measured.

    Attributes:
      epoch: the 0-based epoch index it was called with.
      train_loss: mean task loss over the epoch's steps.
      compression_loss: mean compression loss (``ctrl.loss``).
      seconds: wall time of the step loop.
    """

    epoch: int
    train_loss: float
    compression_loss: float
    seconds: float


class DigitsTrainer:
    """Compiled train step and evaluations of one model, controller and settings.

    Args:
      model: the linen module (plain ``model.apply``, no mutable collections).
      ctrl: its compression controller (with ``steps_per_epoch``).
      settings: batch size and optimizer.
      data: the digits split, images already shaped as the model takes them.
      seed: seeds the batch order.
      progress: a ``rich`` Progress for the per-epoch step bar, or None.
      log: a `nncf_jax.metrics_log.MetricsLog` for the per-step scalars, or None.
      log_prefix: the first segment of the per-step tags (``train`` gives
        ``train/loss``, ``train/task_loss``, ``train/compression_loss``,
        ``train/level/<algorithm>``).
    """

    def __init__(
        self,
        model: nn.Module,
        ctrl: Any,
        settings: TrainSettings,
        data: DigitsData,
        *,
        seed: int,
        progress: Any = None,
        log: Any = None,
        log_prefix: str = "train",
    ):
        self.model = model
        self.ctrl = ctrl
        self.settings = settings
        self.data = data
        self.steps_per_epoch = len(data.x_train) // settings.batch_size
        self.progress = progress
        self.log = log
        self.log_prefix = log_prefix
        self.global_step = 0  # the metrics log's step axis
        self.steps_trained = 0
        self.compile_seconds = 0.0
        self.train_seconds = 0.0
        self.last: EpochStats | None = None
        self._rng = np.random.default_rng(seed)
        self._x_test = jnp.asarray(data.x_test)
        self._y_test = jnp.asarray(data.y_test)
        self._lr_scale = 1.0
        self._steps: dict[float, Any] = {}
        self._example: tuple | None = None
        self._eval = self._plain = self._stripped = None

    # --- compilation ----------------------------------------------------------

    def _train_step(self, tx):
        ctrl = self.ctrl
        multipliers = _lr_multipliers(ctrl)

        def step(variables, opt_state, cstate, x, y):
            def loss_fn(params, trained):
                # Without anything to train this is DESIGN's step on cstate as it is.
                cs = (
                    ctrl.with_trainable(cstate, {**ctrl.trainable(cstate), **trained})
                    if trained
                    else cstate
                )
                logits = ctrl.apply({**variables, "params": params}, cs, x)
                task_loss, _ = _metrics(logits, y)
                compression_loss = ctrl.loss(params, cs)
                return task_loss + compression_loss, (task_loss, compression_loss)

            params = variables["params"]
            trained = trained_compression(ctrl, cstate)
            (_, (task_loss, compression_loss)), (grads, t_grads) = jax.value_and_grad(
                loss_fn, argnums=(0, 1), has_aux=True
            )(params, trained)
            levels = {name: s.level for name, s in cstate.algorithms.items() if hasattr(s, "level")}
            if trained:
                tree = {"params": params, "compression": trained}
                grads = {"params": grads, "compression": t_grads}
                updates, opt_state = tx.update(grads, opt_state, tree)
                t_updates = {
                    name: jax.tree.map(lambda u, m=multipliers[name]: u * m, part)
                    for name, part in updates["compression"].items()
                }
                # Put the trained parameters back before the tick, so that a
                # schedule reading them (RB's adaptive one) sees this step's.
                trained = optax.apply_updates(trained, t_updates)
                cstate = ctrl.with_trainable(cstate, {**ctrl.trainable(cstate), **trained})
                updates = updates["params"]
            else:
                updates, opt_state = tx.update(grads, opt_state, params)
            updates, cstate = ctrl.transform.update(updates, cstate, params)  # scheduler tick
            params = optax.apply_updates(params, updates)
            aux = {"task_loss": task_loss, "compression_loss": compression_loss, "levels": levels}
            return {**variables, "params": params}, opt_state, cstate, aux

        return step

    def _step_fn(self, lr_scale: float):
        # Ahead-of-time: compile time is measured apart, and a shape or dtype
        # drift in the state raises instead of recompiling.
        if lr_scale not in self._steps:
            started = time.perf_counter()
            tx = self.settings.make_optimizer(lr_scale)
            self._steps[lr_scale] = jax.jit(self._train_step(tx)).lower(*self._example).compile()
            self.compile_seconds += time.perf_counter() - started
        return self._steps[lr_scale]

    def init_state(self, variables: Any, cstate: Any) -> State:
        """The carried state with a fresh optimizer state; compiles the train step.

        Returns:
          ``{"variables", "opt_state", "cstate"}``.
        """
        tx = self.settings.make_optimizer()
        state = {
            "variables": variables,
            "opt_state": init_optimizer_state(tx, variables["params"], self.ctrl, cstate),
            "cstate": cstate,
        }
        bs = self.settings.batch_size
        self._example = (
            variables,
            state["opt_state"],
            cstate,
            self.data.x_train[:bs],
            self.data.y_train[:bs],
        )
        self._step_fn(1.0)
        return state

    # --- callbacks ------------------------------------------------------------

    def configure_optimizers(self, state: State, lr_scale: float) -> State:
        """A fresh optimizer state; later epochs train with the learning rate times ``lr_scale``.

        A new scale compiles the step once more (the rate is a constant of
        the optax optimizer).
        """
        self._lr_scale = float(lr_scale)
        self._step_fn(self._lr_scale)
        tx = self.settings.make_optimizer(self._lr_scale)
        opt_state = init_optimizer_state(
            tx, state["variables"]["params"], self.ctrl, state["cstate"]
        )
        return {**state, "opt_state": opt_state}

    def train_epoch(self, state: State, epoch: int) -> State:
        """One epoch over the training images in a seeded random order.

        Args:
          state: ``{"variables", "opt_state", "cstate", ...}``.
          epoch: the 0-based index of the epoch (shown in the progress bar).

        Returns:
          The state after the epoch; `last` holds its `EpochStats`.
        """
        step_fn = self._step_fn(self._lr_scale)
        spe = self.steps_per_epoch
        batches = self._epoch_batches()
        task = None
        if self.progress is not None:
            label = f"{self.log_prefix} epoch {epoch + 1}"
            task = self.progress.add_task(label, total=spe)
        variables, opt_state, cstate = state["variables"], state["opt_state"], state["cstate"]
        started = time.perf_counter()
        auxes = []
        for index in batches:
            variables, opt_state, cstate, aux = step_fn(
                variables, opt_state, cstate, self.data.x_train[index], self.data.y_train[index]
            )
            auxes.append(aux)
            if task is not None:
                self.progress.advance(task)
        per_step = jax.device_get(jax.tree.map(lambda *xs: jnp.stack(xs), *auxes))  # one sync
        seconds = time.perf_counter() - started
        self.train_seconds += seconds
        if task is not None:
            self.progress.remove_task(task)
        self._log_steps(per_step)
        self.global_step += spe
        self.steps_trained += spe
        self.last = EpochStats(
            epoch=epoch,
            train_loss=float(np.mean(per_step["task_loss"])),
            compression_loss=float(np.mean(per_step["compression_loss"])),
            seconds=seconds,
        )
        return {**state, "variables": variables, "opt_state": opt_state, "cstate": cstate}

    def _epoch_batches(self) -> np.ndarray:
        """The next epoch's batches, ``[steps_per_epoch, batch_size]`` indices: one
        draw of the seeded stream per epoch (what `skip_epochs` replays)."""
        n, bs, spe = len(self.data.x_train), self.settings.batch_size, self.steps_per_epoch
        return self._rng.permutation(n)[: spe * bs].reshape(spe, bs)

    def skip_epochs(self, epochs: int) -> None:
        """Advances the batch order and the log's step axis past ``epochs`` trained epochs.

        Resuming after epoch ``E``: the batch order of epoch ``E + 1`` is then
        the one an uninterrupted run with the same seed trains it with (the
        permutations of the completed epochs are drawn and discarded).
        """
        for _ in range(epochs):
            self._epoch_batches()
        self.global_step += epochs * self.steps_per_epoch

    def _log_steps(self, per_step: dict[str, Any]) -> None:
        if self.log is None:
            return
        p, first = self.log_prefix, self.global_step
        task, compression = per_step["task_loss"], per_step["compression_loss"]
        self.log.series(f"{p}/loss", task + compression, first)
        self.log.series(f"{p}/task_loss", task, first)
        self.log.series(f"{p}/compression_loss", compression, first)
        for name, levels in per_step["levels"].items():
            self.log.series(f"{p}/level/{name}", levels, first)

    def _compiled_eval(self, plain: bool):
        # Compiled on first use: a pre-run only ever evaluates the plain model.
        if (self._plain if plain else self._eval) is None:
            started = time.perf_counter()
            ctrl, model = self.ctrl, self.model
            x, y = self._x_test, self._y_test
            variables, _, cstate, _, _ = self._example
            if plain:

                def eval_plain(variables, x, y):
                    logits = model.apply(variables, x)
                    return logits, *_metrics(logits, y)

                self._plain = jax.jit(eval_plain).lower(variables, x, y).compile()
            else:

                def eval_compressed(variables, cstate, x, y):
                    # Deterministic masks (RB sparsity samples its masks in training).
                    logits = ctrl.apply(variables, eval_state(cstate), x)
                    return logits, *_metrics(logits, y)

                self._eval = jax.jit(eval_compressed).lower(variables, cstate, x, y).compile()
            self.compile_seconds += time.perf_counter() - started
        return self._plain if plain else self._eval

    def evaluate(self, state: State) -> tuple[jax.Array, float, float]:
        """``(logits, loss, accuracy)`` of the compressed forward (``ctrl.apply``) on the test set."""
        logits, loss, accuracy = self._compiled_eval(plain=False)(
            state["variables"], state["cstate"], self._x_test, self._y_test
        )
        return logits, float(loss), float(accuracy)

    def evaluate_plain(self, variables: Any) -> tuple[jax.Array, float, float]:
        """``(logits, loss, accuracy)`` of plain ``model.apply(variables, x)`` on the test set."""
        logits, loss, accuracy = self._compiled_eval(plain=True)(
            variables, self._x_test, self._y_test
        )
        return logits, float(loss), float(accuracy)

    def evaluate_stripped(self, stripped: Any, cstate: Any) -> tuple[jax.Array, float, float]:
        """``(logits, loss, accuracy)`` of ``model.apply`` on stripped variables, inside
        ``ctrl.forward_context(cstate)`` (activation quantizers; a no-op without them)."""
        if self._stripped is None:
            ctrl, model = self.ctrl, self.model

            def eval_stripped(variables, cstate, x, y):
                with ctrl.forward_context(cstate):
                    logits = model.apply(variables, x)
                return logits, *_metrics(logits, y)

            self._stripped = jax.jit(eval_stripped)
        logits, loss, accuracy = self._stripped(stripped, cstate, self._x_test, self._y_test)
        return logits, float(loss), float(accuracy)

    def validate(self, state: State) -> float:
        """The compressed model's test accuracy, a fraction in [0, 1]."""
        return self.evaluate(state)[2]

    def validate_uncompressed(self, state: State) -> float:
        """The uncompressed model's test accuracy (plain ``model.apply`` on the float weights)."""
        return self.evaluate_plain(state["variables"])[2]
