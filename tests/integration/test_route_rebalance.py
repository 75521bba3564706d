"""The route consumer across rebalances, on a real broker, with the interleavings forced.

Two :class:`RouteConsumer`s in one consumer group (model calls are an in-process echo whose
speed the test controls; no Ray: what is under test is the consumer, its commits and the
rebalance listener). A partition moves while batches are in flight; the test checks:

- no event is lost: every input has a result;
- no commit ever passes an event whose result was not yet on the broker: every commit is
  recorded with its wall time, the result topic stamps records with the broker's append time
  (``LogAppendTime``), and for each committed offset every earlier input must have a result
  appended before that commit;
- no partition is stuck: the group's committed offsets reach the end of every partition.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from infertide.clients.admin import ensure_topics
from schemas.topology import Topology, parse_topology
from topologies.engine.routes import RouteConsumer

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

N = 1600
PARTITIONS = 4


def _topology(bootstrap: str, prefix: str, drain_s: float, guarantee: str = "at-least-once") -> Topology:
    aliases = ("text", "image", "video", "sentiment", "detections", "tags", "classes", "recommendations",
               "analytics", "dlq")
    return parse_topology({
        "kafka": {"bootstrap_servers": bootstrap, "consumer_group": f"{prefix}-g", "session_timeout_s": 6,
                  "heartbeat_interval_s": 1, "commit_interval_s": 0.2, "revoke_drain_timeout_s": drain_s},
        "delivery": {"processing_guarantee": guarantee},
        "topics": {a: f"{prefix}.{a}" for a in aliases} | {"partitions": PARTITIONS},
        "models": {"echo": {"task": "echo"}},
        "routes": [{"name": "text", "input": "text", "kind": "text", "models": ["echo"],
                    "outputs": {"echo": "sentiment"}, "batch_size": 16, "batch_within_s": 0.02,
                    "max_in_flight": 4}],
    })


class Echo:
    """An in-process model whose calls take ``delay`` seconds, or wait on ``gate`` while it is closed."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.gate = asyncio.Event()
        self.gate.set()
        self.calls = 0

    async def __call__(self, model: str, items: list[Any]) -> list[dict[str, Any]]:
        self.calls += 1
        await self.gate.wait()
        await asyncio.sleep(self.delay)
        return [{"ok": True, "result": {"label": "POSITIVE", "score": 0.5},
                 "model": {"name": "echo", "version": "1"}, "inference_ms": 0.0} for _ in items]


def _spy_commits(rc: RouteConsumer, log: list[tuple[float, dict[TopicPartition, int]]]) -> None:
    consumer = rc.runners[0].consumer
    assert consumer is not None
    real = consumer.commit

    async def commit(*, offsets: list[Any], asynchronous: bool) -> None:
        await real(offsets=offsets, asynchronous=asynchronous)
        log.append((time.time(), {TopicPartition(tp.topic, tp.partition): tp.offset for tp in offsets}))  # accepted

    consumer.commit = commit  # type: ignore[method-assign]


