"""Analytics windows computed from the summary log, so they add up exactly across crashes and moves.

This module: log-order tumbling windows (the default, ``analytics.window_s``), and the consumer,
producer and group every analytics fold runs on; event-time windows (``analytics.window``) subclass
it in :mod:`topologies.state.event_analytics`.

Route workers write one summary per micro-batch to the single-partition summary topic (and never
count an event in two summaries: :mod:`topologies.engine.replays`). This module turns that log into
tumbling windows on the ``analytics`` topic.

Contract:

- **Membership comes from the log alone.** The owner of the summary partition (consumer group
  ``<consumer_group>-analytics``; one owner among the workers) appends a boundary marker
  ``{"marker": <window start ms>}`` at every ``analytics.window_s`` boundary of its clock. A
  summary belongs to the window opened by the last marker before it in the log; a marker not
  later than the open window's start (a second owner's, a skewed clock's) changes nothing.
- **A window is emitted when the marker that closes it is read**: one ``analytics.v1`` record
  per metric key, keyed ``metric|key``; then that marker's offset is committed.
- **A new owner re-reads from the committed marker** and rebuilds the open window. A window
  emitted but not committed before a crash is emitted again with the same values (same
  summaries, same order). ``(key, window_start)`` identifies a window: read the analytics topic
  as "latest per window wins", as one reads a compacted table.

Why not a Faust windowed table (as before): Faust registers a window for expiry only when it is
set in the running process, so windows restored from the changelog on a new owner were never
emitted, and expiry dropped windows without a tombstone; both lost or repeated counts whenever
the windows' owner moved (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, OutOfOrderSequenceNumber, UnknownProducerId

from schemas.codec import encode
from schemas.events import AnalyticsRecord
from schemas.summary import SUMMARY_PARTITION
from schemas.topology import Topology
from topologies.state.analytics import finalize, merge, split_key
from topologies.kafka_settings import aiokafka_kwargs
from topologies.metrics import METRICS
from topologies.state.analytics import now_ms

__all__ = ["AnalyticsWindows", "WindowFold", "is_marker", "marker"]

log = logging.getLogger(__name__)

MARKER_KEY = b"window-marker"


def marker(start_ms: int) -> bytes:
    """The boundary record that opens the window starting at ``start_ms``."""
    return orjson.dumps({"marker": start_ms})


def is_marker(value: Any) -> bool:
    return isinstance(value, dict) and "marker" in value


class WindowFold:
    """The open window, folded from the summary log in order (pure: no Kafka, no clock).

    Args:
        size_ms: the window size; only used to place summaries read before any marker.
    """

    def __init__(self, size_ms: int) -> None:
        self.size_ms = size_ms
        self.start: int | None = None
        self.sums: dict[str, dict[str, float]] = {}

    def add(self, value: Any, timestamp_ms: int) -> list[AnalyticsRecord] | None:
        """Fold one record of the log. Returns the windows a marker closed ([] when it was empty),
        or None when the record was not a marker that opened a window."""
        if is_marker(value):
            at = int(value["marker"])
            if self.start is not None and at <= self.start:
                return None
            closed = self.closed(at) if self.start is not None else []
            self.start, self.sums = at, {}
            return closed
        metrics = value.get("metrics") if isinstance(value, dict) else None
        if not isinstance(metrics, dict) or not metrics:
            return None
        if self.start is None:  # summaries before the first marker: the window their timestamp falls in
            self.start = timestamp_ms // self.size_ms * self.size_ms
        for key, delta in metrics.items():
            self.sums[key] = merge(self.sums.get(key), delta)
        return None

    def closed(self, end_ms: int, ts: int | None = None) -> list[AnalyticsRecord]:
        """The open window's records, as if it closed at ``end_ms``."""
        assert self.start is not None
        out = []
        for table_key, value in sorted(self.sums.items()):
            metric, sub = split_key(table_key)
            out.append(AnalyticsRecord(metric=metric, key=sub or None, window_start=self.start, window_end=end_ms,
                                       values=finalize(metric, value), ts=ts or now_ms()))
        return out


