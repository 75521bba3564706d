"""Reading a topic back: records decoded with the codec when the config knows the topic's schema.

Used by ``infertide tail`` and by tests and the demo. It reads without a
consumer group (manual assignment of every partition), so it never joins a
group, commits nothing and starts at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from infertide.clients.admin import aiokafka_kwargs, max_message_bytes, schema_for_topic
from schemas.codec import EventDecodeError, Limits, decode
from schemas.topology import Topology

__all__ = ["TailRecord", "atail", "read_topic"]


@dataclass(frozen=True, slots=True)
class TailRecord:
    """One record: ``event`` is the decoded model, or ``None`` with ``error`` set (or no schema known)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    schema: str | None
    event: Any = None
    error: EventDecodeError | None = None

    def as_json(self) -> Any:
        """The decoded event as plain JSON data; the raw JSON value for topics with no known schema."""
        if self.event is not None:
            return self.event.model_dump(mode="json", exclude_none=True)
        if self.value is None:
            return None
        try:
            return orjson.loads(self.value)
        except orjson.JSONDecodeError:
            return self.value.decode("utf-8", "replace")


async def atail(topology: Topology, topic: str, *, bootstrap: str | None = None, from_beginning: bool = False,
                max_records: int | None = None, idle_timeout_s: float = 5.0,
                partition_wait_s: float = 10.0) -> AsyncIterator[TailRecord]:
    """Yield records of ``topic`` until ``max_records`` or ``idle_timeout_s`` without a record.

    Args:
        topic: a full name or an alias (``text``, ``dlq``...).
        from_beginning: start at the earliest offset; else only records produced from now on.
        partition_wait_s: how long to wait for the topic to exist.
    """
    topic = topology.topics.resolve(topic)
    schema = schema_for_topic(topology, topic)
    limits = Limits.from_config(topology.limits)
    consumer = AIOKafkaConsumer(client_id="infertide-tail", group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed",  # exactly-once: only committed results
                                fetch_max_bytes=max(52428800, max_message_bytes(topology)),
                                max_partition_fetch_bytes=max_message_bytes(topology),
                                **aiokafka_kwargs(topology.kafka, bootstrap))
    await consumer.start()
    try:
        deadline = time.monotonic() + partition_wait_s
        while not (parts := consumer.partitions_for_topic(topic)):
            if time.monotonic() > deadline:
                raise LookupError(f"topic {topic!r} does not exist (create it: infertide topics create)")
            await consumer._client.force_metadata_update()  # noqa: SLF001 - no public refresh in aiokafka
            await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
            for tp in tps:  # resolve the end offsets now, so records produced after this call are seen
                await consumer.position(tp)
        seen = 0
        last = time.monotonic()
        while max_records is None or seen < max_records:
            left = idle_timeout_s - (time.monotonic() - last)
            if left <= 0:
                return
            batch = await consumer.getmany(timeout_ms=int(min(left, 1.0) * 1000), max_records=1000)
            for tp, msgs in sorted(batch.items(), key=lambda kv: kv[0].partition):
                for m in msgs:
                    yield _record(m, schema, limits)
                    seen += 1
                    last = time.monotonic()
                    if max_records is not None and seen >= max_records:
                        return
    finally:
        await consumer.stop()


def _record(m: Any, schema: str | None, limits: Limits) -> TailRecord:
    event = error = None
    if schema is not None:
        try:
            event = decode(m.value, schema, limits)
        except EventDecodeError as err:
            error = err
    return TailRecord(m.topic, m.partition, m.offset, m.key, m.value, schema, event, error)


def read_topic(topology: Topology, topic: str, *, bootstrap: str | None = None, from_beginning: bool = True,
               max_records: int | None = None, idle_timeout_s: float = 5.0) -> list[TailRecord]:
    """Blocking: every record :func:`atail` yields, as a list."""

    async def collect() -> list[TailRecord]:
        return [r async for r in atail(topology, topic, bootstrap=bootstrap, from_beginning=from_beginning,
                                       max_records=max_records, idle_timeout_s=idle_timeout_s)]

    return asyncio.run(collect())
