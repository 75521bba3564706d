"""``infertide bench``: the CLI over :mod:`infertide.bench` (options, progress, the results tables, JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from infertide.cli.options import Bootstrap, ConfigOpt, bootstrap_of, config_of, console, err_console

__all__ = ["bench"]

_PHASES = {"kafka": "starting Kafka", "ray": "starting Ray + Serve", "worker": "starting the worker(s)",
           "warmup": "warm-up", "saturation": "sweep: saturation run"}


def _fractions(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(x) / 100 for x in text.split(",") if x.strip())
    except ValueError:
        out = ()
    if not out or not all(0 < f <= 1.5 for f in out):
        raise typer.BadParameter(f"--sweep-percent: comma-separated percentages in (0, 150], e.g. 10,50,100; "
                                 f"got {text!r}")
    return out


def _progress_run(fn: Any, opts: Any) -> Any:
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=False) as progress:
        tasks: dict[str, Any] = {}
        current = {"phase": ""}

        def close_open() -> None:
            for tid in tasks.values():
                if progress.tasks[tid].total is None:
                    progress.update(tid, total=1, completed=1)

        def report(phase: str, done: int | None, total: int | None) -> None:
            if done is None:
                close_open()
                current["phase"] = phase
                tasks[phase] = progress.add_task(_PHASES.get(phase, phase), total=None)
                return
            key = f"{current['phase']}: {phase}"
            if key not in tasks:
                tasks[key] = progress.add_task(f"  {phase}", total=total)
            progress.update(tasks[key], completed=done, total=total)

        result = fn(opts, report)
        close_open()
    return result


def bench(
    ctx: typer.Context,
    events: Annotated[int, typer.Option("--events", "-n", min=1, help="Events per route through the pipeline.")] = 20_000,
    rate: Annotated[float, typer.Option("--rate", "-r", min=0, help="Produce rate, events/s; 0 = as fast as possible.")] = 0.0,
    model: Annotated[str, typer.Option("--model", "-m", help="Built-in topology: sentiment (tiny BERT) or echo (null model).")] = "sentiment",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Built-in topology: the model's batch: Serve max_batch_size = bare batch.")] = 256,
    microbatch: Annotated[int | None, typer.Option("--microbatch", min=1, help="Built-in topology: events per Serve call (the route's batch_size); default 4 x --batch-size, split by the replica into model batches.")] = None,
    config: ConfigOpt = None,
    tiny: Annotated[bool, typer.Option("--tiny", help="With --config: use tiny random-weight models of the same tasks (said in the report).")] = False,
    route: Annotated[str | None, typer.Option("--route", help="Only this route of the topology.")] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Worker processes in one consumer group.")] = 1,
    partitions: Annotated[int | None, typer.Option("--partitions", min=1, help="Partitions per topic (default max(4, workers)).")] = None,
    naive_events: Annotated[int, typer.Option("--naive-events", min=1, help="Events through the naive loop baseline (also stops after 30 s).")] = 2_000,
    sweep: Annotated[bool, typer.Option("--sweep", help="Latency against throughput: saturation, then fixed rates; writes a chart.")] = False,
    sweep_percent: Annotated[str, typer.Option("--sweep-percent", help="Sweep steps, % of saturation.")] = "10,25,50,75,90,100",
    step_s: Annotated[float, typer.Option("--step-seconds", min=1, help="Sweep: seconds each step offers its rate (capped by --events).")] = 10.0,
    chart: Annotated[Path | None, typer.Option("--chart", help="Sweep chart path, .png or .svg (default <workdir>/sweep.png).")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON here.")] = None,
    timeout_s: Annotated[float, typer.Option("--timeout", help="Seconds to wait for one run's results.")] = 300.0,
    workdir: Annotated[Path | None, typer.Option("--workdir", help="Logs and configs (default: a temp folder).")] = None,
    guarantee: Annotated[str, typer.Option("--guarantee", help="delivery.processing_guarantee of the routes: at-least-once, exactly-once, or both (one run each, side by side, with latency at half rate and of a lone event).")] = "at-least-once",
    latency: Annotated[bool, typer.Option("--latency", help="After the drain, also the latency at half the drain rate and of a lone event (one every 0.5 s), each with where its median went; on with --guarantee both.")] = False,
    shadow: Annotated[bool, typer.Option("--shadow", help="With --model echo: the live drain without a shadow, with a shadow of the same model and with a slow shadow, side by side, instead of the baselines.")] = False,
    shadow_delay_ms: Annotated[float, typer.Option("--shadow-delay-ms", min=0, help="--shadow: the slow shadow sleeps this long per model batch.")] = 1000.0,
    shadow_rounds: Annotated[int, typer.Option("--shadow-rounds", min=1, help="--shadow: rounds of the three drains, each round in another order (2+: the no-shadow drains' spread is the noise).")] = 2,
    shadow_queue: Annotated[int | None, typer.Option("--shadow-queue", min=1, help="--shadow: each shadow's queue_size (default 4 x the micro-batch).")] = None,
    bootstrap: Bootstrap = None,
) -> None:
    """Benchmark the pipeline end to end against three baselines, like Triton's perf_analyzer.

    Starts its own Kafka (unless [b]--bootstrap[/b]), Ray + Serve and N workers on
    127.0.0.1. Built-in topology: one text route with one tiny model ([b]--model[/b]).
    [b]--config FILE[/b]: every route of that topology, one after another. Each route:
    N events of its kind, every result read, throughput (first produce to last result),
    latency p50/p90/p99, micro-batch and Serve batch fill, DLQ rate, per-worker
    events/s and partitions. Then, with Ray stopped: (a) the bare models in-process at
    the route's batch size, (b) a naive consume-one/infer-one/produce-one loop with
    kafka-python, (c) passthrough with aiokafka and with confluent-kafka. Everything it
    starts, it stops. [b]--guarantee both[/b]: the run once per delivery guarantee.
    [b]--shadow[/b]: the live drain with no shadow, a shadow of the same model and a slow
    shadow, side by side, with the shadow's shed and answered counts.
    See docs/performance.md ("Benchmark harness") for every number.

    Examples:

      infertide bench --model echo --events 50000 --json artifacts/bench-echo.json

      infertide bench --workers 2 --events 20000

      infertide bench --config topologies/default.yaml --tiny --events 2000

      infertide bench --sweep --events 20000 --chart docs/img/latency-throughput.png

      infertide bench --model echo --guarantee both --events 50000

      infertide bench --model echo --latency --events 20000

      infertide bench --model echo --shadow --events 20000
    """
    from infertide.bench import BenchOptions
    from infertide.bench.report import guarantee_summary, render_shadow, render_sweep, render_tables, shadow_summary
    from infertide.bench.topology import BenchSetupError
    from schemas.topology import ConfigError

    if guarantee not in ("at-least-once", "exactly-once", "both"):
        err_console.print(f"[red]error:[/red] --guarantee must be at-least-once, exactly-once or both, not {guarantee!r}")
        raise typer.Exit(2)
    if model not in ("sentiment", "echo"):
        err_console.print(f"[red]error:[/red] --model must be sentiment or echo, not {model!r}")
        raise typer.Exit(2)
    config = config_of(ctx, config)  # a chosen topology (every route) instead of the built-in one
    if shadow and (model != "echo" or config is not None or sweep or guarantee == "both"):
        err_console.print("[red]error:[/red] --shadow drains the built-in echo route (its slow shadow is echo's "
                          "delay_ms option) at one guarantee, without --config, --sweep or --guarantee both. "
                          "Fix: infertide bench --model echo --shadow")
        raise typer.Exit(2)
    if tiny and config is None:
        err_console.print("[red]error:[/red] --tiny swaps the models of a --config topology; the built-in "
                          "topology is tiny already. Fix: add --config FILE, or drop --tiny.")
        raise typer.Exit(2)
    opts = BenchOptions(events=events, rate=rate, model=model, batch_size=batch_size, microbatch=microbatch,
                        naive_events=naive_events,
                        bootstrap=bootstrap_of(ctx, bootstrap), timeout_s=timeout_s, workdir=workdir, workers=workers,
                        partitions=partitions, config=config, tiny=tiny, route=route, sweep=sweep,
                        sweep_fractions=_fractions(sweep_percent), step_s=step_s, chart=chart,
                        guarantee="at-least-once" if guarantee == "both" else guarantee, latency=latency, shadow=shadow,
                        shadow_delay_ms=shadow_delay_ms, shadow_rounds=shadow_rounds, shadow_queue=shadow_queue)
    if shadow:
        from infertide.bench.shadow import run_shadow as fn
    elif sweep:
        from infertide.bench.sweep import run_sweep as fn
    elif guarantee == "both":
        from infertide.bench.core import run_guarantees as fn
    else:
        from infertide.bench.core import run_bench as fn
    try:
        result = _progress_run(fn, opts)
    except (BenchSetupError, ConfigError) as err:
        err_console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    for note in result["conditions"]["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")
    for g, run in ({} if shadow else result.get("guarantees", {"": result})).items():
        if g:
            console.print(f"[bold]{g}[/bold]")
        for table in ([render_sweep(run)] if sweep else render_tables(run)):
            console.print(table)
    if shadow:
        console.print(render_shadow(result))
        console.print(shadow_summary(result))
    if "guarantees" in result:
        console.print(guarantee_summary(result))
    if sweep:
        console.print(f"chart: {result['chart']}")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        err_console.print(f"[dim]wrote {json_path}[/dim]")
