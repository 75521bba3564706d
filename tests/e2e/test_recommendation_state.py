"""Recommendation state survives a crash: the aggregator's tables (item profiles, user affinities)
are restored from their changelogs on the worker that takes over, and replays do not feed them twice.

One worker learns items (image events: their tags, classes and detections) and a user's engagements
(images the user posted: weight +1 each; text engagements weigh by sentiment, which the tiny random
model makes arbitrary), then is SIGKILLed; a new worker takes over. Then the user and a new control
user post the same image of the same item: without the state the two recommendations would be
equal, with it the user's affinity is the control's plus the user's decayed history.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from infertide.clients.produce import now_ms, produce_events
from schemas.events import ImageEvent, ImageRef
from tests.e2e.conftest import Stack, jpeg_b64, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(420)]

N_ITEMS, N_ENGAGEMENTS = 12, 8


def _latest(records: list[Any], user: str) -> dict[str, Any] | None:
    mine = [v for _, _, v in records if v["user_id"] == user]
    return mine[-1] if mine else None


def test_recommendation_state_survives_a_crash(stack: Stack) -> None:
    topology, path = stack.topology("recstate")
    decay = topology.recommendations.affinity_decay

    def image(i: int, user: str | None, event_id: str) -> ImageEvent:
        return ImageEvent(event_id=event_id, ts=now_ms(), user_id=user, item_id=f"rs-item-{i}",
                          image=ImageRef(data=jpeg_b64(i), mime="image/jpeg"))

    # The user posts the first N_ENGAGEMENTS items; the rest are the catalogue to recommend from.
    items = [image(i, "u" if i < N_ENGAGEMENTS else None, f"rs-img-{i}") for i in range(N_ITEMS)]
    first = stack.worker(topology, path, "recstate-worker-1").start()
    try:
        first.wait_ready()
        produce_events(topology, "image", items)
        read_topic(stack.bootstrap, topology.topics.classes, timeout=120, until=lambda r: len(r) >= N_ITEMS)
        time.sleep(4)  # the aggregator commits its summary offsets and table changelogs (commit interval 1 s)
        before = _latest(read_topic(stack.bootstrap, topology.topics.recommendations, timeout=5,
                                    until=lambda r: False), "u")
        assert before is not None and before["items"], "the user needs a recommendation before the crash"
    finally:
        first.kill()
    item = before["items"][0]["item_id"]  # has a profile (it was ranked), and the user has not engaged with it
    index = int(item.rsplit("-", 1)[1])

    second = stack.worker(topology, path, "recstate-worker-2").start()
    try:
        second.wait_ready()
        produce_events(topology, "image", [image(index, user, f"rs-after-{user}") for user in ("u", "control")])

        def both(records: list[Any]) -> bool:
            return {"rs-after-u", "rs-after-control"} <= {v.get("trigger_event_id") for _, _, v in records}

        recs = read_topic(stack.bootstrap, topology.topics.recommendations, timeout=120, until=both)
    finally:
        assert second.stop() == 0, second.tail()
    after = next(v for _, _, v in recs if v.get("trigger_event_id") == "rs-after-u")
    control = next(v for _, _, v in recs if v.get("trigger_event_id") == "rs-after-control")
    history_keys = set(before["affinity"]) & set(after["affinity"])
    print(f"\n[recommendation state] before the crash {before['affinity']}; after it, the user "
          f"{after['affinity']} and the control {control['affinity']}")
    assert after["affinity"] != control["affinity"], "the user's history was lost in the crash"
    assert history_keys, "the user's affinity after the crash keeps labels from before it"
    for key in history_keys:  # decay * history + this engagement (the affinity is cut to its top 10 labels)
        assert after["affinity"][key] == pytest.approx(
            decay * before["affinity"][key] + control["affinity"].get(key, 0.0), abs=1e-4), key
    assert item not in {r["item_id"] for r in after["items"]}, "an item the user engaged with is not recommended"
