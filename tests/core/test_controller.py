"""The seed's BaseCompressionAlgorithmController members, one by one, plus composites."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

import nncf_jax as nj
from nncf_jax.errors import StateMismatchError, UsageError


@pytest.fixture
def sparse(cnn, make_magnitude_config):
    model, variables, x, _y = cnn
    ctrl, cstate = nj.create_compressed_model(
        model, variables, make_magnitude_config(sparsity_init=0.1), steps_per_epoch=4
    )
    return ctrl, cstate, model, variables, x


def test_create_returns_controller_and_state_pytree(sparse):
    ctrl, cstate, *_ = sparse
    assert isinstance(ctrl, nj.CompressionController)
    assert isinstance(cstate, nj.CompressionState)
    assert ctrl.state is cstate
    leaves = jax.tree_util.tree_leaves(cstate)
    assert leaves and all(isinstance(leaf, jax.Array) for leaf in leaves)
    assert cstate.step.dtype == np.int32 and int(cstate.step) == -1


def test_name(sparse, cnn):
    ctrl, *_ = sparse
    assert ctrl.name == "magnitude_sparsity"
    ctrl.set_builder_state_with_name("my_sparsity", {"note": 1})
    assert ctrl.name == "my_sparsity"
    assert list(ctrl.get_state()) == ["my_sparsity"]
    assert ctrl.get_compression_state()["builder_state"] == {"my_sparsity": {"note": 1}}


def test_compression_rate_getter_setter_and_maximal(sparse):
    ctrl, *_ = sparse
    assert 0.1 <= ctrl.compression_rate < 0.2  # level 0.1 plus the zero-initialised biases
    ctrl.compression_rate = 0.6
    assert ctrl.scheduler.current_sparsity_level == pytest.approx(0.6)
    stats = ctrl.statistics().magnitude_sparsity.model_statistics
    assert stats.sparsity_level_for_layers == pytest.approx(0.6, abs=1e-3)
    assert ctrl.compression_rate == pytest.approx(stats.sparsity_level)
    assert ctrl.maximal_compression_rate == 1.0
    with pytest.raises(
        nj.errors.ConfigError, match=r"compression_rate: expected a value in \[0, 1\)"
    ):
        ctrl.compression_rate = 1.0


def test_loss_is_zero_for_magnitude(sparse):
    ctrl, cstate, _, variables, _ = sparse
    assert float(ctrl.loss(variables["params"], cstate)) == 0.0
    assert float(ctrl.loss()) == 0.0


def test_scheduler_counters_start_at_minus_one_and_advance(sparse):
    ctrl, *_ = sparse
    s = ctrl.scheduler
    assert (s.current_step, s.current_epoch) == (-1, -1)
    s.epoch_step()
    s.step()
    s.step()
    assert (s.current_step, s.current_epoch) == (1, 0)
    s.epoch_step(5)
    s.step(10)
    assert (s.current_step, s.current_epoch) == (10, 5)
    assert s.get_state() == {"current_step": 10, "current_epoch": 5}
    s.load_state({"current_step": 3, "current_epoch": 1})
    assert (s.current_step, s.current_epoch) == (3, 1)
    # NNCF's dict has only counters: the level is replayed from the schedule.
    assert s.current_sparsity_level == pytest.approx(0.5 - 0.4 * (1 - 1 / 3) ** 0.9, rel=1e-5)


def test_compression_stage_follows_the_level(cnn, make_magnitude_config):
    model, variables, *_ = cnn
    ctrl, _ = nj.create_compressed_model(model, variables, make_magnitude_config())
    assert ctrl.compression_stage() == nj.CompressionStage.UNCOMPRESSED
    ctrl.scheduler.epoch_step()
    assert ctrl.compression_stage() == nj.CompressionStage.UNCOMPRESSED  # L(0) = init = 0
    ctrl.scheduler.epoch_step()
    assert ctrl.compression_stage() == nj.CompressionStage.PARTIALLY_COMPRESSED
    for _ in range(3):
        ctrl.scheduler.epoch_step()
    assert ctrl.compression_stage() == nj.CompressionStage.FULLY_COMPRESSED


def test_statistics_tables(sparse):
    ctrl, *_ = sparse
    text = ctrl.statistics().to_str()
    assert "Sparsity level of the whole model" in text
    assert "Dense_1/kernel" in text and "Conv_0/kernel" in text
    with pytest.raises(AttributeError, match="no statistics for 'quantization'"):
        _ = ctrl.statistics().quantization


def test_disable_scheduler_freezes_level_and_empties_scheduler_state(sparse):
    ctrl, *_ = sparse
    ctrl.scheduler.epoch_step()
    level = ctrl.scheduler.current_sparsity_level
    ctrl.disable_scheduler()
    for _ in range(4):
        ctrl.scheduler.epoch_step()
    assert ctrl.scheduler.current_sparsity_level == level
    assert ctrl.scheduler.get_state() == {}
    assert ctrl.get_state()["magnitude_sparsity"]["scheduler_state"] == {}
    ctrl.compression_rate = 0.4  # accuracy-aware training sets rates by hand
    assert ctrl.scheduler.current_sparsity_level == pytest.approx(0.4)


def test_get_state_load_state_and_compression_state_round_trip(
    sparse, cnn, make_magnitude_config, trees_equal
):
    ctrl, _, model, variables, _ = sparse
    for _ in range(2):
        ctrl.scheduler.epoch_step()
        ctrl.scheduler.step()
    state = ctrl.get_state()
    entry = state["magnitude_sparsity"]
    assert set(entry) == {"loss_state", "scheduler_state", "compression_stage"}
    assert entry["scheduler_state"]["current_epoch"] == 1
    assert entry["compression_stage"] == int(nj.CompressionStage.PARTIALLY_COMPRESSED)
    compression_state = json.loads(json.dumps(ctrl.get_compression_state()))
    assert set(compression_state) == {"builder_state", "ctrl_state"}

    resumed, cstate = nj.create_compressed_model(
        model,
        variables,
        make_magnitude_config(sparsity_init=0.1),
        compression_state=compression_state,
    )
    assert resumed.get_state() == state
    trees_equal(cstate.algorithms, ctrl.state.algorithms)

    other, _ = nj.create_compressed_model(
        model, variables, make_magnitude_config(sparsity_init=0.1)
    )
    other.load_state(state)
    assert other.get_state() == state


def test_resume_refuses_a_state_from_another_build(sparse, cnn):
    ctrl, _, model, variables, _ = sparse
    saved = ctrl.get_compression_state()
    config = {"compression": {"algorithm": "magnitude_sparsity", "ignored_scopes": ["Dense_1"]}}
    with pytest.raises(StateMismatchError, match=r"only in the saved state: \['Dense_1/kernel'\]"):
        nj.create_compressed_model(model, variables, config, compression_state=saved)
    with pytest.raises(StateMismatchError, match="made for algorithms"):
        nj.create_compressed_model(
            model,
            variables,
            {"compression": {"algorithm": "const_sparsity"}},
            compression_state=saved,
        )
    with pytest.raises(StateMismatchError, match="builder_state"):
        nj.create_compressed_model(model, variables, {"compression": []}, compression_state={})


def test_strip_gives_plain_variables_for_the_original_model(sparse):
    ctrl, cstate, model, variables, x = sparse
    ctrl.compression_rate = 0.5
    cstate = ctrl.state
    stripped = ctrl.strip(variables, cstate)
    np.testing.assert_array_equal(
        np.asarray(model.apply(stripped, x)), np.asarray(ctrl.apply(variables, cstate, x))
    )
    kernel = np.asarray(stripped["params"]["Dense_0"]["kernel"])
    mask = np.asarray(cstate.algorithms["magnitude_sparsity"].masks["Dense_0"]["kernel"])
    assert np.all(kernel[~mask] == 0)
    assert ctrl.prepare_for_export() is not None


def test_export_model_writes_an_artefact(sparse, tmp_path):
    ctrl, *_ = sparse
    artefact = ctrl.export_model(str(tmp_path / "model.stablehlo"))
    assert artefact.path.stat().st_size > 0
    assert artefact.metadata["compression"]["algorithms"] == ["magnitude_sparsity"]


def test_apply_under_jit_equals_no_jit(sparse):
    ctrl, cstate, _, variables, x = sparse
    ctrl.compression_rate = 0.5
    cstate = ctrl.state
    eager = ctrl.apply(variables, cstate, x)
    jitted = jax.jit(ctrl.apply)(variables, cstate, x)
    np.testing.assert_allclose(np.asarray(eager), np.asarray(jitted), rtol=1e-6, atol=1e-6)


def test_composite_controller(cnn):
    model, variables, *_ = cnn
    params = jax.tree.map(lambda w: w, variables["params"])
    params["Dense_1"]["kernel"] = params["Dense_1"]["kernel"].at[:5].set(0.0)
    variables = {"params": params}
    config = {
        "compression": [
            {"algorithm": "const_sparsity", "target_scopes": ["Dense_1"]},
            {
                "algorithm": "magnitude_sparsity",
                "ignored_scopes": ["Dense_1"],
                "sparsity_init": 0.2,
            },
        ]
    }
    ctrl, _cstate = nj.create_compressed_model(model, variables, config)
    assert ctrl.name == "composite"
    assert [c.name for c in ctrl.child_ctrls] == ["const_sparsity", "magnitude_sparsity"]
    assert set(ctrl.get_state()) == {"const_sparsity", "magnitude_sparsity"}
    assert set(ctrl.get_compression_state()["builder_state"]) == {
        "const_sparsity",
        "magnitude_sparsity",
    }
    # Stages differ (const is FULLY, magnitude PARTIALLY): the composite is PARTIALLY.
    assert ctrl.child_ctrls[0].compression_stage() == nj.CompressionStage.FULLY_COMPRESSED
    assert ctrl.compression_stage() == nj.CompressionStage.PARTIALLY_COMPRESSED
    rates = [c.compression_rate for c in ctrl.child_ctrls]
    assert ctrl.compression_rate == pytest.approx(sum(rates) / 2)
    assert ctrl.maximal_compression_rate == 1.0
    assert float(ctrl.loss()) == 0.0
    # Children share the parent's handles.
    ctrl.child_ctrls[1].scheduler.epoch_step()
    assert ctrl.scheduler.current_epoch == 0
    stats = ctrl.statistics()
    assert stats.const_sparsity.model_statistics.sparsity_level_for_layers == pytest.approx(
        5 / 32, abs=1e-6
    )
    with pytest.raises(
        UsageError, match="const_sparsity: no algorithm here has a compression rate to set"
    ):
        ctrl.child_ctrls[0].compression_rate = 0.3


def test_const_sparsity_keeps_existing_zeros(cnn, train_step_factory):
    import optax

    model, variables, x, y = cnn
    params = jax.tree.map(lambda w: w, variables["params"])
    params["Dense_0"]["kernel"] = params["Dense_0"]["kernel"].at[::2].set(0.0)
    variables = {"params": params}
    ctrl, cstate = nj.create_compressed_model(
        model, variables, {"compression": {"algorithm": "const_sparsity"}}, steps_per_epoch=2
    )
    tx = optax.sgd(0.1)
    step = jax.jit(train_step_factory(ctrl, tx))
    opt_state = tx.init(params)
    for _ in range(3):
        variables, opt_state, cstate = step(variables, opt_state, cstate, x, y)
    kernel = np.asarray(variables["params"]["Dense_0"]["kernel"])
    assert np.all(kernel[::2] == 0) and np.all(kernel[1::2] != 0)
    ctrl.sync(variables, cstate)
    assert ctrl.compression_stage() == nj.CompressionStage.FULLY_COMPRESSED
    assert ctrl.compression_rate > 0.4


def test_facade_without_params_handle_is_a_clear_error(sparse):
    ctrl, *_ = sparse
    ctrl.params = None
    with pytest.raises(UsageError, match=r"ctrl.sync\(variables, cstate\)"):
        ctrl.scheduler.epoch_step()


def test_bare_params_with_a_plain_apply_function():
    def apply(params, x):
        return x @ params["w"]

    params = {"w": jax.random.normal(jax.random.key(0), (6, 4)), "b": np.zeros(4, np.float32)}
    ctrl, _cstate = nj.create_compressed_model(
        apply, params, {"compression": {"algorithm": "magnitude_sparsity"}}
    )
    ctrl.compression_rate = 0.5
    out = ctrl.apply(params, ctrl.state, np.ones((2, 6), np.float32))
    stripped = ctrl.strip(params, ctrl.state)
    np.testing.assert_allclose(
        np.asarray(out), np.ones((2, 6)) @ np.asarray(stripped["w"]), rtol=1e-6
    )
    assert int((np.asarray(stripped["w"]) == 0).sum()) == 12


def test_losses_per_algorithm_sum_to_the_loss_and_show_in_statistics():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.relu(nn.Dense(8)(x)))

    model = Net()
    variables = model.init(jax.random.key(0), np.ones((1, 4), np.float32))
    config = {
        "input_info": {"sample_size": [1, 4]},
        "compression": [
            {"algorithm": "magnitude_sparsity", "sparsity_init": 0.3},
            {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 0}}},
        ],
    }
    ctrl, cstate = nj.create_compressed_model(model, variables, config)
    parts = jax.jit(ctrl.losses)(variables["params"], cstate)
    assert set(parts) == {"magnitude_sparsity", "quantization"}
    assert float(ctrl.loss(variables["params"], cstate)) == float(sum(parts.values()))
    stats = ctrl.statistics()
    assert stats.losses == {"magnitude_sparsity": 0.0, "quantization": 0.0}
    assert stats.compression_loss == 0.0
    assert "Compression loss" in stats.to_str() and "total (ctrl.loss)" in stats.to_str()
