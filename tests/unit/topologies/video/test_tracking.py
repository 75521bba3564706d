"""StreamTrackers: ids stable per object over the demo clip, across gaps in pts, and across a
snapshot / restore at any frame (the restored tracker continues exactly)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
import pytest

from infertide.demo.shapes import Clip, demo_clip
from schemas.video import TrackerConfig
from tests.fixtures.video import detections, id_switches, shape_at
from topologies.video import SnapshotError, StreamTrackers
from topologies.video.state import check_tracker_shape

CLIP = demo_clip()
CFG = TrackerConfig(frame_rate=CLIP.fps)


def run(trackers: StreamTrackers, frames: list[int], stream: str = "cam", clip: Clip = CLIP
        ) -> dict[int, list[dict[str, Any]]]:
    return {f: trackers.update(stream, f, clip.pts_ms(f), detections(clip, f)) for f in frames}


def ids_by_shape(out: dict[int, list[dict[str, Any]]], clip: Clip = CLIP) -> dict[str, list[int | None]]:
    ids: defaultdict[str, list[int | None]] = defaultdict(list)
    for f, boxes in sorted(out.items()):
        for b in boxes:
            ids[shape_at(clip, f, b["xyxy"])].append(b["track_id"])
    return dict(ids)


ALL = list(range(CLIP.frames))
REFERENCE = run(StreamTrackers(CFG), ALL)


def test_library_state_is_where_snapshots_read_it() -> None:
    check_tracker_shape()


def test_each_shape_keeps_one_id_over_the_clip() -> None:
    ids = ids_by_shape(REFERENCE)
    assert id_switches(ids) == 0
    assert len({i for v in ids.values() for i in v if i is not None}) == len(CLIP.shapes)
    for name, seq in ids.items():
        # Confirmed on its second frame (minimum_consecutive_frames=2), then always, also after the gap of b.
        assert seq[0] is None and None not in seq[1:], (name, seq)


def test_boxes_keep_their_order_and_fields() -> None:
    f = 60
    out = REFERENCE[f]
    assert [{k: v for k, v in b.items() if k != "track_id"} for b in out] == detections(CLIP, f)


@pytest.mark.parametrize("cut", [1, 10, 30, 45, 46, 64, 65, 77, 100, 118])
def test_restore_continues_exactly(cut: int) -> None:
    first = StreamTrackers(CFG)
    run(first, list(range(cut + 1)))
    snap = first.snapshot("cam")
    restored = StreamTrackers(CFG)  # a new process: nothing shared with `first`
    restored.restore("cam", snap)
    after = list(range(cut + 1, CLIP.frames))
    assert run(restored, after) == {f: REFERENCE[f] for f in after}
    run(first, after)
    assert restored.snapshot("cam") == first.snapshot("cam")  # same Kalman state, to the last bit


def test_snapshot_is_small_plain_json() -> None:
    t = StreamTrackers(CFG)
    run(t, list(range(61)))
    snap = t.snapshot("cam")
    state = orjson.loads(snap)
    assert state["v"] == 1 and state["stream_id"] == "cam" and state["frame"] == 60
    tracks = state["tracker"]["tracks"]
    assert len(tracks) == 5  # every shape is on frame 60
    assert len(snap) < 1600 * len(tracks) + 200


def test_streams_do_not_mix() -> None:
    t = StreamTrackers(CFG)
    out: dict[str, dict[int, list[dict[str, Any]]]] = {"cam-1": {}, "cam-2": {}}
    for f in range(CLIP.frames + 7):  # cam-2 runs 7 frames behind cam-1, interleaved
        if f < CLIP.frames:
            out["cam-1"][f] = t.update("cam-1", f, CLIP.pts_ms(f), detections(CLIP, f))
        if f >= 7:
            g = f - 7
            out["cam-2"][g] = t.update("cam-2", g, CLIP.pts_ms(g), detections(CLIP, g))
    assert out["cam-1"] == REFERENCE and out["cam-2"] == REFERENCE


def kept_frames(every_n: int, dropped: range) -> list[int]:
    return [f for f in ALL if f % every_n == 0 and f not in dropped]


GAPS = [(2, range(0)), (3, range(0)), (4, range(0)), (1, range(50, 56)), (1, range(50, 62)), (2, range(50, 58))]


@pytest.mark.parametrize(("every_n", "dropped"), GAPS)
def test_frames_skipped_or_dropped_keep_ids(every_n: int, dropped: range) -> None:
    """The tracker's clock is pts: a gap from sampling or a lag drop is a longer step, not a lost track."""
    ids = ids_by_shape(run(StreamTrackers(CFG), kept_frames(every_n, dropped)))
    assert id_switches(ids) == 0
    assert len({i for v in ids.values() for i in v if i is not None}) == len(CLIP.shapes)


