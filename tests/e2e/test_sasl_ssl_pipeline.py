"""The whole pipeline through a SASL_SSL broker (SCRAM-SHA-512 over TLS): the worker's Faust app, its route
consumer and producer (aiokafka), topic creation (kafka-python) and the test's reader all authenticate.

A broker of its own (``LocalKafka(sasl_ssl=True)``), the module's Ray Serve app, one worker whose
environment holds the password (the topology names the variable). Every event must get its result, no
dead letter, and the password must not appear in the worker's log.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from infertide.clients.admin import ensure_topics
from infertide.local.broker import LocalKafka
from infertide.clients.produce import now_ms, produce_events
from infertide.local.runtime import WorkerProcess
from schemas.events import TextEvent
from schemas.topology import parse_topology
from tests.e2e.conftest import Stack, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]

N = 600


def test_pipeline_through_sasl_ssl(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = LocalKafka(tmp_path / "kafka", sasl_ssl=True).start()
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", broker.tls.password)
    worker = None
    try:
        shared, _ = stack.topology("sasl", text={"batch_size": 64})
        kafka = {**shared.kafka.model_dump(exclude_none=True), **broker.tls.kafka_section(broker.bootstrap)}
        data = {**shared.model_dump(exclude_none=True), "kafka": kafka}
        topology = parse_topology(data)
        path = tmp_path / "sasl.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        assert broker.tls.password not in path.read_text()
        ensure_topics(topology)
        worker = WorkerProcess(path, stack.ray_address, topology.web_port, tmp_path / "sasl-worker.log",
                               env={**stack.env, "KAFKA_SASL_PASSWORD": broker.tls.password}).start()
        worker.wait_ready()
        events = [TextEvent(event_id=f"sasl-{i}", ts=now_ms(), text=f"{'good' if i % 2 else 'bad'} {i}")
                  for i in range(N)]
        t0 = time.monotonic()
        produce_events(topology, "text", events)
        ids = {e.event_id for e in events}
        results = read_topic(broker.bootstrap, topology.topics.sentiment, timeout=120,
                             until=lambda r: ids <= {v["event_id"] for _, _, v in r}, **broker.client_kwargs())
        elapsed = time.monotonic() - t0
        dlq = read_topic(broker.bootstrap, topology.topics.dlq, timeout=2, until=lambda r: False,
                         **broker.client_kwargs())
        assert worker.alive(), worker.tail()
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
    got = {v["event_id"] for _, _, v in results}
    print(f"\n[sasl_ssl pipeline] {N} events: {len(results)} results in {elapsed:.1f}s, {len(ids - got)} lost, "
          f"{len(dlq)} dead letters")
    assert ids <= got, f"{len(ids - got)} events without a result"
    assert not dlq
    log = worker.log_path.read_text(errors="replace")
    assert broker.tls.password not in log, "the password leaked into the worker log"
