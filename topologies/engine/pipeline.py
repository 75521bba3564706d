"""One route's engine: decode a batch, call its models through Serve, produce the outputs in order, ack.

The engine is independent of Kafka clients: it takes consumed records and two async
callables (``infer`` to reach a Serve deployment, ``send_all`` to publish a batch's records
and return their delivery futures). The route consumer (:mod:`topologies.engine.consumer`)
feeds it record batches and publishes through its guarantee (:mod:`topologies.engine.delivery`);
unit tests feed it fakes. The pure part lives in
:mod:`topologies.engine.batch`, the ordering in :mod:`topologies.engine.executor`.

Delivery: a batch's ``ack`` (which makes its offsets committable) runs only after every
record it produced (results, dead letters, summary) is acknowledged by the broker, and gets
the deliveries' results (with Kafka: where the summary landed, so the consumer learns the next
commit's metadata; :mod:`topologies.engine.consumer`).
Order: batches are produced strictly in the order they were submitted, whatever order
their Serve calls finish in, so results of one partition keep input order with
``max_in_flight`` calls outstanding. Backpressure: with ``max_in_flight`` batches
outstanding, :meth:`RoutePipeline.submit` waits, so the consumer stops taking.
A failed produce is fatal: nothing after it is acked and ``on_fatal`` is called.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from schemas.reply import Reply
from schemas.topology import RouteConfig, Topology
from schemas.tracing import finishing, span_traceparent
from topologies.engine.batch import SCHEMA_OF_KIND, BatchOutput, BatchProcessor, InferenceFailed, Observed
from topologies.engine.executor import AckFn, OrderedExecutor
from topologies.metrics import BATCH_STAGES, METRICS
from topologies.engine.records import InputRecord, OutRecord
from topologies.engine.serve_client import call_with_retries
from topologies.engine.tracing import BatchTracer
from topologies.engine.variants import RouteRollout, shadow_producer_for

__all__ = ["SCHEMA_OF_KIND", "BatchOutput", "InferFn", "ObserveFn", "RoutePipeline", "SendAllFn"]

log = logging.getLogger(__name__)

# ``infer(model, items)``, or ``infer(model, items, trace)`` with the traced events' infer-span traceparents.
InferFn = Callable[..., Awaitable[list[Reply]]]
# ``await send_all(records, ticket) -> delivery futures``; ``ticket``: what ``submit`` was given with the batch.
SendAllFn = Callable[[list[OutRecord], Any], Awaitable[list[Awaitable[Any]]]]
ObserveFn = Callable[[str, int, int, Observed], None]


class RoutePipeline:
    """Processes one route's micro-batches.

    Args:
        topology: the validated topology.
        route: the route this engine serves.
        infer: ``await infer(model_name, items) -> replies`` (a Serve handle call).
        send_all: ``await send_all(records, ticket) -> delivery futures``: publishes a batch's records
            (:mod:`topologies.engine.delivery`; it may drop them when the batch's ticket is no longer current).
        summary_topic: internal topic for per-batch analytics/recommendation summaries.
        on_fatal: called when producing fails, so the worker can stop without committing.
        observe: ``observe(route, n_in, n_dlq, [(task, event, result)])`` after each batch (dashboard state).
        tracer: spans for traced events (:class:`topologies.engine.tracing.BatchTracer`); None: tracing off.
        shadow_producer: builds the plain producer of the route's shadow results (rollouts,
            :mod:`topologies.engine.variants`); None: the default one for ``topology``'s Kafka, and the
            route follows the rollout control topic (given: tests, no Kafka).
    """

    def __init__(self, topology: Topology, route: RouteConfig, *, infer: InferFn, send_all: SendAllFn,
                 summary_topic: str | None,
                 on_fatal: Callable[[BaseException], None] | None = None,
                 observe: ObserveFn | None = None, tracer: BatchTracer | None = None,
                 shadow_producer: Callable[[], Any] | None = None) -> None:
        self.route = route
        self.infer = infer
        self.send_all = send_all
        self.observe = observe
        self.tracer = tracer
        self.processor = BatchProcessor(topology, route, summary_topic)
        in_flight = METRICS.in_flight.labels(route.name)
        self.executor: OrderedExecutor[BatchOutput] = OrderedExecutor(
            route.name, route.max_in_flight, self._publish, on_fatal=on_fatal, on_settled=in_flight.set)
        self._batch_size = METRICS.batch_size.labels(route.name)
        self._events_in = METRICS.events_in.labels(route.name)
        self._stage = {stage: METRICS.batch_stage.labels(route.name, stage)
                       for stage in BATCH_STAGES if stage != "fill"}  # fill: the fetcher's
        # A video route's tracking (topologies.engine.video_state.VideoRoute), set by the route runner.
        self.video: Any = None
        # Variants and shadows of the route's models (None: no rollout); topologies.engine.variants.
        self.rollout = RouteRollout.of(topology, route, infer=infer, summary_topic=summary_topic,
                                       producer_factory=shadow_producer or shadow_producer_for(topology),
                                       control=shadow_producer is None)  # with Kafka: follow rollout changes

    @property
    def failed(self) -> BaseException | None:
        return self.executor.failed

    async def submit(self, records: list[InputRecord], ack: AckFn, ticket: Any = None) -> None:
        """Start processing a batch; returns once it is queued (waits while ``max_in_flight`` are out).

        ``await ack(results)`` runs once every output is acknowledged, with the deliveries' results, flat;
        ``ticket`` goes with the batch's records to ``send_all``.
        """
        self._batch_size.observe(len(records))
        self._events_in.inc(len(records))

        async def ack_flat(results: list[Any]) -> Any:  # a delivery resolves as a list; a traced batch's, as one more
            return await ack(list(_flat(results)))

        turn = self.video.enter() if self.video is not None else None  # tracked in submission order
        try:
            await self.executor.submit(self._stamped(records, ticket, turn), ack_flat)
        except BaseException:
            if turn is not None:
                turn.release()
            raise

    async def _stamped(self, records: list[InputRecord], ticket: Any, turn: Any = None) -> BatchOutput:
        out = await self.process(records, ticket=ticket, turn=turn)
        out.ticket = ticket
        out.done_at = time.perf_counter()
        return out

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted batch has been produced and acknowledged (False: timed out or failed)."""
        return await self.executor.drain(timeout)

    async def process(self, records: list[InputRecord], *, ticket: Any = None, turn: Any = None) -> BatchOutput:
        """Everything one batch produces; never raises (unexpected errors dead-letter the batch).
        ``ticket`` and ``turn``: the batch's ticket and its tracking turn (video routes)."""
        try:
            return await self._process(records, ticket, turn)
        except Exception as err:  # a bug must not lose events: dead-letter them with the reason
            log.exception("route %s: batch failed unexpectedly", self.route.name)
            return self.processor.fail_all(records, err)
        finally:
            if turn is not None:
                turn.release()

    async def _process(self, records: list[InputRecord], ticket: Any = None, turn: Any = None) -> BatchOutput:
        proc, stage = self.processor, self._stage
        traces = self.tracer.begin(records) if self.tracer is not None else []
        t0 = time.perf_counter()
        batch = proc.decode(records)
        t1 = time.perf_counter()
        stage["decode"].observe(t1 - t0)
        replies: dict[str, Any] = {}
        if batch.valid:
            items = proc.items(batch.valid)
            answers = await asyncio.gather(*(self._answer(m, items, batch) for m in self.route.models),
                                           return_exceptions=True)
            for model, answer in zip(self.route.models, answers):
                if isinstance(answer, BaseException) and not isinstance(answer, InferenceFailed):
                    raise answer
                replies[model] = answer
            if self.rollout is not None:  # rollout sums into the summary; shadow work queued, never awaited
                self.rollout.after_batch(batch, replies)
        snapshots = await self.video.apply(batch, replies, ticket, turn) if self.video is not None else []
        t2 = time.perf_counter()
        stage["serve"].observe(t2 - t1)
        out = proc.finish(batch, replies)
        stage["finish"].observe(time.perf_counter() - t2)
        out.records += snapshots
        out.traces = traces
        if self.observe is not None:
            try:
                self.observe(self.route.name, batch.size, len(out.dead), out.observed)
            except Exception:  # the dashboard's bookkeeping must never cost an event
                log.exception("route %s: observe callback failed", self.route.name)
        return out

    async def _answer(self, model: str, items: list[Any], batch: Any) -> Any:
        """One model's answer for the batch: one call, or with a rollout one per variant (in event order)."""
        if self.rollout is not None and self.rollout.handles(model):
            return await self.rollout.call(batch, model, items,
                                           lambda infer, m, part, recs: self._call(m, part, recs, infer))
        return await self._call(model, items, batch.valid)

    async def _call(self, model: str, items: list[Any], valid: list[InputRecord], infer: Any = None) -> Any:
        """One model's call for the batch; with tracing, under ``infer`` spans whose ids the replica gets."""
        tracer, infer = self.tracer, infer or self.infer
        spans = tracer.start_infer(valid, model, len(items)) if tracer is not None else []
        if not spans:
            return await call_with_retries(infer, model, items, self.route)
        with finishing(lambda error: BatchTracer.end_infer(spans, error)):
            return await call_with_retries(infer, model, items, self.route,
                                           trace=[span_traceparent(s).decode() for s in spans])

    async def _publish(self, out: BatchOutput) -> list[Awaitable[Any]]:
        start = time.perf_counter()
        if out.done_at is not None:
            self._stage["wait"].observe(start - out.done_at)
        records = out.records if self.video is None else self.video.publishable(out.records, out.ticket)
        deliveries = await self.send_all(records, out.ticket)
        sent = time.perf_counter()
        self._stage["publish"].observe(sent - start)
        if out.traces:  # the spans end when the broker has acked every record of the batch
            deliveries = [asyncio.ensure_future(BatchTracer.end_after(deliveries, out.traces))]
        return [asyncio.ensure_future(self._acked(deliveries, sent))]

    async def _acked(self, deliveries: list[Awaitable[Any]], since: float) -> list[Any]:
        results = await asyncio.gather(*deliveries)
        self._stage["ack"].observe(time.perf_counter() - since)
        return results


def _flat(results: list[Any]) -> Iterator[Any]:
    for res in results:
        if isinstance(res, list):
            yield from _flat(res)
        else:
            yield res
