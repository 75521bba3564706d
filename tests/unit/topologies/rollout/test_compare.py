"""The rollout comparison: per-variant figures and shadow-vs-live agreement, folded batch by batch, equal to
the same figures computed offline from the two result streams."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from schemas.events import AnalyticsRecord
from topologies.state.analytics import merge
from topologies.rollout import RolloutDeltas, finalize_rollout, fold, report, top


def _sentiment(rng: random.Random) -> dict:
    return {"label": rng.choice(["POSITIVE", "NEGATIVE"]), "score": round(rng.uniform(0.5, 1.0), 4)}


def test_top_label_and_score_per_task() -> None:
    assert top("sentiment", {"label": "POSITIVE", "score": 0.9}) == ("POSITIVE", 0.9)
    assert top("classification", {"labels": [{"label": "cat", "class_id": 0, "score": 0.7}], "top_k": 3}) == ("cat", 0.7)
    assert top("tagging", {"tags": []}) == ("(none)", None)
    assert top("detection", {"boxes": [{"xyxy": [0, 0, 1, 1], "label": "dog", "class_id": 1, "score": 0.4}],
                             "image_size": [2, 2]}) == ("dog", 0.4)


def test_shadow_figures_folded_in_batches_equal_the_offline_ones() -> None:
    rng = random.Random(7)
    live = {f"e{i}": _sentiment(rng) for i in range(3000)}
    # The shadow agrees about 80% of the time and answers 90% of the events (the rest shed).
    shadow = {}
    for eid, r in live.items():
        if rng.random() < 0.9:
            shadow[eid] = dict(r) if rng.random() < 0.8 else _sentiment(rng)
    window: dict[str, float] = {}
    ids = list(shadow)
    for b in range(0, len(ids), 64):  # as the engine adds them: one delta per batch, merged into the window
        d = RolloutDeltas("sentiment")
        for eid in ids[b:b + 64]:
            d.paired("next", live[eid], shadow[eid])
        window = merge(window, d.as_dict())
    shed = RolloutDeltas("sentiment")
    shed.shed("next", len(live) - len(shadow))
    window = merge(window, shed.as_dict())

    # Offline: join the two streams by event id.
    both = [(live[e], shadow[e]) for e in shadow]
    agree = sum(a["label"] == b["label"] for a, b in both) / len(both)
    diff = sum(abs(a["score"] - b["score"]) for a, b in both) / len(both)
    confusion = Counter((a["label"], b["label"]) for a, b in both)

    s = report(window)["shadows"]["next"]
    assert s["pairs"] == len(both) and s["shed"] == len(live) - len(shadow)
    assert s["agreement_rate"] == pytest.approx(agree, abs=1e-12)
    assert s["mean_abs_score_diff"] == pytest.approx(diff, abs=1e-12)
    assert {(c["live"], c["shadow"]): c["count"] for c in s["confusion"]} == confusion
    assert 0.8 < agree < 0.95
    at_once = fold("sentiment", pairs=[("next", a, b) for a, b in both]) | {"shadow|next|shed": s["shed"]}
    assert window == pytest.approx(at_once, abs=1e-9)  # sums in another order: equal but for float rounding


def test_per_variant_count_latency_labels_and_mean_score() -> None:
    answers = [("base", {"label": "POSITIVE", "score": 0.9}, 10.0)] * 90 + \
              [("base", {"label": "NEGATIVE", "score": 0.6}, 400.0)] * 10 + \
              [("canary", {"label": "NEGATIVE", "score": 0.8}, 30.0)] * 20 + [("canary", None, 0.0)] * 2
    rep = report(fold("sentiment", answers))
    base, canary = rep["variants"]["base"], rep["variants"]["canary"]
    assert base["count"] == 100 and base["labels"] == {"NEGATIVE": 10, "POSITIVE": 90}
    assert base["mean_score"] == pytest.approx(0.87)
    assert 5 < base["latency_p50_ms"] <= 10 and 300 < base["latency_p99_ms"] <= 400
    assert canary["count"] == 20 and canary["errors"] == 2 and canary["labels"] == {"NEGATIVE": 20}
    assert rep["shadows"] == {}


def test_labels_with_separators_and_the_analytics_record() -> None:
    d = RolloutDeltas("classification")
    odd = {"labels": [{"label": 'a|b "c"', "class_id": 0, "score": 0.5}], "top_k": 1}
    plain = {"labels": [{"label": "cat", "class_id": 1, "score": 0.75}], "top_k": 1}
    d.answered("v1", odd, 3.0)
    d.paired("s1", plain, odd)
    rep = report(d.as_dict())
    assert rep["variants"]["v1"]["labels"] == {'a|b "c"': 1}
    assert rep["shadows"]["s1"]["confusion"] == [{"live": "cat", "shadow": 'a|b "c"', "count": 1}]
    values = finalize_rollout(d.as_dict())
    assert values["shadow|s1|agreement_rate"] == 0.0 and values["shadow|s1|mean_abs_score_diff"] == 0.25
    assert values["variant|v1|mean_score"] == 0.5 and "variant|v1|latency_p99_ms" in values
    AnalyticsRecord(metric="rollout", key="text/sentiment", window_start=0, window_end=10_000, values=values, ts=1)
