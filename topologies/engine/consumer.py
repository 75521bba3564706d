"""The route consumer: per route, one confluent-kafka consumer reads record batches (:mod:`.fetch`) and feeds
the route's engine; one producer writes its outputs; offsets are committed as the route's guarantee says
(:mod:`.delivery`). A worker runs one per route (:mod:`.routes`).

Why not Faust agents: Faust's per-event stream machinery stops at about 7,000 events/s on these cores,
before any model call (docs/performance.md). Faust stays the app host (services, internal topics, web
views); the routes bypass its stream layer. Why confluent-kafka: transactions with KIP-447 fencing for
exactly-once, which aiokafka lacks, and faster here (docs/performance.md).

Delivery contract (also when partitions move between workers; :mod:`topologies.engine.delivery`):

- at-least-once: an offset is committed once every output of every batch before it is acknowledged, every
  commit interval (not waited for), on revocation and on a graceful stop (waited for);
- exactly-once: outputs and input offsets are committed in one transaction per commit interval (and on
  revocation and stop); a fenced zombie's transaction is refused by the broker and aborted;
- the :class:`topologies.engine.ledger.PartitionLedger` holds every per-partition fact and decides what
  may be committed; on revocation the route stops taking, drains in-flight batches (bounded by
  ``kafka.revoke_drain_timeout_s``) and commits; batches that did not finish are abandoned (never
  committed; at-least-once: they may still produce results, but no summary; exactly-once: nothing);
- backpressure: a route fetches its next batch only when its engine has a free slot (``max_in_flight``);
  librdkafka's prefetch is bounded, so a slow model stops fetching;
- micro-batches: up to ``batch_size`` records within ``batch_within_s`` of the first, closed early when
  the fetch comes back short and nothing is in flight (a lone event does not wait out the window);
- a failed produce is fatal (``on_fatal``): nothing later is committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.aio import AIOConsumer

from schemas.topology import RouteConfig, Topology
from schemas.tracing import tracer
from topologies.engine.consumer_watch import WatchedConsumer, watch
from topologies.engine.delivery import AtLeastOnce, Delivery, ExactlyOnce
from topologies.engine.fetch import Fetcher
from topologies.engine.ledger import PartitionLedger
from topologies.engine.offsets import committed_offsets
from topologies.engine.pipeline import InferFn, ObserveFn, RoutePipeline
from topologies.engine.producer import BatchProducer
from topologies.engine.records import OutRecord
from topologies.engine.replays import SummaryScanner, summary_offset
from topologies.engine.topic_limits import batch_bytes
from topologies.engine.tracing import WORKER_SERVICE, BatchTracer
from topologies.engine.video_state import video_route
from topologies.kafka_settings import confluent_config, route_consumer_config, route_producer_config
from topologies.metrics import METRICS, forget

__all__ = ["RouteRunner"]

log = logging.getLogger(__name__)

STOP_WAIT_S = 5.0  # a stop lets the route's loop finish its step (a commit, a fetch) this long


class RouteRunner:
    """One route: its consumer, producer, ledger, engine and guarantee."""

    def __init__(self, topology: Topology, route: RouteConfig, *, infer: InferFn, summary_topic: str | None,
                 observe: ObserveFn | None, on_fatal: Callable[[BaseException], None], bootstrap: str | None,
                 worker_id: str) -> None:
        self.topology, self.route, self.bootstrap, self.on_fatal = topology, route, bootstrap, on_fatal
        self.topic = topology.input_topic(route)
        self.exactly_once = topology.delivery.processing_guarantee == "exactly-once"
        self.summary_topic = summary_topic
        self.transactional_id = f"{topology.kafka.routes_group}-{route.name}-{worker_id}"
        otel = tracer(WORKER_SERVICE)
        spans = BatchTracer(otel, route.name, topology.kafka.routes_group) if otel is not None else None
        self.pipeline = RoutePipeline(topology, route, infer=infer, send_all=self._publish, summary_topic=summary_topic,
                                      on_fatal=on_fatal, observe=observe, tracer=spans)
        self.ledger = PartitionLedger(exactly_once=self.exactly_once)
        self.pipeline.video = video_route(topology, route, self.ledger, confluent_config(topology.kafka, bootstrap))
        self.delivery: Delivery = None  # type: ignore[assignment]  # built in start(), with the producer
        self.consumer: AIOConsumer | None = None
        self.rebalancing = True  # until the group's first assignment: a worker is not ready before every route is
        self.lag = 0
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self.fetcher: Fetcher = None  # type: ignore[assignment]  # built in start(), with the consumer

    async def start(self, limits: dict[str, int]) -> None:
        outputs = self.pipeline.processor.output_topics()
        conf = route_producer_config(self.topology, self.bootstrap, batch_bytes=batch_bytes(limits, outputs),
                                     transactional_id=self.transactional_id if self.exactly_once else None)
        producer = BatchProducer(conf, locate_topic=None if self.exactly_once else self.summary_topic)
        await producer.know_topics(sorted(self.pipeline.processor.output_topics()))
        self.pipeline.processor.set_topic_limits(limits)
        if self.exactly_once:
            self.delivery = ExactlyOnce(self.route.name, self.ledger, producer, on_fatal=self.on_fatal,
                                        retry_for_s=self.topology.kafka.transaction_timeout_s)
        else:
            scanner = SummaryScanner(self.summary_topic, confluent_config(self.topology.kafka, self.bootstrap),
                                     session_timeout_s=self.topology.kafka.session_timeout_s)
            self.delivery = AtLeastOnce(self.route.name, self.ledger, producer, scanner, on_fatal=self.on_fatal)
        await self.delivery.start()
        conf = route_consumer_config(self.topology, self.bootstrap) | self.delivery.consumer_callbacks()
        watched = WatchedConsumer(AIOConsumer(conf, max_workers=2))
        self.consumer = self.delivery.consumer = watched  # type: ignore[assignment]  # every call watched
        self.fetcher = Fetcher(self.consumer, self.ledger, self.route, self.pipeline.executor)
        await self.consumer.subscribe([self.topic], on_assign=watched.callback(self._on_assign),
                                      on_revoke=watched.callback(self._on_revoke),
                                      on_lost=watched.callback(self._on_lost))
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name=f"route-{self.route.name}")
        self._task.add_done_callback(self._ended)
        self._watch = loop.create_task(watch(self.route.name, watched, self.on_fatal), name=f"watch-{self.route.name}")
        log.info("route %s started: %s, group %s, topic %s", self.route.name,
                 self.topology.delivery.processing_guarantee, self.topology.kafka.routes_group, self.topic)

    async def stop(self) -> None:
        """Graceful: stop taking, finish (or abandon) in-flight batches, commit, leave the group."""
        if self._watch is not None:
            self._watch.cancel()
        if self._task is not None:  # between two steps, not in the middle of a commit or a transactional call
            self._stopping = True
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_WAIT_S)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - a failed loop was reported by _ended
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        if self.consumer is not None:
            await self.consumer.close()  # revokes: in-flight batches drain and commit (_on_revoke)
        await self.pipeline.executor.close()
        if self.pipeline.rollout is not None:
            await self.pipeline.rollout.close()  # shadow queues: what they hold is dropped, as documented
        if self.delivery is not None:
            await self.delivery.close()

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The route's loop ends only when stopped: anything else stops the worker (a supervisor
        restarts it from the committed offsets) instead of leaving the route silently stalled."""
        if not task.cancelled() and task.exception() is not None and not self._stopping:
            err = task.exception()
            log.critical("route %s: its loop failed: %r", self.route.name, err, exc_info=err)
            self.on_fatal(err)  # type: ignore[arg-type]

    # -- rebalance callbacks (run on the event loop while librdkafka waits) -------------

    async def _on_assign(self, consumer: AIOConsumer, partitions: list[TopicPartition]) -> None:
        mine = [tp for tp in partitions if tp.topic == self.topic]
        if mine:  # a partition paused under an earlier assignment (no free slot then) may keep librdkafka's flag
            await consumer.resume(mine)
        timeout = self.topology.kafka.transaction_timeout_s + 10  # a dead owner's transaction may hold them
        committed = await committed_offsets(consumer, mine, timeout, route=self.route.name) if mine else []
        offsets = {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None, tp.metadata) for tp in committed}
        upto = {}
        if isinstance(self.delivery, AtLeastOnce):
            await self.delivery.producer.flush()  # our own summaries still buffered are read too
            upto = await self.delivery.scanner.learn(offsets)
        self.ledger.assigned(offsets, upto)
        await self.delivery.assigned()
        for tp in mine:
            METRICS.assigned.labels(tp.topic, str(tp.partition)).set(1)
        self.rebalancing = False
        log.info("route %s assigned: %s", self.route.name, ", ".join(f"{t}[{p}]" for t, p in sorted(offsets)) or "none")

    async def _on_revoke(self, consumer: AIOConsumer, partitions: list[TopicPartition]) -> None:
        self.rebalancing = True
        timeout = self.topology.kafka.revoke_drain_timeout_s
        if self.ledger.parts and self.pipeline.failed is None:
            if not await self.pipeline.drain(timeout):
                log.warning("route %s: some in-flight batches did not finish within %.0fs; abandoned without commit "
                            "(their events will be read again)", self.route.name, timeout)
            await self.delivery.commit(final=True)
        self._forget(partitions)

    async def _on_lost(self, consumer: AIOConsumer, partitions: list[TopicPartition]) -> None:
        self.rebalancing = True
        log.warning("route %s: partitions lost (this worker's session expired: frozen, paused or cut off); they "
                    "have new owners, so in-flight batches are abandoned, not drained or committed", self.route.name)
        self._forget(partitions)
        await self.delivery.lost()

    def _forget(self, partitions: list[TopicPartition]) -> None:
        self.ledger.revoked()  # acks of anything still in flight now belong to the past
        if self.fetcher is not None:
            self.fetcher.forget()
        for tp in partitions:
            for gauge in (METRICS.assigned, METRICS.consumer_lag, METRICS.committed):
                forget(gauge, tp.topic, str(tp.partition))

    # -- the route's loop: fetch a batch when a slot is free; commit every interval --------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.topology.kafka.commit_every_s(self.exactly_once)
        next_commit = loop.time() + interval
        while not self._stopping:
            if loop.time() >= next_commit:
                await self.delivery.commit()
                await self._publish_lag()
                next_commit = loop.time() + interval
            if not await self.fetcher.slot_free(next_commit):
                continue
            records = await self.fetcher.batch(next_commit)
            if records:
                ticket = self.ledger.submitted(records)
                await self.pipeline.submit(records, self._ack_for(ticket), ticket)

    def _ack_for(self, ticket: Any) -> Callable[[list[Any]], Any]:
        async def ack(results: list[Any]) -> None:  # results: the batch's located deliveries, flat
            self.ledger.acked(ticket, summary_offset(results, self.summary_topic))

        return ack

    async def _publish(self, records: list[OutRecord], ticket: Any) -> list[Any]:
        return await self.delivery.publish(records, ticket)

    async def _publish_lag(self) -> None:
        assert self.consumer is not None
        high = {}
        for tp in list(self.ledger.parts):
            try:
                _, hw = await self.consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            except KafkaException:  # taken away meanwhile
                continue
            high[tp] = hw
        lags = self.ledger.lag(high)
        self.lag = sum(lags.values())
        for (topic, partition), lag in lags.items():
            METRICS.consumer_lag.labels(topic, str(partition)).set(lag)
            METRICS.committed.labels(topic, str(partition)).set(self.ledger.parts[(topic, partition)].committed)
