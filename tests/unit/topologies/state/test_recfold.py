"""The recommendation fold: scoring state from summaries, and a restore from its rows that changes nothing."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from schemas.recommend_state import POSITION_KEY, item_key, user_key
from schemas.topology import RecommendationsConfig
from topologies.state.recfold import SEEN_KEPT, RecommendationFold, Step

CFG = RecommendationsConfig(top_k=3, item_pool_size=5, affinity_decay=0.9)


def summary(ts: int, items: list[tuple[str, dict[str, float]]] = (),  # type: ignore[assignment]
            engagements: list[tuple[str, str, str, float]] = ()) -> bytes:  # type: ignore[assignment]
    return orjson.dumps({"route": "image", "ts": ts, "topic": "events.image", "ranges": {"0": [0, 1]},
                         "metrics": {}, "items": [{"item_id": i, "labels": lab} for i, lab in items],
                         "engagements": [{"user_id": u, "item_id": i, "event_id": e, "weight": w}
                                         for u, i, e, w in engagements]})


def random_log(n: int, seed: int = 3) -> list[bytes]:
    rng = random.Random(seed)
    labels = [f"tag:{x}" for x in "abcdefgh"]
    log = []
    for k in range(n):
        if rng.random() < 0.1:
            log.append(orjson.dumps({"marker": k}))
            continue
        items = [(f"i{rng.randint(0, 12)}", {lab: round(rng.random(), 3) for lab in rng.sample(labels, 3)})
                 for _ in range(rng.randint(0, 3))]
        engs = [(f"u{rng.randint(0, 4)}", f"i{rng.randint(0, 12)}", f"e{k}-{j}", rng.choice([1.0, -0.5, 0.7]))
                for j in range(rng.randint(0, 4))]
        log.append(summary(1000 + k, items, engs))
    return log


def fold_from(fold: RecommendationFold, log: list[bytes], start: int, end: int, topic: dict[str, Any]) -> Step:
    """Fold ``log[start:end]``, writing each step's rows to ``topic`` as a compacted topic keeps them."""
    out = Step()
    for offset in range(start, end):
        step = fold.feed(log[offset], offset)
        topic.update(step.rows)
        out.extend(step)
    return out


def test_an_engagement_moves_affinity_as_decay_times_history_plus_the_event() -> None:
    fold = RecommendationFold(CFG)
    fold.feed(summary(1, [("a", {"tag:dog": 1.0}), ("b", {"tag:dog": 0.5, "tag:cat": 0.5}),
                          ("c", {"tag:cat": 1.0})]), 0)
    fold.feed(summary(2, engagements=[("u", "a", "e1", 1.0)]), 1)
    before = fold.users["u"].affinity
    step = fold.feed(summary(3, engagements=[("u", "c", "e2", 1.0), ("control", "c", "e3", 1.0)]), 2)
    control = fold.users["control"].affinity
    assert fold.users["u"].affinity == {k: pytest.approx(0.9 * before.get(k, 0) + control.get(k, 0))
                                        for k in {*before, *control}}
    [rec_u, rec_control] = step.recommendations
    assert (rec_u.user_id, rec_u.trigger_event_id, rec_u.ts) == ("u", "e2", 3)  # the summary's ts, not a clock
    assert {r.item_id for r in rec_u.items} == {"b"}  # a and c were engaged with: never recommended to u
    assert fold.users["u"].seen == ["a", "c"]


def test_the_pool_keeps_the_latest_items_and_tombstones_the_ones_that_leave() -> None:
    fold = RecommendationFold(CFG)
    step = fold.feed(summary(1, [(f"i{n}", {"tag:x": 1.0}) for n in range(7)]), 0)
    assert list(fold.items) == ["i2", "i3", "i4", "i5", "i6"]
    assert step.rows[item_key("i0")] is None and step.rows[item_key("i1")] is None
    fold.feed(summary(2, [("i2", {"tag:y": 1.0})]), 1)  # seen again: newest now, labels merged
    assert list(fold.items)[-1] == "i2" and fold.items["i2"].labels == {"tag:x": 1.0, "tag:y": 1.0}


def test_markers_and_records_that_are_not_summaries_only_move_the_position() -> None:
    fold = RecommendationFold(CFG)
    records = [orjson.dumps({"marker": 5}), orjson.dumps({"snapshot": {"upto": 0}}), b"not json",
               orjson.dumps({"route": 1}), None]
    for offset, raw in enumerate(records):
        assert fold.feed(raw, offset).rows == {POSITION_KEY: orjson.dumps({"offset": offset + 1})}
    assert fold.position == 5 and not fold.items and not fold.users


def test_seen_keeps_the_last_items_only() -> None:
    fold = RecommendationFold(RecommendationsConfig(item_pool_size=100))
    fold.feed(summary(1, [(f"i{n}", {"tag:x": 1.0}) for n in range(60)]), 0)
    fold.feed(summary(2, engagements=[("u", f"i{n}", f"e{n}", 1.0) for n in range(60)]), 1)
    assert fold.users["u"].seen == [f"i{n}" for n in range(60 - SEEN_KEPT, 60)]


@pytest.mark.parametrize("cut", [0, 1, 17, 80, 149])
def test_a_restore_from_the_committed_rows_folds_on_exactly_as_if_nothing_happened(cut: int) -> None:
    log = random_log(150)
    whole_topic: dict[str, Any] = {}
    whole = RecommendationFold(CFG)
    everything = fold_from(whole, log, 0, len(log), whole_topic)

    topic: dict[str, Any] = {}  # the state topic after the commit at `cut`; then the owner dies
    first = RecommendationFold(CFG)
    before = fold_from(first, log, 0, cut, topic)
    restored = RecommendationFold.restored(CFG, topic)
    assert restored.rows() == first.rows() and list(restored.items) == list(first.items)
    assert restored.position == (cut or None)
    after = fold_from(restored, log, restored.position or 0, len(log), topic)

    assert restored.rows() == whole.rows() and list(restored.items) == list(whole.items)
    assert {k: v for k, v in topic.items() if v is not None} == whole.rows()  # the topic, compacted
    emitted = [r.model_dump() for r in before.recommendations + after.recommendations]
    assert emitted == [r.model_dump() for r in everything.recommendations]  # none twice, none lost
    assert everything.recommendations and whole.users and user_key("u0") in whole.rows()
