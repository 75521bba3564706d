"""The route consumer: per route, one confluent-kafka consumer reads record batches and feeds the route's
engine; one producer writes its outputs; offsets are committed as the route's guarantee says.

Why not Faust agents: Faust's per-event stream machinery stops at about 7,000 events/s on these cores,
before any model call (docs/performance.md). Faust stays the app host (aggregator agent, tables, web
views); the routes bypass its stream layer. Why confluent-kafka: transactions with KIP-447 fencing for
exactly-once, which aiokafka lacks, and faster here (docs/performance.md).

Delivery contract (also when partitions move between workers; :mod:`topologies.engine.delivery`):

- at-least-once: an offset is committed only once every output of every batch before it is acknowledged
  by the broker, every commit interval, on revocation and on a graceful stop;
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
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.aio import AIOConsumer

from schemas.topology import RouteConfig, Topology
from schemas.tracing import tracer
from topologies.engine.delivery import AtLeastOnce, Delivery, ExactlyOnce
from topologies.engine.ledger import PartitionLedger
from topologies.engine.pipeline import InferFn, ObserveFn, RoutePipeline
from topologies.engine.producer import BatchProducer
from topologies.engine.records import InputRecord, OutRecord
from topologies.engine.replays import SummaryScanner, summary_offset
from topologies.engine.topic_limits import read_topic_limits, record_cap
from topologies.engine.tracing import WORKER_SERVICE, BatchTracer
from topologies.engine.video_state import video_route
from topologies.kafka_settings import confluent_config, route_consumer_config, route_producer_config
from topologies.metrics import METRICS, forget

__all__ = ["RouteConsumer", "RouteRunner"]

log = logging.getLogger(__name__)

BLOCKED_POLL_S = 0.01  # with no free slot, librdkafka is still served this often (rebalances, poll interval)


class RouteConsumer:
    """Every route of a worker process, started and stopped together.

    Args:
        topology: the validated topology.
        infer: the model call (Serve handles in production, a fake in tests).
        summary_topic: the aggregator's summary topic (None: no analytics summaries).
        observe: dashboard callback per batch.
        on_fatal: called once when producing fails; the worker must then exit without committing.
        bootstrap: overrides ``kafka.bootstrap_servers``.
        worker_id: names this worker's transactional producers (``INFERTIDE_WORKER_ID``, else the host name);
            keep it stable across restarts and distinct between workers.
    """

    def __init__(self, topology: Topology, *, infer: InferFn, summary_topic: str | None,
                 observe: ObserveFn | None = None, on_fatal: Callable[[BaseException], None] | None = None,
                 bootstrap: str | None = None, worker_id: str | None = None) -> None:
        worker_id = worker_id or os.environ.get("INFERTIDE_WORKER_ID") or socket.gethostname()
        self.failed: BaseException | None = None
        self._on_fatal = on_fatal
        self.runners = [RouteRunner(topology, route, infer=infer, summary_topic=summary_topic, observe=observe,
                                    on_fatal=self._fatal, bootstrap=bootstrap, worker_id=worker_id)
                        for route in topology.routes]
        self.started = False

    async def start(self) -> None:
        outputs = {t for r in self.runners for t in r.pipeline.processor.output_topics()}
        limits = await read_topic_limits(outputs, confluent_config(self.runners[0].topology.kafka,
                                                                   self.runners[0].bootstrap))
        for runner in self.runners:
            await runner.start(limits)
        self.started = True

    async def stop(self) -> None:
        await asyncio.gather(*(r.stop() for r in self.runners))

    @property
    def rebalancing(self) -> bool:
        return any(r.rebalancing for r in self.runners)

    def assigned(self) -> int:
        return sum(len(r.ledger.parts) for r in self.runners)

    def lag(self) -> int:
        return sum(r.lag for r in self.runners)

    def stalled_for(self) -> float:
        """Seconds since the longest-waiting route with lag last moved its committed offsets."""
        now = time.monotonic()
        return max((now - r.delivery.last_progress for r in self.runners if r.lag), default=0.0)

    def _fatal(self, err: BaseException) -> None:
        if self.failed is None:
            self.failed = err
            if self._on_fatal is not None:
                self._on_fatal(err)


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
        self.rebalancing = False
        self.lag = 0
        self._task: asyncio.Task[None] | None = None
        self._carry: list[InputRecord] = []  # fetched while no slot was free: the next batch's first records
        self._paused: set[tuple[str, int]] = set()

    async def start(self, limits: dict[str, int]) -> None:
        caps = [c for t in self.pipeline.processor.output_topics() if (c := record_cap(limits, t)) is not None]
        conf = route_producer_config(self.topology, self.bootstrap, batch_bytes=min([512 * 1024, *caps]),
                                     transactional_id=self.transactional_id if self.exactly_once else None)
        producer = BatchProducer(conf, locate_topic=None if self.exactly_once else self.summary_topic)
        await producer.know_topics(sorted(self.pipeline.processor.output_topics()))
        self.pipeline.processor.set_topic_limits(limits)
        if self.exactly_once:
            self.delivery = ExactlyOnce(self.route.name, self.ledger, producer, on_fatal=self.on_fatal)
        else:
            scanner = SummaryScanner(self.summary_topic, confluent_config(self.topology.kafka, self.bootstrap),
                                     session_timeout_s=self.topology.kafka.session_timeout_s)
            self.delivery = AtLeastOnce(self.route.name, self.ledger, producer, scanner, on_fatal=self.on_fatal)
        await self.delivery.start()
        self.consumer = self.delivery.consumer = AIOConsumer(route_consumer_config(self.topology, self.bootstrap),
                                                             max_workers=2)
        await self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                      on_lost=self._on_lost)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"route-{self.route.name}")
        log.info("route %s started: %s, group %s, topic %s", self.route.name,
                 self.topology.delivery.processing_guarantee, self.topology.kafka.routes_group, self.topic)

    async def stop(self) -> None:
        """Graceful: stop taking, finish (or abandon) in-flight batches, commit, leave the group."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.consumer is not None:
            await self.consumer.close()  # revokes: in-flight batches drain and commit (_on_revoke)
        await self.pipeline.executor.close()
        if self.delivery is not None:
            await self.delivery.close()

    # -- rebalance callbacks (run on the event loop while librdkafka waits) -------------

    async def _on_assign(self, consumer: AIOConsumer, partitions: list[TopicPartition]) -> None:
        mine = [tp for tp in partitions if tp.topic == self.topic]
        if mine:  # a partition paused under an earlier assignment (no free slot then) may keep librdkafka's flag
            await consumer.resume(mine)
        timeout = self.topology.kafka.transaction_timeout_s + 10  # a dead owner's transaction may hold them
        committed = await consumer.committed(mine, timeout=timeout) if mine else []
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
            await self.delivery.commit()
        self._forget(partitions)

    async def _on_lost(self, consumer: AIOConsumer, partitions: list[TopicPartition]) -> None:
        self.rebalancing = True
        log.warning("route %s: partitions lost (this worker's session expired: frozen, paused or cut off); they "
                    "have new owners, so in-flight batches are abandoned, not drained or committed", self.route.name)
        self._forget(partitions)
        await self.delivery.lost()

    def _forget(self, partitions: list[TopicPartition]) -> None:
        self.ledger.revoked()  # acks of anything still in flight now belong to the past
        self._carry, self._paused = [], set()
        for tp in partitions:
            for gauge in (METRICS.assigned, METRICS.consumer_lag, METRICS.committed):
                forget(gauge, tp.topic, str(tp.partition))

    # -- the route's loop: fetch a batch when a slot is free; commit every interval --------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.topology.kafka.commit_every_s(self.exactly_once)
        next_commit = loop.time() + interval
        while True:
            if loop.time() >= next_commit:
                await self.delivery.commit()
                await self._publish_lag()
                next_commit = loop.time() + interval
            try:
                await asyncio.wait_for(self.pipeline.wait_for_slot(), BLOCKED_POLL_S)
            except asyncio.TimeoutError:
                await self._while_blocked()
                continue
            if self._paused:
                await self.consumer.resume([TopicPartition(*tp) for tp in self._paused])
                self._paused = set()
            records = await self._fill(next_commit)
            if records:
                ticket = self.ledger.submitted(records)
                await self.pipeline.submit(records, self._ack_for(ticket), ticket)

    async def _while_blocked(self) -> None:
        """No free slot: pause fetching, but keep serving librdkafka (rebalance callbacks, the poll interval);
        records it still hands out wait in ``_carry`` for the next batch."""
        held = set(self.ledger.parts)
        if held - self._paused:
            await self.consumer.pause([TopicPartition(*tp) for tp in held - self._paused])
            self._paused = held
        generation = self.ledger.generation
        got = self._records(await self.consumer.consume(self.route.batch_size, 0))
        if self.ledger.generation != generation:
            await self._reposition()
        else:
            self._carry += got

    async def _fill(self, until: float) -> list[InputRecord]:
        """One micro-batch: wait (until ``until`` at most) for a first record, then fill it."""
        assert self.consumer is not None
        loop, route, ledger = asyncio.get_running_loop(), self.route, self.ledger
        generation, records, self._carry = ledger.generation, self._carry, []
        deadline = loop.time() + route.batch_within_s
        while len(records) < route.batch_size:
            if not records:
                wait, want = max(0.001, until - loop.time()), 1  # returns as soon as one record is there
            else:
                wait, want = max(0.0, deadline - loop.time()), route.batch_size - len(records)
            got = self._records(await self.consumer.consume(want, wait))
            if ledger.generation != generation:  # the assignment changed inside consume: fetch again from commits
                await self._reposition()
                return []
            if not records:
                if not got:
                    return []
                deadline = loop.time() + route.batch_within_s
                got += self._records(await self.consumer.consume(route.batch_size - len(got), 0))  # queued already
                if ledger.generation != generation:
                    await self._reposition()
                    return []
                records = got
                if len(records) < route.batch_size and not self.pipeline.executor.outstanding:
                    break  # nothing in flight and nothing more queued: don't wait out the window
                continue
            records += got
            if loop.time() >= deadline:
                break
        by_partition: dict[tuple[str, int], list[InputRecord]] = {}
        for rec in records:
            by_partition.setdefault((rec.topic, rec.partition), []).append(rec)
        for tp, recs in by_partition.items():
            ledger.fetched(tp, recs)  # those a previous owner summarized: not counted again
        return records

    def _records(self, messages: list[Any]) -> list[InputRecord]:
        out = []
        for m in messages:
            if m.error() is not None:
                if m.error().fatal():
                    raise KafkaException(m.error())
                log.warning("route %s: consumer: %s", self.route.name, m.error())
                continue
            headers = m.headers()
            out.append(InputRecord(m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                                   dict(headers) if headers else {}))
        return out

    async def _reposition(self) -> None:
        """After a rebalance inside a fetch: drop what it returned and read again from the committed offsets."""
        assert self.consumer is not None
        self._carry, self._paused = [], set()
        for (topic, partition), state in self.ledger.parts.items():
            try:
                await self.consumer.seek(TopicPartition(topic, partition, state.committed))
            except KafkaException as err:  # not fetching yet: it starts from the committed offset anyway
                log.debug("seek %s[%d]: %s", topic, partition, err)

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
            _, hw = await self.consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            high[tp] = hw
        lags = self.ledger.lag(high)
        self.lag = sum(lags.values())
        for (topic, partition), lag in lags.items():
            METRICS.consumer_lag.labels(topic, str(partition)).set(lag)
            METRICS.committed.labels(topic, str(partition)).set(self.ledger.parts[(topic, partition)].committed)
