"""One ByteTrack tracker per ``stream_id``: boxes in, the same boxes with a ``track_id`` out.

Contract:

- **One tracker per stream**, so streams never share or mix track ids; ids start at 0 per stream.
- **The clock is the frame's ``pts_ms``.** Each update passes ``pts_ms / 1000`` to the tracker as its
  timestamp, so a frame skipped by sampling or dropped for lag is a longer Kalman step, and a lost
  track ends after ``lost_track_buffer / 30`` seconds of pts, whatever the sampling.
- **Frames of a stream must come in order of pts.** A frame with a ``pts_ms`` earlier than the
  last (a replay of a frame already folded, or out of order), or the same ``pts_ms`` and a
  ``frame_index`` not past the last, changes nothing and gets ``track_id: None`` on every box
  (counted in :attr:`StreamTrackers.stale`). A ``pts_ms`` more than ``restart_after_s`` behind the
  last means the producer started the stream again: its tracks end, its ids go on from the last
  one (counted in :attr:`StreamTrackers.restarts`).
- **A snapshot continues exactly.** ``restore(snapshot())`` into a new process gives the same ids for
  the following frames as the tracker that was never stopped. The engine takes a stream's snapshot
  after folding the last frame a commit covers, and writes it keyed by ``stream_id`` with that commit.
- A box gets ``track_id: None`` until its track is confirmed (``minimum_consecutive_frames``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import supervision as sv
from trackers import ByteTrackTracker

from schemas.video import TrackerConfig
from topologies.video.state import check_tracker_shape, continue_ids, restore_tracker, tracker_state

__all__ = ["SNAPSHOT_VERSION", "SnapshotError", "StreamTrackers"]

SNAPSHOT_VERSION = 1
Box = Mapping[str, Any]


class SnapshotError(ValueError):
    """A snapshot that cannot be restored (wrong stream, unknown version, not JSON)."""


@dataclass
class _Stream:
    tracker: ByteTrackTracker
    last_frame: int | None = None
    last_pts: int | None = None


class StreamTrackers:
    """Trackers of the streams a worker owns, bounded in number.

    Args:
        cfg: the route's ``video.tracker`` settings.
        max_streams: streams kept at once; the least recently updated is forgotten beyond it
            (its ids restart at 0 if it comes back without a restore).
    """

    def __init__(self, cfg: TrackerConfig | None = None, *, max_streams: int = 10_000) -> None:
        check_tracker_shape()
        self.cfg = cfg or TrackerConfig()
        self.max_streams = max_streams
        self.stale = 0
        self.restarts = 0
        self._streams: OrderedDict[str, _Stream] = OrderedDict()

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._streams

    def __len__(self) -> int:
        return len(self._streams)

    def _new_tracker(self) -> ByteTrackTracker:
        c = self.cfg
        return ByteTrackTracker(
            lost_track_buffer=c.lost_track_buffer, frame_rate=c.frame_rate,
            track_activation_threshold=c.track_activation_threshold,
            minimum_consecutive_frames=c.minimum_consecutive_frames,
            minimum_iou_threshold=c.minimum_iou_threshold, high_conf_det_threshold=c.high_conf_det_threshold,
        )

    def _stream(self, stream_id: str) -> _Stream:
        s = self._streams.get(stream_id)
        if s is None:
            s = self._streams[stream_id] = _Stream(self._new_tracker())
            if len(self._streams) > self.max_streams:
                self._streams.popitem(last=False)
        else:
            self._streams.move_to_end(stream_id)
        return s

    def update(self, stream_id: str, frame_index: int, pts_ms: int, boxes: Sequence[Box]) -> list[dict[str, Any]]:
        """The frame's boxes, in their order, each with ``track_id`` (an int, or ``None``).

        Args:
            stream_id: the stream the frame belongs to.
            frame_index: its index in the stream (tells a replay from a new frame with the same pts).
            pts_ms: its presentation time (non-decreasing): the tracker's clock.
            boxes: detections as the detection model returns them (``xyxy``, ``score``, ``class_id``...).
        """
        s = self._stream(stream_id)
        if s.last_pts is not None and s.last_frame is not None:
            if s.last_pts - pts_ms > self.cfg.restart_after_s * 1000:
                fresh = self._new_tracker()
                continue_ids(fresh, s.tracker)
                s.tracker, s.last_frame, s.last_pts = fresh, None, None
                self.restarts += 1
            elif pts_ms < s.last_pts or (pts_ms == s.last_pts and frame_index <= s.last_frame):
                self.stale += 1
                return [{**b, "track_id": None} for b in boxes]
        s.last_frame, s.last_pts = frame_index, pts_ms
        n = len(boxes)
        dets = sv.Detections(
            xyxy=np.array([b["xyxy"] for b in boxes], dtype=np.float64).reshape(n, 4),
            confidence=np.array([b.get("score", 1.0) for b in boxes], dtype=np.float64),
            class_id=np.array([b.get("class_id", 0) for b in boxes], dtype=int),
            data={"i": np.arange(n)},
        )
        tracked = s.tracker.update(dets, timestamp=pts_ms / 1000.0)
        ids: list[int | None] = [None] * n
        if len(tracked):
            for i, tid in zip(tracked.data["i"].tolist(), tracked.tracker_id.tolist()):
                ids[i] = tid if tid >= 0 else None
        return [{**b, "track_id": ids[i]} for i, b in enumerate(boxes)]

    # -- state -----------------------------------------------------------------------------

    def state(self, stream_id: str) -> dict[str, Any] | None:
        """The stream's state as plain data (``None`` for a stream not seen)."""
        s = self._streams.get(stream_id)
        if s is None:
            return None
        return {"frame": s.last_frame, "pts": s.last_pts, "tracker": tracker_state(s.tracker)}

    def load(self, stream_id: str, state: Mapping[str, Any]) -> None:
        """Replace the stream's state with ``state`` (from :meth:`state`)."""
        s = _Stream(self._new_tracker(), state["frame"], state["pts"])
        restore_tracker(s.tracker, dict(state["tracker"]))
        self._streams[stream_id] = s
        self._streams.move_to_end(stream_id)
        if len(self._streams) > self.max_streams:
            self._streams.popitem(last=False)

    def snapshot(self, stream_id: str) -> bytes:
        """The stream's tracker as JSON bytes, to store keyed by ``stream_id`` (``b""`` for a stream not seen)."""
        state = self.state(stream_id)
        if state is None:
            return b""
        return orjson.dumps({"v": SNAPSHOT_VERSION, "stream_id": stream_id, **state})

    def restore(self, stream_id: str, data: bytes) -> None:
        """Continue ``stream_id`` from a snapshot; ``b""`` (nothing stored) starts it afresh.

        Raises:
            SnapshotError: the bytes are not a snapshot of this stream in a known version.
        """
        if not data:
            self.forget(stream_id)
            return
        state = decode_snapshot(stream_id, data)
        self.load(stream_id, state)

    def forget(self, stream_id: str) -> None:
        """Drop a stream's state (its partition moved away)."""
        self._streams.pop(stream_id, None)


def decode_snapshot(stream_id: str, data: bytes) -> dict[str, Any]:
    """The state in a snapshot of ``stream_id``, checked for version and stream."""
    try:
        state = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise SnapshotError(f"snapshot of stream {stream_id!r} is not JSON ({err}); delete its key from the "
                            "snapshot topic to start the stream afresh") from None
    if not isinstance(state, dict) or state.get("v") != SNAPSHOT_VERSION:
        got = state.get("v") if isinstance(state, dict) else type(state).__name__
        raise SnapshotError(f"snapshot of stream {stream_id!r} has version {got!r}, this worker reads "
                            f"{SNAPSHOT_VERSION}; delete its key from the snapshot topic to start the stream afresh")
    if state.get("stream_id") != stream_id:
        raise SnapshotError(f"snapshot under key {stream_id!r} is of stream {state.get('stream_id')!r}; "
                            "snapshots are keyed by their stream_id")
    return state
