"""The route consumer: reads record batches of every route's input topic straight from Kafka
(aiokafka ``getmany``), feeds each route's engine, and commits offsets only after results are acked.

Why not Faust agents: Faust's per-event stream machinery stops at about 7,000 events/s on
these cores, before any model call (measured: docs/performance.md). Faust stays the app host
(aggregator agent, tables, web views); the routes bypass its stream layer.

Delivery contract (at-least-once, also when partitions move between workers):

- Offsets are committed only for batches whose every output record is acknowledged by the
  broker, in submit order per route, so a committed offset never passes an event whose
  results were not produced. Commits go out every ``kafka.commit_interval_s``, on revocation
  and on a graceful stop.
- On revocation (any rebalance: aiokafka's protocol is eager) the consumer stops handing out
  records, waits for each route's in-flight batches to be acked (bounded by
  ``kafka.revoke_drain_timeout_s``), commits, and forgets what it held. Batches that did not
  finish in time are abandoned: they may still produce (duplicates), but their acks belong to
  an old assignment epoch and are never committed. Records fetched but not yet submitted are
  dropped; the partition's next owner (maybe us) re-reads them from the committed offset.
- Backpressure: a route fetches its next batch only when its engine has a free slot
  (``max_in_flight``); aiokafka's fetch buffer is bounded, so a slow model stops fetching.
- A failed produce is fatal (``on_fatal``): nothing later is committed.

Summaries and replays (analytics count an event once, also when a dead worker's partitions move):
a batch's summary names its offset ranges; a commit's metadata is the summary-topic offset of the
partition's last acked summary. On assignment, before fetching, the consumer scans the summary topic
from there (:class:`topologies.engine.replays.Replays`, bounded in time): records a previous owner already
summarized past its commit are reprocessed for results (duplicates, as above) but marked
``counted=False``, so new summaries leave them out. On timeout or error they are counted again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from schemas.topology import RouteConfig, Topology
from schemas.tracing import tracer
from topologies.kafka_settings import aiokafka_kwargs, group_generation
from topologies.metrics import METRICS, forget
from topologies.engine.pipeline import InferFn, ObserveFn, RoutePipeline
from topologies.engine.producer import BatchProducer
from topologies.engine.records import InputRecord, OutRecord
from topologies.engine.replays import REFRESH_S, Replays
from topologies.engine.topic_limits import read_topic_limits
from topologies.engine.tracing import WORKER_SERVICE, BatchTracer

__all__ = ["RouteConsumer"]

log = logging.getLogger(__name__)


@dataclass
class _Route:
    config: RouteConfig
    topic: str
    pipeline: RoutePipeline
    assigned: asyncio.Event = field(default_factory=asyncio.Event)
    partitions: list[TopicPartition] = field(default_factory=list)


class RouteConsumer(ConsumerRebalanceListener):
    """One consumer and one producer per worker process, for all routes.

    Args:
        topology: the validated topology.
        infer: the model call (Serve handles in production, a fake in tests).
        summary_topic: the aggregator's summary topic (None: no analytics summaries).
        observe: dashboard callback per batch.
        on_fatal: called once when producing fails; the worker must then exit without committing.
        bootstrap: overrides ``kafka.bootstrap_servers``.
    """

    def __init__(self, topology: Topology, *, infer: InferFn, summary_topic: str | None,
                 observe: ObserveFn | None = None, on_fatal: Callable[[BaseException], None] | None = None,
                 bootstrap: str | None = None) -> None:
        self.topology = topology
        self.group = topology.kafka.routes_group
        self.on_fatal = on_fatal
        self._kw = aiokafka_kwargs(topology.kafka, bootstrap)
        self.routes: dict[str, _Route] = {}
        otel = tracer(WORKER_SERVICE)
        for route in topology.routes:
            spans = BatchTracer(otel, route.name, self.group) if otel is not None else None
            pipe = RoutePipeline(topology, route, infer=infer, send_all=self._send_all, summary_topic=summary_topic,
                                 on_fatal=self._fatal, observe=observe, tracer=spans)
            self.routes[topology.input_topic(route)] = _Route(route, topology.input_topic(route), pipe)
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._batches: BatchProducer | None = None
        self.failed: BaseException | None = None
        self.rebalancing = False
        self.last_commit_progress = time.monotonic()
        self._epoch = 0
        self._acked: dict[TopicPartition, int] = {}  # next offset to commit, per partition
        # Commit metadata, and what previous owners summarized (looked up within half a session: no heartbeats then).
        self.replays = Replays(summary_topic, self._kw, session_timeout_s=topology.kafka.session_timeout_s)
        self._committed: dict[TopicPartition, int] = {}
        self._commit_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        k = self.topology.kafka
        max_batch = max(r.batch_size for r in self.topology.routes)
        self.producer = AIOKafkaProducer(
            acks="all", enable_idempotence=True, linger_ms=int(k.producer_linger_s * 1000),
            max_batch_size=512 * 1024, max_request_size=self.topology.max_message_bytes(), **self._kw)
        self.consumer = AIOKafkaConsumer(
            group_id=self.group, enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=int(k.session_timeout_s * 1000),
            heartbeat_interval_ms=int(k.heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(max(k.revoke_drain_timeout_s + 10, k.session_timeout_s) * 1000),
            max_poll_records=max_batch, **self._kw)
        self.consumer.subscribe(topics=list(self.routes), listener=self)
        await self.producer.start()
        limits = await read_topic_limits({t for r in self.routes.values() for t in r.pipeline.processor.output_topics()},
                                         self._kw)
        for r in self.routes.values():
            r.pipeline.processor.set_topic_limits(limits)
        self._batches = BatchProducer(self.producer, limits)
        await self.replays.start()
        await self.consumer.start()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._route_loop(r), name=f"route-{r.config.name}")
                       for r in self.routes.values()]
        self._tasks.append(loop.create_task(self._commit_loop(), name="route-commits"))
        log.info("route consumer started: group %s, topics %s", self.group, sorted(self.routes))

    async def stop(self) -> None:
        """Graceful: stop taking, finish (or abandon) in-flight batches, commit, leave the group."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.consumer is not None and self.failed is None:
            await self._drain_and_commit("stop")
        for r in self.routes.values():
            await r.pipeline.executor.close()
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()
        await self.replays.stop()

    # -- rebalance listener (called by aiokafka's coordinator) --------------------------

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.rebalancing = True
        if revoked and self._expelled():
            log.warning("this worker was expelled from group %s (its session expired: frozen, paused or cut off); "
                        "its partitions already have new owners, so in-flight batches are abandoned, not drained: "
                        "their results may still be produced, their summaries are not", self.group)
        elif revoked and self.failed is None:
            await self._drain_and_commit("rebalance")
        self._epoch += 1  # acks of anything still in flight now belong to the past
        for r in self.routes.values():
            r.pipeline.abandon_in_flight()
        self._acked.clear()
        self._committed.clear()
        self.replays.forget()
        for r in self.routes.values():
            r.partitions = []
            r.assigned.clear()
        for tp in revoked:
            for gauge in (METRICS.assigned, METRICS.consumer_lag, METRICS.committed):
                forget(gauge, tp.topic, str(tp.partition))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        assert self.consumer is not None  # awaited before fetching resumes, so the route loops wait for this
        assert self.producer is not None  # flushed first: a summary of ours still in its buffer is scanned too
        # The committed offsets it read spare _learn_committed a request per partition.
        self._committed.update(await self.replays.learn(
            self.consumer, sorted(tp for tp in assigned if tp.topic in self.routes), flush=self.producer.flush))
        for tp in sorted(assigned):
            r = self.routes.get(tp.topic)
            if r is not None:
                r.partitions.append(tp)
            METRICS.assigned.labels(tp.topic, str(tp.partition)).set(1)
        for r in self.routes.values():
            if r.partitions:
                r.assigned.set()
        self.rebalancing = False
        self.last_commit_progress = time.monotonic()
        log.info("route partitions assigned: %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned))
                 or "none")

    async def _drain_and_commit(self, why: str) -> None:
        timeout = self.topology.kafka.revoke_drain_timeout_s
        results = await asyncio.gather(*(r.pipeline.drain(timeout) for r in self.routes.values()))
        if not all(results):
            log.warning("%s: some in-flight batches did not finish within %.0fs; abandoned without commit "
                        "(their events will be read again)", why, timeout)
        await self._commit()

    # -- consuming -----------------------------------------------------------------------

    async def _route_loop(self, r: _Route) -> None:
        assert self.consumer is not None
        route, pipe, loop = r.config, r.pipeline, asyncio.get_running_loop()
        while True:
            await pipe.wait_for_slot()
            if not r.partitions:
                await r.assigned.wait()
                continue
            records: list[InputRecord] = []
            epoch, deadline = -1, 0.0
            while len(records) < route.batch_size:
                timeout = route.batch_within_s if not records else deadline - loop.time()
                if records and timeout <= 0:
                    break
                got = await self.consumer.getmany(*r.partitions, timeout_ms=max(1, int(timeout * 1000)),
                                                  max_records=route.batch_size - len(records))
                if not r.partitions or self.rebalancing:
                    break  # the assignment changed while we waited: what we hold is dropped below
                if not got:
                    if records:
                        break
                    continue
                if not records:
                    epoch, deadline = self._epoch, loop.time() + route.batch_within_s
                elif epoch != self._epoch:
                    records = []  # fetched under an older assignment: let its next owner re-read them
                    break
                for tp, batch in got.items():
                    fetched = [InputRecord(m.topic, m.partition, m.offset, m.key, m.value,
                                           dict(m.headers) if m.headers else {}) for m in batch]
                    self.replays.mark(tp, fetched)  # those a previous owner summarized: not counted again
                    records.extend(fetched)
            if not records or epoch != self._epoch or self.rebalancing:
                continue
            await pipe.submit(records, self._ack_for(records, epoch))

    def _ack_for(self, records: list[InputRecord], epoch: int) -> Callable[[list[Any]], Any]:
        ends: dict[TopicPartition, int] = {}
        for rec in records:
            ends[TopicPartition(rec.topic, rec.partition)] = rec.offset + 1
        self.replays.submitted(ends)  # in flight until acked: its summary may land anywhere after now

        async def ack(results: list[Any]) -> None:
            if epoch != self._epoch or self._expelled():
                return  # acked after its partitions were revoked (or given away: maybe without its summary)
            acked = self._acked
            for tp, end in ends.items():
                if end > acked.get(tp, -1):
                    acked[tp] = end
            self.replays.acked(ends, results)  # where its summary landed: the next commit's metadata

        return ack

    async def _send_all(self, records: list[OutRecord]) -> list[Any]:
        assert self._batches is not None
        if self._expelled():  # a zombie's summary would count events the partitions' new owner counts too
            records = [r for r in records if r.topic != self.replays.summary_topic]
        return await self._batches.send_all(records)

    def _expelled(self) -> bool:
        """Whether the group coordinator no longer knows this member (aiokafka resets its generation)."""
        return self.consumer is not None and group_generation(self.consumer) < 0

    # -- committing ----------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        interval, loop = self.topology.kafka.commit_interval_s, asyncio.get_running_loop()
        next_refresh = loop.time() + REFRESH_S
        while True:
            await asyncio.sleep(interval)
            if not self.rebalancing:
                refresh = bool(self.replays.uncommitted) or loop.time() >= next_refresh
                await self._commit(refresh=refresh)
                next_refresh = loop.time() + REFRESH_S if refresh else next_refresh
                await self._learn_committed()
            self.lag(publish=True)

    async def _commit(self, *, refresh: bool = False) -> None:
        """Commit acked progress; ``refresh``: also move idle partitions' summary offsets up (replays)."""
        assert self.consumer is not None
        async with self._commit_lock:
            assignment = self.consumer.assignment()
            commits = {tp: (off, self.replays.metadata(tp)) for tp, off in self._acked.items()
                       if off > self._committed.get(tp, -1) and tp in assignment}
            if refresh and self.failed is None:
                held = {tp for tp in assignment if tp.topic in self.routes} - commits.keys()
                commits.update(await self.replays.refreshes(self._committed, held))
            if not commits or self.failed is not None or self._expelled():
                return  # expelled: the group gave the partitions away; a commit now could still be accepted
            try:
                await self.consumer.commit(commits)
            except (KafkaError, AssertionError) as err:  # the group moved on: the next owner re-reads
                log.warning("commit of %d partitions failed (%r); their events will be read again", len(commits), err)
                return
            self.replays.did_commit(commits)
            offsets = {tp: off for tp, (off, _) in commits.items()}
            if any(off > self._committed.get(tp, -1) for tp, off in offsets.items()):  # not a bare refresh
                self.last_commit_progress = time.monotonic()
            self._committed.update(offsets)
            for tp, off in offsets.items():
                METRICS.committed.labels(tp.topic, str(tp.partition)).set(off)

    async def _learn_committed(self) -> None:
        """The group's committed offsets of newly held partitions (for lag and health), read once."""
        assert self.consumer is not None
        epoch = self._epoch
        for tp in self.consumer.assignment() - self._committed.keys():
            try:
                committed = await self.consumer.committed(tp)
            except KafkaError:
                return
            if epoch != self._epoch:
                return
            self._committed.setdefault(tp, committed or 0)

    def lag(self, *, publish: bool = False) -> int:
        """Events not yet committed on the partitions this worker holds (from the last fetch's highwater);
        ``publish``: also set each partition's lag gauge."""
        assert self.consumer is not None
        total = 0
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is not None:
                lag = max(0, high - self._committed.get(tp, 0))
                total += lag
                if publish:
                    METRICS.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
        return total

    def _fatal(self, err: BaseException) -> None:
        if self.failed is None:
            self.failed = err
            if self.on_fatal is not None:
                self.on_fatal(err)
