"""``infertide bench``: drive every route of a topology with N events and measure it against three baselines.

In the spirit of Triton's perf_analyzer. One run starts its own Kafka (unless a
bootstrap is given), Ray with the topology's Serve app, and ``--workers`` worker
processes in one consumer group. Each route is measured alone, one after
another (so each gets the whole machine, as its baselines do): N events of its
kind, every result read back, end-to-end throughput (first produce to last
result), latency percentiles (``timings.e2e_ms``), micro-batch fill (the
workers' ``infertide_microbatch_size`` histogram), Serve batch fill per model
(``handle.stats``), the DLQ rate, per-worker throughput and held partitions.
Then, with the workers and Ray stopped so they take no CPU, per route:

- (a) its bare models in-process at the route's batch size (and the combined
  rate of an event through all of them, one after another);
- (b) the naive consume-one / infer-one / produce-one loop with kafka-python;
- (c) passthrough of the route's own input records, no model, with aiokafka and with confluent-kafka
  (the route engine's client): the client comparison.

``--guarantee both`` runs the whole bench once per processing guarantee, one after the other, and
reports exactly-once over at-least-once (:func:`run_guarantees`).

Everything binds to 127.0.0.1 and every process started is stopped by its own PID.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import Any

from infertide.bench import baselines as bl
from infertide.bench.drive import RoutePlan
from infertide.bench.options import BenchOptions, Reporter
from infertide.bench.stack import BenchStack, drain, measure, phase

__all__ = ["conditions", "run_bench"]

NAIVE_MAX_S = 30.0  # the naive loop is per event: bounded in time as well as in events
LONE_EVENTS = 20  # the lone-event latency: one every 0.5 s


def conditions(opts: BenchOptions, bs: BenchStack) -> dict[str, Any]:
    """The run's settings and machine, JSON-able."""
    skip = {"workdir", "config", "chart"}
    c = {k: v for k, v in asdict(opts).items() if k not in skip}
    return {**c, "config": str(opts.config) if opts.config else None, "cpus": os.cpu_count(), **bs.description}


def _baselines(bs: BenchStack, plan: RoutePlan, sent: int, report: Reporter | None) -> dict[str, Any]:
    from infertide.clients.produce import produce_events
    from infertide.bench import events as ev

    out: dict[str, Any] = {}
    phase(report, f"bare model ({plan.name})")
    models = {m: bl.load_model(bs.topology, m) for m in plan.models}
    # The batch each model really runs at: the micro-batch, split by the replica at its max_batch_size.
    sizes = {m: min(plan.batch_size, bs.topology.models[m].batching.max_batch_size) for m in plan.models}
    per = {m: bl.bare_model(model, ev.bare_items(plan.kind, sizes[m], bs.opts.image_size))
           for m, model in models.items()}
    combined = 1 / sum(1 / p["items_per_s"] for p in per.values()) if all(p["items_per_s"] for p in per.values()) else 0
    out["bare_model"] = {"items_per_s": combined, "batch_size": max(sizes.values()), "models": per,
                         "threads": next(iter(per.values())).get("threads"),
                         "batches": min(p["batches"] for p in per.values())}

    phase(report, f"naive loop ({plan.name})")
    names = [f"{bs.prefix}.{plan.name}.naive-in", f"{bs.prefix}.{plan.name}.naive-out",
             f"{bs.prefix}.{plan.name}.passthrough"]
    bl.create_topics(bs.topology, names)
    n = bs.opts.naive_events
    now = int(time.time() * 1000)
    produce_events(bs.topology, names[0], (ev.event(plan.kind, f"{bs.prefix}n", i, now, bs.opts.image_size)
                                           for i in range(n)))
    out["naive_loop"] = {**bl.naive_loop(bs.topology, plan.kind, list(models.values()), names[0], names[1], n,
                                         timeout_s=NAIVE_MAX_S), "client": "kafka-python"}
    phase(report, f"passthrough ({plan.name})")
    out["passthrough"] = {**bl.passthrough(bs.topology, plan.input_topic, names[2], sent), "client": "aiokafka"}
    phase(report, f"passthrough, confluent-kafka ({plan.name})")
    bl.create_topics(bs.topology, [names[2] + "-ck"])
    out["passthrough_confluent"] = {**bl.passthrough_confluent(bs.topology, plan.input_topic, names[2] + "-ck", sent),
                                    "client": "confluent-kafka"}
    return out


def _ratios(p: float, base: dict[str, Any]) -> dict[str, float]:
    def r(x: float) -> float:
        return p / x if x else 0.0

    return {"pipeline_over_bare_model": r(base["bare_model"]["items_per_s"]),
            "pipeline_over_naive_loop": r(base["naive_loop"]["events_per_s"]),
            "pipeline_over_passthrough": r(base["passthrough"]["events_per_s"]),
            "pipeline_over_passthrough_confluent": r(base["passthrough_confluent"]["events_per_s"])}


def run_bench(opts: BenchOptions, report: Reporter | None = None) -> dict[str, Any]:
    """Run every route and its baselines; the JSON-able result (see ``infertide bench --help``).

    ``result["routes"]`` has one entry per route (``pipeline``, ``bare_model``,
    ``naive_loop``, ``passthrough``, ``ratios``); the first route's sections are
    also at the top level.
    """
    started = time.time()
    bs = BenchStack(opts, report)
    try:
        bs.start()
        bs.warm_up()
        runs = {}
        for p in bs.plans:
            phase(report, f"pipeline ({p.name})")
            runs[p.name] = measure(bs, p, opts.events, opts.rate, f"r{p.name}", report)
            if not opts.rate:  # saturation: also the drain rate, measured as the passthrough is
                runs[p.name]["drain"] = drain(bs, p, opts.events, f"d{p.name}", report)
                if opts.latency:
                    half = max(1.0, runs[p.name]["drain"]["events_per_s"] / 2)
                    phase(report, f"latency at half the drain rate, {half:,.0f} events/s ({p.name})")
                    runs[p.name]["half_rate"] = measure(bs, p, min(opts.events, int(half * 10)), half, f"h{p.name}",
                                                        report)
                    phase(report, f"latency of a lone event, one every 0.5 s ({p.name})")
                    runs[p.name]["lone"] = measure(bs, p, LONE_EVENTS, 2.0, f"l{p.name}", report, linger_ms=0)
        bs.stop_pipeline()
        routes = []
        for p in bs.plans:
            base = _baselines(bs, p, runs[p.name]["sent"], report)
            run = runs[p.name]
            headline = run["drain"]["events_per_s"] if "drain" in run else run["events_per_s"]
            routes.append({"pipeline": run, **base, "ratios": _ratios(headline, base)})
        result = {"conditions": conditions(opts, bs), "routes": routes, **routes[0]}
    finally:
        bs.close()
    result["wall_s"] = round(time.time() - started, 1)
    return result


def run_guarantees(opts: BenchOptions, report: Reporter | None = None) -> dict[str, Any]:
    """The bench once per guarantee (same options, one after the other), and exactly-once / at-least-once."""
    from dataclasses import replace

    runs = {g: run_bench(replace(opts, guarantee=g, latency=True), report) for g in ("at-least-once", "exactly-once")}
    alo, eos = runs["at-least-once"], runs["exactly-once"]
    rate = (lambda r: r["pipeline"].get("drain", r["pipeline"])["events_per_s"])
    return {**eos, "guarantees": runs,
            "eos_over_alo": {"drain": rate(eos) / rate(alo) if rate(alo) else 0.0}}
