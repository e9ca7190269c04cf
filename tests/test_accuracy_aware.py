"""Accuracy-aware training (REFERENCE.md section 8) with scripted accuracies.

A real controller (magnitude sparsity on a small MLP, one step per epoch) so
that the schedule, ``compression_stage()``, ``disable_scheduler()`` and the
``compression_rate`` setter are the real ones; ``train_epoch_fn`` only ticks
the scheduler through ``ctrl.transform`` (zero gradients), and ``validate_fn``
returns scripted accuracies, per epoch or as a function of the rate.
"""

from __future__ import annotations

import io
import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest
from rich.console import Console

import nncf_jax as nj
from nncf_jax.accuracy_aware import (
    AccuracyAwareParams,
    create_accuracy_aware_training_loop,
)
from nncf_jax.checkpoint import CheckpointManager
from nncf_jax.errors import ConfigError, UsageError
from nncf_jax.examples import digits

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
FULLY = nj.CompressionStage.FULLY_COMPRESSED
PARTIAL = nj.CompressionStage.PARTIALLY_COMPRESSED


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(nn.relu(nn.Dense(64)(x)))


def make_config(mode="early_exit", sparsity_init=0.0, target=0.5, **params):
    params.setdefault("maximal_absolute_accuracy_degradation", 0.01)
    return {
        "input_info": {"sample_size": [1, 16]},
        "compression": {
            "algorithm": "magnitude_sparsity",
            "sparsity_init": sparsity_init,
            # Levels by epoch: 0, 0.153, 0.314, then 0.5 (FULLY) from epoch 3.
            "params": {
                "schedule": "polynomial",
                "sparsity_target": target,
                "sparsity_target_epoch": 3,
            },
        },
        "accuracy_aware_training": {"mode": mode, "params": params},
    }


_MODEL = MLP()
_VARIABLES = _MODEL.init(jax.random.key(0), jnp.zeros((1, 16)))


_BUILT: dict = {}


def _build(compression, donate):
    """A controller and its jitted zero-gradient step, built once per compression
    section: compiling dominates these tests. Sharing a controller between runs is
    safe because the loop syncs its handles to the state it works on."""
    key = (json.dumps(compression, sort_keys=True), donate)
    if key not in _BUILT:
        config = {"input_info": {"sample_size": [1, 16]}, "compression": compression}
        ctrl, cstate = nj.create_compressed_model(_MODEL, _VARIABLES, config, steps_per_epoch=1)

        def tick(variables, cstate):
            # One optimizer step with zero gradients: the scheduler advances, weights do not.
            params = variables["params"]
            zeros = jax.tree.map(jnp.zeros_like, params)
            return ctrl.transform.update(zeros, cstate, params)[1]

        _BUILT[key] = ctrl, cstate, jax.jit(tick, donate_argnums=(1,) if donate else ())
    return _BUILT[key]


class Harness:
    """A controller, an initial carried state and call-recording callbacks."""

    def __init__(self, config, *, donate=False):
        self.config = config
        self.ctrl, cstate, self._jitted = _build(config["compression"], donate)
        if donate:  # the first train step deletes the initial state's buffers
            cstate = jax.tree.map(jnp.copy, cstate)
        self.state = {"variables": _VARIABLES, "cstate": cstate, "note": "kept"}
        self.trained: list[int] = []
        self.lr_scales: list[float] = []
        self.dumped = []

    def train_epoch(self, state, epoch):
        assert state["note"] == "kept"
        self.trained.append(epoch)
        return {**state, "cstate": self._jitted(state["variables"], state["cstate"])}

    def configure(self, state, lr_scale):
        self.lr_scales.append(lr_scale)
        tx = optax.sgd(0.1 * lr_scale, momentum=0.9)
        return {**state, "opt_state": tx.init(state["variables"]["params"])}

    def dump(self, state, record):
        self.dumped.append((record.epoch, record.best))

    def level(self, state):
        # What validate_fn sees: the level of the state it is given.
        self.ctrl.sync(state["variables"], state["cstate"])
        return self.ctrl.scheduler.current_sparsity_level

    def loop(self, **kwargs):
        kwargs.setdefault("uncompressed_model_accuracy", 0.99)
        kwargs.setdefault("verbose", False)
        return create_accuracy_aware_training_loop(self.config, self.ctrl, **kwargs)

    def run(self, loop, validate_fn, **kwargs):
        return loop.run(
            self.state,
            train_epoch_fn=self.train_epoch,
            validate_fn=validate_fn,
            configure_optimizers_fn=self.configure,
            dump_checkpoint_fn=self.dump,
            **kwargs,
        )


