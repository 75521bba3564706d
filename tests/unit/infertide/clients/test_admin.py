"""Kafka client settings from the config's ``kafka:`` section: plaintext, SASL (password from the env), SSL."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from infertide.clients.admin import aiokafka_kwargs, kafka_python_kwargs
from schemas.topology import ConfigError, default_topology_path, parse_topology


@pytest.fixture
def default() -> dict[str, Any]:
    return yaml.safe_load(default_topology_path().read_text())


def test_client_kwargs_plaintext(default: dict[str, Any]) -> None:
    topology = parse_topology(default)
    assert kafka_python_kwargs(topology.kafka, "127.0.0.1:9") == {
        "bootstrap_servers": "127.0.0.1:9", "security_protocol": "PLAINTEXT"}
    assert aiokafka_kwargs(topology.kafka)["security_protocol"] == "PLAINTEXT"


def test_client_kwargs_sasl_reads_password_env(default: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = {**default["kafka"], "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
             "sasl_username": "svc", "sasl_password_env": "MY_KAFKA_PW"}
    topology = parse_topology({**default, "kafka": kafka})
    monkeypatch.delenv("MY_KAFKA_PW", raising=False)
    with pytest.raises(ConfigError, match="MY_KAFKA_PW"):
        kafka_python_kwargs(topology.kafka)
    monkeypatch.setenv("MY_KAFKA_PW", "s3cret")
    for kw in (kafka_python_kwargs(topology.kafka), aiokafka_kwargs(topology.kafka)):
        assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
        assert kw["sasl_plain_username"] == "svc" and kw["sasl_plain_password"] == "s3cret"


def test_client_kwargs_ssl_files(default: dict[str, Any]) -> None:
    kafka = {**default["kafka"], "security_protocol": "SSL", "ssl_cafile": "/etc/ca.pem"}
    topology = parse_topology({**default, "kafka": kafka})
    assert kafka_python_kwargs(topology.kafka)["ssl_cafile"] == "/etc/ca.pem"


def test_video_routes_with_tracking_get_a_compacted_state_topic(default: dict[str, Any]) -> None:
    from infertide.clients.admin import state_topics
    from infertide.demo.shapes import demo_clip
    from infertide.k8s.generate import kafka_topics

    assert state_topics(parse_topology(default)) == []
    models = {"det": {"task": "detection", "model": "x"}}
    routes = [{"name": "cams", "input": "video", "kind": "video", "models": ["det"], "video": demo_clip().video_config()},
              {"name": "plain", "input": "video", "kind": "video", "models": ["det"]}]
    topology = parse_topology({"models": models, "routes": routes, "kafka": {"consumer_group": "g"}})
    assert state_topics(topology) == ["g-cams-video-state"]
    state = [d for d in kafka_topics(topology) if d["metadata"]["labels"]["infertide.io/topic-role"] == "state"]
    assert [(d["spec"]["topicName"], d["spec"]["partitions"], d["spec"]["config"]) for d in state] == [
        ("g-recommendations-state", 1, {"cleanup.policy": "compact"}),  # the recommendations fold's (every topology)
        ("g-cams-video-state", topology.topics.partitions, {"cleanup.policy": "compact"})]
