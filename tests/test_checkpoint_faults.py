"""Checkpoint faults: SIGKILL mid-save, damaged files, wrong model/config, failed saves, no pickle.

Each test injects one fault and checks that nothing is lost (the last
complete step restores bit for bit, earlier steps stay byte-identical on disk)
and that the user gets a `CheckpointError` that names the step folder or the
mismatching paths.
"""

from __future__ import annotations

import _pickle
import gc
import hashlib
import json
import os
import pathlib
import pickle
import shutil
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from orbax.checkpoint._src.path import atomicity
from orbax.checkpoint._src.serialization import serialization

import nncf_jax as nj
from nncf_jax.checkpoint import CheckpointManager
from nncf_jax.errors import CheckpointError

JOB = pathlib.Path(__file__).with_name("checkpoint_fault_job.py")


class Tiny(nn.Module):
    """dense(features) -> dense10 [-> dense10] on 16 inputs."""

    features: int = 32
    extra: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.features)(x))
        x = nn.Dense(10)(x)
        return nn.Dense(10)(x) if self.extra else x


def _config(algorithm="magnitude_sparsity"):
    section = {"algorithm": algorithm}
    if algorithm == "magnitude_sparsity":
        section |= {"sparsity_init": 0.3, "params": {"sparsity_target": 0.5}}
    return {"input_info": {"sample_size": [1, 16]}, "compression": section}


def _setup(model=None, config=None):
    """``(ctrl, variables, opt_state, cstate)`` for a fresh run."""
    model = model or Tiny()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 16)))
    ctrl, cstate = nj.create_compressed_model(model, variables, config or _config())
    return ctrl, variables, optax.adam(1e-3).init(variables["params"]), cstate


def _templates(model=None, config=None):
    ctrl, variables, opt_state, cstate = _setup(model, config)
    return ctrl, {"variables": variables, "opt_state": opt_state, "cstate": cstate}


def _assert_same_bits(a, b):
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def _tree_hash(root: pathlib.Path) -> str:
    """SHA-256 over every path (relative) and file's bytes under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A directory with complete steps 1 and 2 (different values) and what each holds."""
    root = tmp_path_factory.mktemp("saved") / "ckpt"
    ctrl, variables, opt_state, cstate = _setup()
    values = {}
    with CheckpointManager(root) as manager:
        for step in (1, 2):
            if step == 2:  # something else in every part of the tree
                variables = jax.tree.map(lambda x: x * 1.5 + 0.25, variables)
                opt_state = jax.tree.map(lambda x: x + 1, opt_state)
                ctrl.scheduler.epoch_step()
                cstate = ctrl.state
            manager.save(step, ctrl=ctrl, variables=variables, opt_state=opt_state, cstate=cstate)
            values[step] = {"variables": variables, "opt_state": opt_state, "cstate": cstate}
    return root, values


@pytest.fixture
def copy_of(saved, tmp_path):
    root, values = saved
    copy = tmp_path / "ckpt"
    shutil.copytree(root, copy)
    return copy, values


# --- 1. SIGKILL in the middle of a save -------------------------------------------------


