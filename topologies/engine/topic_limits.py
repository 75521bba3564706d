"""What each output topic really accepts (``max.message.bytes``, read from the broker), so a record too
big for its topic is dealt with before it is produced instead of failing the worker.

A topic's ``max.message.bytes`` bounds a whole record batch. The config check at load
(``limits`` vs ``max_message_bytes``) covers topics this tool creates; topics created by
someone else, or changed later, may accept less. The route consumer reads the limits when it
starts (so a restart after such a change picks them up) and gives them to the producer (batches
are cut to fit) and to the batch logic (dead letters are cut to fit; a result that cannot fit
becomes a dead letter of stage ``produce``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from topologies.kafka_settings import MAX_BATCH_BYTES

__all__ = ["BATCH_OVERHEAD", "MAX_BATCH_BYTES", "batch_bytes", "read_topic_limits", "record_cap"]

log = logging.getLogger(__name__)

# A record batch's own header (61 bytes in the v2 format) plus a record's framing (varints,
# attributes) and our traceparent header, rounded up: what a record may not use of the limit.
BATCH_OVERHEAD = 256


def record_cap(limits: dict[str, int], topic: str) -> int | None:
    """The largest key + value one record of ``topic`` may have to fit in a batch alone (None: unknown)."""
    limit = limits.get(topic)
    return None if limit is None else max(0, limit - BATCH_OVERHEAD)


def batch_bytes(limits: dict[str, int], topics: Iterable[str]) -> int:
    """The producer's ``batch.size`` for ``topics``: one record batch must fit every topic it may go to (the
    broker refuses a batch over the topic's ``max.message.bytes`` whole, and librdkafka's batch size is one
    setting for all topics)."""
    caps = [c for t in topics if (c := record_cap(limits, t)) is not None]
    return max(1, min([MAX_BATCH_BYTES, *caps]))


async def read_topic_limits(topics: Iterable[str], config: dict[str, Any], timeout_s: float = 10.0) -> dict[str, int]:
    """``{topic: max.message.bytes}`` for the topics that exist; {} (with a warning) when the broker won't say.

    Args:
        topics: the output topics.
        config: librdkafka connection settings (``topologies.kafka_settings.confluent_config``).
    """
    names = sorted(set(topics))
    return await asyncio.get_running_loop().run_in_executor(None, _read, names, config, timeout_s)


def _read(names: list[str], config: dict[str, Any], timeout_s: float) -> dict[str, int]:
    admin = AdminClient(config)
    limits: dict[str, int] = {}
    try:
        futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in names],
                                         request_timeout=timeout_s)
        for resource, future in futures.items():
            try:
                entries = future.result(timeout=timeout_s)
            except KafkaException:
                continue  # not there yet (created on first produce with the broker's default)
            entry = entries.get("max.message.bytes")
            if entry is not None and entry.value is not None:
                limits[resource.name] = int(entry.value)
    except (KafkaException, TimeoutError, ValueError) as err:
        log.warning("could not read the output topics' max.message.bytes (%r); records are sized against "
                    "the producer's message.max.bytes only", err)
        return {}
    return limits
