"""Replays after a crash, counted once: what a partition's previous owner already summarized.

The route consumer commits an input offset only after the batch's outputs are acked, so when a
worker dies its partitions' next owner re-reads everything after the last commit. Results may be
duplicated (at-least-once), but the dead owner's summaries of those batches are already on the
summary topic, and counting the replayed events again would count them twice in analytics.

Contract (with :mod:`topologies.engine.consumer` and :mod:`topologies.engine.batch`):

- Every summary names the input topic and the offset ranges of its batch (``topic``,
  ``ranges: {"<partition>": [first, last + 1]}``).
- Each commit carries, as metadata, the summary-topic offset of the summary of the last acked batch
  of that partition (a decimal string). One producer writes a worker's summaries in batch order to
  the one partition of the summary topic, so any summary of a later batch of that input partition
  lies at a larger offset: the metadata is where a next owner starts reading.
- On assignment, :meth:`Replays.learn` reads the new partitions' committed offsets with their
  metadata, scans the summary topic from the smallest metadata offset (from its start when a
  partition has no commit or no valid metadata) to its end as of now, and keeps per partition the
  end of the ranges already summarized. Records below that bound are marked ``counted=False``:
  processed for results and dead letters, left out of the new summaries.
- Bounded: the whole lookup gives up after ``timeout_s`` (10 s), at most half the group's session
  timeout, because aiokafka sends no heartbeats while it awaits the assignment listener; then (or
  on any error) everything is counted (analytics at-least-once) and a WARNING says so. Nothing
  runs without a summary topic.
- Metadata stays near the end (:meth:`Replays.refreshes`): every ``REFRESH_S`` (and soon after an
  assignment, for partitions never committed) an idle partition (no batch in flight) is committed
  again at its committed offset (its log start when it has none) with the summary topic's end as
  metadata. That is safe because all its summaries are acked, so below that end, and a batch
  submitted later is summarized after it; a submit while the end is read disqualifies it. So a scan
  reads the summaries since the last refresh, not since the partition was last busy.
- Batches abandoned at a revocation publish no summary from then on (their events are read again
  and counted by the next owner), and a worker flushes its producer before it scans, so its own
  buffered summaries are read.
- Not covered: a worker that is not dead but cut off (a zombie whose abandoned batches were
  published before the revocation) may append summaries after another next owner's scan; those
  events may count twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from topologies.engine.records import InputRecord

__all__ = ["REFRESH_S", "SCAN_TIMEOUT_S", "Replays", "scan_start", "summarized_upto", "summary_offset"]

log = logging.getLogger(__name__)

SCAN_TIMEOUT_S = 10.0
REFRESH_S = 30.0
STALE_AFTER = 1000  # an idle partition's metadata this many summary records behind the end is moved up


def summary_offset(results: Iterable[Any], summary_topic: str | None) -> int | None:
    """The summary-topic offset of a batch's summary among its delivery results (``RecordMetadata``)."""
    if summary_topic is None:
        return None
    for meta in results:
        if getattr(meta, "topic", None) == summary_topic:
            return int(meta.offset)  # the base offset of its record batch: the summary is alone in it
    return None


def parse_metadata(metadata: str | None) -> int | None:
    """A summary-topic offset from commit metadata; None when absent or not ours."""
    try:
        offset = int(metadata or "")
    except ValueError:
        return None
    return offset if offset >= 0 else None


def scan_start(committed: Mapping[TopicPartition, Any], partitions: Iterable[TopicPartition]) -> int:
    """Where to start reading the summary topic for ``partitions``, from their committed
    ``OffsetAndMetadata``: the smallest summary offset, or 0 when any has no commit or no valid metadata."""
    starts = []
    for tp in partitions:
        meta = committed.get(tp)
        offset = parse_metadata(meta.metadata) if meta is not None and meta.offset >= 0 else None
        if offset is None:
            return 0
        starts.append(offset)
    return min(starts, default=0)


def summarized_upto(values: Iterable[bytes | None], wanted: set[TopicPartition],
                    into: dict[TopicPartition, int] | None = None) -> dict[TopicPartition, int]:
    """Per wanted input partition, the end (exclusive) of the offsets the given summary records cover.

    Records that are not JSON objects with ``topic`` and ``ranges`` (window markers, summaries
    written before ranges existed) are skipped.
    """
    upto = {} if into is None else into
    for value in values:
        try:
            doc = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            continue
        if not isinstance(doc, dict) or not isinstance(ranges := doc.get("ranges"), dict):
            continue
        topic = doc.get("topic")
        for partition, span in ranges.items():
            try:
                tp, end = TopicPartition(topic, int(partition)), int(span[1])
            except (TypeError, ValueError, IndexError, KeyError):
                continue
            if tp in wanted and end > upto.get(tp, -1):
                upto[tp] = end
    return upto


