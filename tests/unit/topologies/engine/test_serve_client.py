"""ServeInfer's first call of a model gets the handle off the event loop (the controller lookup blocks)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from schemas.topology import parse_topology
from topologies.engine.serve_client import ServeInfer


class _Handle:
    class _Method:
        async def remote(self, items: list[Any]) -> list[Any]:
            return [{"ok": True, "result": {"label": "echo", "score": 1.0}} for _ in items]

    infer = _Method()


class _SlowLookup(ServeInfer):
    """``serve.get_deployment_handle`` stands in as a 0.3 s blocking call, as a busy Serve controller makes it."""

    lookups = 0

    def handle(self, model: str) -> Any:
        h = self._handles.get(model)
        if h is None:
            time.sleep(0.3)
            type(self).lookups += 1
            h = self._handles[model] = _Handle()
        return h


async def test_first_call_of_a_model_does_not_hold_the_event_loop() -> None:
    topology = parse_topology({"models": {"echo": {"task": "echo"}},
                               "routes": [{"name": "t", "input": "text", "kind": "text", "models": ["echo"]}]})
    infer = _SlowLookup(topology)
    ticks = 0

    async def ticker() -> None:  # a live batch's work that must go on meanwhile
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.get_running_loop().create_task(ticker())
    await asyncio.sleep(0)
    replies = await infer("echo", ["a", "b"])
    assert len(replies) == 2 and ticks >= 10  # the loop ran during the 0.3 s lookup
    ticks_before = ticks
    await infer("echo", ["c"])  # cached: no lookup
    task.cancel()
    assert _SlowLookup.lookups == 1 and ticks >= ticks_before
