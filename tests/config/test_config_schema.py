"""Tests of the JSON schemas themselves and of docs/config.md, which describes them."""

from __future__ import annotations

import pathlib
import re

import jsonschema

from nncf_jax.config import KNOWN_ALGORITHMS
from nncf_jax.config.schema import ACCURACY_AWARE_SCHEMA, ALGORITHM_SCHEMAS, ROOT_SCHEMA

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_schemas_are_valid_json_schemas():
    for schema in [ROOT_SCHEMA, ACCURACY_AWARE_SCHEMA, *ALGORITHM_SCHEMAS.values()]:
        jsonschema.Draft202012Validator.check_schema(schema)
    assert tuple(sorted(KNOWN_ALGORITHMS)) == tuple(sorted(ALGORITHM_SCHEMAS))


def _property_names(schema, out):
    if isinstance(schema, dict):
        out.update(schema.get("properties", {}))
        for value in schema.values():
            _property_names(value, out)
    elif isinstance(schema, list):
        for value in schema:
            _property_names(value, out)
    return out


def test_docs_mention_every_key():
    text = re.sub(r"```.*?```", "", DOCS.read_text(), flags=re.S)
    names = _property_names(ROOT_SCHEMA, set()) | _property_names(ALGORITHM_SCHEMAS, set())
    quoted = set(re.findall(r"[A-Za-z_]+", " ".join(re.findall(r"`([^`]+)`", text))))
    missing = sorted(names - quoted)
    assert not missing, f"docs/config.md does not describe {missing}"
    for name in KNOWN_ALGORITHMS:
        assert f"## `{name}`" in text
