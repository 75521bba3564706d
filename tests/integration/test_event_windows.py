"""Event-time analytics windows on a real broker: the route engine (echo model) writes summaries, the
analytics fold emits hopping windows closed by the watermark, and is replaced midway by a second owner
that resumes from its snapshot.

Events carry synthetic ``ts`` (event time, not the clock), shuffled by up to 2 s within each partition
(grace 2 s): every window read back (``read_committed``, latest per window) equals the sums computed
offline from the inputs. Events sent later, 6-12 s behind, are beyond the grace: counted ``late`` per
route and window, never in the windows' sums.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import defaultdict
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from infertide.clients.admin import ensure_topics
from tests.fixtures.kafka import create_summary_topic
from schemas.topology import Topology, parse_topology
from tests.integration.test_route_rebalance import Echo, _committed
from topologies.engine.routes import RouteConsumer
from topologies.state.event_analytics import EventTimeWindows, analytics_windows
from topologies.state.event_windows import window_starts

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(150)]

PARTITIONS, N, SIZE, STEP = 4, 1200, 4000, 2000
T0 = 1_700_000_000_000  # event time


def _topology(bootstrap: str, prefix: str) -> Topology:
    aliases = ("text", "image", "video", "sentiment", "detections", "tags", "classes", "recommendations",
               "analytics", "dlq")
    return parse_topology({
        "kafka": {"bootstrap_servers": bootstrap, "consumer_group": f"{prefix}-g", "session_timeout_s": 6,
                  "heartbeat_interval_s": 1, "commit_interval_s": 0.2},
        "topics": {a: f"{prefix}.{a}" for a in aliases} | {"partitions": PARTITIONS},
        "models": {"echo": {"task": "echo"}},
        "routes": [{"name": "text", "input": "text", "kind": "text", "models": ["echo"],
                    "outputs": {"echo": "sentiment"}, "batch_size": 16, "batch_within_s": 0.02}],
        "analytics": {"window": {"size_s": SIZE // 1000, "step_s": STEP // 1000, "grace_s": 2}},
    })


async def _send(topology: Topology, events: list[tuple[int, int]], tag: str) -> None:
    """``(partition, ts)`` events, in order, to the input topic."""
    producer = AIOKafkaProducer(bootstrap_servers=topology.kafka.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topology.topics.text, orjson.dumps(
            {"event_id": f"{tag}-{i}", "ts": ts, "text": f"text {i}"}), partition=p)
            for i, (p, ts) in enumerate(events)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _until_committed(topology: Topology, total: dict[int, int], timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while any(c < total[p] for p, c in (await _committed(topology)).items()):
        assert time.monotonic() < deadline, "the route did not commit every input"
        await asyncio.sleep(0.2)


async def _analytics(topology: Topology) -> list[dict[str, Any]]:
    """Every record of the analytics topic now, read as a read_committed reader."""
    consumer = AIOKafkaConsumer(topology.topics.analytics, bootstrap_servers=topology.kafka.bootstrap_servers,
                                group_id=None, auto_offset_reset="earliest", isolation_level="read_committed")
    await consumer.start()
    try:
        out: list[dict[str, Any]] = []
        while batch := await consumer.getmany(timeout_ms=500):
            out += [orjson.loads(m.value) for recs in batch.values() for m in recs]
        return out
    finally:
        await consumer.stop()


async def test_event_time_windows_are_exact_with_late_events_and_a_new_owner(
        kafka_bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    started = time.monotonic()
    prefix = f"ev-{uuid.uuid4().hex[:6]}"
    topology = _topology(kafka_bootstrap, prefix)
    summary_topic = create_summary_topic(kafka_bootstrap, prefix)
    ensure_topics(topology)

    rng = random.Random(19)
    on_time = [(i % PARTITIONS, T0 + i * 10 - rng.randrange(2000)) for i in range(N)]  # shuffled within 2 s
    late = [(rng.randrange(PARTITIONS), T0 + rng.randrange(4000)) for _ in range(8)]  # 6-12 s behind
    flush = [(p, T0 + 60_000) for p in range(PARTITIONS)]  # moves every partition on: closes the windows
    sent = defaultdict(int)

    route = RouteConsumer(topology, infer=Echo(), summary_topic=summary_topic)
    first = analytics_windows(topology, summary_topic)
    assert isinstance(first, EventTimeWindows)
    await route.start()
    await first.start()
    second: EventTimeWindows | None = None
    try:
        await _send(topology, on_time[:N // 2], "a")
        deadline = time.monotonic() + 30
        # the first owner closed a window and committed a snapshot (it snapshots after the batch that emitted)
        while not (first.snapshots and any(r["metric"] == "events" for r in first.recent)):
            assert time.monotonic() < deadline, "no window closed and snapshotted"
            await asyncio.sleep(0.2)
        await first.stop()  # a new owner: whatever the first emitted after its last snapshot comes again
        await _send(topology, on_time[N // 2:], "b")
        second = EventTimeWindows(topology, summary_topic)
        with caplog.at_level(logging.INFO, logger="topologies.state.event_analytics"):
            await second.start()
            for p, _ in on_time:
                sent[p] += 1
            await _until_committed(topology, sent)
            await _send(topology, late, "late")  # the watermark is near T0 + 10 s now: these miss their windows
            for p, _ in late:
                sent[p] += 1
            await _until_committed(topology, sent)
            await _send(topology, flush, "flush")
            deadline = time.monotonic() + 30
            while not any(r["metric"] == "late" for r in second.recent):
                assert time.monotonic() < deadline, "the late counts' window did not close"
                await asyncio.sleep(0.2)
    finally:
        for client in (second, route):
            if client is not None:
                await client.stop()

    records = await _analytics(topology)
    latest: dict[tuple[str, str, int], dict[str, float]] = {}
    for r in records:
        ident = (r["metric"], r["key"], r["window_start"])
        assert ident not in latest or latest[ident] == r["values"], f"{ident} emitted with other values"
        latest[ident] = r["values"]
    truth: dict[int, float] = defaultdict(float)
    for _, ts in on_time:
        for s in window_starts(ts, SIZE, STEP):
            truth[s] += 1
    late_truth: dict[int, float] = defaultdict(float)
    for _, ts in late:
        for s in window_starts(ts, SIZE, STEP):
            late_truth[s] += 1
    windows = {s: v for (m, k, s), v in latest.items() if (m, k) == ("events", "text")}
    assert {s: v["in"] for s, v in windows.items()} == dict(truth)
    assert {s: v["out"] for s, v in windows.items()} == dict(truth)
    late_seen: dict[int, float] = defaultdict(float)
    for (m, k, _), v in latest.items():
        if m == "late":
            assert k == "text"
            for f, n in v.items():
                if f.startswith("events@"):
                    late_seen[int(f.removeprefix("events@"))] += n
    assert dict(late_seen) == dict(late_truth)
    resumed = [r.getMessage() for r in caplog.records if "resumed from the snapshot" in r.getMessage()]
    print(f"\n[event windows] {len(records)} analytics records, {len(windows)} windows = offline sums, "
          f"late per window {dict(late_seen)}; {resumed}; {time.monotonic() - started:.1f}s")
    assert resumed, "the second owner starts from the first's snapshot"
