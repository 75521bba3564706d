"""Summaries with event-time windows: each counted event's deltas under the windows of its ts, the largest ts
per partition, batch totals as in log mode; folded, they equal sums computed offline from the events."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import orjson

from schemas.codec import encode
from schemas.events import TextEvent
from schemas.summary import BatchSummary
from schemas.topology import parse_topology
from topologies.engine.batch import BatchProcessor
from topologies.engine.records import InputRecord
from topologies.state.event_windows import EventWindowFold, window_starts

T0 = 1_600_000_000_000


def _topology(window: dict[str, Any] | None) -> Any:
    return parse_topology({
        "models": {"sentiment": {"task": "sentiment", "model": "x"}},
        "routes": [{"name": "text", "input": "text", "kind": "text", "models": ["sentiment"]}],
        "analytics": {"window": window} if window else {},
    })


def _rec(offset: int, ts: int, partition: int = 0, counted: bool = True) -> InputRecord:
    value = encode(TextEvent(event_id=f"e{partition}-{offset}", ts=ts, text=f"text {offset}"))
    return InputRecord("events.text", partition, offset, None, value, counted=counted)


def _summary(proc: BatchProcessor, records: list[InputRecord], label: str = "POSITIVE") -> dict[str, Any]:
    batch = proc.decode(records)
    reply = {"ok": True, "result": {"label": label, "score": 0.5}, "model": {"name": "m", "version": "1"},
             "inference_ms": 1.0}
    out = proc.finish(batch, {"sentiment": ([reply] * len(batch.valid), 2.0)})
    [summary] = [orjson.loads(r.value) for r in out.records if r.topic == "sums"]
    BatchSummary.model_validate(summary)  # the contract
    return summary


def test_each_event_is_filed_under_the_window_of_its_ts() -> None:
    proc = BatchProcessor(_topology({"size_s": 10, "grace_s": 2}), _topology(None).routes[0], "sums")
    records = [_rec(0, T0 + 1_000), _rec(1, T0 + 9_999), _rec(2, T0 + 10_000), _rec(0, T0 + 25_000, partition=1),
               InputRecord("events.text", 0, 3, None, b"not json"), _rec(4, T0 + 3_000, counted=False)]
    s = _summary(proc, records)
    assert s["max_ts"] == {"0": T0 + 10_000, "1": T0 + 25_000}
    w = s["windows"]
    assert sorted(w) == [str(T0), str(T0 + 10_000), str(T0 + 20_000)]
    assert w[str(T0)]["events|text"] == {"in": 2.0, "out": 2.0}
    # the undecodable record: under its partition's largest ts (T0 + 10 s), counted in and dead-lettered
    assert w[str(T0 + 10_000)]["events|text"] == {"in": 2.0, "out": 1.0, "dlq": 1.0}
    assert w[str(T0 + 20_000)]["events|text"] == {"in": 1.0, "out": 1.0}
    assert w[str(T0)]["sentiment|text"]["count.POSITIVE"] == 2.0
    assert sum(v["latency|text"]["count"] for v in w.values()) == 4.0
    # the batch's totals are what log mode writes
    log_proc = BatchProcessor(_topology(None), _topology(None).routes[0], "sums")
    log_summary = _summary(log_proc, records)
    assert "windows" not in log_summary and "max_ts" not in log_summary
    assert s["metrics"]["events|text"] == log_summary["metrics"]["events|text"] == {"in": 5.0, "out": 4.0, "dlq": 1.0}


def test_hopping_windows_get_every_event_of_their_span() -> None:
    proc = BatchProcessor(_topology({"size_s": 6, "step_s": 2}), _topology(None).routes[0], "sums")
    s = _summary(proc, [_rec(0, T0 + 5_500)])
    assert sorted(int(k) - T0 for k in s["windows"]) == [0, 2_000, 4_000]
    assert all(v["events|text"] == {"in": 1.0, "out": 1.0} for v in s["windows"].values())


def test_a_batch_without_a_readable_event_uses_the_routes_last_ts() -> None:
    proc = BatchProcessor(_topology({"size_s": 10}), _topology(None).routes[0], "sums")
    _summary(proc, [_rec(0, T0 + 42_000)])
    s = _summary(proc, [InputRecord("events.text", 1, 0, None, b"{}")])
    assert s["max_ts"] == {} and list(s["windows"]) == [str(T0 + 40_000)]


def test_route_summaries_fold_to_offline_sums() -> None:
    """Events shuffled within 2 s, in batches from 3 partitions, through the batch logic and the fold."""
    topology = _topology({"size_s": 4, "step_s": 2, "grace_s": 2})
    proc = BatchProcessor(topology, topology.routes[0], "sums")
    rng = random.Random(3)
    clock, offsets, arrivals = [T0] * 3, [0] * 3, []
    for _ in range(1200):
        p = rng.randrange(3)
        clock[p] += 30
        arrivals.append(_rec(offsets[p], clock[p] - rng.randrange(2000), partition=p))
        offsets[p] += 1
    fold = EventWindowFold(4000, 2000, 2000, partitions={"text": 3})
    closed, i = [], 0
    while i < len(arrivals):
        batch = arrivals[i:i + rng.randint(1, 40)]
        i += len(batch)
        closed += fold.add(_summary(proc, batch), i)
    closed += fold.add({"route": "text", "ts": 0, "windows": {}, "max_ts": {str(p): T0 * 2 for p in range(3)}})
    truth: dict[int, float] = defaultdict(float)
    for rec in arrivals:
        for start in window_starts(orjson.loads(rec.value)["ts"], 4000, 2000):
            truth[start] += 1
    got = {r.window_start: r.values["in"] for r in closed if (r.metric, r.key) == ("events", "text")}
    assert got == dict(truth)
    assert not [r for r in closed if r.metric == "late"]


def test_video_deltas_land_in_the_window_they_name() -> None:
    from topologies.state.analytics import EventDeltas
    from topologies.video.fold import WindowDelta, add_to

    deltas = EventDeltas(4000, 2000, default_at=T0)
    add_to(deltas, [WindowDelta(T0 - 2000, "video", "cam", "tracks", 2.0),
                    WindowDelta(T0, "video", "cam", "tracks", 1.0)])
    assert deltas.as_windows() == {str(T0 - 2000): {"video|cam": {"tracks": 2.0}},
                                   str(T0): {"video|cam": {"tracks": 1.0}}}
    assert deltas.as_dict() == {"video|cam": {"tracks": 3.0}}
