"""The ``rollout:`` and ``multiplex:`` config: valid shapes load, and each mistake fails naming the key and the fix."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from schemas.events import SentimentResult
from schemas.rollout import rollout_topics, shadow_output
from schemas.topology import ConfigError, parse_topology


def _topology(**rollout: Any) -> dict[str, Any]:
    return {
        "models": {
            "sentiment": {"task": "sentiment", "model": "org/sentiment",
                          "multiplex": {"max_models_per_replica": 2,
                                        "checkpoints": {"ft-a": "/models/ft-a",
                                                        "ft-b": {"model": "org/ft-b", "revision": "r1"}}}},
            "sentiment_v2": {"task": "sentiment", "model": "org/sentiment-v2"},
            "tagger": {"task": "tagging", "model": "org/clip"},
        },
        "routes": [{"name": "text", "input": "text", "kind": "text", "models": ["sentiment"],
                    "rollout": {"sentiment": rollout}}],
    }


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_topology(data, "test.yaml")
    return str(info.value)


def test_a_full_rollout_loads() -> None:
    t = parse_topology(_topology(
        sticky_key="item_id",
        variants=[{"name": "canary", "model": "sentiment_v2", "percent": 10},
                  {"model": "sentiment", "checkpoint": "ft-a", "percent": 12.5}],
        shadows=[{"name": "next", "model": "sentiment", "checkpoint": "ft-b", "queue_size": 50},
                 {"model": "sentiment_v2", "percent": 5, "output": "shadow.v2"}],
    ))
    ro = t.routes[0].rollout["sentiment"]
    assert [v.label for v in ro.variants] == ["canary", "sentiment:ft-a"]
    assert ro.shadows[0].percent == 100 and ro.shadows[0].queue_size == 50
    assert shadow_output(t, t.routes[0], "sentiment", ro.shadows[0]) == "inference.sentiment.shadow"
    assert rollout_topics(t) == ["inference.sentiment.shadow", "shadow.v2"]
    assert t.models["sentiment"].checkpoint_config("ft-b").model == "org/ft-b"
    assert t.models["sentiment"].checkpoint_config("ft-b").revision == "r1"
    assert t.models["sentiment"].checkpoint_config("ft-a").multiplex is None


def test_routes_without_rollout_are_unchanged() -> None:
    data = _topology()
    del data["routes"][0]["rollout"]
    assert parse_topology(data).routes[0].rollout == {}


@pytest.mark.parametrize(("rollout", "key", "fix"), [
    ({"variants": [{"model": "sentiment_v2", "percent": 60}, {"model": "sentiment", "checkpoint": "ft-a",
                                                              "percent": 50}]},
     "routes.0.rollout.sentiment", "over 100"),
    ({"variants": [{"model": "sentiment_v2", "percent": 10.005}]}, "percent", "round it"),
    ({"variants": [{"model": "sentiment_v2", "percent": -1}]}, "percent", "greater than or equal to 0"),
    ({"variants": [{"model": "sentiment_v3", "percent": 10}]}, "variants[0].model", "did you mean 'sentiment_v2'"),
    ({"variants": [{"model": "tagger", "percent": 10}]}, "variants[0].model", "name a model of task 'sentiment'"),
    ({"variants": [{"model": "sentiment", "checkpoint": "ft-c", "percent": 10}]}, "variants[0].checkpoint",
     "use one of ['ft-a', 'ft-b']"),
    ({"variants": [{"model": "sentiment_v2", "checkpoint": "x", "percent": 10}]}, "variants[0].checkpoint",
     "add `models.sentiment_v2.multiplex.checkpoints.x"),
    ({"variants": [{"model": "sentiment", "percent": 10}]}, "variants[0]", "is the base itself"),
    ({"variants": [{"name": "a", "model": "sentiment_v2", "percent": 1}],
      "shadows": [{"name": "a", "model": "sentiment", "checkpoint": "ft-a"}]}, "shadows[0].name", "its own `name`"),
    ({"shadows": [{"model": "sentiment_v2", "output": "sentiment"}]}, "shadows[0].output", "a topic of its own"),
    ({"shadows": [{"model": "sentiment_v2", "output": "recommendations"}]}, "shadows[0].output", "live topic"),
    ({"shadows": [{"model": "sentiment_v2", "queue_size": 0}]}, "queue_size", "greater than 0"),
    ({"sticky_key": "stream_id"}, "sticky_key", "stream_id is for video routes"),
    ({"sticky_key": "tenant"}, "sticky_key", "'user_id', 'item_id', 'stream_id' or 'event_id'"),
    ({"variants": [{"model": "sentiment_v2", "percent": 10, "weight": 3}]}, "variants.0.weight", "unknown key"),
    ({"checkpoint": "ft-a", "checkpoint_by": {"field": "source", "map": {"t1": "ft-b"}}}, "checkpoint_by",
     "not both"),
    ({"checkpoint_by": {"field": "tenant", "map": {"t1": "ft-b"}}}, "checkpoint_by.field", "use one of"),
    ({"checkpoint_by": {"field": "source", "map": {"t1": "ft-z"}}}, "checkpoint_by.map.t1", "use one of"),
])
def test_mistakes_name_the_key_and_the_fix(rollout: dict[str, Any], key: str, fix: str) -> None:
    msg = _error(_topology(**rollout))
    assert key in msg and fix in msg, msg


def test_a_rollout_keyed_by_a_model_the_route_does_not_call() -> None:
    data = _topology()
    data["routes"][0]["rollout"] = {"sentiment_v2": {"variants": []}}
    msg = _error(data)
    assert "routes[0].rollout.sentiment_v2" in msg and "not one of this route's models" in msg


def test_a_variant_that_is_also_a_live_model_of_the_route() -> None:
    data = _topology(variants=[{"model": "sentiment_v2", "percent": 10}])
    data["routes"][0]["models"] = ["sentiment", "sentiment_v2"]
    assert "answered twice" in _error(data)


def test_multiplex_checkpoint_ids_and_slots() -> None:
    data = _topology()
    bad = copy.deepcopy(data)
    bad["models"]["sentiment"]["multiplex"]["checkpoints"] = {"has space": "/m"}
    msg = _error(bad)
    assert "models.sentiment.multiplex.checkpoints" in msg and "multiplexed model id" in msg
    bad = copy.deepcopy(data)
    bad["models"]["sentiment"]["multiplex"]["max_models_per_replica"] = 0
    assert "max_models_per_replica" in _error(bad)
    bad = copy.deepcopy(data)
    bad["models"]["sentiment"]["multiplex"]["checkpoints"] = {}
    assert "models.sentiment.multiplex.checkpoints" in _error(bad)
    bad = copy.deepcopy(data)
    bad["models"]["sentiment"]["multiplex"]["slots"] = 3
    assert "models.sentiment.multiplex.slots: unknown key" in _error(bad)
    with pytest.raises(KeyError, match="known: \\['ft-a', 'ft-b'\\]"):
        parse_topology(data).models["sentiment"].checkpoint_config("ft-z")


def test_results_may_carry_the_variant_and_older_results_still_validate() -> None:
    base = {"event_id": "e", "ts": 1, "model": {"name": "m", "version": "v"}, "timings": {"inference_ms": 1.0},
            "produced_ts": 2, "label": "POSITIVE", "score": 0.9}
    assert SentimentResult.model_validate(base).variant is None
    r = SentimentResult.model_validate({**base, "variant": {"name": "canary", "model_key": "sentiment_v2",
                                                            "role": "variant"}})
    assert r.variant is not None and r.variant.checkpoint is None
    with pytest.raises(ValueError):
        SentimentResult.model_validate({**base, "variant": {"name": "c", "model_key": "m", "role": "live"}})


def test_the_example_in_docs_rollouts_loads() -> None:
    import re
    from pathlib import Path

    import yaml

    doc = (Path(__file__).resolve().parents[3] / "docs" / "rollouts.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", doc, re.S)
    assert example is not None
    t = parse_topology(yaml.safe_load(example.group(1)), "docs/rollouts.md")
    ro = t.routes[0].rollout["sentiment"]
    assert [v.label for v in ro.variants] == ["canary", "tenant-a-ft"] and ro.shadows[0].checkpoint == "nightly"
    assert rollout_topics(t) == ["inference.sentiment.shadow"]
