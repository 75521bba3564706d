"""Producing one batch's output records with confluent-kafka (librdkafka), one delivery future per batch.

Keys are partitioned exactly as Kafka's default partitioner does (murmur2 of the key, as in the Java
client; librdkafka's own default is CRC32), so a result lands on the partition any other client would
pick for its key; records without a key go round-robin. The hash comes from the ``murmurhash2`` C
extension (docs/performance.md); a unit test checks it against Kafka's vectors.

Order: records of one partition are handed to librdkafka in the order given, and its idempotent (or
transactional) producer keeps a partition's records in order. A poll thread serves delivery reports;
a batch's future resolves once every record of it is acknowledged (or with the first error), on the
event loop, with the :class:`Delivered` positions of the records the caller asked to locate.

Transactions (exactly-once): :meth:`BatchProducer.begin`, :meth:`send_offsets` (with the consumer's
group metadata: KIP-447, so the broker refuses a fenced zombie's offsets), :meth:`commit` and
:meth:`abort` run librdkafka's blocking calls off the event loop, bounded (:mod:`topologies.transactions`:
librdkafka's ``send_offsets_to_transaction`` can block forever after a broker restart). A wedged producer
is replaced (:meth:`fresh`), not waited for.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from murmurhash2 import murmurhash2

from topologies.engine.records import OutRecord
from topologies.transactions import CALL_GRACE_S, SEND_OFFSETS_TIMEOUT_S, DaemonCalls, kafka_error

__all__ = ["BatchProducer", "Delivered", "partition_for"]

log = logging.getLogger(__name__)

_SEED = 0x9747B28C  # the seed of Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2)


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` among ``partitions``."""
    return (murmurhash2(key, _SEED) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class Delivered:
    """Where an acknowledged record landed."""

    topic: str
    partition: int
    offset: int


METADATA_TRIES = 3  # lookups of a topic's partition count before its batch fails
METADATA_RETRY = frozenset({KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN})
class _Deliveries:
    """Counts one batch's delivery reports and resolves its future once, on the loop. Reports arrive on the
    poll thread, or on the thread of a call that serves the queue too (flush, commit_transaction): a lock."""

    __slots__ = ("error", "future", "located", "loop", "remaining")
    _lock = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop, n: int) -> None:
        self.loop, self.remaining, self.error = loop, n, None
        self.future: asyncio.Future[list[Delivered]] = loop.create_future()
        self.located: list[Delivered] = []

    def done(self, err: Any, msg: Any) -> None:
        with self._lock:
            if err is not None and self.error is None:
                self.error = KafkaException(err)
            self.remaining -= 1
            last = self.remaining == 0
        if last:
            self.loop.call_soon_threadsafe(self._resolve)

    def locate(self, err: Any, msg: Any) -> None:
        if err is None:
            with self._lock:
                self.located.append(Delivered(msg.topic(), msg.partition(), msg.offset()))
        self.done(err, msg)

    def fail(self, error: Exception) -> None:
        """Resolve now with ``error`` (the producer was abandoned; its reports may never come)."""
        if self.error is None:
            self.error = error
        self._resolve()

    def _resolve(self) -> None:
        if self.future.done():
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.located)


