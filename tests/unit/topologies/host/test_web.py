"""The dashboard's JSON: newest recommendation per user, and the summary assembled from a worker's parts."""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace

from topologies.host.live import LiveState
from topologies.host.web import DASHBOARD_HTML, latest_per_user, summary


def test_latest_per_user_keeps_each_users_newest_in_order() -> None:
    recs = [{"user_id": "a", "n": 1}, {"user_id": "b", "n": 2}, {"user_id": "a", "n": 3}]
    assert latest_per_user(recs) == [{"user_id": "b", "n": 2}, {"user_id": "a", "n": 3}]
    assert [r["user_id"] for r in latest_per_user([{"user_id": str(i)} for i in range(20)], n=3)] == ["17", "18", "19"]


def test_summary_has_every_part_the_dashboard_reads() -> None:
    aggregator = SimpleNamespace(recent_recs=deque([{"user_id": "u", "items": []}]))
    windows = SimpleNamespace(current=lambda: [{"w": 1}], recent=deque([{"w": 0}]))
    it = SimpleNamespace(live=LiveState(), topology=SimpleNamespace(routes=[SimpleNamespace(name="text")]),
                         started=1.0, stalled=lambda: None, aggregator=aggregator, windows=windows)
    out = summary(it)  # no `totals` attribute: this worker's own counts
    assert set(out) == {"ts", "routes", "detections", "worker", "windows", "recommendations"}
    assert out["worker"] == {"routes": ["text"], "started": 1.0, "stalled": None}
    assert out["windows"] == {"current": [{"w": 1}], "closed": [{"w": 0}]}
    assert out["recommendations"] == [{"user_id": "u", "items": []}]


def test_the_dashboard_page_ships_with_the_package() -> None:
    assert DASHBOARD_HTML.is_file() and "<html" in DASHBOARD_HTML.read_text().lower()
