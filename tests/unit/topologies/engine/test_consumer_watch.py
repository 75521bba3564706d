"""A route consumer's call that never returns stops the worker (exit 70, restarted from the committed offsets)
instead of stalling the route silently; long calls inside a rebalance callback are expected, not stuck."""

from __future__ import annotations

import asyncio

from topologies.engine.consumer_watch import ConsumerStuck, WatchedConsumer, watch


class Librdkafka:
    """An AIOConsumer stand-in: ``consume`` returns at once unless ``hang`` is set (then never)."""

    def __init__(self) -> None:
        self.hang = asyncio.Event()

    async def consume(self, n: int, timeout: float) -> list[object]:
        if self.hang.is_set():
            await asyncio.Event().wait()  # the call inside which on_lost ran, never returning
        return []

    def memberid(self) -> str:
        return "m-1"


async def test_calls_pass_through_and_only_calls_in_flight_are_counted() -> None:
    consumer = WatchedConsumer(Librdkafka())
    assert await consumer.consume(10, 0) == []
    assert consumer.memberid() == "m-1", "plain methods are the consumer's own"
    assert consumer.stuck(0.0) is None


async def test_a_call_that_never_returns_is_reported_once_as_fatal() -> None:
    inner = Librdkafka()
    consumer = WatchedConsumer(inner)
    inner.hang.set()
    call = asyncio.ensure_future(consumer.consume(10, 1.0))
    fatal: list[BaseException] = []
    await asyncio.wait_for(watch("text", consumer, fatal.append, limit_s=0.05, every_s=0.02), 2)
    assert len(fatal) == 1 and isinstance(fatal[0], ConsumerStuck)
    assert "route text" in str(fatal[0]) and "consume()" in str(fatal[0])
    call.cancel()


async def test_a_long_call_inside_a_rebalance_callback_is_not_stuck() -> None:
    inner = Librdkafka()
    consumer = WatchedConsumer(inner)
    release = asyncio.Event()

    async def on_assign(_: object, partitions: list[object]) -> None:  # e.g. committed() waiting on a transaction
        await release.wait()

    inner.hang.set()
    call = asyncio.ensure_future(consumer.consume(10, 1.0))
    callback = asyncio.ensure_future(consumer.callback(on_assign)(inner, []))
    await asyncio.sleep(0.05)
    assert consumer.stuck(0.01) is None, "the callback runs inside consume: expected to take long"
    release.set()
    await callback
    found = consumer.stuck(0.01)
    assert found is not None and found[0] == "consume"
    call.cancel()
