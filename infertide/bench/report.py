"""The bench results as rich tables: one per route (pipeline, fills, workers, baselines), the sweep, and --shadow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from rich.table import Table

__all__ = ["emit", "guarantee_summary", "markdown", "render_shadow", "render_sweep", "render_table", "render_tables",
           "shadow_summary"]


def emit(table: Table, rows: Any, json_path: Path | None) -> None:
    """Print a module bench's table; with ``json_path``, also write its rows there as JSON."""
    from rich.console import Console

    Console().print(table)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))


def _ratio(x: float) -> str:
    return f"{x:.2f}" if x >= 0.1 else f"{x:.2g}"


def _fill_rows(t: Table, p: dict[str, Any]) -> None:
    mb = p["microbatch"]
    t.add_row("  micro-batch fill (worker)", "", "", f"mean {mb['mean']:.1f} of batch_size {mb['batch_size']} "
              f"= [b]{mb['fill']:.0%}[/b] over {mb['batches']} batches")
    for m, sb in p["serve_batch"].items():
        t.add_row(f"  Serve batch fill ({m})", "", "", f"mean {sb['mean']:.1f} of max_batch_size "
                  f"{sb['max_batch_size']} = [b]{sb['fill']:.0%}[/b], max {sb['max']}, {sb['batches']} batches")


def _worker_rows(t: Table, p: dict[str, Any]) -> None:
    for w in p["workers"]:
        src = "assigned" if w["partitions_source"].endswith("assigned_partitions") else "held (lag gauges)"
        t.add_row(f"  worker {w['worker']}", f"{w['events_per_s']:,.0f}", "",
                  f"{w['events_in']} events in; partitions {src} {w['partitions'] or 'none'}")


