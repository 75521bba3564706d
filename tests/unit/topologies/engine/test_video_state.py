"""Tracking in the route engine (topologies/engine/video_state.py) with fake model calls and a fake producer:
the demo clip's truth boxes as the detector's replies (tests/unit/workers/test_shape_detector.py shows they
are exactly what the shape detector returns)."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from typing import Any

import orjson
import pytest

from infertide.demo.shapes import demo_clip
from schemas.codec import encode
from schemas.events import VideoFrameEvent
from schemas.topology import parse_topology
from schemas.video import state_topic
from tests.fixtures.video import detections, id_switches, shape_at
from tests.unit.topologies.engine.test_pipeline import FakeBroker
from topologies.engine.ledger import PartitionLedger
from topologies.engine.pipeline import RoutePipeline
from topologies.engine.records import InputRecord
from topologies.engine.video_state import VideoRoute
from topologies.metrics import REGISTRY
from topologies.video import finalize_video

CLIP = demo_clip()
TP = ("events.video", 0)


def _topology(**route: Any) -> Any:
    return parse_topology({
        "models": {"shapes": {"task": "detection", "model": "x"}},
        "routes": [{"name": "video", "input": "video", "kind": "video", "models": ["shapes"],
                    "video": CLIP.video_config(), "max_in_flight": 4, **route}],
    })


@pytest.fixture(scope="module")
def frames() -> tuple[list[InputRecord], dict[str, int]]:
    """One record per frame of the clip (stream ``cam-1``, partition 0), and image data -> frame."""
    recs, by_data = [], {}
    for f in range(CLIP.frames):
        ev = CLIP.event(f, "cam-1")
        by_data[ev["image"]["data"]] = f
        recs.append(InputRecord(*TP, f, b"cam-1", encode(VideoFrameEvent.model_validate(ev))))
    return recs, by_data


def _copy(recs: list[InputRecord]) -> list[InputRecord]:
    return [InputRecord(r.topic, r.partition, r.offset, r.key, r.value) for r in recs]


def _infer(by_data: dict[str, int], jitter: float = 0.0) -> Any:
    async def infer(model: str, items: list[Any]) -> list[dict[str, Any]]:
        if jitter:  # later batches may finish first
            await asyncio.sleep(random.uniform(0, jitter))
        return [{"ok": True, "result": {"boxes": detections(CLIP, by_data[it["data"]])},
                 "model": {"name": model, "version": "1"}, "inference_ms": 1.0} for it in items]

    return infer


class FakeReader:
    topic = "snapshots"

    def __init__(self, snapshots: dict[str, bytes]) -> None:
        self.snapshots, self.reads = snapshots, 0

    async def read(self, partitions: list[int]) -> dict[str, bytes]:
        self.reads += 1
        return dict(self.snapshots)


def _ids(results: list[dict[str, Any]]) -> dict[str, list[int | None]]:
    ids: defaultdict[str, list[int | None]] = defaultdict(list)
    for r in sorted(results, key=lambda r: r["frame_index"]):
        for b in r["boxes"]:
            ids[shape_at(CLIP, r["frame_index"], b["xyxy"])].append(b.get("track_id"))
    return dict(ids)


def _video_totals(summaries: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in summaries:
        for k, v in s["metrics"].get("video|cam-1", {}).items():
            out[k] = out.get(k, 0.0) + v
    return out


def _pipeline(topology: Any, broker: FakeBroker, by_data: dict[str, int], *, jitter: float = 0.0,
              ledger: PartitionLedger | None = None, reader: Any = None) -> RoutePipeline:
    pipe = RoutePipeline(topology, topology.routes[0], infer=_infer(by_data, jitter), send_all=broker.publish,
                         summary_topic="sum")
    pipe.video = VideoRoute(topology, topology.routes[0], ledger=ledger, reader=reader)
    return pipe


async def test_frames_are_tracked_in_submission_order_counted_and_snapshotted(frames) -> None:
    recs, by_data = frames
    topology = _topology()
    broker = FakeBroker()
    pipe = _pipeline(topology, broker, by_data, jitter=0.03)
    for i in range(0, len(recs), 7):
        await pipe.submit(_copy(recs[i:i + 7]), ack=lambda _: asyncio.sleep(0))
    await pipe.drain()
    results = broker.values("inference.detections")
    assert [r["frame_index"] for r in results] == list(range(CLIP.frames))
    ids = _ids(results)
    assert id_switches(ids) == 0
    assert all(tid is not None for v in ids.values() for tid in v[1:])  # an id from each shape's 2nd frame
    totals = _video_totals(broker.values("sum"))
    truth = CLIP.crossings()
    assert totals["frames"] == CLIP.frames
    assert totals["tracks"] == len(CLIP.shapes)
    assert (totals["line.door.in"], totals["line.door.out"]) == (sum(d == "in" for *_, d in truth),
                                                                sum(d == "out" for *_, d in truth))
    snaps = [r for r in broker.sent if r.topic == state_topic(topology.kafka.consumer_group, "video")]
    assert len(snaps) == len(range(0, len(recs), 7)) and {(r.key, r.partition) for r in snaps} == {(b"cam-1", 0)}
    assert orjson.loads(snaps[-1].value)["stream_id"] == "cam-1"
    assert finalize_video(totals)["zone.queue.occupancy_mean"] == pytest.approx(
        totals["zone.queue.occupancy_sum"] / CLIP.frames)


async def test_a_new_owner_restores_the_snapshot_and_continues_ids_and_counts(frames) -> None:
    recs, by_data = frames
    topology = _topology()
    cut = 61
    first = FakeBroker()
    ledger = PartitionLedger()
    ledger.assigned({TP: (None, None)})
    pipe = _pipeline(topology, first, by_data, ledger=ledger, reader=FakeReader({}))
    for i in range(0, cut, 8):
        batch = _copy(recs[i:min(i + 8, cut)])
        await pipe.submit(batch, ack=lambda _: asyncio.sleep(0), ticket=ledger.submitted(batch))
    await pipe.drain()
    snapshot = [r for r in first.sent if r.key == b"cam-1" and r.topic.endswith("video-state")][-1].value

    second = FakeBroker()
    ledger2 = PartitionLedger()
    ledger2.assigned({TP: (cut, None)})
    reader = FakeReader({"cam-1": snapshot})
    pipe2 = _pipeline(topology, second, by_data, ledger=ledger2, reader=reader)
    for i in range(cut, len(recs), 8):
        batch = _copy(recs[i:i + 8])
        await pipe2.submit(batch, ack=lambda _: asyncio.sleep(0), ticket=ledger2.submitted(batch))
    await pipe2.drain()
    assert reader.reads == 1
    results = first.values("inference.detections") + second.values("inference.detections")
    assert id_switches(_ids(results)) == 0
    totals = _video_totals(first.values("sum") + second.values("sum"))
    truth = CLIP.crossings()
    assert totals["frames"] == CLIP.frames and totals["tracks"] == len(CLIP.shapes)
    assert totals["line.door.in"] + totals["line.door.out"] == len(truth)


async def test_batches_of_an_old_generation_are_not_tracked_and_their_snapshots_not_published(frames) -> None:
    recs, by_data = frames
    topology = _topology()
    broker = FakeBroker()
    ledger = PartitionLedger()
    ledger.assigned({TP: (None, None)})
    reader = FakeReader({})
    pipe = _pipeline(topology, broker, by_data, ledger=ledger, reader=reader)
    batch = _copy(recs[:8])
    ticket = ledger.submitted(batch)
    ledger.revoked()  # the partition moved before the batch was tracked
    await pipe.submit(batch, ack=lambda _: asyncio.sleep(0), ticket=ticket)
    await pipe.drain()
    results = broker.values("inference.detections")
    assert len(results) == 8 and all(b.get("track_id") is None for r in results for b in r["boxes"])
    assert not [r for r in broker.sent if r.topic.endswith("video-state")]
    assert reader.reads == 0
    # After a new assignment, the held partitions' streams are read back before the next batch is tracked.
    ledger.assigned({TP: (0, None)})
    batch = _copy(recs[:8])
    await pipe.submit(batch, ack=lambda _: asyncio.sleep(0), ticket=ledger.submitted(batch))
    await pipe.drain()
    assert reader.reads == 1
    assert [r.key for r in broker.sent if r.topic.endswith("video-state")] == [b"cam-1"]


async def test_replayed_records_are_tracked_but_not_counted(frames) -> None:
    recs, by_data = frames
    topology = _topology()
    broker = FakeBroker()
    pipe = _pipeline(topology, broker, by_data)
    batch = _copy(recs[:10])
    for r in batch[:5]:
        r.counted = False
    out = await pipe.process(batch)
    summary = orjson.loads(next(r.value for r in out.records if r.topic == "sum"))
    assert summary["metrics"]["video|cam-1"]["frames"] == 5
    results = [orjson.loads(r.value) for r in out.records if r.topic == "inference.detections"]
    assert any(b.get("track_id") is not None for r in results[:5] for b in r["boxes"])


async def test_tracked_stale_and_restored_are_counted_in_metrics(frames) -> None:
    recs, by_data = frames
    topology = _topology()

    def count(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"route": "video", **labels}) or 0.0

    before = (count("infertide_video_frames_tracked_total", outcome="tracked"),
              count("infertide_video_frames_tracked_total", outcome="stale"),
              count("infertide_video_streams_total", how="restored"))
    broker = FakeBroker()
    ledger = PartitionLedger()
    ledger.assigned({TP: (None, None)})
    snapshot_of = VideoRoute(topology, topology.routes[0]).streams
    for rec in recs[:3]:  # a snapshot of the stream after three frames, for the new owner to read back
        ev = VideoFrameEvent.model_validate(orjson.loads(rec.value))
        snapshot_of.process("cam-1", ev.frame_index, ev.pts_ms, ev.ts, detections(CLIP, ev.frame_index))
    reader = FakeReader({"cam-1": snapshot_of.snapshot("cam-1")})
    pipe = _pipeline(topology, broker, by_data, ledger=ledger, reader=reader)
    batch = _copy(recs[3:10])
    await pipe.submit(batch, ack=lambda _: asyncio.sleep(0), ticket=ledger.submitted(batch))
    batch = _copy(recs[4:6])  # behind the stream's last frame (9): stale
    await pipe.submit(batch, ack=lambda _: asyncio.sleep(0), ticket=ledger.submitted(batch))
    await pipe.drain()
    after = (count("infertide_video_frames_tracked_total", outcome="tracked"),
             count("infertide_video_frames_tracked_total", outcome="stale"),
             count("infertide_video_streams_total", how="restored"))
    assert [a - b for a, b in zip(after, before)] == [7, 2, 1]
