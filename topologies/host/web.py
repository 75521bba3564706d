"""HTTP views on the Faust web port: /metrics, /healthz, /readyz and the JSON the dashboard reads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from topologies.metrics import render

if TYPE_CHECKING:
    from topologies.host.app import InfertideApp

__all__ = ["DASHBOARD_HTML", "latest_per_user", "recent_recommendations", "register_views", "rollout_view", "summary",
           "with_system_totals"]

DASHBOARD_HTML = Path(__file__).resolve().parent / "static" / "dashboard.html"


def with_system_totals(routes: dict[str, Any], system: dict[str, Any]) -> dict[str, Any]:
    """This worker's live route view with the counts and latencies of all workers put in its place
    (this worker's own counts stay under ``worker``); series and latest results stay this worker's."""
    out = {}
    for name in {*routes, *system}:
        mine = routes.get(name) or {"in": 0, "out": 0, "dlq": 0, "in_per_s": 0, "out_per_s": 0, "series": [],
                                    "latest": [], "labels": {}, "latency_ms": {"p50": None, "p90": None,
                                                                              "p99": None, "samples": 0}}
        total = system.get(name)
        out[name] = {**mine, "worker": {k: mine.get(k, 0) for k in ("in", "out", "dlq")}}
        if total is not None:
            out[name] |= {k: total[k] for k in ("in", "out", "dlq")} | {"scope": "all workers"}
            if total["latency_ms"]["samples"]:
                out[name]["latency_ms"] = total["latency_ms"]
    return out


def summary(it: InfertideApp) -> dict[str, Any]:
    """Everything the dashboard polls, in one JSON object (route counts: all workers)."""
    live = it.live.snapshot()
    totals = getattr(it, "totals", None)
    if totals is not None:
        live["routes"] = with_system_totals(live["routes"], totals.snapshot())
    return {**live, "worker": {"routes": [r.name for r in it.topology.routes], "started": it.started,
                               "stalled": it.stalled()},
            "windows": windows(it, 200, 40),
            "recommendations": latest_per_user(recent_recommendations(it))}


def windows(it: InfertideApp, current: int, closed: int) -> dict[str, list[dict[str, Any]]]:
    """The open analytics window and the last closed ones (held by the summary topic's owner only)."""
    w = it.windows
    if w is None:
        return {"current": [], "closed": []}
    return {"current": w.current()[:current], "closed": list(w.recent)[-closed:]}


def rollout_view(it: InfertideApp, closed: int = 50) -> dict[str, Any]:
    """``/api/rollout``: per ``<route>/<model>`` with a rollout, its last closed window and the open one, as
    :func:`topologies.rollout.report` shapes them (variants: count, errors, latency p50 / p99, labels, mean
    score; shadows: pairs, agreement, mean absolute score difference, confusion, shed, errors), and this
    worker's shadow queues. Windows are held by the summary topic's owner only (as ``/api/analytics``)."""
    from topologies.rollout import METRIC, report

    w = windows(it, 10_000, 10_000)
    out: dict[str, dict[str, Any]] = {}
    for route in it.topology.routes:
        for model in route.rollout:
            out[f"{route.name}/{model}"] = {"route": route.name, "model": model, "closed": None, "current": None,
                                            "recent": []}
    for scope, records in (("closed", w["closed"]), ("current", w["current"])):
        for rec in records:
            if rec.get("metric") != METRIC or not rec.get("key"):
                continue
            entry = out.setdefault(rec["key"], {"route": rec["key"].partition("/")[0],
                                                "model": rec["key"].partition("/")[2],
                                                "closed": None, "current": None, "recent": []})
            view = {"window_start": rec["window_start"], "window_end": rec["window_end"], **report(rec["values"])}
            if scope == "current":
                entry["current"] = view
            else:
                prev = entry["closed"]
                if prev is None or view["window_start"] >= prev["window_start"]:
                    entry["closed"] = view
                entry["recent"] = [*entry["recent"], view][-closed:]
    queues, changes = {}, {}
    for runner in getattr(it.routes, "runners", []):
        ro = getattr(runner.pipeline, "rollout", None)
        if ro is not None:
            queues.update({f"{runner.route.name}/{k}": v for k, v in ro.stats().items()})
            changes[runner.route.name] = ro.changes[-50:]  # this worker's applied changes, with where they took effect
    return {"rollouts": out, "shadow_queues": queues, "changes": changes, "windows_here": it.windows is not None and bool(
        w["current"] or w["closed"])}


def recent_recommendations(it: InfertideApp) -> list[dict[str, Any]]:
    """The last recommendations this worker's fold committed (it folds while it owns the summary topic)."""
    recs = getattr(it, "recommendations", None)
    return list(recs.recent) if recs is not None else []


def latest_per_user(recs: Any, n: int = 10) -> list[dict[str, Any]]:
    """The newest recommendation of each user, newest users last, at most ``n`` (one row per user)."""
    latest: dict[Any, dict[str, Any]] = {}
    for rec in recs:
        latest.pop(rec.get("user_id"), None)  # re-insert: order follows each user's newest
        latest[rec.get("user_id")] = rec
    return list(latest.values())[-n:]


def register_views(it: InfertideApp) -> None:
    """Adds the views to ``it.app``, and the task that tails the summary topic for the all-worker totals."""
    from topologies.kafka_settings import aiokafka_kwargs
    from topologies.state.totals import SystemTotals

    app = it.app
    it.totals = SystemTotals(it.internal.summary.get_topic_name(), aiokafka_kwargs(it.topology.kafka))

    @app.task
    async def tail_totals() -> None:
        await it.totals.run()

    @app.page("/metrics")
    async def metrics(self: Any, request: Any) -> Any:
        return self.bytes(render(), content_type="text/plain; version=0.0.4")

    @app.page("/healthz")
    async def healthz(self: Any, request: Any) -> Any:
        # Liveness watches progress, not just the port: a stalled agent keeps the port open.
        reason = it.stalled()
        return self.json({"ok": reason is None, "reason": reason}, status=200 if reason is None else 503)

    @app.page("/readyz")
    async def readyz(self: Any, request: Any) -> Any:
        ready, assigned = it.ready()
        ready = ready and not app.rebalancing
        return self.json({"ready": ready, "assigned_partitions": assigned}, status=200 if ready else 503)

    @app.page("/api/analytics")
    async def analytics(self: Any, request: Any) -> Any:
        return self.json(windows(it, 10_000, 50))

    @app.page("/api/rollout")
    async def rollout(self: Any, request: Any) -> Any:
        return self.json(rollout_view(it))

    @app.page("/api/recommendations")
    async def recommendations(self: Any, request: Any) -> Any:
        return self.json({"recent": recent_recommendations(it)})

    @app.page("/api/summary")
    async def api_summary(self: Any, request: Any) -> Any:
        return self.json(summary(it))

    # Read per request: the page is small, and an edited file shows without a restart.
    @app.page("/")
    async def index(self: Any, request: Any) -> Any:
        return self.html(DASHBOARD_HTML.read_text())

    @app.page("/dashboard")
    async def dashboard(self: Any, request: Any) -> Any:
        return self.html(DASHBOARD_HTML.read_text())
