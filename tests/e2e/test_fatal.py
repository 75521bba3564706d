"""Poison records and fatal produce errors, forced the way a cluster can force them: output topics
created (by someone else) with a ``max.message.bytes`` below what the config expects.

- A dead letter too big for the dead-letter topic is cut to fit what the broker says the topic
  takes (read when the worker starts): the poison record is dead-lettered (quarantined, with its
  size, sha256, topic, partition and offset), the worker goes on, nothing restarts, nothing loops.
- A topic that takes less than any dead letter is a broken cluster, not a poison record: the
  worker must not commit past the record, must say it is not ready, and must exit (code 70)
  within seconds, so a supervisor (``infertide up``, Kubernetes) restarts it with backoff.
"""

from __future__ import annotations

import hashlib
import time

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from tests.e2e.conftest import Stack, analytics_events, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]

POISON = b"not json " * 10_000  # its whole dead letter would be ~120 KB


def _dlq_taking(stack: Stack, prefix: str, max_message_bytes: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)
    try:
        admin.create_topics([NewTopic(f"{prefix}.dlq", 4, 1,
                                      topic_configs={"max.message.bytes": str(max_message_bytes)})])
    finally:
        admin.close()


def _send(stack: Stack, topic: str, *values: bytes) -> None:
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap)
    for value in values:
        producer.send(topic, value)
    producer.flush()
    producer.close()


def test_a_poison_record_bigger_than_the_dlq_takes_is_dead_lettered_cut_to_fit(stack: Stack) -> None:
    _dlq_taking(stack, "poison-fit", 20_000)
    topology, path = stack.topology("poison-fit")
    worker = stack.worker(topology, path, "poison-fit-worker").start()
    try:
        worker.wait_ready()
        pid = worker.proc.pid if worker.proc else None
        valid = [b'{"event_id": "ok-%d", "ts": 1, "text": "fine"}' % i for i in range(20)]
        _send(stack, topology.topics.text, *valid[:10], POISON, *valid[10:])
        letters = read_topic(stack.bootstrap, topology.topics.dlq, timeout=60, until=lambda r: len(r) >= 1)
        results = read_topic(stack.bootstrap, topology.topics.sentiment, timeout=60, until=lambda r: len(r) >= 20)
        analytics = analytics_events(stack.bootstrap, topology, "text", expect_in=21)
        assert worker.alive() and worker.proc is not None and worker.proc.pid == pid, worker.tail()
        assert worker.get("/readyz")[0] == 200
    finally:
        assert worker.stop() == 0, worker.tail()
    assert len(letters) == 1, letters
    letter = letters[0][2]
    print(f"\n[poison] a {len(POISON):,}-byte poison record: dead letter of {len(str(letter)):,} chars, "
          f"truncated={letter['truncated']}; {len(results)} of 20 valid events answered; worker never restarted")
    assert letter["truncated"] and letter["original_size"] == len(POISON)
    assert letter["original_sha256"] == hashlib.sha256(POISON).hexdigest() and letter["stage"] == "decode"
    assert {v["event_id"] for _, _, v in results} == {f"ok-{i}" for i in range(20)}
    assert (analytics.get("in"), analytics.get("out"), analytics.get("dlq")) == (21, 20, 1), analytics


def test_a_produce_the_broker_refuses_makes_the_worker_exit_not_spin(stack: Stack) -> None:
    _dlq_taking(stack, "fatal", 300)  # takes no dead letter at all
    topology, path = stack.topology("fatal")
    worker = stack.worker(topology, path, "fatal-worker").start()
    try:
        worker.wait_ready()
        _send(stack, topology.topics.text, POISON)
        saw_not_ready, t0 = False, time.monotonic()
        while worker.alive() and time.monotonic() - t0 < 60:
            try:
                status, _ = worker.get("/readyz", timeout=0.5)
                saw_not_ready = saw_not_ready or status == 503
            except OSError:
                pass
            time.sleep(0.1)
        took = time.monotonic() - t0
        assert not worker.alive(), f"the worker kept running after a fatal produce error:\n{worker.tail()}"
        assert worker.proc is not None and worker.proc.returncode == 70, worker.tail()
    finally:
        worker.stop()
    log = worker.tail(200)
    print(f"\n[fatal] exited 70 {took:.1f}s after the poison record; /readyz 503 seen: {saw_not_ready}")
    # The broker's refusal, as the route's client (librdkafka) names it.
    assert "stopping worker" in log and "MSG_SIZE_TOO_LARGE" in log
    assert saw_not_ready or took < 2.0, "/readyz must go 503 before the exit"
