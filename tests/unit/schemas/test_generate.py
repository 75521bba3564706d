"""The committed JSON Schema files match the models, are valid 2020-12, and agree with the codec on examples."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from schemas.codec import EventDecodeError, decode, encode
from schemas.events import SCHEMAS
from schemas.generate import render
from tests.fixtures.examples import VALID, broken, example_files, valid

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas"


def _validator(name: str) -> jsonschema.Draft202012Validator:
    doc = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(doc, format_checker=jsonschema.FormatChecker())


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_committed_schema_matches_model(name: str) -> None:
    path = SCHEMA_DIR / f"{name}.schema.json"
    assert path.is_file(), f"{path} missing: run `python -m schemas.generate`"
    assert path.read_text() == render(name), f"{path} is stale: run `python -m schemas.generate`"


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_is_valid_2020_12(name: str) -> None:
    doc = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(doc)


def test_every_schema_has_examples() -> None:
    assert set(VALID) == set(SCHEMAS)


@pytest.mark.parametrize(("file_name", "text"), sorted(example_files().items()), ids=lambda v: v[:40])
def test_example_files_match_the_fixtures(file_name: str, text: str) -> None:
    path = SCHEMA_DIR / "examples" / file_name
    assert path.is_file() and path.read_text() == text, f"{path} is stale: run `python -m tests.fixtures.examples`"


@pytest.mark.parametrize(("name", "example"), valid(), ids=lambda v: v if isinstance(v, str) else "")
def test_valid_examples_pass_schema_and_codec(name: str, example: dict) -> None:
    _validator(name).validate(example)
    model = decode(orjson.dumps(example), name)
    again = decode(encode(model), name)  # encode/decode round trip is stable
    assert again == model
    _validator(name).validate(orjson.loads(encode(model)))


@pytest.mark.parametrize(("name", "why", "example"), broken(), ids=lambda v: v if isinstance(v, str) else "")
def test_broken_examples_rejected_by_schema_and_codec(name: str, why: str, example: object) -> None:
    errors = list(_validator(name).iter_errors(example))
    assert errors, f"JSON Schema {name} accepted a broken example ({why})"
    with pytest.raises(EventDecodeError) as info:
        decode(orjson.dumps(example), name)
    assert info.value.schema == name
    assert str(info.value).startswith(f"{name}: ")


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_example_files_match_fixture(name: str) -> None:
    """``schemas/examples/*.json`` (for users with only jsonschema) are the fixture's examples."""
    from tests.fixtures.examples import BROKEN

    folder = SCHEMA_DIR / "examples"
    assert json.loads((folder / f"{name}.valid.json").read_text()) == VALID[name]
    assert json.loads((folder / f"{name}.broken.json").read_text()) == [{"why": w, "event": e} for w, e in BROKEN[name]]
