"""Tracing end to end: ``infertide produce`` -> Kafka -> stream worker -> Serve replica -> result record,
with every process exporting OTLP/HTTP to a real receiver; one event's spans chain parent to child."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from kafka import KafkaConsumer, TopicPartition

from schemas.tracing import TraceParent
from tests.e2e.conftest import Stack
from tests.fixtures.otlp import OtlpReceiver, ReceivedSpan

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(400)]

N = 12


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


@pytest.fixture(scope="module")
def stack_env(receiver: OtlpReceiver) -> dict[str, str]:
    """Every process of this module's stack (replicas, workers, the CLI) exports to the receiver."""
    return {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_TRACES_SAMPLER": "parentbased_always_on"}  # every event here (the default samples 1%)


def _results_with_headers(bootstrap: str, topic: str, n: int, timeout: float) -> list[tuple[bytes, dict]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", client_id=f"t-{uuid.uuid4().hex[:6]}")
    tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got: list[tuple[bytes, dict]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                got.extend((m.value, dict(m.headers)) for m in batch)
    finally:
        consumer.close()
    return got


def test_one_events_spans_chain_from_the_producer_through_serve_to_the_result(stack: Stack,
                                                                             receiver: OtlpReceiver) -> None:
    topology, path = stack.topology("trace")
    worker = stack.worker(topology, path, "trace-worker").start()
    try:
        worker.wait_ready()
        cli = [sys.executable, "-m", "infertide", "--config", str(path), "produce", "text", "traced",
               "--count", str(N), "--bootstrap", stack.bootstrap]
        done = subprocess.run(cli, env=os.environ | stack.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        results = _results_with_headers(stack.bootstrap, topology.topics.sentiment, N, timeout=90)
        assert len(results) == N
        send_ids = {TraceParent.parse(h["traceparent"]).span_id for _, h in results}

        def chains() -> dict[str, list[ReceivedSpan]]:
            by_trace: dict[str, list[ReceivedSpan]] = {}
            for s in receiver.spans():
                by_trace.setdefault(s.trace_id, []).append(s)
            return {t: ss for t, ss in by_trace.items() if len(ss) >= 5}

        deadline = time.monotonic() + 30
        while len(chains()) < N and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        assert worker.stop() == 0, worker.tail()
    traces = chains()
    assert len(traces) == N, f"{len(traces)} complete traces of {N}; spans: {receiver.spans()[:8]}"
    for spans in traces.values():
        by_name = {s.name: s for s in spans}
        produce = by_name[f"{topology.topics.text} send"]
        consume = by_name[f"{topology.topics.text} process"]
        infer, serve, send = by_name["infer sentiment"], by_name["serve sentiment"], by_name["send"]
        assert produce.parent_span_id == "" and produce.service == "infertide-produce"
        assert consume.parent_span_id == produce.span_id and consume.service == "infertide-worker"
        assert infer.parent_span_id == consume.span_id
        assert serve.parent_span_id == infer.span_id and serve.service == "infertide-sentiment"
        assert send.parent_span_id == consume.span_id
        assert send.span_id in send_ids  # the result record names the span that produced it
