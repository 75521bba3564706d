"""The route engine's own logic with fake model calls and a fake producer (no Kafka, no Ray)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest

from schemas.codec import encode
from schemas.events import TextEvent
from schemas.summary import SUMMARY_PARTITION
from schemas.topology import parse_topology
from topologies.engine.delivery import AtLeastOnce
from topologies.engine.ledger import PartitionLedger
from topologies.engine.pipeline import RoutePipeline
from topologies.engine.producer import Delivered
from topologies.engine.replays import SummaryScanner
from topologies.engine.records import InputRecord, OutRecord, child_traceparent


def _topology(**route: Any) -> Any:
    return parse_topology({
        "models": {"sentiment": {"task": "sentiment", "model": "x"}},
        "routes": [{"name": "text", "input": "text", "kind": "text", "models": ["sentiment"], **route}],
    })


def _rec(i: int, value: bytes | None = None, partition: int = 0) -> InputRecord:
    if value is None:
        value = encode(TextEvent(event_id=f"e{i}", ts=1, user_id="u", item_id="it", text=f"text {i}"))
    return InputRecord("events.text", partition, i, f"k{i}".encode(), value,
                       {"traceparent": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})


def _ok(label: str = "POSITIVE") -> dict[str, Any]:
    return {"ok": True, "result": {"label": label, "score": 0.75}, "model": {"name": "m", "version": "1"},
            "inference_ms": 1.0}


class FakeBroker:
    """Stands in for :class:`topologies.engine.producer.BatchProducer`: one future per batch, resolved at once
    with where the summary records landed."""

    def __init__(self, summary_topic: str | None = None) -> None:
        self.sent: list[OutRecord] = []
        self.summary_topic = summary_topic

    async def send_all(self, records: list[OutRecord]) -> asyncio.Future[list[Delivered]]:
        fut: asyncio.Future[list[Delivered]] = asyncio.get_running_loop().create_future()
        fut.set_result([Delivered(r.topic, 0, len(self.sent) + i) for i, r in enumerate(records)
                        if r.topic == self.summary_topic])
        self.sent += records
        return fut

    async def publish(self, records: list[OutRecord], ticket: Any) -> list[asyncio.Future[Any]]:
        return [await self.send_all(records)]  # as the route runner publishes (topologies.engine.delivery)

    def values(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(r.value) for r in self.sent if r.topic == topic]


async def test_results_keep_submit_order_when_calls_finish_out_of_order() -> None:
    topology = _topology(max_in_flight=4)
    broker = FakeBroker()
    in_flight = 0
    peak = 0

    async def infer(model: str, items: list[Any]) -> list[dict[str, Any]]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(random.uniform(0, 0.03))
        in_flight -= 1
        return [_ok() for _ in items]

    pipe = RoutePipeline(topology, topology.routes[0], infer=infer, send_all=broker.publish, summary_topic=None)
    acked: list[int] = []
    for b in range(12):
        batch = [_rec(b * 5 + j) for j in range(5)]
        await pipe.submit(batch, ack=lambda _, b=b: asyncio.sleep(0, acked.append(b)))
    await pipe.drain()
    ids = [v["event_id"] for v in broker.values("inference.sentiment")]
    assert ids == [f"e{i}" for i in range(60)]
    assert acked == list(range(12))
    assert 1 < peak <= 4


async def test_invalid_events_go_to_the_dlq_and_the_batch_goes_on() -> None:
    topology = _topology()
    broker = FakeBroker()

    async def infer(model: str, items: list[Any]) -> list[dict[str, Any]]:
        return [_ok() if "2" not in t else {"ok": False, "error_class": "TextTooLong", "error": "too long"}
                for t in items]

    pipe = RoutePipeline(topology, topology.routes[0], infer=infer, send_all=broker.publish, summary_topic="sum")
    out = await pipe.process([_rec(1), _rec(9, b"{not json"), _rec(2), _rec(3)])
    assert out.results == 2
    dlq = [orjson.loads(r.value) for r in out.records if r.topic == "events.dlq"]
    assert [(d["stage"], d["offset"]) for d in dlq] == [("decode", 9), ("infer", 2)]
    assert "not valid JSON" in dlq[0]["error"] and dlq[1]["error_class"] == "TextTooLong"
    summary_record = next(r for r in out.records if r.topic == "sum")
    # Its own partition, never its key's hash: the replay scan and the folds read that one only, also when the
    # topic was auto-created with more (seen on a 3-broker cluster: summaries on partition 3, replays counted twice).
    assert summary_record.partition == SUMMARY_PARTITION
    summary = orjson.loads(summary_record.value)
    assert summary["metrics"]["events|text"] == {"in": 4.0, "dlq": 2.0, "out": 2.0}
    assert summary["engagements"][0]["weight"] == pytest.approx(0.75)


async def test_transient_failures_are_retried_then_dead_lettered_with_attempts() -> None:
    topology = _topology(max_attempts=3, retry_backoff_s=0.001)
    calls = 0

    async def flaky(model: str, items: list[Any]) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("replica restarting")
        return [_ok() for _ in items]

    pipe = RoutePipeline(topology, topology.routes[0], infer=flaky, send_all=FakeBroker().publish, summary_topic=None)
    out = await pipe.process([_rec(1)])
    assert out.results == 1 and calls == 3

    async def down(model: str, items: list[Any]) -> list[dict[str, Any]]:
        raise TimeoutError("no replica")

    pipe = RoutePipeline(topology, topology.routes[0], infer=down, send_all=FakeBroker().publish, summary_topic=None)
    out = await pipe.process([_rec(1), _rec(2)])
    dlq = [orjson.loads(r.value) for r in out.records]
    assert [(d["attempts"], d["error_class"], d["stage"]) for d in dlq] == [(3, "TimeoutError", "infer")] * 2


async def test_backpressure_bounds_batches_in_flight() -> None:
    topology = _topology(max_in_flight=2)
    release = asyncio.Event()

    async def slow(model: str, items: list[Any]) -> list[dict[str, Any]]:
        await release.wait()
        return [_ok() for _ in items]

    pipe = RoutePipeline(topology, topology.routes[0], infer=slow, send_all=FakeBroker().publish, summary_topic=None)
    noop = lambda _: asyncio.sleep(0)  # noqa: E731
    await pipe.submit([_rec(1)], noop)
    await pipe.submit([_rec(2)], noop)
    third = asyncio.ensure_future(pipe.submit([_rec(3)], noop))
    await asyncio.sleep(0.05)
    assert not third.done(), "a third batch must wait while two are in flight"
    release.set()
    await asyncio.wait_for(third, 1)
    await pipe.drain()


async def test_a_produce_failure_is_fatal_and_nothing_is_acked() -> None:
    topology = _topology()
    fatal: list[BaseException] = []

    async def failing_send(records: list[OutRecord], ticket: Any) -> list[asyncio.Future[None]]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_exception(OSError("broker gone"))
        return [fut]

    async def infer(model: str, items: list[Any]) -> list[dict[str, Any]]:
        return [_ok() for _ in items]

    pipe = RoutePipeline(topology, topology.routes[0], infer=infer, send_all=failing_send, summary_topic=None,
                         on_fatal=fatal.append)
    acked = []
    await pipe.submit([_rec(1)], lambda _: asyncio.sleep(0, acked.append(1)))
    await asyncio.sleep(0.05)
    assert acked == [] and isinstance(fatal[0], OSError) and pipe.failed is not None
    with pytest.raises(RuntimeError):
        await pipe.submit([_rec(2)], lambda _: asyncio.sleep(0))


def test_traceparent_keeps_the_trace_and_makes_a_new_span() -> None:
    parent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    child = child_traceparent(parent)
    assert child is not None and child.startswith(b"00-0af7651916cd43dd8448eb211c80319c-") and child.endswith(b"-01")
    assert child != parent and child_traceparent(b"garbage") is None


async def test_a_batch_abandoned_at_a_revocation_publishes_results_but_no_summary() -> None:
    """At-least-once: its offsets are never committed, so the next owner reads and counts its events again.
    Through the path production takes: the ledger's tickets and the at-least-once delivery's publish."""
    topology = _topology(max_in_flight=2)
    broker = FakeBroker("g-summaries")
    ledger = PartitionLedger()
    ledger.assigned({("events.text", 0): (None, None)})
    delivery = AtLeastOnce("text", ledger, broker, SummaryScanner("g-summaries", {}), on_fatal=print)  # type: ignore[arg-type]
    release = asyncio.Event()

    async def infer(model: str, items: list[Any]) -> list[dict[str, Any]]:
        if items[0] == "text 10":
            await release.wait()
        return [_ok() for _ in items]

    pipe = RoutePipeline(topology, topology.routes[0], infer=infer, send_all=delivery.publish,
                         summary_topic="g-summaries")

    async def submit(records: list[InputRecord]) -> None:
        ticket = ledger.submitted(records)
        await pipe.submit(records, lambda located: asyncio.sleep(0, ledger.acked(ticket, 0)), ticket)

    await submit([_rec(i) for i in range(5)])
    await pipe.drain()
    assert ledger.commit_plan() == {("events.text", 0): (5, "0")}
    await submit([_rec(i) for i in range(10, 15)])
    ledger.revoked()  # the revocation's drain timed out with this batch still at the model
    release.set()
    await pipe.drain()
    assert len(broker.values("inference.sentiment")) == 10
    [summary] = broker.values("g-summaries")
    assert summary["ranges"] == {"0": [0, 5]}
    assert ledger.commit_plan() == {}


async def test_each_batch_is_timed_in_every_stage() -> None:
    from topologies.metrics import REGISTRY

    topology = _topology(name="staged")
    broker = FakeBroker()

    async def infer(model: str, items: list[Any]) -> list[dict[str, Any]]:
        await asyncio.sleep(0.02)
        return [_ok() for _ in items]

    def count(stage: str) -> tuple[float, float]:
        labels = {"route": "staged", "stage": stage}
        return (REGISTRY.get_sample_value("infertide_batch_stage_seconds_sum", labels),
                REGISTRY.get_sample_value("infertide_batch_stage_seconds_count", labels))

    pipe = RoutePipeline(topology, topology.routes[0], infer=infer, send_all=broker.publish, summary_topic=None)
    for b in range(3):
        await pipe.submit([_rec(b * 4 + j) for j in range(4)], ack=lambda _: asyncio.sleep(0))
    await pipe.drain()
    stages = {s: count(s) for s in ("decode", "serve", "finish", "wait", "publish", "ack")}
    assert all(n == 3 for _, n in stages.values()), stages
    assert stages["serve"][0] >= 3 * 0.02, "the model calls' time is in the serve stage"
