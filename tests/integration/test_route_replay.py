"""A worker killed with SIGKILL mid-stream: its partitions' next owner replays the events after the
last commit for their results, but analytics count every event exactly once.

Worker A is a real process (a :class:`RouteConsumer` with an in-process echo model and the summary
topic set) that the test kills with SIGKILL while it works: no drain, no commit, no LeaveGroup, so
summaries of batches past its last commit are on the summary topic, as after a real crash. Worker B
(in this process) joins, gets the partitions once A's session expires, and processes everything.
The test checks, on a real broker: the ``events|<route>`` ``in`` of all summaries adds up to exactly
the number of inputs, every input has a result (duplicates allowed), and B did skip counting the
replayed events it reprocessed (its log line and ``infertide_replayed_uncounted_total``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from infertide.clients.admin import ensure_topics
from tests.fixtures.kafka import create_summary_topic
from schemas.topology import parse_topology
from tests.integration.test_route_rebalance import Echo, _committed, _produce, _results
from topologies.metrics import REGISTRY
from topologies.engine.replays import summarized_upto
from topologies.engine.routes import RouteConsumer

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(150)]

N = 1600  # test_route_rebalance._produce sends this many
PARTITIONS = 4
ROOT = Path(__file__).resolve().parents[2]

# Worker A: echo calls take 50 ms, so it is still working when it is killed.
WORKER = r"""
import asyncio, json, sys
from schemas.topology import parse_topology
from topologies.engine.routes import RouteConsumer

async def echo(model, items):
    await asyncio.sleep(0.05)
    return [{"ok": True, "result": {"label": "POSITIVE", "score": 0.5}, "model": {"name": "echo", "version": "1"},
             "inference_ms": 0.0} for _ in items]

async def main():
    rc = RouteConsumer(parse_topology(json.loads(sys.argv[1])), infer=echo, summary_topic=sys.argv[2])
    await rc.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _config(bootstrap: str, prefix: str) -> dict[str, Any]:
    aliases = ("text", "image", "video", "sentiment", "detections", "tags", "classes", "recommendations",
               "analytics", "dlq")
    return {
        "kafka": {"bootstrap_servers": bootstrap, "consumer_group": f"{prefix}-g", "session_timeout_s": 6,
                  "heartbeat_interval_s": 1, "commit_interval_s": 1.0, "revoke_drain_timeout_s": 5},
        "topics": {a: f"{prefix}.{a}" for a in aliases} | {"partitions": PARTITIONS},
        "models": {"echo": {"task": "echo"}},
        "routes": [{"name": "text", "input": "text", "kind": "text", "models": ["echo"],
                    "outputs": {"echo": "sentiment"}, "batch_size": 16, "batch_within_s": 0.02,
                    "max_in_flight": 2}],
    }


async def _summaries(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every record of the summary topic, up to its end now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    tp = TopicPartition(topic, 0)
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        out: list[dict[str, Any]] = []
        while await consumer.position(tp) < end:
            for m in (await consumer.getmany(tp, timeout_ms=200)).get(tp, []):
                out.append(orjson.loads(m.value))
        return out
    finally:
        await consumer.stop()


def _beyond_commit(summaries: list[dict[str, Any]], committed: dict[int, int], topic: str) -> dict[int, int]:
    """Per input partition: how many offsets the summaries cover past the group's commit."""
    wanted = {(topic, p) for p in range(PARTITIONS)}
    upto = summarized_upto((orjson.dumps(s) for s in summaries), wanted)
    return {p: end - committed.get(p, 0) for (_, p), end in upto.items() if end > committed.get(p, 0)}


def _uncounted() -> float:
    return REGISTRY.get_sample_value("infertide_replayed_uncounted_total", {"route": "text"}) or 0.0


@pytest.mark.parametrize("summary_partitions", [1, 4], ids=["declared", "auto-created"])
async def test_a_crashed_workers_replayed_events_are_counted_once(kafka_bootstrap: str, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture,
                                                                   summary_partitions: int) -> None:
    """``auto-created``: the summary topic has 4 partitions, as when a broker auto-creates it before the app
    declares it (seen on a 3-broker cluster); every summary still goes to, and is read from, one partition."""
    started = time.monotonic()
    prefix = f"rp-{uuid.uuid4().hex[:6]}"
    config = _config(kafka_bootstrap, prefix)
    topology = parse_topology(config)
    summary_topic = create_summary_topic(kafka_bootstrap, prefix, summary_partitions)
    ensure_topics(topology)
    where = await _produce(topology)
    assert len(where) == N

    log_a = tmp_path / "worker-a.log"
    with log_a.open("wb") as err:
        worker = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(config), summary_topic],
                                  cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=err)
    try:
        # Kill A once it has committed and has summaries past its commit (it keeps working meanwhile).
        deadline, gap = time.monotonic() + 30, {}
        while not gap:
            assert worker.poll() is None, log_a.read_text()[-3000:]
            assert time.monotonic() < deadline, f"worker A made no progress: {log_a.read_text()[-3000:]}"
            await asyncio.sleep(0.3)
            committed = await _committed(topology)
            if sum(committed.values()):
                gap = _beyond_commit(await _summaries(kafka_bootstrap, summary_topic), committed, topology.topics.text)
    finally:
        os.kill(worker.pid, signal.SIGKILL)  # a crash: nothing drained, nothing committed, no LeaveGroup
        worker.wait(10)
    committed_at_crash = await _committed(topology)
    summaries_at_crash = await _summaries(kafka_bootstrap, summary_topic)
    gap = _beyond_commit(summaries_at_crash, committed_at_crash, topology.topics.text)
    assert gap, "A's summaries must reach past its last commit, or nothing is replayed"

    before = _uncounted()
    b = RouteConsumer(topology, infer=Echo(), summary_topic=summary_topic)
    with caplog.at_level(logging.INFO, logger="topologies.engine.replays"):
        await b.start()
        try:
            results = await _results(topology, set(where), timeout=40)
            ends = {p: max(off for q, off in where.values() if q == p) + 1 for p in range(PARTITIONS)}
            deadline = time.monotonic() + 15
            while any(committed.get(p, 0) < end for committed in [await _committed(topology)]
                      for p, end in ends.items()):
                assert time.monotonic() < deadline, "B did not commit to the end"
                await asyncio.sleep(0.3)
        finally:
            await b.stop()
    replayed_uncounted = _uncounted() - before

    summaries = await _summaries(kafka_bootstrap, summary_topic)
    counted_in = sum(s["metrics"].get("events|text", {}).get("in", 0) for s in summaries)
    counted_out = sum(s["metrics"].get("events|text", {}).get("out", 0) for s in summaries)
    n_results = sum(len(ts) for ts in results.values())
    lines = [r.getMessage() for r in caplog.records if "already summarized" in r.getMessage()]
    print(f"\n[replay] inputs {N}, results {n_results}, summaries {len(summaries)} "
          f"({len(summaries_at_crash)} by A), in-count {counted_in:.0f}, out-count {counted_out:.0f}, "
          f"summarized past A's commit {gap}, reprocessed-uncounted {replayed_uncounted:.0f}, "
          f"{time.monotonic() - started:.1f}s\n[replay] B: {lines}")
    assert set(results) == set(where), "every input has a result"
    assert n_results >= N
    assert counted_in == N, f"analytics counted {counted_in:.0f} events in for {N} inputs"
    assert counted_out == N
    assert replayed_uncounted >= sum(gap.values()) > 0, "B reprocessed the summarized events without counting them"
    assert lines, "B says which offsets it does not count again"
    assert time.monotonic() - started < 60
