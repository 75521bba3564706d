"""The dashboard's live state: counts per event (not per model result), bounded memory, snapshot shape."""

from __future__ import annotations

import time

from schemas.events import TextEvent
from topologies.host.live import LiveState


def _text(i: int, age_ms: float = 0.0) -> TextEvent:
    return TextEvent(event_id=f"e{i}", ts=int(time.time() * 1000 - age_ms), text="fine", user_id="u", item_id=f"i{i}")


def _sentiment(label: str) -> dict:
    return {"label": label, "score": 0.9}


def test_an_event_with_two_results_counts_once_out() -> None:
    live = LiveState()
    ev = _text(1, age_ms=250)
    live.observe("text", 2, 1, [("sentiment", ev, _sentiment("POSITIVE")), ("echo", ev, {"echo": True})])
    snap = live.snapshot()["routes"]["text"]
    assert (snap["in"], snap["out"], snap["dlq"]) == (2, 1, 1)
    assert snap["latency_ms"]["samples"] == 1 and snap["latency_ms"]["p50"] >= 250
    assert snap["labels"]["sentiment"] == {"POSITIVE": 1}
    assert snap["latest"][-1]["event_id"] == "e1" and snap["latest"][-1]["task"] == "echo"


def test_series_covers_the_horizon_and_rates_average_the_window() -> None:
    live = LiveState(horizon_s=10, rate_window_s=5)
    live.observe("text", 10, 0, [("sentiment", _text(i), _sentiment("NEGATIVE")) for i in range(10)])
    snap = live.snapshot()["routes"]["text"]
    assert len(snap["series"]) == 10 and snap["series"][-1][1:] == [10, 10, 0]
    assert snap["in_per_s"] == 2.0 and snap["out_per_s"] == 2.0


def test_memory_stays_bounded() -> None:
    live = LiveState()
    for batch in range(30):
        live.observe("text", 100, 0, [("sentiment", _text(batch * 100 + i), _sentiment(f"L{batch * 100 + i}"))
                                      for i in range(100)])
    route = live.routes["text"]
    assert len(route.latency_ms) == route.latency_ms.maxlen == 2000
    assert len(route.latest) == 10 and len(route.labels["sentiment"]) == 200  # _MAX_LABELS distinct labels
    assert route.totals["in"] == 3000 and len(live.snapshot()["routes"]["text"]["latest"]) == 5