class BatchProducer:
    """One librdkafka producer for a route; :meth:`send_all` returns one delivery future per batch.

    Args:
        config: librdkafka settings (``topologies.kafka_settings.route_producer_config``).
        locate_topic: records of this topic (the summary topic) report where they landed.
    """

    def __init__(self, config: dict[str, Any], *, locate_topic: str | None = None) -> None:
        self.locate_topic = locate_topic
        self.config = config
        self.transactional = "transactional.id" in config
        self._producer = Producer(config)
        self._partitions: dict[str, int] = {}
        self._round_robin = itertools.count()
        self._calls = DaemonCalls("producer-calls")
        self._pending: set[_Deliveries] = set()  # batches not yet resolved (failed at once if abandoned)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="producer-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self._producer.poll(0.05)
            except KafkaException as err:  # a fatal error surfaces here too; the transactional calls report it
                log.error("producer: %s", err)
                self._stop.wait(0.5)

    async def _call(self, fn: Any, *args: Any, timeout_s: float | None = None) -> Any:
        """``fn(*args)`` on the calls thread; with ``timeout_s`` (librdkafka's own), :class:`Wedged` if it
        has not returned ``CALL_GRACE_S`` after it."""
        return await self._calls.call(fn, *args, limit_s=None if timeout_s is None else timeout_s + CALL_GRACE_S)

    def fresh(self) -> BatchProducer:
        """A new producer with this one's settings (and transactional id: its ``init_transactions`` fences
        this one and aborts its open transaction) and known topics."""
        other = BatchProducer(self.config, locate_topic=self.locate_topic)
        other._partitions = dict(self._partitions)
        return other

    def abandon(self, why: str) -> None:
        """Give up on this producer without waiting for it: every pending batch fails now with ``why``, its
        poll thread stops; a call stuck inside librdkafka stays on its daemon thread."""
        error = KafkaException(why)
        for deliveries in list(self._pending):
            deliveries.fail(error)
        self._pending.clear()
        self._stop.set()
        self._calls.shutdown()

    async def know_topics(self, topics: Sequence[str], timeout_s: float = 10.0) -> None:
        """Learn the partition counts of ``topics`` (their records are partitioned by key here)."""
        for topic in topics:
            meta = await self._call(lambda t=topic: self._producer.list_topics(t, timeout_s))
            parts = meta.topics[topic].partitions
            if parts:
                self._partitions[topic] = len(parts)

    async def _count(self, topic: str) -> int:
        """``topic``'s partition count, looked up once. A lookup that timed out is tried again (up to
        ``METADATA_TRIES`` times): a worker frozen mid-lookup (SIGSTOP, a VM pause) finds its timeout spent
        when it thaws, and a failed lookup fails the batch (at-least-once: the worker stops)."""
        for attempt in range(1, METADATA_TRIES + 1):
            if (n := self._partitions.get(topic)) is not None:
                return n
            try:
                await self.know_topics([topic])
            except KafkaException as err:
                error = kafka_error(err)
                if error is None or error.code() not in METADATA_RETRY or attempt == METADATA_TRIES:
                    raise
                log.warning("producer: partitions of %s: %s; trying again (%d of %d)", topic, error, attempt + 1,
                            METADATA_TRIES)
        if (n := self._partitions.get(topic)) is None:
            raise KafkaException(f"topic {topic} has no partitions (does it exist?)")
        return n

    async def send_all(self, records: Sequence[OutRecord]) -> asyncio.Future[list[Delivered]]:
        """Queue every record, in the given order per topic partition; the future resolves when all are acked."""
        loop = asyncio.get_running_loop()
        deliveries = _Deliveries(loop, len(records))
        if not records:
            deliveries.future.set_result([])
            return deliveries.future
        if self.transactional:  # only a transactional producer is ever abandoned (a wedged call)
            self._pending.add(deliveries)
            deliveries.future.add_done_callback(lambda _, d=deliveries: self._pending.discard(d))
        produce, locate = self._producer.produce, self.locate_topic
        for rec in records:
            n = self._partitions.get(rec.topic) or await self._count(rec.topic)
            if rec.partition is not None:
                p = rec.partition
            else:
                p = partition_for(rec.key, n) if rec.key is not None else next(self._round_robin) % n
            cb = deliveries.locate if rec.topic == locate else deliveries.done
            while True:
                try:
                    produce(rec.topic, rec.value, rec.key, p, on_delivery=cb, headers=list(rec.headers) or None)
                    break
                except BufferError:  # librdkafka's queue is full: let the poll thread drain it
                    await asyncio.sleep(0.005)
        return deliveries.future

    async def flush(self, timeout_s: float = 30.0) -> int:
        """Wait until everything queued is acknowledged; returns how many records are still queued."""
        return int(await self._call(self._producer.flush, timeout_s))

    # -- transactions (exactly-once) -----------------------------------------------------

    async def init_transactions(self, timeout_s: float = 30.0) -> None:
        await self._call(self._producer.init_transactions, timeout_s, timeout_s=timeout_s)

    async def begin(self) -> None:
        await self._call(self._producer.begin_transaction)

    async def send_offsets(self, offsets: dict[tuple[str, int], tuple[int, str]], group_metadata: Any,
                           timeout_s: float = SEND_OFFSETS_TIMEOUT_S) -> None:
        tps = [TopicPartition(t, p, off, metadata=meta) for (t, p), (off, meta) in offsets.items()]
        await self._call(self._producer.send_offsets_to_transaction, tps, group_metadata, timeout_s,
                         timeout_s=timeout_s)

    async def commit(self, timeout_s: float = 30.0) -> None:
        await self._call(self._producer.commit_transaction, timeout_s, timeout_s=timeout_s)

    async def abort(self, timeout_s: float = 30.0) -> None:
        await self._call(self._producer.abort_transaction, timeout_s, timeout_s=timeout_s)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Flush (bounded), stop the poll thread."""
        try:
            if not self.transactional:
                await self.flush(timeout_s)
        finally:
            self._stop.set()
            await asyncio.get_running_loop().run_in_executor(None, self._poller.join, 2.0)
            self._calls.shutdown()
