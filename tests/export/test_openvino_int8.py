"""OpenVINO IR of quantized models: FakeQuantize ops, int8 weight patterns, int8 kernels.

Each fake quantizer is one named call in the jaxpr, exported as one
``FakeQuantize``; OpenVINO's CPU then runs the quantized convolutions and
matmuls on int8 kernels. Reference numbers (digits-sized CNN, OpenVINO
2026.4.1, f32 hint): outside rounding ties OpenVINO and JAX agree to ~1e-7;
int8 kernels rescale their integer sums in another order than JAX's float32
convolutions, so a value within float rounding of a tie can land one level
away, which moved about 1% of 1024 N(0, 1) rows by up to 1.6e-3 (|y| <= 1).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nncf_jax as nj
from nncf_jax.errors import ExportError
from nncf_jax.export import example_inputs, export_forward, jaxpr_to_openvino
from nncf_jax.quantization.fake_quant import (
    FAKE_QUANTIZE_CALL,
    asymmetric_quantize,
    fake_quantize_call_levels,
    symmetric_quantize,
)

ov = pytest.importorskip("openvino")
from nncf_jax.export.openvino import int8_layers  # noqa: E402  (needs openvino)

F32 = {"INFERENCE_PRECISION_HINT": "f32"}


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(16, (3, 3))(x))
        x = nn.relu(nn.Conv(16, (3, 3))(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(64)(x))
        return nn.Dense(10)(x)


def _quantized(quantization: dict):
    model = Net()
    x = np.asarray(jax.random.uniform(jax.random.key(3), (64, 8, 8, 1)))
    variables = model.init(jax.random.key(0), x[:1])
    config = {
        "input_info": {"sample_size": [1, 8, 8, 1]},
        "compression": {"algorithm": "quantization", **quantization},
    }
    ctrl, cstate = nj.create_compressed_model(model, variables, config, init_data=[x])
    return ctrl, variables, cstate


def _ops(model, kind):
    """``model``'s ops of type ``kind`` (keep ``model`` alive: it owns their links)."""
    return [op for op in model.get_ops() if op.get_type_name() == kind]


def _row_diffs(compiled, ctrl, variables, cstate, x):
    expected = np.asarray(ctrl.apply(variables, cstate, x))
    got = compiled(x)[0]
    return np.abs(got - expected).max(axis=1), float(np.abs(expected).max())


# ------------------------------------------------------------ the named call


