"""The batch producer: its partitioner picks the partition Kafka's default partitioner picks, and its
record batches stay within each topic's max.message.bytes."""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from topologies.engine.producer import BatchProducer, partition_for
from topologies.engine.records import OutRecord


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


class _Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}


class _FakeProducer:
    """Real aiokafka record batches; sending only records each batch's size."""

    def __init__(self) -> None:
        self.client = type("Client", (), {"cluster": _Cluster()})()
        self.sent: list[tuple[str, int, int]] = []

    def create_batch(self) -> Any:
        from aiokafka.producer.message_accumulator import BatchBuilder

        return BatchBuilder(batch_size=512 * 1024, compression_type=0)

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        self.sent.append((topic, partition, batch.record_count(), batch.size()))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


async def test_record_batches_are_cut_to_the_topics_max_message_bytes() -> None:
    producer = _FakeProducer()
    records = [OutRecord("small", b"k", b"x" * 3000) for _ in range(10)] + [OutRecord("big", b"k", b"y" * 3000)] * 10
    await BatchProducer(producer, {"small": 10_000}).send_all(records)
    small = [s for s in producer.sent if s[0] == "small"]
    big = [s for s in producer.sent if s[0] == "big"]
    assert sum(n for _, _, n, _ in small) == 10 and len(small) == 4  # 3 records (9 KB) per batch at most
    assert all(size <= 10_000 for *_, size in small)
    assert len(big) == 1 and big[0][2] == 10  # no known limit: one batch, as before
