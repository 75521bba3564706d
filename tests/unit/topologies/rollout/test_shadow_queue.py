"""The shadow queue never makes the live path wait: full means shed and counted."""

from __future__ import annotations

import asyncio

import pytest

from topologies.rollout import ShadowQueue


def test_offer_sheds_what_does_not_fit_and_counts_stay_consistent() -> None:
    q: ShadowQueue[int] = ShadowQueue(5)
    assert q.offer(range(3)) == 3 and q.offer(range(3, 10)) == 2
    assert len(q) == 5 and q.shed == 5 and q.offered == 10

    async def drain() -> list[int]:
        return await q.next_batch(4)

    assert asyncio.run(drain()) == [0, 1, 2, 3]
    st = q.stats()
    assert st["offered"] == st["accepted"] + st["shed"] and st["accepted"] == st["taken"] + st["queued"]


def test_next_batch_waits_for_work_and_close_wakes_it() -> None:
    async def run() -> tuple[list[int], list[int], ShadowQueue[int]]:
        q: ShadowQueue[int] = ShadowQueue(3)
        waiter = asyncio.create_task(q.next_batch(10))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        q.offer([1, 2])
        first = await asyncio.wait_for(waiter, 1)
        q.offer([3])
        assert q.close() == 1
        assert q.offer([4]) == 0
        return first, await asyncio.wait_for(q.next_batch(10), 1), q

    first, after_close, q = asyncio.run(run())
    assert first == [1, 2] and after_close == []
    assert (q.dropped, q.shed) == (1, 1)  # queued at close: dropped; offered after it: shed


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ShadowQueue(0)
