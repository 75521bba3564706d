"""The per-window counts of a stream, folded frame by frame into analytics deltas.

Per window (by the frame's event time ``ts``) and stream, metric ``video``, key ``stream_id``:

| field | meaning |
| --- | --- |
| ``frames`` | frames tracked (after sampling) |
| ``tracks`` | unique track ids seen |
| ``line.<name>.in`` / ``.out`` | crossings of the line |
| ``zone.<name>.tracks`` | unique track ids seen inside the zone |
| ``zone.<name>.occupancy_sum`` / ``_max`` | tracks inside, summed over the frames / the most in one frame |
| ``zone.<name>.visits`` / ``.dwell_ms_sum`` / ``.dwell_ms_max`` | visits that ended, their dwell times |

Every delta adds up: the fold remembers, per open window, the tracks it has counted and the maxima
it has reported, so a window's ``tracks`` grows by one for each new id and its ``occupancy_max``
grows by the rise of the maximum. Summed per window, the deltas are the window's values, however
the frames were split into batches. :func:`finalize_video` derives the means.

The sums are per window only when the deltas land in the window they name (``WindowDelta.start``):
event-time analytics windows (``analytics.window``, :mod:`topologies.state.event_windows`), which
:func:`add_to` files them under. Summed into the default log-order windows instead, the additive
fields (frames, crossings, occupancy_sum, visits, dwell_ms_sum) stay exact, while ``tracks`` and the
maxima are approximate (kept per event-time window, not per log window).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from topologies.state.analytics import finalize
from topologies.state.event_windows import window_starts
from topologies.video.zones import ZoneFrame

__all__ = ["METRIC", "VideoWindows", "WindowDelta", "add_to", "finalize_video", "window_starts"]

METRIC = "video"


class WindowDelta(NamedTuple):
    """One addition to one window: the window's start (ms, event time) and the analytics delta."""

    start: int
    metric: str
    key: str
    field: str
    amount: float


@dataclass
class _Window:
    tracks: set[int] = field(default_factory=set)
    zone_tracks: dict[str, set[int]] = field(default_factory=dict)
    occ_max: dict[str, int] = field(default_factory=dict)
    dwell_max: dict[str, int] = field(default_factory=dict)


class VideoWindows:
    """Folds frames of many streams into per-window deltas; remembers only the windows still open.

    Args:
        size_ms: window length.
        step_ms: hop between window starts (default ``size_ms``: tumbling).
        keep_ms: how long after its end a window is remembered, for frames of a stream whose
            ``ts`` is a little out of order (default ``size_ms``); a frame for a window already
            forgotten counts that window's ``tracks`` and maxima again.
        max_streams: streams remembered at once.
    """

    def __init__(self, size_ms: int, step_ms: int | None = None, *, keep_ms: int | None = None,
                 max_streams: int = 10_000) -> None:
        if size_ms <= 0 or (step_ms is not None and not 0 < step_ms <= size_ms):
            raise ValueError(f"window size {size_ms} ms and step {step_ms} ms: need 0 < step <= size")
        self.size_ms, self.step_ms = size_ms, step_ms or size_ms
        self.keep_ms = size_ms if keep_ms is None else keep_ms
        self.max_streams = max_streams
        self._streams: OrderedDict[str, dict[int, _Window]] = OrderedDict()

    def fold(self, stream_id: str, ts_ms: int, boxes: Sequence[Mapping[str, Any]], zones: ZoneFrame
             ) -> list[WindowDelta]:
        """The deltas of one frame: its tracked boxes and what its lines and zones counted."""
        windows = self._streams.get(stream_id)
        if windows is None:
            windows = self._streams[stream_id] = {}
            if len(self._streams) > self.max_streams:
                self._streams.popitem(last=False)
        else:
            self._streams.move_to_end(stream_id)
        for start in [s for s in windows if s + self.size_ms + self.keep_ms <= ts_ms]:
            del windows[start]
        ids = {int(b["track_id"]) for b in boxes if b.get("track_id") is not None}
        out: list[WindowDelta] = []
        for start in window_starts(ts_ms, self.size_ms, self.step_ms):
            w = windows.setdefault(start, _Window())

            def add(fld: str, amount: float, start: int = start) -> None:
                if amount:  # a zero adds nothing but a record
                    out.append(WindowDelta(start, METRIC, stream_id, fld, float(amount)))

            add("frames", 1)
            if new := len(ids - w.tracks):
                add("tracks", new)
                w.tracks |= ids
            for c in zones.crossings:
                add(f"line.{c.line}.{c.direction}", 1)
            for zone, inside in zones.inside.items():
                seen = w.zone_tracks.setdefault(zone, set())
                if new := len(set(inside) - seen):
                    add(f"zone.{zone}.tracks", new)
                    seen.update(inside)
                add(f"zone.{zone}.occupancy_sum", len(inside))
                if (rise := len(inside) - w.occ_max.get(zone, 0)) > 0:
                    add(f"zone.{zone}.occupancy_max", rise)
                    w.occ_max[zone] = len(inside)
            for v in zones.visits:
                add(f"zone.{v.zone}.visits", 1)
                add(f"zone.{v.zone}.dwell_ms_sum", v.dwell_ms)
                if (rise := v.dwell_ms - w.dwell_max.get(v.zone, 0)) > 0:
                    add(f"zone.{v.zone}.dwell_ms_max", rise)
                    w.dwell_max[v.zone] = v.dwell_ms
        return out

    # -- state -----------------------------------------------------------------------------

    def state(self, stream_id: str) -> dict[str, Any] | None:
        windows = self._streams.get(stream_id)
        if windows is None:
            return None
        return {str(start): {"tracks": sorted(w.tracks), "zone_tracks": {z: sorted(t) for z, t in w.zone_tracks.items()},
                             "occ_max": w.occ_max, "dwell_max": w.dwell_max}
                for start, w in windows.items()}

    def load(self, stream_id: str, state: Mapping[str, Any]) -> None:
        self._streams[stream_id] = {
            int(start): _Window(set(w["tracks"]), {z: set(t) for z, t in w["zone_tracks"].items()},
                                dict(w["occ_max"]), dict(w["dwell_max"]))
            for start, w in state.items()}
        self._streams.move_to_end(stream_id)
        if len(self._streams) > self.max_streams:
            self._streams.popitem(last=False)

    def forget(self, stream_id: str) -> None:
        self._streams.pop(stream_id, None)


def add_to(deltas: Any, window_deltas: Iterable[WindowDelta]) -> None:
    """Add window deltas to a batch's ``topologies.state.analytics.Deltas``: under the window they name when
    the batch files event-time windows (``EventDeltas``), else the start is dropped (log-order windows; see
    the module docstring for what stays exact)."""
    add_window = getattr(deltas, "add_window", None)
    for d in window_deltas:
        if add_window is not None:
            add_window(d.start, d.metric, d.key, d.field, d.amount)
        else:
            deltas.add(d.metric, d.key, d.field, d.amount)


def finalize_video(values: Mapping[str, float]) -> dict[str, float]:
    """What a closed ``video`` window reports: its sums, plus ``zone.<z>.occupancy_mean`` (per frame)
    and ``zone.<z>.dwell_ms_mean`` (per ended visit)."""
    return finalize(METRIC, dict(values))  # the analytics windows' own finalize: one definition of the means