def scripted(accuracies):
    """validate_fn returning accuracies[i] on its i-th call."""
    calls = iter(accuracies)
    return lambda state: next(calls)


# --- config ------------------------------------------------------------------


def test_missing_section_is_a_config_error_naming_it():
    h = Harness(make_config())
    config = {k: v for k, v in make_config().items() if k != "accuracy_aware_training"}
    with pytest.raises(ConfigError, match=r"^accuracy_aware_training: accuracy-aware training"):
        create_accuracy_aware_training_loop(config, h.ctrl, uncompressed_model_accuracy=1.0)
    bad = make_config()
    bad["accuracy_aware_training"]["params"]["patience_epochs"] = 2
    with pytest.raises(ConfigError, match=r"params\.patience_epochs: key 'patience_epochs'"):
        create_accuracy_aware_training_loop(bad, h.ctrl, uncompressed_model_accuracy=1.0)


def test_params_take_the_config_packages_defaults():
    config = make_config("adaptive_compression_level")
    config["accuracy_aware_training"]["params"] = {"maximal_relative_accuracy_degradation": 1.0}
    p = AccuracyAwareParams.from_config(config)
    assert p == AccuracyAwareParams(
        mode="adaptive_compression_level",
        maximal_relative_accuracy_degradation=1.0,
        maximal_absolute_accuracy_degradation=None,
        maximal_total_epochs=10000,
        initial_training_phase_epochs=5,
        patience_epochs=3,
        initial_compression_rate_step=0.1,
        compression_rate_step_reduction_factor=0.5,
        lr_reduction_factor=0.5,
        minimal_compression_rate_step=0.025,
    )
    assert p.minimal_tolerable_accuracy(80.0) == pytest.approx(79.2)
    early = AccuracyAwareParams.from_config(nj.NNCFConfig.from_dict(make_config()))
    assert (early.mode, early.maximal_absolute_accuracy_degradation) == ("early_exit", 0.01)
    assert early.minimal_tolerable_accuracy(80.0) == pytest.approx(79.99)


def test_shipped_config_validates_and_builds_a_loop():
    config = nj.NNCFConfig.from_json(CONFIGS / "digits_accuracy_aware.json")
    section = config.resolved_accuracy_aware_training()
    assert section["mode"] == "early_exit"
    assert config["compression"]["algorithm"] == "magnitude_sparsity"
    variables = digits.CNN().init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    ctrl, _ = nj.create_compressed_model(digits.CNN(), variables, config, steps_per_epoch=11)
    loop = create_accuracy_aware_training_loop(config, ctrl, uncompressed_model_accuracy=0.98)
    assert loop.mode == "early_exit"
    assert loop.params.maximal_total_epochs == section["params"]["maximal_total_epochs"]


# --- early exit ----------------------------------------------------------------


