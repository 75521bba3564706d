"""A shadow's own bounded queue: the live path hands work over without ever waiting, and sheds when it is full.

Contract:

- ``offer(items)`` never blocks and never raises for a full queue: it accepts what fits (in order)
  and sheds the rest, counting them in ``shed``; it returns how many it accepted. So a slow or dead
  shadow costs the live route one call per batch, never a held batch or a held commit.
- ``next_batch(max_items)`` waits until something is queued (or the queue is closed) and takes up
  to ``max_items`` in the order offered.
- ``offered == accepted + shed`` and ``accepted == taken + len(queue)`` always.
- Shadow work is not part of the delivery guarantee: what is queued when a worker stops or loses
  the partition is dropped (counted in ``dropped`` by ``close``), and a replayed event may be shadowed twice.

The route engine owns the task that drains it (one per shadow per worker): it calls the shadow's
model for each batch and writes to the shadow topic and the comparison (``topologies.rollout.compare``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

__all__ = ["ShadowQueue"]

T = TypeVar("T")


class ShadowQueue(Generic[T]):
    """A FIFO of at most ``size`` items that sheds instead of blocking (see the module docstring)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a shadow queue holds at least 1 item, got size={size}")
        self.size = size
        self._items: deque[T] = deque()
        self._ready = asyncio.Event()
        self.closed = False
        self.offered = self.accepted = self.shed = self.taken = self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, items: Iterable[T]) -> int:
        """Queue what fits of ``items``; shed (count) the rest. Returns how many were accepted."""
        accepted = 0
        for item in items:
            self.offered += 1
            if self.closed or len(self._items) >= self.size:
                self.shed += 1
                continue
            self._items.append(item)
            accepted += 1
        self.accepted += accepted
        if self._items:
            self._ready.set()
        return accepted

    async def next_batch(self, max_items: int) -> list[T]:
        """Up to ``max_items`` queued items, waiting for the first; ``[]`` once closed and empty."""
        while not self._items:
            if self.closed:
                return []
            self._ready.clear()
            await self._ready.wait()
        out = [self._items.popleft() for _ in range(min(max_items, len(self._items)))]
        self.taken += len(out)
        return out

    def close(self) -> int:
        """Stop accepting; drop what is queued (shadow work is best effort) and wake the drainer."""
        self.closed = True
        self.dropped += len(self._items)
        dropped = len(self._items)
        self._items.clear()
        self._ready.set()
        return dropped

    def stats(self) -> dict[str, int]:
        return {"size": self.size, "queued": len(self._items), "offered": self.offered, "accepted": self.accepted,
                "shed": self.shed, "taken": self.taken, "dropped": self.dropped}
