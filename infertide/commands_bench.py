"""``infertide bench``: the CLI over :mod:`infertide.bench` (progress, the results table, JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from infertide.cli import Bootstrap, app, console, err_console

__all__ = ["bench", "render_table"]

_PHASES = {"kafka": "starting Kafka", "ray": "starting Ray + Serve", "worker": "starting the Faust worker",
           "warmup": "warm-up", "pipeline": "pipeline run", "bare model": "baseline: bare model",
           "naive loop": "baseline: naive per-event loop", "passthrough": "baseline: broker passthrough"}


def _ratio(x: float) -> str:
    return f"{x:.2f}" if x >= 0.1 else f"{x:.2g}"


def render_table(r: dict[str, Any]) -> Table:
    """The results as a rich table: the pipeline, the three baselines, and the ratios."""
    c, p = r["conditions"], r["pipeline"]
    rate = f"{c['rate']:.0f}/s" if c["rate"] else "max rate"
    t = Table(title=f"infertide bench: model={c['model']}, {p['sent']} events ({rate}), batch {c['batch_size']}, "
                    f"{c['cpus']} CPUs, {c['broker']}")
    t.add_column("what")
    t.add_column("events/s", justify="right")
    t.add_column("pipeline / this", justify="right")
    t.add_column("details")
    lat = p["latency_ms"]
    t.add_row("[b]pipeline[/b] (Kafka -> Faust -> Serve -> Kafka)", f"{p['events_per_s']:,.0f}", "1.00",
              f"{p['results']} results, {p['dlq']} DLQ ({p['dlq_rate']:.2%}), {p['missing']} missing in "
              f"{p['seconds']:.1f} s; latency p50 {lat['p50']:.0f} / p90 {lat['p90']:.0f} / p99 {lat['p99']:.0f} ms")
    mb, sb = p["microbatch"], p["serve_batch"]
    t.add_row("  micro-batch fill (Faust)", "", "", f"mean {mb['mean']:.1f} of {mb['batch_size']} "
              f"({mb['fill']:.0%}) over {mb['batches']} batches")
    t.add_row("  Serve batch fill", "", "", f"mean {sb['mean']:.1f} of {sb['max_batch_size']} ({sb['fill']:.0%}), "
              f"max {sb['max']}, {sb['batches']} batches")
    ra = r["ratios"]
    b = r["bare_model"]
    t.add_row("(a) bare model in-process", f"{b['items_per_s']:,.0f}", _ratio(ra['pipeline_over_bare_model']),
              f"run_batch({b['batch_size']}) x {b['batches']}, items/s"
              + (f", {b['threads']} torch thread(s) (best of {sorted(b['items_per_s_by_threads'])})"
                 if b.get("threads") else ""))
    n = r["naive_loop"]
    t.add_row("(b) naive loop (kafka-python, 1 event at a time)", f"{n['events_per_s']:,.0f}",
              _ratio(ra['pipeline_over_naive_loop']), f"{n['events']} events in {n['seconds']:.1f} s (measured)")
    pt = r["passthrough"]
    t.add_row("(c) broker passthrough (aiokafka, no model)", f"{pt['events_per_s']:,.0f}",
              _ratio(ra['pipeline_over_passthrough']), f"{pt['events']} events in {pt['seconds']:.1f} s")
    return t


@app.command("bench")
def bench(
    events: Annotated[int, typer.Option("--events", "-n", min=1, help="Events through the pipeline.")] = 20_000,
    rate: Annotated[float, typer.Option("--rate", "-r", min=0, help="Produce rate, events/s; 0 = as fast as possible.")] = 0.0,
    model: Annotated[str, typer.Option("--model", "-m", help="sentiment (tiny BERT) or echo (null model).")] = "sentiment",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Micro-batch size = Serve max_batch_size = bare batch.")] = 256,
    naive_events: Annotated[int, typer.Option("--naive-events", min=1, help="Events through the naive loop baseline.")] = 2_000,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON here.")] = None,
    timeout_s: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the pipeline's results.")] = 300.0,
    workdir: Annotated[Path | None, typer.Option("--workdir", help="Logs and configs (default: a temp folder).")] = None,
    bootstrap: Bootstrap = None,
) -> None:
    """Benchmark the pipeline end to end against three baselines, like Triton's perf_analyzer.

    Starts its own Kafka (unless [b]--bootstrap[/b]), Ray + Serve with one tiny model
    and one Faust worker on 127.0.0.1; produces N text events, reads every result, and
    reports throughput (first produce to last result), latency p50/p90/p99, micro-batch
    and Serve batch fill, and the DLQ rate. Then, with Ray stopped: (a) the bare model
    in-process at the same batch size, (b) a naive consume-one/infer-one/produce-one
    loop with kafka-python, (c) aiokafka passthrough with no model. [b]--model echo[/b]
    measures the system's own overhead. Everything it starts, it stops.

    Examples:

      infertide bench

      infertide bench --model echo --events 50000 --json artifacts/bench-echo.json

      infertide bench --rate 1000 --events 10000 --batch-size 64
    """
    from infertide.bench import BenchOptions, run_bench

    if model not in ("sentiment", "echo"):
        err_console.print(f"[red]error:[/red] --model must be sentiment or echo, not {model!r}")
        raise typer.Exit(2)
    opts = BenchOptions(events=events, rate=rate, model=model, batch_size=batch_size, naive_events=naive_events,
                        bootstrap=bootstrap, timeout_s=timeout_s, workdir=workdir)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=False) as progress:
        tasks: dict[str, Any] = {}

        def report(phase: str, done: int | None, total: int | None) -> None:
            if done is None:
                tasks[phase] = progress.add_task(_PHASES.get(phase, phase), total=None)
                for name, tid in tasks.items():  # an earlier phase without a count is over
                    if name != phase and progress.tasks[tid].total is None:
                        progress.update(tid, total=1, completed=1)
                return
            if phase not in tasks:
                tasks[phase] = progress.add_task(_PHASES.get(phase, phase), total=total)
            progress.update(tasks[phase], completed=done, total=total)

        result = run_bench(opts, report)
        for tid in tasks.values():
            if progress.tasks[tid].total is None:
                progress.update(tid, total=1, completed=1)
    console.print(render_table(result))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        err_console.print(f"[dim]wrote {json_path}[/dim]")
