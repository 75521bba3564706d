"""End to end: events in through a real Kafka, the Faust worker, a real Ray Serve app with the tiny
models, and results, dead letters, analytics and recommendations out where the config routes them."""

from __future__ import annotations

import base64
from collections import Counter, defaultdict
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from infertide.clients.produce import now_ms, produce_events
from schemas.events import ImageEvent, ImageRef, TextEvent, VideoFrameEvent
from tests.e2e.conftest import Stack, jpeg_b64, latest_windows, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]

N_TEXT, N_IMAGE, N_FRAMES, N_STREAMS = 1000, 200, 300, 3
IMAGE_MODELS = 3  # detection, tagging and classification on the image route
WORDS_POS = ["great", "wonderful", "loved", "excellent"]
WORDS_NEG = ["awful", "boring", "hated", "terrible"]


def _inputs() -> dict[str, list[Any]]:
    images = [ImageEvent(event_id=f"img-{i}", ts=now_ms(), user_id=f"u{i % 10}", item_id=f"item-{i}",
                         image=ImageRef(data=jpeg_b64(i), mime="image/jpeg")) for i in range(N_IMAGE)]
    texts = [TextEvent(event_id=f"txt-{i}", ts=now_ms(), user_id=f"u{i % 10}", item_id=f"item-{i % N_IMAGE}",
                       text=f"{(WORDS_POS if i % 3 else WORDS_NEG)[i % 4]} film number {i}") for i in range(N_TEXT)]
    frames = [VideoFrameEvent(event_id=f"vid-{s}-{f}", ts=now_ms(), stream_id=f"cam-{s}", frame_index=f,
                              pts_ms=f * 33, image=ImageRef(data=jpeg_b64(f), mime="image/jpeg"))
              for s in range(N_STREAMS) for f in range(N_FRAMES // N_STREAMS)]
    return {"image": images, "text": texts, "video": frames}


BAD_TEXT = [b"not json at all", b'{"event_id": "bad-1", "ts": 1}', b"[1, 2, 3]",
            orjson.dumps({"event_id": "bad-2", "ts": 5, "text": "x", "colour": "red"})]
CORRUPT_JPEG = base64.b64encode(b"\xff\xd8\xff\xe0 this is not really a jpeg").decode()


@pytest.fixture(scope="module")
def run(stack: Stack) -> dict[str, Any]:
    """One full run: produce everything, wait for every output, return what came out."""
    # The text route is strict: the "colour" event among BAD_TEXT is dead-lettered for its unknown field.
    topology, path = stack.topology("e2e", text={"strict_fields": True})
    worker = stack.worker(topology, path, "e2e-worker").start()
    try:
        worker.wait_ready()
        inputs = _inputs()
        for kind in ("image", "text", "video"):
            produce_events(topology, kind, inputs[kind])
        raw = KafkaProducer(bootstrap_servers=stack.bootstrap)
        for value in BAD_TEXT:
            raw.send(topology.topics.text, value)
        corrupt = [ImageEvent(event_id=f"corrupt-{i}", ts=now_ms(), image=ImageRef(data=CORRUPT_JPEG))
                   for i in range(3)]
        for ev in corrupt:
            raw.send(topology.topics.image, orjson.dumps(ev.model_dump(exclude_none=True)))
        raw.send(topology.topics.video, b"\x00\x01 binary garbage")
        raw.flush()
        kept_frames = N_FRAMES // 2  # sampling every_n=2
        expected_dlq = len(BAD_TEXT) + IMAGE_MODELS * len(corrupt) + 1  # corrupt images fail in every model
        out = {
            "sentiment": read_topic(stack.bootstrap, topology.topics.sentiment, timeout=180,
                                    until=lambda r: len(r) >= N_TEXT),
            "detections": read_topic(stack.bootstrap, topology.topics.detections, timeout=180,
                                     until=lambda r: len(r) >= N_IMAGE + kept_frames),
            "tags": read_topic(stack.bootstrap, topology.topics.tags, timeout=120, until=lambda r: len(r) >= N_IMAGE),
            "classes": read_topic(stack.bootstrap, topology.topics.classes, timeout=120,
                                  until=lambda r: len(r) >= N_IMAGE),
            "dlq": read_topic(stack.bootstrap, topology.topics.dlq, timeout=60,
                              until=lambda r: len(r) >= expected_dlq),
        }

        boxes = sum(len(r["boxes"]) for _, _, r in out["detections"])
        stream_boxes = sum(len(r["boxes"]) for _, _, r in out["detections"] if r.get("stream_id"))

        def analytics_complete(records: list[Any]) -> bool:
            # Every key of a window is emitted in one pass, one record at a time: wait for all of them.
            def total(metric: str, field: str | None = None) -> float:
                return sum(v for w in latest_windows(records) if w["metric"] == metric
                           for k, v in w["values"].items() if field is None or k == field)
            return (total("events", "in") >= N_TEXT + len(BAD_TEXT) + N_IMAGE + len(corrupt) + N_FRAMES + 1
                    and total("detections") >= boxes and total("detections_stream") >= stream_boxes
                    and total("latency", "count") >= N_TEXT + N_IMAGE + N_FRAMES // 2
                    and total("tags") > 0 and total("classes") >= N_IMAGE)

        out["analytics"] = read_topic(stack.bootstrap, topology.topics.analytics, timeout=60,
                                      until=analytics_complete)
        out["recommendations"] = read_topic(stack.bootstrap, topology.topics.recommendations, timeout=30,
                                            until=lambda r: len(r) > 0)
        status, metrics = worker.get("/metrics")
        out["metrics"] = metrics.decode()
        out["inputs"] = inputs
        out["corrupt"] = corrupt
        return out
    finally:
        assert worker.stop() == 0, worker.tail()


def _ids(records: list[Any]) -> list[str]:
    return [v["event_id"] for _, _, v in records]


def test_every_valid_event_is_routed_to_its_result_topics(run: dict[str, Any]) -> None:
    inputs = run["inputs"]
    assert sorted(_ids(run["sentiment"])) == sorted(e.event_id for e in inputs["text"])
    assert sorted(_ids(run["tags"])) == sorted(e.event_id for e in inputs["image"])
    assert sorted(_ids(run["classes"])) == sorted(e.event_id for e in inputs["image"])
    for _, _, r in run["classes"]:
        assert r["top_k"] == 3 and len(r["labels"]) == 3 and r["model"]["name"].endswith("tiny-vit")
    kept = {e.event_id for e in inputs["video"] if e.frame_index % 2 == 0}
    assert sorted(_ids(run["detections"])) == sorted([e.event_id for e in inputs["image"]] + list(kept))
    for _, _, r in run["sentiment"]:
        assert r["label"] in {"NEGATIVE", "POSITIVE"} and 0 <= r["score"] <= 1
        assert r["model"]["name"].endswith("tiny-sentiment") and r["model"]["version"]
        assert r["user_id"].startswith("u") and r["item_id"].startswith("item-")


def test_invalid_events_are_dead_lettered_with_their_reason(run: dict[str, Any]) -> None:
    dlq = [v for _, _, v in run["dlq"]]
    decode_errors = [d for d in dlq if d["stage"] == "decode"]
    assert len(decode_errors) == len(BAD_TEXT) + 1
    originals = {base64.b64decode(d["original"]) for d in decode_errors}
    assert originals == set(BAD_TEXT) | {b"\x00\x01 binary garbage"}
    reasons = " | ".join(d["error"] for d in decode_errors)
    assert "not valid JSON" in reasons and "'text'" in reasons and "unknown field" in reasons
    infer_errors = [d for d in dlq if d["stage"] == "infer"]
    assert sorted(d["event_id"] for d in infer_errors) == sorted(IMAGE_MODELS * [e.event_id for e in run["corrupt"]])
    assert all(d["topic"].endswith(".image") and d["offset"] >= 0 and d["error"] for d in infer_errors)


def test_video_results_keep_per_stream_order_with_calls_in_flight(run: dict[str, Any]) -> None:
    by_stream: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for partition, offset, r in run["detections"]:
        if r.get("stream_id"):
            by_stream[r["stream_id"]].append((partition, offset, r["frame_index"]))
    assert len(by_stream) == N_STREAMS
    for stream, rows in by_stream.items():
        assert len({p for p, _, _ in rows}) == 1, f"{stream} spread over partitions"
        frames = [f for _, _, f in sorted(rows)]
        assert frames == sorted(frames) == list(range(0, N_FRAMES // N_STREAMS, 2)), stream


def test_analytics_windows_add_up_to_the_inputs(run: dict[str, Any]) -> None:
    windows = latest_windows(run["analytics"])
    totals: Counter[str] = Counter()
    for w in windows:
        if w["metric"] == "events":
            for k, v in w["values"].items():
                totals[f"{w['key']}.{k}"] += v
    assert totals["text.in"] == N_TEXT + len(BAD_TEXT)
    assert totals["text.out"] == N_TEXT and totals["text.dlq"] == len(BAD_TEXT)
    assert totals["image.in"] == N_IMAGE + 3 and totals["image.out"] == N_IMAGE and totals["image.dlq"] == 3
    assert totals["video.dropped_sampled"] == N_FRAMES // 2
    labels = Counter(r["label"] for _, _, r in run["sentiment"])
    sentiment = Counter()
    for w in windows:
        if w["metric"] == "sentiment":
            for k, v in w["values"].items():
                if k.endswith(".count"):
                    sentiment[k.removesuffix(".count")] += v
    assert sentiment == labels
    boxes = Counter(b["label"] for _, _, r in run["detections"] if not r.get("stream_id") for b in r["boxes"])
    det = Counter()
    for w in windows:
        if w["metric"] == "detections" and w["key"] == "image":
            det.update({k: int(v) for k, v in w["values"].items()})
    assert det == boxes and sum(boxes.values()) > 0
    top_classes = Counter(r["labels"][0]["label"] for _, _, r in run["classes"])
    classes = Counter()
    for w in windows:
        if w["metric"] == "classes":
            classes.update({k: int(v) for k, v in w["values"].items()})
    assert classes == top_classes and sum(classes.values()) == N_IMAGE
    per_stream = Counter()
    for w in windows:
        if w["metric"] == "detections_stream":
            per_stream[w["key"]] += sum(w["values"].values())
    frames = Counter(r["stream_id"] for _, _, r in run["detections"] if r.get("stream_id") for _ in r["boxes"])
    assert per_stream == frames and len(frames) == N_STREAMS
    lat = [w for w in windows if w["metric"] == "latency" and w["key"] == "text"]
    assert sum(w["values"]["count"] for w in lat) == N_TEXT
    assert all(w["values"]["p50_ms"] <= w["values"]["p99_ms"] for w in lat)


def test_recommendations_point_at_known_items_for_known_users(run: dict[str, Any]) -> None:
    recs = [v for _, _, v in run["recommendations"]]
    assert recs
    items = {e.item_id for e in run["inputs"]["image"]}
    for rec in recs:
        assert rec["user_id"] in {f"u{i}" for i in range(10)}
        assert rec["items"] and all(i["item_id"] in items and i["reasons"] for i in rec["items"])
        assert [i["score"] for i in rec["items"]] == sorted((i["score"] for i in rec["items"]), reverse=True)


def test_metrics_count_what_flowed(run: dict[str, Any]) -> None:
    m = run["metrics"]
    assert f'infertide_events_in_total{{route="text"}} {float(N_TEXT + len(BAD_TEXT))}' in m
    assert 'infertide_dlq_total{reason="EventDecodeError",route="text",stage="decode"} 4.0' in m
    assert "infertide_e2e_latency_seconds_bucket" in m and "infertide_consumer_lag" in m

