"""The per-window fold: each window's deltas, summed in any split into batches, equal the window's
values computed offline from the frames (tumbling and hopping), and survive a snapshot."""

from __future__ import annotations

from collections import defaultdict

import pytest

from infertide.demo.shapes import demo_clip
from schemas.video import VideoConfig
from tests.fixtures.video import detections
from topologies.state.analytics import Deltas
from topologies.video import VideoFrame, VideoStreams, VideoWindows, add_to, finalize_video, window_starts

CLIP = demo_clip()
CFG = VideoConfig.model_validate(CLIP.video_config())
TS0 = 1_700_000_000_000


@pytest.mark.parametrize(("ts", "size", "step", "want"), [
    (25, 10, 10, [20]), (20, 10, 10, [20]), (29, 10, 10, [20]),
    (25, 10, 5, [20, 25]), (24, 10, 5, [15, 20]), (25, 10, 3, [18, 21, 24]), (3, 10, 5, [0]),
])
def test_window_starts(ts: int, size: int, step: int, want: list[int]) -> None:
    assert window_starts(ts, size, step) == want


def test_a_step_longer_than_the_size_is_refused() -> None:
    with pytest.raises(ValueError, match="0 < step <= size"):
        VideoWindows(1000, 2000)


def frames_out(vs: VideoStreams) -> dict[int, VideoFrame]:
    return {f: vs.process("cam", f, CLIP.pts_ms(f), TS0 + CLIP.pts_ms(f), detections(CLIP, f))
            for f in range(CLIP.frames)}


def offline(out: dict[int, VideoFrame], size_ms: int, step_ms: int) -> dict[int, dict[str, float]]:
    """Window values straight from the frames: sets, maxima and sums, no deltas."""
    acc: defaultdict[int, dict[str, object]] = defaultdict(lambda: {
        "frames": 0, "tracks": set(), "in": 0, "out": 0, "ztracks": set(), "occ": [], "dwell": []})
    for f, vf in out.items():
        for start in window_starts(TS0 + CLIP.pts_ms(f), size_ms, step_ms):
            w = acc[start]
            w["frames"] += 1  # type: ignore[operator]
            w["tracks"] |= {b["track_id"] for b in vf.boxes if b["track_id"] is not None}  # type: ignore[operator]
            w["in"] += sum(c.direction == "in" for c in vf.zones.crossings)  # type: ignore[operator]
            w["out"] += sum(c.direction == "out" for c in vf.zones.crossings)  # type: ignore[operator]
            w["ztracks"] |= set(vf.zones.inside["queue"])  # type: ignore[operator]
            w["occ"].append(vf.zones.occupancy("queue"))  # type: ignore[attr-defined]
            w["dwell"] += [v.dwell_ms for v in vf.zones.visits]  # type: ignore[operator]
    values = {}
    for start, w in acc.items():
        v = {"frames": w["frames"], "tracks": len(w["tracks"]), "line.door.in": w["in"], "line.door.out": w["out"],
             "zone.queue.tracks": len(w["ztracks"]), "zone.queue.occupancy_sum": sum(w["occ"]),
             "zone.queue.occupancy_max": max(w["occ"]), "zone.queue.visits": len(w["dwell"]),
             "zone.queue.dwell_ms_sum": sum(w["dwell"]), "zone.queue.dwell_ms_max": max(w["dwell"], default=0)}
        values[start] = {k: float(x) for k, x in v.items() if x}  # type: ignore[arg-type]
    return values


def summed(out: dict[int, VideoFrame]) -> dict[int, dict[str, float]]:
    sums: defaultdict[int, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
    for vf in out.values():
        for d in vf.deltas:
            assert d.metric == "video" and d.key == "cam"
            sums[d.start][d.field] += d.amount
    return {s: dict(v) for s, v in sums.items()}


@pytest.mark.parametrize(("size_s", "step_s"), [(1, None), (2, None), (2, 1), (3, 1)])
def test_deltas_sum_to_the_windows_computed_offline(size_s: int, step_s: int | None) -> None:
    out = frames_out(VideoStreams(CFG, window_s=size_s, step_s=step_s))
    want = offline(out, size_s * 1000, (step_s or size_s) * 1000)
    assert summed(out) == want
    assert sum(v.get("line.door.in", 0) for v in want.values()) == (2 if step_s is None else 2 * size_s // step_s)


def test_the_split_into_batches_and_a_restart_change_no_window() -> None:
    reference = summed(frames_out(VideoStreams(CFG, window_s=2, step_s=1)))
    vs, out = VideoStreams(CFG, window_s=2, step_s=1), {}
    for f in range(CLIP.frames):
        if f in (13, 50, 51, 99):  # a new worker takes over from the snapshot
            snap = vs.snapshot("cam")
            vs = VideoStreams(CFG, window_s=2, step_s=1)
            vs.restore("cam", snap)
        out[f] = vs.process("cam", f, CLIP.pts_ms(f), TS0 + CLIP.pts_ms(f), detections(CLIP, f))
    assert summed(out) == reference


def test_finalize_adds_the_means_and_add_to_fills_batch_deltas() -> None:
    out = frames_out(VideoStreams(CFG, window_s=10))
    (values,) = summed(out).values()  # the clip (4.8 s) fits one 10 s window
    final = finalize_video(values)
    assert final["zone.queue.occupancy_mean"] == pytest.approx(values["zone.queue.occupancy_sum"] / values["frames"])
    assert final["zone.queue.dwell_ms_mean"] == (2040 + 1360) / 2  # a's and e's visits, both ended in the clip
    assert final["tracks"] == 5 and final["line.door.in"] == 2 and final["line.door.out"] == 2
    deltas = Deltas()
    for vf in out.values():
        add_to(deltas, vf.deltas)
    assert deltas.as_dict() == {"video|cam": values}


def test_old_windows_are_forgotten() -> None:
    w = VideoWindows(1000)
    from topologies.video import ZoneFrame

    for ts in range(0, 10_000, 40):
        w.fold("cam", ts, [], ZoneFrame())
    assert sorted(int(s) for s in w.state("cam")) == [8000, 9000]  # the open window and the one before
