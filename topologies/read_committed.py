"""A Faust Kafka transport whose consumer reads with ``isolation_level=read_committed``.

In exactly-once mode the route agents write their outputs and summaries in
Kafka transactions, so the aggregator (and every agent of the worker) must not
see records of aborted transactions. Faust ties read_committed to its own
exactly-once commit path, which does not fit outputs that are not co-partitioned
with the inputs; this transport changes only the consumer's isolation level.
Brokers are addressed as ``kafka-rc://host:port``.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ["SCHEME", "Transport"]

SCHEME = "kafka-rc"


class _ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        # Faust reads `consumer.in_transaction` here only to choose the isolation level;
        # the flag goes back at once so Faust's commits stay the plain (non-transactional) kind.
        previous = self.consumer.in_transaction
        self.consumer.in_transaction = True
        try:
            return super()._create_worker_consumer(transport)
        finally:
            self.consumer.in_transaction = previous


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
