"""``infertide bench`` logic: drive the whole pipeline with N events and measure it against three baselines.

In the spirit of Triton's perf_analyzer. One run starts its own Kafka (unless a
bootstrap is given), a Ray cluster with the Serve app (one tiny model:
``sentiment`` or the null ``echo``), and one ``infertide worker``; produces N
text events (fixed rate or as fast as possible), reads every result, and
reports end-to-end throughput (first produce to last result), latency
percentiles (``timings.e2e_ms``), micro-batch fill (the worker's
``infertide_microbatch_size`` histogram), Serve batch fill
(``handle.stats``) and the DLQ rate. Then, with Ray and the worker stopped so
they take no CPU, the baselines of :mod:`infertide.bench_baselines`. Everything
binds to 127.0.0.1 and every process started is stopped by its own PID.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from infertide import bench_baselines as bl
from schemas.topology import TOPIC_ALIASES

__all__ = ["BenchOptions", "Reporter", "percentile", "run_bench"]

# (phase, done, total): total None = indeterminate; done None = start a phase.
Reporter = Callable[[str, int | None, int | None], None]


@dataclass
class BenchOptions:
    """What one bench run does.

    Args:
        events: events through the pipeline (and through the passthrough baseline).
        rate: produce rate in events/s; 0 = as fast as possible.
        model: ``sentiment`` (tiny BERT) or ``echo`` (null model: the system's own overhead).
        batch_size: the route's micro-batch size = Serve ``max_batch_size`` = the bare model's batch.
        naive_events: events through the naive per-event loop (it is slow: keep it bounded).
        bootstrap: an existing Kafka; default: start a local broker in a temp folder.
        timeout_s: give up waiting for results after this long (the run still reports what came).
        workdir: logs and configs (default: a temp folder).
    """

    events: int = 20_000
    rate: float = 0.0
    model: str = "sentiment"
    batch_size: int = 256
    naive_events: int = 2_000
    bootstrap: str | None = None
    timeout_s: float = 300.0
    workdir: Path | None = None
    max_in_flight: int = 2
    batch_within_s: float = 0.05
    warmup_events: int = 64


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return float(s[k])


def _topology_dict(opts: BenchOptions, models_dir: Path, bootstrap: str, prefix: str, web_port: int) -> dict[str, Any]:
    from infertide.tiny_models import build_tiny_sentiment

    batching = {"max_batch_size": opts.batch_size, "batch_wait_timeout_s": 0.01}
    common = {"device": "auto", "batching": batching, "num_cpus": 0.5, "max_ongoing_requests": 64}
    if opts.model == "sentiment":
        model = {"task": "sentiment", "model": str(build_tiny_sentiment(models_dir / "tiny-sentiment")),
                 "options": {"max_length": 64}, **common}
    elif opts.model == "echo":
        model = {"task": "echo", **common}
    else:
        raise ValueError(f"--model must be sentiment or echo, not {opts.model!r}")
    return {
        "name": "infertide-bench",
        "kafka": {"bootstrap_servers": bootstrap, "consumer_group": f"{prefix}-group",
                  "session_timeout_s": 6, "heartbeat_interval_s": 2, "commit_interval_s": 0.5},
        "topics": {a: f"{prefix}.{a}" for a in TOPIC_ALIASES} | {"partitions": 4},
        "models": {opts.model: model},
        "routes": [{"name": "text", "input": "text", "kind": "text", "models": [opts.model],
                    "outputs": {opts.model: "sentiment"}, "batch_size": opts.batch_size,
                    "batch_within_s": opts.batch_within_s, "max_in_flight": opts.max_in_flight}],
        "analytics": {"enabled": False},
        "recommendations": {"enabled": False},
        "web_port": web_port,
        "serve_app_name": "infertide-bench",
    }


_METRIC = re.compile(r'^(infertide_[a-z_]+)\{([^}]*)\}\s+([0-9.eE+-]+)$')


def _scrape(text: str) -> dict[str, float]:
    """Sum Prometheus samples by metric name (the bench topology has one route)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _METRIC.match(line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def _metrics(worker: Any) -> dict[str, float]:
    status, body = worker.get("/metrics", timeout=5.0)
    return _scrape(body.decode()) if status == 200 else {}


async def _drive(topology: Any, n: int, rate: float, prefix: str, timeout_s: float,
                 report: Reporter | None) -> dict[str, Any]:
    """Produce ``n`` text events (paced at ``rate``) while reading the results and dead letters."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from infertide.admin import aiokafka_kwargs
    from infertide.produce import now_ms
    from schemas.codec import encode
    from schemas.events import TextEvent

    kw = aiokafka_kwargs(topology.kafka)
    out_topic, dlq_topic = topology.topics.sentiment, topology.topics.dlq
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="latest",
                                max_poll_records=5000, **kw)
    producer = AIOKafkaProducer(acks="all", linger_ms=5, max_batch_size=512 * 1024, **kw)
    await consumer.start()
    await producer.start()
    tps = [TopicPartition(t, p) for t in (out_topic, dlq_topic) for p in range(topology.topics.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:  # pin the "latest" position now, before anything is produced
        await consumer.position(tp)
    texts = bl.sample_texts(min(n, 1000))
    e2e: list[float] = []
    produced_ts: list[int] = []
    seen: set[str] = set()
    dlq = 0
    state = {"sent": 0, "first_send_ms": 0, "last_ack_ms": 0}

    async def produce() -> None:
        pending: list[asyncio.Future] = []
        t0 = time.perf_counter()
        state["first_send_ms"] = now_ms()
        for i in range(n):
            if rate > 0:
                ahead = t0 + i / rate - time.perf_counter()
                if ahead > 0.002:
                    await asyncio.sleep(ahead)
            ev = TextEvent(event_id=f"{prefix}-{i}", ts=now_ms(), source="bench", text=texts[i % len(texts)])
            pending.append(await producer.send(topology.topics.text, encode(ev), key=ev.event_id.encode()))
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                state["sent"] += len(pending)
                pending.clear()
                if report:
                    report("produce", state["sent"], n)
        await producer.flush()
        await asyncio.gather(*pending)
        state["sent"] += len(pending)
        state["last_ack_ms"] = now_ms()
        if report:
            report("produce", state["sent"], n)

    async def consume() -> None:
        nonlocal dlq
        deadline = time.monotonic() + timeout_s
        while len(seen) + dlq < n and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for r in records:
                    if tp.topic == dlq_topic:
                        dlq += 1
                        continue
                    res = orjson.loads(r.value)
                    if not str(res.get("event_id", "")).startswith(prefix + "-") or res["event_id"] in seen:
                        continue
                    seen.add(res["event_id"])
                    e2e.append(float(res["timings"]["e2e_ms"]))
                    produced_ts.append(int(res["produced_ts"]))
            if report:
                report("results", len(seen) + dlq, n)

    try:
        await asyncio.gather(produce(), consume())
    finally:
        await consumer.stop()
        await producer.stop()
    return {"sent": state["sent"], "results": len(seen), "dlq": dlq, "e2e_ms": e2e,
            "first_send_ms": state["first_send_ms"], "last_ack_ms": state["last_ack_ms"],
            "last_result_ms": max(produced_ts) if produced_ts else 0}


async def _serve_stats(app_name: str, model: str, reset: bool) -> dict[str, Any]:
    from ray import serve

    h = serve.get_deployment_handle(model, app_name=app_name)
    if reset:
        await h.reset_stats.remote()
        return {}
    return await h.stats.remote()


def _phase(report: Reporter | None, name: str) -> None:
    if report:
        report(name, None, None)


def run_bench(opts: BenchOptions, report: Reporter | None = None) -> dict[str, Any]:
    """Run the pipeline and the three baselines; returns the JSON-able result (see ``infertide bench --help``)."""
    from infertide.admin import ensure_topics
    from infertide.broker import LocalKafka, free_port, project_cache
    from infertide.runtime import RayServe, WorkerProcess
    from infertide.tiny_models import offline_env
    from schemas.topology import parse_topology

    workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="infertide-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = offline_env(project_cache() / "tiny-models" / "env")
    os.environ.update(env)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    started = time.time()
    kafka = serve = worker = None
    result: dict[str, Any] = {"conditions": {**{k: v for k, v in asdict(opts).items() if k != "workdir"},
                                             "cpus": os.cpu_count(), "workdir": str(workdir)}}
    try:
        _phase(report, "kafka")
        if opts.bootstrap:
            bootstrap = opts.bootstrap
        else:
            kafka = LocalKafka(workdir / "kafka").start()
            bootstrap = kafka.bootstrap
        result["conditions"]["bootstrap"] = bootstrap
        result["conditions"]["broker"] = "existing" if opts.bootstrap else "local Apache Kafka (KRaft, 1 node)"
        d = _topology_dict(opts, project_cache() / "tiny-models", bootstrap, prefix, free_port())
        cfg_path = workdir / "bench-topology.yaml"
        cfg_path.write_text(yaml.safe_dump(d, sort_keys=False))
        topology = parse_topology(d, str(cfg_path))
        ensure_topics(topology)
        naive_in, naive_out, passthru = f"{prefix}.naive-in", f"{prefix}.naive-out", f"{prefix}.passthrough"
        bl.create_topics(topology, [naive_in, naive_out, passthru])

        _phase(report, "ray")
        for name in ("ray", "ray.serve"):
            logging.getLogger(name).setLevel(logging.WARNING)
        serve = RayServe(topology, num_cpus=os.cpu_count() or 2).start()
        _phase(report, "worker")
        worker = WorkerProcess(cfg_path, serve.address, topology.web_port, workdir / "worker.log", env=env).start()
        worker.wait_ready(timeout=120)

        _phase(report, "warmup")
        warm = asyncio.run(_drive(topology, opts.warmup_events, 0, f"{prefix}w", 60, None))
        if warm["results"] + warm["dlq"] < opts.warmup_events:
            raise RuntimeError(f"warm-up: only {warm['results']} of {opts.warmup_events} results:\n{worker.tail()}")
        asyncio.run(_serve_stats(topology.serve_app_name, opts.model, reset=True))
        before = _metrics(worker)

        _phase(report, "pipeline")
        run = asyncio.run(_drive(topology, opts.events, opts.rate, prefix, opts.timeout_s, report))
        after = _metrics(worker)
        sstats = asyncio.run(_serve_stats(topology.serve_app_name, opts.model, reset=False))
        result["pipeline"] = _pipeline_section(opts, run, before, after, sstats)
        worker.stop()
        worker = None
        serve.stop()
        serve = None

        _phase(report, "bare model")
        model = bl.load_model(topology, opts.model)
        result["bare_model"] = bl.bare_model(model, opts.batch_size)

        _phase(report, "naive loop")
        from infertide.produce import produce_events, text_events

        produce_events(topology, naive_in, text_events(bl.sample_texts(opts.naive_events), source="bench"))
        result["naive_loop"] = bl.naive_loop(topology, model, naive_in, naive_out, opts.naive_events)
        result["naive_loop"]["client"] = "kafka-python"

        _phase(report, "passthrough")
        result["passthrough"] = bl.passthrough(topology, topology.topics.text, passthru,
                                               result["pipeline"]["sent"])
        result["passthrough"]["client"] = "aiokafka"
        result["ratios"] = _ratios(result)
    finally:
        if worker is not None:
            worker.stop()
        if serve is not None:
            serve.stop()
        if kafka is not None:
            kafka.stop()
    result["wall_s"] = round(time.time() - started, 1)
    return result


def _pipeline_section(opts: BenchOptions, run: dict[str, Any], before: dict[str, float],
                      after: dict[str, float], sstats: dict[str, Any]) -> dict[str, Any]:
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    span_ms = max(run["last_result_ms"], run["last_ack_ms"]) - run["first_send_ms"]
    done = run["results"] + run["dlq"]
    mb_count, mb_sum = delta("infertide_microbatch_size_count"), delta("infertide_microbatch_size_sum")
    mb_mean = mb_sum / mb_count if mb_count else 0.0
    e2e = run["e2e_ms"]
    return {
        "sent": run["sent"], "results": run["results"], "dlq": run["dlq"],
        "missing": run["sent"] - done,
        "dlq_rate": run["dlq"] / run["sent"] if run["sent"] else 0.0,
        "seconds": round(span_ms / 1000, 3),
        "events_per_s": run["results"] / (span_ms / 1000) if span_ms > 0 else 0.0,
        "produce_events_per_s": run["sent"] / max((run["last_ack_ms"] - run["first_send_ms"]) / 1000, 1e-3),
        "latency_ms": {"p50": percentile(e2e, 50), "p90": percentile(e2e, 90), "p99": percentile(e2e, 99),
                       "max": max(e2e) if e2e else 0.0, "mean": sum(e2e) / len(e2e) if e2e else 0.0},
        "microbatch": {"batches": int(mb_count), "events": int(mb_sum), "mean": mb_mean,
                       "batch_size": opts.batch_size, "fill": mb_mean / opts.batch_size},
        "serve_batch": {"batches": sstats.get("batches", 0), "items": sstats.get("items", 0),
                        "mean": sstats.get("mean", 0.0), "max": sstats.get("max", 0),
                        "max_batch_size": opts.batch_size,
                        "fill": sstats.get("mean", 0.0) / opts.batch_size},
        "worker_metrics": {"events_in": delta("infertide_events_in_total"),
                           "results_out": delta("infertide_results_out_total"),
                           "dlq": delta("infertide_dlq_total")},
    }


def _ratios(result: dict[str, Any]) -> dict[str, float]:
    p = result["pipeline"]["events_per_s"]

    def r(x: float) -> float:
        return p / x if x else 0.0

    return {"pipeline_over_bare_model": r(result["bare_model"]["items_per_s"]),
            "pipeline_over_naive_loop": r(result["naive_loop"]["events_per_s"]),
            "pipeline_over_passthrough": r(result["passthrough"]["events_per_s"])}
