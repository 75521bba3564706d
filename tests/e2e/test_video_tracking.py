"""The demo clip through a video route with tracking: real Kafka, the shared Serve app's ``shapes`` detector
(a TorchScript checkpoint loaded as any detection model), an ``infertide worker`` SIGKILLed mid-clip and
restarted. Exactly-once, so the replay after the kill is exact: every frame has one result, track ids are
stable per object across the kill (the stream's state came back from the snapshot topic), and the
analytics windows' crossings and dwell equal the clip's ground truth."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any

import pytest

from infertide.clients.produce import now_ms, produce_events
from infertide.demo.shapes import demo_clip
from schemas.events import VideoFrameEvent
from schemas.video import state_topic
from tests.e2e.conftest import Stack, guarantee_edit, latest_windows, read_on, read_topic
from tests.fixtures.video import id_switches, shape_at

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]

CLIP = demo_clip()
STREAM = "cam-1"
KILL_AFTER = 40  # results seen before the SIGKILL (of 120 frames)


def _video_totals(records: list[Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for w in latest_windows(records):
        if w["metric"] == "video" and w["key"] == STREAM:
            for k, v in w["values"].items():
                out[k] = out.get(k, 0.0) + v
    return out


def test_track_ids_stay_stable_across_a_sigkill_and_counts_equal_the_truth(stack: Stack) -> None:
    t0 = time.monotonic()
    route = {"models": ["shapes"], "video": CLIP.video_config(), "batch_size": 8, "max_in_flight": 4,
             "sampling": {"every_n": 1, "max_lag_ms": None}}
    topology, path = stack.topology("vtrack", edit=guarantee_edit("exactly-once"), video=route)
    ts0 = now_ms()
    events = [VideoFrameEvent.model_validate(CLIP.event(f, STREAM, ts0_ms=ts0)) for f in range(CLIP.frames)]
    worker = stack.worker(topology, path, "vtrack-worker").start()
    worker.wait_ready()
    produce_events(topology, "video", events)
    seen = read_topic(stack.bootstrap, topology.topics.detections, timeout=90, until=lambda r: len(r) >= KILL_AFTER)
    worker.kill()
    killed_at = len(seen)
    restarted = stack.worker(topology, path, "vtrack-worker").start()  # the same worker id
    try:
        restarted.wait_ready()
        wanted = {e.event_id for e in events}
        results = read_topic(stack.bootstrap, topology.topics.detections, timeout=120,
                             until=lambda r: wanted <= {v["event_id"] for _, _, v in r})
        results = read_on(stack.bootstrap, topology.topics.detections, results)
        truth = CLIP.crossings()
        analytics = read_topic(stack.bootstrap, topology.topics.analytics, timeout=30,
                               until=lambda r: _video_totals(r).get("frames", 0) >= CLIP.frames)
        snapshots = read_topic(stack.bootstrap, state_topic(topology.kafka.consumer_group, "video"), timeout=2,
                               until=lambda r: False)
    finally:
        code = restarted.stop()
    log = restarted.tail(60)
    elapsed = time.monotonic() - t0

    per_event = Counter(v["event_id"] for _, _, v in results)
    ids: defaultdict[str, list[int | None]] = defaultdict(list)
    for v in sorted({v["event_id"]: v for _, _, v in results}.values(), key=lambda v: v["frame_index"]):
        for b in v["boxes"]:
            ids[shape_at(CLIP, v["frame_index"], b["xyxy"])].append(b.get("track_id"))
    totals = _video_totals(analytics)
    visits = CLIP.visits()
    dwell_truth = sum((last - first) * 1000 / CLIP.fps for _, first, last in visits)
    print(f"\n[video tracking] killed after {killed_at} of {CLIP.frames} results; {len(results)} results, "
          f"{sum(n - 1 for n in per_event.values())} duplicates; ids per shape "
          f"{ {k: sorted({i for i in v if i is not None}) for k, v in ids.items()} }; {id_switches(dict(ids))} id "
          f"switches; crossings in/out {totals.get('line.door.in', 0):.0f}/{totals.get('line.door.out', 0):.0f}; "
          f"dwell {totals.get('zone.queue.dwell_ms_sum', 0):.0f} ms (truth {dwell_truth:.0f}); "
          f"{len(snapshots)} snapshots; {elapsed:.0f} s")
    assert code == 0, log
    assert KILL_AFTER <= killed_at < CLIP.frames, "the kill must land mid-clip"
    assert set(per_event) == {e.event_id for e in events} and max(per_event.values()) == 1, "exactly once"
    assert id_switches(dict(ids)) == 0, dict(ids)
    for name, tids in ids.items():  # an id from each shape's second frame on, the same before and after the kill
        assert None not in tids[1:] and len(set(tids[1:])) == 1, (name, tids)
    assert totals["frames"] == CLIP.frames, totals
    assert (totals.get("line.door.in", 0), totals.get("line.door.out", 0)) == (
        sum(d == "in" for *_, d in truth), sum(d == "out" for *_, d in truth)), totals
    assert totals.get("zone.queue.visits") == len(visits), totals
    assert abs(totals["zone.queue.dwell_ms_sum"] - dwell_truth) <= len(visits) * 1000 / CLIP.fps, totals
