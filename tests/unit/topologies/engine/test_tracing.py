"""Trace context through one route batch: the spans' parent/child ids from the producer's
``traceparent`` to the output records' headers, with an in-memory exporter (no Kafka, no Ray)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from schemas.codec import encode
from schemas.events import TextEvent
from schemas.topology import parse_topology
from schemas.tracing import TraceParent, new_traceparent, record_spans, tracing_configured
from topologies.engine.pipeline import RoutePipeline
from topologies.engine.records import InputRecord, OutRecord
from topologies.engine.tracing import BatchTracer

PARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> tuple[Any, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def _pipeline(otel: Any, infer: Any, sent: list[OutRecord]) -> RoutePipeline:
    topology = parse_topology({
        "models": {"sentiment": {"task": "sentiment", "model": "x"}},
        "routes": [{"name": "text", "input": "text", "kind": "text", "models": ["sentiment"]}],
    })

    async def send_all(records: list[OutRecord], ticket: Any) -> list[asyncio.Future[list[OutRecord]]]:
        sent.extend(records)
        fut: asyncio.Future[list[OutRecord]] = asyncio.get_running_loop().create_future()
        fut.set_result(list(records))  # a batch's delivery result (with Kafka: where records landed)
        return [fut]

    return RoutePipeline(topology, topology.routes[0], infer=infer, send_all=send_all, summary_topic=None,
                         tracer=BatchTracer(otel, "text", "g-routes"))


def _rec(offset: int, traceparent: bytes | None, value: bytes | None = None) -> InputRecord:
    value = value or encode(TextEvent(event_id=f"e{offset}", ts=1, text="hello"))
    return InputRecord("events.text", 0, offset, None, value, {"traceparent": traceparent} if traceparent else {})


def _ids(value: bytes) -> TraceParent:
    tp = TraceParent.parse(value)
    assert tp is not None
    return tp


async def test_one_events_path_is_one_trace_with_parent_child_ids(spans: Any) -> None:
    otel, exporter = spans
    seen_trace: list[list[str]] = []

    async def infer(model: str, items: list[Any], trace: list[str] | None = None) -> list[dict[str, Any]]:
        seen_trace.append(list(trace or []))
        return [{"ok": True, "result": {"label": "POSITIVE", "score": 0.9}, "model": {"name": model, "version": "1"},
                 "inference_ms": 1.0} for _ in items]

    sent: list[OutRecord] = []
    pipe = _pipeline(otel, infer, sent)
    acked = asyncio.Event()
    delivered: list[Any] = []

    async def ack(results: list[Any]) -> None:
        delivered.extend(results)
        acked.set()

    await pipe.submit([_rec(0, PARENT), _rec(1, b"00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")], ack)
    assert await pipe.drain(5)
    assert acked.is_set()
    assert delivered == sent, "the ack sees every delivery's result, flat, also when the batch's spans wrap them"

    by_name = {s.name: s for s in exporter.get_finished_spans()}
    assert set(by_name) == {"events.text process", "infer sentiment", "send"}  # the unsampled event made none
    consume, infer_span, send = by_name["events.text process"], by_name["infer sentiment"], by_name["send"]
    producer = _ids(PARENT)
    assert consume.kind == SpanKind.CONSUMER and consume.parent.span_id == int(producer.span_id, 16)
    assert {s.context.trace_id for s in by_name.values()} == {int(producer.trace_id, 16)}
    assert infer_span.parent.span_id == consume.context.span_id
    assert send.parent.span_id == consume.context.span_id
    assert consume.attributes["messaging.kafka.offset"] == 0
    # the replica got the infer span as its parent
    assert [[_ids(t.encode()).span_id for t in call] for call in seen_trace] == [[f"{infer_span.context.span_id:016x}"]]
    # every output record of the traced event names the send span; the other keeps its trace, unsampled
    out = {orjson.loads(r.value)["event_id"]: _ids(dict(r.headers)["traceparent"]) for r in sent}
    assert out["e0"].span_id == f"{send.context.span_id:016x}" and out["e0"].sampled
    assert out["e1"].trace_id == "1af7651916cd43dd8448eb211c80319c" and not out["e1"].sampled
    assert send.end_time >= consume.start_time and consume.end_time >= infer_span.end_time


async def test_a_dead_letter_carries_the_send_span_and_events_without_a_header_start_a_trace(spans: Any) -> None:
    otel, exporter = spans

    async def infer(model: str, items: list[Any], trace: list[str] | None = None) -> list[dict[str, Any]]:
        return [{"ok": True, "result": {"label": "NEGATIVE", "score": 0.6}, "model": {"name": model, "version": "1"},
                 "inference_ms": 1.0} for _ in items]

    sent: list[OutRecord] = []
    pipe = _pipeline(otel, infer, sent)
    await pipe.submit([_rec(0, PARENT, value=b"{not json"), _rec(1, None)], lambda _: asyncio.sleep(0))
    assert await pipe.drain(5)

    finished = exporter.get_finished_spans()
    sends = {f"{s.context.span_id:016x}": s for s in finished if s.name == "send"}
    headers = {r.topic: _ids(dict(r.headers)["traceparent"]) for r in sent}
    letter = headers["events.dlq"]
    assert letter.trace_id == _ids(PARENT).trace_id and letter.span_id in sends
    root = headers["inference.sentiment"]  # no header in: a new root trace, sampled by the default sampler
    assert root.trace_id != letter.trace_id and root.span_id in sends
    roots = [s for s in finished if s.name == "events.text process" and s.parent is None]
    assert len(roots) == 1


def test_traceparent_parsing_refuses_what_w3c_refuses() -> None:
    assert TraceParent.parse(PARENT) == TraceParent("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "01")
    for bad in (b"", b"garbage", b"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                b"00-00000000000000000000000000000000-b7ad6b7169203331-01",
                b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
                b"00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01", b"00-zz-b7ad6b7169203331-01", b"\xff"):
        assert TraceParent.parse(bad) is None, bad
    fresh = _ids(new_traceparent())
    assert not fresh.sampled and _ids(fresh.child()).trace_id == fresh.trace_id
    assert _ids(new_traceparent(sampled=True)).sampled


def test_tracing_is_off_without_an_endpoint_and_when_the_sdk_is_disabled() -> None:
    assert not tracing_configured({})
    assert tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing_configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert not tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})


def test_new_traces_are_sampled_at_one_percent_unless_the_sampler_is_configured(monkeypatch: Any) -> None:
    from opentelemetry.sdk.trace.sampling import ParentBased

    from schemas.tracing import DEFAULT_SAMPLE_RATIO, _default_sampler

    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    sampler = _default_sampler()
    assert isinstance(sampler, ParentBased) and str(DEFAULT_SAMPLE_RATIO) in sampler.get_description()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    assert _default_sampler() is None


def test_a_replica_records_one_server_span_per_traced_caller(spans: Any) -> None:
    otel, exporter = spans
    parents = [PARENT.decode(), "00-1af7651916cd43dd8448eb211c80319c-c7ad6b7169203331-01", "junk"]
    record_spans(otel, "serve sentiment", parents, 1, RuntimeError("boom"), {"infertide.items": 3})
    got = exporter.get_finished_spans()
    assert [f"{s.parent.span_id:016x}" for s in got] == ["b7ad6b7169203331", "c7ad6b7169203331"]
    assert all(s.kind == SpanKind.SERVER and not s.status.is_ok for s in got)
