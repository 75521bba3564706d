"""``topics.min_insync_replicas``: checked against the replication factor at load, a topic config only when set."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from schemas.topology import ConfigError, default_topology_path, parse_topology


def _topology(**topics: Any) -> dict[str, Any]:
    data = yaml.safe_load(default_topology_path().read_text())
    data["topics"] = {**data.get("topics", {}), **topics}
    return data


def test_min_insync_replicas_must_fit_the_replication_factor() -> None:
    with pytest.raises(ConfigError) as info:
        parse_topology(_topology(replication_factor=2, min_insync_replicas=3), "test.yaml")
    message = str(info.value)
    assert "topics.min_insync_replicas (3) exceeds topics.replication_factor (2)" in message
    assert "min_insync_replicas: 2" in message  # shows the fix


def test_min_insync_replicas_is_a_topic_config_only_when_set() -> None:
    assert parse_topology(_topology(), "test.yaml").topics.topic_configs() == {}
    replicated = parse_topology(_topology(replication_factor=3, min_insync_replicas=2), "test.yaml")
    assert replicated.topics.topic_configs() == {"min.insync.replicas": "2"}
