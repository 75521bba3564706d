"""The state of a ByteTrack tracker and of a supervision ``LineZone`` as plain dicts, and back.

The one module that reads the libraries' state, so that a stream's tracker and line counts can be
written to a compacted topic as JSON and continue after a restart or a partition move exactly as if
nothing had happened (same track ids, same crossings: tests/unit/topologies/video/test_tracking.py).

Why not pickle: a snapshot read back from a topic must not be able to run code, its size must be
known (JSON of numbers: 0.7-1.5 KB per live track), and it should survive a library upgrade or
fail with a clear message. Neither library exports its state, so a few attributes are read here
(``_next_track_id``, ``_last_timestamp``; LineZone's ``_confirmed_crossing_side`` and
``_tracker_frames_absent``): pyproject.toml bounds both libraries to the minor versions this was
checked against, and :func:`check_tracker_shape` fails at start-up, naming the library, if they move.

What a ByteTrack snapshot holds: the id counter, the last timestamp, and per track (live or lost
within its budget) its id, counters, and the Kalman state ``x`` (8) and covariance ``P`` (8x8). The
Kalman transition and process noise are rebuilt from the time step before every predict, and the
measurement noise is a constant of the tracklet class, so ``x`` and ``P`` are the filter's state.
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any

import numpy as np
import supervision as sv
from trackers import ByteTrackTracker
from trackers.core.bytetrack.tracklet import ByteTrackTracklet

__all__ = ["check_tracker_shape", "continue_ids", "line_state", "restore_line", "restore_tracker", "tracker_state"]

_TRACKER_ATTRS = ("tracks", "_next_track_id", "_last_timestamp", "state_estimator_class")
_TRACKLET_ATTRS = ("tracker_id", "age", "time_since_update", "time_since_update_seconds",
                   "number_of_successful_consecutive_updates", "state_estimator")
_LINE_ATTRS = ("crossing_state_history", "_confirmed_crossing_side", "_tracker_frames_absent")


class LibraryStateChanged(RuntimeError):
    """``trackers`` or ``supervision`` no longer keeps its state where snapshots read it."""


def check_tracker_shape() -> None:
    """Fail now, naming the library, when its state is no longer where snapshots look for it.

    Raises:
        LibraryStateChanged: with the missing attribute and the fix.
    """
    tracker = ByteTrackTracker()
    tracklet = ByteTrackTracklet(np.array([0.0, 0.0, 1.0, 1.0]))
    line = sv.LineZone(start=sv.Point(0, 0), end=sv.Point(1, 0))
    for obj, names, lib in ((tracker, _TRACKER_ATTRS, "trackers"), (tracklet, _TRACKLET_ATTRS, "trackers"),
                            (line, _LINE_ATTRS, "supervision")):
        for name in names:
            if not hasattr(obj, name):
                raise LibraryStateChanged(
                    f"{lib}: {type(obj).__name__} has no attribute {name!r}, which stream snapshots save "
                    f"(topologies/video/state.py); install the version pyproject.toml names for {lib}, "
                    "or update state.py and its tests")


def tracker_state(tracker: ByteTrackTracker) -> dict[str, Any]:
    """Everything ``tracker`` needs to continue: plain JSON types (floats round-trip exactly in JSON)."""
    tracks = []
    for t in tracker.tracks:
        kf = t.state_estimator.get_state()
        tracks.append({
            "id": int(t.tracker_id),
            "age": int(t.age),
            "miss": int(t.time_since_update),
            "miss_s": float(t.time_since_update_seconds),
            "hits": int(t.number_of_successful_consecutive_updates),
            "x": [float(v) for v in np.ravel(kf["state"])],
            "P": [float(v) for v in np.ravel(kf["state_covariance"])],
        })
    last = tracker._last_timestamp
    return {"next_id": int(tracker._next_track_id), "last_ts": None if last is None else float(last),
            "tracks": tracks}


def restore_tracker(tracker: ByteTrackTracker, state: dict[str, Any]) -> None:
    """Put ``state`` (from :func:`tracker_state`) into a freshly built ``tracker`` with the same settings."""
    tracks = []
    for s in state["tracks"]:
        x = np.asarray(s["x"], dtype=np.float64)
        t = ByteTrackTracklet(initial_bbox=x[:4].copy(), state_estimator_class=tracker.state_estimator_class)
        kf = t.state_estimator.get_state()
        kf["state"] = x.reshape(kf["state"].shape)
        kf["state_covariance"] = np.asarray(s["P"], dtype=np.float64).reshape(kf["state_covariance"].shape)
        t.state_estimator.set_state(kf)
        t.tracker_id = int(s["id"])
        t.age = int(s["age"])
        t.time_since_update = int(s["miss"])
        t.time_since_update_seconds = float(s["miss_s"])
        t.number_of_successful_consecutive_updates = int(s["hits"])
        tracks.append(t)
    tracker.tracks = tracks
    tracker._next_track_id = int(state["next_id"])
    tracker._last_timestamp = state["last_ts"]


def continue_ids(fresh: ByteTrackTracker, old: ByteTrackTracker) -> None:
    """Let ``fresh`` hand out ids after the last one ``old`` gave (a stream that starts again keeps its ids unique)."""
    fresh._next_track_id = old._next_track_id


def line_state(line: sv.LineZone) -> dict[str, Any]:
    """Per track: its recent sides of the line, the side it is confirmed on, frames it has been absent."""
    return {
        "history": {str(k): [bool(v) for v in d] for k, d in line.crossing_state_history.items()},
        "side": {str(k): bool(v) for k, v in line._confirmed_crossing_side.items()},
        "absent": {str(k): int(v) for k, v in line._tracker_frames_absent.items()},
    }


def restore_line(line: sv.LineZone, state: dict[str, Any]) -> None:
    """Put ``state`` (from :func:`line_state`) into a fresh ``LineZone`` with the same settings."""
    n = line.crossing_history_length
    history: defaultdict[int, deque[bool]] = defaultdict(lambda: deque(maxlen=n))
    for k, v in state["history"].items():
        history[int(k)] = deque(v, maxlen=n)
    line.crossing_state_history = history
    line._confirmed_crossing_side = {int(k): bool(v) for k, v in state["side"].items()}
    line._tracker_frames_absent = {int(k): int(v) for k, v in state["absent"].items()}
