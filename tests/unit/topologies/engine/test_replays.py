"""Replays counted once (pure logic, no broker): summaries say what they cover, records already
summarized by a partition's previous owner get results but add nothing to analytics, and what was
summarized is read back from summary records and commit metadata."""

from __future__ import annotations

import asyncio
import logging
from collections import namedtuple
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from schemas.codec import encode
from schemas.events import TextEvent
from schemas.topology import parse_topology
from topologies.engine.batch import BatchProcessor
from topologies.metrics import REGISTRY
from topologies.engine.records import InputRecord, OutRecord
from topologies.engine.replays import Replays, scan_start, summarized_upto, summary_offset
from topologies.engine.consumer import RouteConsumer

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
    a0, a1, b0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)
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
    t0, t1 = TopicPartition("a", 0), TopicPartition("a", 1)
    assert scan_start({t0: OffsetAndMetadata(50, "120"), t1: OffsetAndMetadata(9, "77")}, [t0, t1]) == 77
    assert scan_start({t0: OffsetAndMetadata(50, "120")}, [t0, t1]) == 0, "a partition never committed"
    assert scan_start({t0: OffsetAndMetadata(50, ""), t1: OffsetAndMetadata(9, "77")}, [t0, t1]) == 0
    assert scan_start({t0: OffsetAndMetadata(50, "x")}, [t0]) == 0
    assert scan_start({t0: OffsetAndMetadata(-1, "5")}, [t0]) == 0


Meta = namedtuple("Meta", "topic partition offset")


def test_the_commit_metadata_is_the_offset_of_the_last_acked_summary() -> None:
    replays = Replays(SUMMARIES, {})
    t0, t1 = TopicPartition("a", 0), TopicPartition("a", 1)
    assert summary_offset([Meta("out", 0, 3), Meta(SUMMARIES, 0, 41)], SUMMARIES) == 41
    assert summary_offset([Meta("out", 0, 3)], SUMMARIES) is None and summary_offset([], None) is None
    replays.acked([t0, t1], [Meta("out", 2, 8), Meta(SUMMARIES, 0, 41)])
    replays.acked([t0], [Meta(SUMMARIES, 0, 57)])
    replays.acked([t1], [Meta("dlq", 0, 1)])  # a batch without a summary keeps the last one
    assert (replays.metadata(t0), replays.metadata(t1), replays.metadata(TopicPartition("a", 2))) == ("57", "41", "")
    replays.forget()
    assert replays.metadata(t0) == ""


def test_marking_skips_below_the_bound_then_forgets_the_partition() -> None:
    replays = Replays(SUMMARIES, {})
    tp = TopicPartition("events.text", 0)
    replays.pending = {tp: 12}
    first = [_rec(0, o) for o in (9, 10)]
    replays.mark(tp, first)
    assert [r.counted for r in first] == [False, False] and tp in replays.pending
    second = [_rec(0, o) for o in (11, 12, 13)]
    replays.mark(tp, second)
    assert [r.counted for r in second] == [False, True, True] and tp not in replays.pending
    third = [_rec(0, 5)]
    replays.mark(tp, third)
    assert third[0].counted, "nothing pending: counted"


Msg = namedtuple("Msg", "offset value")


class FakeScanner:
    """The summary-topic reader's calls ``Replays`` makes; ``hang``: end_offsets never answers."""

    def __init__(self, values: list[bytes], hang: bool = False, exists: bool = True) -> None:
        self.values, self.hang, self.exists, self.pos, self.seeks = values, hang, exists, 0, []

    async def topics(self) -> set[str]:
        return {SUMMARIES} if self.exists else set()

    def assign(self, tps: list[TopicPartition]) -> None:
        self.tp = tps[0]

    def unsubscribe(self) -> None:
        self.unsubscribed = True

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        if self.hang:
            await asyncio.sleep(3600)
        return {tp: len(self.values) for tp in tps}

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 7 for tp in tps}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.pos = offset
        self.seeks.append(offset)

    async def position(self, tp: TopicPartition) -> int:
        return self.pos

    async def getmany(self, tp: TopicPartition, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Msg]]:
        got = [Msg(o, self.values[o]) for o in range(self.pos, min(self.pos + 2, len(self.values)))]
        self.pos += len(got)
        return {tp: got}


