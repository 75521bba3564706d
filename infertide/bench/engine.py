"""Benchmark the route engine alone: the route consumer with an in-process echo model (no Ray, no Serve)
draining a pre-filled topic on a real broker; events/s, the worker's CPU and where a batch's time went.

Not a test: ``python -m infertide.bench.engine [--events 300000] [--guarantee both] [--json PATH]``
(``make bench-engine``). It starts a local broker unless given ``--bootstrap``. What it isolates: the
engine's own cost and its waits on the Kafka client; ``infertide bench`` shows what Serve adds on top
(docs/performance.md, "A fetch that waited a second", found with this harness).

A drain is timed from the route's assignment until every input is answered: at-least-once, until the
results of every record are acknowledged by the broker; exactly-once, until its transactions have
committed every input offset (what a ``read_committed`` reader needs). Each guarantee runs at its default
commit interval, on topics of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from infertide.bench.events import event, key_of
from infertide.clients.admin import ensure_topics
from infertide.demo.topology import on_own_topics
from infertide.local.broker import LocalKafka
from schemas.codec import encode
from schemas.topology import Topology, parse_topology
from topologies.engine.routes import RouteConsumer
from topologies.metrics import BATCH_STAGES, REGISTRY

__all__ = ["main", "run_engine_bench"]

PARTITIONS = 4
_REPLY = {"ok": True, "result": {"label": "POSITIVE", "score": 0.5}, "model": {"name": "echo", "version": "1"},
          "inference_ms": 0.0}


async def _echo(model: str, items: list[Any], *trace: Any) -> list[dict[str, Any]]:
    return [_REPLY for _ in items]


def _topology(bootstrap: str, guarantee: str, batch: int, in_flight: int) -> Topology:
    """One echo text route on topics of its own, at the guarantee's own commit interval (as ``infertide bench``)."""
    prefix = f"engine-{uuid.uuid4().hex[:6]}"
    data = on_own_topics({"models": {"echo": {"task": "echo"}}}, prefix=prefix, bootstrap=bootstrap,
                         partitions=PARTITIONS)
    data["kafka"]["commit_interval_s"] = None
    data["delivery"] = {"processing_guarantee": guarantee}
    data["routes"] = [{"name": "text", "input": "text", "kind": "text", "models": ["echo"],
                       "outputs": {"echo": "sentiment"}, "batch_size": batch, "batch_within_s": 0.05,
                       "max_in_flight": in_flight}]
    return parse_topology(data)


def _fill(topology: Topology, events: int) -> dict[int, int]:
    """Produce ``events`` text events; return each input partition's end offset."""
    producer = Producer({"bootstrap.servers": topology.kafka.bootstrap_servers, "linger.ms": 20,
                         "queue.buffering.max.messages": 1_000_000})
    now = int(time.time() * 1000)
    for i in range(events):
        e = event("text", "engine", i, now)
        producer.produce(topology.topics.text, encode(e), key=key_of(e))
        if i % 5000 == 0:
            producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("the bench's events were not all acknowledged within 60 s")
    reader = Consumer({"bootstrap.servers": topology.kafka.bootstrap_servers, "group.id": "engine-bench"})
    try:
        return {p: reader.get_watermark_offsets(TopicPartition(topology.topics.text, p), timeout=10)[1]
                for p in range(PARTITIONS)}
    finally:
        reader.close()


def _stage_sums() -> dict[str, tuple[float, float]]:
    """(sum s, count) of each stage of the engine's histogram, for the bench's route."""
    def value(kind: str, stage: str) -> float:
        labels = {"route": "text", "stage": stage}
        return REGISTRY.get_sample_value(f"infertide_batch_stage_seconds_{kind}", labels) or 0.0

    return {stage: (value("sum", stage), value("count", stage)) for stage in BATCH_STAGES}


