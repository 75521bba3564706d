"""``infertide up``: run the whole pipeline locally and supervise it until Ctrl-C."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from infertide.cli import Bootstrap, app, console, err_console, topology_from

__all__ = ["up"]


def install_stop_handlers(stop: threading.Event) -> None:
    """Ctrl-C and SIGTERM set ``stop`` (so teardown runs in order instead of unwinding mid-step)."""
    def handler(signum: int, frame: object) -> None:
        if stop.is_set():  # a second Ctrl-C: stop waiting politely
            raise KeyboardInterrupt
        err_console.print(f"[yellow]{signal.Signals(signum).name}: stopping workers, Serve/Ray, Kafka ...[/yellow]")
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def print_endpoints(url: str) -> None:
    console.print(f"[b green]infertide is up.[/b green] Dashboard: [link]{url}/[/link]  "
                  f"Metrics: {url}/metrics  API: {url}/api/summary")


@app.command("up")
def up(
    ctx: typer.Context,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Faust worker processes.")] = 1,
    num_cpus: Annotated[int | None, typer.Option("--num-cpus", help="CPUs for Ray (default: all).")] = None,
    max_restarts: Annotated[int, typer.Option("--max-restarts", help="Restarts per crashed worker.")] = 3,
    bootstrap: Bootstrap = None,
) -> None:
    """Start Kafka (or use --bootstrap), create topics, start Ray + Serve and the workers; supervise until Ctrl-C.

    A crashed worker is reported and restarted (at most --max-restarts times).
    Ctrl-C or SIGTERM stops the workers, then Serve and Ray, then the broker
    this command started.

    Examples: infertide up; infertide --config my.yaml up --workers 2;
    infertide up --bootstrap 127.0.0.1:9092
    """
    from infertide.stack import LocalStack, StackError

    topology = topology_from(ctx, bootstrap)
    stop = threading.Event()
    install_stop_handlers(stop)
    stack = LocalStack(topology, workers=workers, bootstrap=bootstrap, num_cpus=num_cpus,
                       say=lambda m: err_console.print(f"[cyan]>[/cyan] {m}"), max_restarts=max_restarts)
    code = 0
    try:
        with err_console.status("starting infertide ..."):
            stack.start()
        install_stop_handlers(stop)  # ray.init replaced our SIGTERM handler with its own (which aborts)
        print_endpoints(stack.url)
        err_console.print("[dim]Ctrl-C to stop.[/dim]")
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
