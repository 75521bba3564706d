"""Recommendations folded from the committed summary log: state, output and position commit together.

Contract (both processing guarantees; the route guarantee decides only how the summaries are written):

- **One owner.** Every worker runs this fold in the consumer group ``<consumer_group>-recommendations`` on
  the single-partition summary topic; the member that holds the partition folds, the others wait.
- **Input: committed summaries only** (``read_committed``), in log order, through
  :class:`topologies.state.recfold.RecommendationFold` (item pool and user affinities in memory).
- **One transaction per commit interval** (``kafka.commit_interval_s``) holds the recommendations emitted
  in it, the state rows it changed (compacted topic :func:`schemas.recommend_state.state_topic`, keys
  ``item|<id>``, ``user|<id>``, ``position``) and the summary offset reached, sent with the consumer's group
  metadata (KIP-447: a fenced zombie's transaction is refused and aborted). A reader of the state topic or of
  ``recommendations`` (``read_committed``) sees all of an interval or none of it.
- **A new owner restores before it folds**: it reads the state topic to its high watermark, waiting for
  every transaction open on it to end, and goes on from the ``position`` row (the log's start when none).
  A failed commit is aborted and the owner restores the same way. So after any crash the state equals the
  fold of the summary log up to the committed position, and no recommendation is emitted twice.

Why one path for both guarantees: the summary log is already de-duplicated in both (each event is counted
in one summary: :mod:`topologies.engine.replays` at-least-once, transactions exactly-once), so the only
repeats left were the fold's own (a crash between the table update and the offset commit); a transaction
per interval costs one commit a second at the default at-least-once interval, on one small topic.

The fold runs in a thread of its own (one partition, one small record per batch). Its transactional calls
run bounded (:mod:`topologies.transactions`): one that has not returned past its timeout (librdkafka#5456:
``send_offsets_to_transaction`` after a broker restart) replaces the producer, whose successor fences it and
aborts its transaction, and the fold restores from the committed state, as after a failed commit.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from schemas.codec import encode
from schemas.recommend_state import state_topic
from schemas.summary import SUMMARY_PARTITION
from schemas.topology import Topology
from topologies.kafka_settings import confluent_config
from topologies.metrics import METRICS
from topologies.state.recfold import RecommendationFold, Step
from topologies.transactions import (CALL_GRACE_S, SEND_OFFSETS_TIMEOUT_S, DaemonCalls, Wedged, fenced, kafka_error,
                                     retriable)

__all__ = ["Recommendations", "read_state"]

log = logging.getLogger(__name__)

RETRY_S = 0.5
STOP_JOIN_S = 10.0  # a graceful stop waits this long for the fold's thread (its last commit)
TXN_TIMEOUT_S = 30.0  # librdkafka's own timeout of each transactional call


def read_state(config: dict[str, Any], topic: str, timeout_s: float, stop: threading.Event | None = None
               ) -> dict[str, bytes | None]:
    """The rows of a compacted state topic (partition 0) up to its high watermark, ``read_committed``:
    waits until every transaction open on it when called has committed or aborted.

    Raises:
        TimeoutError: the end was not reached within ``timeout_s`` (a transaction still open).
        InterruptedError: ``stop`` was set meanwhile (the worker stops: it must not wait out a dead
            worker's transaction).
    """
    tp = TopicPartition(topic, 0)
    probe = Consumer(config | {"group.id": f"{topic}-reader", "isolation.level": "read_uncommitted"})
    try:  # read_uncommitted: the high watermark, open transactions included (read_committed gives the LSO)
        low, high = probe.get_watermark_offsets(tp, timeout=timeout_s)
    finally:
        probe.close()
    rows: dict[str, bytes | None] = {}
    if high <= low:
        return rows
    reader = Consumer(config | {"group.id": f"{topic}-reader", "isolation.level": "read_committed",
                                "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        reader.assign([TopicPartition(topic, 0, low)])
        deadline = time.monotonic() + timeout_s
        # The position moves past commit markers and aborted records, and stops at an open transaction.
        while reader.position([tp])[0].offset < high:
            if stop is not None and stop.is_set():
                raise InterruptedError(f"{topic}: stopped before offset {high} was read")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to offset {high} within {timeout_s:.0f}s (a transaction "
                                   "open on it, e.g. of a worker that died, ends within kafka.transaction_timeout_s)")
            for msg in reader.consume(1000, 0.2):
                err = msg.error()
                if err is not None:
                    if err.fatal():
                        raise KafkaException(err)
                    continue
                if msg.key() is not None:
                    rows[msg.key().decode()] = msg.value()
        return rows
    finally:
        reader.close()


class Recommendations:
    """The recommendations fold of one worker; see the module docstring.

    Args:
        topology: the validated topology (``recommendations:``, topics, Kafka settings, guarantee).
        summary_topic: the summary topic's name.
        bootstrap: overrides ``kafka.bootstrap_servers``.
        worker_id: names this worker's transactional producer (``<group>-recommendations-<worker_id>``).
        on_fatal: called on the event loop when the fold cannot go on (e.g. its producer was fenced).
    """

    def __init__(self, topology: Topology, summary_topic: str, *, bootstrap: str | None = None,
                 worker_id: str, on_fatal: Callable[[BaseException], None] | None = None) -> None:
        k = topology.kafka
        self.topology, self.summary_topic = topology, summary_topic
        self.state_topic = state_topic(k.consumer_group)
        self.interval_s = k.commit_every_s(topology.delivery.processing_guarantee == "exactly-once")
        self.read_timeout_s = k.transaction_timeout_s + 15
        self.transactional_id = f"{k.recommendations_group}-{worker_id}"
        self.on_fatal = on_fatal
        self.recent: deque[dict[str, Any]] = deque(maxlen=50)  # committed recommendations, for the dashboard
        self.fold: RecommendationFold | None = None  # set while this worker owns the summary partition
        self.restores = 0
        self._conf = confluent_config(k, bootstrap)
        self._pending = Step()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: Any = None
        self._producer: Any = None
        self._calls: DaemonCalls | None = None
        self.replaced = 0  # producers replaced (a call stuck past its bound, or a fatal error)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._main, name="recommendations", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, STOP_JOIN_S)
            if self._thread.is_alive():  # a daemon: it does not hold the exit; what it had pending is folded again
                log.warning("recommendations: the fold did not stop within %.0fs; leaving it", STOP_JOIN_S)

    # -- the thread ---------------------------------------------------------------------------

    def _main(self) -> None:
        k = self.topology.kafka
        try:
            self._new_producer()
            self._consumer = Consumer(self._conf | {
                "group.id": k.recommendations_group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
                "isolation.level": "read_committed", "session.timeout.ms": int(k.session_timeout_s * 1000),
                "heartbeat.interval.ms": int(k.heartbeat_interval_s * 1000),
                "max.poll.interval.ms": int(max(2 * self.read_timeout_s, 300) * 1000)})
            self._consumer.subscribe([self.summary_topic], on_assign=self._assigned, on_revoke=self._revoked,
                                     on_lost=self._lost)
            due = time.monotonic() + self.interval_s
            while not self._stop.is_set():
                for msg in self._consumer.consume(500, 0.1):
                    self._feed(msg)
                if time.monotonic() >= due:
                    self._commit()
                    due = time.monotonic() + self.interval_s
            self._commit()
        except Exception as err:  # noqa: BLE001 - the worker stops; its supervisor restarts it
            log.critical("recommendations: the fold stopped: %r", err, exc_info=True)
            self._fatal(err)
        finally:
            if self._consumer is not None:
                try:
                    self._consumer.close()  # the revocation commits what is pending
                except Exception as err:  # noqa: BLE001
                    log.warning("recommendations: closing the consumer: %r", err)
            if self._calls is not None:
                self._calls.shutdown()

    def _new_producer(self) -> None:
        """This worker's transactional producer; its ``init_transactions`` fences any earlier one under the same
        id (a previous run, or a wedged one here) and aborts what that left open."""
        k = self.topology.kafka
        self._producer = Producer(self._conf | {
            "transactional.id": self.transactional_id, "enable.idempotence": True, "acks": "all",
            "transaction.timeout.ms": int(k.transaction_timeout_s * 1000), "linger.ms": 5,
            "partitioner": "murmur2_random"})  # keyed records land where Kafka's default partitioner puts them
        self._calls = DaemonCalls("recommendations-calls")
        self._txn(self._producer.init_transactions)

    def _txn(self, call: Callable[..., Any], *args: Any, timeout_s: float | None = None) -> Any:
        """A transactional call (its timeout, ``TXN_TIMEOUT_S`` unless given, passed as its last argument), retried
        as librdkafka asks, bounded."""
        assert self._calls is not None
        calls, timeout = self._calls, TXN_TIMEOUT_S if timeout_s is None else timeout_s
        return self._retry(lambda: calls.call_sync(call, *args, timeout, limit_s=timeout + CALL_GRACE_S))

    def _replace_producer(self, why: str) -> None:
        """Give up on a producer (stuck in a call, or failed fatally): a new one under the same transactional id
        fences it and aborts its transaction, then the fold restores (as after an abort)."""
        log.warning("recommendations: %s; replacing the producer and restoring the committed state", why)
        if self._calls is not None:
            self._calls.shutdown()  # its thread stays in the stuck call (a daemon); the old producer is dropped
        self.replaced += 1
        self._new_producer()
        self._reread()

    def _feed(self, msg: Any) -> None:
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise KafkaException(err)
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("recommendations: %s", err)
            return
        if self.fold is None or msg.partition() != 0:
            return
        self._pending.extend(self.fold.feed(msg.value(), msg.offset()))

    # -- ownership ----------------------------------------------------------------------------

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        if not any(p.partition == SUMMARY_PARTITION for p in partitions):
            return  # a summary topic with more partitions than declared: only the one written to is folded
        start = self._restore()
        if start is None:
            return
        consumer.assign([TopicPartition(self.summary_topic, SUMMARY_PARTITION, start)])
        log.info("recommendations: this worker folds %s from offset %s (%d users, %d items restored)",
                 self.summary_topic, "the start" if start == OFFSET_BEGINNING else start,
                 len(self.fold.users) if self.fold else 0, len(self.fold.items) if self.fold else 0)

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        if partitions:
            self._commit()  # the group metadata is still this generation's
            self.fold, self._pending = None, Step()

    def _lost(self, consumer: Any, partitions: list[Any]) -> None:
        log.warning("recommendations: the summary partition was lost (session expired); nothing more is committed")
        self.fold, self._pending = None, Step()

    def _restore(self) -> int | None:
        """Read the committed state back (until it can be read); returns the offset to fold from."""
        self.fold, self._pending = None, Step()
        while not self._stop.is_set():
            try:
                rows = read_state(self._conf, self.state_topic, self.read_timeout_s, self._stop)
            except InterruptedError:
                return None
            except (KafkaException, TimeoutError) as err:
                log.warning("recommendations: restoring from %s: %r; trying again", self.state_topic, err)
                time.sleep(RETRY_S)
                continue
            self.fold = RecommendationFold.restored(self.topology.recommendations, rows)
            self.restores += 1
            return OFFSET_BEGINNING if self.fold.position is None else self.fold.position
        return None

    # -- transactions -------------------------------------------------------------------------

    def _commit(self) -> None:
        """Recommendations, changed rows and the position in one transaction (nothing pending: nothing)."""
        fold, step = self.fold, self._pending
        if fold is None or fold.position is None or not step.rows:
            return
        self._pending = Step()
        producer = self._producer
        try:
            self._retry(producer.begin_transaction)
            for rec in step.recommendations:
                self._produce(self.topology.topics.recommendations, rec.user_id.encode(), encode(rec))
            for key, value in step.rows.items():
                self._produce(self.state_topic, key.encode(), value, partition=0)
            offsets = [TopicPartition(self.summary_topic, SUMMARY_PARTITION, fold.position)]
            self._txn(producer.send_offsets_to_transaction, offsets, self._consumer.consumer_group_metadata(),
                      timeout_s=SEND_OFFSETS_TIMEOUT_S)
            self._txn(producer.commit_transaction)
        except KafkaException as err:
            self._failed(err)
            return
        except Wedged as err:
            self._replace_producer(str(err))
            return
        for rec in step.recommendations:
            self.recent.append(rec.model_dump())
        METRICS.recommendations.inc(len(step.recommendations))

    def _produce(self, topic: str, key: bytes, value: bytes | None, **kw: Any) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, **kw)
                return
            except BufferError:  # librdkafka's queue is full: serve it
                self._producer.poll(0.05)

    def _retry(self, call: Callable[[], Any]) -> Any:
        """librdkafka's rule for transactional calls: a retriable error means "call it again"."""
        while True:
            try:
                return call()
            except KafkaException as err:
                error = retriable(err)
                if error is not None and not self._stop.is_set():
                    log.warning("recommendations: %s; retrying", error)
                    time.sleep(RETRY_S)
                    continue
                raise

    def _failed(self, err: KafkaException) -> None:
        if fenced(err):
            raise err  # another worker holds this transactional id (two with one INFERTIDE_WORKER_ID): stop
        error = kafka_error(err)
        if error is None or error.fatal():  # the producer cannot go on, nor abort: a new one fences it and aborts its transaction
            self._replace_producer(f"the producer failed fatally ({error or err})")
            return
        log.warning("recommendations: transaction failed (%s); aborted, restoring the committed state", error)
        try:
            self._txn(self._producer.abort_transaction)
        except KafkaException as abort_err:
            abort_error = kafka_error(abort_err)
            if abort_error is None or abort_error.code() != KafkaError._STATE:  # _STATE: no transaction was begun
                raise
        except Wedged as wedged:
            self._replace_producer(str(wedged))
            return
        self._reread()

    def _reread(self) -> None:
        """Restore the committed state and fold again from its position (nothing assigned: nothing to fold)."""
        if self._consumer.assignment():
            start = self._restore()
            if start is not None:
                self._consumer.seek(TopicPartition(self.summary_topic, SUMMARY_PARTITION, start))
        else:
            self.fold = None

    def _fatal(self, err: BaseException) -> None:
        self._stop.set()
        if self.on_fatal is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self.on_fatal, err)
