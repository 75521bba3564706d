"""The recommendations fold on a real broker: its process SIGKILLed mid-stream, another takes over; the state
and the recommendations equal the fold of the committed summary log, offline, exactly.

The summary log is written by a transactional producer of the test, one transaction per few summaries,
every seventh aborted (what a crashed or fenced exactly-once route leaves): the fold must never see those.
One run per guarantee: they differ, for the fold, in the commit interval (1 s / 0.1 s by default).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.codec import encode
from schemas.recommend_state import POSITION_KEY, state_topic
from schemas.topology import Topology, parse_topology
from tests.unit.topologies.state.test_recfold import random_log
from topologies.state.recfold import RecommendationFold
from topologies.state.recommendations import read_state

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
N, CHUNK, ABORT_EVERY = 600, 4, 7

WORKER = """
import asyncio, json, logging, signal, sys
from schemas.topology import parse_topology
from topologies.state.recommendations import Recommendations

async def main():
    logging.basicConfig(level=logging.INFO)
    fold = Recommendations(parse_topology(json.loads(sys.argv[1])), sys.argv[2], worker_id=sys.argv[3],
                           on_fatal=lambda err: sys.exit(70))
    await fold.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await fold.stop()

asyncio.run(main())
"""


def _topology(bootstrap: str, prefix: str, guarantee: str) -> Topology:
    aliases = ("text", "image", "video", "sentiment", "detections", "tags", "classes", "recommendations",
               "analytics", "dlq")
    return parse_topology({
        "kafka": {"bootstrap_servers": bootstrap, "consumer_group": f"{prefix}-g", "session_timeout_s": 6,
                  "heartbeat_interval_s": 1, "transaction_timeout_s": 10},
        "delivery": {"processing_guarantee": guarantee},
        "topics": {a: f"{prefix}.{a}" for a in aliases},
        "recommendations": {"top_k": 3, "item_pool_size": 8},
        "models": {"echo": {"task": "echo"}},
        "routes": [{"name": "text", "input": "text", "kind": "text", "models": ["echo"],
                    "outputs": {"echo": "sentiment"}}],
    })


def _write_log(bootstrap: str, topic: str, log: list[bytes], committed: list[int]) -> None:
    """``log`` in transactions of CHUNK summaries, every ABORT_EVERY-th aborted; offsets of committed ones
    go to ``committed``."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{topic}-writer"})
    producer.init_transactions(30)
    for n, start in enumerate(range(0, len(log), CHUNK)):
        landed: list[int] = []
        producer.begin_transaction()
        for raw in log[start:start + CHUNK]:
            producer.produce(topic, raw, b"text", 0, on_delivery=lambda err, msg: landed.append(msg.offset()))
        producer.flush(30)
        if n % ABORT_EVERY == ABORT_EVERY - 1:
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
            committed.extend(landed)
        time.sleep(0.02)


def _read_committed(bootstrap: str, topic: str, partitions: int, until_offset: int | None = None) -> list[Any]:
    """Every record a read_committed reader sees now, ``(partition, offset, key, value)``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4().hex[:6]}",
                         "isolation.level": "read_committed", "enable.partition.eof": True,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, eof, deadline = [], set(), time.monotonic() + 30
    try:
        while len(eof) < partitions and time.monotonic() < deadline:
            for m in consumer.consume(500, 0.2):
                if m.error():
                    eof.add(m.partition())
                else:
                    out.append((m.partition(), m.offset(), m.key(), m.value()))
    finally:
        consumer.close()
    return out


def _position(bootstrap: str, topic: str) -> int:
    rows = read_state({"bootstrap.servers": bootstrap}, topic, 20)
    return json.loads(rows[POSITION_KEY])["offset"] if rows.get(POSITION_KEY) else 0


def _fold_process(topology: Topology, summaries: str, worker_id: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(topology.model_dump(mode="json")), summaries,
                             worker_id], stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=env)


def _wait(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_a_sigkilled_fold_is_replaced_and_the_state_is_the_offline_fold(kafka_bootstrap: str, guarantee: str,
                                                                      tmp_path: Path) -> None:
    prefix = f"rf-{uuid.uuid4().hex[:6]}"
    topology = _topology(kafka_bootstrap, prefix, guarantee)
    summaries, state = f"{prefix}-g-summaries", state_topic(topology.kafka.consumer_group)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    compact = {"cleanup.policy": "compact"}
    for f in admin.create_topics([NewTopic(summaries, 1, 1), NewTopic(state, 1, 1, config=compact),
                                  NewTopic(topology.topics.recommendations, 4, 1)]).values():
        f.result()

    log, committed = random_log(N, seed=11), []
    writer = threading.Thread(target=_write_log, args=(kafka_bootstrap, summaries, log, committed))
    first = _fold_process(topology, summaries, "a", tmp_path / "a.log")
    writer.start()
    try:
        _wait("the first fold to commit a position past a third of the log",
              lambda: len(committed) > N // 3 and _position(kafka_bootstrap, state) > 0, 90)
        killed_at = _position(kafka_bootstrap, state)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    second = _fold_process(topology, summaries, "b", tmp_path / "b.log")
    try:
        writer.join(120)
        last = max(committed)
        _wait("the second fold to reach the log's end", lambda: _position(kafka_bootstrap, state) > last, 90)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, (tmp_path / "b.log").read_text()[-3000:]

    # Offline: the committed summary log, folded from its start.
    offline = RecommendationFold(topology.recommendations)
    offline_recs = []
    for _, offset, _, raw in _read_committed(kafka_bootstrap, summaries, 1):
        offline_recs += offline.feed(raw, offset).recommendations
    restored = RecommendationFold.restored(topology.recommendations,
                                           read_state({"bootstrap.servers": kafka_bootstrap}, state, 20))
    online_recs = [json.loads(v) for _, _, _, v in _read_committed(kafka_bootstrap, topology.topics.recommendations, 4)]

    rows, want = restored.rows(), offline.rows()
    differ = sorted(k for k in {*rows, *want} if rows.get(k) != want.get(k))
    emitted = Counter(json.dumps(r, sort_keys=True) for r in online_recs)
    expected = Counter(json.dumps(json.loads(encode(r)), sort_keys=True) for r in offline_recs)
    print(f"\n[recommendations fold, {guarantee}] {len(committed)} committed summaries of {N} written "
          f"({N - len(committed)} aborted); first fold SIGKILLed at position {killed_at}; state rows "
          f"{len(rows)} vs offline {len(want)}, differing: {differ or 'none'}; recommendations "
          f"{sum(emitted.values())} vs offline {sum(expected.values())}, repeated "
          f"{sum(n - 1 for n in emitted.values() if n > 1)}, missing {sum((expected - emitted).values())}, "
          f"extra {sum((emitted - expected).values())}")
    assert 0 < killed_at < last, "the first fold was killed mid-stream, after a commit"
    assert not differ and list(restored.items) == list(offline.items)
    assert emitted == expected and offline_recs
