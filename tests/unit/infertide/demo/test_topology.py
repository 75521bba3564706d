"""The shared builder for runs that must not share state (demo, bench, e2e tests)."""

from __future__ import annotations

from infertide.demo.topology import QUICK_KAFKA, on_own_topics, video_route
from schemas.topology import TOPIC_ALIASES, parse_topology


def test_on_own_topics_moves_every_alias_and_keeps_other_topic_settings() -> None:
    data = {"name": "t", "kafka": {"security_protocol": "PLAINTEXT"}, "topics": {"text": "events.text",
            "retention_ms": 1000}, "models": {"e": {"task": "echo"}},
            "routes": [{"name": "text", "input": "text", "kind": "text", "models": ["e"]}]}
    out = on_own_topics(data, prefix="p1", bootstrap="127.0.0.1:1", partitions=3)
    assert out["topics"] == {"retention_ms": 1000, **{a: f"p1.{a}" for a in TOPIC_ALIASES}, "partitions": 3}
    assert out["kafka"] == {"security_protocol": "PLAINTEXT", "bootstrap_servers": "127.0.0.1:1",
                            "consumer_group": "p1-group", **QUICK_KAFKA}
    assert data["topics"] == {"text": "events.text", "retention_ms": 1000}, "the input is not changed"
    assert on_own_topics(data, prefix="p", bootstrap="b:1", partitions=1, group="g")["kafka"]["consumer_group"] == "g"
    topology = parse_topology(out)
    assert topology.topics.resolve("text") == "p1.text" and topology.kafka.session_timeout_s == 6


def test_video_route_validates_with_a_detection_model() -> None:
    data = {"models": {"detection": {"task": "detection", "model": "yolo11n.yaml"}}, "routes": [video_route()]}
    route = parse_topology(data).routes[0]
    assert route.kind == "video" and route.sampling is not None and route.sampling.every_n == 2
