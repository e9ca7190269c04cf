"""Bad configs through the public entry point: each gives the library's error and its message."""

from __future__ import annotations

import pytest

import nncf_jax as nj
from nncf_jax import errors


@pytest.mark.parametrize(
    ("compression", "error", "message"),
    [
        (
            {"algorithm": "magnitude_sparsty"},
            errors.UnknownAlgorithmError,
            r"compression.algorithm: .*'magnitude_sparsty'.*const_sparsity.*magnitude_sparsity.*quantization",
        ),
        (
            {"algorithm": "magnitude_sparsity", "params": {"sparsity_target": "half"}},
            errors.ConfigError,
            r"compression.params.sparsity_target: expected a number",
        ),
        (
            {"algorithm": "magnitude_sparsity", "params": {"sparsity_target": 1.0}},
            errors.ConfigError,
            r"compression.params.sparsity_target: .*\[0, 1\)",
        ),
        (
            [
                {"algorithm": "const_sparsity"},
                {"algorithm": "magnitude_sparsity", "params": {"sparsity_taget": 0.3}},
            ],
            errors.ConfigError,
            r"compression\[1\].params.sparsity_taget: unknown key .*did you mean 'sparsity_target'",
        ),
        (
            {"algorithm": "magnitude_sparsity", "target_scopes": ["Conv_7"]},
            errors.ScopeError,
            r"compression.target_scopes\[0\]: scope 'Conv_7' matches no parameter",
        ),
        (
            {"algorithm": "magnitude_sparsity", "ignored_scopes": ["{re}(unclosed"]},
            errors.ScopeError,
            r"compression.ignored_scopes\[0\]",
        ),
        (
            {"algorithm": "magnitude_sparsity", "params": {"weight_importance": "L1"}},
            errors.ConfigError,
            r"compression.params.weight_importance: expected one of 'abs', 'normed_abs', got 'L1'",
        ),
    ],
)
def test_bad_configs(cnn, compression, error, message):
    model, variables, *_ = cnn
    with pytest.raises(error, match=message):
        nj.create_compressed_model(model, variables, {"compression": compression})


def test_unknown_algorithm_lists_every_known_one(cnn):
    # Every NNCF algorithm is built now (movement_sparsity was the last one
    # this test used as "known but unbuilt"): a wrong name lists them all.
    from nncf_jax.config import KNOWN_ALGORITHMS

    model, variables, *_ = cnn
    assert set(KNOWN_ALGORITHMS) <= set(nj.core.registry.registered_algorithms())
    with pytest.raises(errors.UnknownAlgorithmError) as info:
        nj.create_compressed_model(model, variables, {"compression": {"algorithm": "movement"}})
    for name in KNOWN_ALGORITHMS:
        assert name in str(info.value)


def test_errors_are_the_library_classes_not_bare_builtins(cnn):
    model, variables, *_ = cnn
    with pytest.raises(errors.NNCFJaxError):
        nj.create_compressed_model(model, variables, ["not", "a", "config"])
    with pytest.raises(errors.UsageError, match="model must be"):
        nj.create_compressed_model(42, variables, {"compression": []})


def test_from_json_and_empty_compression(cnn, tmp_path):
    model, variables, x, _ = cnn
    path = tmp_path / "c.json"
    path.write_text(
        '{"input_info": {"sample_size": [1, 8, 8, 1]}, "target_device": "GPU", "log_dir": "runs", "compression": []}'
    )
    config = nj.NNCFConfig.from_json(path)
    ctrl, cstate = nj.create_compressed_model(model, variables, config)
    assert ctrl.algorithms == ()
    assert ctrl.compression_rate is None
    assert ctrl.compression_stage() == nj.CompressionStage.UNCOMPRESSED
    assert (ctrl.apply(variables, cstate, x) == model.apply(variables, x)).all()
