"""The route clients' librdkafka settings (topologies.kafka_settings), for the shipped topology."""

from __future__ import annotations

from schemas.topology import load_topology
from topologies.kafka_settings import FETCH_QUEUE_BACKOFF_MS, route_consumer_config, route_producer_config


def test_route_consumer_prefetch_is_bounded_and_refilled_within_a_batch_window() -> None:
    topology = load_topology()
    conf = route_consumer_config(topology)
    assert conf["enable.auto.commit"] is False and conf["isolation.level"] == "read_committed"
    assert conf["queued.min.messages"] >= max(r.batch_size for r in topology.routes)
    # librdkafka's default backoff (1,000 ms) left a partition whose queue reached its bound unfetched for up to a
    # second: the refill must come well inside every route's micro-batch window.
    assert conf["fetch.queue.backoff.ms"] == FETCH_QUEUE_BACKOFF_MS
    assert all(FETCH_QUEUE_BACKOFF_MS < r.batch_within_s * 1000 for r in topology.routes)
    assert conf["max.poll.interval.ms"] >= (topology.kafka.revoke_drain_timeout_s + 30) * 1000


def test_route_producer_is_idempotent_and_transactional_only_when_named() -> None:
    topology = load_topology()
    plain = route_producer_config(topology)
    assert plain["enable.idempotence"] is True and plain["acks"] == "all"
    assert "transactional.id" not in plain
    txn = route_producer_config(topology, transactional_id="g-text-w1")
    assert txn["transactional.id"] == "g-text-w1"
    assert txn["transaction.timeout.ms"] == int(topology.kafka.transaction_timeout_s * 1000)
