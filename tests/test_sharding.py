"""Sharded compression on 8 simulated CPU devices, in a process of its own.

``tests/sharding_job.py`` sets ``XLA_FLAGS=--xla_force_host_platform_device_count=8``
before importing jax (so this pytest process keeps its one device) and
checks, for 1x8 and 2x4 meshes: every state leaf's sharding against its
param's (initial and after jitted steps with the batch split along the data
axis), masks and ranges equal to a one-device run, and orbax restores onto
the other mesh and onto one device giving the same bits.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

JOB = pathlib.Path(__file__).with_name("sharding_job.py")


def test_sharded_state_training_and_restore_across_meshes(tmp_path):
    result = subprocess.run(
        [sys.executable, str(JOB), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert result.stdout.strip().splitlines()[-1] == "OK 75", result.stdout[-2000:]
