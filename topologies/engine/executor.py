"""The ordered, bounded executor: batches run concurrently, finish strictly in the order they were submitted.

Delivery contract (what the route engine relies on):

- At most ``max_in_flight`` batches are outstanding (submitted and not yet acknowledged);
  :meth:`OrderedExecutor.submit` waits for a slot, which is the route's backpressure.
- A batch's work (the Serve calls) runs as soon as it is submitted; its outputs are handed to
  ``publish`` in submit order, whatever order the work finishes in, so results of one
  partition keep input order with ``max_in_flight`` > 1.
- ``publish`` schedules the produces and returns the delivery futures; the batch's ``ack``
  runs only after every one of them is acknowledged by the broker, and acks run in submit
  order too. ``ack`` gets the futures' results, in the order ``publish`` returned them (for
  Kafka: the ``RecordMetadata`` of each record batch, so the consumer learns where outputs
  landed). Publishing batch N+1 does not wait for batch N's deliveries (pipelined).
- A failed delivery (or a failing ``publish``/``ack``) is fatal: no later batch is acked,
  ``on_fatal`` is called once, and :meth:`submit` refuses new work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["ExecutorFailed", "OrderedExecutor"]

log = logging.getLogger(__name__)

T = TypeVar("T")
PublishFn = Callable[[T], Awaitable[Sequence[Awaitable[Any]]]]
AckFn = Callable[[list[Any]], Awaitable[Any]]  # ``await ack(delivery results)``


class ExecutorFailed(RuntimeError):
    """The executor stopped after a delivery failure; nothing after it was acknowledged."""


class OrderedExecutor(Generic[T]):
    """Runs batch work concurrently and publishes/acks the outputs in submit order.

    Args:
        name: used in log lines (the route's name).
        max_in_flight: batches outstanding at most.
        publish: ``await publish(output) -> [delivery futures]``.
        on_fatal: called once with the error when a delivery fails.
        on_settled: called with the number of outstanding batches whenever it changes.
    """

    def __init__(self, name: str, max_in_flight: int, publish: PublishFn[T], *,
                 on_fatal: Callable[[BaseException], None] | None = None,
                 on_settled: Callable[[int], None] | None = None) -> None:
        self.name = name
        self.max_in_flight = max_in_flight
        self.publish = publish
        self.on_fatal = on_fatal
        self.on_settled = on_settled
        self.failed: BaseException | None = None
        self.outstanding = 0
        self._slots = asyncio.Semaphore(max_in_flight)
        self._work: asyncio.Queue[tuple[asyncio.Task[T], AckFn]] = asyncio.Queue()
        self._acks: asyncio.Queue[tuple[Sequence[Awaitable[Any]], AckFn]] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []

    async def wait_for_slot(self) -> None:
        """Returns once a batch could be submitted without waiting (the caller may then fill one)."""
        self._check()
        await self._slots.acquire()
        self._slots.release()

    async def submit(self, work: Coroutine[Any, Any, T], ack: AckFn) -> None:
        """Start ``work`` now; its output is published and ``ack(delivery results)`` awaited in submit order."""
        try:
            self._check()
            await self._slots.acquire()
            if self.failed is not None:
                self._slots.release()
                self._check()
        except BaseException:
            work.close()
            raise
        if not self._tasks:
            self._tasks = [asyncio.ensure_future(self._publish_in_order()),
                           asyncio.ensure_future(self._ack_in_order())]
        self._changed(+1)
        await self._work.put((asyncio.ensure_future(work), ack))

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until nothing is outstanding; False on timeout or failure (then nothing more is acked)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return self.failed is None

    async def close(self) -> None:
        """Cancel the background tasks (outstanding batches are abandoned, never acked)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def _check(self) -> None:
        if self.failed is not None:
            raise ExecutorFailed(f"route {self.name}: stopped after a delivery failure") from self.failed

    def _changed(self, delta: int) -> None:
        self.outstanding += delta
        if self.outstanding:
            self._idle.clear()
        else:
            self._idle.set()
        if self.on_settled is not None:
            self.on_settled(self.outstanding)

    async def _publish_in_order(self) -> None:
        while True:
            task, ack = await self._work.get()
            try:
                futures = await self.publish(await task)
            except BaseException as err:
                self._fail(err)
                return
            await self._acks.put((futures, ack))

    async def _ack_in_order(self) -> None:
        while True:
            futures, ack = await self._acks.get()
            try:
                results = await asyncio.gather(*futures)
                await ack(results)
            except BaseException as err:
                self._fail(err)
                return
            self._changed(-1)
            self._slots.release()

    def _fail(self, err: BaseException) -> None:
        if isinstance(err, asyncio.CancelledError):
            return
        self.failed = err
        log.critical("route %s: producing results failed, stopping without commit: %r", self.name, err)
        self._idle.set()  # drain() returns (False): nothing more will be acked
        for _ in range(self.max_in_flight):  # wake submitters blocked on a slot: they see the failure
            self._slots.release()
        if self.on_fatal is not None:
            self.on_fatal(err)
