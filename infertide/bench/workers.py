"""Benchmark the model workers: items/s through Ray Serve (a handle) vs the bare model class in-process.

Not a test: ``python -m infertide.bench.workers [--seconds 2] [--json PATH]``
(``make bench-workers``). Uses the tiny offline checkpoints (``infertide.demo.tiny_models``)
so it runs anywhere; each cell sends calls of ``batch`` items, one call in flight,
for ``--seconds``. The ratio serve/bare shows the system's overhead per call.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from infertide.demo.tiny_models import offline_env, tiny_topology
from topologies.engine.ray_signals import keeping_signal_handlers

__all__ = ["main", "run_bench"]

BATCHES = (1, 8, 32)


def _items(task: str, n: int) -> list[Any]:
    if task in ("sentiment", "echo"):
        return [f"this movie was great number {i} and i loved it" for i in range(n)]
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 140, 30)).save(buf, format="JPEG")
    item = {"data": base64.b64encode(buf.getvalue()).decode(), "uri": None}
    return [item] * n


def _bare(topo: Any, name: str, seconds: float) -> dict[int, float]:
    from workers.registry import model_class

    cfg = topo.models[name]
    model = model_class(cfg.task)(cfg)
    out = {}
    for bs in BATCHES:
        items, n, t0 = _items(cfg.task, bs), 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            assert all(r["ok"] for r in model.run_batch(items))
            n += bs
        out[bs] = n / (time.perf_counter() - t0)
    return out


async def _served(topo: Any, name: str, seconds: float) -> tuple[dict[int, float], dict[int, float]]:
    from ray import serve

    h = serve.get_deployment_handle(name, app_name=topo.serve_app_name)
    await h.infer.remote(_items(topo.models[name].task, 1))
    rates, mean_batch = {}, {}
    for bs in BATCHES:
        items, n = _items(topo.models[name].task, bs), 0
        await h.reset_stats.remote()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            res = await h.infer.remote(items)
            assert all(r["ok"] for r in res)
            n += bs
        rates[bs] = n / (time.perf_counter() - t0)
        mean_batch[bs] = (await h.stats.remote())["mean"]
    return rates, mean_batch


def run_bench(seconds: float = 2.0, models: list[str] | None = None, root: Path | None = None) -> list[dict[str, Any]]:
    """Measure every deployment; returns one row per (model, batch).

    Args:
        seconds: time per cell.
        models: deployment names (default: all of the tiny topology's).
        root: folder for tiny checkpoints and offline env (default: a temp dir).
    """
    root = Path(root or tempfile.mkdtemp(prefix="infertide-bench-"))
    env = offline_env(root / "env")
    # The bare models run in this process, and the model libraries read their offline switches and caches
    # only from os.environ; Ray's own switches have no ray.init parameter. The replicas get `env` through
    # runtime_env below.
    os.environ.update(env)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    topo = tiny_topology(root / "models", max_batch_size=32, batch_wait_timeout_s=0.005, num_cpus=0.1)
    names = models or list(topo.models)
    bare = {n: _bare(topo, n, seconds) for n in names}

    import ray
    from ray import serve

    from workers.app import build_application

    with keeping_signal_handlers():
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 configure_logging=False, log_to_driver=False, runtime_env={"env_vars": env})
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_application(topo), name=topo.serve_app_name, route_prefix="/")
        served = {n: asyncio.run(_served(topo, n, seconds)) for n in names}
    finally:
        serve.shutdown()
        ray.shutdown()
    rows = []
    for n in names:
        for bs in BATCHES:
            s_rate, mb = served[n][0][bs], served[n][1][bs]
            rows.append({"deployment": n, "model": topo.models[n].model or "echo", "batch": bs,
                         "bare_items_s": round(bare[n][bs], 1), "serve_items_s": round(s_rate, 1),
                         "ratio": round(s_rate / bare[n][bs], 3), "serve_mean_batch": round(mb, 2)})
    return rows


def main(argv: list[str] | None = None) -> None:
    """CLI entry: print the table, optionally write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="time per cell")
    ap.add_argument("--models", nargs="*", help="deployments to measure (default: all)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    rows = run_bench(args.seconds, args.models)
    from rich.table import Table

    from infertide.bench.report import emit

    t = Table(title=f"infertide workers: items/s, Serve handle vs bare model ({os.cpu_count()} CPUs, tiny models)")
    for col in ("deployment", "batch", "bare items/s", "serve items/s", "serve/bare", "mean batch in Serve"):
        t.add_column(col, justify="right" if col != "deployment" else "left")
    for r in rows:
        t.add_row(r["deployment"], str(r["batch"]), f"{r['bare_items_s']:.0f}", f"{r['serve_items_s']:.0f}",
                  f"{r['ratio']:.2f}", f"{r['serve_mean_batch']:.1f}")
    emit(t, rows, args.json)


if __name__ == "__main__":
    main()