def test_early_exit_stops_at_first_epoch_within_tolerance_and_fully_compressed():
    h = Harness(make_config(maximal_total_epochs=20))
    # Epochs 0-2 are within tolerance but not FULLY; epoch 3 is FULLY but
    # 0.005 short; epoch 4 is both.
    result = h.run(h.loop(), scripted([0.99, 0.99, 0.985, 0.975, 0.981, 0.99]))
    assert [r.epoch for r in result.history] == [0, 1, 2, 3, 4]
    assert [r.stage for r in result.history] == [
        nj.CompressionStage.UNCOMPRESSED,
        PARTIAL,
        PARTIAL,
        FULLY,
        FULLY,
    ]
    assert [r.action for r in result.history] == ["continue"] * 4 + ["criterion met"]
    assert h.trained == [0, 1, 2, 3]
    assert result.stop_reason == "criterion_met" and result.criterion_met
    assert (result.epoch, result.accuracy, result.compression_rate) == (4, 0.981, 0.5)
    assert result.minimal_tolerable_accuracy == pytest.approx(0.98)
    assert result.history[1].compression_rate == pytest.approx(0.1528734, abs=1e-6)
    # The carried state: extra keys kept, optimizer configured once, cstate of epoch 4.
    assert result.state["note"] == "kept" and "opt_state" in result.state
    assert h.lr_scales == [1.0]
    assert int(result.state["cstate"].clock.epoch) == 4
    assert h.ctrl.scheduler.current_epoch == 4  # handles synced to the best state
    # Checkpoint callback after every validation; best flags as the run went.
    assert h.dumped == [(0, True), (1, False), (2, False), (3, True), (4, True)]
    assert all(r.phase == "early_exit" for r in result.history)


def test_early_exit_needs_no_training_when_met_at_start():
    h = Harness(make_config(sparsity_init=0.5))  # level 0.5 = target: FULLY
    result = h.run(h.loop(), scripted([0.985]))
    assert h.trained == [] and result.epoch == 0 and result.stop_reason == "criterion_met"


def test_early_exit_reaches_fully_compressed_at_a_target_float32_cannot_hold():
    h = Harness(make_config(target=0.7, maximal_total_epochs=6))
    result = h.run(h.loop(), scripted([0.99] * 7))
    assert result.epoch == 3 and result.stop_reason == "criterion_met"


@pytest.mark.parametrize(
    ("params", "expected_epoch", "minimal"),
    [
        # 1% relative of 80 is 0.8: 79.1 is out, 79.3 (epoch 4) in.
        ({"maximal_relative_accuracy_degradation": 1.0}, 4, 79.2),
        # 1.0 absolute: 79.1 is in at epoch 3.
        ({"maximal_absolute_accuracy_degradation": 1.0}, 3, 79.0),
    ],
)
def test_relative_and_absolute_tolerance(params, expected_epoch, minimal):
    config = make_config()
    config["accuracy_aware_training"]["params"] = params
    h = Harness(config)
    loop = h.loop(uncompressed_model_accuracy=80.0)  # accuracy in percent
    result = h.run(loop, scripted([80.0, 80.0, 80.0, 79.1, 79.3]))
    assert result.minimal_tolerable_accuracy == pytest.approx(minimal)
    assert result.epoch == expected_epoch and result.stop_reason == "criterion_met"
    assert len(result.history) == expected_epoch + 1


def test_maximal_total_epochs_bounds_early_exit_and_best_prefers_fully_compressed():
    h = Harness(make_config(maximal_total_epochs=6))
    # Never within tolerance once FULLY (epoch 3 on); the most accurate epoch
    # overall is epoch 0, uncompressed.
    accuracies = [0.99, 0.97, 0.96, 0.95, 0.975, 0.96, 0.97]
    result = h.run(h.loop(), scripted(accuracies))
    assert h.trained == [0, 1, 2, 3, 4, 5]
    assert [r.epoch for r in result.history] == list(range(7))
    assert result.history[-1].action == "epoch limit"
    assert result.stop_reason == "maximal_total_epochs" and not result.criterion_met
    assert (result.epoch, result.accuracy) == (4, 0.975)  # the best FULLY compressed epoch
    assert result.last_state is not result.state
    assert int(result.last_state["cstate"].clock.epoch) == 6
    assert int(result.state["cstate"].clock.epoch) == 4


# --- adaptive compression level -------------------------------------------------


