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


def current_variants(topology: Any, key: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """The variants in force for ``<route>/<model>``: the control topic's latest change, else the config's."""
    from kafka import KafkaConsumer, TopicPartition

    from infertide.clients.admin import kafka_python_kwargs
    from schemas.rollout import control_topic

    route, _, model = key.partition("/")
    config = [v.model_dump(exclude_none=True) for r in topology.routes if r.name == route
              for m, ro in r.rollout.items() if m == model for v in ro.variants]
    consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, **kafka_python_kwargs(topology.kafka))
    try:
        topic = control_topic(topology)
        if not consumer.partitions_for_topic(topic):
            return config
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        latest: Any = ...
        deadline = time.monotonic() + timeout_s
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for m in consumer.poll(timeout_ms=200).get(tp, []):
                if m.key == key.encode():
                    latest = None if m.value is None else json.loads(m.value)
    finally:
        consumer.close()
    return config if latest is ... or latest is None else latest["variants"]


def publish_change(topology: Any, key: str, variants: list[dict[str, Any]] | None, action: str) -> dict[str, Any]:
    """Check ``variants`` as the config is checked, then write the change to the control topic (None: a
    tombstone, back to the config). Returns the record's value (None for a tombstone) and where it landed."""
    from kafka import KafkaProducer

    from infertide.clients.admin import kafka_python_kwargs
    from schemas.rollout import changed_rollout, control_topic

    route, _, model = key.partition("/")
    ro = changed_rollout(topology, route, model, variants)
    value = None if variants is None else {
        "action": action, "ts": int(time.time() * 1000),
        "variants": [v.model_dump(exclude_none=True) for v in ro.variants]}
    producer = KafkaProducer(acks="all", **kafka_python_kwargs(topology.kafka))
    try:
        meta = producer.send(control_topic(topology), key=key.encode(),
                             value=None if value is None else json.dumps(value).encode()).get(timeout=30)
    finally:
        producer.close()
    return {"key": key, "value": value, "topic": meta.topic, "offset": meta.offset}


def _change(ctx: typer.Context, key: str, action: str, edit: Any, bootstrap: str | None, config: Any) -> None:
    topology = topology_from(ctx, bootstrap, config)
    try:
        variants = None if edit is None else edit(current_variants(topology, key))
        done = publish_change(topology, key, variants, action)
    except ValueError as err:
        raise fail(str(err)) from None
    shown = "the config's variants" if done["value"] is None else ", ".join(
        f"{v.get('name') or v['model']} {v['percent']:g}%" for v in done["value"]["variants"]) or "no variants"
    console.print(f"{action} {key}: {shown} (control offset {done['offset']}); each worker applies it between two "
                  "batches and logs the input offset where it took effect (/api/rollout `changes`)")


def _named(variants: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for v in variants:
        label = v.get("name") or (f"{v['model']}:{v['checkpoint']}" if v.get("checkpoint") else v["model"])
        if label == name:
            return v
    names = [v.get("name") or v["model"] for v in variants]
    raise ValueError(f"no variant named {name!r} (variants: {names}); fix: use one of them")


Key = Annotated[str, typer.Argument(help="<route>/<model>, e.g. text/sentiment")]


@app.command("set")
def set_percent(ctx: typer.Context, key: Key, variant: Annotated[str, typer.Argument(help="the variant's name")],
                percent: Annotated[float, typer.Argument(min=0, max=100, help="its new share of the keys")],
                bootstrap: Bootstrap = None, config: ConfigOpt = None) -> None:
    """Set a variant's percent while events flow (the others keep theirs). Example: infertide rollout set
    text/sentiment canary 25"""

    def edit(variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
        _named(variants, variant)["percent"] = percent
        return variants

    _change(ctx, key, "set", edit, bootstrap, config)


@app.command("promote")
def promote(ctx: typer.Context, key: Key, variant: Annotated[str, typer.Argument(help="the variant's name")],
            bootstrap: Bootstrap = None, config: ConfigOpt = None) -> None:
    """Every key to one variant (100%), the others to 0%. Example: infertide rollout promote text/sentiment canary"""

    def edit(variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
        chosen = _named(variants, variant)
        for v in variants:
            v["percent"] = 100.0 if v is chosen else 0.0
        return variants

    _change(ctx, key, "promote", edit, bootstrap, config)


@app.command("rollback")
def rollback(ctx: typer.Context, key: Key, bootstrap: Bootstrap = None, config: ConfigOpt = None) -> None:
    """Every key back to the base model (every variant at 0%). Example: infertide rollout rollback text/sentiment"""

    def edit(variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for v in variants:
            v["percent"] = 0.0
        return variants

    _change(ctx, key, "rollback", edit, bootstrap, config)


@app.command("reset")
def reset(ctx: typer.Context, key: Key, bootstrap: Bootstrap = None, config: ConfigOpt = None) -> None:
    """Back to the config's variants (a tombstone on the control topic)."""
    _change(ctx, key, "reset", None, bootstrap, config)
