"""``infertide up``: run the whole pipeline locally and supervise it until Ctrl-C."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from infertide.cli.options import Bootstrap, ConfigOpt, bootstrap_of, console, err_console, topology_from
from schemas.topology import Topology

__all__ = ["install_stop_handlers", "print_endpoints", "up"]


def install_stop_handlers(stop: threading.Event) -> None:
    """Ctrl-C and SIGTERM set ``stop`` (so teardown runs in order instead of unwinding mid-step)."""
    def handler(signum: int, frame: object) -> None:
        if stop.is_set():  # a second Ctrl-C: stop waiting politely
            raise KeyboardInterrupt
        err_console.print(f"[yellow]{signal.Signals(signum).name}: stopping workers, Serve/Ray, Kafka ...[/yellow]")
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def print_endpoints(url: str, bootstrap: str | None = None) -> None:
    console.print(f"[b green]infertide is up.[/b green] Dashboard: [link]{url}/[/link]  "
                  f"Metrics: {url}/metrics  API: {url}/api/summary"
                  + (f"  Kafka: {bootstrap} (infertide produce/tail --bootstrap {bootstrap})" if bootstrap else ""))


def _config_port(topology: Topology) -> int:
    """The config's loopback Kafka port when it is free (so produce/tail work without --bootstrap), else 0."""
    from infertide.local.stack import port_free

    host, _, port = topology.kafka.bootstrap_servers.split(",")[0].rpartition(":")
    if host in ("127.0.0.1", "localhost") and port.isdigit() and port_free(int(port)):
        return int(port)
    return 0


def up(
    ctx: typer.Context,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Faust worker processes.")] = 1,
    num_cpus: Annotated[int | None, typer.Option("--num-cpus", help="CPUs for Ray (default: all).")] = None,
    max_restarts: Annotated[int, typer.Option("--max-restarts", help="Restarts in a row per failing worker before giving up.")] = 3,
    tiny: Annotated[bool, typer.Option("--tiny", help=(
        "Swap every model for a tiny local one of the same task (random weights, offline), "
        "as the demo does; topics and routes stay the config's."))] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show Ray/Serve logs here.")] = False,
    bootstrap: Bootstrap = None,
    config: ConfigOpt = None,
) -> None:
    """Start Kafka (or use --bootstrap), create topics, start Ray + Serve and the workers; supervise until Ctrl-C.

    First checks that every model's checkpoint loads here (local path, or in the
    Hugging Face / ultralytics cache, or downloadable) and stops in seconds with
    one line per model that does not (see [b]infertide models list / pull[/b]).
    A worker that exits, or fails /healthz 3 checks in a row, is reported (exit code and last log line, or the
    health reason) and restarted after a backoff (1 s doubling to 30 s; reset after a healthy minute), at most
    --max-restarts times in a row.
    Ctrl-C or SIGTERM stops the workers, then Serve and Ray, then the broker
    this command started. Ray/Serve logs go to files in the run folder (printed).

    Examples: infertide up; infertide up --tiny; infertide --config my.yaml up --workers 2;
    infertide up --bootstrap 127.0.0.1:9092
    """
    from infertide.demo.tiny_models import offline_env, with_tiny_models
    from infertide.local.broker import project_cache
    from infertide.local.preflight import checkpoint_problems
    from infertide.local.stack import LocalStack, StackError

    topology = topology_from(ctx, bootstrap, config)
    bootstrap = bootstrap_of(ctx, bootstrap)
    env: dict[str, str] = {}
    if tiny:
        with err_console.status("building tiny local models ..."):
            env = offline_env(project_cache() / "env")
            topology = with_tiny_models(topology, project_cache() / "models")
        err_console.print("[yellow]--tiny: random-weight models; labels are not meaningful.[/yellow]")
    else:
        with err_console.status("checking model checkpoints ..."):
            problems = checkpoint_problems(topology)
        if problems:
            for line in problems:
                err_console.print(f"[red]{line}[/red]", soft_wrap=True)
            raise typer.Exit(1)
    stop = threading.Event()
    install_stop_handlers(stop)
    stack = LocalStack(topology, workers=workers, bootstrap=bootstrap, num_cpus=num_cpus, env=env, verbose=verbose,
                       kafka_port=_config_port(topology),
                       say=lambda m: err_console.print(f"[cyan]>[/cyan] {m}"), max_restarts=max_restarts)
    code = 0
    try:
        with err_console.status("starting infertide ..."):
            stack.start()
        print_endpoints(stack.url, stack.bootstrap)
        err_console.print(f"[dim]logs: {stack.workdir} ; Ctrl-C to stop.[/dim]")
        stack.supervise(stop)
    except StackError as err:
        err_console.print(f"[red]{err}[/red]")
        code = 1
    except Exception as err:  # noqa: BLE001 - report startup failures plainly
        err_console.print(f"[red]infertide up failed: {err}[/red]")
        code = 1
    finally:
        stack.stop()
        err_console.print("stopped.")
    raise typer.Exit(code)
