"""The ``video:`` section of a video route: tracking per stream, and the lines and zones counted per stream.

One tracker runs per ``stream_id`` (``topologies/video``); lines count crossings in and out, zones
count occupancy and dwell time, both over the tracked boxes, in pixel coordinates of the frame::

    routes:
      - name: cameras
        input: video
        kind: video
        models: [detection]
        video:
          tracker: {frame_rate: 25, lost_track_buffer: 30}
          streams:
            cam-1:                       # a stream_id; "*" is every stream without its own entry
              lines:
                door: {start: [0, 120], end: [320, 120]}
              zones:
                queue: {polygon: [[10, 10], [150, 10], [150, 110], [10, 110]]}

See ``docs/video.md`` for what each count means.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, model_validator

from schemas.config_base import PositiveFloat, PositiveInt, Strict

__all__ = ["ANY_STREAM", "Anchor", "LineConfig", "StreamGeometry", "TrackerConfig", "VideoConfig", "ZoneConfig",
           "state_topic"]

#: The ``streams`` key that applies to every stream without an entry of its own.
ANY_STREAM = "*"

#: Which point of a box decides its side of a line or whether it is in a zone (supervision's ``Position``).
Anchor = Literal["center", "bottom_center", "top_center", "center_left", "center_right",
                 "top_left", "top_right", "bottom_left", "bottom_right"]
Point = tuple[float, float]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class TrackerConfig(Strict):
    """ByteTrack's settings (roboflow ``trackers``' ``ByteTrackTracker``; defaults are the library's).

    The tracker's clock is the frame's ``pts_ms``: a frame skipped by sampling or dropped for lag is a
    longer step, not a lost frame. ``frame_rate`` only sets the Kalman filter's unit of time.
    """

    frame_rate: PositiveFloat = Field(30.0, description="nominal frames per second of the streams")
    lost_track_buffer: Annotated[int, Field(ge=0)] = Field(
        30, description="how long a lost track is kept, in frames at 30 fps (30 = 1 s of pts), whatever the rate")
    track_activation_threshold: Fraction = Field(0.7, description="a box needs this score to start a track")
    minimum_consecutive_frames: PositiveInt = Field(
        2, description="frames a new track must be matched in before it gets a track_id")
    minimum_iou_threshold: Fraction = 0.1
    high_conf_det_threshold: Fraction = Field(
        0.6, description="boxes below this score only extend existing tracks (ByteTrack's second stage)")
    restart_after_s: PositiveFloat = Field(
        60.0, description="a frame whose pts is this far behind the stream's last starts the stream again "
                          "(its producer restarted); less far behind, it is a replay and changes nothing")

    @property
    def lost_track_seconds(self) -> float:
        """How long (pts seconds) a track may go unmatched before it ends: ``lost_track_buffer / 30``."""
        return self.lost_track_buffer / 30.0


class LineConfig(Strict):
    """A counting line from ``start`` to ``end`` (pixels). ``in`` is a crossing onto the left-hand side of
    start -> end as drawn on the image (y down): for a line drawn left to right, moving upwards."""

    start: Point
    end: Point
    anchor: Anchor = "bottom_center"
    min_crossing_frames: PositiveInt = Field(
        1, description="frames a track must be seen on the new side before the crossing counts")

    @model_validator(mode="after")
    def _has_length(self) -> LineConfig:
        if self.start == self.end:
            raise ValueError(f"start and end are the same point {list(self.start)}; a line needs two "
                             "different points, e.g. {start: [0, 120], end: [320, 120]}")
        return self


class ZoneConfig(Strict):
    """A polygon zone (pixels, at least 3 points): occupancy per frame, dwell time per track."""

    polygon: Annotated[list[Point], Field(min_length=3)]
    anchor: Anchor = "bottom_center"

    @model_validator(mode="after")
    def _has_area(self) -> ZoneConfig:
        pts = self.polygon
        twice_area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]))
        if abs(twice_area) < 1.0:
            raise ValueError(f"polygon {[list(p) for p in pts]} encloses no area; give at least 3 corners "
                             "that are not on one line, e.g. [[0, 0], [100, 0], [100, 80]]")
        return self


class StreamGeometry(Strict):
    """The lines and zones of one stream (or of every stream, under ``"*"``)."""

    lines: dict[str, LineConfig] = Field(default_factory=dict)
    zones: dict[str, ZoneConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names_fit_field_names(self) -> StreamGeometry:
        # A name becomes part of an analytics field (``line.<name>.in``), read back by splitting on dots.
        for kind, names in (("line", self.lines), ("zone", self.zones)):
            for name in names:
                if not _NAME.match(name):
                    raise ValueError(f"{kind} name {name!r}: use 1-64 letters, digits, '_' or '-' (it becomes "
                                     f"the analytics field {kind}.<name>...), e.g. {name.replace('.', '_')[:64] or 'door'!r}")
        return self


class VideoConfig(Strict):
    """Tracking and counting on a video route; the route's first detection model gives the boxes."""

    tracker: TrackerConfig = TrackerConfig()
    streams: dict[str, StreamGeometry] = Field(
        default_factory=dict, description='per stream_id; "*" applies to streams without their own entry')
    window_s: PositiveInt | None = Field(
        None, description="window of the per-stream counts (unique tracks, occupancy...); default analytics.window_s")
    max_streams: PositiveInt = Field(
        10_000, description="streams whose state a worker keeps at once (least recently seen are forgotten)")

    def geometry(self, stream_id: str) -> StreamGeometry:
        """The lines and zones of ``stream_id``: its own entry, else ``"*"``, else none."""
        return self.streams.get(stream_id) or self.streams.get(ANY_STREAM) or StreamGeometry()


def state_topic(consumer_group: str, route: str) -> str:
    """The compacted topic holding a video route's per-stream snapshots (key ``stream_id``, one partition per
    input partition): ``<kafka.consumer_group>-<route>-video-state``."""
    return f"{consumer_group}-{route}-video-state"
