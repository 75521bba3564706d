"""The Strimzi ``KafkaTopic``s carry the topology's replication settings."""

from __future__ import annotations

import yaml

from infertide.k8s.generate import kafka_topics
from schemas.topology import default_topology_path, parse_topology


def test_kafka_topics_carry_min_insync_replicas_only_when_set() -> None:
    data = yaml.safe_load(default_topology_path().read_text())
    plain = kafka_topics(parse_topology(data, "t.yaml"))
    assert plain and all("min.insync.replicas" not in t["spec"]["config"] for t in plain)
    data["topics"] |= {"replication_factor": 3, "min_insync_replicas": 2}
    replicated = kafka_topics(parse_topology(data, "t.yaml"))
    assert {t["spec"]["replicas"] for t in replicated} == {3}
    assert {t["spec"]["config"]["min.insync.replicas"] for t in replicated} == {2}
