"""Totals across all workers for the dashboard: each worker tails the per-batch summary topic and adds
up every route's in / out / dead-letter counts and latency histogram.

Every route pipeline, on every worker, sends one summary per micro-batch to the
internal summary topic (``<app id>-summaries``, one partition). Reading it
with no consumer group (read-only, from the beginning, no commits) gives every
worker the whole system's numbers, whichever worker the dashboard is opened on.
The volume is one small record per batch, not per event.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from topologies.state.analytics import merge, percentile, split_key
from topologies.state.windows import is_marker

__all__ = ["SystemTotals"]

log = logging.getLogger(__name__)

_METRICS = ("events", "latency")


class SystemTotals:
    """Cumulative per-route numbers from the summary topic.

    Args:
        topic: the summary topic.
        kafka_kwargs: aiokafka client settings (bootstrap, security).
    """

    def __init__(self, topic: str, kafka_kwargs: dict[str, Any]) -> None:
        self.topic = topic
        self.kafka_kwargs = kafka_kwargs
        self.routes: dict[str, dict[str, float]] = {}
        self.summaries = 0

    def add(self, summary: dict[str, Any]) -> None:
        """Add one batch summary's ``events|<route>`` and ``latency|<route>`` deltas."""
        for key, delta in summary.get("metrics", {}).items():
            metric, route = split_key(key)
            if metric in _METRICS:
                self.routes[route] = merge(self.routes.get(route), delta)
        self.summaries += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per route: ``in``, ``out``, ``dlq`` and latency percentiles over every worker since the start."""
        out = {}
        for route, v in self.routes.items():
            samples = int(v.get("count", 0))
            out[route] = {
                "in": int(v.get("in", 0)), "out": int(v.get("out", 0)), "dlq": int(v.get("dlq", 0)),
                "latency_ms": {q: (percentile(v, p) if samples else None)
                               for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))} | {"samples": samples},
            }
        return out

    async def run(self) -> None:
        """Tail the topic until cancelled (the worker's shutdown); a bad record is logged and skipped."""
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(self.topic, group_id=None, enable_auto_commit=False, isolation_level="read_committed",
                                    auto_offset_reset="earliest", **self.kafka_kwargs)
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=1000, max_records=1000)
                for records in batches.values():
                    for rec in records:
                        try:
                            value = orjson.loads(rec.value)
                            if not is_marker(value):
                                self.add(value)
                        except (ValueError, TypeError, AttributeError) as err:
                            log.warning("totals: summary at offset %s skipped: %r", rec.offset, err)
        finally:
            await consumer.stop()
