"""Recommendation state survives a SIGKILL, in both guarantees side by side: the recommendations fold's
state (item profiles, user affinities; topologies/state/recommendations.py) is restored from its compacted
state topic on the worker that takes over, and nothing is folded twice or lost.

One worker learns items (image events: their tags, classes and detections) and a user's engagements
(images the user posted: weight +1 each; text engagements weigh by sentiment, which the tiny random
model makes arbitrary); more images of other users are sent and the worker is SIGKILLed while they are
processed; a new worker takes over. Then the user and a new control user post the same image of the same
item: without the state the two recommendations would be equal, with it the user's affinity is the
control's plus the user's decayed history. Finally the state topic is compared, row by row, with the
summary log folded offline up to the committed position (and the recommendations topic with the offline
fold's recommendations).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson
import pytest

from infertide.clients.produce import now_ms, produce_events
from schemas.codec import encode
from schemas.events import ImageEvent, ImageRef
from schemas.recommend_state import state_topic
from tests.e2e.conftest import Stack, guarantee_edit, jpeg_b64, read_topic, short, side_by_side
from topologies.kafka_settings import confluent_config
from topologies.state.recfold import RecommendationFold
from topologies.state.recommendations import read_state

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(420)]

N_ITEMS, N_ENGAGEMENTS, N_NOISE = 12, 8, 40


def _latest(records: list[Any], user: str) -> dict[str, Any] | None:
    mine = [v for _, _, v in records if v["user_id"] == user]
    return mine[-1] if mine else None


def _transaction_timeout(d: dict[str, Any]) -> None:
    d["kafka"]["transaction_timeout_s"] = 15  # a killed worker's open transaction (routes, fold) ends soon


def _scenario(stack: Stack, guarantee: str) -> dict[str, Any]:
    g = short(guarantee)
    topology, path = stack.topology(f"recstate-{g}", edit=guarantee_edit(guarantee, _transaction_timeout))

    def image(i: int | str, user: str | None, event_id: str) -> ImageEvent:
        return ImageEvent(event_id=event_id, ts=now_ms(), user_id=user, item_id=f"rs-item-{i}",
                          image=ImageRef(data=jpeg_b64(i if isinstance(i, int) else 100 + int(i[1:])),
                                         mime="image/jpeg"))

    # The user posts the first N_ENGAGEMENTS items; the rest are the catalogue to recommend from.
    items = [image(i, "u" if i < N_ENGAGEMENTS else None, f"rs-img-{i}") for i in range(N_ITEMS)]
    # Other users' posts of other items, in flight when the worker is killed.
    noise = [image(f"n{i}", f"other-{i % 4}", f"rs-noise-{i}") for i in range(N_NOISE)]
    first = stack.worker(topology, path, f"recstate-{g}-worker-1").start()
    try:
        first.wait_ready()
        produce_events(topology, "image", items)
        read_topic(stack.bootstrap, topology.topics.classes, timeout=120, until=lambda r: len(r) >= N_ITEMS)
        time.sleep(4)  # the fold commits (interval 1 s at-least-once, 0.1 s exactly-once)
        before = _latest(read_topic(stack.bootstrap, topology.topics.recommendations, timeout=5,
                                    until=lambda r: False), "u")
        assert before is not None and before["items"], "the user needs a recommendation before the crash"
        produce_events(topology, "image", noise)
        read_topic(stack.bootstrap, topology.topics.classes, timeout=60, until=lambda r: len(r) >= N_ITEMS + 5)
    finally:
        first.kill()
    item = before["items"][0]["item_id"]  # has a profile (it was ranked), and the user has not engaged with it
    index = int(item.rsplit("-", 1)[1])

    second = stack.worker(topology, path, f"recstate-{g}-worker-2").start()  # another worker id: a move
    try:
        second.wait_ready()
        produce_events(topology, "image", [image(index, user, f"rs-after-{user}") for user in ("u", "control")])

        def both(records: list[Any]) -> bool:
            return {"rs-after-u", "rs-after-control"} <= {v.get("trigger_event_id") for _, _, v in records}

        recs = read_topic(stack.bootstrap, topology.topics.recommendations, timeout=150, until=both)
    finally:
        code = second.stop()
    return {"before": before, "recs": recs, "exit": code, "log": second.tail(), "topology": topology,
            **_against_offline(stack, topology)}


def _against_offline(stack: Stack, topology: Any) -> dict[str, Any]:
    """The committed state vs the summary log folded offline up to the committed position; the
    recommendations topic vs the offline fold's recommendations."""
    conf = confluent_config(topology.kafka, stack.bootstrap)
    state = RecommendationFold.restored(topology.recommendations,
                                        read_state(conf, state_topic(topology.kafka.consumer_group), 30))
    offline, offline_recs = RecommendationFold(topology.recommendations), []
    summaries = read_topic(stack.bootstrap, f"{topology.kafka.consumer_group}-summaries", timeout=5,
                           until=lambda r: False, decode=False)
    folded = [(offset, raw) for _, offset, raw in summaries if offset < (state.position or 0)]
    for offset, raw in folded:
        offline_recs += offline.feed(raw, offset).recommendations
    rows, want = state.rows(), offline.rows()
    online = Counter(orjson.dumps(v, option=orjson.OPT_SORT_KEYS)
                     for _, _, v in read_topic(stack.bootstrap, topology.topics.recommendations, timeout=5,
                                               until=lambda r: False))
    expected = Counter(orjson.dumps(orjson.loads(encode(r)), option=orjson.OPT_SORT_KEYS) for r in offline_recs)
    return {"position": state.position, "summaries": len(folded), "rows": len(rows),
            "differ": sorted(k for k in {*rows, *want} if rows.get(k) != want.get(k)),
            "order_same": list(state.items) == list(offline.items),
            "recs_online": sum(online.values()), "recs_offline": sum(expected.values()),
            "repeated": sum(n - 1 for n in online.values() if n > 1),
            "missing": sum((expected - online).values()), "extra": sum((online - expected).values())}


