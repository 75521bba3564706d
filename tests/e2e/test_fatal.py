"""Fatal means exit: a worker that cannot produce goes not-ready at once, then exits non-zero, never spins.

The fault is forced the way a cluster can force it: the dead-letter topic was created (by someone
else) with a ``max.message.bytes`` below the dead letter of one bad record, so the broker refuses
the letter. The worker must not commit past that record, must say it is not ready, and must exit
(code 70) within seconds, so a supervisor (``infertide up``, Kubernetes) restarts it.
"""

from __future__ import annotations

import time

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]


def test_a_produce_the_broker_refuses_makes_the_worker_exit_not_spin(stack: Stack) -> None:
    prefix = "fatal"
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)
    try:
        admin.create_topics([NewTopic(f"{prefix}.dlq", 4, 1, topic_configs={"max.message.bytes": "20000"})])
    finally:
        admin.close()
    topology, path = stack.topology(prefix)
    worker = stack.worker(topology, path, "fatal-worker").start()
    try:
        worker.wait_ready()
        producer = KafkaProducer(bootstrap_servers=stack.bootstrap)
        producer.send(topology.topics.text, b"not json " * 10_000)  # its dead letter is ~120 KB
        producer.flush()
        producer.close()
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
    assert "stopping worker" in log and "MessageSizeTooLarge" in log.replace("RecordTooLarge", "MessageSizeTooLarge")
    assert saw_not_ready or took < 2.0, "/readyz must go 503 before the exit"
