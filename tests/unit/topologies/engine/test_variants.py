"""Rollouts in the route engine (topologies.engine.variants) with fake model calls and fake producers."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from schemas.codec import encode
from schemas.events import TextEvent
from schemas.topology import parse_topology
from topologies.engine.pipeline import RoutePipeline
from topologies.engine.records import InputRecord
from topologies.rollout import RoutePlan, fold, report
from tests.unit.topologies.engine.test_pipeline import FakeBroker as _Broker


class FakeBroker(_Broker):
    closed = False

    async def close(self) -> None:
        self.closed = True


def _topology(rollout: dict[str, Any], **route: Any) -> Any:
    return parse_topology({
        "models": {
            "sentiment": {"task": "sentiment", "model": "x",
                          "multiplex": {"max_models_per_replica": 2, "checkpoints": {"ft-0": "/a", "ft-1": "/b"}}},
            "sentiment_v2": {"task": "sentiment", "model": "y"},
        },
        "routes": [{"name": "text", "input": "text", "kind": "text", "models": ["sentiment"], "rollout":
                    {"sentiment": rollout}, **route}],
    })


def _rec(i: int) -> InputRecord:
    value = encode(TextEvent(event_id=f"e{i}", ts=1, user_id=f"u{i % 97}", item_id="it", text=f"text {i}"))
    return InputRecord("events.text", 0, i, f"k{i}".encode(), value)


def _answer(model: str, checkpoint: str | None, text: str) -> dict[str, Any]:
    who = f"{model}:{checkpoint}"
    n = int(text.split()[-1])
    label = "POSITIVE" if (n + len(who)) % 3 else "NEGATIVE"
    return {"ok": True, "result": {"label": label, "score": (n % 10) / 10}, "model": {"name": who, "version": "1"},
            "inference_ms": 1.0}


class Calls:
    def __init__(self, delay: dict[str, float] | None = None, fail: set[str] | None = None) -> None:
        self.calls: list[tuple[str, str | None, int]] = []
        self.delay, self.fail = delay or {}, fail or set()

    async def __call__(self, model: str, items: list[Any], trace: Any = None, *,
                       checkpoint: str | None = None) -> list[dict[str, Any]]:
        self.calls.append((model, checkpoint, len(items)))
        who = f"{model}:{checkpoint}"
        await asyncio.sleep(self.delay.get(who, 0))
        if who in self.fail:
            raise RuntimeError(f"{who} is down")
        return [_answer(model, checkpoint, t) for t in items]


ROLLOUT = {"variants": [{"name": "canary", "model": "sentiment_v2", "percent": 30},
                        {"name": "ft", "model": "sentiment", "checkpoint": "ft-0", "percent": 20}],
           "shadows": [{"name": "next", "model": "sentiment", "checkpoint": "ft-1", "queue_size": 1000}]}


async def test_variants_answer_their_share_in_event_order_with_the_variant_field() -> None:
    topology = _topology(ROLLOUT)
    route = topology.routes[0]
    calls, broker, shadows = Calls(), FakeBroker(), FakeBroker()
    pipe = RoutePipeline(topology, route, infer=calls, send_all=broker.publish, summary_topic="sum",
                         shadow_producer=lambda: shadows)
    recs = [_rec(i) for i in range(200)]
    out = await pipe.process(recs)
    results = [orjson.loads(r.value) for r in out.records if r.topic == "inference.sentiment"]
    assert [r["event_id"] for r in results] == [f"e{i}" for i in range(200)]
    plan = RoutePlan.of(topology, route)
    for rec, res in zip(recs, results):
        v = plan.choose("sentiment", rec.event)
        assert res["variant"] == v.result_field()
        expected = _answer(v.model, v.checkpoint, rec.event.text)
        assert (res["label"], res["score"], res["model"]) == (expected["result"]["label"],
                                                              expected["result"]["score"], expected["model"])
    # one call per variant for the batch
    assert sorted(f"{m}:{c}" for m, c, _ in calls.calls if c != "ft-1") == [
        "sentiment:None", "sentiment:ft-0", "sentiment_v2:None"]
    summary = orjson.loads(next(r.value for r in out.records if r.topic == "sum"))
    sums = summary["metrics"]["rollout|text/sentiment"]
    rep = report(sums)["variants"]
    assert sum(v["count"] for v in rep.values()) == 200
    assert set(rep) == {"canary", "ft", "sentiment"}
    # the shadow answers off the live path, to its own topic, with its comparison sums
    await asyncio.sleep(0.05)
    shadow = shadows.values("inference.sentiment.shadow")
    assert len(shadow) == 200 and all(s["variant"]["role"] == "shadow" for s in shadow)
    assert not any(r.topic == "inference.sentiment.shadow" for r in broker.sent)
    shadow_sums: dict[str, float] = {}
    for summary in shadows.values("sum"):  # one per shadow call (route batch_size events each)
        for k, v in summary["metrics"]["rollout|text/sentiment"].items():
            shadow_sums[k] = shadow_sums.get(k, 0.0) + v
    live = {r["event_id"]: r for r in results}
    expected = fold("sentiment", pairs=[("next", live[s["event_id"]], s) for s in shadow])
    assert shadow_sums == pytest.approx(expected)
    await pipe.rollout.close()
    assert shadows.closed


async def test_a_slow_shadow_sheds_and_never_holds_a_live_batch() -> None:
    rollout = {"shadows": [{"name": "slow", "model": "sentiment_v2", "queue_size": 30}]}
    topology = _topology(rollout, batch_size=20)
    calls, broker, shadows = Calls(delay={"sentiment_v2:None": 10.0}), FakeBroker(), FakeBroker()
    pipe = RoutePipeline(topology, topology.routes[0], infer=calls, send_all=broker.publish, summary_topic="sum",
                         shadow_producer=lambda: shadows)
    sheds = 0
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for b in range(5):
        out = await pipe.process([_rec(b * 20 + j) for j in range(20)])
        summary = orjson.loads(next(r.value for r in out.records if r.topic == "sum"))
        sheds += summary["metrics"].get("rollout|text/sentiment", {}).get("shadow|slow|shed", 0)
    assert loop.time() - t0 < 1.0
    # 20 taken by the drain task at once, 30 queued, the other 50 shed
    assert sheds == 50
    drain = next(iter(pipe.rollout.drains.values()))
    assert drain.queue.shed == 50 and drain.shed._value.get() >= 50
    await pipe.rollout.close()


async def test_a_failed_variant_dead_letters_only_its_events() -> None:
    topology = _topology({"variants": [{"name": "canary", "model": "sentiment_v2", "percent": 30}]},
                         max_attempts=1)
    calls, broker = Calls(fail={"sentiment_v2:None"}), FakeBroker()
    pipe = RoutePipeline(topology, topology.routes[0], infer=calls, send_all=broker.publish, summary_topic="sum",
                         shadow_producer=FakeBroker)
    recs = [_rec(i) for i in range(100)]
    out = await pipe.process(recs)
    plan = RoutePlan.of(topology, topology.routes[0])
    canary = {r.offset for r in recs if plan.choose("sentiment", r.event).name == "canary"}
    assert 10 < len(canary) < 60
    assert {off for _, off in out.dead} == canary and len(out.ok) == 100 - len(canary)
    dlq = [orjson.loads(r.value) for r in out.records if r.topic == "events.dlq"]
    assert all("variant canary" in d["error"] for d in dlq)
    summary = orjson.loads(next(r.value for r in out.records if r.topic == "sum"))
    assert summary["metrics"]["rollout|text/sentiment"]["variant|canary|errors"] == len(canary)


async def test_routes_without_rollout_have_no_rollout_engine() -> None:
    topology = parse_topology({"models": {"sentiment": {"task": "sentiment", "model": "x"}},
                               "routes": [{"name": "text", "input": "text", "kind": "text", "models": ["sentiment"]}]})
    pipe = RoutePipeline(topology, topology.routes[0], infer=Calls(), send_all=FakeBroker().publish,
                         summary_topic=None)
    assert pipe.rollout is None


def test_closed_rollout_windows_report_the_derived_figures() -> None:
    from topologies.state.analytics import finalize

    sums = fold("sentiment", answers=[("canary", {"label": "POSITIVE", "score": 0.5}, 12.0)],
                pairs=[("next", {"label": "POSITIVE", "score": 0.5}, {"label": "NEGATIVE", "score": 0.25})])
    out = finalize("rollout", sums)
    assert out["shadow|next|agreement_rate"] == 0.0 and out["shadow|next|mean_abs_score_diff"] == 0.25
    assert out["variant|canary|mean_score"] == 0.5 and out["variant|canary|count"] == 1


async def test_a_control_change_applies_between_batches_and_logs_where_it_took_effect() -> None:
    topology = _topology(ROLLOUT)
    calls, broker, shadows = Calls(), FakeBroker(), FakeBroker()
    pipe = RoutePipeline(topology, topology.routes[0], infer=calls, send_all=broker.publish, summary_topic="sum",
                         shadow_producer=lambda: shadows)
    ro = pipe.rollout
    out = await pipe.process([_rec(i) for i in range(100)])
    names = {orjson.loads(r.value)["variant"]["name"] for r in out.records if r.topic == "inference.sentiment"}
    assert names == {"canary", "ft", "sentiment"}
    # promote the canary: every key to it
    assert ro.apply("text/sentiment", {"action": "promote", "variants": [
        {"name": "canary", "model": "sentiment_v2", "percent": 100}]}, offset=7)
    out = await pipe.process([_rec(i) for i in range(100, 200)])
    names = {orjson.loads(r.value)["variant"]["name"] for r in out.records if r.topic == "inference.sentiment"}
    assert names == {"canary"}
    assert ro.changes[-1]["effective"] == {"0": 100} and ro.changes[-1]["control_offset"] == 7
    # a change that fails the config's checks is ignored; a tombstone goes back to the config
    assert not ro.apply("text/sentiment", {"variants": [{"name": "canary", "model": "sentiment_v2",
                                                         "percent": 101}]}, offset=8)
    assert not ro.apply("other/sentiment", None, offset=9)
    assert ro.apply("text/sentiment", None, offset=10)
    out = await pipe.process([_rec(i) for i in range(200, 300)])
    names = {orjson.loads(r.value)["variant"]["name"] for r in out.records if r.topic == "inference.sentiment"}
    assert names == {"canary", "ft", "sentiment"} and ro.changes[-1]["effective"] == {"0": 200}
    await ro.close()