async def fetch_committed(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> dict[TopicPartition, Any]:
    """``{tp: OffsetAndMetadata}`` of the consumer's group. aiokafka's public ``committed()`` drops the
    metadata, so this asks its group coordinator (private API, aiokafka 0.14); partitions without a
    commit are absent."""
    return await consumer._coordinator.fetch_committed_offsets(partitions)


class Replays:
    """What the previous owners of this worker's partitions summarized, and the commit metadata to leave.

    Args:
        summary_topic: the summary topic (None: nothing is ever looked up, everything is counted).
        kafka_kwargs: aiokafka client settings (bootstrap, security).
        timeout_s: the whole lookup of one assignment gives up after this long (then everything counts).
        session_timeout_s: the group's session timeout; the lookup takes at most half of it (no heartbeats
            are sent while the assignment listener runs).
    """

    def __init__(self, summary_topic: str | None, kafka_kwargs: dict[str, Any], *,
                 timeout_s: float = SCAN_TIMEOUT_S, session_timeout_s: float | None = None) -> None:
        self.summary_topic = summary_topic
        self.kafka_kwargs = kafka_kwargs
        self.timeout_s = timeout_s if session_timeout_s is None else min(timeout_s, session_timeout_s / 2)
        self.pending: dict[TopicPartition, int] = {}  # records below this offset were already summarized
        self.summary_at: dict[TopicPartition, int] = {}  # summary offset of the last acked batch, per partition
        self.in_flight: dict[TopicPartition, int] = {}  # batches submitted and not yet acked, per partition
        self.submits: dict[TopicPartition, int] = {}  # batches ever submitted, per partition
        self.uncommitted: set[TopicPartition] = set()  # held partitions the group never committed
        self._scanner: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        if self.summary_topic is not None:
            self._scanner = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                             **self.kafka_kwargs)
            await self._scanner.start()

    async def stop(self) -> None:
        if self._scanner is not None:
            await self._scanner.stop()
            self._scanner = None

    def forget(self) -> None:
        """On revocation: nothing held, nothing pending."""
        self.pending = {}
        self.summary_at = {}
        self.in_flight = {}
        self.uncommitted = set()

    # -- per batch ----------------------------------------------------------------------

    def mark(self, tp: TopicPartition, records: Sequence[InputRecord]) -> None:
        """Mark the fetched ``records`` of ``tp`` (in offset order) already summarized as not counted."""
        bound = self.pending.get(tp)
        if bound is None or not records:
            return
        for rec in records:
            if rec.offset < bound:
                rec.counted = False
        if records[-1].offset + 1 >= bound:
            del self.pending[tp]  # past it: the partition's later records need no look-up

    def submitted(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self.in_flight[tp] = self.in_flight.get(tp, 0) + 1
            self.submits[tp] = self.submits.get(tp, 0) + 1

    def acked(self, partitions: Iterable[TopicPartition], results: list[Any]) -> None:
        """A batch of ``partitions`` was acked with these delivery results: remember where its summary is."""
        for tp in partitions:
            self.in_flight[tp] = max(0, self.in_flight.get(tp, 0) - 1)
        offset = summary_offset(results, self.summary_topic)
        if offset is not None:
            for tp in partitions:
                if offset > self.summary_at.get(tp, -1):
                    self.summary_at[tp] = offset

    def metadata(self, tp: TopicPartition) -> str:
        """The commit metadata of ``tp``: its last summary's offset, or "" when none is known."""
        offset = self.summary_at.get(tp)
        return "" if offset is None else str(offset)

    async def refreshes(self, committed: Mapping[TopicPartition, int], held: Iterable[TopicPartition]
                        ) -> dict[TopicPartition, tuple[int, str]]:
        """Commits ``{tp: (offset, metadata)}`` that move idle partitions' metadata up to the summary topic's
        end (``committed``: the offsets the group holds for them). Empty when none is due or on any error."""
        try:
            return await asyncio.wait_for(self._refreshes(committed, list(held)), self.timeout_s)
        except Exception as err:  # noqa: BLE001 - only a later scan's length depends on it
            log.warning("could not refresh the summary offsets in commit metadata: %r", err)
            return {}

    async def _refreshes(self, committed: Mapping[TopicPartition, int], held: list[TopicPartition]
                         ) -> dict[TopicPartition, tuple[int, str]]:
        scanner = self._scanner
        before = {tp: self.submits.get(tp, 0) for tp in held if not self.in_flight.get(tp)}
        if scanner is None or not before or self.summary_topic not in await scanner.topics():
            return {}
        stp = TopicPartition(self.summary_topic, 0)
        end = (await scanner.end_offsets([stp]))[stp]
        due = [tp for tp, n in before.items() if self.submits.get(tp, 0) == n and not self.in_flight.get(tp)
               and (tp in self.uncommitted or (tp in committed and self.summary_at.get(tp, -1) < end - STALE_AFTER))]
        fresh = [tp for tp in due if tp in self.uncommitted]
        starts = await scanner.beginning_offsets(fresh) if fresh else {}
        return {tp: (starts[tp] if tp in self.uncommitted else committed[tp], str(end)) for tp in due
                if tp in starts or tp not in self.uncommitted}

    def did_commit(self, commits: Mapping[TopicPartition, tuple[int, str]]) -> None:
        """The group now holds ``commits``: their partitions are committed, their metadata is current."""
        for tp, (_, metadata) in commits.items():
            self.uncommitted.discard(tp)
            if (offset := parse_metadata(metadata)) is not None:
                self.summary_at[tp] = max(self.summary_at.get(tp, -1), offset)

    # -- on assignment -------------------------------------------------------------------

    async def learn(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition], *,
                    flush: Callable[[], Awaitable[Any]] | None = None) -> dict[TopicPartition, int]:
        """Find what the previous owners of the newly assigned ``partitions`` already summarized
        (``flush``: this worker's producer, so its own summaries still buffered are read too).

        Returns the partitions' committed offsets (0 when none) as read on the way; {} when not read.
        """
        self.pending = {}
        if self._scanner is None or not partitions:
            return {}
        try:
            committed, upto = await asyncio.wait_for(self._learn(consumer, partitions, flush), self.timeout_s)
        except Exception as err:  # noqa: BLE001 - never stall a rebalance: count everything instead
            log.warning("could not read what the previous owners of %s summarized (%r, limit %.0fs); their "
                        "replayed events will be counted again in analytics", _names(partitions), err, self.timeout_s)
            return {}
        self.uncommitted = {tp for tp in partitions if tp not in committed or committed[tp].offset < 0}
        for tp, meta in committed.items():  # a valid lower bound for this partition's next commits
            if (offset := parse_metadata(meta.metadata)) is not None:
                self.summary_at[tp] = max(self.summary_at.get(tp, -1), offset)
        offsets = {tp: max(committed[tp].offset, 0) if tp in committed else 0 for tp in partitions}
        lines = []
        for tp in sorted(upto):
            start = offsets.get(tp, 0)
            if upto[tp] > start:
                self.pending[tp] = upto[tp]
                lines.append(f"partition {tp.topic}[{tp.partition}]: offsets {start}..{upto[tp] - 1}")
        if lines:
            log.info("%s already summarized by its previous owner; reprocessed for results, not counted again",
                     "; ".join(lines))
        return offsets

    async def _learn(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition],
                     flush: Callable[[], Awaitable[Any]] | None
                     ) -> tuple[dict[TopicPartition, Any], dict[TopicPartition, int]]:
        if flush is not None:
            await flush()
        committed = await fetch_committed(consumer, partitions)
        return committed, await self._scan(scan_start(committed, partitions), set(partitions))

    async def _scan(self, start: int, wanted: set[TopicPartition]) -> dict[TopicPartition, int]:
        """Read the summary topic (one partition) from ``start`` to its end as of now."""
        scanner, tp = self._scanner, TopicPartition(self.summary_topic, 0)
        assert scanner is not None
        if self.summary_topic not in await scanner.topics():
            return {}  # not created yet, so nothing was summarized (and asking for it could auto-create it)
        scanner.assign([tp])
        try:
            end = (await scanner.end_offsets([tp]))[tp]
            upto: dict[TopicPartition, int] = {}
            if end <= start:
                return upto
            scanner.seek(tp, start)
            while await scanner.position(tp) < end:
                got = await scanner.getmany(tp, timeout_ms=200, max_records=2000)
                summarized_upto((m.value for m in got.get(tp, ()) if m.offset < end), wanted, upto)
            return upto
        finally:
            scanner.unsubscribe()  # an assigned consumer keeps prefetching the topic between scans


def _names(partitions: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions))