def render_table(r: dict[str, Any], c: dict[str, Any]) -> Table:
    """One route's results: the pipeline, its fills and workers, the three baselines, and the ratios."""
    p = r["pipeline"]
    rate = f"{c['rate']:.0f}/s" if c["rate"] else "max rate"
    t = Table(title=f"infertide bench: route {p['route']} ({p['kind']}: {', '.join(p['models'])}), {p['sent']} "
                    f"events ({rate}), batch {p['microbatch']['batch_size']}, {c['workers']} worker(s), "
                    f"{c['partitions']} partitions, {c['cpus']} CPUs, {c['broker']}")
    for col, just in (("what", "left"), ("events/s", "right"), ("pipeline / this", "right"), ("details", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    lat, d = p["latency_ms"], p.get("drain")
    if d:
        t.add_row("[b]pipeline[/b], draining a filled topic (Kafka -> workers -> Serve -> Kafka)",
                  f"{d['events_per_s']:,.0f}", "1.00",
                  f"{d['results']} results, {d['dlq']} DLQ, {d['missing']} missing in {d['seconds']:.1f} s "
                  "(first result to last; as the passthrough is measured)")
    t.add_row(("  while producing" if d else "[b]pipeline[/b]") + " (Kafka -> workers -> Serve -> Kafka)",
              f"{p['events_per_s']:,.0f}", "" if d else "1.00",
              f"{p['results']} results, {p['dlq']} DLQ ({p['dlq_rate']:.2%}), {p['missing']} missing in "
              f"{p['seconds']:.1f} s, the producer on the same cores; latency p50 {lat['p50']:.0f} / p90 "
              f"{lat['p90']:.0f} / p99 {lat['p99']:.0f} ms")
    for key, label in (("half_rate", "  at half the drain rate"), ("lone", "  a lone event, one every 0.5 s")):
        if (q := p.get(key)) is not None:
            t.add_row(label, f"{q['events_per_s']:,.0f}", "", _latency_detail(q))
    _fill_rows(t, p)
    _worker_rows(t, p)
    ra, b = r["ratios"], r["bare_model"]
    per = "; ".join(f"{m} {v['items_per_s']:,.0f}/s" for m, v in b["models"].items())
    threads = f", {b['threads']} torch thread(s)" if b.get("threads") else ""
    t.add_row("(a) bare model(s) in-process", f"{b['items_per_s']:,.0f}", _ratio(ra["pipeline_over_bare_model"]),
              f"run_batch({b['batch_size']}), items/s: {per}" + (" (combined: one after another)"
                                                                  if len(b["models"]) > 1 else "") + threads)
    n = r["naive_loop"]
    t.add_row("(b) naive loop (kafka-python, 1 event at a time)", f"{n['events_per_s']:,.0f}",
              _ratio(ra["pipeline_over_naive_loop"]), f"{n['events']} events in {n['seconds']:.1f} s (measured)")
    pt = r["passthrough"]
    t.add_row("(c) broker passthrough (aiokafka, no model)", f"{pt['events_per_s']:,.0f}",
              _ratio(ra["pipeline_over_passthrough"]), f"{pt['events']} events in {pt['seconds']:.1f} s")
    if (pc := r.get("passthrough_confluent")) is not None:
        t.add_row("(c) broker passthrough (confluent-kafka, no model)", f"{pc['events_per_s']:,.0f}",
                  _ratio(ra["pipeline_over_passthrough_confluent"]), f"{pc['events']} events in {pc['seconds']:.1f} s")
    return t


def _latency_detail(q: dict[str, Any]) -> str:
    """A paced run's latency, and where its median went (when the results carried their timings)."""
    lat = q["latency_ms"]
    text = f"{q['results']} results; latency p50 {lat['p50']:.0f} / p99 {lat['p99']:.0f} ms"
    if st := q.get("stages_ms"):
        text += (f"; p50 of each stage: event to the Serve call {st['to_serve']:.0f} ms, the call "
                 f"{st['serve_call']:.0f} ms, result built to read {st['to_reader']:.0f} ms")
    return text


def render_tables(result: dict[str, Any]) -> list[Table]:
    """One table per route of a bench result."""
    return [render_table(r, result["conditions"]) for r in result["routes"]]


def render_sweep(result: dict[str, Any]) -> Table:
    """Offered rate against achieved throughput and latency, one row per step."""
    c = result["conditions"]
    t = Table(title=f"infertide bench --sweep: route {result['route']}, saturation "
                    f"{result['saturation_events_per_s']:,.0f} events/s, {c['workers']} worker(s), {c['cpus']} CPUs")
    for col in ("offered", "offered events/s", "achieved events/s", "p50 ms", "p99 ms", "events", "missing",
                "micro-batch fill", "Serve batch fill"):
        t.add_column(col, justify="right")
    for s in result["steps"]:
        p = s["pipeline"]
        sfill = ", ".join(f"{v['fill']:.0%}" for v in p["serve_batch"].values())
        t.add_row(s["label"], f"{p['offered_rate']:,.0f}" if p["offered_rate"] else "max",
                  f"{p['events_per_s']:,.0f}", f"{p['latency_ms']['p50']:.0f}", f"{p['latency_ms']['p99']:.0f}",
                  str(p["sent"]), str(p["missing"]), f"{p['microbatch']['fill']:.0%}", sfill)
    return t


def markdown(result: dict[str, Any]) -> str:
    """A bench result as one Markdown table, a row per route (for docs/)."""
    lines = ["| route | models | events | pipeline events/s | bare models | pipeline / bare | naive loop "
             "| pipeline / naive | passthrough | latency p50 / p99 ms | micro-batch fill | Serve batch fill |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["routes"]:
        p, ra = r["pipeline"], r["ratios"]
        sfill = ", ".join(f"{m} {v['fill']:.0%}" for m, v in p["serve_batch"].items())
        lines.append(
            f"| {p['route']} ({p['kind']}) | {', '.join(p['models'])} | {p['results']}/{p['sent']} "
            f"| **{p.get('drain', p)['events_per_s']:,.0f}** | {r['bare_model']['items_per_s']:,.0f} "
            f"| {_ratio(ra['pipeline_over_bare_model'])} | {r['naive_loop']['events_per_s']:,.0f} "
            f"| {_ratio(ra['pipeline_over_naive_loop'])} | {r['passthrough']['events_per_s']:,.0f} "
            f"| {p['latency_ms']['p50']:.0f} / {p['latency_ms']['p99']:.0f} | {p['microbatch']['fill']:.0%} "
            f"| {sfill} |")
    return "\n".join(lines) + "\n"


def guarantee_summary(result: dict[str, Any]) -> str:
    """One line per guarantee (drain rate, latency at half rate, lone event) and exactly-once / at-least-once."""
    lines = []
    for g, run in result["guarantees"].items():
        p = run["pipeline"]
        drain, half, lone = p.get("drain", p), p.get("half_rate", {}), p.get("lone", {})
        lat = (lambda r, q: r.get("latency_ms", {}).get(q, 0.0))
        lines.append(f"{g}: drain {drain['events_per_s']:,.0f} events/s; half rate p50 {lat(half, 'p50'):.0f} ms, "
                     f"p99 {lat(half, 'p99'):.0f} ms; lone event p50 {lat(lone, 'p50'):.0f} ms, p99 {lat(lone, 'p99'):.0f} ms; "
                     f"fill {p.get('microbatch', {}).get('fill', 0):.0%}")
    lines.append(f"exactly-once / at-least-once (drain): {result['eos_over_alo']['drain']:.2f}")
    return "\n".join(lines)


def _shadow_cell(run: dict[str, Any], key: str) -> str:
    s = run.get("shadow")
    if not s:
        return "-"
    end, settled = s["at_live_end"], s["settled"]
    if key == "answered":
        tail = "" if settled["settled"] else f" (queue not empty after {settled['settle_s']:.0f} s)"
        return f"{end['results']:,} / {settled['results']:,}{tail}"
    return f"{settled[key]:,}"


def _batches(run: dict[str, Any]) -> str:
    m = run.get("at_live_end", {})
    return f"{m.get('microbatches', 0)} ({m.get('mean_microbatch', 0):.0f})"


def _calls(run: dict[str, Any]) -> str:
    calls = run.get("at_live_end", {}).get("serve_calls", {})
    return ", ".join(f"{v['mean_ms']:.0f} ({m}: {v['calls']})" for m, v in calls.items()) or "-"


def render_shadow(result: dict[str, Any]) -> Table:
    """``--shadow``: one row per drain (live events/s, its ratio to the round's no-shadow drain, the shadow's counts)."""
    c, sh = result["conditions"], result["shadow"]
    t = Table(title=f"infertide bench --shadow: route text (echo), {c['events']:,} events per drain, "
                    f"slow shadow {c['shadow_delay_ms']:.0f} ms per model batch of {c['batch_size']}, shadow queue "
                    f"{c['shadow_queue_size']:,}, {c['workers']} worker(s), {c['partitions']} partitions, "
                    f"{c['cpus']} CPUs")
    for col in ("round", "shadow", "live drain events/s", "/ no shadow (round)", "worker CPU us / live event",
                "load avg", "micro-batches (mean)", "Serve call ms (model: calls)", "live results", "answers as reference", "shadow offered", "shed",
                "answered at live end / settled"):
        t.add_column(col, justify="left" if col in ("shadow", "answers as reference") else "right")
    none = {r["round"]: r["drain"]["events_per_s"] for r in sh["runs"] if r["scenario"] == "none"}
    for r in sh["runs"]:
        d, a = r["drain"], r["answers"]
        base = none.get(r["round"])
        t.add_row(str(r["round"] + 1), r["scenario"], f"{d['events_per_s']:,.0f}",
                  f"{d['events_per_s'] / base:.2f}" if base else "-", f"{r['worker_cpu']['live_us_per_event']:.0f}",
                  f"{r['load_average']:.1f}", _batches(r), _calls(r), f"{d['results']:,}/{d['sent']:,}",
                  f"{a['identical']:,} identical, {a['differ']} differ, {a['missing']} missing",
                  _shadow_cell(r, "offered"), _shadow_cell(r, "shed"), _shadow_cell(r, "answered"))
    return t


def shadow_summary(result: dict[str, Any]) -> str:
    """Per scenario the mean live drain and mean ratio to no shadow; the no-shadow drains' spread (the noise)."""
    s = result["shadow"]["summary"]
    lines = [f"{sc}: live drain mean {v['mean_events_per_s']:,.0f} events/s, / no shadow "
             + (", ".join(f"{x:.2f}" for x in v["ratio_to_none"]) or "-")
             + (f" (mean {v['mean_ratio']:.2f})" if len(v["ratio_to_none"]) > 1 else "")
             + "; worker CPU per live event / no shadow "
             + (", ".join(f"{x:.2f}" for x in v["cpu_ratio_to_none"]) or "-")
             for sc, v in s["scenarios"].items()]
    noise = s["noise"]
    lines.append("noise (no-shadow drains, (max - min) / mean): "
                 + (f"{noise:.0%}" if noise is not None else "one round, not measured (use --shadow-rounds 2+)"))
    return "\n".join(lines)
