"""``infertide demo``: the whole pipeline on sample photos, a clip and reviews, with a summary table."""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from infertide.cli.options import Bootstrap, ConfigOpt, bootstrap_of, config_of, console, err_console

__all__ = ["demo"]

TINY_NOTICE = ("[b yellow]Using locally built tiny models with random weights: labels are not meaningful.[/b yellow] "
               "The configured checkpoints are not available offline ({missing}). Pass --config with a "
               "topology whose models are local paths or already in the Hugging Face / ultralytics cache "
               "to see real predictions.")


def _tables(summary: dict[str, Any], sent: dict[str, int]) -> None:
    t = Table(title="infertide demo: per route")
    for col in ("route", "sent", "in", "out", "DLQ", "p50 ms", "p99 ms", "top labels"):
        t.add_column(col, justify="left" if col in ("route", "top labels") else "right")
    for name, r in summary["routes"].items():
        labels = "; ".join(f"{task}: " + ", ".join(f"{k} ({v})" for k, v in list(c.items())[:4])
                           for task, c in r.get("labels", {}).items() if c)
        lat = r["latency_ms"]
        t.add_row(name, str(sent.get(name, "-")), str(r["in"]), str(r["out"]), str(r["dlq"]),
                  str(lat["p50"]), str(lat["p99"]), labels or "-")
    console.print(t)
    recs = Table(title="latest recommendations")
    recs.add_column("user")
    recs.add_column("top items")
    seen = set()
    for rec in reversed(summary.get("recommendations", [])):
        if rec["user_id"] in seen:
            continue
        seen.add(rec["user_id"])
        recs.add_row(rec["user_id"], ", ".join(f"{i['item_id']} ({i['score']:.2f})" for i in rec["items"]))
    console.print(recs)


def demo(
    ctx: typer.Context,
    keep: Annotated[bool, typer.Option("--keep", help="Stay up (dashboard live) until Ctrl-C.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for results.")] = 90.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show Ray/Serve logs here.")] = False,
    bootstrap: Bootstrap = None,
    config: ConfigOpt = None,
) -> None:
    """Start everything locally, send sample photos, a short clip and reviews, and summarise the results.

    Without --config (here or before the command) it runs tiny local models.
    Works offline: when the config's models are not available locally, tiny
    models with random weights are built under <cache>/models (and the output says so).
    Exits 0 when every route answered, 1 otherwise.

    Examples: infertide demo; infertide demo --keep; infertide demo --config my-local-models.yaml
    """
    from infertide.cli.up import install_stop_handlers, print_endpoints
    from infertide.demo.runner import demo_topology, produce_samples, wait_for_results
    from infertide.local.broker import project_cache
    from infertide.local.stack import LocalStack
    from schemas.topology import ConfigError

    t0 = time.monotonic()
    cache = project_cache()
    config = config_of(ctx, config)
    say = lambda m: err_console.print(f"[cyan]>[/cyan] {m}")  # noqa: E731
    try:
        with err_console.status("preparing models ..."):
            topology, env, missing = demo_topology(config, cache)
    except ConfigError as err:
        err_console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    if missing:
        err_console.print(TINY_NOTICE.format(missing="; ".join(missing)))
    else:
        say(f"using the models of {config}")
    stop = threading.Event()
    install_stop_handlers(stop)
    stack = LocalStack(topology, bootstrap=bootstrap_of(ctx, bootstrap), env=env, num_cpus=2, say=say, verbose=verbose)
    code = 0
    try:
        stack.start()
        print_endpoints(stack.url)
        with err_console.status("producing sample photos, clip frames and reviews ..."):
            sent = produce_samples(stack.topology, cache)
        say("sent " + ", ".join(f"{n} to route {r}" for r, n in sent.items()))
        with err_console.status("waiting for results ..."):
            summary = wait_for_results(stack, sent, timeout)
        if summary is None or not summary.get("routes"):
            err_console.print(f"[red]no results arrived within {timeout:.0f}s; worker log:[/red]\n"
                              f"{stack.procs[0].tail() if stack.procs else ''}")
            code = 1
        else:
            _tables(summary, sent)
            silent = [r for r in sent if summary["routes"].get(r, {}).get("out", 0) == 0]
            if silent:
                err_console.print(f"[red]routes without results: {', '.join(silent)}[/red]")
                code = 1
            if missing:
                err_console.print("[yellow]Reminder: tiny random-weight models; the labels above are not meaningful.[/yellow]")
        err_console.print(f"demo finished in {time.monotonic() - t0:.0f}s")
        if keep and code == 0:
            err_console.print(f"[dim]staying up: dashboard {stack.url}/ ; Ctrl-C to stop.[/dim]")
            stack.supervise(stop)
    except Exception as err:  # noqa: BLE001 - a clear message instead of a traceback
        err_console.print(f"[red]infertide demo failed: {err}[/red]")
        code = 1
    finally:
        stack.stop()
    raise typer.Exit(code)
