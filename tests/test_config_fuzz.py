"""Fuzzed configs: every one builds, or raises nncf-jax's own error, within a time bound.

Hypothesis generates NNCF configs, valid and invalid: wrong types, levels out
of [0, 1), unknown keys, empty lists, huge numbers (ints past int32, past
float range, of 5000 digits), NaN and infinities (Python floats through
`NNCFConfig.from_dict`, ``NaN`` / ``Infinity`` tokens in `NNCFConfig.from_json`
files), unicode and control characters in scope names, regular expressions
that do not compile or that backtrack catastrophically, nested garbage
(thousands of levels deep, or containing itself), a missing ``algorithm``,
``compression`` as a list, object or scalar, for every known algorithm
(those not built yet raise `NotAvailableError`, an `NNCFJaxError`). Each
config goes through ``from_dict``, ``create_compressed_model`` on a tiny Flax
CNN and, when JSON can hold it, ``from_json``; each call must return or raise
an `NNCFJaxError` (never ``KeyError``, ``TypeError``, ``RecursionError``,
``OverflowError``, ``re.error``, jsonschema errors, ...) within
`PARSE_BOUND_S` / `BUILD_BOUND_S`. A build that succeeds must give a
JSON-serialisable ``get_compression_state()``.

Configs fuzzed per run: 200 config dicts (each also written as a JSON file
when JSON can hold it) + 150 JSON texts + 1000 scope regexes + 6 valid
magnitude sparsity configs that must build and step = 1356 configs, about
40 s on 2 cores (most of it compiling the mask program of the configs that
build). The runs are derandomized: CI sees the same configs every time.
``NNCF_JAX_FUZZ_SCALE=10`` runs ten times as many; ``NNCF_JAX_FUZZ_RANDOM=1``
draws new ones each run (``--hypothesis-seed=N`` replays a run). While this
file was written, 16,000 configs at scale 10 and 32,000 more under four
random seeds at scale 5 passed.

``test_config_fuzz_regressions.py`` pins each bug the fuzzing found. The model,
bounds and hostile values are in ``fuzz_support.py``, the strategies in
``fuzz_configs.py``.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

import nncf_jax as nj
from nncf_jax.errors import NNCFJaxError

pytestmark = [
    # The fuzzed regexes include ones re warns about; the warning is the user's to see.
    pytest.mark.filterwarnings("ignore:Possible .* at position:FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*sparsity_target is ignored with schedule 'multistep'"),
]


import fuzz_configs as _configs  # noqa: E402
import fuzz_support as _support  # noqa: E402

# Derandomized Hypothesis seeds each test from a digest of its body: the bodies
# keep these names, so that a rename does not change every fuzzed config.
MODEL, VARIABLES = _support.MODEL, _support.VARIABLES
PARSE_BOUND_S, BUILD_BOUND_S = _support.PARSE_BOUND_S, _support.BUILD_BOUND_S
_timed, _check_built, _json_text = _support._timed, _support._check_built, _configs._json_text
_examples = _support._examples


@pytest.fixture(scope="module")
def json_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz_json")


# --- the fuzz tests ----------------------------------------------------------------------


@_examples(200)
@given(config=_configs.configs)
def test_fuzzed_configs_build_or_raise_library_errors(config, json_dir):
    parsed = _timed(lambda: nj.NNCFConfig.from_dict(config), PARSE_BOUND_S)
    built = _timed(lambda: nj.create_compressed_model(MODEL, VARIABLES, config), BUILD_BOUND_S)
    if isinstance(parsed, NNCFJaxError):
        event(f"from_dict: {type(parsed).__name__}")
        # create_compressed_model validates the same way.
        assert type(built) is type(parsed) and str(built) == str(parsed)
    else:
        event("from_dict: ok")
        assert isinstance(parsed, nj.NNCFConfig)
        _check_built(built)

    text = _json_text(config)
    if text is not None:
        path = json_dir / "config.json"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        from_file = _timed(lambda: nj.NNCFConfig.from_json(path), PARSE_BOUND_S)
        if isinstance(parsed, NNCFJaxError):
            assert type(from_file) is type(parsed)
            assert str(from_file) == f"{parsed} (in {str(path)!r})"
        else:
            assert json.dumps(from_file) == json.dumps(parsed)  # NaN != NaN under ==


@_examples(150)
@given(text=_configs.json_texts, raw=st.booleans())
def test_fuzzed_json_files_load_or_raise_library_errors(text, raw, json_dir):
    path = json_dir / "raw.json"
    data = text.encode("utf-8", errors="surrogatepass")
    if raw:
        data = data[:-1] + b"\xff" if data else b"\xff\xfe"  # invalid UTF-8
    path.write_bytes(data)
    loaded = _timed(lambda: nj.NNCFConfig.from_json(path), PARSE_BOUND_S)
    if isinstance(loaded, NNCFJaxError):
        event(f"from_json: {type(loaded).__name__}")
        return
    event("from_json: ok")
    _check_built(
        _timed(lambda: nj.create_compressed_model(MODEL, VARIABLES, loaded), BUILD_BOUND_S)
    )


@_examples(1000)
@given(
    body=_configs.regex_bodies,
    key=st.sampled_from(["ignored_scopes", "target_scopes"]),
    in_section=st.booleans(),
    validate=st.booleans(),
)
def test_fuzzed_scope_regexes_match_or_raise_quickly(body, key, in_section, validate):
    # const_sparsity builds without compiling, so many patterns fit in the time.
    section = {"algorithm": "const_sparsity", "validate_scopes": validate}
    config = {"compression": section}
    (section if in_section else config)[key] = ["{re}" + body]
    parsed = _timed(lambda: nj.NNCFConfig.from_dict(config), PARSE_BOUND_S)
    event(f"from_dict: {type(parsed).__name__}")
    built = _timed(lambda: nj.create_compressed_model(MODEL, VARIABLES, config), PARSE_BOUND_S)
    _check_built(built)


@_examples(6)
@given(config=_configs.valid_magnitude)
def test_valid_magnitude_configs_build_and_step(config):
    config = {"compression": config}
    ctrl, cstate = _timed(
        lambda: nj.create_compressed_model(MODEL, VARIABLES, config), BUILD_BOUND_S
    )
    _check_built((ctrl, cstate))
    ctrl.scheduler.epoch_step()
    ctrl.scheduler.step()
    assert 0.0 <= ctrl.compression_rate < 1.0
    json.dumps(ctrl.get_compression_state(), allow_nan=False)
