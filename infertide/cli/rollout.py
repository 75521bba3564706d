"""``infertide rollout status``: the rollout comparison of the last analytics windows, per route and model."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Annotated, Any

import typer
from rich.table import Table

from infertide.cli.options import Bootstrap, ConfigOpt, console, fail, topology_from

__all__ = ["app", "from_analytics_topic", "render", "status"]

app = typer.Typer(no_args_is_help=True, help="Rollouts (routes[].rollout): canary / A/B variants and shadows.")


def from_analytics_topic(topology: Any, timeout_s: float = 5.0) -> dict[str, Any]:
    """The ``/api/rollout`` shape from the ``analytics`` topic: per key, the latest closed window."""
    from kafka import KafkaConsumer, TopicPartition

    from infertide.clients.admin import kafka_python_kwargs
    from topologies.rollout import METRIC, report

    consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                             **kafka_python_kwargs(topology.kafka))
    topic = topology.topics.analytics
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        latest: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(consumer.position(tp) < end[tp] for tp in tps):
            for batch in consumer.poll(timeout_ms=200).values():
                for m in batch:
                    w = json.loads(m.value)
                    if w.get("metric") == METRIC and w.get("key"):
                        prev = latest.get(w["key"])
                        if prev is None or w["window_start"] >= prev["window_start"]:
                            latest[w["key"]] = w
    finally:
        consumer.close()
    return {"rollouts": {k: {"route": k.partition("/")[0], "model": k.partition("/")[2], "current": None,
                             "closed": {"window_start": w["window_start"], "window_end": w["window_end"],
                                        **report(w["values"])}} for k, w in sorted(latest.items())}}


def _num(v: Any, fmt: str = "{:,.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def render(view: dict[str, Any], *, current: bool = False) -> list[Table]:
    """One table per route/model: a row per variant, then per shadow."""
    tables = []
    for key, entry in sorted(view.get("rollouts", {}).items()):
        w = entry.get("current" if current else "closed") or entry.get("current") or entry.get("closed")
        title = f"{key}" + (f"  window {w['window_start']}..{w['window_end']}" if w else "  (no window yet)")
        t = Table(title=title, title_justify="left")
        for col in ("", "name", "count / pairs", "errors", "p50 ms", "p99 ms", "mean score", "agreement",
                    "mean |diff|", "shed", "labels"):
            t.add_column(col)
        if w:
            for name, v in w["variants"].items():
                t.add_row("variant", name, _num(v["count"]), _num(v["errors"]), _num(v["latency_p50_ms"], "{:.1f}"),
                          _num(v["latency_p99_ms"], "{:.1f}"), _num(v["mean_score"], "{:.3f}"), "", "", "",
                          ", ".join(f"{k} {n:,.0f}" for k, n in v["labels"].items()))
            for name, s in w["shadows"].items():
                t.add_row("shadow", name, _num(s["pairs"]), _num(s["errors"]), "", "", "",
                          _num(s["agreement_rate"], "{:.2%}"), _num(s["mean_abs_score_diff"], "{:.3f}"),
                          _num(s["shed"]), "")
        tables.append(t)
    return tables


@app.command("status")
def status(ctx: typer.Context,
           worker: Annotated[str | None, typer.Option(
               "--worker", help="A worker's web address (default http://127.0.0.1:<web_port of the config>); "
                                "windows are held by the worker that owns the summary topic")] = None,
           from_topic: Annotated[bool, typer.Option(
               "--from-topic", help="Read the last closed windows from the analytics topic instead")] = False,
           current: Annotated[bool, typer.Option("--current", help="Show the open window (worker only)")] = False,
           as_json: Annotated[bool, typer.Option("--json", help="Print the JSON view")] = False,
           bootstrap: Bootstrap = None, config: ConfigOpt = None) -> None:
    """Per route and model with a rollout: each variant's count, errors, latency p50 / p99, mean score and
    labels; each shadow's pairs, agreement with live, mean absolute score difference, shed and errors.

    Examples: infertide rollout status; infertide rollout status --worker http://10.0.0.5:6066;
    infertide rollout status --from-topic --json
    """
    topology = topology_from(ctx, bootstrap, config)
    if from_topic:
        view = from_analytics_topic(topology)
    else:
        url = (worker or f"http://127.0.0.1:{topology.web_port}").rstrip("/") + "/api/rollout"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - an operator-given address
                view = json.loads(resp.read())
        except (urllib.error.URLError, OSError) as err:
            raise fail(f"could not read {url}: {err}; is a worker running there? (or use --from-topic)") from None
    if as_json:
        console.print_json(json.dumps(view))
        return
    if not view.get("rollouts"):
        console.print("no route of this config has a rollout (routes[].rollout)")
        return
    for table in render(view, current=current):
        console.print(table)
