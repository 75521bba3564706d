"""Fetching one route's micro-batches from its confluent-kafka consumer.

A batch is up to ``batch_size`` records within ``batch_within_s`` of the first one; it closes early when
the fetch comes back short and nothing is in flight (a lone event does not wait out the window, as
Triton's batcher does with an empty queue). The first wait returns as soon as one record is there.

librdkafka serves rebalance callbacks inside ``consume``, so a consume call can straddle an assignment
change: its records (and any fetched before) are then dropped and the held partitions are sought back
to their committed offsets (the ledger's generation tells).

With no free slot the route waits, and librdkafka's prefetch (bounded by ``queued.*``) keeps its records.
Only a route blocked longer than ``PAUSE_AFTER_S`` (a model stuck, a replica gone) pauses its partitions
and serves librdkafka every ``BLOCKED_POLL_S`` (rebalances, ``max.poll.interval.ms``); records it still
hands out are carried into the next batch. librdkafka purges a paused partition's prefetched records, so
pausing at every full slot made each batch wait for a fetch from the broker (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from schemas.topology import RouteConfig
from topologies.engine.executor import OrderedExecutor
from topologies.engine.ledger import TP, PartitionLedger
from topologies.engine.records import InputRecord
from topologies.metrics import METRICS

__all__ = ["Fetcher"]

log = logging.getLogger(__name__)

PAUSE_AFTER_S = 1.0
BLOCKED_POLL_S = 0.05


class Fetcher:
    """Micro-batches of one route's records.

    Args:
        consumer: the route's ``confluent_kafka.aio.AIOConsumer``.
        ledger: the route's partition ledger (generations, committed offsets, replay marks).
        route: the route (batch size and window).
        executor: the route's executor (whether anything is in flight).
    """

    def __init__(self, consumer: Any, ledger: PartitionLedger, route: RouteConfig, executor: OrderedExecutor[Any]
                 ) -> None:
        self.consumer, self.ledger, self.route, self.executor = consumer, ledger, route, executor
        self._carry: list[InputRecord] = []  # fetched while no slot was free: the next batch's first records
        self._paused: set[TP] = set()
        self._blocked_since: float | None = None
        self._fill = METRICS.batch_stage.labels(route.name, "fill")

    async def slot_free(self, until: float) -> bool:
        """Wait (until ``until`` at most, loop time) for a free slot in the executor; False if none came.
        Blocked past ``PAUSE_AFTER_S``, the partitions are paused and librdkafka served meanwhile."""
        now = asyncio.get_running_loop().time()
        blocked = self._blocked_since is not None and now - self._blocked_since >= PAUSE_AFTER_S
        wait = BLOCKED_POLL_S if blocked else min(until, (self._blocked_since or now) + PAUSE_AFTER_S) - now
        try:
            await asyncio.wait_for(self.executor.wait_for_slot(), max(0.001, wait))
        except asyncio.TimeoutError:
            self._blocked_since = self._blocked_since or now
            if asyncio.get_running_loop().time() - self._blocked_since >= PAUSE_AFTER_S:
                await self.while_blocked()
            return False
        self._blocked_since = None
        return True

    def forget(self) -> None:
        """The assignment changed: nothing carried, nothing paused."""
        self._carry, self._paused = [], set()

    async def while_blocked(self) -> None:
        """No free slot: pause fetching, but keep serving librdkafka (rebalance callbacks, the poll interval);
        records it still hands out wait in ``_carry`` for the next batch."""
        held = set(self.ledger.parts)
        if held - self._paused:
            try:
                await self.consumer.pause([TopicPartition(*tp) for tp in held - self._paused])
                self._paused = held
            except KafkaException as err:  # taken away meanwhile (the callback runs in the next consume)
                log.info("route %s: pause: %s", self.route.name, err)
        generation = self.ledger.generation
        got = self._records(await self.consumer.consume(self.route.batch_size, 0))
        if self.ledger.generation != generation:
            await self._reposition()
        else:
            self._carry += got

    async def batch(self, until: float) -> list[InputRecord]:
        """One micro-batch: wait (until ``until`` at most, loop time) for a first record, then fill it."""
        if self._paused:
            try:
                await self.consumer.resume([TopicPartition(*tp) for tp in self._paused])
            except KafkaException as err:  # taken away meanwhile: a new assignment starts unpaused
                log.info("route %s: resume: %s", self.route.name, err)
            self._paused = set()
        loop, route, ledger = asyncio.get_running_loop(), self.route, self.ledger
        generation, records, self._carry = ledger.generation, self._carry, []
        deadline = loop.time() + route.batch_within_s
        first = loop.time()  # when the batch's first record was there (a carried one: now)
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
                first = loop.time()
                got += self._records(await self.consumer.consume(route.batch_size - len(got), 0))  # queued already
                if ledger.generation != generation:
                    await self._reposition()
                    return []
                records = got
                if len(records) < route.batch_size and not self.executor.outstanding:
                    break  # nothing in flight and nothing more queued: don't wait out the window
                continue
            records += got
            if loop.time() >= deadline:
                break
        self._fill.observe(loop.time() - first)
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
        self.forget()
        for (topic, partition), state in self.ledger.parts.items():
            try:
                await self.consumer.seek(TopicPartition(topic, partition, state.committed))
            except KafkaException as err:  # not fetching yet: it starts from the committed offset anyway
                log.debug("seek %s[%d]: %s", topic, partition, err)
