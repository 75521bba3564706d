"""The route consumer in exactly-once, on a real broker: partitions move while batches are in flight, and
batches outlive the drain; a ``read_committed`` reader sees every input's result exactly once.

The model is an in-process echo the test controls (no Ray: the consumer, its transactions and its
rebalance callbacks are under test).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from schemas.topology import Topology
from tests.integration.test_route_rebalance import (PARTITIONS, Echo, _make_topics, _produce, _topology,
                                                   _until_settled, _wait)
from topologies.engine.routes import RouteConsumer

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


async def _committed_results(topology: Topology, want: set[str], timeout: float) -> dict[str, int]:
    """event_id -> how many results a read_committed reader sees, read until every wanted id is there
    and then 2 s more (a duplicate committed late would show)."""
    consumer = AIOKafkaConsumer(topology.topics.sentiment, bootstrap_servers=topology.kafka.bootstrap_servers,
                                group_id=None, auto_offset_reset="earliest", isolation_level="read_committed")
    await consumer.start()
    seen: dict[str, int] = {}
    deadline, settle = time.monotonic() + timeout, None
    try:
        while time.monotonic() < deadline:
            if settle is None and want <= seen.keys():
                settle = time.monotonic() + 2.0
            if settle is not None and time.monotonic() > settle:
                break
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                for m in batch:
                    event_id = orjson.loads(m.value)["event_id"]
                    seen[event_id] = seen.get(event_id, 0) + 1
    finally:
        await consumer.stop()
    return seen


async def _run(kafka_bootstrap: str, *, drain_s: float, blocked: bool) -> dict[str, Any]:
    topology = _topology(kafka_bootstrap, f"eo-{uuid.uuid4().hex[:6]}", drain_s, "exactly-once")
    _make_topics(topology)
    where = await _produce(topology)
    ends = {p: max(off for q, off in where.values() if q == p) + 1 for p in range(PARTITIONS)}
    first, second = Echo(delay=0.25), Echo()
    c1 = RouteConsumer(topology, infer=first, summary_topic=None, worker_id="w1")
    c2 = RouteConsumer(topology, infer=second, summary_topic=None, worker_id="w2")
    await c1.start()
    runner = c1.runners[0]
    executor = runner.pipeline.executor
    started = runner.delivery.last_progress
    try:
        await _wait(lambda: first.calls >= 4 and runner.delivery.last_progress > started, 60, "a first transaction")
        if blocked:
            first.gate.clear()  # the next calls hang: in-flight batches outlive the drain timeout
            await _wait(lambda: executor.outstanding >= 2, 30, "batches stuck in flight")
        else:
            await _wait(lambda: executor.outstanding >= 1, 30, "batches in flight")
        in_flight_at_join = executor.outstanding
        await c2.start()
        await _wait(lambda: c2.assigned() > 0, 60, "the second consumer's partitions")
        if blocked:
            await asyncio.sleep(0.5)
            first.gate.set()  # the abandoned batches finish now: in exactly-once they publish nothing
        seen = await _committed_results(topology, set(where), timeout=90)
        committed = await _until_settled(topology, ends, timeout=30)
    finally:
        await c2.stop()
        await c1.stop()
    lost = set(where) - seen.keys()
    duplicated = {e: n for e, n in seen.items() if n > 1}
    assert not lost, f"{len(lost)} events lost, e.g. {sorted(lost)[:5]}"
    assert not duplicated, f"{len(duplicated)} events answered more than once, e.g. {sorted(duplicated.items())[:5]}"
    assert len(seen) == len(where)
    stuck = {p: (committed.get(p), end) for p, end in ends.items() if committed.get(p, -1) < end}
    assert not stuck, f"partitions stuck (committed, end): {stuck}"
    return {"in_flight_at_join": in_flight_at_join, "c2_calls": second.calls}


async def test_exactly_once_when_partitions_move_with_batches_in_flight(kafka_bootstrap: str) -> None:
    info = await _run(kafka_bootstrap, drain_s=20, blocked=False)
    print(f"\n[exactly-once] drained: 1600 events, 0 lost, 0 duplicates (read_committed), {info}")
    assert info["in_flight_at_join"] >= 1 and info["c2_calls"] > 0


async def test_exactly_once_when_batches_outlive_the_drain(kafka_bootstrap: str) -> None:
    info = await _run(kafka_bootstrap, drain_s=1.0, blocked=True)
    print(f"\n[exactly-once] abandoned: 1600 events, 0 lost, 0 duplicates (read_committed), {info}")
    assert info["in_flight_at_join"] >= 2 and info["c2_calls"] > 0