async def _drain(topology: Topology, ends: dict[int, int], timeout_s: float) -> dict[str, Any]:
    exactly_once = topology.delivery.processing_guarantee == "exactly-once"
    consumer = RouteConsumer(topology, infer=_echo, summary_topic=None, worker_id="engine-bench")
    await consumer.start()
    runner = consumer.runners[0]
    parts = [(topology.topics.text, p) for p in range(PARTITIONS)]
    try:
        deadline = time.monotonic() + 60
        while len(runner.ledger.parts) < PARTITIONS:
            if time.monotonic() > deadline:
                raise RuntimeError("the route was not assigned its partitions within 60 s")
            await asyncio.sleep(0.01)
        stages0, cpu0, t0 = _stage_sums(), resource.getrusage(resource.RUSAGE_SELF), time.monotonic()

        def done() -> bool:
            states = [runner.ledger.parts.get(tp) for tp in parts]
            return all(s is not None and (s.committed if exactly_once else s.acked + 1) >= ends[tp[1]]
                       for s, tp in zip(states, parts))

        while not done():
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"the drain did not finish within {timeout_s:.0f} s")
            await asyncio.sleep(0.005)
        seconds, cpu1, stages1 = time.monotonic() - t0, resource.getrusage(resource.RUSAGE_SELF), _stage_sums()
    finally:
        await consumer.stop()
    events = sum(ends.values())
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    batches = stages1["fill"][1] - stages0["fill"][1]
    means = {s: round(1000 * (stages1[s][0] - stages0[s][0]) / max(1.0, batches), 2) for s in BATCH_STAGES}
    return {"guarantee": topology.delivery.processing_guarantee, "events": events, "seconds": round(seconds, 3),
            "events_per_s": round(events / seconds, 1), "cpu_cores": round(cpu / seconds, 2),
            "cpu_us_per_event": round(1e6 * cpu / events, 2), "batches": int(batches), "stage_ms": means,
            "commit_interval_s": topology.kafka.commit_every_s(exactly_once)}


def run_engine_bench(bootstrap: str, events: int, guarantees: list[str], *, batch: int = 1024, in_flight: int = 4,
                     timeout_s: float = 300.0) -> list[dict[str, Any]]:
    """One drain per guarantee, each on topics of its own, on the broker at ``bootstrap``."""
    rows = []
    for guarantee in guarantees:
        topology = _topology(bootstrap, guarantee, batch, in_flight)
        ensure_topics(topology, bootstrap)
        ends = _fill(topology, events)
        rows.append(asyncio.run(_drain(topology, ends, timeout_s)))
    return rows


def main(argv: list[str] | None = None) -> None:
    """CLI entry: print the table, optionally write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=300_000, help="events drained per guarantee (default 300,000)")
    ap.add_argument("--guarantee", choices=("at-least-once", "exactly-once", "both"), default="both")
    ap.add_argument("--batch", type=int, default=1024, help="the route's micro-batch (default 1,024)")
    ap.add_argument("--in-flight", type=int, default=4, help="the route's max_in_flight (default 4)")
    ap.add_argument("--bootstrap", help="a running broker (default: start a local one for the run)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    guarantees = ["at-least-once", "exactly-once"] if args.guarantee == "both" else [args.guarantee]
    if args.bootstrap:
        rows = run_engine_bench(args.bootstrap, args.events, guarantees, batch=args.batch, in_flight=args.in_flight)
    else:
        print("starting a local broker ...", flush=True)
        with LocalKafka(Path(tempfile.mkdtemp(prefix="infertide-engine-bench-"))) as kafka:
            rows = run_engine_bench(kafka.bootstrap, args.events, guarantees, batch=args.batch,
                                    in_flight=args.in_flight)
    from rich.table import Table

    from infertide.bench.report import emit

    t = Table(title=f"infertide route engine alone (in-process echo, no Ray): {args.events:,} events, "
                    f"{PARTITIONS} partitions, micro-batch {args.batch}, {args.in_flight} in flight")
    for col in ("guarantee", "events/s", "worker cores", "CPU us/event", "batches",
                "ms per batch: " + " / ".join(BATCH_STAGES)):
        t.add_column(col, justify="left" if col == "guarantee" else "right")
    for r in rows:
        t.add_row(f"{r['guarantee']} (commit {r['commit_interval_s']} s)", f"{r['events_per_s']:,.0f}",
                  f"{r['cpu_cores']:.2f}", f"{r['cpu_us_per_event']:.1f}", str(r["batches"]),
                  " / ".join(f"{r['stage_ms'][s]:.1f}" for s in BATCH_STAGES))
    emit(t, rows, args.json)


if __name__ == "__main__":
    main()
