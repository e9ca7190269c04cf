"""`scripts/bench.py --quick` runs end to end and reports the four ratios and the export section.

No timing goal is asserted here: timings depend on the machine and its load.
"""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib
import subprocess
import sys

BENCH = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "bench.py"
RATIOS = ("step_ratio", "refresh_ratio", "compile_ratio", "state_bytes_ratio")
EXPORT_NUMBERS = ("stablehlo_float_bytes", "stablehlo_sparse_bytes", "stablehlo_sparse_over_float")
OPENVINO_NUMBERS = (
    "float_ir_bytes",
    "sparse_ir_bytes",
    "int8_ir_bytes",
    "sparse_over_float_ir_bytes",
    "int8_over_float_ir_bytes",
)
LATENCY_NUMBERS = (
    "float_s",
    "sparse_s",
    "int8_s",
    "sparse_over_float",
    "int8_over_float",
    "sparse_over_float_pooled",
)
# The bench's OpenVINO part runs in the same interpreter as this test.
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


def _assert_positive_finite(where: str, value: object) -> None:
    assert isinstance(value, int | float) and not isinstance(value, bool), (where, value)
    assert math.isfinite(value) and value > 0, (where, value)


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
        _assert_positive_finite(key, results[key])
    # The table names every goal.
    for metric in ("sparse step / dense step", "mask refresh", "compile", "state bytes"):
        assert metric in proc.stdout, metric

    pruning = results["filter_pruning"]
    for key in ("step_ratio", "inference_ratio"):
        _assert_positive_finite(f"filter_pruning.{key}", pruning[key])
    suite = results["suite"]
    assert [m["model"] for m in suite["models"]] == ["MLP", "digits CNN", "ResNet-style CNN"]
    for m in suite["models"]:
        for key in ("sparsity_step_ratio", "int8_step_ratio", "sparsity_int8_step_ratio"):
            _assert_positive_finite(f"suite.{m['model']}.{key}", m[key])
        assert abs(m["sparsity_state_bytes_ratio"] - 0.25) < 0.01
    assert [r["refresh_ratio"] > 0 for r in suite["refresh"]] == [True, True]

    quant = results["quantization"]
    for key in ("qat_step_ratio", "qat_compile_ratio", "float_step_s", "qat_step_s"):
        _assert_positive_finite(f"quantization.{key}", quant[key])
    assert quant["weight_quantizers"] == 4 and quant["activation_quantizers"] == 4
    assert "QAT step / float step" in proc.stdout

    rb = results["rb_sparsity"]
    for key in ("rb_step_ratio", "rb_compile_ratio", "dense_step_s", "rb_step_s"):
        _assert_positive_finite(f"rb_sparsity.{key}", rb[key])
    assert rb["targeted_weights"] == 4 and rb["goal"] == 1.1
    assert "RB step / dense step" in proc.stdout

    export = results["export"]
    for key in EXPORT_NUMBERS:
        _assert_positive_finite(f"export.{key}", export[key])
    assert "StableHLO artefact bytes" in proc.stdout
    _assert_positive_finite("export.stablehlo_int8_over_float", export["stablehlo_int8_over_float"])
    # int8 codes: a quarter of the float bytes plus the graph and scales.
    assert export["stablehlo_int8_over_float"] < 0.35
    if not HAS_OPENVINO:
        assert export["openvino"] is None
        assert "OpenVINO is not installed" in proc.stdout
        return
    ov = export["openvino"]
    assert ov is not None, export["openvino_skipped"]
    for key in OPENVINO_NUMBERS:
        _assert_positive_finite(f"export.openvino.{key}", ov[key])
    # OpenVINO runs the INT8 model's two convolutions and two dense layers on
    # int8 kernels, and nothing of the float models.
    assert (ov["float_int8_layers"], ov["sparse_int8_layers"], ov["int8_int8_layers"]) == (0, 0, 4)
    assert "run on int8 kernels" in proc.stdout
    # --quick: batch 1 only.
    assert list(ov["latency"]) == ["b1"]
    for key in LATENCY_NUMBERS:
        _assert_positive_finite(f"export.openvino.latency.b1.{key}", ov["latency"]["b1"][key])
    assert "OpenVINO CPU latency, batch 1" in proc.stdout
