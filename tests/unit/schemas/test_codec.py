"""Property tests of the codec: whatever bytes arrive, ``decode`` returns a model or raises ``EventDecodeError``.

Near-valid events (one field deleted, retyped or added; wrong top-level types;
huge strings; deep nesting) must fail with a message that names the field.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from schemas.codec import EventDecodeError, Limits, decode
from schemas.events import SCHEMAS
from tests.fixtures.examples import VALID

LIMITS = Limits(max_event_bytes=64 * 1024, max_image_bytes=8 * 1024, max_text_chars=1000)
NAMES = sorted(SCHEMAS)
# Mappings whose keys are data, not fields (analytics values, a user's affinity, a summary's metrics, ranges and
# item labels): a new key there is valid.
FREE_FORM = {("values",), ("affinity",), ("metrics",), ("ranges",), ("labels",)}
FREE_FORM_TREES = {("metrics",)}  # a summary's metrics: keys are data at every depth (metric|key -> field)
# Input events ignore fields they do not know (a newer producer); a strict route rejects them.
TOLERANT = {(name, parent) for name in ("text.v1", "image.v1", "video_frame.v1") for parent in ((), ("image",))}
PROFILE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def _decode_or_error(data: bytes | str, name: str) -> BaseModel | EventDecodeError:
    try:
        return decode(data, name, LIMITS)
    except EventDecodeError as err:
        return err
    # anything else propagates and fails the test


def _paths(obj: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((*prefix, k))
            out.extend(_paths(v, (*prefix, k)))
    return out


def _mutate(obj: dict[str, Any], path: tuple[str, ...], op: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    node = out
    for p in path[:-1]:
        node = node[p]
    if op == "delete":
        del node[path[-1]]
    elif op == "retype":
        node[path[-1]] = value
    else:  # "add": an unknown sibling key
        node[path[-1] + "_x"] = value
    return out


@given(st.sampled_from(NAMES), st.binary(max_size=512))
@PROFILE
def test_arbitrary_bytes_never_escape(name: str, data: bytes) -> None:
    result = _decode_or_error(data, name)
    if isinstance(result, EventDecodeError):
        assert result.schema == name and str(result).startswith(name)


@given(st.sampled_from(NAMES), json_values)
@PROFILE
def test_arbitrary_json_never_escapes(name: str, value: Any) -> None:
    result = _decode_or_error(orjson.dumps(value), name)
    if not isinstance(value, dict):
        assert isinstance(result, EventDecodeError) and result.field == ""
        assert "expected a JSON object" in result.reason


@given(st.data())
@PROFILE
def test_one_mutated_field_is_named(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(NAMES))
    example = data.draw(st.sampled_from(VALID[name]))
    path = data.draw(st.sampled_from(_paths(example)))
    op = data.draw(st.sampled_from(["delete", "retype", "add"]))
    value = data.draw(json_values | st.text(min_size=2000, max_size=90_000))
    mutated = _mutate(example, path, op, value)
    result = _decode_or_error(orjson.dumps(mutated), name)
    if isinstance(result, BaseModel):
        tolerated = (name, path[:-1]) in TOLERANT
        assert (op != "add" or path[:-1] in FREE_FORM or path[:1] in FREE_FORM_TREES or tolerated), \
            "an unknown key was accepted"
        if op == "add" and tolerated:
            with pytest.raises(EventDecodeError, match="unknown field"):
                decode(orjson.dumps(mutated), name, LIMITS, strict_fields=True)
        return
    if result.field == "":  # only the whole-record size limit speaks of the record
        assert "limit" in result.reason, result
        return
    assert repr(result.field) in str(result)
    err_path = tuple(result.field.split("."))
    touched = (*path[:-1], path[-1] + "_x") if op == "add" else path
    # the error is at the mutated field, inside it, or at a parent whose shape it breaks
    n = min(len(err_path), len(touched))
    assert err_path[:n] == touched[:n] or (op == "delete" and err_path[: len(path) - 1] == path[:-1]), (
        f"mutated {'.'.join(touched)} ({op}) but the error names {result.field}: {result}")


def test_wrong_top_level_types() -> None:
    for value in [None, 1, 1.5, "text", True, [], [{"event_id": "e"}]]:
        err = _decode_or_error(orjson.dumps(value), "text.v1")
        assert isinstance(err, EventDecodeError) and err.field == ""


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b'{"ts": 1e999}', b'{"ts": 99999999999999999999999}',
                                 b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000, "\ud800"])
def test_malformed_records(raw: bytes | str) -> None:
    assert isinstance(_decode_or_error(raw, "text.v1"), EventDecodeError)


def test_deep_nesting_inside_a_field() -> None:
    for depth in (200, 1000, 100_000):  # within and beyond orjson's nesting limit
        nested = b'{"a":' * depth + b"1" + b"}" * depth
        raw = b'{"event_id":"e","ts":1,"text":' + nested + b"}"
        err = _decode_or_error(raw, "text.v1")
        assert isinstance(err, EventDecodeError) and err.field in ("text", "")


def test_limits_are_enforced() -> None:
    text = {**VALID["text.v1"][0], "text": "x" * 1001}
    err = _decode_or_error(orjson.dumps(text), "text.v1")
    assert isinstance(err, EventDecodeError) and err.field == "text" and "limit is 1000" in err.reason
    assert not isinstance(_decode_or_error(orjson.dumps({**text, "text": "x" * 1000}), "text.v1"), EventDecodeError)

    image = copy.deepcopy(VALID["image.v1"][0])
    image["image"]["data"] = "A" * (12 * 1024)  # about 9 KB decoded > 8 KB
    err = _decode_or_error(orjson.dumps(image), "image.v1")
    assert isinstance(err, EventDecodeError) and err.field == "image.data" and "limit" in err.reason

    big = {**VALID["text.v1"][0], "source": "s" * (70 * 1024)}
    err = _decode_or_error(orjson.dumps(big), "text.v1")
    assert isinstance(err, EventDecodeError) and err.field == "" and "limit is 65536" in err.reason


def test_unknown_fields_are_named_top_level_and_in_the_image_and_none_when_all_are_known() -> None:
    unknown: list[str] = []
    decode(orjson.dumps({"event_id": "e", "ts": 1, "text": "hi"}), "text.v1", unknown=unknown)
    assert unknown == []
    decode(orjson.dumps({"event_id": "e", "ts": 1, "text": "hi", "mood": "x"}), "text.v1", unknown=unknown)
    image = {"event_id": "e", "ts": 1, "image": {"uri": "file:///a.png", "exif": {}}, "camera": "c1"}
    decode(orjson.dumps(image), "image.v1", unknown=unknown)
    assert unknown == ["mood", "camera", "image.exif"]
