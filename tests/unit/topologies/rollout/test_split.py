"""The sticky split: stable buckets, shares within a point of the config, one variant per key, shadows sampled apart."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pytest

from schemas.events import TextEvent, VariantInfo
from schemas.topology import parse_topology
from topologies.rollout import RoutePlan, bucket, choose_variant, sticky_value


def _topology(**rollout: Any):
    return parse_topology({
        "models": {
            "sentiment": {"task": "sentiment", "model": "org/s",
                          "multiplex": {"checkpoints": {"ft-a": "/m/a", "ft-b": "/m/b"}}},
            "sentiment_v2": {"task": "sentiment", "model": "org/s2"},
            "sentiment_v3": {"task": "sentiment", "model": "org/s3"},
        },
        "routes": [{"name": "text", "input": "text", "kind": "text", "models": ["sentiment"],
                    "rollout": {"sentiment": rollout}}],
    })


def _plan(**rollout: Any) -> RoutePlan:
    t = _topology(**rollout)
    return RoutePlan.of(t, t.routes[0])


def _events(n: int, users: int | None = None) -> list[TextEvent]:
    return [TextEvent(event_id=f"e{i}", ts=1, text="hi", user_id=f"u{i % users if users else i}") for i in range(n)]


def test_buckets_are_pinned_and_spread() -> None:
    # Pinned: a change here moves every user to another bucket (and so, maybe, another variant).
    assert [bucket(k, "text/sentiment") for k in ("u1", "u2", "e1")] == [4593, 3642, 7957]
    assert bucket("u1", "other/salt") != 4593
    counts = Counter(bucket(f"k{i}", "s") // 1000 for i in range(20_000))
    assert len(counts) == 10 and max(counts.values()) - min(counts.values()) < 400


def test_canary_at_10_percent_of_5000_users_lands_within_2_points() -> None:
    plan = _plan(variants=[{"name": "canary", "model": "sentiment_v2", "percent": 10}])
    got = Counter(plan.choose("sentiment", e).name for e in _events(5000))
    assert set(got) == {"sentiment", "canary"}
    assert abs(got["canary"] / 5000 - 0.10) <= 0.02, got


def test_every_key_is_answered_by_one_variant_only() -> None:
    plan = _plan(sticky_key="user_id", variants=[{"name": "a", "model": "sentiment_v2", "percent": 30},
                                                 {"name": "b", "model": "sentiment_v3", "percent": 20}])
    seen: dict[str, set[str]] = defaultdict(set)
    for e in _events(6000, users=300):
        seen[e.user_id].add(plan.choose("sentiment", e).name)
    assert all(len(v) == 1 for v in seen.values())
    shares = Counter(next(iter(v)) for v in seen.values())
    assert abs(shares["a"] / 300 - 0.3) < 0.07 and abs(shares["b"] / 300 - 0.2) < 0.07


def test_raising_the_last_variant_only_moves_keys_from_the_base() -> None:
    small = _plan(variants=[{"name": "a", "model": "sentiment_v2", "percent": 10},
                            {"name": "c", "model": "sentiment_v3", "percent": 5}])
    large = _plan(variants=[{"name": "a", "model": "sentiment_v2", "percent": 10},
                            {"name": "c", "model": "sentiment_v3", "percent": 25}])
    moved = Counter()
    for e in _events(4000):
        before, after = small.choose("sentiment", e).name, large.choose("sentiment", e).name
        if before != after:
            moved[(before, after)] += 1
    assert set(moved) == {("sentiment", "c")} and 600 < moved[("sentiment", "c")] < 1000


def test_missing_sticky_field_falls_back_to_event_id() -> None:
    e = TextEvent(event_id="e7", ts=1, text="hi")
    assert sticky_value(e, "user_id") == ("e7", True)
    assert sticky_value({"event_id": "e7", "user_id": "u1"}, "user_id") == ("u1", False)
    assert sticky_value(e, "event_id") == ("e7", False)
    plan = _plan(variants=[{"name": "canary", "model": "sentiment_v2", "percent": 50}])
    assert plan.choose("sentiment", e) == plan.choose("sentiment", {"event_id": "e7", "user_id": "e7"})


def test_shadow_sample_is_its_own_and_the_variant_fields_match_the_schema() -> None:
    plan = _plan(variants=[{"name": "canary", "model": "sentiment_v2", "percent": 50}],
                 shadows=[{"name": "next", "model": "sentiment", "checkpoint": "ft-a", "percent": 25},
                          {"name": "all", "model": "sentiment_v3"}])
    events = _events(8000)
    in_next = [e for e in events if any(s.variant.name == "next" for s in plan.shadows_for("sentiment", e))]
    assert abs(len(in_next) / 8000 - 0.25) < 0.02
    assert all(len(plan.shadows_for("sentiment", e)) >= 1 for e in events)  # "all" takes every event
    canary_share = sum(plan.choose("sentiment", e).name == "canary" for e in in_next) / len(in_next)
    assert abs(canary_share - 0.5) < 0.05  # the shadow's sample is not one variant's users
    s = plan.models["sentiment"].shadows[0]
    assert (s.topic, s.queue_size, s.variant.call_options()) == ("inference.sentiment.shadow", 1000,
                                                                 {"multiplexed_model_id": "ft-a"})
    for v in (s.variant, plan.choose("sentiment", events[0])):
        assert VariantInfo.model_validate(v.result_field()).name == v.name


def test_checkpoint_by_an_event_field() -> None:
    plan = _plan(checkpoint_by={"field": "source", "map": {"tenant-a": "ft-a", "tenant-b": "ft-b"}})
    def ev(source: str | None) -> TextEvent:
        return TextEvent(event_id="e", ts=1, text="hi", source=source)
    assert plan.choose("sentiment", ev("tenant-b")).call_options() == {"multiplexed_model_id": "ft-b"}
    assert plan.choose("sentiment", ev("tenant-z")).call_options() == {}
    assert plan.choose("sentiment", ev(None)).checkpoint is None
    assert plan.choose("sentiment", ev("tenant-a")).result_field() == {
        "name": "sentiment", "model_key": "sentiment", "role": "base", "checkpoint": "ft-a"}
    assert plan.has_rollout


def test_a_route_without_rollout_and_the_one_call_form() -> None:
    t = parse_topology({"models": {"sentiment": {"task": "sentiment", "model": "org/s"}},
                        "routes": [{"name": "text", "input": "text", "kind": "text", "models": ["sentiment"]}]})
    plan = RoutePlan.of(t, t.routes[0])
    assert not plan.has_rollout and plan.shadows_for("sentiment", _events(1)[0]) == []
    assert choose_variant(t.routes[0], "sentiment", _events(1)[0]).role == "base"
    t2 = _topology(variants=[{"name": "canary", "model": "sentiment_v2", "percent": 100}])
    assert choose_variant(t2.routes[0], "sentiment", _events(1)[0]).name == "canary"


@pytest.mark.parametrize("percent", [0, 0.01, 33.33, 99.99])
def test_shares_follow_the_hundredths(percent: float) -> None:
    plan = _plan(variants=[{"name": "c", "model": "sentiment_v2", "percent": percent}])
    got = sum(plan.choose("sentiment", e).name == "c" for e in _events(20_000)) / 20_000
    assert abs(got - percent / 100) < 0.015


def test_a_batch_splits_into_one_call_per_variant_and_shadow() -> None:
    plan = _plan(variants=[{"name": "canary", "model": "sentiment_v2", "percent": 30},
                           {"name": "ft", "model": "sentiment", "checkpoint": "ft-a", "percent": 30}],
                 shadows=[{"name": "s", "model": "sentiment", "checkpoint": "ft-b", "percent": 50}])
    events = _events(200)
    groups = plan.split_batch("sentiment", events)
    assert sorted(v.name for v, _ in groups) == ["canary", "ft", "sentiment"]
    assert sorted(i for _, idx in groups for i in idx) == list(range(200))
    for v, idx in groups:
        assert all(plan.choose("sentiment", events[i]) == v for i in idx) and idx == sorted(idx)
    [(shadow, idx)] = plan.shadow_batch("sentiment", events)
    assert shadow.variant.name == "s" and 70 < len(idx) < 130
    assert idx == [i for i, e in enumerate(events) if plan.shadows_for("sentiment", e)]
