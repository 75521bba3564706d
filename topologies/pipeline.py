"""One route's processing engine: decode, sample, call the models, build outputs, produce in order, ack.

The engine is independent of Faust: it takes consumed records and two async
callables (``infer`` to reach a Serve deployment, ``send`` to schedule a Kafka
produce and return its delivery future). The Faust agent feeds it micro-batches;
unit tests feed it fakes.

Delivery: a batch's events are acknowledged (made committable) only after every
record it produced (results, dead letters, summary) is acknowledged by the
broker. Order: batches are produced strictly in the order they were taken,
whatever order their Serve calls finish in, so results of one partition keep
input order with ``max_in_flight`` calls outstanding. Backpressure: with
``max_in_flight`` batches outstanding, :meth:`RoutePipeline.submit` waits, so the
agent stops taking and Faust stops fetching.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.codec import EventDecodeError, Limits, decode
from schemas.tasks import EVENT_KINDS, TASKS
from schemas.topology import RouteConfig, Topology
from topologies.analytics import Deltas
from topologies.metrics import METRICS
from topologies.recommend import engagement_weight, item_labels
from topologies.records import InputRecord, OutRecord, dead_letter, now_ms, result_record
from topologies.sampling import FrameSampler

__all__ = ["BatchOutput", "InferFn", "ObserveFn", "RoutePipeline", "SendFn", "SCHEMA_OF_KIND"]

log = logging.getLogger(__name__)

InferFn = Callable[[str, list[Any]], Awaitable[list[dict[str, Any]]]]
SendFn = Callable[[OutRecord], Awaitable[Awaitable[Any]]]
ObserveFn = Callable[[str, int, int, list[tuple[str, Any, dict[str, Any]]]], None]
SCHEMA_OF_KIND = {kind: spec.schema for kind, spec in EVENT_KINDS.items()}


class InferenceFailed(Exception):
    def __init__(self, model: str, attempts: int, cause: BaseException) -> None:
        self.model, self.attempts, self.cause = model, attempts, cause
        super().__init__(f"{model}: {type(cause).__name__}: {cause} (after {attempts} attempts)")


@dataclass
class BatchOutput:
    """What one batch produces; ``ok``/``dead`` hold the offsets of events with a result / a dead letter."""

    records: list[OutRecord] = field(default_factory=list)
    results: int = 0
    ok: set[tuple[int, int]] = field(default_factory=set)
    dead: set[tuple[int, int]] = field(default_factory=set)
    dropped: int = 0

    def dead_letter(self, rec: InputRecord, record: OutRecord) -> None:
        self.records.append(record)
        self.dead.add((rec.partition, rec.offset))


class RoutePipeline:
    """Processes one route's micro-batches.

    Args:
        topology: the validated topology.
        route: the route this engine serves.
        infer: ``await infer(model_name, items) -> replies`` (a Serve handle call).
        send: ``await send(record) -> delivery future`` (schedules a produce).
        summary_topic: internal topic for per-batch analytics/recommendation summaries.
        on_fatal: called when producing fails, so the worker can stop without committing.
        observe: ``observe(route, n_in, n_dlq, [(task, event, result)])`` after each batch (dashboard state).
    """

    def __init__(self, topology: Topology, route: RouteConfig, *, infer: InferFn, send: SendFn,
                 summary_topic: str | None, on_fatal: Callable[[BaseException], None] | None = None,
                 observe: ObserveFn | None = None) -> None:
        self.topology = topology
        self.route = route
        self.infer = infer
        self.send = send
        self.summary_topic = summary_topic
        self.on_fatal = on_fatal
        self.observe = observe
        self.schema = SCHEMA_OF_KIND[route.kind]
        self.limits = Limits.from_config(topology.limits)
        self.dlq_topic = topology.topics.dlq
        self.tasks = {m: topology.models[m].task for m in route.models}
        self.outputs = {m: topology.output_topic(route, m) for m in route.models}
        self.sampler = FrameSampler(route.sampling) if route.kind == "video" and route.sampling else None
        self._slots = asyncio.Semaphore(route.max_in_flight)
        self._queue: asyncio.Queue[tuple[asyncio.Task[BatchOutput], Callable[[], Awaitable[Any]]]] = asyncio.Queue()
        self._sequencer: asyncio.Task[None] | None = None
        self._outstanding = 0
        self.failed: BaseException | None = None

    # -- the ordered, bounded submit path ------------------------------------------------

    async def submit(self, records: list[InputRecord], ack: Callable[[], Awaitable[Any]]) -> None:
        """Start processing a batch; returns once it is queued (waits while ``max_in_flight`` are out)."""
        if self.failed is not None:
            raise RuntimeError("route pipeline stopped after a produce failure") from self.failed
        await self._slots.acquire()
        self._outstanding += 1
        METRICS.in_flight.labels(self.route.name).set(self._outstanding)
        METRICS.batch_size.labels(self.route.name).observe(len(records))
        METRICS.events_in.labels(self.route.name).inc(len(records))
        task = asyncio.ensure_future(self.process(records))
        await self._queue.put((task, ack))
        if self._sequencer is None or self._sequencer.done():
            self._sequencer = asyncio.ensure_future(self._sequence())

    async def drain(self) -> None:
        """Wait until every submitted batch has been produced and acknowledged."""
        while self._outstanding and self.failed is None:
            await asyncio.sleep(0.01)

    async def _sequence(self) -> None:
        while True:
            task, ack = await self._queue.get()
            try:
                out = await task
                futures = [await self.send(r) for r in out.records]
                await asyncio.gather(*futures)
                await ack()
            except BaseException as err:  # produce failed: never ack, stop the worker
                self.failed = err
                log.critical("route %s: producing results failed, stopping without commit: %r",
                             self.route.name, err)
                if self.on_fatal:
                    self.on_fatal(err)
                raise
            finally:
                self._outstanding -= 1
                METRICS.in_flight.labels(self.route.name).set(self._outstanding)
                self._slots.release()

    # -- processing one batch ------------------------------------------------------------

    async def process(self, records: list[InputRecord]) -> BatchOutput:
        """Everything one batch produces; never raises (unexpected errors dead-letter the batch)."""
        try:
            return await self._process(records)
        except Exception as err:  # a bug must not lose events: dead-letter them with the reason
            log.exception("route %s: batch failed unexpectedly", self.route.name)
            out = BatchOutput()
            for rec in records:
                out.dead_letter(rec, dead_letter(rec, topic=self.dlq_topic, route=self.route.name,
                                                 stage="infer", error=err))
                self._count_dlq("infer", type(err).__name__)
            return out

    async def _process(self, records: list[InputRecord]) -> BatchOutput:
        out = BatchOutput()
        deltas = Deltas()
        name = self.route.name
        observed: list[tuple[str, Any, dict[str, Any]]] = []
        deltas.add("events", name, "in", len(records))
        valid = self._decode_and_sample(records, out, deltas)
        replies = await asyncio.gather(*(self._call(m, valid) for m in self.route.models)) if valid else []
        engagements: list[dict[str, Any]] = []
        items: dict[str, dict[str, float]] = {}
        for model, answer in zip(self.route.models, replies):
            task, topic = self.tasks[model], self.outputs[model]
            if isinstance(answer, InferenceFailed):
                for rec in valid:
                    out.dead_letter(rec, dead_letter(rec, topic=self.dlq_topic, route=name, stage="infer",
                                                     error=answer, attempts=answer.attempts,
                                                     error_class=type(answer.cause).__name__))
                    self._count_dlq("infer", type(answer.cause).__name__)
                continue
            reply_list, call_ms = answer
            for rec, reply in zip(valid, reply_list):
                if not reply.get("ok"):
                    out.dead_letter(rec, dead_letter(rec, topic=self.dlq_topic, route=name, stage="infer",
                                                     error=reply.get("error", "model error"),
                                                     error_class=reply.get("error_class", "ModelError")))
                    self._count_dlq("infer", reply.get("error_class", "ModelError"))
                    continue
                # Time in Serve beyond the model itself: batching wait, queueing, transport.
                queue_ms = call_ms - float(reply.get("inference_ms", 0.0))
                out.records.append(result_record(rec, topic=topic, task=task, reply=reply, queue_ms=queue_ms))
                out.results += 1
                out.ok.add((rec.partition, rec.offset))
                METRICS.results_out.labels(name, topic).inc()
                observed.append((task, rec.event, reply["result"]))
                self._account(rec, task, reply["result"], deltas, engagements, items,
                              primary=model == self.route.models[0])
        # Counted per event: "out" has at least one result, "dlq" at least one dead letter
        # (an image can have both when one of its two models fails).
        if out.ok:
            deltas.add("events", name, "out", len(out.ok))
        if out.dead:
            deltas.add("events", name, "dlq", len(out.dead))
        if self.observe is not None:
            try:
                self.observe(name, len(records), len(out.dead), observed)
            except Exception:  # the dashboard's bookkeeping must never cost an event
                log.exception("route %s: observe callback failed", name)
        if self.summary_topic:
            summary = {"route": name, "ts": now_ms(), "metrics": deltas.as_dict(),
                       "engagements": engagements, "items": [{"item_id": k, "labels": v} for k, v in items.items()]}
            out.records.append(OutRecord(self.summary_topic, name.encode(), orjson.dumps(summary)))
        return out

    def _decode_and_sample(self, records: list[InputRecord], out: BatchOutput, deltas: Deltas) -> list[InputRecord]:
        valid = []
        now = now_ms()
        for rec in records:
            try:
                rec.event = decode(rec.value, self.schema, self.limits)
            except EventDecodeError as err:
                out.dead_letter(rec, dead_letter(rec, topic=self.dlq_topic, route=self.route.name,
                                                 stage="decode", error=err))
                self._count_dlq("decode", "EventDecodeError")
                continue
            if self.sampler is not None:
                ev = rec.event
                decision = self.sampler.decide(ev.stream_id, ev.frame_index, ev.pts_ms, ev.ts, now)
                if decision != "keep":
                    reason = "lag" if decision == "lag" else "sampled"
                    METRICS.frames_dropped.labels(self.route.name, reason).inc()
                    deltas.add("events", self.route.name, f"dropped_{reason}")
                    out.dropped += 1
                    continue
            valid.append(rec)
        return valid

    def _count_dlq(self, stage: str, reason: str) -> None:
        METRICS.dlq.labels(self.route.name, stage, reason).inc()

    def _items_for(self, model: str, valid: list[InputRecord]) -> list[Any]:
        if self.route.kind == "text":
            return [rec.event.text for rec in valid]
        return [rec.event.image.model_dump(include={"data", "uri"}) for rec in valid]

    async def _call(self, model: str, valid: list[InputRecord]) -> tuple[list[dict[str, Any]], float] | InferenceFailed:
        """One Serve call with retry and backoff for transient failures (timeouts, replica restarts).

        Returns the replies and the successful call's duration in ms, or the failure after the last attempt.
        """
        items = self._items_for(model, valid)
        route = self.route
        last: BaseException | None = None
        for attempt in range(1, route.max_attempts + 1):
            try:
                t0 = time.monotonic()
                replies = await asyncio.wait_for(self.infer(model, items), route.call_timeout_s)
                elapsed = time.monotonic() - t0
                if len(replies) != len(items):
                    raise RuntimeError(f"{model} returned {len(replies)} replies for {len(items)} items")
                METRICS.serve_call.labels(route.name, model).observe(elapsed)
                return replies, elapsed * 1000
            except Exception as err:  # transient or not, retried a bounded number of times
                last = err
                if attempt < route.max_attempts:
                    METRICS.serve_retries.labels(route.name, model).inc()
                    log.warning("route %s: %s call failed (attempt %d/%d): %r", route.name, model,
                                attempt, route.max_attempts, err)
                    await asyncio.sleep(route.retry_backoff_s * 2 ** (attempt - 1))
        assert last is not None
        return InferenceFailed(model, route.max_attempts, last)

    def _account(self, rec: InputRecord, task: str, result: dict[str, Any], deltas: Deltas,
                 engagements: list[dict[str, Any]], items: dict[str, dict[str, float]], *, primary: bool) -> None:
        """Analytics deltas and recommendation signals of one successful result."""
        ev, name = rec.event, self.route.name
        if primary:  # one latency sample and one engagement per event, not per model
            deltas.latency(name, float(now_ms() - ev.ts))
            METRICS.e2e_latency.labels(name).observe(max(0.0, (now_ms() - ev.ts) / 1000))
        for delta in TASKS[task].deltas(result, name, getattr(ev, "stream_id", None)):
            deltas.add(*delta)
        labels = item_labels(task, result)
        if ev.item_id and labels:
            merged = items.setdefault(ev.item_id, {})
            for k, v in labels.items():
                merged[k] = max(merged.get(k, 0.0), v)
        if primary and ev.user_id and ev.item_id:
            engagements.append({"user_id": ev.user_id, "item_id": ev.item_id, "event_id": ev.event_id,
                                "weight": engagement_weight(task, result)})
