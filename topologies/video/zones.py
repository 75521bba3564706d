"""Lines and zones per stream over tracked boxes: crossings in / out, occupancy, and dwell time per visit.

Crossings are supervision's ``LineZone`` (a track is counted when its anchor is seen on the other
side, ``min_crossing_frames`` frames running); occupancy is supervision's ``PolygonZone`` (tracked
boxes whose anchor is inside). Only boxes with a ``track_id`` take part.

A **visit** of a track to a zone runs from the first to the last frame its anchor is seen inside.
It ends when the track is seen outside the zone, or has not been seen for longer than the tracker
keeps a lost track (``lost_track_buffer / 30`` s of pts). Its dwell time is last minus first pts,
so with every frame processed it is exact to the frame, and with sampling it is short by less than
one sampled interval at each end.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import supervision as sv

from schemas.video import Anchor, StreamGeometry, VideoConfig
from topologies.video.state import line_state, restore_line

__all__ = ["Crossing", "StreamZones", "Visit", "ZoneFrame"]


@dataclass(frozen=True)
class Crossing:
    """A track crossed a line: ``in`` onto the left-hand side of start -> end, ``out`` back."""

    line: str
    track_id: int
    direction: Literal["in", "out"]


@dataclass(frozen=True)
class Visit:
    """A finished stay of a track in a zone."""

    zone: str
    track_id: int
    start_pts: int
    end_pts: int

    @property
    def dwell_ms(self) -> int:
        return self.end_pts - self.start_pts


@dataclass
class ZoneFrame:
    """What one frame changed: crossings, who is in each zone, visits that ended."""

    crossings: list[Crossing] = field(default_factory=list)
    inside: dict[str, list[int]] = field(default_factory=dict)  # zone -> track ids in it now
    visits: list[Visit] = field(default_factory=list)

    def occupancy(self, zone: str) -> int:
        return len(self.inside.get(zone, ()))


def _position(anchor: Anchor) -> sv.Position:
    return sv.Position[anchor.upper()]


class _Stream:
    """One stream's lines, zones and open visits (``zone -> track -> [first pts, last pts]``)."""

    def __init__(self, geo: StreamGeometry) -> None:
        self.lines = {name: sv.LineZone(start=sv.Point(*c.start), end=sv.Point(*c.end),
                                        triggering_anchors=[_position(c.anchor)],
                                        minimum_crossing_threshold=c.min_crossing_frames)
                      for name, c in geo.lines.items()}
        self.zones = {name: sv.PolygonZone(polygon=np.array(c.polygon, dtype=np.float64),
                                           triggering_anchors=[_position(c.anchor)])
                      for name, c in geo.zones.items()}
        self.visits: dict[str, dict[int, list[int]]] = {name: {} for name in geo.zones}


class StreamZones:
    """Counts lines and zones for every stream a worker owns, bounded in number.

    Args:
        cfg: the route's ``video`` section (geometry per stream, the tracker's lost-track time).
    """

    def __init__(self, cfg: VideoConfig) -> None:
        self.cfg = cfg
        self.visit_timeout_ms = cfg.tracker.lost_track_seconds * 1000.0
        self._streams: OrderedDict[str, _Stream] = OrderedDict()

    def _stream(self, stream_id: str) -> _Stream:
        s = self._streams.get(stream_id)
        if s is None:
            s = self._streams[stream_id] = _Stream(self.cfg.geometry(stream_id))
            if len(self._streams) > self.cfg.max_streams:
                self._streams.popitem(last=False)
        else:
            self._streams.move_to_end(stream_id)
        return s

    def update(self, stream_id: str, pts_ms: int, boxes: Sequence[Mapping[str, Any]]) -> ZoneFrame:
        """Fold one frame's tracked boxes (``xyxy``, ``track_id``; others ignored) into the stream's counts."""
        s = self._stream(stream_id)
        out = ZoneFrame()
        if not s.lines and not s.zones:
            return out
        tracked = [b for b in boxes if b.get("track_id") is not None]
        n = len(tracked)
        dets = sv.Detections(
            xyxy=np.array([b["xyxy"] for b in tracked], dtype=np.float64).reshape(n, 4),
            class_id=np.array([b.get("class_id", 0) for b in tracked], dtype=int),
            tracker_id=np.array([b["track_id"] for b in tracked], dtype=int),
        )
        ids = [int(b["track_id"]) for b in tracked]
        for name, line in s.lines.items():
            crossed_in, crossed_out = line.trigger(dets)
            for tid, i, o in zip(ids, crossed_in.tolist(), crossed_out.tolist()):
                if i or o:
                    out.crossings.append(Crossing(name, tid, "in" if i else "out"))
        seen = set(ids)
        for name, zone in s.zones.items():
            inside = [tid for tid, hit in zip(ids, zone.trigger(dets).tolist()) if hit] if n else []
            out.inside[name] = inside
            visits = s.visits[name]
            for tid in inside:
                visit = visits.get(tid)
                if visit is None:
                    visits[tid] = [pts_ms, pts_ms]
                else:
                    visit[1] = pts_ms
            now_in = set(inside)
            for tid, (first, last) in list(visits.items()):
                if tid in now_in:
                    continue
                if tid in seen or pts_ms - last > self.visit_timeout_ms:
                    del visits[tid]
                    out.visits.append(Visit(name, tid, first, last))
        return out

    def open_visits(self, stream_id: str) -> list[Visit]:
        """Visits still running (end = the last frame seen inside), e.g. at the end of a clip."""
        s = self._streams.get(stream_id)
        if s is None:
            return []
        return [Visit(z, tid, first, last) for z, v in s.visits.items() for tid, (first, last) in v.items()]

    # -- state -----------------------------------------------------------------------------

    def state(self, stream_id: str) -> dict[str, Any] | None:
        s = self._streams.get(stream_id)
        if s is None:
            return None
        return {"lines": {name: line_state(line) for name, line in s.lines.items()},
                "visits": {z: {str(tid): v for tid, v in vs.items()} for z, vs in s.visits.items()}}

    def load(self, stream_id: str, state: Mapping[str, Any]) -> None:
        """Replace the stream's state; lines and zones no longer configured are dropped, new ones start empty."""
        s = _Stream(self.cfg.geometry(stream_id))
        for name, line_st in state.get("lines", {}).items():
            if name in s.lines:
                restore_line(s.lines[name], line_st)
        for z, vs in state.get("visits", {}).items():
            if z in s.visits:
                s.visits[z] = {int(tid): [int(v[0]), int(v[1])] for tid, v in vs.items()}
        self._streams[stream_id] = s
        self._streams.move_to_end(stream_id)
        if len(self._streams) > self.cfg.max_streams:
            self._streams.popitem(last=False)

    def forget(self, stream_id: str) -> None:
        self._streams.pop(stream_id, None)
