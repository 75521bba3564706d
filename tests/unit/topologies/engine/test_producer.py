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
