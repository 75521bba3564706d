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
committed offsets and read again; nothing of the aborted transaction is ever visible. An abort that
fails, a fatal producer error or a call stuck in librdkafka replaces the producer (a new one under the
same transactional id fences the old and aborts its transaction); only a fenced producer (another holds
the id) stops the worker. Publishing waits while a transaction commits (the gate), model calls do not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from topologies.engine.ledger import PartitionLedger, Ticket
from topologies.engine.producer import BatchProducer
from topologies.engine.records import OutRecord
from topologies.engine.replays import REFRESH_S, SummaryScanner
from topologies.transactions import Wedged, fenced, kafka_error, retriable

__all__ = ["AtLeastOnce", "Delivery", "ExactlyOnce"]

log = logging.getLogger(__name__)

RETRY_S = 0.5  # between calls of a transactional API call librdkafka says to retry
COMMIT_ANSWER_S = 30.0  # an asynchronous commit unanswered this long no longer holds back the next one
# An abort that has not finished this long is given up: the producer is replaced, and the new one's
# init_transactions (same transactional id) has the coordinator abort the transaction. After a 20 s broker
# freeze, librdkafka's abort_transaction timed out twice in a row (2 x 30 s) with the broker long back; the
# route's loop, waiting on it, then missed max.poll.interval.ms and lost its partitions (a clean-clone run).
ABORT_TIMEOUT_S = 10.0


class Delivery:
    """What both guarantees share: the ledger, the producer, the consumer (set once started), progress."""

    def __init__(self, route: str, ledger: PartitionLedger, producer: BatchProducer, *,
                 on_fatal: Callable[[BaseException], None]) -> None:
        self.route, self.ledger, self.producer, self.on_fatal = route, ledger, producer, on_fatal
        self.consumer: Any = None  # the route's AIOConsumer
        self.last_progress = time.monotonic()

    async def start(self) -> None:
        """Before the consumer subscribes."""

    def consumer_callbacks(self) -> dict[str, Any]:
        """librdkafka callbacks the route's consumer is built with."""
        return {}

    async def publish(self, records: list[OutRecord], ticket: Ticket) -> list[Awaitable[Any]]:
        raise NotImplementedError

    async def commit(self, final: bool = False) -> None:
        """Commit what is done; ``final``: before the partitions go (a revocation), so wait for the broker."""
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
        self._sent_at: float | None = None  # when the asynchronous commit still unanswered was sent

    async def close(self) -> None:
        await super().close()
        await self.scanner.stop()

    def consumer_callbacks(self) -> dict[str, Any]:
        return {"on_commit": self.on_commit}  # the interval's commits are asynchronous

    async def publish(self, records: list[OutRecord], ticket: Ticket) -> list[Awaitable[Any]]:
        if not self.ledger.current(ticket) and self.scanner.summary_topic:  # abandoned: results yes, counts no
            records = [r for r in records if r.topic != self.scanner.summary_topic]
        return [await self.producer.send_all(records)]

    async def assigned(self) -> None:
        self._fresh = any(s.never_committed for s in self.ledger.parts.values())

    async def commit(self, final: bool = False) -> None:
        """Commit acknowledged progress; every ``REFRESH_S`` also move idle partitions' metadata up.

        The interval's commits are asynchronous (:meth:`on_commit` records them): a synchronous one can wait
        without end inside librdkafka while the group coordinator is away (confluentinc/librdkafka#3740), and
        every call of the consumer waits behind it, so the route would stop fetching. One is in flight at a
        time (a later one after ``COMMIT_ANSWER_S`` unanswered). A ``final`` commit (revocation) waits."""
        if not final and self._sent_at is not None and time.monotonic() - self._sent_at < COMMIT_ANSWER_S:
            return
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
                if final:
                    await self.consumer.commit(offsets=offsets, asynchronous=False)
                else:
                    self._sent_at = time.monotonic()
                    await self.consumer.commit(offsets=offsets, asynchronous=True)
                    return
            except KafkaException as err:  # the group moved on: the next owner re-reads
                self._sent_at = None
                self._commit_failed(len(plan), err.args[0] if err.args else err)
                return
            self._progress(self.ledger.did_commit(plan))

    async def on_commit(self, err: Any, partitions: list[TopicPartition]) -> None:
        """librdkafka's answer to a commit (served inside ``consume``, run on the loop)."""
        self._sent_at = None
        if err is not None:
            self._commit_failed(len(partitions), err)
            return
        done = {(tp.topic, tp.partition): (tp.offset, tp.metadata or "") for tp in partitions
                if tp.error is None}
        if len(done) < len(partitions):
            self._commit_failed(len(partitions) - len(done), next(tp.error for tp in partitions if tp.error))
        self._progress(self.ledger.did_commit(done))

    def _commit_failed(self, n: int, err: Any) -> None:
        log.warning("route %s: commit of %d partitions failed (%s); their events will be read again unless a "
                    "later commit succeeds", self.route, n, err)


