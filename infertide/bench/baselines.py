"""The baselines ``infertide bench`` compares the pipeline with: bare model, naive per-event loop, broker passthrough.

Each returns a dict of measured numbers (never extrapolated):

- :func:`bare_model`: the model class in-process, ``run_batch`` on batches of the
  route's batch size (items/s): what the model alone can do on these cores.
- :func:`naive_loop`: what a user would write with kafka-python: consume one
  event, infer it with each of the route's bare models, produce one result (events/s).
- :func:`passthrough`: aiokafka consume + produce, no model (events/s): the
  broker and client ceiling.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import Any

import orjson

from infertide.clients.admin import aiokafka_kwargs, kafka_python_kwargs
from schemas.topology import Topology

__all__ = ["bare_model", "create_topics", "load_model", "naive_loop", "passthrough"]


def create_topics(topology: Topology, names: list[str]) -> None:
    """Create the baselines' own topics up front (no auto-create warnings, same partitions as the pipeline)."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(**kafka_python_kwargs(topology.kafka))
    try:
        admin.create_topics([NewTopic(n, topology.topics.partitions, topology.topics.replication_factor)
                             for n in names])
        admin.wait_for_topics(names, timeout_ms=30_000)
    finally:
        admin.close()


def load_model(topology: Topology, name: str) -> Any:
    """The deployment's model class, loaded in this process (the same code Serve runs)."""
    from workers.registry import model_class

    cfg = topology.models[name]
    model = model_class(cfg.task)(cfg)
    model.warmup()
    return model


def _set_threads(n: int | None) -> int | None:
    """Set torch's intra-op threads (when torch is loaded); returns the previous count."""
    torch = sys.modules.get("torch")
    if torch is None or n is None:
        return None
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    return prev


def _bare_once(model: Any, items: list[Any], seconds: float, min_batches: int) -> dict[str, Any]:
    model.run_batch(items)  # warm
    n = batches = 0
    t0 = time.perf_counter()
    while batches < min_batches or time.perf_counter() - t0 < seconds:
        out = model.run_batch(items)
        if not all(r.get("ok") for r in out):
            raise RuntimeError(f"bare model failed: {out[0]}")
        n += len(items)
        batches += 1
    elapsed = time.perf_counter() - t0
    return {"items": n, "batches": batches, "seconds": round(elapsed, 3), "items_per_s": n / elapsed}


def bare_model(model: Any, items: list[Any], seconds: float = 3.0, min_batches: int = 3) -> dict[str, Any]:
    """Items/s of ``model.run_batch(items)`` (one batch), for about ``seconds`` (at least ``min_batches``).

    With torch loaded, measured at 1 intra-op thread and at torch's default (on
    shared cores one thread is often several times faster); the best is reported
    and left set, so the naive loop runs with it too.
    """
    batch_size = len(items)
    torch = sys.modules.get("torch")
    if torch is None:
        return {**_bare_once(model, items, seconds, min_batches), "batch_size": batch_size, "threads": None}
    default = torch.get_num_threads()
    per: dict[int, dict[str, Any]] = {}
    for threads in sorted({1, default}):
        _set_threads(threads)
        per[threads] = _bare_once(model, items, seconds, min_batches)
    best = max(per, key=lambda t: per[t]["items_per_s"])
    _set_threads(best)
    return {**per[best], "batch_size": batch_size, "threads": best,
            "items_per_s_by_threads": {str(t): v["items_per_s"] for t, v in per.items()}}


