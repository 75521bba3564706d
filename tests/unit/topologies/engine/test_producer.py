"""The batch producer: its partitioner picks the partition Kafka's default partitioner picks, and its
record batches stay within each topic's max.message.bytes."""

from __future__ import annotations

import os
import random

from aiokafka.partitioner import DefaultPartitioner

from topologies.engine.producer import partition_for
from topologies.engine.topic_limits import BATCH_OVERHEAD, MAX_BATCH_BYTES, batch_bytes


def test_partition_for_matches_kafkas_default_partitioner() -> None:
    rng = random.Random(7)
    reference = DefaultPartitioner()
    for _ in range(3000):
        key = os.urandom(rng.randint(0, 64))
        n = rng.randint(1, 64)
        assert partition_for(key, n) == reference(key, list(range(n)), list(range(n)))


def test_known_vectors_from_the_java_client() -> None:
    # org.apache.kafka.common.utils.Utils.murmur2 test vectors (UtilsTest.testMurmur2), as positive ints
    vectors = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
               b"a-little-bit-longer-string": -1486304829, b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
               b"abc": 479470107}
    for key, signed in vectors.items():
        assert partition_for(key, 2**31 - 1) == (signed & 0x7FFFFFFF) % (2**31 - 1)


def test_record_batches_fit_the_smallest_max_message_bytes_of_the_routes_output_topics() -> None:
    limits = {"results": 1_048_588, "dlq": 20_000}
    assert batch_bytes(limits, ["results", "dlq"]) == 20_000 - BATCH_OVERHEAD
    assert batch_bytes(limits, ["results"]) == MAX_BATCH_BYTES, "never above the producer's own batch"
    assert batch_bytes({}, ["unknown"]) == MAX_BATCH_BYTES


class _Meta:
    def __init__(self, topic: str, n: int) -> None:
        self.topics = {topic: type("T", (), {"partitions": dict.fromkeys(range(n))})()}


class _Librdkafka:
    """``list_topics`` times out ``timeouts`` times (a worker frozen mid-lookup finds its timeout spent), then answers."""

    def __init__(self, timeouts: int, code: int = -185) -> None:
        self.timeouts, self.code, self.calls = timeouts, code, 0

    def list_topics(self, topic: str, timeout: float) -> _Meta:
        self.calls += 1
        if self.calls <= self.timeouts:
            from confluent_kafka import KafkaError, KafkaException
            raise KafkaException(KafkaError(self.code, "Failed to get metadata: Local: Timed out"))
        return _Meta(topic, 4)

    def poll(self, timeout: float) -> int:
        return 0


async def _count_with(fake: _Librdkafka) -> int:
    from topologies.engine.producer import BatchProducer

    producer = BatchProducer({"bootstrap.servers": "127.0.0.1:1"})
    producer._producer = fake  # type: ignore[assignment]
    try:
        return await producer._count("results")
    finally:
        producer.abandon("test over")


async def test_a_partition_lookup_that_timed_out_is_tried_again_not_failed() -> None:
    fake = _Librdkafka(timeouts=2)
    assert await _count_with(fake) == 4 and fake.calls == 3


async def test_a_lookup_that_keeps_failing_or_fails_otherwise_fails_the_batch() -> None:
    import pytest
    from confluent_kafka import KafkaError, KafkaException

    with pytest.raises(KafkaException):
        await _count_with(_Librdkafka(timeouts=5))
    fake = _Librdkafka(timeouts=1, code=KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        await _count_with(fake)
    assert fake.calls == 1, "only a timed-out or unreachable lookup is tried again"