class FakeGroup:
    def __init__(self, committed: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self._coordinator = self
        self.committed = committed

    async def fetch_committed_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata]:
        return {tp: self.committed[tp] for tp in tps if tp in self.committed}


def _summary(partition: int, first: int, end: int) -> bytes:
    return orjson.dumps({"route": "text", "topic": "events.text", "ranges": {str(partition): [first, end]},
                         "metrics": {}})


async def test_learn_scans_from_the_commit_metadata_and_keeps_what_lies_past_the_commit(
        caplog: pytest.LogCaptureFixture) -> None:
    t0, t1, t2 = (TopicPartition("events.text", p) for p in range(3))
    values = [_summary(0, 0, 10), _summary(1, 0, 4), orjson.dumps({"marker": 1}), _summary(0, 10, 20),
              _summary(1, 4, 9), _summary(2, 0, 3)]
    replays = Replays(SUMMARIES, {})
    replays._scanner = scanner = FakeScanner(values)  # type: ignore[assignment]
    group = FakeGroup({t0: OffsetAndMetadata(10, "0"), t1: OffsetAndMetadata(9, "1")})
    with caplog.at_level(logging.INFO, logger="topologies.engine.replays"):
        await replays.learn(group, [t0, t1])  # type: ignore[arg-type]
    assert scanner.seeks == [0]
    assert replays.pending == {t0: 20}, "t1's summaries end at its commit: nothing to skip"
    assert replays.metadata(t0) == "0" and replays.metadata(t1) == "1", "the metadata read is a lower bound"
    assert "events.text[0]: offsets 10..19 already summarized" in caplog.text

    replays.forget()
    group.committed = {t0: OffsetAndMetadata(10, "3"), t2: OffsetAndMetadata(1, "5")}
    await replays.learn(group, [t0, t2])  # type: ignore[arg-type]
    assert scanner.seeks == [0, 3] and replays.pending == {t0: 20, t2: 3}


async def test_a_lookup_that_does_not_answer_in_time_counts_everything(caplog: pytest.LogCaptureFixture) -> None:
    replays = Replays(SUMMARIES, {}, timeout_s=0.1)
    replays._scanner = FakeScanner([], hang=True)  # type: ignore[assignment]
    tp = TopicPartition("events.text", 0)
    with caplog.at_level(logging.WARNING, logger="topologies.engine.replays"):
        await asyncio.wait_for(replays.learn(FakeGroup({}), [tp]), 2)  # type: ignore[arg-type]
    assert replays.pending == {} and "counted again" in caplog.text


def test_the_lookup_stays_within_half_a_session() -> None:
    assert Replays(SUMMARIES, {}).timeout_s == 10.0
    assert Replays(SUMMARIES, {}, session_timeout_s=6).timeout_s == 3.0
    assert Replays(SUMMARIES, {}, session_timeout_s=45).timeout_s == 10.0


async def test_without_a_summary_topic_nothing_is_looked_up() -> None:
    replays = Replays(None, {})
    await replays.start()
    assert replays._scanner is None
    await replays.learn(None, [TopicPartition("events.text", 0)])  # type: ignore[arg-type]
    assert replays.pending == {} and replays.metadata(TopicPartition("events.text", 0)) == ""
    await replays.stop()


async def test_a_summary_topic_not_created_yet_is_not_read() -> None:
    replays = Replays(SUMMARIES, {})
    replays._scanner = scanner = FakeScanner([_summary(0, 0, 10)], exists=False)  # type: ignore[assignment]
    await replays.learn(FakeGroup({}), [TopicPartition("events.text", 0)])  # type: ignore[arg-type]
    assert replays.pending == {} and scanner.seeks == [] and not hasattr(scanner, "tp")


