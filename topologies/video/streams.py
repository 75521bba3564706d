"""One video route's per-stream state in one object: tracker, lines and zones, window counts.

What the route engine calls (docs/video.md):

- per kept frame, in the stream's order, after the detection reply: :meth:`VideoStreams.process`
  -> the boxes with ``track_id`` (for the result record) and the frame's window deltas (for the
  batch's analytics, counted events only; replayed ones are folded too, so the state advances);
- once per commit, for each stream the committed batches touched, after folding their last frame
  and before folding later frames: :meth:`VideoStreams.snapshot` -> bytes to write keyed by
  ``stream_id`` to a compacted topic, with the commit (in exactly-once, in its transaction);
- when a partition is assigned, for each stream key read back: :meth:`VideoStreams.restore`;
  when it is revoked: :meth:`VideoStreams.forget` for its streams.

A frame the tracker has already folded (its ``pts_ms`` not past the stream's last) changes
nothing: its boxes come back with ``track_id: None`` and no deltas (``stale``). A stream whose pts
goes back further than ``tracker.restart_after_s`` starts again: tracks, lines and visits afresh, ids
continuing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.video import VideoConfig
from topologies.video.fold import VideoWindows, WindowDelta
from topologies.video.tracking import SNAPSHOT_VERSION, StreamTrackers, decode_snapshot
from topologies.video.zones import StreamZones, ZoneFrame

__all__ = ["VideoFrame", "VideoStreams"]


@dataclass
class VideoFrame:
    """What one frame gave: its boxes with ``track_id``, what its lines and zones saw, its deltas."""

    boxes: list[dict[str, Any]]
    zones: ZoneFrame = field(default_factory=ZoneFrame)
    deltas: list[WindowDelta] = field(default_factory=list)
    stale: bool = False


class VideoStreams:
    """Tracking, lines, zones and window counts of one video route.

    Args:
        cfg: the route's ``video`` section.
        window_s: the analytics window (``video.window_s`` wins when set).
        step_s: the hop of hopping windows (default: tumbling).
    """

    def __init__(self, cfg: VideoConfig, *, window_s: int = 10, step_s: int | None = None) -> None:
        self.cfg = cfg
        size_ms = (cfg.window_s or window_s) * 1000
        self.trackers = StreamTrackers(cfg.tracker, max_streams=cfg.max_streams)
        self.zones = StreamZones(cfg)
        self.windows = VideoWindows(size_ms, step_s * 1000 if step_s else None, max_streams=cfg.max_streams)

    def process(self, stream_id: str, frame_index: int, pts_ms: int, ts_ms: int,
                boxes: Sequence[Mapping[str, Any]]) -> VideoFrame:
        """Track one frame's boxes and count its lines, zones and windows."""
        stale_before, restarts_before = self.trackers.stale, self.trackers.restarts
        tracked = self.trackers.update(stream_id, frame_index, pts_ms, boxes)
        if self.trackers.stale != stale_before:
            return VideoFrame(tracked, stale=True)
        ended = []
        if self.trackers.restarts != restarts_before:  # the stream started again: its tracks and visits end
            ended = self.zones.open_visits(stream_id)
            self.zones.forget(stream_id)
        zf = self.zones.update(stream_id, pts_ms, tracked)
        zf.visits[:0] = ended
        return VideoFrame(tracked, zf, self.windows.fold(stream_id, ts_ms, tracked, zf))

    def snapshot(self, stream_id: str) -> bytes:
        """The stream's whole state as JSON bytes (``b""`` for a stream not seen)."""
        tracker = self.trackers.state(stream_id)
        if tracker is None:
            return b""
        return orjson.dumps({"v": SNAPSHOT_VERSION, "stream_id": stream_id, **tracker,
                             "zones": self.zones.state(stream_id) or {},
                             "windows": self.windows.state(stream_id) or {}})

    def restore(self, stream_id: str, data: bytes) -> None:
        """Continue ``stream_id`` from :meth:`snapshot`'s bytes (``b""``: start it afresh).

        Raises:
            SnapshotError: not a snapshot of this stream in a version this worker reads.
        """
        if not data:
            self.forget(stream_id)
            return
        state = decode_snapshot(stream_id, data)
        self.trackers.load(stream_id, state)
        self.zones.load(stream_id, state.get("zones", {}))
        self.windows.load(stream_id, state.get("windows", {}))

    def forget(self, stream_id: str) -> None:
        """Drop the stream's state (its partition was revoked)."""
        self.trackers.forget(stream_id)
        self.zones.forget(stream_id)
        self.windows.forget(stream_id)
