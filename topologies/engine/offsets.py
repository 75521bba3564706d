"""The committed offsets of partitions just assigned, asked again while the group's coordinator moves or loads.

librdkafka's ``committed()`` answers ``NOT_COORDINATOR`` (and its kin) when the group's coordinator has just
moved, is still loading ``__consumer_offsets``, or is not known yet; it does not ask again itself. Seen in a
local run of ``tests/e2e/test_serve_faults.py`` beside two other modules (2026-12-04): the exactly-once
route's assignment callback got ``NOT_COORDINATOR`` right after a metadata hiccup of its broker, the
exception left the callback, and the worker stopped (exit 70). Kafka's Java consumer looks the coordinator up
again and retries such an OffsetFetch until its timeout; so does this.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from topologies.transactions import kafka_error

__all__ = ["COORDINATOR_MOVED", "committed_offsets"]

log = logging.getLogger(__name__)

COORDINATOR_MOVED = frozenset({KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                               KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._WAIT_COORD, KafkaError._TRANSPORT})
FIRST_PAUSE_S, LAST_PAUSE_S = 0.2, 2.0


async def committed_offsets(consumer: Any, partitions: list[TopicPartition], timeout_s: float, *,
                            route: str) -> list[TopicPartition]:
    """``consumer.committed(partitions)``, asked again with a growing pause (0.2 s up to 2 s) on a coordinator
    error until ``timeout_s`` has passed; any other error, or one still there at the deadline, is raised."""
    deadline = time.monotonic() + timeout_s
    pause = FIRST_PAUSE_S
    while True:
        try:
            return await consumer.committed(partitions, timeout=max(1.0, deadline - time.monotonic()))
        except KafkaException as err:
            error = kafka_error(err)
            if error is None or error.code() not in COORDINATOR_MOVED or time.monotonic() + pause >= deadline:
                raise
            log.warning("route %s: reading the committed offsets: %s; asking again in %.1fs", route, error.str(), pause)
        await asyncio.sleep(pause)
        pause = min(pause * 2, LAST_PAUSE_S)