class ExactlyOnce(Delivery):
    """One transaction per commit interval: outputs and input offsets visible together, or not at all."""

    def __init__(self, route: str, ledger: PartitionLedger, producer: BatchProducer, *,
                 on_fatal: Callable[[BaseException], None], retry_for_s: float = 60.0) -> None:
        super().__init__(route, ledger, producer, on_fatal=on_fatal)
        self.retry_for_s = retry_for_s  # retriable errors are retried this long (the transaction timeout)
        self.gate = asyncio.Lock()  # held while a transaction commits: publishing waits, model calls go on
        self.group_metadata: Any = None
        self._dirty = False  # the open transaction holds records
        self._undelivered: Any = None  # why a record of the open transaction was not delivered

    async def start(self) -> None:
        await self._init_transactions()  # aborts what a previous run under this id left open
        await self.producer.begin()

    async def _init_transactions(self) -> None:
        """``init_transactions``, retried (the transaction coordinator not ready yet, as on a cluster's first
        transaction, or the broker away)."""
        await self._retried(self.producer.init_transactions, "init_transactions")

    async def _retried(self, call: Callable[[], Awaitable[Any]], what: str, budget_s: float | None = None) -> None:
        """``call``, called again while librdkafka says its error is retriable, ``budget_s`` at most (default
        ``retry_for_s``); any other error (and the last retriable one) is raised."""
        give_up = time.monotonic() + (self.retry_for_s if budget_s is None else budget_s)
        while True:
            try:
                await call()
                return
            except KafkaException as err:
                error = retriable(err)
                if error is None or time.monotonic() >= give_up:
                    raise
                log.warning("route %s: %s: %s; retrying", self.route, what, error)
                await asyncio.sleep(RETRY_S)

    async def assigned(self) -> None:
        # The generation and member id the broker checks the offsets against (KIP-447).
        self.group_metadata = await self.consumer.consumer_group_metadata()

    async def publish(self, records: list[OutRecord], ticket: Ticket) -> list[Awaitable[Any]]:
        async with self.gate:
            if not self.ledger.current(ticket):
                return []  # its partitions moved or its transaction was aborted: the events are read again
            producer = self.producer
            try:
                delivered = await producer.send_all(records)
            except KafkaException as err:  # the producer failed fatally: the next commit aborts and replaces it
                self._undelivered, self._dirty = err.args[0] if err.args else err, True
                return []
            self.ledger.published(ticket)
            self._dirty = True
        return [asyncio.ensure_future(self._settled(delivered, producer))]

    async def _settled(self, delivered: Awaitable[Any], producer: BatchProducer) -> Any:
        """A record that is not delivered (e.g. it timed out while the broker was away) is not fatal here:
        its transaction cannot commit, so the next commit aborts it and the batches are read again."""
        try:
            return await delivered
        except KafkaException as err:
            if self._undelivered is None and producer is self.producer:  # not one of a replaced producer's
                self._undelivered = err.args[0] if err.args else err
            return []

    async def commit(self, final: bool = False) -> None:
        async with self.gate:
            plan = self.ledger.commit_plan()
            if not plan and not self._dirty:
                return
            if self._undelivered is not None:  # a record of this transaction was not delivered: it cannot commit
                await self._abort(f"a record was not delivered: {self._undelivered}")
                return
            sent, give_up = not plan, time.monotonic() + self.retry_for_s
            while True:  # librdkafka: a retriable error means "call it again"; an abortable one, abort
                try:
                    if not sent:
                        await self.producer.send_offsets(plan, self.group_metadata)
                        sent = True
                    await self.producer.commit()
                    break
                except Wedged as err:
                    await self._replace(str(err))
                    return
                except KafkaException as err:
                    error = retriable(err)
                    if error is not None and time.monotonic() < give_up:
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
        if self._fenced(err):
            return
        error = kafka_error(err)
        if error is None or error.fatal():  # e.g. INVALID_TXN_STATE from a coordinator going down: librdkafka says start a new producer
            await self._replace(f"fatal producer error {error or err}")
            return
        log.warning("route %s: transaction commit failed (%s); aborted, reading again from the committed offsets",
                    self.route, error)
        await self._abort(str(error))

    async def _abort(self, why: str) -> None:
        """Abort the open transaction (the gate is held) and go back to the committed offsets."""
        try:
            await self._retried(lambda: self.producer.abort(ABORT_TIMEOUT_S), "abort", ABORT_TIMEOUT_S)
        except Wedged as err:
            await self._replace(f"{err} (aborting after: {why})")
            return
        except KafkaException as err:
            if self._fenced(err):
                return
            # Still timing out after ABORT_TIMEOUT_S (seen after a 20 s broker freeze), or failed fatally
            # (INVALID_TXN_STATE from a broker shutting down, seen in a clean-clone run): a new producer under the
            # same transactional id fences this one and aborts its transaction on the broker.
            await self._replace(f"the abort did not finish ({err.args[0] if err.args else err}) after: {why}")
            return
        await self._rewind()

    def _fenced(self, err: KafkaException) -> bool:
        """Another producer took this transactional id (two workers with one ``INFERTIDE_WORKER_ID``, or this one
        is a zombie): the worker stops; a new producer here would fence the other in turn."""
        if not fenced(err):
            return False
        log.critical("route %s: the transactional producer was fenced (%s): another worker uses the same "
                     "transactional id (set INFERTIDE_WORKER_ID per worker) or this one is a zombie", self.route,
                     kafka_error(err))
        self.on_fatal(err)
        return True

    async def _replace(self, why: str) -> None:
        """The producer is stuck inside librdkafka (the gate is held): a new one under the same transactional
        id fences it and aborts its open transaction; then read again from the committed offsets."""
        log.error("route %s: %s: the transactional producer is replaced; reading again from the committed offsets",
                  self.route, why)
        old, self.producer = self.producer, self.producer.fresh()
        old.abandon(f"producer replaced: {why}")
        try:
            await self._init_transactions()
        except (KafkaException, Wedged) as err:
            log.critical("route %s: the replaced producer could not start its transactions: %s", self.route, err)
            self.on_fatal(err)
            return
        await self._rewind()

    async def _rewind(self) -> None:
        """After an abort: a new transaction, and the ledger and the consumer back at the committed offsets."""
        self._dirty, self._undelivered = False, None
        seeks = self.ledger.rewind()
        await self.producer.begin()
        for (topic, partition), offset in seeks.items():
            try:
                await self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as err:  # not fetching yet: it starts from the committed offset anyway
                log.debug("seek %s[%d] to %d: %s", topic, partition, offset, err)
