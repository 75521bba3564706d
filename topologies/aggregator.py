"""The aggregator agent: per-batch summaries -> windowed analytics tables and recommendation state.

Route agents send one summary per micro-batch to an internal single-partition
topic. Faust tables here are co-partitioned with it (one partition), so a
single owner holds all windows and all affinity state; the volume is per batch,
not per event, so one partition is not the bottleneck. Closed (expired) windows
are emitted to the analytics topic through Faust's ``on_window_close``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import faust
import orjson

from schemas.codec import encode
from schemas.events import AnalyticsRecord, Recommendation, RecommendedItem
from schemas.topology import Topology
from topologies.analytics import finalize, merge, split_key
from topologies.metrics import METRICS
from topologies.recommend import rank_items, update_affinity
from topologies.records import now_ms

__all__ = ["Aggregator"]

log = logging.getLogger(__name__)


def _window_clock(size_s: float) -> Callable[[], float]:
    """The wall clock snapped to the middle of its tumbling window (one timestamp per window).

    Faust's ``relative_to_now`` is the partition's latest record time, not the clock.
    """

    def clock() -> float:
        return (math.floor(time.time() / size_s) + 0.5) * size_s

    return clock


class Aggregator:
    """Builds the summary topic, the tables and the agent on ``app``; keeps recent outputs for the dashboard."""

    def __init__(self, app: faust.App, topology: Topology) -> None:
        self.app = app
        self.topology = topology
        cfg = topology.analytics
        self.summary_topic = app.topic(f"{app.conf.id}-summaries", partitions=1, key_serializer="raw",
                                       value_serializer="raw", internal=True)
        self.analytics_topic = app.topic(topology.topics.analytics, key_serializer="raw", value_serializer="raw")
        self.recs_topic = app.topic(topology.topics.recommendations, key_serializer="raw", value_serializer="raw")
        # Windows follow the aggregator's clock, not the summaries' timestamps: Faust closes a
        # window on wall-clock expiry, so a summary arriving after its event-time window closed
        # would be counted nowhere. On the aggregator's clock every summary lands in a window
        # that is still open, and the emitted windows add up to everything that flowed.
        self.windows = (
            app.Table("analytics", default=dict, partitions=1, on_window_close=self._on_window_close)
            .tumbling(cfg.window_s, expires=cfg.expires_s)
        )
        self._clock = _window_clock(cfg.window_s)
        self.items = app.Table("items", default=dict, partitions=1)
        self.users = app.Table("users", default=dict, partitions=1)
        self._pool: OrderedDict[str, dict[str, float]] | None = None
        self.recent_windows: deque[dict[str, Any]] = deque(maxlen=200)
        self.recent_recs: deque[dict[str, Any]] = deque(maxlen=50)
        app.agent(self.summary_topic, name="aggregator")(self._agent)

    async def _agent(self, stream: Any) -> None:
        async for raw in stream:
            try:
                summary = orjson.loads(raw)
                self._update_windows(summary.get("metrics", {}))
                if self.topology.recommendations.enabled:
                    await self._update_recommendations(summary)
            except Exception:  # never let one summary stop the agent
                log.exception("aggregator: summary skipped")

    # -- analytics -----------------------------------------------------------------------

    def _update_windows(self, metrics: dict[str, dict[str, float]]) -> None:
        if not self.topology.analytics.enabled:
            return
        # One instant per summary: reading and writing a key at two instants could straddle a
        # window boundary and copy one window's sums into the next.
        windows = self.windows.relative_to(self._clock())
        for key, delta in metrics.items():
            windows[key] = merge(windows[key].value(), delta)

    async def _on_window_close(self, key: Any, value: Any) -> None:
        table_key, (start, end) = key
        metric, sub = split_key(table_key)
        record = AnalyticsRecord(metric=metric, key=sub or None, window_start=int(start * 1000),
                                 window_end=int(end * 1000), values=finalize(metric, value or {}), ts=now_ms())
        self.recent_windows.append(record.model_dump())
        METRICS.windows_emitted.labels(metric).inc()
        await self.analytics_topic.send(key=table_key.encode(), value=encode(record))

    def current_windows(self) -> list[dict[str, Any]]:
        """Every window still held (open or not yet expired), newest first, with derived values."""
        out = []
        for (table_key, (start, end)), value in list(self.windows.table.data.items()):
            metric, sub = split_key(table_key)
            out.append({"metric": metric, "key": sub, "window_start": int(start * 1000),
                        "window_end": int(end * 1000), "values": finalize(metric, value)})
        out.sort(key=lambda w: (-w["window_start"], w["metric"], w["key"]))
        return out

    # -- recommendations -----------------------------------------------------------------

    def _item_pool(self) -> OrderedDict[str, dict[str, float]]:
        if self._pool is None:  # rebuilt from the recovered table after a restart
            rows = sorted(self.items.items(), key=lambda kv: kv[1].get("ts", 0))
            self._pool = OrderedDict((k, v.get("labels", {})) for k, v in rows)
        return self._pool

    async def _update_recommendations(self, summary: dict[str, Any]) -> None:
        rcfg = self.topology.recommendations
        pool = self._item_pool()
        for item in summary.get("items", []):
            item_id = item["item_id"]
            labels = {**self.items[item_id].get("labels", {}), **item["labels"]}
            self.items[item_id] = {"labels": labels, "ts": summary["ts"]}
            pool[item_id] = labels
            pool.move_to_end(item_id)
            while len(pool) > rcfg.item_pool_size:
                old, _ = pool.popitem(last=False)
                self.items.pop(old, None)
        changed: dict[str, str] = {}
        for eng in summary.get("engagements", []):
            labels = pool.get(eng["item_id"])
            if not labels:
                continue
            state = self.users[eng["user_id"]]
            seen = [i for i in state.get("seen", []) if i != eng["item_id"]][-49:] + [eng["item_id"]]
            affinity = update_affinity(state.get("affinity", {}), labels, float(eng["weight"]), rcfg.affinity_decay)
            self.users[eng["user_id"]] = {"affinity": affinity, "seen": seen}
            changed[eng["user_id"]] = eng["event_id"]
        for user_id, trigger in changed.items():
            await self._emit_recommendation(user_id, trigger)

    async def _emit_recommendation(self, user_id: str, trigger: str) -> None:
        state = self.users[user_id]
        ranked = rank_items(state["affinity"], self._item_pool(), set(state.get("seen", [])),
                            self.topology.recommendations.top_k)
        if not ranked:
            return
        rec = Recommendation(user_id=user_id, ts=now_ms(), items=[RecommendedItem(**r) for r in ranked],
                             affinity=dict(sorted(state["affinity"].items(), key=lambda kv: -abs(kv[1]))[:10]),
                             trigger_event_id=trigger)
        self.recent_recs.append(rec.model_dump())
        METRICS.recommendations.inc()
        await self.recs_topic.send(key=user_id.encode(), value=encode(rec))
