"""Frame sampling, analytics windows' derived values and recommendation scoring (pure functions)."""

from __future__ import annotations

import pytest

from schemas.topology import SamplingConfig
from topologies.state.analytics import Deltas, finalize, merge, percentile
from topologies.state.recommend import engagement_weight, item_labels, rank_items, update_affinity
from topologies.engine.sampling import FrameSampler


def test_sampler_every_nth_frame_per_stream() -> None:
    s = FrameSampler(SamplingConfig(every_n=3, max_lag_ms=None))
    kept = [i for i in range(10) if s.decide("a", i, i * 33, 0, 0) == "keep"]
    assert kept == [0, 3, 6, 9]


def test_sampler_caps_fps_by_pts_per_stream_independently() -> None:
    s = FrameSampler(SamplingConfig(every_n=1, max_fps=10, max_lag_ms=None))  # >= 100 ms apart
    a = [i for i in range(30) if s.decide("a", i, i * 33, 0, 0) == "keep"]
    b = [i for i in range(4) if s.decide("b", i, i * 33, 0, 0) == "keep"]
    assert a == [0, 4, 8, 12, 16, 20, 24, 28] and b == [0]


def test_sampler_drops_frames_older_than_the_lag() -> None:
    s = FrameSampler(SamplingConfig(every_n=1, max_lag_ms=1000))
    assert s.decide("a", 0, 0, ts_ms=0, now_ms=5000) == "lag"
    assert s.decide("a", 1, 33, ts_ms=4500, now_ms=5000) == "keep"


def test_latency_histogram_percentiles_and_merge() -> None:
    d = Deltas()
    for ms in [3] * 50 + [40] * 45 + [900] * 5:
        d.latency("text", ms)
    value = merge(None, d.as_dict()["latency|text"])
    value = merge(value, {"count": 0})
    # Interpolated inside the bucket: 3 ms lies in (2, 5], 40 ms in (35, 50], 900 ms in (750, 1000].
    assert percentile(value, 0.5) == 5 and percentile(value, 0.9) == 48.3 and percentile(value, 0.99) == 950
    same_bucket = Deltas()
    for ms in range(301, 500):  # all in (300, 400] and (400, 500]: quantiles still differ
        same_bucket.latency("t", ms)
    one = same_bucket.as_dict()["latency|t"]
    assert percentile(one, 0.5) < percentile(one, 0.9) < percentile(one, 0.99) <= 500
    out = finalize("latency", value)
    assert out["count"] == 100 and out["mean_ms"] == (150 + 1800 + 4500) / 100


def test_sentiment_window_reports_counts_and_mean_scores() -> None:
    d = Deltas()
    for label, score in [("POSITIVE", 0.9), ("POSITIVE", 0.7), ("NEGATIVE", 0.6)]:
        d.add("sentiment", "text", f"count.{label}")
        d.add("sentiment", "text", f"score_sum.{label}", score)
    out = finalize("sentiment", d.as_dict()["sentiment|text"])
    assert out == pytest.approx({"POSITIVE.count": 2, "POSITIVE.mean_score": 0.8, "NEGATIVE.count": 1,
                                 "NEGATIVE.mean_score": 0.6})


def test_engagement_weight_follows_sentiment() -> None:
    assert engagement_weight("sentiment", {"label": "POSITIVE", "score": 0.8}) == 0.8
    assert engagement_weight("sentiment", {"label": "NEGATIVE", "score": 0.8}) == -0.8
    assert engagement_weight("detection", {}) == 1.0


def test_recommendations_rank_matching_items_with_reasons() -> None:
    dog = item_labels("tagging", {"tags": [{"label": "dog", "score": 0.9}, {"label": "park", "score": 0.3}]})
    cat = item_labels("tagging", {"tags": [{"label": "cat", "score": 0.9}]})
    car = item_labels("detection", {"boxes": [{"label": "car", "score": 0.8}, {"label": "car", "score": 0.5}]})
    assert car == {"class:car": 0.8}
    affinity = update_affinity({}, dog, 1.0, 0.9)
    affinity = update_affinity(affinity, cat, -0.5, 0.9)  # disliked cats
    items = {"d2": {"tag:dog": 0.8}, "c2": {"tag:cat": 1.0}, "car": car, "seen": {"tag:dog": 1.0}}
    ranked = rank_items(affinity, items, exclude={"seen"}, top_k=5)
    assert [r["item_id"] for r in ranked] == ["d2"]
    assert ranked[0]["reasons"][0].startswith("tag:dog +") and 0 < ranked[0]["score"] <= 1


def test_dashboard_lists_one_row_per_user() -> None:
    from topologies.host.web import latest_per_user

    recs = [{"user_id": u, "n": i} for i, u in enumerate(["a", "b", "a", "c", "b", "a"])]
    assert [(r["user_id"], r["n"]) for r in latest_per_user(recs)] == [("c", 3), ("b", 4), ("a", 5)]
    assert [r["user_id"] for r in latest_per_user(recs, n=2)] == ["b", "a"]


def test_totals_add_up_every_workers_summaries() -> None:
    from topologies.state.totals import SystemTotals
    from topologies.host.web import with_system_totals

    totals = SystemTotals("s", {})
    for worker_in, latency in ((60, [120.0] * 60), (40, [480.0] * 40)):  # two workers' batch summaries
        d = Deltas()
        d.add("events", "text", "in", worker_in)
        d.add("events", "text", "out", worker_in)
        for ms in latency:
            d.latency("text", ms)
        totals.add({"route": "text", "metrics": d.as_dict()})
    snap = totals.snapshot()["text"]
    assert (snap["in"], snap["out"], snap["dlq"]) == (100, 100, 0)
    assert snap["latency_ms"]["samples"] == 100 and snap["latency_ms"]["p50"] < 150 < snap["latency_ms"]["p90"]
    mine = {"text": {"in": 60, "out": 60, "dlq": 0, "series": [[1, 2, 3, 4]], "latency_ms": {"p50": 1.0}}}
    view = with_system_totals(mine, totals.snapshot())
    assert view["text"]["in"] == 100 and view["text"]["worker"]["in"] == 60 and view["text"]["series"]
    only_other = with_system_totals({}, totals.snapshot())["text"]  # routes this worker never saw
    assert only_other["in"] == 100 and only_other["series"] == [] and only_other["worker"]["in"] == 0
