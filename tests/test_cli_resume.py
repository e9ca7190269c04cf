"""``nncf-jax train --resume``: an interrupted run ends with the bits of an uninterrupted one.

Runs of ``configs/digits_magnitude_sparsity.json`` to 4 epochs, as
subprocesses (two at a time):

- ``whole``: 4 epochs in one go;
- ``killed``: ``--epochs 4``, killed (SIGKILL) as soon as the checkpoint of
  epoch 2 is complete, then ``--epochs 4 --resume``: a real interruption,
  wherever in epoch 3 or 4 it lands (possibly mid-save);
- ``finished``: a copy of ``whole``, resumed: no epoch left to train, the
  end of the run (stripped weights, export, metrics) is written again.

The final checkpoint (variables, optimizer state, compression state), the
stripped weights and the metrics (history included, timings excepted) must
be equal bit for bit. Then the mistakes: nothing to resume, ``--resume`` with
``--overwrite``, an accuracy-aware config, another seed, fewer epochs.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from nncf_jax import cli
from nncf_jax.examples.digits_restore import restore_run

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "digits_magnitude_sparsity.json"
_SCRIPT = pathlib.Path(sys.executable).parent / "nncf-jax"
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "nncf_jax.cli"]
# Timings, paths and the resume marker are the only metrics allowed to differ.
_NOT_COMPARED = {
    "compile_seconds",
    "train_seconds",
    "step_ms",
    "total_seconds",
    "out_dir",
    "checkpoint_dir",
    "stripped_dir",
    "exported_model",
    "tensorboard_dir",
    "plots",
    "resumed_from_epoch",
    "history",
}


def _train(out: pathlib.Path, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "train", str(CONFIG), "--out", str(out), "--no-plots", "--quiet", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> None:
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr


def _complete_steps(out: pathlib.Path) -> list[int]:
    checkpoints = out / "checkpoints"
    return sorted(ocp.path.step.checkpoint_steps(checkpoints)) if checkpoints.is_dir() else []


def _kill_after_checkpoint(proc: subprocess.Popen, out: pathlib.Path, epoch: int) -> None:
    deadline = time.monotonic() + 120
    while epoch not in _complete_steps(out):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    whole, killed, finished = root / "whole", root / "killed", root / "finished"
    uninterrupted = _train(whole, "--epochs", 4)
    victim = _train(killed, "--epochs", 4)
    _kill_after_checkpoint(victim, killed, 2)
    killed_at = _complete_steps(killed)[-1]
    assert killed_at in (2, 3), f"the kill landed after epoch {killed_at}"
    _finish(uninterrupted)
    shutil.copytree(whole, finished)
    resumed = [
        _train(killed, "--epochs", 4, "--resume"),
        _train(finished, "--epochs", 4, "--resume"),
    ]
    for proc in resumed:
        _finish(proc)
    return SimpleNamespace(
        root=root, whole=whole, killed=killed, finished=finished, killed_at=killed_at
    )


def _leaves(tree) -> tuple[list, list]:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return [(np.asarray(x).dtype, np.shape(x), np.asarray(x).tobytes()) for x in leaves], treedef


def _assert_bits_equal(a, b) -> None:
    (leaves_a, tree_a), (leaves_b, tree_b) = _leaves(a), _leaves(b)
    assert tree_a == tree_b
    assert len(leaves_a) == len(leaves_b) > 0
    for i, (x, y) in enumerate(zip(leaves_a, leaves_b, strict=True)):
        assert x == y, f"leaf {i} differs"


def _metrics(out: pathlib.Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


@pytest.mark.parametrize("name", ["killed", "finished"])
def test_resumed_run_ends_with_the_bits_of_an_uninterrupted_one(runs, name):
    out = getattr(runs, name)
    whole = restore_run(runs.whole).restored
    resumed = restore_run(out).restored
    assert whole.step == resumed.step == 4
    _assert_bits_equal(whole.variables, resumed.variables)
    _assert_bits_equal(whole.opt_state, resumed.opt_state)
    _assert_bits_equal(whole.cstate, resumed.cstate)
    assert whole.compression_state == resumed.compression_state

    with ocp.StandardCheckpointer() as checkpointer:
        stripped_whole = checkpointer.restore(runs.whole / "stripped")
        stripped_resumed = checkpointer.restore(out / "stripped")
    _assert_bits_equal(stripped_whole, stripped_resumed)

    expected, got = _metrics(runs.whole), _metrics(out)
    for key in sorted(set(expected) - _NOT_COMPARED):
        assert got[key] == expected[key], key
    assert [r["epoch"] for r in got["history"]] == [1, 2, 3, 4]
    assert _without_seconds(got["history"]) == _without_seconds(expected["history"])
    assert expected["resumed_from_epoch"] is None
    assert got["resumed_from_epoch"] == (runs.killed_at if name == "killed" else 4)
    history = json.loads((out / "history.json").read_text())["history"]
    assert _without_seconds(history) == _without_seconds(expected["history"])


def _error(capsys, *argv) -> str:
    assert cli.main(["train", *map(str, argv)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nncf-jax: error: ") and err.count("\n") == 1, err
    return err


def test_resume_mistakes_are_one_line_errors(runs, capsys):
    empty = runs.root / "empty"
    err = _error(capsys, CONFIG, "--out", empty, "--resume", "--quiet")
    assert "nothing to resume in" in err and str(empty) in err
    assert not empty.exists()

    err = _error(capsys, CONFIG, "--out", runs.whole, "--resume", "--overwrite", "--quiet")
    assert "--resume" in err and "--overwrite" in err

    aa = ROOT / "configs" / "digits_accuracy_aware.json"
    err = _error(capsys, aa, "--out", runs.root / "aa", "--resume", "--quiet")
    assert "not supported for accuracy-aware configs" in err

    before = sorted(p.name for p in runs.killed.iterdir())
    err = _error(capsys, CONFIG, "--out", runs.killed, "--epochs", 4, "--seed", 1, "--resume")
    assert "resume with --seed 0" in err
    err = _error(capsys, CONFIG, "--out", runs.killed, "--epochs", 3, "--resume", "--quiet")
    assert "latest checkpoint is of epoch 4" in err
    err = _error(capsys, CONFIG, "--out", runs.killed, "--epochs", 4, "--lr", 0.1, "--resume")
    assert "differs in optimizer" in err
    assert sorted(p.name for p in runs.killed.iterdir()) == before  # refused: nothing touched

    # Without --resume the guard still protects the run.
    err = _error(capsys, CONFIG, "--out", runs.killed, "--epochs", 4, "--quiet")
    assert "already holds a run" in err


def test_train_help_describes_resume(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--resume" in text and "bit for bit" in text and "history.json" in text
