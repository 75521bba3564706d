"""Kafka client settings from the topology's ``kafka:`` section, and topic creation from its ``topics:``.

One place turns :class:`schemas.topology.KafkaConfig` into client keyword
arguments (kafka-python for admin/CLI, aiokafka for the hot paths), so SASL/SSL
settings and the password lookup are written once.
"""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

from schemas.rollout import control_topic, rollout_topics
from schemas.tasks import TOPIC_SCHEMAS
from schemas.topology import KafkaConfig, Topology
from schemas.video import state_topic
from topologies.kafka_settings import aiokafka_kwargs

__all__ = [
    "TOPIC_SCHEMAS",
    "aiokafka_kwargs",
    "describe_topics",
    "ensure_topics",
    "state_topics",
    "kafka_python_kwargs",
    "max_message_bytes",
    "schema_for_topic",
]

def schema_for_topic(topology: Topology, topic: str) -> str | None:
    """The schema name of a topic (by full name or alias), or ``None`` if the config does not name it."""
    topic = topology.topics.resolve(topic)
    for alias, schema in TOPIC_SCHEMAS.items():
        if getattr(topology.topics, alias) == topic:
            return schema
    return None


def max_message_bytes(topology: Topology) -> int:
    """Largest record the topics accept (see :meth:`schemas.topology.Topology.max_message_bytes`)."""
    return topology.max_message_bytes()


def kafka_python_kwargs(kafka: KafkaConfig, bootstrap: str | None = None) -> dict[str, Any]:
    """Keyword arguments for kafka-python clients (``KafkaAdminClient``, ``KafkaConsumer``...).

    Args:
        kafka: the topology's ``kafka:`` section.
        bootstrap: overrides ``kafka.bootstrap_servers`` (e.g. from ``--bootstrap``).
    """
    kw = kafka.client_kwargs(bootstrap)
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        kw.update({k: v for k, v in {"ssl_cafile": kafka.ssl_cafile, "ssl_certfile": kafka.ssl_certfile,
                                     "ssl_keyfile": kafka.ssl_keyfile}.items() if v})
    return kw


def _admin(topology: Topology, bootstrap: str | None, timeout_s: float) -> KafkaAdminClient:
    return KafkaAdminClient(client_id="infertide-admin", request_timeout_ms=int(timeout_s * 1000),
                            **kafka_python_kwargs(topology.kafka, bootstrap))


def describe_topics(topology: Topology, bootstrap: str | None = None, timeout_s: float = 15.0) -> dict[str, int | None]:
    """Each config topic -> its partition count on the cluster, or ``None`` when it does not exist."""
    admin = _admin(topology, bootstrap, timeout_s)
    try:
        existing = set(admin.list_topics())
        names = topology.topics.names()
        present = [n for n in names if n in existing]
        parts = {t["topic"] if "topic" in t else t["name"]: len(t["partitions"])
                 for t in admin.describe_topics(present)} if present else {}
        return {n: parts.get(n) for n in names}
    finally:
        admin.close()


def state_topics(topology: Topology) -> list[str]:
    """The compacted topics of the topology's state: one per video route with ``video:`` (its streams'
    tracker snapshots, :func:`schemas.video.state_topic`), with as many partitions as its input."""
    return [state_topic(topology.kafka.consumer_group, r.name) for r in topology.routes
            if r.kind == "video" and r.video is not None]


def ensure_topics(topology: Topology, bootstrap: str | None = None, timeout_s: float = 30.0) -> list[str]:
    """Create every topic of ``topology.topics.names()`` that is missing, the compacted
    :func:`state_topics`, every rollout shadow topic (``schemas.rollout.rollout_topics``) and, when a route
    has a rollout, the compacted rollout control topic (``schemas.rollout.control_topic``); return the ones
    created.

    Idempotent: topics that already exist (or that another process creates at the
    same moment) are left alone. Returns once metadata shows every topic with a
    leader for each partition.

    Raises:
        kafka.errors.KafkaError: the cluster refused a topic for another reason, or
            the topics did not appear within ``timeout_s``.
    """
    t = topology.topics
    configs = {"retention.ms": str(t.retention_ms), "max.message.bytes": str(max_message_bytes(topology)),
               **t.topic_configs()}
    admin = _admin(topology, bootstrap, timeout_s)
    try:
        compacted = set(state_topics(topology))
        names = t.names() + sorted(compacted)
        names += [n for n in rollout_topics(topology) if n not in names]  # shadow result topics
        missing = [n for n in names if n not in set(admin.list_topics())]
        created: list[str] = []
        if missing:
            compact = {"cleanup.policy": "compact", "max.message.bytes": configs["max.message.bytes"],
                       **t.topic_configs()}
            spec = {n: {"num_partitions": t.partitions, "replication_factor": t.replication_factor,
                        "configs": compact if n in compacted else configs} for n in missing}
            result = admin.create_topics(spec, timeout_ms=int(timeout_s * 1000), raise_errors=False)
            for entry in result.get("topics", []):
                name, code = entry.get("name"), entry.get("error_code", 0)
                if code == 0:
                    created.append(name)
                elif code != TopicAlreadyExistsError.errno:
                    raise KafkaError(f"creating topic {name!r} failed: error {code} {entry.get('error_message')}")
        if any(r.rollout for r in topology.routes):  # rollout changes: compacted, one partition (one order)
            control = control_topic(topology)
            if control not in set(admin.list_topics()):
                result = admin.create_topics({control: {
                    "num_partitions": 1, "replication_factor": t.replication_factor,
                    "configs": {"cleanup.policy": "compact", **t.topic_configs()}}},
                    timeout_ms=int(timeout_s * 1000), raise_errors=False)
                for entry in result.get("topics", []):
                    code = entry.get("error_code", 0)
                    if code == 0:
                        created.append(control)
                    elif code != TopicAlreadyExistsError.errno:
                        raise KafkaError(f"creating topic {control!r} failed: error {code} {entry.get('error_message')}")
            names = [*names, control]
        _wait_visible(admin, names, timeout_s)
        return created
    finally:
        admin.close()


def _wait_visible(admin: KafkaAdminClient, names: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin.wait_for_topics(names, timeout_ms=int(max(deadline - time.monotonic(), 0.5) * 1000))
            return
        except KafkaError:
            if time.monotonic() >= deadline:
                raise
