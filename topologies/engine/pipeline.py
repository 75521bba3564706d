"""One route's engine: decode a batch, call its models through Serve, produce the outputs in order, ack.

The engine is independent of Kafka clients: it takes consumed records and two async
callables (``infer`` to reach a Serve deployment, ``send`` to schedule a Kafka produce
and return its delivery future). The route consumer (:mod:`topologies.engine.consumer`)
feeds it record batches; unit tests feed it fakes. The pure part lives in
:mod:`topologies.engine.batch`, the ordering in :mod:`topologies.engine.executor`.

Delivery: a batch's ``ack`` (which makes its offsets committable) runs only after every
record it produced (results, dead letters, summary) is acknowledged by the broker, and gets
the deliveries' results as one flat list (with Kafka: a ``RecordMetadata`` per record batch,
so the consumer learns the summary's offset; :mod:`topologies.engine.consumer`).
Order: batches are produced strictly in the order they were submitted, whatever order
their Serve calls finish in, so results of one partition keep input order with
``max_in_flight`` calls outstanding. Backpressure: with ``max_in_flight`` batches
outstanding, :meth:`RoutePipeline.submit` waits, so the consumer stops taking.
A failed produce is fatal: nothing after it is acked and ``on_fatal`` is called.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from schemas.reply import Reply
from schemas.topology import RouteConfig, Topology
from schemas.tracing import finishing, span_traceparent
from topologies.engine.batch import SCHEMA_OF_KIND, BatchOutput, BatchProcessor, InferenceFailed, Observed
from topologies.engine.executor import AckFn, OrderedExecutor
from topologies.metrics import METRICS
from topologies.engine.records import InputRecord, OutRecord
from topologies.engine.serve_client import call_with_retries
from topologies.engine.tracing import BatchTracer

__all__ = ["SCHEMA_OF_KIND", "BatchOutput", "InferFn", "ObserveFn", "RoutePipeline", "SendAllFn", "SendFn"]

log = logging.getLogger(__name__)

# ``infer(model, items)``, or ``infer(model, items, trace)`` with the traced events' infer-span traceparents.
InferFn = Callable[..., Awaitable[list[Reply]]]
SendFn = Callable[[OutRecord], Awaitable[Awaitable[Any]]]
SendAllFn = Callable[[list[OutRecord]], Awaitable[list[Awaitable[Any]]]]
ObserveFn = Callable[[str, int, int, Observed], None]


class RoutePipeline:
    """Processes one route's micro-batches.

    Args:
        topology: the validated topology.
        route: the route this engine serves.
        infer: ``await infer(model_name, items) -> replies`` (a Serve handle call).
        send: ``await send(record) -> delivery future`` (schedules a produce).
        send_all: ``await send_all(records) -> delivery futures``; used instead of ``send`` when given
            (:class:`topologies.engine.producer.BatchProducer`: one record batch per topic partition).
        summary_topic: internal topic for per-batch analytics/recommendation summaries.
        on_fatal: called when producing fails, so the worker can stop without committing.
        observe: ``observe(route, n_in, n_dlq, [(task, event, result)])`` after each batch (dashboard state).
        tracer: spans for traced events (:class:`topologies.engine.tracing.BatchTracer`); None: tracing off.
    """

    def __init__(self, topology: Topology, route: RouteConfig, *, infer: InferFn, send: SendFn | None = None,
                 send_all: SendAllFn | None = None, summary_topic: str | None,
                 on_fatal: Callable[[BaseException], None] | None = None,
                 observe: ObserveFn | None = None, tracer: BatchTracer | None = None) -> None:
        if (send is None) == (send_all is None):
            raise TypeError("RoutePipeline needs exactly one of send= or send_all=")
        self.route = route
        self.infer = infer
        self.send = send
        self.send_all = send_all
        self.observe = observe
        self.tracer = tracer
        self.processor = BatchProcessor(topology, route, summary_topic)
        in_flight = METRICS.in_flight.labels(route.name)
        self.executor: OrderedExecutor[BatchOutput] = OrderedExecutor(
            route.name, route.max_in_flight, self._publish, on_fatal=on_fatal, on_settled=in_flight.set)
        self.generation = 0  # bumped at each revocation (abandon_in_flight)
        self._batch_size = METRICS.batch_size.labels(route.name)
        self._events_in = METRICS.events_in.labels(route.name)

    @property
    def failed(self) -> BaseException | None:
        return self.executor.failed

    async def wait_for_slot(self) -> None:
        """Returns once a batch could be submitted at once (so the caller fills it only then)."""
        await self.executor.wait_for_slot()

    async def submit(self, records: list[InputRecord], ack: AckFn) -> None:
        """Start processing a batch; returns once it is queued (waits while ``max_in_flight`` are out).

        ``await ack(results)`` runs once every output is acknowledged, with the deliveries' results, flat.
        """
        self._batch_size.observe(len(records))
        self._events_in.inc(len(records))

        async def ack_flat(results: list[Any]) -> Any:  # a traced batch's deliveries resolve as one list
            return await ack([r for res in results for r in (res if isinstance(res, list) else (res,))])

        await self.executor.submit(self._stamped(records, self.generation), ack_flat)

    def abandon_in_flight(self) -> None:
        """Partitions were revoked: batches still in flight will not be committed, and their events will be
        read again by the next owner, which counts them; so they publish no summary from now on."""
        self.generation += 1

    async def _stamped(self, records: list[InputRecord], generation: int) -> BatchOutput:
        out = await self.process(records)
        out.generation = generation
        return out

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted batch has been produced and acknowledged (False: timed out or failed)."""
        return await self.executor.drain(timeout)

    async def process(self, records: list[InputRecord]) -> BatchOutput:
        """Everything one batch produces; never raises (unexpected errors dead-letter the batch)."""
        try:
            return await self._process(records)
        except Exception as err:  # a bug must not lose events: dead-letter them with the reason
            log.exception("route %s: batch failed unexpectedly", self.route.name)
            return self.processor.fail_all(records, err)

    async def _process(self, records: list[InputRecord]) -> BatchOutput:
        proc = self.processor
        traces = self.tracer.begin(records) if self.tracer is not None else []
        batch = proc.decode(records)
        replies: dict[str, Any] = {}
        if batch.valid:
            items = proc.items(batch.valid)
            answers = await asyncio.gather(*(self._call(m, items, batch.valid) for m in self.route.models),
                                           return_exceptions=True)
            for model, answer in zip(self.route.models, answers):
                if isinstance(answer, BaseException) and not isinstance(answer, InferenceFailed):
                    raise answer
                replies[model] = answer
        out = proc.finish(batch, replies)
        out.traces = traces
        if self.observe is not None:
            try:
                self.observe(self.route.name, batch.size, len(out.dead), out.observed)
            except Exception:  # the dashboard's bookkeeping must never cost an event
                log.exception("route %s: observe callback failed", self.route.name)
        return out

    async def _call(self, model: str, items: list[Any], valid: list[InputRecord]) -> Any:
        """One model's call for the batch; with tracing, under ``infer`` spans whose ids the replica gets."""
        tracer = self.tracer
        spans = tracer.start_infer(valid, model, len(items)) if tracer is not None else []
        if not spans:
            return await call_with_retries(self.infer, model, items, self.route)
        with finishing(lambda error: BatchTracer.end_infer(spans, error)):
            return await call_with_retries(self.infer, model, items, self.route,
                                           trace=[span_traceparent(s).decode() for s in spans])

    async def _publish(self, out: BatchOutput) -> list[Awaitable[Any]]:
        records, summaries = out.records, self.processor.summary_topic
        if out.generation != self.generation and summaries:  # abandoned: results yes, counts no
            records = [r for r in records if r.topic != summaries]
        if self.send_all is not None:
            deliveries = await self.send_all(records)
        else:
            assert self.send is not None
            deliveries = [await self.send(r) for r in records]
        if out.traces:  # the spans end when the broker has acked every record of the batch
            deliveries = [asyncio.ensure_future(BatchTracer.end_after(deliveries, out.traces))]
        return deliveries
