"""The export section of `scripts/bench.py`: artefact bytes and OpenVINO CPU latency.

For the example digits CNN, float against 50% magnitude-sparse: StableHLO
and OpenVINO IR bytes, and OpenVINO CPU inference latency (f32) with float
and sparse interleaved in blocks. Imported by ``bench.py`` (it runs from
the ``scripts`` folder, which is on ``sys.path`` then).
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
except ImportError:
    openvino = None

OPENVINO_MISSING = (
    "OpenVINO is not installed (pip install 'nncf-jax[openvino]'): "
    "OpenVINO IR bytes and CPU latency skipped"
)
INT8_NOTE = (
    "int8 rows (artefact bytes, OpenVINO latency) come with quantization, which nncf_jax "
    "does not have yet: float and 50% sparse only"
)


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
            statistics.median(block_times["sparse"]) / statistics.median(block_times["float"])
        )
    float_s, sparse_s = statistics.median(times["float"]), statistics.median(times["sparse"])
    return {
        "batch": batch,
        "float_s": float_s,
        "sparse_s": sparse_s,
        # Median over blocks of per-block ratios, as for step_ratio; pooled beside it.
        "sparse_over_float": statistics.median(block_ratios),
        "sparse_over_float_pooled": sparse_s / float_s,
        "timed_calls": len(times["float"]),
    }


def bench_export(sizes: Any) -> dict[str, Any]:
    """Artefact bytes and OpenVINO CPU latency of the example digits CNN, float vs 50% sparse."""
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
    out: dict[str, Any] = {
        "model": "nncf_jax.examples.digits_data.CNN",
        "params": tree_size(variables["params"]),
        "param_bytes": tree_bytes(variables["params"]),
        "sparse_rate": ctrls["sparse"].compression_rate,
        "int8_note": INT8_NOTE,
    }
    with tempfile.TemporaryDirectory(prefix="nncf_jax_bench_") as tmp:
        folder = Path(tmp)
        for kind, ctrl in ctrls.items():
            artefact = ctrl.export_model(str(folder / f"{kind}.stablehlo"), save_format="stablehlo")
            # The artefact alone: its JSON sidecar describes it and is not needed to run it.
            out[f"stablehlo_{kind}_bytes"] = _file_bytes(artefact.path)
        out["stablehlo_sparse_over_float"] = (
            out["stablehlo_sparse_bytes"] / out["stablehlo_float_bytes"]
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
        ov["sparse_over_float_ir_bytes"] = ov["sparse_ir_bytes"] / ov["float_ir_bytes"]
        ov["inference_threads"] = int(compiled["float"].get_property("INFERENCE_NUM_THREADS"))
        ov["latency"] = {f"b{b}": _ov_latency(compiled, b, sizes) for b in sizes.ov_batches}
        out["openvino"] = ov
    return out


# --- report ---------------------------------------------------------------


def _ms3(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def _bytes_pair(float_bytes: int, sparse_bytes: int) -> str:
    return f"{float_bytes:,} B / {sparse_bytes:,} B"


def report_export(export: dict[str, Any], console: Console) -> None:
    """Prints the export table: artefact bytes and OpenVINO CPU latency, float vs sparse."""
    table = Table(
        title=f"export: example digits CNN ({export['params']:,} params), "
        f"float vs {export['sparse_rate']:.0%} magnitude-sparse"
    )
    for column in ("quantity", "float / sparse", "sparse / float"):
        table.add_column(column, justify="left" if column == "quantity" else "right")
    table.add_row(
        "StableHLO artefact bytes (jax.export, without sidecar)",
        _bytes_pair(export["stablehlo_float_bytes"], export["stablehlo_sparse_bytes"]),
        f"{export['stablehlo_sparse_over_float']:.3f}",
    )
    ov = export["openvino"]
    if ov is not None:
        table.add_row(
            f"OpenVINO {ov['version'].split('-')[0]} IR bytes (.xml + .bin)",
            _bytes_pair(ov["float_ir_bytes"], ov["sparse_ir_bytes"]),
            f"{ov['sparse_over_float_ir_bytes']:.3f}",
        )
        for lat in ov["latency"].values():
            table.add_row(
                f"OpenVINO CPU latency, batch {lat['batch']} (f32, "
                f"{ov['inference_threads']} threads, {lat['timed_calls']} calls each)",
                f"{_ms3(lat['float_s'])} / {_ms3(lat['sparse_s'])}",
                f"{lat['sparse_over_float']:.3f}",
            )
    console.print(table)
    if ov is None:
        console.print(export["openvino_skipped"], markup=False, soft_wrap=True)
    console.print(f"Note: {export['int8_note']}.", markup=False, soft_wrap=True)
