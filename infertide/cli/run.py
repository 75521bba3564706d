"""``infertide worker``: run one Faust worker of the topology in this process."""

from __future__ import annotations

from typing import Annotated

import typer

from infertide.cli.options import Bootstrap, ConfigOpt, err_console, settings_of, topology_from
from infertide.settings import PythonGC

__all__ = ["worker"]


def worker(
    ctx: typer.Context,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address",
        help="Ray cluster to join (GCS host:port; env RAY_ADDRESS); default: auto-detect a local cluster.")] = None,
    web_port: Annotated[int | None, typer.Option(
        "--web-port", help="Faust web port: metrics, health, dashboard (env INFERTIDE_WEB_PORT).")] = None,
    bootstrap: Bootstrap = None,
    config: ConfigOpt = None,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="Faust log level.")] = "info",
    python_gc: Annotated[PythonGC | None, typer.Option(
        "--python-gc",
        help="tuned (the default): once started, the worker's heap is frozen out of the garbage collector's "
             "passes and its young generation raised (docs/performance.md); default: Python's collector as it is "
             "(env INFERTIDE_PYTHON_GC).")] = None,
) -> None:
    """Run a Faust worker: consume the routes' input topics, call the Serve models, produce results.

    Start as many as the input topics have partitions; they share the work in one
    consumer group. The Serve app must already run on the Ray cluster
    ([b]infertide up[/b] does both).

    Example: infertide worker --config topologies/default.yaml --ray-address 127.0.0.1:6379
    """
    from topologies.host.app import run_worker

    settings = settings_of(ctx)
    topology = topology_from(ctx, bootstrap, config)
    web_port = web_port if web_port is not None else settings.web_port
    if web_port is not None:
        topology = topology.model_validate({**topology.model_dump(), "web_port": web_port})
    err_console.print(f"[b]infertide worker[/b]: {len(topology.routes)} routes, "
                      f"web on :{topology.web_port}, Kafka {topology.kafka.bootstrap_servers}")
    gc_mode = python_gc or settings.python_gc or PythonGC.tuned
    run_worker(topology, ray_address=ray_address or settings.ray_address, loglevel=loglevel,
               settle_heap=gc_mode is PythonGC.tuned)
