"""Spans of one route batch, for the events that are traced (their ``traceparent`` is sampled, or
they carry none and the sampler picks them): consume -> infer (per model) and consume -> send.

Per traced event: a ``<input topic> process`` span (CONSUMER) from the batch's start to the broker's
ack of its outputs, child of the event's ``traceparent``; an ``infer <model>`` span (CLIENT) per model
call under it, whose ``traceparent`` the Serve replica receives; a ``send`` span (PRODUCER) started
when its first output record is built, ended at the ack, whose ``traceparent`` every output record
(results, dead letters) carries. Nothing here runs when tracing is not configured
(:func:`schemas.tracing.tracer` returned None); output records then get ``traceparent`` with a
fresh span id (:func:`topologies.engine.records.out_traceparent`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import Any

from opentelemetry.trace import SpanKind

from schemas.tracing import HEADER, TraceParent, end_span, finishing, otel_context, span_traceparent
from topologies.engine.records import InputRecord

__all__ = ["WORKER_SERVICE", "BatchTracer", "EventTrace"]

WORKER_SERVICE = "infertide-worker"  # the stream workers' service name (OTEL_SERVICE_NAME wins)


class EventTrace:
    """The spans of one traced event; ``out_header()`` is the ``traceparent`` of its output records."""

    __slots__ = ("_header", "consume", "send", "tracer")

    def __init__(self, tracer: Any, consume: Any) -> None:
        self.tracer, self.consume, self.send, self._header = tracer, consume, None, b""

    def out_header(self) -> bytes:
        if self.send is None:
            ctx = _in_context(self.consume)
            self.send = self.tracer.start_span("send", context=ctx, kind=SpanKind.PRODUCER)
            self._header = span_traceparent(self.send)
        return self._header

    def end(self, error: BaseException | None, end_ns: int) -> None:
        for span in (self.send, self.consume):
            if span is not None:
                end_span(span, error, end_ns)


def _in_context(span: Any) -> Any:
    from opentelemetry import trace

    return trace.set_span_in_context(span)


class BatchTracer:
    """Starts and ends the spans of one route's batches.

    Args:
        tracer: an OpenTelemetry tracer (:func:`schemas.tracing.tracer`).
        route: the route's name (span attribute ``infertide.route``).
        group: the consumer group (``messaging.consumer.group.name``).
    """

    def __init__(self, tracer: Any, route: str, group: str) -> None:
        self.tracer, self.route, self.group = tracer, route, group

    def begin(self, records: Sequence[InputRecord]) -> list[EventTrace]:
        """Start the consume span of every traced record (``rec.trace`` is set on those)."""
        traces, start = [], time.time_ns()
        for rec in records:
            parent = TraceParent.parse(rec.headers.get(HEADER)) if rec.headers else None
            if parent is not None and not parent.sampled:
                continue  # the producer decided: not recorded (the header still travels)
            span = self.tracer.start_span(
                f"{rec.topic} process", context=otel_context(parent), kind=SpanKind.CONSUMER, start_time=start,
                attributes={"messaging.system": "kafka", "messaging.operation.type": "process",
                            "messaging.destination.name": rec.topic,
                            "messaging.destination.partition.id": str(rec.partition),
                            "messaging.kafka.offset": rec.offset, "messaging.consumer.group.name": self.group,
                            "infertide.route": self.route})
            if not span.is_recording():
                continue  # a new root the sampler dropped
            rec.trace = EventTrace(self.tracer, span)
            traces.append(rec.trace)
        return traces

    def start_infer(self, records: Sequence[InputRecord], model: str, batch_size: int) -> list[Any]:
        """``infer <model>`` spans under the traced records' consume spans (ended by :meth:`end_infer`)."""
        return [self.tracer.start_span(f"infer {model}", context=_in_context(rec.trace.consume),
                                       kind=SpanKind.CLIENT,
                                       attributes={"infertide.model": model, "infertide.batch_size": batch_size})
                for rec in records if rec.trace is not None]

    @staticmethod
    def end_infer(spans: list[Any], error: BaseException | None) -> None:
        for span in spans:
            end_span(span, error)

    @staticmethod
    async def end_after(deliveries: Sequence[Awaitable[Any]], traces: list[EventTrace]) -> list[Any]:
        """End the events' send and consume spans once every delivery of their batch is acked;
        returns the deliveries' results (flat, in order), which the batch's ack then sees."""

        def finish(error: BaseException | None) -> None:
            end = time.time_ns()
            for trace in traces:
                trace.end(error, end)

        with finishing(finish):
            return list(await asyncio.gather(*deliveries))