async def _produce(topology: Topology) -> dict[str, tuple[int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=topology.kafka.bootstrap_servers, linger_ms=5)
    await producer.start()
    where: dict[str, tuple[int, int]] = {}
    try:
        futures = {}
        for i in range(N):
            value = orjson.dumps({"event_id": f"r-{i}", "ts": int(time.time() * 1000), "text": f"text {i}"})
            futures[f"r-{i}"] = await producer.send(topology.topics.text, value, key=f"k{i}".encode())
        for event_id, fut in futures.items():
            meta = await fut
            where[event_id] = (meta.partition, meta.offset)
    finally:
        await producer.stop()
    return where


async def _results(topology: Topology, want: set[str], timeout: float) -> dict[str, list[float]]:
    """event_id -> broker append times (s) of its results, read until every wanted id is there."""
    consumer = AIOKafkaConsumer(topology.topics.sentiment, bootstrap_servers=topology.kafka.bootstrap_servers,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    seen: dict[str, list[float]] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not want <= seen.keys():
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                for m in batch:
                    seen.setdefault(orjson.loads(m.value)["event_id"], []).append(m.timestamp / 1000)
    finally:
        await consumer.stop()
    return seen


async def _committed(topology: Topology) -> dict[int, int]:
    """The routes group's committed offsets of the input topic (read without joining the group)."""
    reader = AIOKafkaConsumer(bootstrap_servers=topology.kafka.bootstrap_servers, group_id=topology.kafka.routes_group,
                              enable_auto_commit=False)
    await reader.start()
    try:
        tps = [TopicPartition(topology.topics.text, p) for p in range(PARTITIONS)]
        return {tp.partition: (await reader.committed(tp)) or 0 for tp in tps}
    finally:
        await reader.stop()


def _check(where: dict[str, tuple[int, int]], results: dict[str, list[float]],
           commits: list[tuple[float, dict[TopicPartition, int]]]) -> int:
    lost = set(where) - results.keys()
    assert not lost, f"{len(lost)} events lost, e.g. {sorted(lost)[:5]}"
    first_result = {where[e]: min(ts) for e, ts in results.items()}
    by_partition: dict[int, list[tuple[int, float]]] = {}
    for (p, off), ts in first_result.items():
        by_partition.setdefault(p, []).append((off, ts))
    for at, offsets in commits:
        for tp, committed in offsets.items():
            late = [off for off, ts in by_partition.get(tp.partition, []) if off < committed and ts > at + 0.002]  # ms-rounded broker time
            assert not late, (f"commit of {tp.partition}@{committed} at {at:.3f} passed offsets {late[:5]} "
                              f"whose results came later")
    return sum(len(ts) - 1 for ts in results.values())


def _make_topics(topology: Topology) -> None:
    admin = KafkaAdminClient(bootstrap_servers=topology.kafka.bootstrap_servers)
    try:  # the result topic stamps the broker's clock: a result's time is when the broker had it
        admin.create_topics([NewTopic(topology.topics.sentiment, PARTITIONS, 1,
                                      topic_configs={"message.timestamp.type": "LogAppendTime"})])
    finally:
        admin.close()
    ensure_topics(topology)


async def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _until_settled(topology: Topology, ends: dict[int, int], timeout: float) -> dict[int, int]:
    deadline = time.monotonic() + timeout
    committed: dict[int, int] = {}
    while time.monotonic() < deadline:
        committed = await _committed(topology)
        if all(committed.get(p, -1) >= end for p, end in ends.items()):
            break
        await asyncio.sleep(0.3)
    return committed


async def _run(kafka_bootstrap: str, *, drain_s: float, second_joins_while: str) -> tuple[int, dict[str, Any]]:
    topology = _topology(kafka_bootstrap, f"rb-{uuid.uuid4().hex[:6]}", drain_s)
    _make_topics(topology)
    where = await _produce(topology)
    ends = {p: max(off for q, off in where.values() if q == p) + 1 for p in range(PARTITIONS)}
    commits: list[tuple[float, dict[TopicPartition, int]]] = []
    first, second = Echo(delay=0.25), Echo()  # slow enough that work is left when the second joins
    c1 = RouteConsumer(topology, infer=first, summary_topic=None)
    c2 = RouteConsumer(topology, infer=second, summary_topic=None)
    await c1.start()
    _spy_commits(c1, commits)
    executor = c1.runners[0].pipeline.executor
    try:
        await _wait(lambda: first.calls >= 4 and commits, 60, "the first consumer to commit")
        if second_joins_while == "blocked":
            first.gate.clear()  # the next calls hang: in-flight batches outlive the drain timeout
            await _wait(lambda: executor.outstanding >= 2, 30, "batches stuck in flight")
        else:
            await _wait(lambda: executor.outstanding >= 1, 30, "batches in flight")
        in_flight_at_join = executor.outstanding
        await c2.start()
        _spy_commits(c2, commits)
        await _wait(lambda: c2.assigned() > 0, 60, "the second consumer's partitions")
        if second_joins_while == "blocked":
            await asyncio.sleep(0.5)
            first.gate.set()  # the abandoned batches now produce: duplicates, never commits
        results = await _results(topology, set(where), timeout=90)
        committed = await _until_settled(topology, ends, timeout=30)
    finally:
        await c2.stop()
        await c1.stop()
    duplicates = _check(where, results, commits)
    stuck = {p: (committed.get(p), end) for p, end in ends.items() if committed.get(p, -1) < end}
    assert not stuck, f"partitions stuck (committed, end): {stuck}"
    info = {"in_flight_at_join": in_flight_at_join, "commits": len(commits),
            "c1": sorted(p for _, p in c1.runners[0].ledger.parts),
            "c2_calls": second.calls}
    return duplicates, info


async def test_partitions_move_while_batches_are_in_flight(kafka_bootstrap: str) -> None:
    duplicates, info = await _run(kafka_bootstrap, drain_s=20, second_joins_while="in-flight")
    print(f"\n[rebalance] drained: {N} events, 0 lost, {duplicates} duplicates, {info}")
    assert info["in_flight_at_join"] >= 1 and info["c2_calls"] > 0, "the move must happen with work in flight"


async def test_batches_that_outlive_the_drain_are_abandoned_not_committed(kafka_bootstrap: str) -> None:
    duplicates, info = await _run(kafka_bootstrap, drain_s=1.0, second_joins_while="blocked")
    print(f"\n[rebalance] abandoned: {N} events, 0 lost, {duplicates} duplicates, {info}")
    assert info["in_flight_at_join"] >= 2 and info["c2_calls"] > 0
    assert duplicates > 0, "abandoned batches are read again by the partitions' next owners"
