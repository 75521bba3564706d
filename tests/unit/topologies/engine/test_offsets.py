"""Committed offsets asked again while the coordinator moves; every other error at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from topologies.engine import offsets
from topologies.engine.offsets import committed_offsets


class _Consumer:
    """Answers ``committed`` with the queued errors first, then the partitions at offset 7."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = list(errors)
        self.calls: list[float] = []

    async def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.calls.append(timeout)
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return [TopicPartition(tp.topic, tp.partition, 7) for tp in partitions]


@pytest.fixture(autouse=True)
def _short_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offsets, "FIRST_PAUSE_S", 0.01)
    monkeypatch.setattr(offsets, "LAST_PAUSE_S", 0.02)


def _ask(consumer: Any, timeout_s: float = 5.0) -> list[TopicPartition]:
    return asyncio.run(committed_offsets(consumer, [TopicPartition("t", 0)], timeout_s, route="text"))


def test_a_moving_coordinator_is_asked_again_until_it_answers() -> None:
    consumer = _Consumer([KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                          KafkaError.COORDINATOR_NOT_AVAILABLE])
    assert [(tp.topic, tp.partition, tp.offset) for tp in _ask(consumer)] == [("t", 0, 7)]
    assert len(consumer.calls) == 4
    assert all(0 < t <= 5.0 for t in consumer.calls)  # each call gets what is left of the timeout


def test_any_other_error_is_raised_at_once() -> None:
    consumer = _Consumer([KafkaError.GROUP_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException) as raised:
        _ask(consumer)
    assert raised.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    assert len(consumer.calls) == 1


def test_a_coordinator_error_still_there_at_the_deadline_is_raised() -> None:
    consumer = _Consumer([KafkaError.NOT_COORDINATOR] * 1000)
    with pytest.raises(KafkaException):
        _ask(consumer, timeout_s=0.2)
    assert 2 <= len(consumer.calls) < 1000