def test_each_fake_quantizer_is_one_named_call_with_its_level_count():
    def fq(x):
        x = symmetric_quantize(x, 1.0, bits=8, signed=True, narrow_range=True)
        return asymmetric_quantize(x, -0.5, 2.0, bits=4)

    def calls(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in ("jit", "pjit"):
                yield eqn.params["name"]
            for param in eqn.params.values():
                sub = getattr(param, "jaxpr", param)  # a ClosedJaxpr's Jaxpr
                if hasattr(sub, "eqns"):
                    yield from calls(sub)

    names = list(calls(jax.make_jaxpr(fq)(jnp.ones(3)).jaxpr))
    levels = [fake_quantize_call_levels(n) for n in names]
    assert [n for n, lv in zip(names, levels, strict=True) if lv is not None] == [
        f"{FAKE_QUANTIZE_CALL}_levels255",
        f"{FAKE_QUANTIZE_CALL}_levels16",
    ]
    assert [lv for lv in levels if lv is not None] == [255, 16]
    assert "round" in names and fake_quantize_call_levels("round") is None
    assert fake_quantize_call_levels(f"{FAKE_QUANTIZE_CALL}_levels") is None
    # The custom_vjp around the call keeps NNCF's straight-through gradient.
    grad = jax.jit(jax.grad(lambda x: jnp.sum(fq(x))))
    np.testing.assert_array_equal(grad(jnp.array([0.1, -0.4, 5.0])), [1.0, 1.0, 0.0])


# --------------------------------------------------- FakeQuantize semantics

TIES = np.arange(-20, 300)
FQ_CASES = {
    # s = 128 exactly: x = (k + 1/2) / 128 are exact rounding ties.
    "unsigned_ties": (
        lambda x: symmetric_quantize(x, 255 / 128, bits=8, signed=False, narrow_range=False),
        ((TIES + 0.5) / 128).astype(np.float32),
        256,
    ),
    "signed_ties": (
        lambda x: symmetric_quantize(x, 127 / 64, bits=8, signed=True, narrow_range=False),
        ((TIES - 150 + 0.5) / 64).astype(np.float32),
        256,
    ),
    "signed_narrow_per_channel": (
        lambda x: symmetric_quantize(
            x, jnp.array([0.7, 1.3, 2.1]), bits=8, signed=True, narrow_range=True, axis=1
        ),
        1.5 * np.random.default_rng(0).standard_normal((400, 3)).astype(np.float32),
        255,
    ),
    "asymmetric": (
        lambda x: asymmetric_quantize(x, -0.3, 1.7, bits=8),
        np.random.default_rng(1).standard_normal((4000,)).astype(np.float32),
        256,
    ),
    "asymmetric_4bit_per_channel": (
        lambda x: asymmetric_quantize(
            x, jnp.array([-0.3, -1.0, 0.2]), jnp.array([1.7, 2.0, 1.0]), bits=4, axis=-1
        ),
        np.random.default_rng(2).standard_normal((500, 3)).astype(np.float32),
        16,
    ),
}


@pytest.mark.parametrize("case", sorted(FQ_CASES))
def test_fake_quantize_op_rounds_like_jax(case, tmp_path):
    fn, x, levels = FQ_CASES[case]
    artefact = export_forward(
        fn,
        example_inputs({"sample_size": list(x.shape)}, None),
        tmp_path / "fq.xml",
        save_format="openvino",
        batch_polymorphic=False,
    )
    model = ov.Core().read_model(str(artefact.path))
    (op,) = _ops(model, "FakeQuantize")
    assert op.get_attributes()["levels"] == levels
    # The range is constants (what OpenVINO's int8 transformations need).
    assert all(op.input_value(i).get_node().get_type_name() == "Constant" for i in range(1, 5))
    got = ov.Core().compile_model(str(artefact.path), "CPU", F32)(x)[0]
    want = np.asarray(jax.jit(fn)(x))
    # Same grid, both half to even: exact ties agree exactly, other values to a
    # few float32 ulps of the grid point (lo + k / s against (k - zp) / s).
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    if case.endswith("ties"):
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------ int8 kernels


def test_quantized_cnn_runs_int8_kernels_and_matches_jax(tmp_path):
    ctrl, variables, cstate = _quantized({})
    artefact = ctrl.export_model(str(tmp_path / "m.xml"), save_format="openvino")
    aq = ctrl.statistics().quantization.aq_counter.total_count
    assert aq == 4
    model = ov.Core().read_model(str(artefact.path))
    fqs = _ops(model, "FakeQuantize")
    assert len(fqs) == aq
    assert {op.get_attributes()["levels"] for op in fqs} == {256}
    # Weights: Constant(i8) -> Convert -> Multiply(1 / s), no Divide left.
    codes = [op for op in _ops(model, "Constant") if op.get_element_type() == ov.Type.i8]
    assert len(codes) == 4
    for c in codes:
        (convert,) = [t.get_node() for t in c.output(0).get_target_inputs()]
        assert convert.get_type_name() == "Convert"
        (scale,) = [t.get_node() for t in convert.output(0).get_target_inputs()]
        assert scale.get_type_name() == "Multiply"
    assert _ops(model, "Divide") == []

    compiled = ov.Core().compile_model(str(artefact.path), "CPU", F32)
    layers = int8_layers(compiled)
    assert len(layers) == 4, layers  # both convolutions and both dense layers
    assert artefact.metadata["verified_int8_layers"] == 4

    x = np.asarray(jax.random.normal(jax.random.key(5), (512, 8, 8, 1)))
    rows, scale = _row_diffs(compiled, ctrl, variables, cstate, x)
    # Most rows agree to float precision; the rest differ by a tie flipped to
    # the next level (measured: ~1% of rows, < 2e-3).
    assert np.mean(rows <= 1e-5) >= 0.95, np.sort(rows)[-10:]
    assert rows.max() <= 1e-2 * (1 + scale), rows.max()


@pytest.mark.parametrize(
    "quantization",
    [
        pytest.param({"activations": {"ignored_scopes": ["{re}.*"]}}, id="weights_only"),
        pytest.param({"weights": {"mode": "asymmetric"}}, id="asymmetric_weights"),
        pytest.param({"weights": {"bits": 4}}, id="4bit_weights"),
    ],
)
def test_layers_without_int8_pattern_run_float_weights_exactly(quantization, tmp_path):
    # OpenVINO's compressed-weight path (int8 weights, float input) would
    # quantize the input on the fly and move outputs by ~1e-2: these weights
    # stay a Divide, which OpenVINO folds to the float32 weights JAX uses.
    ctrl, variables, cstate = _quantized(quantization)
    artefact = ctrl.export_model(str(tmp_path / "m.xml"), save_format="openvino")
    model = ov.Core().read_model(str(artefact.path))
    compiled = ov.Core().compile_model(model, "CPU", F32)
    assert int8_layers(compiled) == []
    assert artefact.metadata["verified_int8_layers"] == 0
    scaled = [op.input_value(0).get_node().get_type_name() for op in _ops(model, "Multiply")]
    assert "Convert" not in scaled  # no Convert(codes) * (1 / s)
    x = np.asarray(jax.random.normal(jax.random.key(5), (256, 8, 8, 1)))
    rows, _ = _row_diffs(compiled, ctrl, variables, cstate, x)
    if "activations" in quantization:
        assert _ops(model, "FakeQuantize") == []
        assert rows.max() <= 1e-5, rows.max()
    else:
        # Quantized activations, float layers: only ties can differ (OpenVINO's
        # float FakeQuantize computes the same grid in another order).
        assert len(_ops(model, "FakeQuantize")) == 4
        assert np.mean(rows <= 1e-5) >= 0.95, np.sort(rows)[-10:]


def test_verification_catches_a_wrong_fake_quantize(tmp_path, monkeypatch):
    # Half the levels: every value moves by up to a (new) level, far more
    # than the rounding ties the quantized bound allows for.
    ctrl, _, _ = _quantized({})
    right = jaxpr_to_openvino.Translator.fake_quantize

    def wrong(self, xs, sources, levels):
        return right(self, xs, sources, levels // 2)

    monkeypatch.setattr(jaxpr_to_openvino.Translator, "fake_quantize", wrong)
    with pytest.raises(ExportError, match="OpenVINO translator"):
        ctrl.export_model(str(tmp_path / "m.xml"), save_format="openvino")
    assert list(tmp_path.iterdir()) == []
