"""The export section of `scripts/bench.py`: artefact bytes and OpenVINO CPU latency.

For the example digits CNN, float against 50% magnitude-sparse and against
INT8 (weights and activations, weights stored as int8 codes): StableHLO and
OpenVINO IR bytes, how many convolutions / matmuls OpenVINO runs on int8
kernels (`nncf_jax.export.openvino.int8_layers`), and OpenVINO CPU inference
latency (f32 hint) with the three models interleaved in blocks. Goal: int8
StableHLO bytes / float <= 0.27. Imported by ``bench.py`` (it runs from the
``scripts`` folder, which is on ``sys.path`` then).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console
from rich.table import Table

import nncf_jax as nj
from nncf_jax.examples.digits_data import CNN, IMAGE_SHAPE

try:  # optional: the export section's OpenVINO part needs it
    import openvino

    from nncf_jax.export.openvino import int8_layers
except ImportError:
    openvino = None

OPENVINO_MISSING = (
    "OpenVINO is not installed (pip install 'nncf-jax[openvino]'): "
    "OpenVINO IR bytes and CPU latency skipped"
)
INT8_GOAL = 0.27
KINDS = ("float", "sparse", "int8")


def tree_bytes(tree: Any) -> int:
    """Bytes of all array leaves of ``tree``."""
    return sum(int(np.asarray(leaf).nbytes) for leaf in jax.tree.leaves(tree))


def tree_size(tree: Any) -> int:
    """Elements in all array leaves of ``tree``."""
    return sum(int(np.size(leaf)) for leaf in jax.tree.leaves(tree))


def _file_bytes(*paths: Path) -> int:
    return sum(p.stat().st_size for p in paths)


def _ov_latency(compiled: dict[str, Any], batch: int, sizes: Any) -> dict[str, float | int]:
    """Median seconds of one ``infer`` call of each compiled model, interleaved in blocks."""
    x = np.asarray(jax.random.uniform(jax.random.key(3), (batch, *IMAGE_SHAPE), jnp.float32))
    requests = {}
    for kind, model in compiled.items():
        request = model.create_infer_request()
        request.set_input_tensor(openvino.Tensor(x))  # set once: the calls time inference only
        for _ in range(sizes.ov_warmup_calls):
            request.infer()
        requests[kind] = request
    times: dict[str, list[float]] = {kind: [] for kind in requests}
    block_ratios = []
    for block in range(sizes.ov_blocks):
        order = list(requests) if block % 2 == 0 else list(requests)[::-1]
        block_times: dict[str, list[float]] = {}
        for kind in order:
            request, ts = requests[kind], []
            for _ in range(sizes.ov_calls_per_block):
                start = time.perf_counter()
                request.infer()
                ts.append(time.perf_counter() - start)
            block_times[kind] = ts
            times[kind].extend(ts)
        block_ratios.append(
            {
                kind: statistics.median(block_times[kind]) / statistics.median(block_times["float"])
                for kind in block_times
                if kind != "float"
            }
        )
    out: dict[str, float | int] = {"batch": batch, "timed_calls": len(times["float"])}
    for kind in times:
        out[f"{kind}_s"] = statistics.median(times[kind])
        if kind != "float":
            # Median over blocks of per-block ratios, as for step_ratio; pooled beside it.
            out[f"{kind}_over_float"] = statistics.median(r[kind] for r in block_ratios)
            out[f"{kind}_over_float_pooled"] = out[f"{kind}_s"] / out["float_s"]
    return out


def bench_export(sizes: Any) -> dict[str, Any]:
    """Artefact bytes and OpenVINO CPU latency of the example digits CNN: float, 50% sparse, INT8."""
    model = CNN()
    variables = model.init(jax.random.key(0), jnp.ones((1, *IMAGE_SHAPE), jnp.float32))
    input_info = {"sample_size": [1, *IMAGE_SHAPE]}
    ctrls = {}
    ctrls["float"], _ = nj.create_compressed_model(
        model, variables, {"input_info": input_info, "compression": []}
    )
    ctrls["sparse"], _ = nj.create_compressed_model(
        model,
        variables,
        {"input_info": input_info, "compression": {"algorithm": "magnitude_sparsity"}},
    )
    ctrls["sparse"].compression_rate = 0.5
    calibration = [np.asarray(jax.random.uniform(jax.random.key(4), (128, *IMAGE_SHAPE)))]
    ctrls["int8"], _ = nj.create_compressed_model(
        model,
        variables,
        {"input_info": input_info, "compression": {"algorithm": "quantization"}},
        init_data=calibration,
    )
    out: dict[str, Any] = {
        "model": "nncf_jax.examples.digits_data.CNN",
        "params": tree_size(variables["params"]),
        "param_bytes": tree_bytes(variables["params"]),
        "sparse_rate": ctrls["sparse"].compression_rate,
        "int8_goal": INT8_GOAL,
    }
    with tempfile.TemporaryDirectory(prefix="nncf_jax_bench_") as tmp:
        folder = Path(tmp)
        for kind, ctrl in ctrls.items():
            artefact = ctrl.export_model(str(folder / f"{kind}.stablehlo"), save_format="stablehlo")
            # The artefact alone: its JSON sidecar describes it and is not needed to run it.
            out[f"stablehlo_{kind}_bytes"] = _file_bytes(artefact.path)
        for kind in ("sparse", "int8"):
            out[f"stablehlo_{kind}_over_float"] = (
                out[f"stablehlo_{kind}_bytes"] / out["stablehlo_float_bytes"]
            )
        out["openvino"] = out["openvino_skipped"] = None
        if openvino is None:
            out["openvino_skipped"] = OPENVINO_MISSING
            return out
        ov: dict[str, Any] = {"version": openvino.__version__}
        core = openvino.Core()
        compiled = {}
        for kind, ctrl in ctrls.items():
            artefact = ctrl.export_model(str(folder / f"{kind}.xml"), save_format="openvino")
            ov[f"{kind}_ir_bytes"] = _file_bytes(artefact.path, artefact.path.with_suffix(".bin"))
            compiled[kind] = core.compile_model(
                str(artefact.path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
            )
        for kind in ("sparse", "int8"):
            ov[f"{kind}_over_float_ir_bytes"] = ov[f"{kind}_ir_bytes"] / ov["float_ir_bytes"]
        for kind, model in compiled.items():
            # Convolutions / matmuls on int8 kernels, as OpenVINO's runtime graph reports them.
            ov[f"{kind}_int8_layers"] = len(int8_layers(model))
        ov["inference_threads"] = int(compiled["float"].get_property("INFERENCE_NUM_THREADS"))
        ov["latency"] = {f"b{b}": _ov_latency(compiled, b, sizes) for b in sizes.ov_batches}
        out["openvino"] = ov
    return out


# --- report ---------------------------------------------------------------


def _ms3(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def _three(values: dict[str, Any], fmt: str) -> str:
    return " / ".join(fmt.format(values[k]) for k in KINDS)


def report_export(export: dict[str, Any], console: Console) -> None:
    """Prints the export table: artefact bytes and OpenVINO CPU latency of the three models."""
    table = Table(
        title=f"export: example digits CNN ({export['params']:,} params), float / "
        f"{export['sparse_rate']:.0%} magnitude-sparse / INT8"
    )
    for column in ("quantity", "float / sparse / int8", "sparse / float", "int8 / float"):
        table.add_column(column, justify="left" if column == "quantity" else "right")
    int8 = export["stablehlo_int8_over_float"]
    verdict = "pass" if int8 <= export["int8_goal"] else "FAIL"
    table.add_row(
        "StableHLO artefact bytes (jax.export, without sidecar)",
        _three({k: export[f"stablehlo_{k}_bytes"] for k in KINDS}, "{:,} B"),
        f"{export['stablehlo_sparse_over_float']:.3f}",
        f"{int8:.3f} (goal <= {export['int8_goal']:g}: {verdict})",
    )
    ov = export["openvino"]
    if ov is not None:
        table.add_row(
            f"OpenVINO {ov['version'].split('-')[0]} IR bytes (.xml + .bin)",
            _three({k: ov[f"{k}_ir_bytes"] for k in KINDS}, "{:,} B"),
            f"{ov['sparse_over_float_ir_bytes']:.3f}",
            f"{ov['int8_over_float_ir_bytes']:.3f}",
        )
        table.add_row(
            "OpenVINO convolutions / matmuls run on int8 kernels",
            _three({k: ov[f"{k}_int8_layers"] for k in KINDS}, "{}"),
            "",
            "",
        )
        for lat in ov["latency"].values():
            table.add_row(
                f"OpenVINO CPU latency, batch {lat['batch']} (f32 hint, "
                f"{ov['inference_threads']} threads, {lat['timed_calls']} calls each)",
                " / ".join(_ms3(lat[f"{k}_s"]) for k in KINDS),
                f"{lat['sparse_over_float']:.3f}",
                f"{lat['int8_over_float']:.3f}",
            )
    console.print(table)
    if ov is None:
        console.print(export["openvino_skipped"], markup=False, soft_wrap=True)
