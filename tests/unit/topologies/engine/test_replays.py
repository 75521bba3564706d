"""Replays counted once (pure logic, no broker): summaries say what they cover, records already
summarized by a partition's previous owner get results but add nothing to analytics, and what was
summarized is read back from summary records and commit metadata."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import pytest

from schemas.codec import encode
from schemas.events import TextEvent
from schemas.topology import parse_topology
from topologies.engine.batch import BatchProcessor
from topologies.metrics import REGISTRY
from topologies.engine.records import InputRecord
from topologies.engine.producer import Delivered
from topologies.engine.replays import SummaryScanner, scan_start, summarized_upto, summary_offset

SUMMARIES = "g-summaries"


def _processor() -> tuple[Any, BatchProcessor]:
    topology = parse_topology({"models": {"s": {"task": "sentiment", "model": "x"},
                                          "t": {"task": "tagging", "model": "y"}},
                               "routes": [{"name": "text", "input": "text", "kind": "text", "models": ["s", "t"]}]})
    return topology, BatchProcessor(topology, topology.routes[0], SUMMARIES)


def _rec(partition: int, offset: int, *, counted: bool = True, valid: bool = True) -> InputRecord:
    value = (encode(TextEvent(event_id=f"e{partition}.{offset}", ts=1, user_id="u", item_id=f"i{offset}",
                              text=f"text {offset}")) if valid else b"{not json")
    rec = InputRecord("events.text", partition, offset, b"k", value, {})
    rec.counted = counted
    return rec


def _reply(ok: bool = True, tags: bool = False) -> dict[str, Any]:
    if not ok:
        return {"ok": False, "error_class": "ModelError", "error": "no"}
    result = {"tags": [{"label": "cat", "score": 0.9}]} if tags else {"label": "POSITIVE", "score": 0.5}
    return {"ok": True, "model": {"name": "t" if tags else "s", "version": "1"}, "inference_ms": 1.0,
            "result": result}


def _uncounted_total() -> float:
    return REGISTRY.get_sample_value("infertide_replayed_uncounted_total", {"route": "text"}) or 0.0


def test_records_already_summarized_get_results_but_add_nothing_to_the_summary() -> None:
    topology, proc = _processor()
    before = _uncounted_total()
    records = [_rec(3, 10, counted=False), _rec(3, 11, counted=False, valid=False),  # replayed: ok, dead
               _rec(3, 12), _rec(3, 13, valid=False), _rec(3, 14), _rec(3, 15), _rec(1, 7)]
    batch = proc.decode(records)
    assert [r.offset for r in batch.valid] == [10, 12, 14, 15, 7]
    out = proc.finish(batch, {"s": ([_reply(), _reply(), _reply(), _reply(ok=False), _reply()], 2.0),
                              "t": ([_reply(tags=True)] * 5, 2.0)})

    results = [orjson.loads(r.value)["event_id"] for r in out.records if r.topic == topology.topics.sentiment]
    letters = sorted(orjson.loads(r.value)["offset"] for r in out.records if r.topic == topology.topics.dlq)
    tags = [orjson.loads(r.value)["event_id"] for r in out.records if r.topic == topology.topics.tags]
    assert results == ["e3.10", "e3.12", "e3.14", "e1.7"], "replayed events still get their results"
    assert tags == ["e3.10", "e3.12", "e3.14", "e3.15", "e1.7"]
    assert letters == [11, 13, 15], "and their dead letters"
    summary = orjson.loads(next(r.value for r in out.records if r.topic == SUMMARIES))
    assert summary["topic"] == "events.text" and summary["route"] == "text" and "ts" in summary
    assert summary["ranges"] == {"3": [10, 16], "1": [7, 8]}, "over every record, counted or not"
    metrics = summary["metrics"]
    assert metrics["events|text"] == {"in": 5.0, "out": 4.0, "dlq": 2.0}  # 15 has a tag and a dead letter
    assert metrics["latency|text"]["count"] == 3.0  # per event of the primary model
    assert metrics["sentiment|text"]["count.POSITIVE"] == 3.0
    assert metrics["tags|text"]["cat"] == 4.0
    assert sorted(e["event_id"] for e in summary["engagements"]) == ["e1.7", "e3.12", "e3.14"]
    assert sorted(i["item_id"] for i in summary["items"]) == ["i12", "i14", "i15", "i7"]
    assert _uncounted_total() - before == 2


def test_a_batch_with_nothing_counted_still_sends_its_ranges() -> None:
    topology, proc = _processor()
    batch = proc.decode([_rec(0, 5, counted=False), _rec(0, 6, counted=False)])
    out = proc.finish(batch, {"s": ([_reply(), _reply()], 1.0), "t": ([_reply(tags=True)] * 2, 1.0)})
    assert out.results == 4
    summary = orjson.loads(next(r.value for r in out.records if r.topic == SUMMARIES))
    assert summary["metrics"] == {} and summary["engagements"] == [] and summary["items"] == []
    assert summary["ranges"] == {"0": [5, 7]} and summary["topic"] == "events.text"


def test_summarized_upto_takes_the_furthest_range_of_each_wanted_partition_and_skips_other_records() -> None:
    a0, a1, b0 = ("a", 0), ("a", 1), ("b", 0)
    values = [
        orjson.dumps({"route": "r", "topic": "a", "ranges": {"0": [0, 10], "1": [4, 6]}, "metrics": {}}),
        orjson.dumps({"route": "r", "topic": "a", "ranges": {"0": [10, 25]}, "metrics": {}}),
        orjson.dumps({"route": "r", "topic": "a", "ranges": {"0": [3, 8]}, "metrics": {}}),  # an older replay
        orjson.dumps({"route": "q", "topic": "b", "ranges": {"0": [0, 99]}, "metrics": {}}),
        orjson.dumps({"route": "r", "metrics": {"events|r": {"in": 3}}}),  # a summary from before ranges
        orjson.dumps({"marker": {"window": 1}}), orjson.dumps([1, 2]), b"not json", None,
        orjson.dumps({"topic": "a", "ranges": {"x": [1, 2], "1": [5], "0": "no"}}),  # malformed ranges
    ]
    assert summarized_upto(values, {a0, a1}) == {a0: 25, a1: 6}
    assert summarized_upto(values, {b0}) == {b0: 99}
    assert summarized_upto(values[:1], {a0}, {a0: 40}) == {a0: 40}, "folds into what it was given"


def test_the_scan_starts_at_the_smallest_summary_offset_or_at_zero_when_one_is_unknown() -> None:
    t0, t1 = ("a", 0), ("a", 1)
    assert scan_start({t0: (50, "120"), t1: (9, "77")}, [t0, t1]) == 77
    assert scan_start({t0: (50, "120")}, [t0, t1]) == 0, "a partition never committed"
    assert scan_start({t0: (50, ""), t1: (9, "77")}, [t0, t1]) == 0
    assert scan_start({t0: (50, "x")}, [t0]) == 0
    assert scan_start({t0: (None, "5")}, [t0]) == 0


def test_the_summary_offset_is_read_from_the_located_deliveries() -> None:
    assert summary_offset([Delivered("out", 0, 3), Delivered(SUMMARIES, 0, 41)], SUMMARIES) == 41
    assert summary_offset([Delivered("out", 0, 3)], SUMMARIES) is None and summary_offset([], None) is None


class _SlowScanner(SummaryScanner):
    def _scan(self, start: int, wanted: set[Any]) -> dict[Any, int]:
        import time

        time.sleep(0.5)
        return {}


async def test_a_lookup_that_does_not_answer_in_time_counts_everything(caplog: pytest.LogCaptureFixture) -> None:
    scanner = _SlowScanner(SUMMARIES, {}, timeout_s=0.05)
    with caplog.at_level(logging.WARNING, logger="topologies.engine.replays"):
        assert await scanner.learn({("a", 0): (5, "3")}) == {}
    assert "counted again" in caplog.text
    await asyncio.sleep(0.5)


def test_the_lookup_stays_within_half_a_session() -> None:
    assert SummaryScanner(SUMMARIES, {}, session_timeout_s=6).timeout_s == 3
    assert SummaryScanner(SUMMARIES, {}, session_timeout_s=60).timeout_s == 10


async def test_without_a_summary_topic_nothing_is_looked_up() -> None:
    scanner = SummaryScanner(None, {})
    assert await scanner.learn({("a", 0): (5, "3")}) == {} and await scanner.end() is None


def test_every_summary_the_engine_writes_follows_the_batch_summary_contract() -> None:
    from schemas.summary import BatchSummary

    topology, proc = _processor()
    batch = proc.decode([_rec(3, 10, counted=False), _rec(3, 12), _rec(1, 7), _rec(1, 8, valid=False)])
    out = proc.finish(batch, {"s": ([_reply(), _reply(), _reply()], 2.0), "t": ([_reply(tags=True)] * 3, 2.0)})
    summary = BatchSummary.model_validate_json(next(r.value for r in out.records if r.topic == SUMMARIES))
    assert summary.ranges == {"3": [10, 13], "1": [7, 9]} and summary.topic == "events.text"
    assert {e.event_id for e in summary.engagements} == {"e3.12", "e1.7"}