def _start(ckpt, out, total, *extra):
    log = open(ckpt.parent / f"{ckpt.parent.name}.log", "w")  # closed by _finish
    process = subprocess.Popen(
        [sys.executable, str(JOB), str(ckpt), str(out), str(total), *map(str, extra)],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, log


def _finish(process, log, timeout=180):
    try:
        process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    text = pathlib.Path(log.name).read_text()
    assert process.returncode == 0, text[-3000:]
    return text


def test_sigkill_mid_save_resumes_from_last_complete_step_with_same_bits(tmp_path):
    """Jobs are SIGKILLed inside orbax's save of step 6 (once while arrays are being
    written, once in the final commit, every file written but the folder not yet
    renamed); a resumed job starts from step 5 and ends bit-identical to a straight run."""
    total, hang = 8, 6
    runs = {name: tmp_path / name for name in ("straight", "write", "commit")}
    for run in runs.values():
        run.mkdir()
    jobs = {"straight": _start(runs["straight"] / "ckpt", runs["straight"] / "final.npz", total)}
    for point in ("write", "commit"):
        run = runs[point]
        jobs[point] = _start(
            run / "ckpt", run / "final.npz", total, "--hang-in-save", hang, "--hang-at", point
        )

    for point in ("write", "commit"):
        run, (process, log) = runs[point], jobs[point]
        marker, ckpt = run / "hung_in_save.txt", run / "ckpt"
        deadline = time.monotonic() + 180
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not marker.exists():
            process.kill()
            log.close()
            pytest.fail(f"{point}: job never reached the save hook\n{log.name}")
        # The job is parked inside orbax's save of step 6: prove it before killing.
        assert process.poll() is None, f"{point}: job exited instead of hanging in the save"
        tmp_dir = ckpt / f"{hang}.orbax-checkpoint-tmp"
        assert tmp_dir.is_dir() and not (ckpt / str(hang)).exists()
        inside = set(marker.read_text().split("\n")[2:])
        if point == "write":  # the train item is still being written
            assert "train.orbax-checkpoint-tmp" in inside and "train" not in inside, inside
        else:  # everything written and committed, only the step's rename missing
            assert {"train", "train/_METADATA", "compression_state/metadata"} <= inside, inside
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        log.close()
        assert process.returncode == -signal.SIGKILL
        # What the kill left: the temporary folder, invisible as a step.
        assert tmp_dir.is_dir() and not (ckpt / str(hang)).exists()
        with CheckpointManager(ckpt) as manager:
            assert manager.all_steps() == [hang - 2, hang - 1]

    resumed = {
        point: _start(runs[point] / "ckpt", runs[point] / "final.npz", total)
        for point in ("write", "commit")
    }
    _finish(*jobs["straight"])
    straight = np.load(runs["straight"] / "final.npz")
    for point, job in resumed.items():
        assert f"resumed from step {hang - 1}" in _finish(*job), point
        ckpt = runs[point] / "ckpt"
        assert sorted(os.listdir(ckpt)) == [str(total - 1), str(total)], point  # tmp replaced
        final = np.load(runs[point] / "final.npz")
        assert final.files == straight.files and len(final.files) > 10
        for name in straight.files:
            assert final[name].dtype == straight[name].dtype, (point, name)
            assert final[name].tobytes() == straight[name].tobytes(), f"{point}: {name} differs"


# --- 2. damaged files --------------------------------------------------------------------


def _biggest_array_file(step_dir):
    files = [p for p in (step_dir / "train").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _overwrite(path):
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2)
        chunk = f.read(16)
        f.seek(size // 2)
        f.write(bytes(b ^ 0xFF for b in chunk))


DAMAGE = {
    # name: (how, a fragment the message must have)
    "truncated array file": (lambda d: _truncate(_biggest_array_file(d)), "arrays cannot be read"),
    # TensorStore reads these bytes back without complaint: only the checksums see it.
    "overwritten array bytes": (
        lambda d: _overwrite(_biggest_array_file(d)),
        "do not match the checksum written at save time",
    ),
    "deleted array file": (lambda d: _biggest_array_file(d).unlink(), "arrays cannot be read"),
    "deleted tree metadata": (lambda d: (d / "train" / "_METADATA").unlink(), "_METADATA"),
    "deleted OCDBT manifest": (
        lambda d: (d / "train" / "manifest.ocdbt").unlink(),
        "metadata cannot be read",
    ),
    "compression_state not JSON": (
        lambda d: (d / "compression_state" / "metadata").write_text('{"builder_state": {'),
        "JSON cannot be read",
    ),
    "compression_state wrong JSON": (
        lambda d: (d / "compression_state" / "metadata").write_text('{"hello": 1}'),
        "not a get_compression_state() dict",
    ),
    "compression_state deleted": (
        lambda d: (d / "compression_state" / "metadata").unlink(),
        "JSON cannot be read",
    ),
    "checksums wrong JSON": (
        lambda d: (d / "integrity" / "metadata").write_text("[]"),
        "integrity is not a",
    ),
}


# orbax abandons its other read coroutines when one read fails; collect them here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_step_raises_and_earlier_steps_stay_intact(copy_of, damage):
    root, values = copy_of
    how, fragment = DAMAGE[damage]
    how(root / "2")
    earlier, everything = _tree_hash(root / "1"), _tree_hash(root)
    _, templates = _templates()
    with CheckpointManager(root) as manager:
        assert manager.all_steps() == [1, 2]  # orbax still counts it complete
        with pytest.raises(CheckpointError) as error:
            manager.restore(2, **templates)
        message = str(error.value)
        assert "step 2" in message and str(root / "2") in message and fragment in message
        # Latest damaged: restore() raises, names it and the earlier steps; no fallback.
        with pytest.raises(CheckpointError) as error:
            manager.restore(**templates)
        message = str(error.value)
        assert f"step 2 at {root / '2'} is damaged" in message
        assert "other complete steps here: [1]" in message and "restore(step=1" in message
        restored = manager.restore(1, **templates)
    gc.collect()
    assert restored.step == 1
    _assert_same_bits(
        {
            "variables": restored.variables,
            "opt_state": restored.opt_state,
            "cstate": restored.cstate,
        },
        values[1],
    )
    assert _tree_hash(root / "1") == earlier
    assert _tree_hash(root) == everything  # restoring wrote nothing, not even to step 2


# --- 3. another model or config ------------------------------------------------------------


@pytest.fixture
def orbax_restore_forbidden(monkeypatch):
    """Mismatches must be found from metadata alone, so the message is ours, not orbax's."""

    def forbidden(*args, **kwargs):
        raise AssertionError("orbax restore was called for a mismatching template")

    monkeypatch.setattr(ocp.CheckpointManager, "restore", forbidden)


@pytest.mark.parametrize(
    "model, config, expected",
    [
        (
            Tiny(features=64),
            None,
            [
                "variables/params/Dense_0/kernel: saved (16, 32), expected (16, 64)",
                "variables/params/Dense_0/bias: saved (32,), expected (64,)",
                "variables/params/Dense_1/kernel: saved (32, 10), expected (64, 10)",
                "opt_state/0/mu/Dense_0/kernel: saved (16, 32), expected (16, 64)",
                "cstate/algorithms/magnitude_sparsity/masks/Dense_0/kernel: saved (16, 32), "
                "expected (16, 64)",
            ],
        ),
        (
            Tiny(extra=True),
            None,
            [
                "variables/params/Dense_2/kernel: expected by this model/optimizer/state, "
                "not in the checkpoint",
                "cstate/algorithms/magnitude_sparsity/masks/Dense_2/kernel: expected by",
                "cstate/algorithms/magnitude_sparsity/thresholds: saved (2,), expected (3,)",
            ],
        ),
        (
            None,
            _config("const_sparsity"),
            [
                "cstate/algorithms/magnitude_sparsity/level: in the checkpoint, not in this "
                "model/optimizer/state",
                "cstate/algorithms/const_sparsity/masks/Dense_0/kernel: expected by this "
                "model/optimizer/state, not in the checkpoint",
            ],
        ),
    ],
    ids=["wider layer", "extra layer", "other algorithm"],
)
def test_other_model_or_config_names_the_mismatching_paths(
    saved, orbax_restore_forbidden, model, config, expected
):
    root, _ = saved
    ctrl, templates = _templates(model, config)
    with CheckpointManager(root) as manager, pytest.raises(CheckpointError) as error:
        manager.restore(**templates, ctrl=ctrl)
    message = str(error.value)
    assert f"step 2 at {root / '2'} cannot be restored into this" in message
    for line in expected:
        assert line in message, f"{line!r} not in:\n{message}"
    assert "orbax" not in message.lower()


def test_other_dtype_is_a_mismatch_not_a_silent_cast(saved, orbax_restore_forbidden):
    root, _ = saved
    _, templates = _templates()
    templates["variables"] = jax.tree.map(lambda x: x.astype(jnp.bfloat16), templates["variables"])
    with CheckpointManager(root) as manager, pytest.raises(CheckpointError) as error:
        manager.restore(1, **templates)
    assert "variables/params/Dense_0/kernel: saved dtype float32, expected bfloat16" in str(
        error.value
    )


def _edit_builder_state(step_dir, edit):
    path = step_dir / "compression_state" / "metadata"
    state = json.loads(path.read_text())
    edit(state["builder_state"])
    path.write_text(json.dumps(state))


def test_compression_state_of_another_algorithm_set_is_refused_with_the_reason(copy_of):
    root, _ = copy_of
    _edit_builder_state(root / "2", lambda b: b.update(const_sparsity=b.pop("magnitude_sparsity")))
    _edit_builder_state(
        root / "1", lambda b: b["magnitude_sparsity"]["target_weights"].append("Dense_7/kernel")
    )
    ctrl, templates = _templates()
    with CheckpointManager(root) as manager:
        with pytest.raises(CheckpointError) as error:
            manager.restore(2, **templates, ctrl=ctrl)
        assert (
            "saved for algorithms ['const_sparsity'], this config has ['magnitude_sparsity']"
            in (str(error.value))
        )
        with pytest.raises(CheckpointError) as error:
            manager.restore(1, **templates, ctrl=ctrl)
        assert "builder_state.target_weights" in str(error.value)
        assert "only in the saved state: ['Dense_7/kernel']" in str(error.value)
        # Without a controller there is nothing to check the JSON against.
        assert manager.restore(1, **templates).step == 1


# --- 4. no unpickling ---------------------------------------------------------------------


@pytest.fixture
def pickle_forbidden(monkeypatch):
    """Every way to unpickle raises: the pickle/_pickle entry points, every module's
    own reference to them, numpy.load(allow_pickle=True); an audit hook records any
    class lookup by an unpickler that got past them anyway."""

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling in the checkpoint load path")

    class ForbiddenUnpickler:
        def __init__(self, *args, **kwargs):
            forbidden()

    originals = {
        id(getattr(mod, name)): replacement
        for mod in (pickle, _pickle)
        for name, replacement in (
            ("load", forbidden),
            ("loads", forbidden),
            ("Unpickler", ForbiddenUnpickler),
        )
        if hasattr(mod, name)
    }
    for module in list(sys.modules.values()):
        for name, value in list(getattr(module, "__dict__", {}).items()):
            if id(value) in originals:
                monkeypatch.setattr(module, name, originals[id(value)])
    numpy_load = np.load

    def load(*args, allow_pickle=False, **kwargs):
        if allow_pickle:
            forbidden()
        return numpy_load(*args, allow_pickle=False, **kwargs)

    monkeypatch.setattr(np, "load", load)
    _AUDIT.clear()
    _AUDIT.append("armed")
    yield
    events = _AUDIT[1:]
    _AUDIT.clear()
    assert not events, f"unpickler looked up classes: {events}"


_AUDIT: list = []


def _audit(event, args):
    if _AUDIT and event == "pickle.find_class":
        _AUDIT.append(args)


sys.addaudithook(_audit)


def test_restore_never_unpickles(saved, pickle_forbidden):
    root, values = saved
    ctrl, templates = _templates()
    with pytest.raises(AssertionError, match="unpickling"):
        pickle.loads(pickle.dumps(1))  # the trap is armed
    with CheckpointManager(root) as manager:  # a fresh manager reads everything from disk
        restored = manager.restore(**templates, ctrl=ctrl)
    assert restored.step == 2
    _assert_same_bits(
        {
            "variables": restored.variables,
            "opt_state": restored.opt_state,
            "cstate": restored.cstate,
        },
        values[2],
    )


# --- 5. failed saves ----------------------------------------------------------------------


def _fail_commit(monkeypatch):
    async def finalize(self):
        raise OSError(28, "No space left on device (injected in the commit)")

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", finalize)


def _fail_write(monkeypatch):
    async def write(*args, **kwargs):
        raise OSError(28, "No space left on device (injected in an array write)")

    monkeypatch.setattr(serialization, "async_serialize_from_host", write)


@pytest.mark.parametrize("inject", [_fail_write, _fail_commit], ids=["write", "commit"])
def test_failed_save_raises_and_leaves_no_visible_step(tmp_path, monkeypatch, inject):
    root = tmp_path / "ckpt"
    ctrl, variables, opt_state, cstate = _setup()
    state = {"variables": variables, "opt_state": opt_state, "cstate": cstate}
    with CheckpointManager(root) as manager:
        manager.save(1, ctrl=ctrl, **state)
        manager.wait_until_finished()
        with monkeypatch.context() as patch:
            inject(patch)
            manager.save(2, ctrl=ctrl, **state)  # asynchronous: fails in orbax's thread
            with pytest.raises(CheckpointError, match=r"saving step 2 to .* failed .*No space"):
                manager.wait_until_finished()
        assert manager.all_steps() == [1] and manager.latest_step() == 1
        assert not (root / "2").exists()
        with CheckpointManager(root) as other:  # a new process sees the same
            assert other.all_steps() == [1]
        _, templates = _templates()
        assert manager.restore(**templates).step == 1
        # The disk is back: the same step saves, replacing what the failure left.
        manager.save(2, ctrl=ctrl, **state)
    assert sorted(os.listdir(root)) == ["1", "2"]


def test_save_that_fails_at_once_raises_checkpoint_error(tmp_path):
    root = tmp_path / "ckpt"
    ctrl, variables, opt_state, cstate = _setup()
    state = {"variables": variables, "opt_state": opt_state, "cstate": cstate}
    with CheckpointManager(root) as manager:
        with pytest.raises(CheckpointError, match=r"saving step 1 to .* failed.*opt_state/note"):
            manager.save(1, ctrl=ctrl, **{**state, "opt_state": {"note": object()}})
        # refused before orbax starts: no temporary folder a later save could race with
        assert not root.exists() or os.listdir(root) == []
        assert manager.save(1, ctrl=ctrl, **state)
        manager.wait_until_finished()
        before = _tree_hash(root)
        assert manager.save(1, ctrl=ctrl, **state) is False  # orbax: not a step to save
        with pytest.raises(CheckpointError, match=r"saving step 1 to .* failed.*already exists"):
            manager.save(1, ctrl=ctrl, **state, force=True)
        assert manager.all_steps() == [1]
    assert sorted(os.listdir(root)) == ["1"] and _tree_hash(root) == before
