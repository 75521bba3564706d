"""Event-time windows folded from summaries: right windows when shuffled within the grace, late counted
per route and window (nothing dropped), hopping sums equal to offline sums, identical restarts."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import orjson
import pytest

from topologies.state.event_windows import EventWindowFold, window_starts

BASE = 1_700_000_000_000  # ms: event time, not the clock


def events(n: int, partitions: int, *, seed: int, shuffle_ms: int = 2000, gap_ms: int = 50
           ) -> list[tuple[int, int, float]]:
    """``(partition, ts, score)`` in arrival order: per partition ``ts`` rises by ``gap_ms`` and each is
    moved back by up to ``shuffle_ms`` (so events arrive out of order by up to that much)."""
    rng = random.Random(seed)
    out, clock = [], [BASE] * partitions
    for _ in range(n):
        p = rng.randrange(partitions)
        clock[p] += gap_ms
        out.append((p, clock[p] - rng.randrange(shuffle_ms), round(rng.random(), 3)))
    return out


def summaries(evs: list[tuple[int, int, float]], size: int, step: int, *, seed: int, route: str = "text"
              ) -> list[dict[str, Any]]:
    """What route workers write: batches of 1-20 consecutive arrivals, deltas under every window of each ts."""
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(evs):
        batch = evs[i:i + rng.randint(1, 20)]
        i += len(batch)
        windows: dict[str, dict[str, dict[str, float]]] = {}
        max_ts: dict[str, int] = {}
        for p, ts, score in batch:
            for s in window_starts(ts, size, step):
                w = windows.setdefault(str(s), {})
                e = w.setdefault(f"events|{route}", {"in": 0.0})
                e["in"] += 1
                sc = w.setdefault(f"score|{route}", {"sum": 0.0})
                sc["sum"] += score
            max_ts[str(p)] = max(max_ts.get(str(p), 0), ts)
        out.append({"route": route, "ts": max(max_ts.values()), "windows": windows, "max_ts": max_ts})
    return out


def flush(partitions: int, route: str = "text") -> dict[str, Any]:
    """A summary with no events that moves every partition far ahead: closes every window."""
    return {"route": route, "ts": BASE * 2, "windows": {}, "max_ts": {str(p): BASE * 2 for p in range(partitions)}}


def offline(evs: list[tuple[int, int, float]], size: int, step: int) -> dict[int, tuple[float, float]]:
    sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for _, ts, score in evs:
        for s in window_starts(ts, size, step):
            sums[s][0] += 1
            sums[s][1] += score
    return {s: (n, round(total, 6)) for s, (n, total) in sums.items()}


def folded(records: list[Any], route: str = "text") -> dict[int, tuple[float, float]]:
    by: dict[int, dict[str, Any]] = defaultdict(dict)
    for r in records:
        if r.key == route and r.metric in ("events", "score"):
            assert r.window_start not in by or r.metric not in by[r.window_start], "a window emitted twice"
            by[r.window_start][r.metric] = r.values
    return {s: (v["events"]["in"], round(v["score"]["sum"], 6)) for s, v in by.items()}


def run(fold: EventWindowFold, log: list[dict[str, Any]], first_offset: int = 0) -> list[Any]:
    out = []
    for i, s in enumerate(log):
        out += fold.add(s, first_offset + i)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_events_shuffled_within_2s_land_in_their_windows(seed: int) -> None:
    evs = events(3000, 4, seed=seed)
    log = summaries(evs, 5000, 5000, seed=seed) + [flush(4)]
    records = run(EventWindowFold(5000, grace_ms=2000, partitions={"text": 4}), log)
    assert folded(records) == offline(evs, 5000, 5000)
    assert not [r for r in records if r.metric == "late"]


def test_hopping_sums_equal_offline_sums() -> None:
    evs = events(3000, 3, seed=7, gap_ms=20)
    log = summaries(evs, 10_000, 2000, seed=7) + [flush(3)]
    fold = EventWindowFold(10_000, 2000, grace_ms=2000, partitions={"text": 3})
    records = run(fold, log)
    truth = offline(evs, 10_000, 2000)
    assert folded(records) == truth
    assert len(truth) > 10 and all(r.window_end - r.window_start == 10_000 for r in records)
    assert {s % 2000 for s in truth} == {0}


def test_windows_close_only_when_the_watermark_passes_their_end() -> None:
    fold = EventWindowFold(1000, grace_ms=500, partitions={"text": 1})
    w = {"1000": {"events|text": {"in": 1.0}}}
    assert fold.add({"route": "text", "ts": 0, "windows": w, "max_ts": {"0": 1999}}) == []  # watermark 1499
    assert fold.add({"route": "text", "ts": 0, "windows": {}, "max_ts": {"0": 2499}}) == []  # 1999: not past 2000
    [closed] = fold.add({"route": "text", "ts": 7, "windows": {}, "max_ts": {"0": 2500}})  # 2000
    assert (closed.metric, closed.key, closed.window_start, closed.window_end, closed.values, closed.ts) == (
        "events", "text", 1000, 2000, {"in": 1.0}, 7)


def test_events_beyond_the_grace_are_counted_late_per_route_and_window() -> None:
    grace = 1000
    on_time = events(2000, 2, seed=11, shuffle_ms=grace)
    log = summaries(on_time, 5000, 5000, seed=11)
    # late events: each 8-12 s behind its partition's clock, sent in their own summaries mid-stream
    late_truth: dict[int, float] = defaultdict(float)
    rng = random.Random(5)
    mixed: list[dict[str, Any]] = []
    for i, s in enumerate(log):
        mixed.append(s)
        if i % 10 == 5:
            ts = max(s["max_ts"].values()) - rng.randint(8000, 12_000)
            late_truth[ts - ts % 5000] += 1
            mixed.append({"route": "text", "ts": ts, "max_ts": {"0": ts},
                          "windows": {str(ts - ts % 5000): {"events|text": {"in": 1.0}, "score|text": {"sum": 9.0}}}})
    records = run(EventWindowFold(5000, grace_ms=grace, partitions={"text": 2}), mixed + [flush(2)])
    assert folded(records) == offline(on_time, 5000, 5000)  # never folded into the window they missed
    late = [r for r in records if r.metric == "late"]
    assert {r.key for r in late} == {"text"}
    per_window: dict[int, float] = defaultdict(float)
    for r in late:
        for k, v in r.values.items():
            if k.startswith("events@"):
                per_window[int(k.removeprefix("events@"))] += v
        assert r.values["events"] == sum(v for k, v in r.values.items() if k.startswith("events@"))
    n_late = sum(late_truth.values())
    assert dict(per_window) == dict(late_truth) and n_late > 10
    counted = sum(r.values["in"] for r in records if r.metric == "events")
    assert counted + sum(r.values["events"] for r in late) == len(on_time) + n_late  # nothing dropped


def test_late_counts_go_to_the_earliest_open_window() -> None:
    fold = EventWindowFold(1000, partitions={"text": 1})
    fold.add({"route": "text", "ts": 0, "windows": {}, "max_ts": {"0": 5500}})  # watermark 5500
    assert fold.add({"route": "text", "ts": 0, "max_ts": {"0": 2100},
                     "windows": {"2000": {"events|text": {"in": 3.0}}}}) == []
    [late] = fold.add({"route": "text", "ts": 9, "windows": {}, "max_ts": {"0": 6000}})
    assert (late.metric, late.key, late.window_start, late.values) == ("late", "text", 5000,
                                                                       {"events": 3.0, "events@2000": 3.0})


def test_an_idle_partition_holds_the_watermark() -> None:
    def batch(p: int, ts: int) -> dict[str, Any]:
        return {"route": "text", "ts": ts, "max_ts": {str(p): ts},
                "windows": {str(ts - ts % 1000): {"events|text": {"in": 1.0}}}}

    waiting = EventWindowFold(1000, partitions={"text": 2})
    assert run(waiting, [batch(0, t) for t in range(0, 20_000, 100)]) == []  # partition 1: nothing yet
    assert waiting.watermark("text") is None and len(waiting.open["text"]) == 20
    closed = waiting.add(batch(1, 15_050), 200)
    assert [r.window_start for r in closed] == list(range(0, 15_000, 1000))

    idle = EventWindowFold(1000, partitions={"text": 2}, idle_ms=3000)  # left out when 3 s behind
    closed = run(idle, [batch(0, t) for t in range(0, 20_000, 100)])
    assert [r.window_start for r in closed] == list(range(0, 19_000, 1000))
    before = idle.watermark("text")
    idle.add(batch(1, 4_000))  # the idle partition wakes up far behind: late, and the watermark stays
    assert idle.watermark("text") == before
    assert idle.open["text"][19_000]["late|text"] == {"events": 1.0, "events@4000": 1.0}


def test_a_restart_from_any_state_reproduces_identical_windows() -> None:
    evs = events(1500, 3, seed=21)
    log = summaries(evs, 4000, 2000, seed=21)
    late = {"route": "text", "ts": 1, "max_ts": {"0": BASE}, "windows": {str(BASE): {"events|text": {"in": 2.0}}}}
    log = log[:60] + [late] + log[60:] + [flush(3)]

    def fresh() -> EventWindowFold:
        return EventWindowFold(4000, 2000, grace_ms=2000, partitions={"text": 3})

    whole = run(fresh(), log)
    for cut in (1, 30, 61, 62, 100, len(log) - 1):
        first = fresh()
        before = run(first, log[:cut])
        second = fresh()
        second.load(orjson.loads(orjson.dumps(first.state())))  # as stored on the log
        assert second.upto == cut - 1
        after = run(second, log[cut:], first_offset=cut)
        assert [r.model_dump() for r in before + after] == [r.model_dump() for r in whole]
    assert any(r.metric == "late" for r in whole)


def test_routes_have_their_own_watermarks() -> None:
    fold = EventWindowFold(1000, partitions={"a": 1, "b": 1})
    fold.add({"route": "b", "ts": 0, "max_ts": {"0": 500}, "windows": {"0": {"events|b": {"in": 1.0}}}})
    closed = fold.add({"route": "a", "ts": 0, "max_ts": {"0": 5000}, "windows": {"0": {"events|a": {"in": 1.0}}}})
    assert [(r.key, r.window_start) for r in closed] == [("a", 0)]
    assert fold.watermark("b") == 500 and 0 in fold.open["b"]


def test_a_summary_without_windows_is_filed_by_its_ts() -> None:
    fold = EventWindowFold(1000, partitions={"text": 1})
    fold.add({"route": "text", "ts": 2500, "metrics": {"events|text": {"in": 4.0}}})
    assert fold.open["text"] == {2000: {"events|text": {"in": 4.0}}}


def test_unknown_routes_count_the_partitions_they_have_shown() -> None:
    fold = EventWindowFold(1000)
    fold.add({"route": "x", "ts": 0, "max_ts": {"0": 3000, "1": 1500}, "windows": {}})
    assert fold.watermark("x") == 1500


def test_bad_window_shapes_are_refused() -> None:
    for size, step, grace in ((1000, 300, 0), (1000, 2000, 0), (0, None, 0), (1000, None, -1)):
        with pytest.raises(ValueError, match="need 0 < step <= size"):
            EventWindowFold(size, step, grace)
