"""The aggregator agent: per-batch summaries -> recommendation state (Faust tables), and the summary topic.

Route agents send one summary per micro-batch to an internal single-partition
topic. Faust tables here are co-partitioned with it (one partition), so a
single owner holds all affinity state, restored from the tables' changelogs when
it moves; the volume is per batch, not per event, so one partition is not the
bottleneck. Analytics windows are folded from the same topic by
:mod:`topologies.state.windows`; this agent skips their boundary markers.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from typing import Any

import faust
import orjson

from schemas.codec import encode
from schemas.events import Recommendation, RecommendedItem
from schemas.topology import Topology
from topologies.metrics import METRICS
from topologies.state.recommend import rank_items, update_affinity
from topologies.state.analytics import now_ms
from topologies.state.windows import is_marker

__all__ = ["Aggregator"]

log = logging.getLogger(__name__)


class Aggregator:
    """Builds the summary topic, the tables and the agent on ``app``; keeps recent outputs for the dashboard."""

    def __init__(self, app: faust.App, topology: Topology) -> None:
        self.app = app
        self.topology = topology
        self.summary_topic = app.topic(f"{app.conf.id}-summaries", partitions=1, key_serializer="raw",
                                       value_serializer="raw", internal=True)
        self.recs_topic = app.topic(topology.topics.recommendations, key_serializer="raw", value_serializer="raw")
        self.items = app.Table("items", default=dict, partitions=1)
        self.users = app.Table("users", default=dict, partitions=1)
        self._pool: OrderedDict[str, dict[str, float]] | None = None
        self.recent_recs: deque[dict[str, Any]] = deque(maxlen=50)
        app.agent(self.summary_topic, name="aggregator")(self._agent)

    async def _agent(self, stream: Any) -> None:
        async for raw in stream:
            try:
                summary = orjson.loads(raw)
                if self.topology.recommendations.enabled and not is_marker(summary):
                    await self._update_recommendations(summary)
            except Exception:  # never let one summary stop the agent
                log.exception("aggregator: summary skipped")

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
