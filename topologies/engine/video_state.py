"""Tracking in the route engine: a video route's per-stream state (tracker, lines, zones, window counts)
that follows its input partitions through the ledger.

What it does for a route with a ``video:`` section (docs/video.md):

- **Per batch, in submission order** (a :class:`Turn` chain: batches infer concurrently, but their frames
  are tracked one batch after the other, as they were submitted), after the model replies and before the
  batch's results and summary are built: every frame with a detection reply goes through
  :meth:`topologies.video.VideoStreams.process`; its boxes gain ``track_id`` in the result, and its
  window deltas (metric ``video``, key ``stream_id``) join the batch's analytics deltas when the record is
  counted (a replay of a frame a previous owner summarized is tracked, not counted).
- **Then one snapshot per stream the batch touched**, as ordinary output records of the batch: to the
  compacted topic :func:`schemas.video.state_topic`, key ``stream_id``, partition = the frame's input
  partition. So in exactly-once the snapshots are in the batch's transaction with its offsets, and in
  at-least-once they are acknowledged before its offsets are committed: the state on the topic never
  describes less than the committed offsets.
- **Whenever the ledger's generation moves** (an assignment, a revocation, an aborted transaction's
  rewind), before the next batch of the new generation is tracked: every stream is forgotten and the
  streams of the held partitions are restored from the snapshot topic (read to its end,
  ``read_committed``). A batch of an older generation is not tracked at all, and its snapshots are not
  published (its partitions' next owner tracks those frames).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from schemas.topology import RouteConfig, Topology
from schemas.video import state_topic
from topologies.engine.batch import Decoded, InferenceFailed
from topologies.engine.ledger import PartitionLedger
from topologies.engine.records import OutRecord
from topologies.metrics import METRICS

__all__ = ["SnapshotReader", "Turn", "VideoRoute", "video_route"]

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 30.0


class Turn:
    """One batch's place in its route's order: :meth:`wait` returns once every batch submitted before it has
    :meth:`release` d its turn (tracked, failed or abandoned)."""

    __slots__ = ("_done", "_prev")

    def __init__(self, prev: Turn | None) -> None:
        self._prev = prev
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def wait(self) -> None:
        if self._prev is not None:
            await asyncio.shield(self._prev._done)
            self._prev = None  # the chain behind it can be collected

    def release(self) -> None:
        if not self._done.done():
            self._done.set_result(None)


class SnapshotReader:
    """Reads partitions of a snapshot topic to their end (``read_committed``): ``{stream_id: snapshot}``.

    Args:
        topic: the snapshot topic.
        config: librdkafka connection settings (``topologies.kafka_settings.confluent_config``).
        timeout_s: one read gives up after this long.
    """

    def __init__(self, topic: str, config: Mapping[str, Any], *, timeout_s: float = READ_TIMEOUT_S) -> None:
        self.topic, self.config, self.timeout_s = topic, dict(config), timeout_s
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="video-state")

    async def read(self, partitions: list[int]) -> dict[str, bytes]:
        if not partitions:
            return {}
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._read, sorted(partitions))

    def _read(self, partitions: list[int]) -> dict[str, bytes]:
        consumer = Consumer(self.config | {"group.id": f"{self.topic}-reader", "enable.auto.commit": False,
                                           "isolation.level": "read_committed", "enable.partition.eof": True,
                                           "auto.offset.reset": "earliest", "allow.auto.create.topics": False})
        try:
            out: dict[str, bytes] = {}
            starts = {}
            for p in partitions:  # an empty partition reports no EOF until something is fetched: skip it
                low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=self.timeout_s)
                if high > low:
                    starts[p] = low
            pending = set(starts)
            if not pending:
                return out
            consumer.assign([TopicPartition(self.topic, p, low) for p, low in sorted(starts.items())])
            deadline = time.monotonic() + self.timeout_s
            while pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.topic}: partitions {sorted(pending)} not read to their end "
                                       f"within {self.timeout_s:.0f}s")
                for msg in consumer.consume(1000, 0.2):
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            pending.discard(msg.partition())
                        elif err.fatal():
                            raise KafkaException(err)
                        continue
                    if msg.key() is not None:
                        out[msg.key().decode()] = msg.value() or b""  # a tombstone: start afresh
            return out
        finally:
            consumer.close()

    def close(self) -> None:
        self._thread.shutdown(wait=False)


class VideoRoute:
    """A video route's tracking state in the engine; see the module docstring.

    Args:
        topology: the validated topology.
        route: a ``kind: video`` route with a ``video:`` section.
        ledger: the route's partition ledger (None: no partitions move, e.g. unit tests of the pipeline).
        reader: where snapshots are read back from on a new generation (None: nothing to restore).
    """

    def __init__(self, topology: Topology, route: RouteConfig, *, ledger: PartitionLedger | None = None,
                 reader: SnapshotReader | None = None) -> None:
        assert route.video is not None, f"route {route.name} has no video: section"
        from topologies import video  # trackers and supervision: imported by workers with a video route only

        self._video = video
        self.cfg, self.window_s = route.video, topology.analytics.size_s
        ew = topology.analytics.event_time  # event time: the analytics windows' own step (their starts)
        self.step_s = ew.step_s if ew is not None else None
        self.model = next(m for m in route.models if topology.models[m].task == "detection")
        self.input_topic = topology.input_topic(route)
        self.topic = state_topic(topology.kafka.consumer_group, route.name)
        self.ledger, self.reader = ledger, reader
        self.streams = video.VideoStreams(self.cfg, window_s=self.window_s, step_s=self.step_s)
        self.restored = 0  # streams restored from snapshots (all generations)
        self._tracked_frames = METRICS.video_frames.labels(route.name, "tracked")
        self._stale_frames = METRICS.video_frames.labels(route.name, "stale")
        self._restored_streams = METRICS.video_streams.labels(route.name, "restored")
        self._restarted_streams = METRICS.video_streams.labels(route.name, "restarted")
        self._synced = -1  # no generation yet: the first batch reads its partitions back
        self._last: Turn | None = None

    # -- order -----------------------------------------------------------------------------

    def enter(self) -> Turn:
        """The next batch's turn (call in submission order, before the batch starts)."""
        self._last = turn = Turn(self._last)
        return turn

    def current(self, ticket: Any) -> bool:
        return ticket is None or self.ledger is None or self.ledger.current(ticket)

    # -- per batch -------------------------------------------------------------------------

    async def apply(self, batch: Decoded, replies: Mapping[str, Any], ticket: Any = None,
                    turn: Turn | None = None) -> list[OutRecord]:
        """Track the batch's frames (boxes gain ``track_id`` in ``replies``; counted records' window deltas
        go into ``batch.deltas``); returns the snapshot records of the streams it touched."""
        if turn is not None:
            await turn.wait()
        if not self.current(ticket):
            return []  # its partitions moved (or its transaction was aborted): their next owner tracks these
        await self._sync()
        if not self.current(ticket):
            return []
        answer = replies.get(self.model)
        if answer is None or isinstance(answer, InferenceFailed):
            return []
        touched: dict[str, int] = {}
        tracked = stale = 0
        restarts = self.streams.trackers.restarts
        process, deltas, add_to = self.streams.process, batch.deltas, self._video.add_to
        for rec, reply in zip(batch.valid, answer[0]):
            if not reply.get("ok"):
                continue
            ev, result = rec.event, reply["result"]
            vf = process(ev.stream_id, ev.frame_index, ev.pts_ms, ev.ts, result.get("boxes") or [])
            result["boxes"] = vf.boxes
            stale += vf.stale
            tracked += not vf.stale
            if rec.counted:
                add_to(deltas, vf.deltas)
            touched[ev.stream_id] = rec.partition
        self._tracked_frames.inc(tracked)
        self._stale_frames.inc(stale)
        self._restarted_streams.inc(self.streams.trackers.restarts - restarts)
        return [OutRecord(self.topic, sid.encode(), self.streams.snapshot(sid), partition=p)
                for sid, p in touched.items()]

    def publishable(self, records: list[OutRecord], ticket: Any) -> list[OutRecord]:
        """A batch's records without its snapshots when the batch is no longer current (at-least-once still
        publishes such a batch's results; its snapshots would describe frames the next owner tracks)."""
        if self.current(ticket):
            return records
        return [r for r in records if r.topic != self.topic]

    # -- generations -----------------------------------------------------------------------

    async def _sync(self) -> None:
        """After the ledger's generation moved: forget every stream, restore the held partitions' streams."""
        ledger = self.ledger
        while ledger is not None and self._synced != ledger.generation:
            generation = ledger.generation
            held = [p for (t, p) in ledger.parts if t == self.input_topic]
            snapshots: dict[str, bytes] = {}
            if self.reader is not None and held:
                try:
                    snapshots = await self.reader.read(held)
                except Exception as err:  # noqa: BLE001 - the route goes on; its streams start afresh
                    log.error("video route: could not read snapshots of partitions %s from %s (%r); their streams "
                              "start afresh (track ids from 0 again, open visits lost)", held,
                              self.reader.topic, err)
            if ledger.generation != generation:
                continue  # moved again while reading
            self.streams = self._video.VideoStreams(self.cfg, window_s=self.window_s, step_s=self.step_s)
            for stream_id, data in snapshots.items():
                try:
                    self.streams.restore(stream_id, data)
                except self._video.SnapshotError as err:
                    log.error("video route: %s; the stream starts afresh", err)
                    continue
                self.restored += bool(data)
                self._restored_streams.inc(bool(data))
            self._synced = generation
            if snapshots:
                log.info("video route: restored %d streams of partitions %s from %s", len(snapshots), held,
                         self.topic)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


def video_route(topology: Topology, route: RouteConfig, ledger: PartitionLedger,
                config: Mapping[str, Any]) -> VideoRoute | None:
    """The route's tracking state when it is a video route with ``video:`` (else None); ``config``: librdkafka
    connection settings for reading snapshots back."""
    if route.kind != "video" or route.video is None:
        return None
    return VideoRoute(topology, route, ledger=ledger,
                      reader=SnapshotReader(state_topic(topology.kafka.consumer_group, route.name), config))
