"""The ordered executor alone: order, pipelined publishing, bounded slots, failure handling."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from topologies.engine.executor import ExecutorFailed, OrderedExecutor


async def _work(value: int, delay: float) -> int:
    await asyncio.sleep(delay)
    return value


async def test_acks_follow_submit_order_and_publishing_does_not_wait_for_deliveries() -> None:
    published: list[int] = []
    acked: list[int] = []
    deliveries: dict[int, asyncio.Future[None]] = {}

    async def publish(value: int) -> list[asyncio.Future[None]]:
        published.append(value)
        deliveries[value] = asyncio.get_running_loop().create_future()
        return [deliveries[value]]

    ex: OrderedExecutor[int] = OrderedExecutor("t", 4, publish)
    for i in range(4):
        await ex.submit(_work(i, random.uniform(0, 0.02)), lambda _, i=i: asyncio.sleep(0, acked.append(i)))
    await asyncio.sleep(0.05)
    assert published == [0, 1, 2, 3], "every batch is published before any delivery is acknowledged"
    assert acked == []
    for i in (3, 1, 2, 0):  # deliveries complete out of order; acks still go in submit order
        deliveries[i].set_result(None)
    assert await ex.drain(1.0)
    assert acked == [0, 1, 2, 3]
    await ex.close()


async def test_a_failed_delivery_stops_acks_wakes_blocked_submitters_and_reports_once() -> None:
    fatal: list[BaseException] = []

    async def publish(value: int) -> list[Any]:
        fut = asyncio.get_running_loop().create_future()
        if value == 1:
            fut.set_exception(OSError("broker gone"))
        else:
            fut.set_result(None)
        return [fut]

    acked: list[int] = []
    ex: OrderedExecutor[int] = OrderedExecutor("t", 1, publish, on_fatal=fatal.append)
    await ex.submit(_work(0, 0.0), lambda _: asyncio.sleep(0, acked.append(0)))
    await ex.submit(_work(1, 0.02), lambda _: asyncio.sleep(0, acked.append(1)))  # waits for 0's slot, then fails
    blocked = asyncio.ensure_future(ex.submit(_work(2, 0), lambda _: asyncio.sleep(0, acked.append(2))))
    await asyncio.sleep(0.005)
    assert not blocked.done(), "the third batch waits for the failing one's slot"
    with pytest.raises(ExecutorFailed):
        await asyncio.wait_for(blocked, 1.0)
    assert acked == [0] and len(fatal) == 1 and isinstance(fatal[0], OSError)
    assert not await ex.drain(0.1)
    await ex.close()


async def test_ack_gets_the_delivery_results_in_publish_order() -> None:
    async def publish(value: int) -> list[asyncio.Future[str]]:
        futures = [asyncio.get_running_loop().create_future() for _ in range(3)]
        for j, fut in enumerate(futures):
            asyncio.get_running_loop().call_later(0.01 * (3 - j), fut.set_result, f"{value}.{j}")
        return futures

    acked: list[list[Any]] = []

    async def ack(results: list[Any]) -> None:
        acked.append(results)

    ex: OrderedExecutor[int] = OrderedExecutor("t", 2, publish)
    await ex.submit(_work(7, 0.0), ack)
    await ex.submit(_work(8, 0.0), ack)
    assert await ex.drain(1.0)
    assert acked == [["7.0", "7.1", "7.2"], ["8.0", "8.1", "8.2"]]
    await ex.close()
