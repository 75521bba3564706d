"""The recommendations fold's transactions: a wedged call or a fatal error replaces the producer and restores;
only fencing stops the fold. Fakes for librdkafka (pure logic); the real path runs in
tests/integration/test_recommendations_fold.py."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from topologies.state import recommendations as rec_module
from topologies.state.recfold import RecommendationFold, Step
from topologies.state.recommendations import Recommendations


class FakeProducer:
    """Records the calls; ``stuck`` never returns from that call, ``fail`` raises that error from it."""

    def __init__(self, name: str, log: list[str], stuck: str | None = None, fail: dict[str, KafkaError] | None = None):
        self.name, self.log, self.stuck, self.fail = name, log, stuck, fail or {}
        self.release = threading.Event()

    def __getattr__(self, call: str) -> Any:
        def run(*args: Any, **kwargs: Any) -> None:
            if call != "produce":
                self.log.append(f"{self.name}.{call}")
            if call == self.stuck:
                self.release.wait()
            if call in self.fail:
                raise KafkaException(self.fail[call])
        return run


class FakeConsumer:
    def __init__(self) -> None:
        self.seeks: list[Any] = []

    def consumer_group_metadata(self) -> str:
        return "group-metadata"

    def assignment(self) -> list[str]:
        return ["summaries-0"]

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


@pytest.fixture
def fold(tiny_topology, monkeypatch: pytest.MonkeyPatch):
    """A fold mid-interval (position 7, one row pending), its first producer given by the test."""
    monkeypatch.setattr(rec_module, "TXN_TIMEOUT_S", 0.1)
    monkeypatch.setattr(rec_module, "SEND_OFFSETS_TIMEOUT_S", 0.1)
    monkeypatch.setattr(rec_module, "CALL_GRACE_S", 0.2)
    recs = Recommendations(tiny_topology, "summaries", worker_id="w0")
    recs._consumer = FakeConsumer()
    recs.fold = RecommendationFold(tiny_topology.recommendations)
    recs.fold.position = 7
    recs._pending = Step(rows={"user|u1": b"{}"})
    log: list[str] = []
    recs.test_log = log
    made = iter(["p2", "p3"])

    def new_producer() -> None:  # what _new_producer does, with a fake in place of librdkafka's
        recs._producer = FakeProducer(next(made), log)
        recs._calls = rec_module.DaemonCalls("test-recommendations-calls")
        recs._txn(recs._producer.init_transactions)

    monkeypatch.setattr(recs, "_new_producer", new_producer)
    monkeypatch.setattr(recs, "_restore", lambda: 5)  # the committed state's position
    return recs


def start_with(recs: Recommendations, producer: FakeProducer) -> FakeProducer:
    recs._producer, recs._calls = producer, rec_module.DaemonCalls("test-recommendations-calls")
    return producer


def test_a_wedged_send_offsets_replaces_the_producer_and_restores(fold) -> None:
    old = start_with(fold, FakeProducer("p1", fold.test_log, stuck="send_offsets_to_transaction"))
    fold._commit()
    old.release.set()
    assert fold.test_log[:3] == ["p1.begin_transaction", "p1.send_offsets_to_transaction", "p2.init_transactions"]
    assert "p1.commit_transaction" not in fold.test_log, "nothing of the wedged transaction is committed"
    assert fold.replaced == 1 and fold._consumer.seeks == [("summaries", 0, 5)], "folds again from the committed state"


def test_a_fatal_commit_error_replaces_the_producer_instead_of_stopping(fold) -> None:
    fatal = KafkaError(KafkaError.INVALID_TXN_STATE, "broker went away mid-transaction", fatal=True)
    start_with(fold, FakeProducer("p1", fold.test_log, fail={"commit_transaction": fatal}))
    fold._commit()
    assert fold.test_log == ["p1.begin_transaction", "p1.send_offsets_to_transaction", "p1.commit_transaction",
                             "p2.init_transactions"]
    assert fold.replaced == 1 and fold._consumer.seeks == [("summaries", 0, 5)]


def test_a_wedged_abort_replaces_the_producer_too(fold) -> None:
    failed = KafkaError(KafkaError._TIMED_OUT, "commit timed out", txn_requires_abort=True)
    old = start_with(fold, FakeProducer("p1", fold.test_log, stuck="abort_transaction",
                                        fail={"commit_transaction": failed}))
    fold._commit()
    old.release.set()
    assert fold.test_log[-2:] == ["p1.abort_transaction", "p2.init_transactions"]
    assert fold.replaced == 1 and fold._consumer.seeks == [("summaries", 0, 5)]


@pytest.mark.parametrize("code", [KafkaError._FENCED, KafkaError.PRODUCER_FENCED])
def test_fencing_stops_the_fold(fold, code: int) -> None:
    start_with(fold, FakeProducer("p1", fold.test_log, fail={"commit_transaction": KafkaError(code, "fenced")}))
    with pytest.raises(KafkaException):
        fold._commit()
    assert fold.replaced == 0 and "p2.init_transactions" not in fold.test_log, "never fences the other back"
