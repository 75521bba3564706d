"""Two transports from a stream worker to the Serve models, timed on the same items: a ``DeploymentHandle``
(the worker is a Ray driver: on Kubernetes it must join the cluster as a node) and Serve's HTTP ingress
(``POST /<model>`` on the application's ``Ingress``: no Ray in the worker at all).

Run against a running cluster::

    python -m infertide.bench.transport --ray-address 127.0.0.1:6379 --http http://127.0.0.1:8000 \\
        --model sentiment --calls 200 --batch 32 --concurrency 4

Prints one JSON object: items/s and p50/p99 call latency per transport.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["bench", "main"]

Call = Callable[[list[Any]], Awaitable[list[Any]]]


async def _run(call: Call, items: list[Any], calls: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            t = time.perf_counter()
            out = await call(items)
            latencies.append(time.perf_counter() - t)
            if len(out) != len(items) or not all(r.get("ok") for r in out):
                raise RuntimeError(f"bad reply: {out[:1]}")

    await call(items)  # warm: connections, handle resolution
    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100)
    return {"items_per_s": round(calls * len(items) / wall), "calls_per_s": round(calls / wall, 1),
            "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1)}


async def bench(ray_address: str, http: str, model: str, app_name: str, items: list[Any], calls: int,
                concurrency: int) -> dict[str, Any]:
    """Time ``calls`` calls of ``items`` through each transport, ``concurrency`` in flight."""
    import aiohttp

    from topologies.engine.serve_client import connect_ray

    async with aiohttp.ClientSession() as session:
        async def over_http(batch: list[Any]) -> list[Any]:
            async with session.post(f"{http.rstrip('/')}/{model}", json=batch) as resp:
                resp.raise_for_status()
                return await resp.json()

        result = {"http": await _run(over_http, items, calls, concurrency)}
    connect_ray(ray_address)
    from ray import serve

    handle = serve.get_deployment_handle(model, app_name=app_name)

    async def over_handle(batch: list[Any]) -> list[Any]:
        return await handle.infer.remote(batch)

    result["handle"] = await _run(over_handle, items, calls, concurrency)
    return {"model": model, "batch": len(items), "calls": calls, "concurrency": concurrency, **result}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ray-address", required=True, help="GCS host:port of the cluster.")
    p.add_argument("--http", required=True, help="Serve's HTTP ingress, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", default="sentiment")
    p.add_argument("--app", default="infertide", help="Serve application name.")
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=4)
    a = p.parse_args(argv)
    items = [f"review number {i}: a fine film" for i in range(a.batch)]
    print(json.dumps(asyncio.run(bench(a.ray_address, a.http, a.model, a.app, items, a.calls, a.concurrency))))


if __name__ == "__main__":
    main()
