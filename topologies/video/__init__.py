"""Video routes: one tracker per stream, lines and zones counted per stream, folded into windows.

Pure parts the route engine calls: :class:`StreamTrackers` (boxes -> boxes with ``track_id``),
:class:`StreamZones` (tracked boxes -> crossings, occupancy, dwell), :class:`VideoWindows`
(per-window analytics deltas) and :class:`VideoStreams`, which runs the three for one route and
snapshots a stream's whole state as one value. ``docs/video.md`` says when the engine calls what.
"""

from topologies.video.fold import METRIC, VideoWindows, WindowDelta, add_to, finalize_video, window_starts
from topologies.video.streams import VideoFrame, VideoStreams
from topologies.video.tracking import SNAPSHOT_VERSION, SnapshotError, StreamTrackers
from topologies.video.zones import Crossing, StreamZones, Visit, ZoneFrame

__all__ = [
    "METRIC",
    "SNAPSHOT_VERSION",
    "Crossing",
    "SnapshotError",
    "StreamTrackers",
    "StreamZones",
    "VideoFrame",
    "VideoStreams",
    "VideoWindows",
    "Visit",
    "WindowDelta",
    "ZoneFrame",
    "add_to",
    "finalize_video",
    "window_starts",
]
