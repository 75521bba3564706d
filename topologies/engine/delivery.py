"""The two processing guarantees: how a route publishes a batch's outputs and commits its input offsets.

Both take their decisions from the route's :class:`topologies.engine.ledger.PartitionLedger`.

:class:`AtLeastOnce` (``delivery.processing_guarantee: at-least-once``): outputs are produced as each
batch finishes (idempotent producer, acks=all); the consumer commits the offsets of acknowledged batches
every commit interval, with the summary-topic offset of each partition's last summary as metadata, so a
next owner counts a replayed event once (:mod:`topologies.engine.replays`). A crash repeats the results
of what was not committed.

:class:`ExactlyOnce` (``exactly-once``): one Kafka transaction per commit interval holds every output
published in it (results, dead letters, summaries) and the input offsets of those batches, sent with the
consumer's group metadata (KIP-447: the broker refuses the offsets of a member it has fenced, such as a
zombie that froze past its session), then committed. Readers with ``isolation.level=read_committed`` see
each output once, at the commit. A failed commit is aborted: the ledger and the consumer go back to the
committed offsets and read again; nothing of the aborted transaction is ever visible. Publishing waits
while a transaction commits (the gate), model calls do not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from topologies.engine.ledger import PartitionLedger, Ticket
from topologies.engine.producer import BatchProducer
from topologies.engine.records import OutRecord
from topologies.engine.replays import REFRESH_S, SummaryScanner

__all__ = ["AtLeastOnce", "Delivery", "ExactlyOnce"]

log = logging.getLogger(__name__)

RETRY_S = 0.5  # between calls of a transactional API call librdkafka says to retry


class Delivery:
    """What both guarantees share: the ledger, the producer, the consumer (set once started), progress."""

    def __init__(self, route: str, ledger: PartitionLedger, producer: BatchProducer, *,
                 on_fatal: Callable[[BaseException], None]) -> None:
        self.route, self.ledger, self.producer, self.on_fatal = route, ledger, producer, on_fatal
        self.consumer: Any = None  # the route's AIOConsumer
        self.last_progress = time.monotonic()

    async def start(self) -> None:
        """Before the consumer subscribes."""

    async def publish(self, records: list[OutRecord], ticket: Ticket) -> list[Awaitable[Any]]:
        raise NotImplementedError

    async def commit(self) -> None:
        raise NotImplementedError

    async def assigned(self) -> None:
        """After the ledger took an assignment (inside the rebalance callback)."""

    async def lost(self) -> None:
        """The partitions were taken without a revocation (the session expired): commit nothing."""

    async def close(self) -> None:
        """After the consumer closed (its revocation committed what was done)."""
        await self.producer.close()

    def _progress(self, moved: bool) -> None:
        if moved:
            self.last_progress = time.monotonic()


class AtLeastOnce(Delivery):
    """Commit what is acknowledged; summaries of abandoned batches are not sent (their events count once)."""

    def __init__(self, route: str, ledger: PartitionLedger, producer: BatchProducer, scanner: SummaryScanner, *,
                 on_fatal: Callable[[BaseException], None]) -> None:
        super().__init__(route, ledger, producer, on_fatal=on_fatal)
        self.scanner = scanner
        self._lock = asyncio.Lock()
        self._next_refresh = time.monotonic() + REFRESH_S
        self._fresh = False  # an assignment brought partitions never committed: refresh them soon

    async def close(self) -> None:
        await super().close()
        await self.scanner.stop()

    async def publish(self, records: list[OutRecord], ticket: Ticket) -> list[Awaitable[Any]]:
        if not self.ledger.current(ticket) and self.scanner.summary_topic:  # abandoned: results yes, counts no
            records = [r for r in records if r.topic != self.scanner.summary_topic]
        return [await self.producer.send_all(records)]

    async def assigned(self) -> None:
        self._fresh = any(s.never_committed for s in self.ledger.parts.values())

    async def commit(self) -> None:
        """Commit acknowledged progress; every ``REFRESH_S`` also move idle partitions' metadata up."""
        async with self._lock:
            plan = self.ledger.commit_plan()
            if self.scanner.summary_topic and (self._fresh or time.monotonic() >= self._next_refresh):
                self._fresh, self._next_refresh = False, time.monotonic() + REFRESH_S
                before = {tp: n for tp, n in self.ledger.idle().items() if tp not in plan}
                try:
                    end = await self.scanner.end() if before else None
                except Exception as err:  # noqa: BLE001 - only a later scan's length depends on it
                    log.warning("could not read the summary topic's end for commit metadata: %r", err)
                    end = None
                if end is not None:
                    plan.update(self.ledger.refreshes(before, end))
            if not plan:
                return
            offsets = [TopicPartition(t, p, off, metadata=meta) for (t, p), (off, meta) in plan.items()]
            try:
                await self.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as err:  # the group moved on: the next owner re-reads
                log.warning("route %s: commit of %d partitions failed (%s); their events will be read again",
                            self.route, len(plan), err.args[0] if err.args else err)
                return
            self._progress(self.ledger.did_commit(plan))


