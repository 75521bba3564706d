"""Exactly-once delivery when librdkafka wedges: a transactional call that never returns (confluentinc/librdkafka#5456)
makes the route replace its producer, fail the old one's pending batches and read again from the committed offsets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from topologies.engine import producer as producer_module
from topologies.engine.delivery import AtLeastOnce, ExactlyOnce
from topologies.engine.ledger import PartitionLedger
from topologies.transactions import Wedged
from topologies.engine.producer import _Deliveries
from topologies.engine.replays import SummaryScanner


class FakeProducer:
    """Records the transactional calls; ``wedge`` makes ``send_offsets`` raise :class:`Wedged` once."""

    def __init__(self, log: list[str], name: str, wedge: bool = False) -> None:
        self.log, self.name, self.wedge = log, name, wedge
        self.abandoned: str | None = None

    async def init_transactions(self) -> None:
        self.log.append(f"{self.name}.init")

    async def begin(self) -> None:
        self.log.append(f"{self.name}.begin")

    async def send_offsets(self, plan: Any, group_metadata: Any) -> None:
        self.log.append(f"{self.name}.send_offsets")
        if self.wedge:
            self.wedge = False
            raise Wedged("send_offsets_to_transaction did not return in 40s")

    async def commit(self) -> None:
        self.log.append(f"{self.name}.commit")

    def fresh(self) -> FakeProducer:
        return FakeProducer(self.log, self.name + "'")

    def abandon(self, why: str) -> None:
        self.abandoned = why


class FakeConsumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []

    async def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


class Rec:
    def __init__(self, partition: int, offset: int) -> None:
        self.topic, self.partition, self.offset = "in", partition, offset


async def test_a_wedged_send_offsets_replaces_the_producer_and_reads_again_from_the_commit() -> None:
    log: list[str] = []
    ledger = PartitionLedger(exactly_once=True)
    ledger.assigned({("in", 0): (10, None)}, {})
    old = FakeProducer(log, "p", wedge=True)
    fatal: list[BaseException] = []
    delivery = ExactlyOnce("text", ledger, old, on_fatal=fatal.append)  # type: ignore[arg-type]
    delivery.consumer = FakeConsumer()
    records = [Rec(0, 10), Rec(0, 11)]
    ledger.fetched(("in", 0), records)
    ticket = ledger.submitted(records)
    ledger.published(ticket)
    ledger.acked(ticket)
    assert ledger.commit_plan(), "the batch is ready to commit"

    await delivery.commit()

    assert not fatal
    assert old.abandoned and "did not return" in old.abandoned
    assert delivery.producer is not old
    assert log == ["p.send_offsets", "p'.init", "p'.begin"], "the new producer starts a transaction; nothing committed"
    assert delivery.consumer.seeks == [("in", 0, 10)], "read again from the committed offset"
    assert not ledger.current(ticket), "the batch of the abandoned transaction is never committed"


async def test_abandoning_fails_pending_batches_at_once() -> None:
    loop = asyncio.get_running_loop()
    pending = _Deliveries(loop, 3)
    pending.fail(producer_module.KafkaException("producer replaced"))
    with pytest.raises(producer_module.KafkaException):
        await pending.future


class CommitRecorder:
    """A consumer that records commits (offsets and whether the caller waited)."""

    def __init__(self) -> None:
        self.commits: list[tuple[list[tuple[str, int, int, str]], bool]] = []

    async def commit(self, *, offsets: Any, asynchronous: bool) -> None:
        self.commits.append(([(tp.topic, tp.partition, tp.offset, tp.metadata) for tp in offsets], asynchronous))


async def test_at_least_once_interval_commits_do_not_wait_and_count_only_when_the_broker_answers() -> None:
    ledger = PartitionLedger()
    ledger.assigned({("in", 0): (10, None)})
    ledger.acked(ledger.submitted([Rec(0, 10), Rec(0, 11)]))
    delivery = AtLeastOnce("text", ledger, FakeProducer([], "p"), SummaryScanner(None, {}), on_fatal=pytest.fail)
    delivery.consumer = consumer = CommitRecorder()

    await delivery.commit()
    assert consumer.commits == [([("in", 0, 12, "")], True)], "the interval's commit is asynchronous"
    assert ledger.parts[("in", 0)].committed == 10, "not committed until librdkafka says so"
    await delivery.commit()
    assert len(consumer.commits) == 1, "one unanswered commit at a time"

    await delivery.on_commit(KafkaError(KafkaError.REBALANCE_IN_PROGRESS), [TopicPartition("in", 0, 12)])
    assert ledger.parts[("in", 0)].committed == 10, "a refused commit records nothing"
    await delivery.commit()
    await delivery.on_commit(None, [TopicPartition("in", 0, 12)])
    assert ledger.parts[("in", 0)].committed == 12

    ledger.acked(ledger.submitted([Rec(0, 12)]))
    await delivery.commit(final=True)
    assert consumer.commits[-1] == ([("in", 0, 13, "")], False), "a revocation's commit waits for the broker"
    assert ledger.parts[("in", 0)].committed == 13


class TimingOutAbort(FakeProducer):
    """``send_offsets`` refused (the member was expelled), then every ``abort`` times out (retriable)."""

    async def send_offsets(self, plan: Any, group_metadata: Any) -> None:
        self.log.append(f"{self.name}.send_offsets")
        raise KafkaException(KafkaError(KafkaError.UNKNOWN_MEMBER_ID, txn_requires_abort=True))

    async def abort(self, timeout_s: float = 30.0) -> None:
        self.log.append(f"{self.name}.abort({timeout_s:g})")
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, retriable=True))


def _expelled_commit(old: FakeProducer) -> tuple[ExactlyOnce, PartitionLedger, Any, list[BaseException]]:
    """A delivery whose two acknowledged records wait for the next commit; its fatal errors are collected."""
    ledger = PartitionLedger(exactly_once=True)
    ledger.assigned({("in", 0): (10, None)}, {})
    fatal: list[BaseException] = []
    delivery = ExactlyOnce("text", ledger, old, on_fatal=fatal.append, retry_for_s=0.05)  # type: ignore[arg-type]
    delivery.consumer = FakeConsumer()
    records = [Rec(0, 10), Rec(0, 11)]
    ledger.fetched(("in", 0), records)
    ticket = ledger.submitted(records)
    ledger.published(ticket)
    ledger.acked(ticket)
    return delivery, ledger, ticket, fatal


async def test_an_abort_that_keeps_timing_out_replaces_the_producer_instead_of_stopping_the_worker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from topologies.engine import delivery as delivery_module

    monkeypatch.setattr(delivery_module, "RETRY_S", 0.01)
    monkeypatch.setattr(delivery_module, "ABORT_TIMEOUT_S", 0.05)
    log: list[str] = []
    old = TimingOutAbort(log, "p")
    delivery, ledger, ticket, fatal = _expelled_commit(old)
    delivery.retry_for_s = 60.0  # the abort's own bound applies, not the commit's patience

    await asyncio.wait_for(delivery.commit(), 5)

    assert not fatal, fatal
    assert "p.abort(0.05)" in log and old.abandoned and "abort did not finish" in old.abandoned
    assert log[-2:] == ["p'.init", "p'.begin"], "a new producer under the same id fences the old one and begins"
    assert delivery.consumer.seeks == [("in", 0, 10)], "read again from the committed offset"
    assert not ledger.current(ticket), "the batch of the aborted transaction is never committed"


class FatalAbort(TimingOutAbort):
    """``send_offsets`` refused, then the abort fails fatally as the broker shuts down (seen in a clean-clone run:
    ``Failed to end transaction: ... INVALID_TXN_STATE``), or with ``code`` instead."""

    def __init__(self, log: list[str], name: str, code: int = KafkaError.INVALID_TXN_STATE) -> None:
        super().__init__(log, name)
        self.code = code

    async def abort(self, timeout_s: float = 30.0) -> None:
        self.log.append(f"{self.name}.abort({timeout_s:g})")
        raise KafkaException(KafkaError(self.code, fatal=True))


async def test_a_fatal_abort_replaces_the_producer_instead_of_stopping_the_worker() -> None:
    log: list[str] = []
    old = FatalAbort(log, "p")
    delivery, ledger, ticket, fatal = _expelled_commit(old)

    await delivery.commit()

    assert not fatal, fatal
    assert old.abandoned is not None and "INVALID_TXN_STATE" in old.abandoned, old.abandoned
    assert log[-2:] == ["p'.init", "p'.begin"], "a new producer under the same id fences the old one and begins"
    assert delivery.consumer.seeks == [("in", 0, 10)], "read again from the committed offset"
    assert not ledger.current(ticket)


@pytest.mark.parametrize("code", [KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH])
async def test_a_fenced_producer_stops_the_worker_and_fences_no_one_back(code: int) -> None:
    log: list[str] = []
    old = FatalAbort(log, "p", code)
    delivery, _, _, fatal = _expelled_commit(old)

    await delivery.commit()

    assert len(fatal) == 1 and fatal[0].args[0].code() == code
    assert "p'.init" not in log, "a new producer would fence the worker that now holds the id"
    assert old.abandoned is None
