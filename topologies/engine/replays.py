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
- At-least-once only: in exactly-once a summary exists only if its transaction committed together
  with its input offsets, so a next owner never re-reads a summarized record and nothing is scanned.
- On assignment, :meth:`SummaryScanner.learn` reads the new partitions' committed offsets with their
  metadata, scans the summary topic from the smallest metadata offset (from its start when a
  partition has no commit or no valid metadata) to its end as of now, and keeps per partition the
  end of the ranges already summarized. Records below that bound are marked ``counted=False``:
  processed for results and dead letters, left out of the new summaries.
- Bounded: the whole lookup gives up after ``timeout_s`` (10 s), at most half the group's session
  timeout, so a slow scan never costs the member its session in a rebalance; then (or
  on any error) everything is counted (analytics at-least-once) and a WARNING says so. Nothing
  runs without a summary topic.
- Metadata stays near the end (:meth:`SummaryScanner.end` and :meth:`topologies.engine.ledger.PartitionLedger.refreshes`): every ``REFRESH_S`` (and soon after an
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
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition

from schemas.summary import SUMMARY_PARTITION
from topologies.engine.ledger import TP, parse_metadata

__all__ = ["REFRESH_S", "SCAN_TIMEOUT_S", "SummaryScanner", "scan_start", "summarized_upto", "summary_offset"]

log = logging.getLogger(__name__)

SCAN_TIMEOUT_S = 10.0
REFRESH_S = 30.0


def summary_offset(located: Iterable[Any], summary_topic: str | None) -> int | None:
    """The summary-topic offset of a batch's summary among its located deliveries."""
    if summary_topic is None:
        return None
    offsets = [d.offset for d in located if getattr(d, "topic", None) == summary_topic]
    return max(offsets) if offsets else None


def scan_start(committed: Mapping[TP, tuple[int | None, str | None]], partitions: Iterable[TP]) -> int:
    """Where to start reading the summary topic for ``partitions``, from their committed ``(offset, metadata)``:
    the smallest summary offset, or 0 when any has no commit or no valid metadata."""
    starts = []
    for tp in partitions:
        offset, metadata = committed.get(tp, (None, None))
        summary = parse_metadata(metadata) if offset is not None and offset >= 0 else -1
        if summary < 0:
            return 0
        starts.append(summary)
    return min(starts, default=0)


def summarized_upto(values: Iterable[bytes | None], wanted: set[TP], into: dict[TP, int] | None = None
                    ) -> dict[TP, int]:
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
                tp, end = (topic, int(partition)), int(span[1])
            except (TypeError, ValueError, IndexError, KeyError):
                continue
            if tp in wanted and end > upto.get(tp, -1):
                upto[tp] = end
    return upto


class SummaryScanner:
    """Reads the summary topic (one partition) for what previous owners summarized, and its end.

    Args:
        summary_topic: the summary topic (None: nothing is ever read, everything is counted).
        config: librdkafka connection settings (``topologies.kafka_settings.confluent_config``).
        timeout_s: one lookup gives up after this long (then everything counts).
        session_timeout_s: the group's session timeout; a lookup takes at most half of it.
    """

    def __init__(self, summary_topic: str | None, config: dict[str, Any], *, timeout_s: float = SCAN_TIMEOUT_S,
                 session_timeout_s: float | None = None) -> None:
        self.summary_topic = summary_topic
        self.config = config
        self.timeout_s = timeout_s if session_timeout_s is None else min(timeout_s, session_timeout_s / 2)
        self._consumer: Consumer | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="summary-scan")

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _scanner(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(self.config | {"group.id": "infertide-summary-scan", "enable.auto.commit": False,
                                                     "isolation.level": "read_uncommitted",
                                                     "allow.auto.create.topics": False})
        return self._consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._call(self._consumer.close)
            self._consumer = None
        self._thread.shutdown(wait=False)

    async def learn(self, committed: Mapping[TP, tuple[int | None, str | None]]) -> dict[TP, int]:
        """What the previous owners of ``committed``'s partitions summarized past their commits:
        ``{tp: end of the summarized offsets}``; {} with a WARNING when it could not be read in time."""
        if self.summary_topic is None or not committed:
            return {}
        try:
            upto = await asyncio.wait_for(
                self._call(self._scan, scan_start(committed, committed), set(committed)), self.timeout_s)
        except Exception as err:  # noqa: BLE001 - never stall a rebalance: count everything instead
            log.warning("could not read what the previous owners of %s summarized (%r, limit %.0fs); their "
                        "replayed events will be counted again in analytics", _names(committed), err, self.timeout_s)
            return {}
        lines = [f"partition {t}[{p}]: offsets {max(committed[(t, p)][0] or 0, 0)}..{end - 1}"
                 for (t, p), end in sorted(upto.items()) if end > max(committed[(t, p)][0] or 0, 0)]
        if lines:
            log.info("%s already summarized by its previous owner; reprocessed for results, not counted again",
                     "; ".join(lines))
        return upto

    async def end(self) -> int | None:
        """The summary topic's end offset now (None: no summary topic, or it does not exist yet).

        Raises:
            asyncio.TimeoutError: not known within the lookup limit (the broker is away, or a scan still runs).
        """
        if self.summary_topic is None:
            return None
        return await asyncio.wait_for(self._call(self._end), self.timeout_s + 1)

    def _end(self) -> int | None:
        consumer = self._scanner()
        meta = consumer.list_topics(self.summary_topic, timeout=self.timeout_s)
        if self.summary_topic not in meta.topics or meta.topics[self.summary_topic].error is not None:
            return None  # not created yet: nothing was summarized (and asking for it could auto-create it)
        return int(consumer.get_watermark_offsets(TopicPartition(self.summary_topic, SUMMARY_PARTITION),
                                                 timeout=self.timeout_s)[1])

    def _scan(self, start: int, wanted: set[TP]) -> dict[TP, int]:
        """Read the summary topic from ``start`` to its end as of now (blocking: on the scan thread)."""
        upto: dict[TP, int] = {}
        end = self._end()
        if end is None or end <= start:
            return upto
        consumer = self._scanner()
        tp = TopicPartition(self.summary_topic, SUMMARY_PARTITION, start)
        consumer.assign([tp])
        # Bounded: the caller stops waiting after timeout_s, and this thread must not outlive it (later lookups
        # queue behind it). The position, not the last message's offset, says how far it read: a transaction's
        # commit or abort marker takes an offset and is never handed out.
        deadline = time.monotonic() + self.timeout_s
        try:
            position = start
            while position < end:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"summary scan reached {position} of {end} in {self.timeout_s:.0f}s")
                for msg in consumer.consume(2000, 0.2):
                    if msg.error() is not None:
                        if msg.error().fatal():
                            raise KafkaException(msg.error())
                        continue
                    if msg.offset() < end:
                        summarized_upto((msg.value(),), wanted, upto)
                position = max(position, consumer.position([tp])[0].offset)
            return upto
        finally:
            consumer.unassign()  # an assigned consumer keeps prefetching the topic between scans


def _names(partitions: Iterable[TP]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(partitions))
