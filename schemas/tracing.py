"""Trace context on the wire (W3C ``traceparent`` in a Kafka header or a Serve call) and the one
OpenTelemetry setup that producers, stream workers and Serve replicas share.

Tracing is configured the way OpenTelemetry is everywhere else: by its own environment
variables. Spans are exported over OTLP/HTTP only when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (and ``OTEL_SDK_DISABLED`` is not ``true``);
``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER`` / ``_ARG`` and ``OTEL_BSP_*`` apply as usual, with one
different default: without ``OTEL_TRACES_SAMPLER`` new traces are sampled at 1%
(``parentbased_traceidratio``, 0.01), not all of them: a traced event costs ~0.1 ms of worker
CPU (docs/tracing.md), too much for every event of a stream. A sampled parent is always followed.
Without an endpoint :func:`tracer` returns None and callers make no span at all: the
``traceparent`` header is still carried (same trace id, a fresh span id per hop).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["HEADER", "TraceParent", "end_span", "finishing", "new_traceparent", "otel_context", "record_spans",
           "span_traceparent", "tracer", "tracing_configured"]

HEADER = "traceparent"
_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A parsed W3C ``traceparent`` (version 00): ``00-<trace_id>-<span_id>-<flags>``."""

    trace_id: str  # 32 lower-case hex digits, not all zero
    span_id: str  # 16 lower-case hex digits, not all zero
    flags: str  # 2 hex digits; bit 0 = sampled

    @property
    def sampled(self) -> bool:
        return bool(int(self.flags, 16) & 1)

    @classmethod
    def parse(cls, value: bytes | str | None) -> TraceParent | None:
        """The trace parent in ``value``, or None when it is absent or malformed (never raises)."""
        if not value:
            return None
        try:
            text = value.decode("ascii") if isinstance(value, bytes) else value
            version, trace_id, span_id, flags = text.strip().split("-")
            int(trace_id, 16), int(span_id, 16), int(flags, 16)
        except (ValueError, UnicodeDecodeError):
            return None
        if (version != "00" or len(trace_id) != 32 or len(span_id) != 16 or len(flags) != 2
                or not int(trace_id, 16) or not int(span_id, 16)):
            return None
        return cls(trace_id.lower(), span_id.lower(), flags.lower())

    def child(self) -> bytes:
        """A ``traceparent`` for the next hop when no span is recorded: same trace and flags, new span id."""
        return f"00-{self.trace_id}-{os.urandom(8).hex()}-{self.flags}".encode()


def new_traceparent(sampled: bool = False) -> bytes:
    """A root ``traceparent`` (a new trace) for an event whose producer records no span.

    Not sampled by default: the root decides, and a producer that records nothing did not sample
    (so a worker with tracing on does not record a span per event of an untraced producer).
    """
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-{'01' if sampled else '00'}".encode()


def tracing_configured(environ: Any = None) -> bool:
    """True when an OTLP traces endpoint is set and the SDK is not disabled."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(env.get(name) for name in _ENDPOINT_VARS)


_TRACERS: dict[str, Any] = {}


def tracer(service: str) -> Any:
    """An OpenTelemetry tracer exporting over OTLP/HTTP in batches, or None when tracing is not configured.

    One provider per process (``OTEL_SERVICE_NAME`` wins over ``service``); spans still queued
    are flushed at interpreter exit.
    """
    if not tracing_configured():
        return None
    if service in _TRACERS:
        return _TRACERS[service]
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the first caller in this process sets it up
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or service})
        provider = TracerProvider(resource=resource, sampler=_default_sampler())
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        atexit.register(provider.shutdown)
    _TRACERS[service] = provider.get_tracer("infertide")
    return _TRACERS[service]


def shutdown_tracing() -> None:
    """Export the spans still queued and stop the exporter, if this process set tracing up (for a process
    that ends with ``os._exit``, which skips the atexit hook registered above)."""
    if not _TRACERS:
        return
    from opentelemetry import trace

    shutdown = getattr(trace.get_tracer_provider(), "shutdown", None)
    if shutdown is not None:
        shutdown()


DEFAULT_SAMPLE_RATIO = 0.01


def _default_sampler() -> Any:
    """None (the SDK reads ``OTEL_TRACES_SAMPLER``) when set, else parent-based at ``DEFAULT_SAMPLE_RATIO``."""
    if os.environ.get("OTEL_TRACES_SAMPLER"):
        return None
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    return ParentBased(TraceIdRatioBased(DEFAULT_SAMPLE_RATIO))


def otel_context(parent: TraceParent | None) -> Any:
    """An OpenTelemetry context whose current span is the remote ``parent`` (None: a new root)."""
    if parent is None:
        return None
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    ctx = SpanContext(int(parent.trace_id, 16), int(parent.span_id, 16), is_remote=True,
                      trace_flags=TraceFlags(int(parent.flags, 16)))
    return trace.set_span_in_context(NonRecordingSpan(ctx))


def span_traceparent(span: Any) -> bytes:
    """The ``traceparent`` naming ``span`` as the parent of the next hop."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}".encode()


def end_span(span: Any, error: BaseException | None, end_ns: int | None = None) -> None:
    """End ``span``; with ``error``, marked failed with the error's class and message."""
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200]))
    span.end(end_time=end_ns)


@contextmanager
def finishing(finish: Callable[[BaseException | None], None]) -> Iterator[None]:
    """Run the body, then ``finish(error)`` with the exception it raised (re-raised) or None."""
    try:
        yield
    except BaseException as err:
        finish(err)
        raise
    finish(None)


def record_spans(otel: Any, name: str, parents: list[str], start_ns: int, error: BaseException | None,
                 attributes: dict[str, Any]) -> None:
    """One finished SERVER span per ``traceparent`` in ``parents`` (a call that served several traced events)."""
    from opentelemetry.trace import SpanKind

    for value in parents:
        parent = TraceParent.parse(value)
        if parent is not None:
            end_span(otel.start_span(name, context=otel_context(parent), kind=SpanKind.SERVER, start_time=start_ns,
                                     attributes=attributes), error)
