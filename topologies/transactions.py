"""Exactly-once delivery: a batch's outputs and its input offsets committed in one Kafka transaction.

Used when ``delivery.processing_guarantee: exactly-once``. Each route of each
worker owns one transactional producer (``transactional.id`` =
``<consumer_group>-<route>-<worker id>``). Per batch: begin, produce every
result/dead letter/summary, add the batch's input offsets to the transaction
for the consumer group, commit. Consumers reading with
``isolation_level=read_committed`` see each batch's outputs once, and the group
resumes after the last committed batch. A restart under the same worker id
fences the previous producer (``init_transactions``). Faust's own commit is not
used for the route inputs in this mode (their events are never acknowledged to
Faust), so it can never move the group's offsets behind a committed transaction.
"""

from __future__ import annotations

import logging
from aiokafka import AIOKafkaProducer, TopicPartition

from schemas.topology import KafkaConfig
from topologies.kafka_clients import aiokafka_kwargs
from topologies.records import InputRecord, OutRecord

__all__ = ["TransactionalDelivery"]

log = logging.getLogger(__name__)


class TransactionalDelivery:
    """``await delivery(outputs, inputs)``: one transaction per batch.

    Args:
        kafka: connection settings.
        transactional_id: stable across restarts of the same worker (it fences zombies).
        group_id: the consumer group whose offsets the transaction commits.
        max_request_size: largest record the producer may send.
    """

    def __init__(self, kafka: KafkaConfig, *, transactional_id: str, group_id: str, max_request_size: int) -> None:
        self.kafka = kafka
        self.transactional_id = transactional_id
        self.group_id = group_id
        self.max_request_size = max_request_size
        self.producer: AIOKafkaProducer | None = None
        self.committed: dict[tuple[str, int], int] = {}

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(
            transactional_id=self.transactional_id, enable_idempotence=True, acks="all",
            linger_ms=int(self.kafka.producer_linger_s * 1000), max_request_size=self.max_request_size,
            client_id=self.transactional_id, **aiokafka_kwargs(self.kafka))
        await self.producer.start()  # init_transactions: fences an older producer with this id
        log.info("transactional producer %s ready", self.transactional_id)

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    async def __call__(self, outputs: list[OutRecord], inputs: list[InputRecord]) -> None:
        if self.producer is None:  # started lazily, on the worker's event loop
            await self.start()
        assert self.producer is not None
        offsets: dict[TopicPartition, int] = {}
        for rec in inputs:
            tp = TopicPartition(rec.topic, rec.partition)
            offsets[tp] = max(offsets.get(tp, 0), rec.offset + 1)
        async with self.producer.transaction():  # aborts on any exception
            for out in outputs:
                await self.producer.send(out.topic, out.value, key=out.key, headers=list(out.headers) or None)
            await self.producer.send_offsets_to_transaction(offsets, self.group_id)
        for tp, offset in offsets.items():
            self.committed[(tp.topic, tp.partition)] = offset

    def __repr__(self) -> str:
        return f"TransactionalDelivery({self.transactional_id!r})"