async def test_idle_partitions_get_the_summary_topics_end_as_metadata_so_later_scans_stay_short() -> None:
    busy, idle, fresh, recent = (TopicPartition("events.text", p) for p in range(4))
    replays = Replays(SUMMARIES, {})
    replays._scanner = FakeScanner([b"{}"] * 5000)  # type: ignore[assignment]
    replays.uncommitted = {fresh}
    replays.summary_at = {idle: 10, recent: 4500}
    replays.submitted([busy])
    commits = await replays.refreshes({busy: 100, idle: 200, fresh: 0, recent: 300}, [busy, idle, fresh, recent])
    # busy: a batch in flight may be summarized below the end; recent: metadata close enough to the end.
    assert commits == {idle: (200, "5000"), fresh: (7, "5000")}, "never committed: its log start"
    replays.did_commit(commits)
    assert replays.metadata(idle) == "5000" and not replays.uncommitted
    replays.acked([busy], [])
    assert await replays.refreshes({busy: 100}, [busy]) == {busy: (100, "5000")}


async def test_a_submit_while_the_end_is_read_disqualifies_the_partition() -> None:
    tp = TopicPartition("events.text", 0)
    replays = Replays(SUMMARIES, {})
    scanner = replays._scanner = FakeScanner([b"{}"] * 5000)  # type: ignore[assignment]
    read_end = scanner.end_offsets

    async def end_offsets_with_a_submit(tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        replays.submitted([tp])
        replays.acked([tp], [])  # submitted and acked meanwhile: its summary may lie below the end
        return await read_end(tps)

    scanner.end_offsets = end_offsets_with_a_submit  # type: ignore[method-assign]
    assert await replays.refreshes({tp: 100}, [tp]) == {}


async def test_the_workers_own_buffered_summaries_are_flushed_before_the_scan() -> None:
    tp = TopicPartition("events.text", 0)
    replays = Replays(SUMMARIES, {})
    scanner = replays._scanner = FakeScanner([])  # type: ignore[assignment]

    async def flush() -> None:  # the producer's buffer reaches the log: the scan must see it
        scanner.values.append(_summary(0, 0, 12))

    await replays.learn(FakeGroup({tp: OffsetAndMetadata(5, "0")}), [tp], flush=flush)  # type: ignore[arg-type]
    assert replays.pending == {tp: 12}


async def test_an_expelled_worker_sends_no_summary_acks_nothing_and_commits_nothing() -> None:
    """Frozen past its session: the group gave its partitions away, and the new owner counts their events."""
    topology, _ = _processor()
    consumer = RouteConsumer(topology, infer=None, summary_topic=SUMMARIES)  # type: ignore[arg-type]
    sent: list[OutRecord] = []

    async def send_all(records: list[OutRecord]) -> list[Any]:
        sent.extend(records)
        return []

    consumer._batches = SimpleNamespace(send_all=send_all)  # type: ignore[assignment]
    coordinator = SimpleNamespace(generation=7)
    consumer.consumer = SimpleNamespace(_coordinator=coordinator)  # type: ignore[assignment]
    outputs = [OutRecord("inference.sentiment", b"k", b"{}"), OutRecord(SUMMARIES, b"text", b"{}")]
    await consumer._send_all(outputs)
    assert [r.topic for r in sent] == ["inference.sentiment", SUMMARIES]

    coordinator.generation = -1  # aiokafka's reset after UnknownMemberId / IllegalGeneration
    sent.clear()
    await consumer._send_all(outputs)
    assert [r.topic for r in sent] == ["inference.sentiment"]
    ack = consumer._ack_for([_rec(0, 5)], consumer._epoch)
    await ack([])
    assert consumer._acked == {}
