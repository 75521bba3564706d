"""The recommendation state folded from the summary log, in log order (pure: no Kafka, no clock).

Item profiles (the recent item pool) and user affinities are a function of the summaries read so far and
nothing else, so folding the same log from the same rows gives the same state and the same
recommendations, byte for byte: a recommendation's ``ts`` is its summary's, not the fold's clock, and the
pool's order is the log position of each item's last update (kept in its row), not a clock either.
:mod:`topologies.state.recommendations` runs it on Kafka and commits its rows with its position.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.events import Recommendation, RecommendedItem
from schemas.recommend_state import POSITION_KEY, ItemRow, PositionRow, UserRow, item_key, user_key
from schemas.summary import BatchSummary
from schemas.topology import RecommendationsConfig
from topologies.state.recommend import rank_items, update_affinity

__all__ = ["RecommendationFold", "Step", "SEEN_KEPT"]

log = logging.getLogger(__name__)

SEEN_KEPT = 50  # items a user engaged with last, never recommended to them again


@dataclass
class Step:
    """What folding some summaries changed: recommendations to emit, rows to write (None: a tombstone)."""

    recommendations: list[Recommendation] = field(default_factory=list)
    rows: dict[str, bytes | None] = field(default_factory=dict)

    def extend(self, other: Step) -> None:
        self.recommendations.extend(other.recommendations)
        self.rows.update(other.rows)  # a compacted topic keeps a key's last value: the last write is enough


class RecommendationFold:
    """Items and users folded from summaries (``batch_summary.v1`` as dicts); see the module docstring.

    Args:
        cfg: the topology's ``recommendations:`` section.
    """

    def __init__(self, cfg: RecommendationsConfig) -> None:
        self.cfg = cfg
        self.items: OrderedDict[str, ItemRow] = OrderedDict()  # oldest update first: the pool
        self.users: dict[str, UserRow] = {}
        self.position: int | None = None  # the next summary offset to fold; None: from the log's start

    # -- rows ---------------------------------------------------------------------------------

    @classmethod
    def restored(cls, cfg: RecommendationsConfig, rows: Mapping[str, bytes | None]) -> RecommendationFold:
        """A fold holding the state topic's rows (``key -> value``, the last value of each key)."""
        fold = cls(cfg)
        items = []
        for key, value in rows.items():
            if value is None:
                continue
            kind, _, ident = key.partition("|")
            if key == POSITION_KEY:
                fold.position = PositionRow.model_validate_json(value).offset
            elif kind == "item":
                items.append((ident, ItemRow.model_validate_json(value)))
            elif kind == "user":
                fold.users[ident] = UserRow.model_validate_json(value)
        items.sort(key=lambda kv: kv[1].at)
        fold.items.update(items)
        return fold

    def rows(self) -> dict[str, bytes]:
        """Every row of the state (what the state topic holds once compacted)."""
        out = {item_key(k): _dump(v) for k, v in self.items.items()}
        out.update({user_key(k): _dump(v) for k, v in self.users.items()})
        if self.position is not None:
            out[POSITION_KEY] = _dump(PositionRow(offset=self.position))
        return out

    # -- folding ------------------------------------------------------------------------------

    def feed(self, raw: bytes | None, offset: int) -> Step:
        """Fold the record read at ``offset`` as it is on the log: a summary is folded, anything else (the
        analytics folds' window markers and snapshots, a record that is not a valid ``batch_summary.v1``)
        only moves the position."""
        try:
            value = orjson.loads(raw) if raw is not None else None
            if isinstance(value, dict) and "route" in value:  # every summary names its route; markers, snapshots not
                return self.add(BatchSummary.model_validate(value).model_dump(), offset)
        except (orjson.JSONDecodeError, ValidationError) as err:
            log.warning("recommendations: the record at summary offset %d is not a batch summary (%s); skipped",
                        offset, str(err).splitlines()[0])
        return self.skip(offset)

    def skip(self, offset: int) -> Step:
        """A record at ``offset`` that is not a summary (a window marker, an unreadable record): only the
        position moves."""
        self.position = offset + 1
        return Step(rows={POSITION_KEY: _dump(PositionRow(offset=self.position))})

    def add(self, summary: Mapping[str, Any], offset: int) -> Step:
        """Fold the summary read at ``offset``: its items join the pool (the oldest leave it beyond
        ``item_pool_size``), its engagements move their users' affinities, and each user it moved gets
        a recommendation (when anything ranks), triggered by that user's last engagement in it."""
        step = self.skip(offset)
        pool = self.items
        for index, item in enumerate(summary.get("items", [])):
            item_id = item["item_id"]
            old = pool.pop(item_id, None)
            labels = {**(old.labels if old else {}), **item["labels"]}
            pool[item_id] = row = ItemRow(labels=labels, at=[offset, index])
            step.rows[item_key(item_id)] = _dump(row)
            while len(pool) > self.cfg.item_pool_size:
                gone, _ = pool.popitem(last=False)
                step.rows[item_key(gone)] = None
        changed: dict[str, str] = {}
        for eng in summary.get("engagements", []):
            item = pool.get(eng["item_id"])
            if item is None or not item.labels:
                continue
            user_id = eng["user_id"]
            state = self.users.get(user_id)
            seen = [i for i in (state.seen if state else []) if i != eng["item_id"]][-(SEEN_KEPT - 1):]
            affinity = update_affinity(state.affinity if state else {}, item.labels, float(eng["weight"]),
                                       self.cfg.affinity_decay)
            self.users[user_id] = row = UserRow(affinity=affinity, seen=[*seen, eng["item_id"]])
            step.rows[user_key(user_id)] = _dump(row)
            changed[user_id] = eng["event_id"]
        for user_id, trigger in changed.items():
            rec = self.recommend(user_id, trigger, int(summary.get("ts", 0)))
            if rec is not None:
                step.recommendations.append(rec)
        return step

    def recommend(self, user_id: str, trigger: str | None, ts: int) -> Recommendation | None:
        """The user's top-k from the pool now (None when nothing ranks)."""
        state = self.users[user_id]
        ranked = rank_items(state.affinity, {k: v.labels for k, v in self.items.items()}, set(state.seen),
                            self.cfg.top_k)
        if not ranked:
            return None
        top = dict(sorted(state.affinity.items(), key=lambda kv: -abs(kv[1]))[:10])
        return Recommendation(user_id=user_id, ts=ts, items=[RecommendedItem(**r) for r in ranked], affinity=top,
                              trigger_event_id=trigger)


def _dump(row: Any) -> bytes:
    return orjson.dumps(row.model_dump())