def rate_accuracy(h):
    """0.99 - 0.3 * max(rate - 0.55, 0): within 0.01 of 0.99 up to rate 0.5833."""
    return lambda state: 0.99 - 0.3 * max(h.level(state) - 0.55, 0.0)


def test_adaptive_moves_up_while_accuracy_holds_and_down_when_it_fails():
    h = Harness(
        make_config(
            "adaptive_compression_level",
            initial_training_phase_epochs=5,
            patience_epochs=2,
            initial_compression_rate_step=0.1,
            compression_rate_step_reduction_factor=0.5,
            lr_reduction_factor=0.5,
            minimal_compression_rate_step=0.025,
        )
    )
    result = h.run(h.loop(), rate_accuracy(h))
    initial = [r for r in result.history if r.phase == "initial"]
    search = [r for r in result.history if r.phase == "search"]
    # The initial phase exits at epoch 3, FULLY (0.5) and within tolerance.
    assert [r.epoch for r in initial] == [0, 1, 2, 3]
    assert initial[-1].action == "criterion met"
    # 0.5 holds -> up 0.1 to 0.6: fails twice (patience 2) -> down, step halved
    # to 0.05: 0.55 holds -> up, halved to 0.025: 0.575 holds -> up, same step:
    # 0.6 fails twice -> the step would halve to 0.0125 < 0.025: stop.
    assert [(r.epoch, r.compression_rate, r.compression_rate_step, r.action) for r in search] == [
        (4, 0.6, 0.1, "retry"),
        (5, 0.6, 0.1, "reject"),
        (6, 0.55, 0.05, "accept"),
        (7, 0.575, 0.025, "accept"),
        (8, 0.6, 0.025, "retry"),
        (9, 0.6, 0.025, "reject"),
    ]
    assert result.stop_reason == "minimal_step" and result.criterion_met
    assert (result.compression_rate, result.epoch) == (0.575, 7)
    assert result.accuracy == pytest.approx(0.9825, abs=1e-6)
    # Optimizer reset at the start and at each new rate, lr scaled on each flip.
    assert h.lr_scales == [1.0, 1.0, 0.5, 0.25, 0.25]
    # The best state is really at 0.575, with the scheduler off (NNCF: {} state).
    assert h.ctrl.scheduler.current_sparsity_level == pytest.approx(0.575)
    assert h.ctrl.scheduler.get_state() == {}
    stats = h.ctrl.statistics().magnitude_sparsity.model_statistics
    assert stats.sparsity_level_for_layers == pytest.approx(0.575, abs=1e-3)
    # And training with it does not move the level (scheduler disabled).
    after = h.train_epoch(result.state, 99)
    assert h.level(after) == pytest.approx(0.575)


def test_adaptive_goes_down_while_failing_and_stops_below_the_minimal_rate():
    config = make_config(
        "adaptive_compression_level", initial_training_phase_epochs=4, patience_epochs=1
    )
    # Never within tolerance: the search starts down from the level reached (0.5).
    h = Harness(config)
    result = h.run(h.loop(), lambda s: 0.9)
    search = [r for r in result.history if r.phase == "search"]
    assert [(r.compression_rate, r.compression_rate_step, r.action) for r in search] == [
        (0.4, 0.1, "reject"),
        (0.3, 0.1, "reject"),
        (0.2, 0.1, "reject"),
        (0.1, 0.1, "reject"),
        (0.0, 0.1, "reject"),
    ]
    assert result.stop_reason == "minimal_rate" and not result.criterion_met
    assert result.epoch == 0  # all equally inaccurate: the earliest

    # Only the uncompressed model is within tolerance: the best of the initial
    # phase is epoch 0 (rate 0), so the search starts there, going up.
    h = Harness(config)
    result = h.run(h.loop(), lambda s: 0.99 if h.level(s) == 0.0 else 0.9)
    search = [r for r in result.history if r.phase == "search"]
    # 0 holds -> up 0.1: fails -> down, step halved: 0.05 fails -> down, same
    # step: 0 holds -> up, halved: 0.025 fails -> the step would be 0.0125.
    assert [(r.compression_rate, r.compression_rate_step, r.action) for r in search] == [
        (0.1, 0.1, "reject"),
        (0.05, 0.05, "reject"),
        (0.0, 0.05, "accept"),
        (0.025, 0.025, "reject"),
    ]
    assert result.stop_reason == "minimal_step" and result.criterion_met
    assert (result.epoch, result.compression_rate) == (0, 0.0)


