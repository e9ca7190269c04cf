"""`scripts/bench.py --quick` runs end to end and reports the four ratios.

No timing goal is asserted here: timings depend on the machine and its load.
"""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys

BENCH = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "bench.py"
RATIOS = ("step_ratio", "refresh_ratio", "compile_ratio", "state_bytes_ratio")


def test_quick_bench_writes_four_positive_finite_ratios(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    for key in RATIOS:
        value = results[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value) and value > 0, (key, value)
    # The table names every goal.
    for metric in ("sparse step / dense step", "mask refresh", "compile", "state bytes"):
        assert metric in proc.stdout, metric
