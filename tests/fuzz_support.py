"""The config fuzz tests' model, time bounds, Hypothesis profile and hostile values.

Shared by ``test_config_fuzz.py``, ``test_config_fuzz_regressions.py`` and
``fuzz_configs.py``, which import it by name (pytest's ``pythonpath`` has ``tests/``).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from datetime import timedelta

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st

from nncf_jax.config import KNOWN_ALGORITHMS
from nncf_jax.errors import NNCFJaxError

# --- the model and the bounds ----------------------------------------------------


class TinyCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(2, (3, 3))(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(4)(x))
        return nn.Dense(2)(x)


MODEL = TinyCNN()
X = jnp.ones((1, 4, 4, 1))
VARIABLES = MODEL.init(jax.random.key(0), X)
KERNELS = ["Conv_0/kernel", "Dense_0/kernel", "Dense_1/kernel"]
NAMES = [*KERNELS, "Conv_0/bias", "Dense_0/bias", "Dense_1/bias", "Conv_0", "Dense_0", "Dense_1"]

# Parsing and validating a config is milliseconds; a build that succeeds with
# magnitude sparsity also compiles its mask program once (about 1 s on 2
# cores). The hangs these bounds catch are unbounded; the margin is for slow
# CI machines.
PARSE_BOUND_S = 2.0
BUILD_BOUND_S = 4.0
INT32_MAX = 2**31 - 1

_SCALE = int(os.environ.get("NNCF_JAX_FUZZ_SCALE", "1"))
settings.register_profile(
    "nncf_jax_fuzz",
    # NNCF_JAX_FUZZ_RANDOM=1: new configs each run (--hypothesis-seed=N replays one).
    derandomize="NNCF_JAX_FUZZ_RANDOM" not in os.environ,
    database=None,
    # A case runs up to four timed calls; each is bounded by the asserts above.
    deadline=timedelta(seconds=2 * PARSE_BOUND_S + 2 * BUILD_BOUND_S),
    # Cases that build magnitude sparsity compile for about a second.
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
FUZZ = settings.get_profile("nncf_jax_fuzz")


def _examples(n: int) -> settings:
    return settings(FUZZ, max_examples=n * _SCALE)


def _timed(fn, bound_s: float):
    """``fn()`` or the `NNCFJaxError` it raised; any other exception propagates."""
    start = time.perf_counter()
    try:
        out = fn()
    except NNCFJaxError as e:
        out = e
    elapsed = time.perf_counter() - start
    assert elapsed < bound_s, f"took {elapsed:.2f} s (bound {bound_s} s)"
    return out


def _check_built(built) -> None:
    """A successful build: its compression state survives a JSON round trip."""
    if isinstance(built, NNCFJaxError):
        event(f"build: {type(built).__name__}")
        return
    event("build: ok")
    ctrl, _cstate = built
    state = ctrl.get_compression_state()
    text = json.dumps(state, allow_nan=False)
    assert json.loads(text) == state


# --- values ----------------------------------------------------------------------

NAN, INF = math.nan, math.inf
HUGE_INTS = [INT32_MAX, INT32_MAX + 1, -(2**31) - 1, 2**63, 10**30, -(10**30), 10**400]
SPECIAL_FLOATS = [NAN, INF, -INF, 1e308, -1e308, 5e-324, -0.0, 1.0, 1.0 - 2**-53, 2.5e9]
WORDS = [
    *KNOWN_ALGORITHMS,
    "magnitude_sparsty",
    "MAGNITUDE_SPARSITY",
    "",
    " ",
    "polynomial",
    "exponential",
    "multistep",
    "adaptive",
    "abs",
    "normed_abs",
    "global",
    "local",
    "L2",
    "ANY",
    "CPU",
    "\x00",
    "é",
    "🙂",
    "\ud800",
    "Conv_0/kernel",
]
KEYS = [
    "algorithm",
    "params",
    "compression",
    "sparsity_target",
    "schedule",
    "ignored_scopes",
    "target_scopes",
    "steps_per_epoch",
    "initializer",
    "sample_size",
    "mode",
    "type",
    "",
    "🙂",
]


class _Opaque:
    """An object that refuses to be copied, as a user object under an unknown key might."""

    def __deepcopy__(self, memo):
        raise RuntimeError("no copies")


def _nested(depth: int, kind: str):
    out: object = 1
    for _ in range(depth):
        out = [out] if kind == "list" else {"a": out}
    return out


def _cycle():
    d: dict = {"algorithm": "const_sparsity"}
    d["self"] = d
    return d


def _wide_dag(depth: int = 40):
    # Shared references: a tree walk of this is 2**40 values, its memory 40 lists.
    x: list = [1]
    for _ in range(depth):
        x = [x, x]
    return x


# 10**5000 is built, not listed: repr() of it raises, and hypothesis reprs its strategies.
huge_ints = st.sampled_from(HUGE_INTS) | st.just(5000).map(lambda n: 10**n)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 1000),
    huge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(SPECIAL_FLOATS),
    st.text(max_size=12),
    st.sampled_from(WORDS),
)
odd_values = (
    st.sampled_from(
        [
            b"bytes",
            1j,
            {1, 2},
            np.float32(0.25),
            np.float64(NAN),
            np.int64(3),
            np.array([0.1, 0.2]),
            np.bool_(True),
        ]
    )
    | st.builds(object)
    | st.builds(threading.Lock)
    | st.builds(_Opaque)
)
keys = st.text(max_size=8) | st.sampled_from(KEYS)
garbage = st.recursive(
    leaves,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.dictionaries(keys, kids, max_size=4),
        st.tuples(kids, kids),
    ),
    max_leaves=10,
)
deep = st.one_of(
    st.builds(_nested, st.integers(60, 3000), st.sampled_from(["list", "dict"])),
    st.builds(_cycle),
    st.builds(_wide_dag),
)


def _branch(strategy):
    """``strategy`` as one new branch of a one_of.

    ``st.one_of`` flattens nested one_ofs (through maps and filters) into its
    own branches and drops repeated ones: a strategy would weigh as much as
    its number of alternatives, and listing one twice would not count. A new
    tuple strategy is opaque to both.
    """
    return st.tuples(strategy).map(lambda t: t[0])


def _weighted(*pairs):
    """``st.one_of`` choosing each strategy about in proportion to its weight."""
    branches = [_branch(s) for s, weight in pairs for _ in range(weight)]
    # Hypothesis favours the first and last branches: put the heaviest there.
    return st.one_of(branches[-1], *branches[:-1]) if len(pairs) > 1 else branches[0]


anything = _weighted((odd_values, 1), (deep, 1), (garbage, 6))


def good_or_bad(good, bad=anything, odds=3):
    """Valid values ``odds`` times as often as anything at all."""
    return _weighted((bad, 1), (good, odds))


levels = st.floats(0, 1, exclude_max=True)
bad_levels = st.one_of(
    st.floats(1, 10),
    st.floats(-10, -1e-12),
    st.sampled_from(SPECIAL_FLOATS),
    huge_ints,
    anything,
)
epochs = st.one_of(
    st.integers(0, 200),
    st.floats(0, 200),
    st.sampled_from([INT32_MAX, INT32_MAX + 1, 1e10, 2**63]),
)