def test_adaptive_respects_the_maximal_compression_rate():
    h = Harness(
        make_config(
            "adaptive_compression_level",
            initial_training_phase_epochs=3,
            initial_compression_rate_step=0.2,
        )
    )
    result = h.run(h.loop(maximal_compression_rate=0.8), lambda s: 0.99)
    search = [r for r in result.history if r.phase == "search"]
    assert [(r.compression_rate, r.action) for r in search] == [(0.7, "accept"), (0.8, "accept")]
    assert result.stop_reason == "maximal_rate" and result.compression_rate == 0.8


def test_adaptive_stops_at_maximal_total_epochs():
    h = Harness(
        make_config(
            "adaptive_compression_level",
            initial_training_phase_epochs=5,
            patience_epochs=3,
            maximal_total_epochs=5,
        )
    )
    result = h.run(h.loop(), lambda s: 0.9)  # never within tolerance
    assert h.trained == [0, 1, 2, 3, 4]
    assert result.stop_reason == "maximal_total_epochs" and not result.criterion_met
    assert all(r.phase == "initial" for r in result.history)

    h = Harness(
        make_config(
            "adaptive_compression_level", initial_training_phase_epochs=3, maximal_total_epochs=6
        )
    )
    result = h.run(h.loop(), rate_accuracy(h))
    assert len(h.trained) == 6 and result.stop_reason == "maximal_total_epochs"


def test_adaptive_minimal_step_above_initial_step_stops_before_searching():
    h = Harness(
        make_config(
            "adaptive_compression_level",
            initial_training_phase_epochs=3,
            initial_compression_rate_step=0.01,
            minimal_compression_rate_step=0.025,
        )
    )
    result = h.run(h.loop(), rate_accuracy(h))
    assert result.stop_reason == "minimal_step"
    assert [r.phase for r in result.history] == ["initial"] * 4
    assert h.ctrl.scheduler.get_state() == {}  # the search phase did disable it


def test_adaptive_needs_a_settable_rate():
    config = make_config("adaptive_compression_level")
    config["compression"] = {"algorithm": "const_sparsity"}
    ctrl, _ = nj.create_compressed_model(_MODEL, _VARIABLES, config, steps_per_epoch=1)
    with pytest.raises(UsageError, match=r"none of \['const_sparsity'\] has one to set"):
        create_accuracy_aware_training_loop(config, ctrl, uncompressed_model_accuracy=1.0)


# --- best checkpoint, reference accuracy, errors, printing ------------------------


@pytest.mark.parametrize("mode", ["early_exit", "adaptive_compression_level"])
def test_best_state_survives_a_train_step_that_donates_its_input(mode):
    adaptive = mode == "adaptive_compression_level"
    params = {"initial_training_phase_epochs": 3, "patience_epochs": 1} if adaptive else {}
    h = Harness(make_config(mode, **params), donate=True)
    given = h.state["cstate"]
    result = h.run(h.loop(), rate_accuracy(h) if adaptive else scripted([0.99] * 4))
    assert given.clock.step.is_deleted()  # the donation really happened
    leaves = jax.tree.leaves(result.state)
    assert not any(leaf.is_deleted() for leaf in leaves if isinstance(leaf, jax.Array))
    assert h.level(result.state) == pytest.approx(result.compression_rate)


