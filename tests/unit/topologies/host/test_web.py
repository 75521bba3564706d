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
    recommendations = SimpleNamespace(recent=deque([{"user_id": "u", "items": []}]))
    windows = SimpleNamespace(current=lambda: [{"w": 1}], recent=deque([{"w": 0}]))
    it = SimpleNamespace(live=LiveState(), topology=SimpleNamespace(routes=[SimpleNamespace(name="text")]),
                         started=1.0, stalled=lambda: None, recommendations=recommendations,
                         windows=windows)
    out = summary(it)  # no `totals` attribute: this worker's own counts
    assert set(out) == {"ts", "routes", "detections", "worker", "windows", "recommendations"}
    assert out["worker"] == {"routes": ["text"], "started": 1.0, "stalled": None}
    assert out["windows"] == {"current": [{"w": 1}], "closed": [{"w": 0}]}
    assert out["recommendations"] == [{"user_id": "u", "items": []}]


def test_the_dashboard_page_ships_with_the_package() -> None:
    assert DASHBOARD_HTML.is_file() and "<html" in DASHBOARD_HTML.read_text().lower()


def test_rollout_view_shows_the_latest_closed_and_the_open_window_per_route_model() -> None:
    from topologies.host.web import rollout_view
    from topologies.rollout import fold

    def window(start: int, n: int) -> dict:
        values = fold("sentiment", answers=[("canary", {"label": "POSITIVE", "score": 0.5}, 10.0)] * n,
                      pairs=[("next", {"label": "POSITIVE", "score": 0.5}, {"label": "POSITIVE", "score": 0.4})] * n)
        return {"metric": "rollout", "key": "text/sentiment", "window_start": start, "window_end": start + 2,
                "values": values}

    windows = SimpleNamespace(current=lambda: [window(4, 1)],
                              recent=deque([window(0, 2), window(2, 3), {"metric": "events", "key": "text",
                                                                          "window_start": 2, "values": {}}]))
    route = SimpleNamespace(name="text", rollout={"sentiment": object()})
    it = SimpleNamespace(topology=SimpleNamespace(routes=[route]), windows=windows,
                         routes=SimpleNamespace(runners=[]))
    out = rollout_view(it)["rollouts"]["text/sentiment"]
    assert out["closed"]["window_start"] == 2 and out["closed"]["variants"]["canary"]["count"] == 3
    assert out["closed"]["shadows"]["next"]["agreement_rate"] == 1.0
    assert out["current"]["variants"]["canary"]["count"] == 1 and len(out["recent"]) == 2