def naive_loop(topology: Topology, kind: str, models: list[Any], in_topic: str, out_topic: str, events: int,
               timeout_s: float = 120.0) -> dict[str, Any]:
    """Consume one, infer one (each model), produce one with kafka-python, over events already in ``in_topic``.

    Timed from the first record received to the last result flushed (group join
    excluded); stops after ``timeout_s`` and reports the events it finished.
    """
    from kafka import KafkaConsumer, KafkaProducer

    from infertide.bench.events import item_of

    kw = kafka_python_kwargs(topology.kafka)
    consumer = KafkaConsumer(in_topic, group_id=f"naive-{uuid.uuid4().hex[:8]}", auto_offset_reset="earliest",
                             consumer_timeout_ms=1000, **kw)
    producer = KafkaProducer(**kw)
    done, t0, deadline = 0, 0.0, time.monotonic() + timeout_s
    try:
        while done < events and time.monotonic() < deadline:
            for msg in consumer:  # the loop a user writes
                if done == 0:
                    t0 = time.perf_counter()
                event = orjson.loads(msg.value)
                for model in models:
                    result = model.run_batch([item_of(kind, event)])[0]
                    producer.send(out_topic, orjson.dumps({"event_id": event["event_id"], **result}), key=msg.key)
                done += 1
                if done >= events or time.monotonic() > deadline:
                    break
        producer.flush()
        elapsed = time.perf_counter() - t0 if done else 0.0
    finally:
        consumer.close()
        producer.close()
    return {"events": done, "seconds": round(elapsed, 3), "events_per_s": done / elapsed if elapsed else 0.0}


async def _passthrough(topology: Topology, in_topic: str, out_topic: str, events: int,
                       timeout_s: float) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    kw = aiokafka_kwargs(topology.kafka)
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                max_poll_records=2000, **kw)
    producer = AIOKafkaProducer(acks="all", linger_ms=5, max_batch_size=512 * 1024, **kw)
    await consumer.start()
    await producer.start()
    done, t0, pending = 0, 0.0, []
    try:
        parts = consumer.partitions_for_topic(in_topic) or set()
        while not parts:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - first metadata may be empty
            parts = consumer.partitions_for_topic(in_topic) or set()
        tps = [TopicPartition(in_topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        while done < events and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            for records in batches.values():
                for r in records:
                    if done >= events:
                        break
                    if done == 0:
                        t0 = time.perf_counter()
                    pending.append(await producer.send(out_topic, r.value, key=r.key))
                    done += 1
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await producer.flush()
        await asyncio.gather(*pending)
        elapsed = time.perf_counter() - t0 if done else 0.0
    finally:
        await consumer.stop()
        await producer.stop()
    return {"events": done, "seconds": round(elapsed, 3), "events_per_s": done / elapsed if elapsed else 0.0}


def passthrough(topology: Topology, in_topic: str, out_topic: str, events: int,
                timeout_s: float = 120.0) -> dict[str, Any]:
    """aiokafka: read ``events`` records of ``in_topic`` from the start and produce each to ``out_topic``."""
    return asyncio.run(_passthrough(topology, in_topic, out_topic, events, timeout_s))


def passthrough_confluent(topology: Topology, in_topic: str, out_topic: str, events: int,
                          timeout_s: float = 120.0) -> dict[str, Any]:
    """confluent-kafka (the route engine's client): the same passthrough, ``consume(n)`` batches and a produce
    per record (idempotent, acks=all, the routes' linger), delivery reports served by ``poll``."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from topologies.kafka_settings import confluent_config

    conf = confluent_config(topology.kafka)
    consumer = Consumer(conf | {"group.id": f"passthrough-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
                                "auto.offset.reset": "earliest"})
    producer = Producer(conf | {"enable.idempotence": True, "acks": "all",
                                "linger.ms": topology.kafka.producer_linger_s * 1000, "batch.size": 512 * 1024,
                                "queue.buffering.max.messages": 1_000_000})
    done, t0 = 0, 0.0
    try:
        meta = consumer.list_topics(in_topic, timeout=10)
        consumer.assign([TopicPartition(in_topic, p, 0) for p in meta.topics[in_topic].partitions])
        deadline = time.monotonic() + timeout_s
        while done < events and time.monotonic() < deadline:
            for m in consumer.consume(2000, 0.5):
                if m.error() is not None or done >= events:
                    continue
                if done == 0:
                    t0 = time.perf_counter()
                while True:
                    try:
                        producer.produce(out_topic, m.value(), m.key())
                        break
                    except BufferError:
                        producer.poll(0.01)
                done += 1
            producer.poll(0)
        producer.flush(60)
        elapsed = time.perf_counter() - t0 if done else 0.0
    finally:
        consumer.close()
    return {"events": done, "seconds": round(elapsed, 3), "events_per_s": done / elapsed if elapsed else 0.0}
