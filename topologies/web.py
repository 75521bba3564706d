"""HTTP views on the Faust web port: /metrics, /healthz, /readyz and the JSON the dashboard reads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from topologies.metrics import render

if TYPE_CHECKING:
    from topologies.app import InfertideApp

__all__ = ["register_views"]


def register_views(it: InfertideApp) -> None:
    """Adds the views to ``it.app``."""
    app = it.app

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
        assigned = len(app.consumer.assignment()) if app.consumer else 0
        ready = bool(app.consumer) and not app.rebalancing
        return self.json({"ready": ready, "assigned_partitions": assigned}, status=200 if ready else 503)

    @app.page("/api/analytics")
    async def analytics(self: Any, request: Any) -> Any:
        return self.json({"current": it.aggregator.current_windows(),
                          "closed": list(it.aggregator.recent_windows)[-50:]})

    @app.page("/api/recommendations")
    async def recommendations(self: Any, request: Any) -> Any:
        return self.json({"recent": list(it.aggregator.recent_recs)})
