"""Checkpoints: orbax save/restore of params + optimizer + compression state, and exact resume."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

import nncf_jax as nj
from nncf_jax.checkpoint import CheckpointManager
from nncf_jax.errors import CheckpointError

JOB = pathlib.Path(__file__).with_name("resume_job.py")


def _run(*args):
    result = subprocess.run(
        [sys.executable, str(JOB), *map(str, args)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_resume_in_a_new_process_ends_with_the_same_bits(tmp_path):
    total, stop = 10, 4  # stops mid-epoch (3 steps per epoch), per-step schedule
    _run(tmp_path / "straight", total)
    _run(tmp_path / "resumed", total, "--stop-after", stop)
    assert not (tmp_path / "resumed" / "final.npz").exists()
    _run(tmp_path / "resumed", total, "--resume")
    straight = np.load(tmp_path / "straight" / "final.npz")
    resumed = np.load(tmp_path / "resumed" / "final.npz")
    assert straight.files == resumed.files and len(straight.files) > 10
    for name in straight.files:
        a, b = straight[name], resumed[name]
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), f"leaf {name} differs after resume"


def test_save_restore_round_trip_types_and_json(cnn, make_magnitude_config, tmp_path, trees_equal):
    model, variables, *_ = cnn
    ctrl, cstate = nj.create_compressed_model(
        model, variables, make_magnitude_config(sparsity_init=0.3)
    )
    tx = optax.adam(1e-3)
    opt_state = tx.init(variables["params"])
    ctrl.scheduler.epoch_step()
    cstate = ctrl.state
    with CheckpointManager(tmp_path / "ck") as manager:
        assert manager.save(7, ctrl=ctrl, variables=variables, opt_state=opt_state, cstate=cstate)
        manager.wait_until_finished()
        assert manager.all_steps() == [7] and manager.latest_step() == 7
        fresh_ctrl, fresh_state = nj.create_compressed_model(
            model, variables, make_magnitude_config(sparsity_init=0.3)
        )
        restored = manager.restore(
            variables=variables,
            opt_state=tx.init(variables["params"]),
            cstate=fresh_state,
            ctrl=fresh_ctrl,
        )
    trees_equal(restored.cstate, cstate)
    trees_equal(restored.opt_state, opt_state)
    assert isinstance(restored.opt_state[0], optax.ScaleByAdamState)
    assert jax.tree.leaves(restored.cstate)[0].dtype == jax.tree.leaves(cstate)[0].dtype
    assert restored.compression_state == json.loads(json.dumps(ctrl.get_compression_state()))
    assert fresh_ctrl.get_state() == ctrl.get_state()


def test_restore_errors(cnn, make_magnitude_config, tmp_path):
    model, variables, *_ = cnn
    ctrl, cstate = nj.create_compressed_model(model, variables, make_magnitude_config())
    with CheckpointManager(tmp_path / "empty") as manager:
        with pytest.raises(CheckpointError, match="no complete checkpoint"):
            manager.restore(variables=variables, cstate=cstate)
        manager.save(1, ctrl=ctrl, variables=variables, cstate=cstate)
        manager.wait_until_finished()
        with pytest.raises(CheckpointError, match=r"no checkpoint for step 5 .*available: \[1\]"):
            manager.restore(5, variables=variables, cstate=cstate)
        other = {"params": {"w": np.zeros((3, 3), np.float32)}}
        with pytest.raises(CheckpointError, match="cannot be restored"):
            manager.restore(variables=other, cstate=cstate)
