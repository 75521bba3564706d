"""Kafka client settings from the topology's ``kafka:`` section (SASL/SSL included), built in one place.

Two client libraries, each for what it does best: the route engine's hot path reads and writes with
confluent-kafka (librdkafka; transactions with KIP-447 fencing, measured faster here:
docs/performance.md), Faust and the readers around it (analytics fold, tail, totals) with aiokafka.
"""

from __future__ import annotations

import logging
from typing import Any

from schemas.topology import KafkaConfig, Topology

__all__ = ["aiokafka_kwargs", "confluent_config", "route_consumer_config", "route_producer_config"]


_LIBRDKAFKA_LOG = logging.getLogger("librdkafka")  # its log lines through Python logging, not stderr


def aiokafka_kwargs(kafka: KafkaConfig, bootstrap: str | None = None) -> dict[str, Any]:
    """Keyword arguments for aiokafka clients; SSL files become an ``ssl_context``.

    Args:
        kafka: the topology's ``kafka:`` section.
        bootstrap: overrides ``kafka.bootstrap_servers``.
    """
    kw = kafka.client_kwargs(bootstrap)
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        kw["ssl_context"] = create_ssl_context(cafile=kafka.ssl_cafile, certfile=kafka.ssl_certfile,
                                               keyfile=kafka.ssl_keyfile)
    return kw


def confluent_config(kafka: KafkaConfig, bootstrap: str | None = None) -> dict[str, Any]:
    """librdkafka settings for connection and security (``kafka.client_kwargs`` under librdkafka's names)."""
    kw = kafka.client_kwargs(bootstrap)
    conf: dict[str, Any] = {"bootstrap.servers": kw["bootstrap_servers"], "security.protocol": kw["security_protocol"],
                            "client.dns.lookup": "use_all_dns_ips", "logger": _LIBRDKAFKA_LOG}
    if "sasl_mechanism" in kw:
        conf["sasl.mechanism"] = kw["sasl_mechanism"]
    if "sasl_plain_username" in kw:
        conf["sasl.username"] = kw["sasl_plain_username"]
    if "sasl_plain_password" in kw:
        conf["sasl.password"] = kw["sasl_plain_password"]
    for ours, theirs in (("ssl_cafile", "ssl.ca.location"), ("ssl_certfile", "ssl.certificate.location"),
                         ("ssl_keyfile", "ssl.key.location")):
        if getattr(kafka, ours):
            conf[theirs] = getattr(kafka, ours)
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        conf["ssl.endpoint.identification.algorithm"] = "https"
    return conf


# How long librdkafka waits before fetching again for a partition whose prefetch queue was at its bound
# (``queued.min.messages``). Its default, 1,000 ms, starved the route: with the bound a few batches deep, a
# partition was skipped for up to a second each time a fetch filled it, and the route waited on ``consume``
# for about 22 ms per micro-batch; the in-process engine drained 30,000 events/s, 60,000 with 10 ms
# (docs/performance.md, "A fetch that waited a second").
FETCH_QUEUE_BACKOFF_MS = 10


def route_consumer_config(topology: Topology, bootstrap: str | None = None) -> dict[str, Any]:
    """A route consumer's settings: the routes' group, manual commits, eager rebalances, a bounded prefetch.

    ``read_committed`` in both guarantees: an upstream that writes transactionally never has its aborted
    records routed, and librdkafka then asks for committed offsets with ``require_stable`` (KIP-447).
    """
    k = topology.kafka
    max_batch = max(r.batch_size for r in topology.routes)
    return confluent_config(k, bootstrap) | {
        "group.id": k.routes_group, "enable.auto.commit": False, "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest", "isolation.level": "read_committed",
        "partition.assignment.strategy": "range",
        "session.timeout.ms": int(k.session_timeout_s * 1000),
        "heartbeat.interval.ms": int(k.heartbeat_interval_s * 1000),
        # A revocation drains in-flight batches inside the rebalance callback: leave it that long.
        "max.poll.interval.ms": int(max(k.revoke_drain_timeout_s + 30, 60) * 1000),
        # Prefetch bounded in bytes and records (librdkafka's defaults are 64 MB and 100,000 a partition).
        "queued.max.messages.kbytes": 8192, "queued.min.messages": max(4 * max_batch, 1000),
        "fetch.wait.max.ms": 100,
        "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
    }


MAX_BATCH_BYTES = 512 * 1024  # a route producer's record batch at most (librdkafka's batch.size)


def route_producer_config(topology: Topology, bootstrap: str | None = None, *, transactional_id: str | None = None,
                          batch_bytes: int | None = None) -> dict[str, Any]:
    """A route producer's settings: idempotent, acks=all, a short linger; transactional when given an id."""
    k = topology.kafka
    conf = confluent_config(k, bootstrap) | {
        "enable.idempotence": True, "acks": "all", "linger.ms": k.producer_linger_s * 1000,
        "message.max.bytes": topology.max_message_bytes(),
        "batch.size": batch_bytes or MAX_BATCH_BYTES,
        "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 512 * 1024,  # 512 MB
    }
    if transactional_id is not None:
        conf["transactional.id"] = transactional_id
        conf["transaction.timeout.ms"] = int(k.transaction_timeout_s * 1000)
    return conf
