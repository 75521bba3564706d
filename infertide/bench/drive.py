"""Drive one route: produce N events (paced or flat out) while reading its result topics and the DLQ.

An event is done when a result for it has arrived on every output topic of its
route, or when it reached the dead-letter topic. Results are read as a downstream
consumer must read them (``read_committed``). Throughput is measured from the
first produce to the last result read (or the last produce ack, whichever is
later); latency is from the event's ``ts`` to when its result is read (in
exactly-once that includes the wait for the transaction's commit), the slowest
output per event.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import orjson

from infertide.bench import events as ev
from infertide.bench.options import Reporter

__all__ = ["RoutePlan", "answer_digest", "drive", "plans"]

# What differs between two runs of the same events even when the answers are the same (ids, times, who answered).
_VOLATILE = frozenset({"event_id", "ts", "timings", "produced_ts", "variant"})


def answer_digest(result: dict[str, Any]) -> bytes:
    """A short digest of a result record without its ids, times and ``variant``: equal when the answer is."""
    kept = {k: v for k, v in result.items() if k not in _VOLATILE}
    return hashlib.blake2b(orjson.dumps(kept, option=orjson.OPT_SORT_KEYS), digest_size=8).digest()


@dataclass(frozen=True)
class RoutePlan:
    """One route as the bench sees it: where events go in, where results come out, which models run."""

    name: str
    kind: str
    input_topic: str
    outputs: tuple[str, ...]
    models: tuple[str, ...]
    batch_size: int


def plans(topology: Any) -> list[RoutePlan]:
    """The bench plan of every route of ``topology``."""
    return [RoutePlan(r.name, r.kind, topology.input_topic(r),
                      tuple(dict.fromkeys(topology.output_topic(r, m) for m in r.models)),
                      tuple(r.models), r.batch_size) for r in topology.routes]


LINGER_MS = 5  # the events' producer's linger (lone events: 0)


async def _open(topology: Any, topics: list[str], linger_ms: int = LINGER_MS) -> tuple[Any, Any]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from infertide.clients.admin import aiokafka_kwargs, max_message_bytes

    kw = aiokafka_kwargs(topology.kafka)
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="latest",
                                isolation_level="read_committed",
                                max_poll_records=5000, fetch_max_bytes=64 * 1024 * 1024, **kw)
    producer = AIOKafkaProducer(acks="all", linger_ms=linger_ms, max_batch_size=512 * 1024,
                                max_request_size=max_message_bytes(topology), **kw)
    await consumer.start()
    await producer.start()
    tps = [TopicPartition(t, p) for t in topics for p in range(topology.topics.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:  # pin the "latest" position now, before anything is produced
        await consumer.position(tp)
    return consumer, producer


async def drive(topology: Any, plan: RoutePlan, n: int, rate: float, prefix: str, timeout_s: float,
                report: Reporter | None = None, max_s: float | None = None,
                image_size: tuple[int, int] = (64, 48), hold: Callable[[], None] | None = None,
                answers: dict[tuple[str, int], bytes] | None = None, linger_ms: int = LINGER_MS) -> dict[str, Any]:
    """Produce ``n`` events of ``plan`` (paced at ``rate``; stop producing after ``max_s``) and read the results.

    With ``hold``, every event is produced first, then ``hold()`` runs (the bench restarts the stopped
    workers there) and only then are results read: the drain measurement, no producer competing.
    With ``answers``, each result's :func:`answer_digest` is put there under (output topic, event index).
    ``linger_ms``: the events' producer's (the lone events are sent with 0: one event at a time has nothing to
    wait for, and its linger would be counted in every latency).
    """
    from infertide.clients.produce import now_ms
    from schemas.codec import encode

    dlq_topic = topology.topics.dlq
    consumer, producer = await _open(topology, [*plan.outputs, dlq_topic], linger_ms)
    need = len(plan.outputs)
    got: dict[str, set[str]] = {}  # event id -> output topics seen
    worst: dict[str, float] = {}  # event id -> slowest e2e_ms so far
    stages: dict[str, tuple[float, float, float]] = {}  # event id -> where its first result's time went
    done: set[str] = set()
    dead: set[str] = set()
    state = {"sent": 0, "first_send_ms": 0, "last_ack_ms": 0, "first_result_ms": 0, "last_result_ms": 0,
             "producing": True}

    async def produce() -> None:
        pending: list[asyncio.Future] = []
        t0 = time.perf_counter()
        state["first_send_ms"] = now_ms()
        for i in range(n):
            if rate > 0:
                ahead = t0 + i / rate - time.perf_counter()
                if ahead > 0.002:
                    await asyncio.sleep(ahead)
            if max_s is not None and time.perf_counter() - t0 > max_s:
                break
            e = ev.event(plan.kind, prefix, i, now_ms(), image_size)
            pending.append(await producer.send(plan.input_topic, encode(e), key=ev.key_of(e)))
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
        state["producing"] = False

    def take(topic: str, value: bytes) -> None:
        res = orjson.loads(value)
        eid = str(res.get("event_id", ""))
        if not eid.startswith(prefix + "-") or eid in done:
            return
        if topic == dlq_topic:
            dead.add(eid)
            done.add(eid)
            return
        seen = got.setdefault(eid, set())
        seen.add(topic)
        if answers is not None:
            answers[(topic, int(eid.rpartition("-")[2]))] = answer_digest(res)
        # Until a read_committed reader has it: in exactly-once that includes the wait for the transaction.
        produced = now_ms()
        worst[eid] = max(worst.get(eid, 0.0), float(produced - int(res["ts"])))
        if eid not in stages:
            stages[eid] = result_stages(res, produced)
        state["last_result_ms"] = max(state["last_result_ms"], produced)
        state["first_result_ms"] = min(state["first_result_ms"] or produced, produced)
        if len(seen) >= need:
            done.add(eid)

    async def consume() -> None:
        deadline = time.monotonic() + timeout_s
        while (state["producing"] or len(done) < state["sent"]) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for r in records:
                    take(tp.topic, r.value)
            if report:
                report("results", len(done), n)

    try:
        if hold is None:
            await asyncio.gather(produce(), consume())
        else:
            await produce()
            # In this (main) thread on purpose: workers started here die with the thread that started
            # them (PR_SET_PDEATHSIG), and a to_thread worker thread ends with this event loop.
            hold()
            await consume()
    finally:
        await consumer.stop()
        await producer.stop()
    complete = [e for e in done if e not in dead]
    return {"sent": state["sent"], "results": len(complete), "dlq": len(dead),
            "partial": len(got) - len(complete) - len(dead & got.keys()),
            "e2e_ms": [worst[e] for e in complete], "stages_ms": [stages[e] for e in complete],
            "first_send_ms": state["first_send_ms"],
            "last_ack_ms": state["last_ack_ms"], "first_result_ms": state["first_result_ms"],
            "last_result_ms": state["last_result_ms"]}


def result_stages(result: dict[str, Any], read_ms: int) -> tuple[float, float, float]:
    """Where one result's end-to-end time went, in ms, from its own ``timings``: (its event's ``ts`` to the
    route's Serve call, less that call: the producer's linger, the broker and the route's fetch and decode;
    the Serve call; the route's result built to read here: the route's produce, the broker, the commit in
    exactly-once, this reader's fetch)."""
    t = result.get("timings", {})
    call = float(t.get("inference_ms", 0.0)) + float(t.get("queue_ms", 0.0))
    built = float(t.get("e2e_ms", 0.0))
    return max(0.0, built - call), call, float(read_ms - int(result.get("produced_ts", read_ms)))


def run_drive(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`drive` from synchronous code."""
    return asyncio.run(drive(*args, **kwargs))
