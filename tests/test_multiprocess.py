"""Two processes joined by ``jax.distributed`` train and checkpoint one compressed model.

The multi-host path users take on TPU pods and GPU clusters, on localhost:
``tests/multiprocess_job.py`` runs in two processes with 4 simulated CPU
devices each (CPU collectives over gloo), a 2x4 global mesh.
"""

from __future__ import annotations

import pathlib
import socket
import subprocess
import sys

import pytest

JOB = pathlib.Path(__file__).with_name("multiprocess_job.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("layout", ["within", "across"])
def test_two_processes_train_save_and_restore_a_compressed_model(tmp_path, layout):
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(JOB), str(i), str(port), str(tmp_path), layout],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (0, 1)
    ]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            outputs.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for i, (code, out, err) in enumerate(outputs):
        assert code == 0, f"process {i}:\n{out[-2000:]}\n{err[-4000:]}"
    lines = [out.strip().splitlines()[-1].split() for _, out, _ in outputs]
    assert [line[:2] for line in lines] == [["OK", "0"], ["OK", "1"]], lines
    assert lines[0][2] == lines[1][2], "the processes disagree on the trained params"