class ExactlyOnce(Delivery):
    """One transaction per commit interval: outputs and input offsets visible together, or not at all."""

    def __init__(self, route: str, ledger: PartitionLedger, producer: BatchProducer, *,
                 on_fatal: Callable[[BaseException], None]) -> None:
        super().__init__(route, ledger, producer, on_fatal=on_fatal)
        self.gate = asyncio.Lock()  # held while a transaction commits: publishing waits, model calls go on
        self.group_metadata: Any = None
        self._dirty = False  # the open transaction holds records
        self._undelivered: Any = None  # why a record of the open transaction was not delivered

    async def start(self) -> None:
        await self.producer.init_transactions()  # aborts what a previous run under this id left open
        await self.producer.begin()

    async def assigned(self) -> None:
        # The generation and member id the broker checks the offsets against (KIP-447).
        self.group_metadata = await self.consumer.consumer_group_metadata()

    async def publish(self, records: list[OutRecord], ticket: Ticket) -> list[Awaitable[Any]]:
        async with self.gate:
            if not self.ledger.current(ticket):
                return []  # its partitions moved or its transaction was aborted: the events are read again
            delivered = await self.producer.send_all(records)
            self.ledger.published(ticket)
            self._dirty = True
        return [asyncio.ensure_future(self._settled(delivered))]

    async def _settled(self, delivered: Awaitable[Any]) -> Any:
        """A record that is not delivered (e.g. it timed out while the broker was away) is not fatal here:
        its transaction cannot commit, so the next commit aborts it and the batches are read again."""
        try:
            return await delivered
        except KafkaException as err:
            if self._undelivered is None:
                self._undelivered = err.args[0] if err.args else err
            return []

    async def commit(self) -> None:
        async with self.gate:
            plan = self.ledger.commit_plan()
            if not plan and not self._dirty:
                return
            if self._undelivered is not None:  # a record of this transaction was not delivered: it cannot commit
                await self._abort(f"a record was not delivered: {self._undelivered}")
                return
            sent = not plan
            while True:  # librdkafka: a retriable error means "call it again"; an abortable one, abort
                try:
                    if not sent:
                        await self.producer.send_offsets(plan, self.group_metadata)
                        sent = True
                    await self.producer.commit()
                    break
                except KafkaException as err:
                    error: KafkaError = err.args[0]
                    if error.retriable() and not error.fatal() and not error.txn_requires_abort():
                        log.warning("route %s: transaction commit: %s; retrying", self.route, error)
                        await asyncio.sleep(RETRY_S)
                        continue
                    await self._failed(err)
                    return
            self._dirty = False
            self._progress(self.ledger.did_commit(plan))
            await self.producer.begin()

    async def lost(self) -> None:
        async with self.gate:
            await self._abort("the partitions were lost (session expired)")

    async def _failed(self, err: KafkaException) -> None:
        error: KafkaError = err.args[0]
        if error.fatal() or error.code() == KafkaError._FENCED:
            log.critical("route %s: the transactional producer was fenced or failed fatally (%s): another worker "
                         "uses the same transactional id (set INFERTIDE_WORKER_ID per worker) or this one is a "
                         "zombie", self.route, error)
            self.on_fatal(err)
            return
        log.warning("route %s: transaction commit failed (%s); aborted, reading again from the committed offsets",
                    self.route, error)
        await self._abort(str(error))

    async def _abort(self, why: str) -> None:
        """Abort the open transaction (the gate is held) and go back to the committed offsets."""
        while True:
            try:
                await self.producer.abort()
                break
            except KafkaException as err:
                error: KafkaError = err.args[0]
                if error.retriable() and not error.fatal():  # e.g. the broker is still away: call it again
                    log.warning("route %s: abort: %s; retrying", self.route, error)
                    await asyncio.sleep(RETRY_S)
                    continue
                log.critical("route %s: could not abort the transaction (%s) after: %s", self.route, err, why)
                self.on_fatal(err)
                return
        self._dirty, self._undelivered = False, None
        seeks = self.ledger.rewind()
        await self.producer.begin()
        for (topic, partition), offset in seeks.items():
            try:
                await self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as err:  # not fetching yet: it starts from the committed offset anyway
                log.debug("seek %s[%d] to %d: %s", topic, partition, offset, err)