class AnalyticsWindows(ConsumerRebalanceListener):
    """Reads the summary topic as the analytics group, writes boundary markers, emits closed windows.

    Args:
        topology: the validated topology (``analytics.window_s``, topics, Kafka settings).
        summary_topic: the summary topic's name.
        bootstrap: overrides ``kafka.bootstrap_servers``.
    """

    def __init__(self, topology: Topology, summary_topic: str, *, bootstrap: str | None = None) -> None:
        self.topology = topology
        self.summary_topic = summary_topic
        self.size_ms = topology.analytics.window_s * 1000
        self.fold = WindowFold(self.size_ms)
        self.recent: deque[dict[str, Any]] = deque(maxlen=200)
        self._kw = aiokafka_kwargs(topology.kafka, bootstrap)
        self._owner = False
        self._last_marker = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(acks="all", enable_idempotence=True, **self._kw)

    async def start(self) -> None:
        k = self.topology.kafka
        self._producer = self._new_producer()
        self._consumer = AIOKafkaConsumer(
            group_id=k.analytics_group, enable_auto_commit=False, auto_offset_reset="earliest",
            isolation_level="read_committed",  # a summary counts only once its transaction committed
            session_timeout_ms=int(k.session_timeout_s * 1000),
            heartbeat_interval_ms=int(k.heartbeat_interval_s * 1000), **self._kw)
        self._consumer.subscribe(topics=[self.summary_topic], listener=self)
        await self._producer.start()
        await self._consumer.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="analytics-windows")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for client in (self._consumer, self._producer):
            if client is not None:
                await client.stop()

    # -- rebalance listener: a new owner starts from the committed marker --------------------

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self._owner = False
        self._reset()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        # The summary partition's holder owns the fold (a topic auto-created with more partitions than declared
        # may give a worker only partitions nothing is written to).
        self._owner = any(tp.partition == SUMMARY_PARTITION for tp in assigned)
        self._reset()
        if self._owner:
            log.info("analytics windows: this worker owns %s", self.summary_topic)

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                got = await self._consumer.getmany(timeout_ms=250, max_records=1000)
                for tp, records in got.items():
                    for rec in records:
                        if await self._fold(tp, rec):  # the position moved: fetch from there
                            break
                await self._after_batch()
            except asyncio.CancelledError:
                raise
            except KafkaError as err:  # a broker blip: start again from the last committed marker
                log.warning("analytics windows: %r; re-reading from the last committed marker", err)
                await asyncio.sleep(1.0)
                await self._new_producer_after(err)
                await self._restart_from_committed()

    async def _new_producer_after(self, err: KafkaError) -> None:
        """An idempotent producer that lost its sequence (OutOfOrderSequenceNumber or UnknownProducerId, e.g.
        after a broker restart) refuses every later send: start a new one (a new producer id). Windows it
        had not written are written again from the committed marker, with the same values."""
        if not isinstance(err, (OutOfOrderSequenceNumber, UnknownProducerId)) or self._producer is None:
            return
        old, self._producer = self._producer, self._new_producer()
        try:
            await asyncio.wait_for(old.stop(), 5.0)
        except Exception as stop_err:  # noqa: BLE001 - the old one is broken anyway
            log.debug("analytics windows: stopping the old producer: %r", stop_err)
        await self._producer.start()
        log.warning("analytics windows: the producer was replaced after %r", err)

    async def _restart_from_committed(self) -> None:
        assert self._consumer is not None
        self._reset()
        held = self._consumer.assignment()
        if held:
            try:
                committed = await self._consumer.seek_to_committed(*held)
                uncommitted = [tp for tp, offset in committed.items() if not offset]
                if uncommitted:
                    await self._consumer.seek_to_beginning(*uncommitted)
            except (KafkaError, AssertionError) as err:
                log.warning("analytics windows: seek to the committed marker failed: %r", err)

    def _reset(self) -> None:
        """Forget the fold: the next record read is at the committed position (a new owner, a re-read)."""
        self.fold, self._last_marker = WindowFold(self.size_ms), 0

    @staticmethod
    def _decode(rec: Any) -> Any:
        try:
            return orjson.loads(rec.value)
        except (orjson.JSONDecodeError, TypeError):
            log.warning("analytics windows: record at offset %d is not JSON; skipped", rec.offset)
            return None

    async def _after_batch(self) -> None:
        """After each fetched batch: the owner's boundary marker."""
        await self._mark()

    async def _fold(self, tp: TopicPartition, rec: Any) -> bool:
        """Fold one record of the log; True when it moved the consumer's position (a subclass's restart)."""
        value = self._decode(rec)
        if value is None:
            return False
        if is_marker(value):
            self._last_marker = max(self._last_marker, int(value["marker"]))
        closed = self.fold.add(value, rec.timestamp)
        if closed is None:
            return False
        await self._emit(closed)
        try:  # the marker opens the next window: a new owner starts there
            await self._consumer.commit({tp: rec.offset})  # type: ignore[union-attr]
        except (KafkaError, AssertionError) as err:
            log.warning("analytics windows: commit at marker %d failed (%r); the window may be emitted again, "
                        "with the same values", rec.offset, err)
        return False

    async def _emit(self, records: list[AnalyticsRecord]) -> None:
        assert self._producer is not None
        topic = self.topology.topics.analytics
        sends = [await self._producer.send(topic, key=f"{r.metric}|{r.key or ''}".encode(), value=encode(r))
                 for r in records]
        await asyncio.gather(*sends)
        for r in records:
            self.recent.append(r.model_dump())
            METRICS.windows_emitted.labels(r.metric).inc()

    async def _mark(self) -> None:
        """The owner appends the marker of the window its clock is in, once."""
        boundary = int(time.time() * 1000) // self.size_ms * self.size_ms
        if not self._owner or boundary <= self._last_marker:
            return
        assert self._producer is not None
        await (await self._producer.send(self.summary_topic, key=MARKER_KEY, value=marker(boundary),
                                         partition=SUMMARY_PARTITION))
        self._last_marker = boundary

    # -- the dashboard's view --------------------------------------------------------------

    def current(self) -> list[dict[str, Any]]:
        """The open window (on the owner; empty elsewhere), by metric and key."""
        fold = self.fold
        if fold.start is None:
            return []
        return [{"metric": r.metric, "key": r.key or "", "window_start": r.window_start, "window_end": r.window_end,
                 "values": r.values} for r in fold.closed(fold.start + self.size_ms)]
