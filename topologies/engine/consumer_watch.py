"""A route consumer whose calls are watched: one that never returns stops the worker instead of the route.

Seen in clean-clone runs (docs/reliability.md, "Open: an at-least-once route stalled after a broker
freeze"): after a broker restart or freeze, the ``consume`` call inside which librdkafka reported the
partitions lost never returned, so the route stopped fetching, silently, while the worker looked alive.
Every call of a route's consumer goes through :class:`WatchedConsumer`, which knows what is in flight
and since when; :func:`watch` checks every few seconds and, when a call has been in flight longer than
``STUCK_S`` while none of the route's rebalance callbacks runs (those legitimately wait inside
``consume``: a committed-offset lookup, a drain, a final commit), reports it as fatal: the worker exits
70 and its supervisor restarts it from the committed offsets, as for a route loop that fails.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["ConsumerStuck", "STUCK_S", "WatchedConsumer", "watch"]

log = logging.getLogger(__name__)

STUCK_S = 60.0  # a consumer call outside a rebalance callback takes at most the commit interval; this is stuck
CHECK_S = 5.0


class ConsumerStuck(RuntimeError):
    """A route consumer's call has not returned; the worker stops so that its supervisor restarts it."""


class WatchedConsumer:
    """``consumer`` (a ``confluent_kafka.aio.AIOConsumer``) with its coroutine calls in flight recorded."""

    def __init__(self, consumer: Any) -> None:
        self.inner = consumer
        self._calls: dict[int, tuple[str, float]] = {}
        self._ids = itertools.count()
        self._callbacks = 0  # the route's rebalance callbacks running now

    def __getattr__(self, name: str) -> Any:  # first use of ``name`` only: the result is kept on the instance
        attr = getattr(self.inner, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            key = next(self._ids)
            self._calls[key] = (name, time.monotonic())
            try:
                return await attr(*args, **kwargs)
            finally:
                del self._calls[key]

        setattr(self, name, call)  # the hot path (``consume`` per batch) finds it without __getattr__ from now on
        return call

    def callback(self, fn: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """``fn`` as a rebalance callback: while it runs, long consumer calls are expected."""

        async def run(*args: Any) -> None:
            self._callbacks += 1
            try:
                await fn(*args)
            finally:
                self._callbacks -= 1

        return run

    def stuck(self, limit_s: float, now: float | None = None) -> tuple[str, float] | None:
        """The oldest call in flight for more than ``limit_s`` (its name and age) while no callback runs."""
        if self._callbacks:
            return None
        now = time.monotonic() if now is None else now
        ages = [(now - since, name) for name, since in self._calls.values()]
        age, name = max(ages, default=(0.0, ""))
        return (name, age) if age > limit_s else None


async def watch(route: str, consumer: WatchedConsumer, on_stuck: Callable[[BaseException], None], *,
                limit_s: float = STUCK_S, every_s: float = CHECK_S) -> None:
    """Until cancelled: report the first call stuck past ``limit_s`` to ``on_stuck``, once."""
    while True:
        await asyncio.sleep(every_s)
        if (found := consumer.stuck(limit_s)) is not None:
            name, age = found
            err = ConsumerStuck(f"route {route}: its consumer's {name}() has not returned for {age:.0f} s (inside "
                                f"librdkafka); stopping the worker so that it restarts from the committed offsets")
            log.critical("%s", err)
            on_stuck(err)
            return
