"""Dead letters always fit; unknown fields and schema headers at decode (pure logic, no broker)."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest

from schemas.codec import EventDecodeError, check_schema_header
from schemas.events import DeadLetter
from schemas.topology import ConfigError, parse_topology
from topologies.engine.batch import BatchProcessor
from topologies.engine.records import InputRecord, dead_letter


def _rec(value: bytes, key: bytes | None = b"k", headers: dict[str, bytes] | None = None) -> InputRecord:
    return InputRecord("events.text", 2, 41, key, value, headers or {})


@pytest.mark.parametrize(("size", "cap"), [(10, 1_000_000), (700_000, 1_000_000), (900_000, 1_000_000),
                                           (3_000_000, 1_000_000), (50_000, 20_000), (30_000, 16_384)])
def test_a_dead_letter_never_exceeds_its_cap_and_says_how_to_fetch_the_original(size: int, cap: int) -> None:
    value = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    out = dead_letter(_rec(value, key=b"K" * 5000), topic="dlq", route="text", stage="decode",
                      error="é" * 1_000, max_bytes=cap)
    assert len(out.value) + len(out.key or b"") <= cap
    letter = DeadLetter.model_validate_json(out.value)
    kept = base64.b64decode(letter.original)
    assert letter.original_size == size and letter.original_sha256 == hashlib.sha256(value).hexdigest()
    assert letter.truncated == (len(kept) < size) and value.startswith(kept)
    assert (letter.topic, letter.partition, letter.offset) == ("events.text", 2, 41)
    assert size * 4 // 3 > cap - 40_000 or not letter.truncated, "small originals travel whole"
    assert not letter.truncated or len(out.value) + len(out.key or b"") > cap - 2_000, "a cut letter uses its room"


def _text_topology() -> object:
    return parse_topology({"models": {"s": {"task": "sentiment", "model": "x"}},
                           "routes": [{"name": "text", "input": "text", "kind": "text", "models": ["s"]}]})


def test_outputs_are_sized_against_the_topics_real_limits() -> None:
    topology = _text_topology()
    proc = BatchProcessor(topology, topology.routes[0], None)
    proc.set_topic_limits({topology.topics.dlq: 20_000, topology.topics.sentiment: 2_000})
    assert proc.max_dead_letter_bytes == 20_000 - 256
    ok = orjson.dumps({"event_id": "e0", "ts": 1, "text": "hi"})
    batch = proc.decode([_rec(b"{" * 60_000), InputRecord("events.text", 0, 7, b"k", ok, {})])
    reply = {"ok": True, "model": {"name": "s", "version": "1"}, "inference_ms": 1.0,
             "result": {"label": "POSITIVE", "score": 0.5, "explanation": "z" * 3_000}}
    out = proc.finish(batch, {"s": ([reply], 2.0)})
    letters = [DeadLetter.model_validate_json(r.value) for r in out.records if r.topic == topology.topics.dlq]
    assert [(d.stage, d.error_class, d.offset) for d in letters] == [("decode", "EventDecodeError", 41),
                                                                     ("produce", "RecordTooLarge", 7)]
    assert letters[0].truncated and "max.message.bytes" in letters[1].error
    assert all(len(r.value) + len(r.key or b"") <= 20_000 - 256 for r in out.records)
    assert not out.results and out.dead == {(2, 41), (0, 7)}


def test_unknown_fields_are_ignored_and_counted_unless_the_route_is_strict() -> None:
    value = orjson.dumps({"event_id": "e", "ts": 1, "text": "hi", "sentiment_hint": "neutral"})
    for strict, ok in ((False, True), (True, False)):
        topology = parse_topology({"models": {"s": {"task": "sentiment", "model": "x"}},
                                   "routes": [{"name": "text", "input": "text", "kind": "text", "models": ["s"],
                                               "strict_fields": strict}]})
        batch = BatchProcessor(topology, topology.routes[0], None).decode([_rec(value)])
        assert len(batch.valid) == int(ok)
        if not ok:
            letter = orjson.loads(batch.out.records[0].value)
            assert letter["stage"] == "decode" and "unknown field" in letter["error"] and "sentiment_hint" in letter["error"]


def test_the_schema_header_is_checked() -> None:
    check_schema_header(b"urn:infertide:schema:text.v1", "text.v1")
    check_schema_header(b"https://schemas.example.com/infertide/text.v1", "text.v1")
    with pytest.raises(EventDecodeError, match="unknown schema version 'text.v2'"):
        check_schema_header(b"urn:infertide:schema:text.v2", "text.v1")
    with pytest.raises(EventDecodeError, match="names schema 'image.v1'"):
        check_schema_header(b"image.v1", "text.v1")
    topology = parse_topology({"models": {"s": {"task": "sentiment", "model": "x"}},
                               "routes": [{"name": "text", "input": "text", "kind": "text", "models": ["s"]}]})
    value = orjson.dumps({"event_id": "e", "ts": 1, "text": "hi"})
    batch = BatchProcessor(topology, topology.routes[0], None).decode(
        [_rec(value, headers={"ce_dataschema": b"urn:infertide:schema:text.v9"}), _rec(value)])
    assert len(batch.valid) == 1 and "text.v9" in orjson.loads(batch.out.records[0].value)["error"]


def test_limits_that_cannot_agree_fail_at_load_naming_the_keys() -> None:
    with pytest.raises(ConfigError, match="max_image_bytes"):
        parse_topology({"models": {"s": {"task": "sentiment", "model": "x"}},
                        "routes": [{"name": "t", "input": "text", "kind": "text", "models": ["s"]}],
                        "limits": {"max_event_bytes": 1_000_000, "max_image_bytes": 2_000_000}})
    topology = parse_topology({"models": {"s": {"task": "sentiment", "model": "x"}},
                               "routes": [{"name": "t", "input": "text", "kind": "text", "models": ["s"]}],
                               "limits": {"max_event_bytes": 100_000, "max_image_bytes": 50_000,
                                          "max_dead_letter_bytes": 1_000_000}})
    assert topology.max_message_bytes() >= 1_000_000 + 64 * 1024  # topics and producers take any dead letter
