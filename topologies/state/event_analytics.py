"""Event-time analytics windows on Kafka: the summary log folded by :class:`EventWindowFold`, restartable exactly.

The consumer, the producer, the group (``<consumer_group>-analytics``, one owner of the single summary
partition) and the re-read after a broker error are :class:`topologies.state.windows.AnalyticsWindows`';
this class changes what is folded and where a new owner starts.

Contract:

- **Windows are emitted when the watermark passes their end** (the fold's contract, in
  :mod:`topologies.state.event_windows`), one ``analytics.v1`` record per metric key, before anything
  is committed. No markers are written.
- **Snapshots in the log.** After a fetch in which windows closed (and at least every
  ``SNAPSHOT_EVERY_S`` while summaries are folded), the owner appends the fold's whole state
  ``{"snapshot": {"upto": <offset of the last summary folded>, ...}}`` to the summary topic and commits
  that record's offset. Open windows are not bounded by one commit point: a window may stay open for
  as long as a partition holds the watermark back, and the per-partition maxima of quiet partitions
  cannot be rebuilt by re-reading a suffix of the log; the snapshot carries both.
- **A new owner** (or a re-read after an error) reads the committed record: a snapshot is loaded and
  the fold continues from the record after its ``upto`` (snapshots met later are skipped), so the
  windows it emits are those the first owner emitted or would have (same log, same state: same
  records). With no commit yet it folds the log from its start; a committed record that is not a
  snapshot (the group ran with log-order windows before) is folded from there with an empty state.
- Read ``analytics`` as "latest per (metric|key, window_start) wins": a window emitted before a
  crash and not yet covered by a snapshot is emitted again, with the same values.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from schemas.summary import SUMMARY_PARTITION
from schemas.topology import Topology
from topologies.state.analytics import now_ms
from topologies.state.event_windows import EventWindowFold
from topologies.state.windows import AnalyticsWindows, is_marker

__all__ = ["SNAPSHOT_KEY", "EventTimeWindows", "analytics_windows", "is_snapshot"]

log = logging.getLogger(__name__)

SNAPSHOT_KEY = b"window-snapshot"
SNAPSHOT_EVERY_S = 10.0


def is_snapshot(value: Any) -> bool:
    return isinstance(value, dict) and "snapshot" in value


def analytics_windows(topology: Topology, summary_topic: str, *, bootstrap: str | None = None) -> AnalyticsWindows:
    """The analytics fold the topology asks for: event time (``analytics.window.time: event``) or log order."""
    cls = EventTimeWindows if topology.analytics.event_time is not None else AnalyticsWindows
    return cls(topology, summary_topic, bootstrap=bootstrap)


class EventTimeWindows(AnalyticsWindows):
    """Reads the summary topic as the analytics group, emits event-time windows, snapshots its fold.

    Args:
        topology: the validated topology (``analytics.window``, routes, topics, Kafka settings).
        summary_topic: the summary topic's name.
        bootstrap: overrides ``kafka.bootstrap_servers``.
    """

    def __init__(self, topology: Topology, summary_topic: str, *, bootstrap: str | None = None) -> None:
        super().__init__(topology, summary_topic, bootstrap=bootstrap)
        ew = topology.analytics.event_time
        assert ew is not None, "analytics.window.time is not event"
        self.window = ew
        self.size_ms = ew.size_s * 1000
        self.partitions: dict[str, int] = {}  # route -> input partitions (read from the broker per assignment)
        self.events = self._new_fold()
        self._resume = True  # the next record read is at the committed position
        self._closed = 0  # windows emitted since the last snapshot
        self._folded = 0  # summaries folded since the last snapshot
        self._snapshot_at = time.monotonic()
        self.snapshots = 0  # snapshots written and committed by this instance

    def _new_fold(self) -> EventWindowFold:
        ew = self.window
        return EventWindowFold(ew.size_s * 1000, (ew.step_s or ew.size_s) * 1000, int(ew.grace_s * 1000),
                               partitions=self.partitions,
                               idle_ms=int(ew.idle_s * 1000) if ew.idle_s is not None else None)

    def _reset(self) -> None:
        self.events, self._resume, self._closed, self._folded = self._new_fold(), True, 0, 0

    async def _count_partitions(self) -> None:
        """Every route's input partition count: each holds its route's watermark, idle or not."""
        assert self._producer is not None
        for route in self.topology.routes:
            topic = self.topology.input_topic(route)
            try:
                self.partitions[route.name] = len(await asyncio.wait_for(self._producer.partitions_for(topic), 10))
            except (KafkaError, asyncio.TimeoutError) as err:
                log.warning("analytics windows: partitions of %s unknown (%r); route %s's watermark counts the "
                            "partitions its summaries show", topic, err, route.name)
        self.events.partitions = dict(self.partitions)

    async def _fold(self, tp: TopicPartition, rec: Any) -> bool:
        value = self._decode(rec)
        if self._resume:
            self._resume = False
            await self._count_partitions()
            if is_snapshot(value):
                self.events.load(value["snapshot"])
                self.events.partitions = dict(self.partitions)
                upto = self.events.upto
                log.info("analytics windows: resumed from the snapshot at offset %d (summaries after %s)",
                         rec.offset, upto)
                if upto is not None:
                    assert self._consumer is not None
                    self._consumer.seek(tp, upto + 1)
                    return True
                return False
        if value is None or is_snapshot(value) or is_marker(value):
            return False
        closed = self.events.add(value, rec.offset)
        self._folded += 1
        if closed:
            await self._emit(closed)
            self._closed += len(closed)
        return False

    async def _after_batch(self) -> None:
        """The owner snapshots its fold after windows closed, and now and then while it folds."""
        due = self._folded and time.monotonic() - self._snapshot_at >= SNAPSHOT_EVERY_S
        if self._owner and (self._closed or due):
            await self._snapshot()

    async def _snapshot(self) -> None:
        assert self._producer is not None and self._consumer is not None
        state = self.events.state()
        if state["upto"] is None:
            return
        at = await (await self._producer.send(self.summary_topic, key=SNAPSHOT_KEY,
                                              value=orjson.dumps({"snapshot": state}),
                                              partition=SUMMARY_PARTITION))
        self._closed, self._folded, self._snapshot_at = 0, 0, time.monotonic()
        try:
            await self._consumer.commit({TopicPartition(self.summary_topic, at.partition): at.offset})
            self.snapshots += 1
        except (KafkaError, AssertionError) as err:
            log.warning("analytics windows: commit at snapshot %d failed (%r); a new owner starts at the one "
                        "before, and emits the same windows again with the same values", at.offset, err)

    def current(self) -> list[dict[str, Any]]:
        """Every open window (on the owner; empty elsewhere), by metric and key."""
        return [{"metric": r.metric, "key": r.key or "", "window_start": r.window_start, "window_end": r.window_end,
                 "values": r.values} for r in self.events.current(now_ms())]
