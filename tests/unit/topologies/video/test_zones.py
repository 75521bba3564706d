"""Lines and zones over the demo clip: crossings equal the ground truth, dwell times are within one
frame interval, and a whole route's state (tracker, lines, zones, windows) survives a snapshot."""

from __future__ import annotations

from typing import Any

import pytest

from infertide.demo.shapes import demo_clip
from schemas.video import VideoConfig
from tests.fixtures.video import detections, shape_at
from topologies.video import VideoFrame, VideoStreams

CLIP = demo_clip()
CFG = VideoConfig.model_validate(CLIP.video_config())
TS0 = 1_700_000_000_000
DT = 1000 / CLIP.fps


def run(vs: VideoStreams, frames: list[int], stream: str = "cam") -> dict[int, VideoFrame]:
    return {f: vs.process(stream, f, CLIP.pts_ms(f), TS0 + CLIP.pts_ms(f), detections(CLIP, f)) for f in frames}


def owners(out: dict[int, VideoFrame]) -> dict[int, str]:
    """track id -> shape name."""
    return {b["track_id"]: shape_at(CLIP, f, b["xyxy"]) for f, vf in out.items() for b in vf.boxes
            if b["track_id"] is not None}


def crossings(out: dict[int, VideoFrame]) -> list[tuple[int, str, str]]:
    who = owners(out)
    return sorted((f, who[c.track_id], c.direction) for f, vf in out.items() for c in vf.zones.crossings)


def visits(vs: VideoStreams, out: dict[int, VideoFrame]) -> dict[str, list[int]]:
    """shape -> dwell (ms) of each visit, ended or still open at the end."""
    who = owners(out)
    ended = [v for vf in out.values() for v in vf.zones.visits] + vs.zones.open_visits("cam")
    got: dict[str, list[int]] = {}
    for v in sorted(ended, key=lambda v: v.start_pts):
        got.setdefault(who[v.track_id], []).append(v.dwell_ms)
    return got


ALL = list(range(CLIP.frames))


def test_crossings_equal_the_ground_truth() -> None:
    out = run(VideoStreams(CFG), ALL)
    assert crossings(out) == CLIP.crossings() == CLIP.crossings(unseen_first=1)
    assert [d for _, _, d in CLIP.crossings()] == ["out", "out", "in", "in"]  # the clip crosses both ways


def test_dwell_times_are_exact_with_every_frame() -> None:
    vs = VideoStreams(CFG)
    got = visits(vs, run(vs, ALL))
    want = {name: [round((last - first) * DT)] for name, first, last in CLIP.visits()}
    assert got == want == {"a": [2040], "e": [1360]}


@pytest.mark.parametrize("every_n", [2, 3])
def test_sampled_frames_count_the_same_crossings_and_dwell_within_an_interval(every_n: int) -> None:
    frames = ALL[::every_n]
    vs = VideoStreams(CFG)
    out = run(vs, frames)
    # Counted on the first kept frame past the line, once the track has its id (its second kept frame).
    assert crossings(out) == CLIP.crossings(frames, unseen_first=1)
    if every_n == 2:
        assert [(s, d) for _, s, d in crossings(out)] == [(s, d) for _, s, d in CLIP.crossings()]
    else:  # d crosses between its first and second kept frame (12, 15), before it has an id: not counted
        assert CLIP.crossings(frames, unseen_first=1) == [c for c in CLIP.crossings(frames) if c[:2] != (15, "d")]
    got = visits(vs, out)
    for name, first, last in CLIP.visits():
        truth = (last - first) * DT
        (dwell,) = got[name]
        assert abs(dwell - truth) <= every_n * DT, (name, dwell, truth)  # one sampled interval


def test_occupancy_is_the_tracks_inside() -> None:
    out = run(VideoStreams(CFG), ALL)
    who = owners(out)
    x0, y0, x1, y1 = CLIP.zone
    for f, vf in out.items():
        inside = sorted(who[t] for t in vf.zones.inside["queue"])
        want = sorted(s.name for s in CLIP.shapes if s.box(f) is not None
                      and x0 < s.centre(f)[0] < x1 and y0 < s.centre(f)[1] < y1)  # type: ignore[index]
        confirmed = [n for n in want if any(shape_at(CLIP, f, b["xyxy"]) == n and b["track_id"] is not None
                                            for b in vf.boxes)]
        assert inside == confirmed, f


def _flat(out: dict[int, VideoFrame]) -> list[Any]:
    return [(f, vf.boxes, vf.zones, vf.deltas, vf.stale) for f, vf in sorted(out.items())]


@pytest.mark.parametrize("cut", [5, 40, 64, 70, 90, 112])
def test_a_route_restored_mid_clip_counts_as_if_never_stopped(cut: int) -> None:
    reference = run(VideoStreams(CFG, window_s=1), ALL)
    first = VideoStreams(CFG, window_s=1)
    run(first, ALL[:cut + 1])
    snap = first.snapshot("cam")
    restored = VideoStreams(CFG, window_s=1)  # a new worker: nothing shared but the bytes
    restored.restore("cam", snap)
    after = run(restored, ALL[cut + 1:])
    assert _flat(after) == _flat({f: reference[f] for f in ALL[cut + 1:]})


def test_a_replayed_frame_is_stale_and_counts_nothing() -> None:
    vs = VideoStreams(CFG)
    run(vs, ALL[:30])
    again = vs.process("cam", 29, CLIP.pts_ms(29), TS0 + CLIP.pts_ms(29), detections(CLIP, 29))
    assert again.stale and again.deltas == [] and not again.zones.crossings


def test_streams_without_geometry_only_track() -> None:
    cfg = VideoConfig.model_validate({"streams": {"cam-1": CLIP.video_config()["streams"]["*"]}})
    vs = VideoStreams(cfg)
    vf = vs.process("cam-2", 0, 0, TS0, detections(CLIP, 0))
    vf = vs.process("cam-2", 1, 40, TS0 + 40, detections(CLIP, 1))
    assert all(b["track_id"] is not None for b in vf.boxes) and vf.zones.inside == {}


def test_a_restarted_stream_ends_its_visits_and_starts_its_lines_afresh() -> None:
    data = CLIP.video_config()
    data["tracker"]["restart_after_s"] = 1
    vs = VideoStreams(VideoConfig.model_validate(data))
    before = run(vs, ALL[:91])  # e is inside the zone since frame 66
    who = owners(before)
    after = run(vs, ALL[:20])  # the producer restarts the stream: pts from 0 again (3.6 s back)
    assert vs.trackers.restarts == 1
    (visit,) = after[0].zones.visits
    assert who[visit.track_id] == "e" and visit.dwell_ms == (90 - 66) * DT
    assert crossings(after) == [c for c in CLIP.crossings() if c[0] < 20]  # d crosses again, under its new id
    assert not {b["track_id"] for vf in after.values() for b in vf.boxes} & set(who)