def test_best_checkpoint_is_kept_on_disk(tmp_path, trees_equal):
    h = Harness(make_config(maximal_total_epochs=8))
    result = h.run(
        h.loop(), scripted([0.99, 0.9, 0.9, 0.95, 0.981, 0.99]), checkpoint_dir=tmp_path / "best"
    )
    assert result.epoch == 4
    with CheckpointManager(tmp_path / "best") as mngr:
        assert mngr.all_steps() == [4]
        restored = mngr.restore(
            variables=h.state["variables"],
            cstate=h.state["cstate"],
            opt_state=result.state["opt_state"],
            ctrl=h.ctrl,
        )
    assert int(restored.cstate.clock.epoch) == 4
    trees_equal(restored.cstate, result.state["cstate"])
    trees_equal(restored.variables, result.state["variables"])
    state = json.dumps(restored.compression_state)
    assert "current_sparsity_level" in state
    # A directory that already holds checkpoints is refused.
    with pytest.raises(UsageError, match=r"already holds checkpoints \[4\]"):
        h.run(h.loop(), scripted([0.99] * 10), checkpoint_dir=tmp_path / "best")


def test_reference_accuracy_from_validate_uncompressed_fn_or_error():
    h = Harness(make_config(sparsity_init=0.5))
    loop = h.loop(uncompressed_model_accuracy=None)
    with pytest.raises(
        UsageError, match=r"uncompressed_model_accuracy= .* validate_uncompressed_fn="
    ):
        h.run(loop, scripted([0.99]))
    result = h.run(loop, scripted([0.985]), validate_uncompressed_fn=lambda s: 0.99)
    assert result.uncompressed_accuracy == 0.99 and result.criterion_met


def test_bad_states_and_accuracies_are_refused():
    h = Harness(make_config())
    loop = h.loop()
    with pytest.raises(
        UsageError, match=r"^state: expected a dict with keys 'variables' and 'cstate'"
    ):
        loop.run({"variables": _VARIABLES}, train_epoch_fn=h.train_epoch, validate_fn=scripted([]))
    with pytest.raises(UsageError, match=r"^validate_fn \(epoch 0\): expected a finite number"):
        h.run(loop, lambda s: float("nan"))
    with pytest.raises(UsageError, match=r"^train_epoch_fn \(epoch 0\): expected a dict"):
        loop.run(h.state, train_epoch_fn=lambda s, e: s["variables"], validate_fn=lambda s: 0.0)
    with pytest.raises(UsageError, match=r"uncompressed_model_accuracy: expected a finite"):
        h.loop(uncompressed_model_accuracy=float("inf"))


def test_verbose_prints_a_line_per_epoch_and_the_history_table():
    h = Harness(make_config())
    out = io.StringIO()
    loop = h.loop(verbose=True, console=Console(file=out, width=120, color_system=None))
    h.run(loop, scripted([0.99, 0.99, 0.99, 0.99]))
    text = out.getvalue()
    assert [line for line in text.splitlines() if line.startswith("epoch ")] == [
        "epoch 0 early_exit: rate 0, accuracy 0.9900 (budget +0.0100), none -> continue [best]",
        "epoch 1 early_exit: rate 0.1529, accuracy 0.9900 (budget +0.0100), partial -> continue",
        "epoch 2 early_exit: rate 0.314, accuracy 0.9900 (budget +0.0100), partial -> continue",
        "epoch 3 early_exit: rate 0.5, accuracy 0.9900 (budget +0.0100), full -> criterion met "
        "[best]",
    ]
    assert "Accuracy-aware training (early_exit)" in text
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["0", "1", "2", "3*"]
    assert rows[-1] == ["3*", "early_exit", "0.5", "0.9900", "+0.0100", "full", "criterion", "met"]
    # An 80-column terminal: rows stay one line each.
    out = io.StringIO()
    loop.console = Console(file=out, width=80, color_system=None)
    loop.console.print(loop.history_table())
    assert sum(line.strip()[:1].isdigit() for line in out.getvalue().splitlines()) == 4
    assert (
        "best (*): epoch 3, rate 0.5, accuracy 0.9900; criterion met\nstopped: criterion_met"
        in text
    )
    assert len(loop.history) == 4
