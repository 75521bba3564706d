"""The topology config: the default loads; wrong configs fail naming the key and the fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from infertide.clients.admin import schema_for_topic
from schemas.topology import ConfigError, default_topology_path, load_topology, parse_topology


@pytest.fixture
def default() -> dict[str, Any]:
    return yaml.safe_load(default_topology_path().read_text())


def _set(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    node = out
    for p in parents:
        node = node.setdefault(p, {}) if not p.isdigit() else node[int(p)]
    node[last] = value
    return out


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_topology(data, "test.yaml")
    return str(info.value)


def test_default_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("INFERTIDE_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    topology = load_topology(default_topology_path())
    assert topology.kafka.bootstrap_servers.startswith("127.0.0.1")
    assert len(topology.topics.names()) == len(set(topology.topics.names())) == 10
    assert {r.name for r in topology.routes} >= {"text", "image", "video"}
    for route in topology.routes:
        assert schema_for_topic(topology, topology.input_topic(route)) is not None
        for model in route.models:
            assert schema_for_topic(topology, topology.output_topic(route, model)) is not None


def test_the_environment_does_not_change_a_topology_given_in_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """Explicit data wins: only the CLI applies KAFKA_BOOTSTRAP_SERVERS (tests/unit/infertide/test_settings.py)."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1234")
    monkeypatch.setenv("INFERTIDE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:5678")
    monkeypatch.setenv("INFERTIDE_CONFIG", "/nonexistent.yaml")
    assert load_topology().kafka.bootstrap_servers == "127.0.0.1:9092"  # the packaged default, as written
    data = {"kafka": {"bootstrap_servers": "10.0.0.1:9092"}, "models": {"e": {"task": "echo"}},
            "routes": [{"name": "text", "input": "text", "kind": "text", "models": ["e"]}]}
    assert parse_topology(data).kafka.bootstrap_servers == "10.0.0.1:9092"


@pytest.mark.parametrize(("key", "suggestion"), [
    ("kafka.bootstrap_server", "bootstrap_servers"),
    ("models.sentiment.batching.max_batch_sise", "max_batch_size"),
    ("topics.partitons", "partitions"),
    ("routs", "routes"),
])
def test_typo_names_key_and_suggestion(default: dict[str, Any], key: str, suggestion: str) -> None:
    message = _error(_set(default, key, 1))
    assert key in message and f"did you mean {suggestion!r}" in message
    assert message.startswith("invalid topology config test.yaml")


def test_wrong_value_names_key(default: dict[str, Any]) -> None:
    message = _error(_set(default, "topics.partitions", 0))
    assert "topics.partitions" in message and "greater than 0" in message


def test_sasl_without_mechanism_fails(default: dict[str, Any]) -> None:
    message = _error(_set(default, "kafka.security_protocol", "SASL_SSL"))
    assert "sasl_mechanism" in message and "SCRAM-SHA-512" in message
    assert "{" not in message  # names the fix, does not dump the section


def test_unknown_route_model_fails(default: dict[str, Any]) -> None:
    data = copy.deepcopy(default)
    data["routes"][0]["models"] = ["sentimnt"]
    message = _error(data)
    assert "'sentimnt'" in message and "did you mean 'sentiment'" in message


def test_route_kind_must_suit_its_models(default: dict[str, Any]) -> None:
    data = copy.deepcopy(default)
    data["routes"][0]["models"] = ["detection"]  # the text route
    message = _error(data)
    assert "route 'text' is kind 'text'" in message and "takes only ['image', 'video']" in message


def test_unknown_task_lists_the_known_ones(default: dict[str, Any]) -> None:
    message = _error(_set(default, "models.sentiment.task", "captioning"))
    assert "models.sentiment.task" in message and "'classification'" in message


def test_classification_results_go_to_the_classes_topic(default: dict[str, Any]) -> None:
    data = copy.deepcopy(default)
    data["models"]["classes"] = {"task": "classification", "model": "google/vit-base-patch16-224"}
    data["routes"][1]["models"].append("classes")
    topology = parse_topology(data)
    assert topology.output_topic(topology.routes[1], "classes") == "inference.classes"
    assert schema_for_topic(topology, "inference.classes") == "classification.v1"


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_topology(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_topology(bad)


def test_analytics_window_event_time_and_the_old_key(default: dict[str, Any]) -> None:
    assert parse_topology(default).analytics.event_time is None  # default unchanged: window_s, log order
    default["analytics"] = {}
    t = parse_topology(_set(default, "analytics.window", {"size_s": 10, "step_s": 5, "grace_s": 2.5}))
    ew = t.analytics.event_time
    assert ew is not None and (ew.size_s, ew.step_s, ew.grace_s, ew.time) == (10, 5, 2.5, "event")
    assert t.analytics.size_s == 10
    log = parse_topology(_set(default, "analytics.window", {"size_s": 30, "time": "log"}))
    assert log.analytics.event_time is None and log.analytics.size_s == 30


@pytest.mark.parametrize(("window", "words"), [
    ({"size_s": 10, "step_s": 3}, "analytics.window.step_s (3) must divide size_s (10)"),
    ({"size_s": 10, "step_s": 20}, "must divide size_s"),
    ({"size_s": 10, "step_s": 5, "time": "log"}, "time: log windows are tumbling"),
    ({"size_s": 10, "grace_s": 1, "time": "log"}, "grace_s / idle_s apply to time: event only"),
    ({"size_s": 10, "time": "wall"}, "analytics.window.time"),
])
def test_analytics_window_errors_name_the_key_and_fix(default: dict[str, Any], window: dict[str, Any],
                                                       words: str) -> None:
    assert words in _error(_set(default, "analytics.window", window))


def test_window_s_and_window_must_agree(default: dict[str, Any]) -> None:
    data = _set(_set(default, "analytics.window_s", 5), "analytics.window", {"size_s": 10})
    assert "analytics.window_s (5) and analytics.window.size_s (10) disagree" in _error(data)