def test_recommendation_state_survives_a_crash(stack: Stack) -> None:
    runs = side_by_side(lambda g: _scenario(stack, g))
    for guarantee, r in runs.items():
        print(f"\n[recommendation state, {guarantee}] committed summary offset {r['position']} ({r['summaries']} "
              f"committed records before it); {r['rows']} state rows, differing from the offline fold: "
              f"{r['differ'] or 'none'}; "
              f"recommendations {r['recs_online']} (offline fold {r['recs_offline']}): repeated {r['repeated']}, "
              f"missing {r['missing']}, extra {r['extra']}")
    for guarantee, r in runs.items():
        assert r["exit"] == 0, r["log"]
        decay = r["topology"].recommendations.affinity_decay
        before, recs = r["before"], r["recs"]
        after = next(v for _, _, v in recs if v.get("trigger_event_id") == "rs-after-u")
        control = next(v for _, _, v in recs if v.get("trigger_event_id") == "rs-after-control")
        history_keys = set(before["affinity"]) & set(after["affinity"])
        print(f"[recommendation state, {guarantee}] before the crash {before['affinity']}; after it, the user "
              f"{after['affinity']} and the control {control['affinity']}")
        assert after["affinity"] != control["affinity"], f"{guarantee}: the user's history was lost in the crash"
        assert history_keys, "the user's affinity after the crash keeps labels from before it"
        for key in history_keys:  # decay * history + this engagement (the affinity is cut to its top 10 labels)
            assert after["affinity"][key] == pytest.approx(
                decay * before["affinity"][key] + control["affinity"].get(key, 0.0), abs=1e-4), (guarantee, key)
        assert before["items"][0]["item_id"] not in {i["item_id"] for i in after["items"]}, \
            "an item the user engaged with is not recommended"
        # Exact: the committed state is the fold of the committed log; no recommendation twice or lost.
        assert r["position"] and not r["differ"] and r["order_same"], (guarantee, r["differ"][:5])
        assert (r["repeated"], r["missing"], r["extra"]) == (0, 0, 0), guarantee