def test_counting_calls_instead_of_pts_would_switch_ids() -> None:
    """Why the clock is pts: the same tracker stepped one frame per call (no timestamp) loses the
    fast shapes across these gaps and gives them new ids."""
    import numpy as np
    import supervision as sv
    from trackers import ByteTrackTracker

    switched = 0
    for every_n, dropped in GAPS:
        tracker, ids = ByteTrackTracker(frame_rate=CLIP.fps), defaultdict(list)
        for f in kept_frames(every_n, dropped):
            boxes = detections(CLIP, f)
            dets = sv.Detections(xyxy=np.array([b["xyxy"] for b in boxes]).reshape(-1, 4),
                                 confidence=np.full(len(boxes), 0.9), data={"i": np.arange(len(boxes))})
            out = tracker.update(dets)
            for i, tid in zip(out.data["i"].tolist(), out.tracker_id.tolist()):
                ids[shape_at(CLIP, f, boxes[i]["xyxy"])].append(tid if tid >= 0 else None)
        switched += id_switches(dict(ids)) > 0
    assert switched >= 3  # measured: every 4th frame, a 12-frame drop, every 2nd with an 8-frame drop


def test_a_frame_already_folded_changes_nothing() -> None:
    t = StreamTrackers(CFG)
    run(t, list(range(41)))
    before = t.snapshot("cam")
    replay = t.update("cam", 39, CLIP.pts_ms(39), detections(CLIP, 39))
    assert [b["track_id"] for b in replay] == [None] * len(replay) and t.stale == 1
    assert t.snapshot("cam") == before
    assert run(t, list(range(41, CLIP.frames))) == {f: REFERENCE[f] for f in range(41, CLIP.frames)}


def test_restore_refuses_what_is_not_this_streams_snapshot() -> None:
    t = StreamTrackers(CFG)
    run(t, [0, 1, 2])
    snap = t.snapshot("cam")
    with pytest.raises(SnapshotError, match="snapshots are keyed by their stream_id"):
        StreamTrackers(CFG).restore("other", snap)
    with pytest.raises(SnapshotError, match="has version 99.*delete its key"):
        StreamTrackers(CFG).restore("cam", orjson.dumps({**orjson.loads(snap), "v": 99}))
    with pytest.raises(SnapshotError, match="is not JSON"):
        StreamTrackers(CFG).restore("cam", b"\x80garbage")
    fresh = StreamTrackers(CFG)
    fresh.restore("cam", b"")  # nothing stored: the stream starts afresh
    assert "cam" not in fresh and fresh.snapshot("cam") == b""


def test_streams_beyond_the_bound_are_forgotten() -> None:
    t = StreamTrackers(CFG, max_streams=2)
    for s in ("a", "b", "c"):
        t.update(s, 0, 0, detections(CLIP, 0))
    assert len(t) == 2 and "a" not in t and "c" in t


def test_a_stream_that_starts_again_keeps_ids_unique() -> None:
    t = StreamTrackers(CFG)  # restart_after_s: 60
    first = run(t, ALL)
    t.update("cam", CLIP.frames + 5, CLIP.pts_ms(CLIP.frames - 1) + 120_000, [])  # 2 quiet minutes
    # Then the producer restarts the stream: frame_index and pts from 0 again.
    again = {f: t.update("cam", f, CLIP.pts_ms(f), detections(CLIP, f)) for f in ALL}
    assert t.restarts == 1 and t.stale == 0
    old_ids = {b["track_id"] for boxes in first.values() for b in boxes} - {None}
    new_ids = {b["track_id"] for boxes in again.values() for b in boxes} - {None}
    assert len(new_ids) == len(old_ids) == len(CLIP.shapes) and not old_ids & new_ids
    assert id_switches(ids_by_shape(again)) == 0


def test_a_new_frame_counter_with_a_later_pts_is_not_a_replay() -> None:
    t = StreamTrackers(CFG)
    run(t, list(range(11)))
    out = t.update("cam", 0, CLIP.pts_ms(11), detections(CLIP, 11))  # the producer's counter restarted
    assert t.stale == 0 and all(b["track_id"] is not None for b in out)
