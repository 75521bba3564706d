"""Topology data for runs that must not share state with others: the demo, the bench and the end-to-end tests.

Each run gets its own topics (``<prefix>.<alias>``) and consumer group, and Kafka
timings short enough that a rebalance takes seconds, not the defaults' minute.
"""

from __future__ import annotations

from typing import Any

from schemas.topology import TOPIC_ALIASES

__all__ = ["QUICK_KAFKA", "on_own_topics", "video_route"]

QUICK_KAFKA = {"session_timeout_s": 6, "heartbeat_interval_s": 2, "commit_interval_s": 0.5}


def on_own_topics(data: dict[str, Any], *, prefix: str, bootstrap: str, partitions: int,
                  group: str | None = None) -> dict[str, Any]:
    """A copy of topology ``data`` on ``bootstrap`` with topics ``<prefix>.<alias>`` of ``partitions`` partitions,
    consumer group ``group`` (default ``<prefix>-group``) and :data:`QUICK_KAFKA` timings.

    Topic settings other than the aliases (retention, replication) are kept.
    """
    data = {**data}
    data["kafka"] = {**data.get("kafka", {}), "bootstrap_servers": bootstrap,
                     "consumer_group": group or f"{prefix}-group", **QUICK_KAFKA}
    kept = {k: v for k, v in data.get("topics", {}).items() if k not in TOPIC_ALIASES}
    data["topics"] = {**kept, **{a: f"{prefix}.{a}" for a in TOPIC_ALIASES}, "partitions": partitions}
    return data


def video_route(*, max_in_flight: int = 2, every_n: int = 2) -> dict[str, Any]:
    """A ``video`` route through the ``detection`` model, sampling every ``every_n``-th frame."""
    return {"name": "video", "input": "video", "kind": "video", "models": ["detection"], "batch_size": 8,
            "batch_within_s": 0.05, "max_in_flight": max_in_flight,
            "sampling": {"every_n": every_n, "max_lag_ms": None}}
